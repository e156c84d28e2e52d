//! A deployment: what a user asked for with `weir deploy` (the stored `DeploymentSpec`), and
//! the same spec joined with its compiled handler version on a node (`Deployment`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::builtin::Builtin;
use crate::config::{duration_text, durations_text};
use crate::host::{CallLimits, HandlerVersion, InstanceContext, TenantBudget};
use crate::resources::DeploymentId;
use crate::tenants::Tenant;

/// Deliveries before the server gives a message up.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// How long the server waits for an answer before redelivering.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Delays after a retry without a delay, or a failure, by delivery attempt.
pub const DEFAULT_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];
/// Linear memory per instance.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
/// Deadline for one call.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(10);
/// Outputs one call may publish.
pub const DEFAULT_MAX_OUTPUTS_PER_CALL: u32 = 1_000;
/// Output bytes (payload, subject and headers) one call may publish.
pub const DEFAULT_MAX_OUTPUT_BYTES_PER_CALL: u64 = 8 << 20;

/// A handler version as deployed: stored as JSON in `weir_deployments` under
/// `<tenant>.<handler>`. Every node that sees it runs it; a new value replaces the old one at
/// a message boundary on every partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    /// The tenant that owns the handler.
    pub tenant: String,
    /// The handler's name within its tenant.
    pub handler: String,
    /// SHA-256 of the component, in hex.
    pub version: String,
    /// The component's name in its tenant's `weir_artifacts_<tenant>` (older deployments:
    /// `weir_artifacts`).
    pub artifact: String,
    /// The partitioned input stream.
    pub stream: String,
    /// The stream's partition count, read from the stream at deploy time.
    pub partitions: u32,
    /// What each instance and call may use.
    pub limits: LimitsSpec,
    /// How deliveries are retried and given up.
    pub retry: RetrySpec,
    /// Key/value pairs handed to the handler's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Subject patterns the handler may publish to; empty means it may publish nothing.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// When the spec was written, RFC 3339.
    pub deployed_at: String,
}

/// The stored form of [`CallLimits`]; see the `DEFAULT_*` constants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsSpec {
    /// Linear memory per instance, summed over its memories.
    pub max_memory_bytes: u64,
    /// Deadline for one `init` or `handle` call.
    #[serde(with = "duration_text")]
    pub handler_timeout: Duration,
    /// Outputs one call may publish.
    pub max_outputs_per_call: u32,
    /// Output bytes one call may publish.
    pub max_output_bytes_per_call: u64,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            max_outputs_per_call: DEFAULT_MAX_OUTPUTS_PER_CALL,
            max_output_bytes_per_call: DEFAULT_MAX_OUTPUT_BYTES_PER_CALL,
        }
    }
}

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

/// How deliveries are acknowledged, retried and given up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySpec {
    /// Deliveries before a message becomes a dead letter (the consumer's MaxDeliver).
    pub max_deliver: u32,
    /// How long the server waits for an answer before it redelivers (the consumer's AckWait).
    #[serde(with = "duration_text")]
    pub ack_wait: Duration,
    /// Delay before the next delivery after a retry without a delay, or a failure, indexed by
    /// delivery attempt (the last entry repeats).
    #[serde(with = "durations_text")]
    pub backoff: Vec<Duration>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_deliver: DEFAULT_MAX_DELIVER,
            ack_wait: DEFAULT_ACK_WAIT,
            backoff: DEFAULT_BACKOFF.to_vec(),
        }
    }
}

impl RetrySpec {
    /// The delay after delivery `attempt` (1-based) when the handler named none.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) - 1) as usize;
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }

    /// Refuses settings the server would reject or that make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_deliver >= 1, "--max-deliver must be at least 1");
        anyhow::ensure!(
            self.ack_wait >= Duration::from_secs(1),
            "--ack-wait must be at least 1s, not {}",
            humantime::format_duration(self.ack_wait)
        );
        Ok(())
    }
}

impl DeploymentSpec {
    /// The deployment's identity, validated.
    pub fn id(&self) -> anyhow::Result<DeploymentId> {
        DeploymentId::new(&self.tenant, &self.handler)
    }

    /// The first 12 hex digits of the version, for people.
    pub fn short_version(&self) -> &str {
        &self.version[..self.version.len().min(12)]
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
    /// quotas, and the tenant's budget.
    pub context: Arc<InstanceContext>,
}

impl Deployment {
    /// Joins a spec with its compiled version and its tenant, whose quotas bound its limits.
    /// (Whether the tenant may read the spec's stream is checked before its component is even
    /// fetched: [`crate::tenants::Quotas::check_input_stream`].)
    pub fn new(
        id: DeploymentId,
        spec: DeploymentSpec,
        code: HandlerCode,
        tenant: Arc<Tenant>,
    ) -> Self {
        let (limits, lowered) = tenant.quotas.clamp(&spec.limits);
        for note in lowered {
            tracing::warn!(tenant = id.tenant, handler = id.handler, "{note}");
        }
        let mut context = instance_context(&limits, &spec.outputs, &spec.config, &tenant.budget);
        context.tenant_outputs = tenant.quotas.output_subjects.clone();
        Self {
            id,
            spec,
            code,
            tenant,
            context: Arc::new(context),
        }
    }
}

/// What runs a deployment's handler on a node.
#[derive(Debug)]
pub enum HandlerCode {
    /// The spec's component, compiled and linked on this node.
    Wasm(HandlerVersion),
    /// A handler built into the node (`weir bench` only).
    Builtin(Builtin),
}

/// What instances get from a deployment's limits, outputs and configuration, sharing `budget`.
pub fn instance_context(
    limits: &LimitsSpec,
    outputs: &[String],
    config: &BTreeMap<String, String>,
    budget: &Arc<TenantBudget>,
) -> InstanceContext {
    InstanceContext {
        limits: limits.into(),
        outputs: outputs.to_vec(),
        tenant_outputs: None,
        config: config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        budget: budget.clone(),
    }
}

/// A deployment shared between the registry and its partition workers.
pub type SharedDeployment = Arc<Deployment>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_indexed_by_attempt_and_the_last_step_repeats() {
        let retry = RetrySpec::default();
        assert_eq!(retry.backoff_for(1), Duration::from_secs(1));
        assert_eq!(retry.backoff_for(2), Duration::from_secs(5));
        assert_eq!(retry.backoff_for(3), Duration::from_secs(30));
        assert_eq!(retry.backoff_for(9), Duration::from_secs(30));
    }

    #[test]
    fn specs_round_trip_through_json_with_readable_durations() -> anyhow::Result<()> {
        let spec = DeploymentSpec {
            tenant: "acme".into(),
            handler: "orders".into(),
            version: "ab".repeat(32),
            artifact: "acme/orders/abab".into(),
            stream: "ORDERS".into(),
            partitions: 8,
            limits: LimitsSpec::default(),
            retry: RetrySpec::default(),
            config: BTreeMap::from([("region".into(), "eu".into())]),
            outputs: vec!["enriched.>".into()],
            deployed_at: "2026-11-22T12:00:00Z".into(),
        };
        let json = serde_json::to_value(&spec)?;
        assert_eq!(json["retry"]["ack_wait"], "30s");
        assert_eq!(json["retry"]["backoff"][2], "30s");
        assert_eq!(serde_json::from_value::<DeploymentSpec>(json)?, spec);
        Ok(())
    }
}

/// What one node made of one deployment, stored in `weir_status` under
/// `<tenant>.<handler>.<node-id>`: the partitions it runs, or why it could not load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The reporting node's id.
    pub node: String,
    /// The revision of the `weir_deployments` entry this node runs (or failed to load).
    pub revision: u64,
    /// The component version of that revision.
    pub version: String,
    /// The partitions this node runs.
    pub partitions: Vec<u32>,
    /// Why this node cannot run the revision, if it cannot.
    pub error: Option<String>,
    /// When the node wrote this, RFC 3339.
    pub updated_at: String,
}

/// The current time as RFC 3339, for records people read.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
