//! `weir deploy`: validate a component, store it, and activate it.
//!
//! Nothing is stored until everything has been checked: the names, the stream (it must exist,
//! be partitioned and use Limits retention), the output patterns, the component (it must parse,
//! satisfy the world and compile) and its `init` (it must accept the configuration).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishErrorKind};
use tracing::Instrument as _;

use crate::deployment::{DeploymentSpec, LimitsSpec, RetrySpec, instance_context, now_rfc3339};
use crate::host::{HandlerInstance, Host};
use crate::partition;
use crate::resources::{self, ControlPlane, DEPLOYMENTS_BUCKET, DeploymentId};
use crate::subject;
use crate::tenants::Quotas;

/// Everything `weir deploy` was given.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Whose handler this is.
    pub id: DeploymentId,
    /// The component's bytes, as read from the `.wasm` file.
    pub component: Vec<u8>,
    /// The partitioned input stream.
    pub stream: String,
    /// Per-instance and per-call limits.
    pub limits: LimitsSpec,
    /// Delivery and retry policy, applied to the partition consumers.
    pub retry: RetrySpec,
    /// Handed to the handler's `init`.
    pub config: BTreeMap<String, String>,
    /// Subject patterns the handler may publish to.
    pub outputs: Vec<String>,
}

/// A spec as stored, with its revision in `weir_deployments`: every deploy of a handler, even
/// one that only changes its configuration, gets a new revision.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The spec as stored.
    pub spec: DeploymentSpec,
    /// Its revision in `weir_deployments`; nodes report which revision they run.
    pub revision: u64,
}

/// Validates, uploads and activates a handler version; returns what was stored.
pub async fn deploy(
    js: &jetstream::Context,
    host: &Host,
    request: DeployRequest,
) -> anyhow::Result<Deployed> {
    let DeployRequest {
        id,
        component,
        stream,
        limits,
        retry,
        config,
        outputs,
    } = request;
    retry.validate()?;
    for pattern in &outputs {
        subject::validate_pattern(pattern)
            .map_err(|e| anyhow::anyhow!("invalid --output {pattern:?}: {e}"))?;
    }
    check_may_write(js, &id).await?;
    let partitions = partition::input_stream_partitions(js, &stream).await?;
    for pattern in &outputs {
        check_output_stored(js, pattern).await?;
    }

    let compile_host = host.clone();
    // A core module (a Go handler) is stored as the component it is made into here.
    let version = tokio::task::spawn_blocking(move || {
        let component = crate::host::componentize(component)?;
        compile_host.compile(&component).map(|v| (v, component))
    })
    .await
    .context("the compile task panicked")?;
    let (version, component) = version?;

    // The configuration is tried under the default quotas: nodes apply the tenant's own.
    let budget = host.tenant_budget(&id.tenant, Quotas::default().budget());
    let context = Arc::new(instance_context(&limits, &outputs, &config, &budget));
    let span = tracing::info_span!(
        "deploy",
        tenant = id.tenant.as_str(),
        handler = id.handler.as_str()
    );
    HandlerInstance::start(&version, context)
        .instrument(span)
        .await
        .context("the handler failed to start with this configuration")?;

    let control = ControlPlane::open(js).await?;
    let artifact = control
        .artifacts
        .store(&id, version.digest(), &component)
        .await?;
    let spec = DeploymentSpec {
        tenant: id.tenant.clone(),
        handler: id.handler.clone(),
        version: version.digest().to_owned(),
        artifact,
        stream,
        partitions,
        limits,
        retry,
        config,
        outputs,
        deployed_at: now_rfc3339(),
    };
    let revision = control
        .deployments
        .put(id.key(), serde_json::to_vec(&spec)?.into())
        .await
        .with_context(|| format!("failed to write deployment {}", id.key()))?;
    Ok(Deployed { spec, revision })
}

/// Asks the server whether this connection may write `id`'s deployment record, without
/// writing it, so that a user deploying for a tenant it does not belong to is refused before
/// anything is uploaded. The probe expects a revision no key can have: a user who may write
/// the key gets "wrong last sequence" from the stream, and nothing is stored; any other user's
/// publish is refused by the server's permissions (reported on the side, see
/// [`crate::connection::Refusals`]; here it is a timeout).
async fn check_may_write(js: &jetstream::Context, id: &DeploymentId) -> anyhow::Result<()> {
    let subject = format!("$KV.{DEPLOYMENTS_BUCKET}.{}", id.key());
    let probe =
        jetstream::message::PublishMessage::build().expected_last_subject_sequence(u64::MAX);
    let result = match js.send_publish(subject.clone(), probe).await {
        Ok(ack) => ack.await.map(|_| ()),
        Err(error) => Err(error),
    };
    match result {
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(()),
        // No bucket yet: the deploy creates it, if it may.
        Err(error) if error.kind() == PublishErrorKind::StreamNotFound => Ok(()),
        Err(error) => Err(error).with_context(|| {
            format!(
                "failed to check the right to write {subject} (deploying for tenant {})",
                id.tenant
            )
        }),
        Ok(()) => anyhow::bail!("a probe of the right to write {subject} was stored"),
    }
}

/// Outputs are stored before their input is acked, so some stream must capture them; without
/// one, every acked message would fail and be retried until it is given up.
async fn check_output_stored(js: &jetstream::Context, pattern: &str) -> anyhow::Result<()> {
    use jetstream::context::GetStreamByNameErrorKind as Kind;
    match js.stream_by_subject(pattern).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == Kind::NotFound => anyhow::bail!(
            "no stream stores subjects matching --output {pattern:?}: create one first, e.g. \
             `weir stream create OUTPUTS --subjects '{pattern}'`"
        ),
        Err(error) => Err(error)
            .with_context(|| format!("failed to find the stream for --output {pattern:?}")),
    }
}

/// Every deployment in `weir_deployments`, or `tenant`'s, sorted by tenant and handler.
pub async fn list(control: &ControlPlane, tenant: Option<&str>) -> anyhow::Result<Vec<Deployed>> {
    let mut deployed = Vec::new();
    for key in resources::keys(&control.deployments, tenant).await? {
        let entry = control
            .deployments
            .entry(&key)
            .await
            .with_context(|| format!("failed to read deployment {key}"))?;
        if let Some(entry) = entry.filter(|e| e.operation == jetstream::kv::Operation::Put) {
            let spec = serde_json::from_slice::<DeploymentSpec>(&entry.value)
                .with_context(|| format!("deployment {key} is unreadable"))?;
            deployed.push(Deployed {
                spec,
                revision: entry.revision,
            });
        }
    }
    deployed
        .sort_by(|a, b| (&a.spec.tenant, &a.spec.handler).cmp(&(&b.spec.tenant, &b.spec.handler)));
    Ok(deployed)
}
