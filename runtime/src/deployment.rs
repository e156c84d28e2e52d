//! A deployment as a node runs it: the stored [`DeploymentSpec`] (see [`crate::spec`]) joined
//! with its compiled handler version and its tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::builtin::Builtin;
use crate::control::DeploymentId;
use crate::host::{CallLimits, HandlerVersion, InstanceContext, TenantBudget};
use crate::logs::LogSink;
use crate::outputs::OutputRules;
use crate::spec::{DeploymentSpec, LimitsSpec};
use crate::state::StateBucket;
use crate::tenants::Tenant;

impl From<&LimitsSpec> for CallLimits {
    fn from(spec: &LimitsSpec) -> Self {
        Self {
            max_memory_bytes: spec.max_memory_bytes,
            handler_timeout: spec.handler_timeout,
            max_outputs_per_call: spec.max_outputs_per_call,
            max_output_bytes_per_call: spec.max_output_bytes_per_call,
        }
    }
}

/// A spec with what runs its handler, as a node runs it for its tenant.
#[derive(Debug)]
pub struct Deployment {
    /// Whose handler this is.
    pub id: DeploymentId,
    /// The spec as stored.
    pub spec: DeploymentSpec,
    /// What runs the handler on this node.
    pub code: HandlerCode,
    /// The tenant, as this node runs it.
    pub tenant: Arc<Tenant>,
    /// What every instance of this deployment is given: the spec's limits within the tenant's
    /// quotas, the tenant's budget, and where it may publish.
    pub context: Arc<InstanceContext>,
    /// Where its state is kept, if its handler keeps any.
    pub state: Option<StateBucket>,
}

impl Deployment {
    /// Joins a validated spec with its compiled version and its tenant, whose quotas bound its
    /// limits and whose allowed subjects bound its outputs. (The registry checks the spec, and
    /// whether the tenant may read its stream, before its component is even fetched.)
    pub fn new(
        id: DeploymentId,
        spec: DeploymentSpec,
        code: HandlerCode,
        tenant: Arc<Tenant>,
        logs: Option<LogSink>,
    ) -> Self {
        let (limits, lowered) = tenant.quotas.clamp(&spec.limits);
        for note in lowered {
            tracing::warn!(tenant = id.tenant, handler = id.handler, "{note}");
        }
        let outputs = OutputRules {
            deployment: spec.outputs.clone(),
            tenant: tenant.quotas.output_subjects.clone(),
            reserved: tenant.reserved.clone(),
        };
        let mut context = instance_context(&limits, outputs, &spec.config, &tenant.budget);
        context.logs = logs;
        Self {
            id,
            spec,
            code,
            tenant,
            context: Arc::new(context),
            state: None,
        }
    }
}

/// What runs a deployment's handler on a node.
#[derive(Debug, Clone)]
pub enum HandlerCode {
    /// The spec's component, compiled and linked on this node.
    Wasm(HandlerVersion),
    /// A handler built into the node (`weir bench` only).
    Builtin(Builtin),
}

/// What instances get from a deployment's limits, output rules and configuration, sharing
/// `budget`.
pub fn instance_context(
    limits: &LimitsSpec,
    outputs: OutputRules,
    config: &BTreeMap<String, String>,
    budget: &Arc<TenantBudget>,
) -> InstanceContext {
    InstanceContext {
        limits: limits.into(),
        outputs,
        config: config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        budget: budget.clone(),
        logs: None,
    }
}

/// A deployment shared between the registry and its partition workers.
pub type SharedDeployment = Arc<Deployment>;
