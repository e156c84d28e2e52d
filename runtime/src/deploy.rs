//! `weir deploy`: validate a component, store it, and activate it.
//!
//! Nothing is stored until everything has been checked: the names, the limits and retry policy,
//! the stream (it must exist, be partitioned and use Limits retention), the output patterns
//! (valid, not reserved, stored by a stream), the component (it must parse, satisfy the world
//! and compile) and its `init` (it must accept the configuration). The spec it stores passes
//! [`DeploymentSpec::validate`], the check every node applies to what it reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishErrorKind};
use tracing::Instrument as _;

use crate::clock::now_rfc3339;
use crate::control::{self, ControlPlane, DEPLOYMENTS_BUCKET, DeploymentId};
use crate::deployment::instance_context;
use crate::host::{HandlerInstance, Host};
use crate::outputs::{Coverage, OutputRules, Reserved};
use crate::partition;
use crate::spec::{self, DeploymentSpec, LimitsSpec, RetrySpec, StartAt};
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
    /// Messages of a partition in flight at once.
    pub window: u32,
    /// Per-instance and per-call limits.
    pub limits: LimitsSpec,
    /// Delivery and retry policy, applied to the partition consumers.
    pub retry: RetrySpec,
    /// Handed to the handler's `init`.
    pub config: BTreeMap<String, String>,
    /// Subject patterns the handler may publish to.
    pub outputs: Vec<String>,
    /// Where a new deployment starts on its stream; `None` for the default (every message), or,
    /// on a redeploy, the place each partition has.
    pub from: Option<From>,
    /// Who deploys: the NATS user, where the command named one.
    pub deployed_by: Option<String>,
    /// Empty the handler's state first (pausing the version that runs while it is emptied).
    /// Without it, a handler whose state was laid out over another partition count than the
    /// stream's is refused: a key's state would not be where its messages are.
    pub reset_state: bool,
}

/// Where a deployment starts on its stream, as `weir deploy --from` says it: `all`, `new`, a
/// stream sequence, or a time (RFC 3339, or a duration meaning that long ago).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Every message the stream holds.
    All,
    /// Only messages stored after the deploy.
    New,
    /// Messages from this stream sequence on.
    Sequence(u64),
    /// Messages stored from this time on.
    Time(time::OffsetDateTime),
}

impl std::str::FromStr for From {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        use time::format_description::well_known::Rfc3339;
        match text {
            "all" => return Ok(Self::All),
            "new" => return Ok(Self::New),
            _ => {}
        }
        if let Ok(seq) = text.parse::<u64>() {
            return match seq {
                0 => Err("stream sequences start at 1".to_owned()),
                seq => Ok(Self::Sequence(seq)),
            };
        }
        if let Ok(time) = time::OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(Self::Time(time));
        }
        if let Ok(ago) = humantime::parse_duration(text) {
            let since = time::Duration::try_from(ago)
                .ok()
                .and_then(|ago| time::OffsetDateTime::now_utc().checked_sub(ago))
                .ok_or_else(|| format!("{text} ago is before any time weir can store"))?;
            return Ok(Self::Time(since));
        }
        Err(format!(
            "expected all, new, a stream sequence (e.g. 1042), a time (e.g. \
             2026-12-01T09:00:00Z) or how long ago (e.g. 15m), not {text:?}"
        ))
    }
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
        window,
        limits,
        retry,
        config,
        outputs,
        from,
        deployed_by,
        reset_state,
    } = request;
    let reserved = Reserved::default();
    spec::validate_window(window)?;
    limits.validate()?;
    retry.validate()?;
    spec::validate_stream_name(&stream)?;
    spec::validate_config(&config)?;
    spec::validate_outputs(&reserved, &outputs)?;
    check_may_write(js, &id).await?;
    let partitions = partition::input_stream_partitions(js, &stream).await?;
    for pattern in &outputs {
        check_output_stored(js, &reserved, pattern).await?;
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
    let rules = OutputRules::allowing(&outputs);
    let context = Arc::new(instance_context(&limits, rules, &config, &budget));
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
    let mut current = current_spec(&control, &id).await;
    let was_paused = current.as_ref().is_some_and(|current| current.paused);
    if let Some(bucket) = crate::lifecycle::kept_state(js, &id).await? {
        let layout = bucket.layout(&id).await?;
        if reset_state && layout.keys > 0 {
            // Nothing is committed while it is emptied.
            if current.as_ref().is_some_and(|current| !current.paused) {
                crate::lifecycle::set_paused(js, &id, true, |_| {}).await?;
                current = current_spec(&control, &id).await;
            }
            bucket.purge(&id).await?;
        } else if layout.moves_under(partitions) {
            anyhow::bail!(
                "{id} keeps state ({} key(s)) laid out over {} partition(s), and stream {stream} \
                 has {partitions}: each key's state would be in another partition than its \
                 messages. Deploy with --reset-state to start the state over, empty, or onto a \
                 stream with as many partitions as before",
                layout.keys,
                match layout.partitions.iter().next() {
                    Some(p) => p.to_string(),
                    None => "other".to_owned(),
                }
            );
        }
    }
    let start = match (&current, from) {
        // The partitions' consumers exist, and keep their place.
        (Some(current), _) if current.stream == stream => current.start,
        (_, None | Some(From::All)) => StartAt::All,
        (_, Some(From::New)) => StartAt::Sequence(next_sequence(js, &stream).await?),
        (_, Some(From::Sequence(seq))) => StartAt::Sequence(seq),
        (_, Some(From::Time(time))) => StartAt::Time(time),
    };
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
        window,
        limits,
        retry,
        config,
        outputs,
        deployed_at: now_rfc3339(),
        deployed_by,
        start,
        // A redeploy of a paused handler stays paused until `weir resume`.
        paused: was_paused,
    };
    spec.validate(&reserved)
        .context("weir deploy built a spec that nodes would refuse")?;
    let revision = control
        .deployments
        .put(id.key(), serde_json::to_vec(&spec)?.into())
        .await
        .with_context(|| format!("failed to write deployment {}", id.key()))?;
    Ok(Deployed { spec, revision })
}

/// The valid spec `id` runs now, if any.
async fn current_spec(control: &ControlPlane, id: &DeploymentId) -> Option<DeploymentSpec> {
    let entry = control.deployments.entry(id.key()).await.ok()??;
    if entry.operation != jetstream::kv::Operation::Put {
        return None;
    }
    let reserved = Reserved::default();
    spec::read_record(&entry.key, &entry.value, &reserved)
        .ok()
        .map(|(_, spec)| spec)
}

/// The sequence the next message stored in `stream` will have.
async fn next_sequence(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    let mut stream = js
        .get_stream(stream)
        .await
        .with_context(|| format!("failed to read stream {stream}"))?;
    let info = stream.info().await?;
    Ok(info.state.last_sequence + 1)
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
/// one, every acked message would fail and be retried until it is given up. A pattern that
/// also covers reserved subjects (`>`) needs a stream of its own for the rest: the streams of
/// key-value buckets, object stores and weir's dead letters store only reserved subjects.
async fn check_output_stored(
    js: &jetstream::Context,
    reserved: &Reserved,
    pattern: &str,
) -> anyhow::Result<()> {
    let mut names = streams_storing(js, pattern)
        .await
        .with_context(|| format!("failed to find the stream for --output {pattern:?}"))?;
    if reserved.coverage(pattern) == Coverage::Part {
        names.retain(|name| !stores_only_reserved_subjects(name));
    }
    anyhow::ensure!(
        !names.is_empty(),
        "no stream stores subjects matching --output {pattern:?}: create one first, e.g. \
         `weir stream create OUTPUTS --subjects '{pattern}'`"
    );
    Ok(())
}

/// Whether a stream of this name holds only reserved subjects: a key-value bucket's
/// (`KV_<bucket>`, subjects `$KV.<bucket>.>`), an object store's (`OBJ_<bucket>`, `$O.<bucket>.>`)
/// or one of weir's own.
fn stores_only_reserved_subjects(name: &str) -> bool {
    name.starts_with("KV_")
        || name.starts_with("OBJ_")
        || [crate::dlq::DLQ_STREAM, crate::dlq::ADVISORIES_STREAM].contains(&name)
}

/// The names of the streams whose subjects overlap `pattern`, every page of them.
async fn streams_storing(js: &jetstream::Context, pattern: &str) -> anyhow::Result<Vec<String>> {
    use jetstream::response::Response;
    #[derive(serde::Deserialize)]
    struct Page {
        total: usize,
        #[serde(default)]
        streams: Option<Vec<String>>,
    }
    let mut names = Vec::new();
    loop {
        let request = serde_json::json!({ "subject": pattern, "offset": names.len() });
        let page = match js.request("STREAM.NAMES", &request).await? {
            Response::Ok(page) => page,
            Response::Err { error } => return Err(error.into()),
        };
        let Page { total, streams } = page;
        let streams = streams.unwrap_or_default();
        let last = streams.is_empty() || names.len() + streams.len() >= total;
        names.extend(streams);
        if last {
            return Ok(names);
        }
    }
}

/// A record of `weir_deployments` as `weir ls` and `weir status` read it: a deployment, or
/// why it is none (anybody who may write a tenant's records may write one that is wrong).
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key, `<tenant>.<handler>`.
    pub key: String,
    /// Its revision.
    pub revision: u64,
    /// The spec, which passed [`DeploymentSpec::validate`], or what is wrong with the record.
    pub spec: Result<DeploymentSpec, String>,
}

/// Every record in `weir_deployments`, or `tenant`'s, sorted by key.
pub async fn list(control: &ControlPlane, tenant: Option<&str>) -> anyhow::Result<Vec<Listed>> {
    let reserved = Reserved::default();
    let mut listed = Vec::new();
    for key in control::keys(&control.deployments, tenant).await? {
        let entry = control
            .deployments
            .entry(&key)
            .await
            .with_context(|| format!("failed to read deployment {key}"))?;
        let Some(entry) = entry.filter(|e| e.operation == jetstream::kv::Operation::Put) else {
            continue;
        };
        let spec = spec::read_record(&key, &entry.value, &reserved)
            .map(|(_, spec)| spec)
            .map_err(|error| format!("{error:#}"));
        listed.push(Listed {
            key,
            revision: entry.revision,
            spec,
        });
    }
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_reads_all_new_a_sequence_a_time_or_how_long_ago() {
        assert_eq!("all".parse(), Ok(From::All));
        assert_eq!("new".parse(), Ok(From::New));
        assert_eq!("1042".parse(), Ok(From::Sequence(1042)));
        let at = time::OffsetDateTime::from_unix_timestamp(1_796_115_600).ok();
        assert_eq!("2026-12-01T09:00:00Z".parse().ok(), at.map(From::Time));
        let Ok(From::Time(ago)) = "15m".parse::<From>() else {
            panic!("15m is a time");
        };
        let expected = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(15 * 60);
        assert!((ago - expected).abs() < time::Duration::seconds(5), "{ago}");
        assert_eq!(
            "0".parse::<From>(),
            Err("stream sequences start at 1".to_owned())
        );
        let error = "yesterday".parse::<From>().err().unwrap_or_default();
        assert!(
            error.starts_with("expected all, new, a stream sequence"),
            "{error}"
        );
    }
}
