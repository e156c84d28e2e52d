//! A handler's life after `weir deploy`: undeploy, pause and resume, its versions, and rollback.
//!
//! Each is a change to the deployment's record in `weir_deployments`, which every node follows
//! at a message boundary of each partition: a removed record stops the deployment, a record
//! with `paused` holds it, and a rollback writes an earlier version's spec again. The record's
//! history is the list of versions. Nothing is written when the request is wrong, and each
//! command waits until the live nodes report that they did it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};

use crate::clock::now_rfc3339;
use crate::control::{ControlPlane, DeploymentId};
use crate::outputs::Reserved;
use crate::ownership::membership;
use crate::spec::{self, DeploymentSpec, NodeStatus};
use crate::state::StateBucket;
use crate::{partition, status};

/// How often a command looks at what the nodes report while it waits for them.
const POLL: Duration = Duration::from_millis(200);
/// How long a command waits for the nodes beyond the handler's own deadline: a node finishes
/// the call in hand before it lets a partition go.
const NODES_GRACE: Duration = Duration::from_secs(15);

/// What `weir undeploy` did.
#[derive(Debug)]
pub struct Undeployed {
    /// The partition consumers deleted.
    pub consumers: usize,
    /// The stored components removed (none with `--keep-artifacts`).
    pub artifacts: usize,
    /// Dead letters of the deployment, kept in `WEIR_DLQ`.
    pub dead_letters: u64,
    /// The keys of its state, and whether they were deleted; `None` if it kept none.
    pub state: Option<(usize, bool)>,
    /// Live nodes that had not let the deployment go when the wait ran out.
    pub unconfirmed: Vec<String>,
}

/// Stops `id` everywhere: removes its record, waits for every live node to stop its workers
/// (each finishes the message in hand), then deletes its partition consumers and, unless
/// `keep_artifacts`, its stored components and its version history. Its dead letters stay, and
/// its failure records expire by themselves (the dead-letter mover may still need them). Its
/// state is kept, for a deployment under the same name to take up, unless `delete_state`.
/// `progress` is told what the command waits for.
pub async fn undeploy(
    js: &jetstream::Context,
    id: &DeploymentId,
    keep_artifacts: bool,
    delete_state: bool,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Undeployed> {
    let control = existing(js, id).await?;
    let entry = record(&control, id).await?;
    // Even a record no node accepts is removed; its stream and partitions, if it names them,
    // say which consumers to delete.
    let stored: Option<DeploymentSpec> = serde_json::from_slice(&entry.value).ok();
    // The record is the tenant's, and need not be valid.
    let timeout = stored
        .as_ref()
        .map_or(Duration::ZERO, |spec| spec.limits.handler_timeout)
        .min(spec::MAX_DURATION)
        .saturating_add(NODES_GRACE);
    let revision = Some(entry.revision);
    if keep_artifacts {
        control
            .deployments
            .delete_expect_revision(id.key(), revision)
            .await
    } else {
        // The earlier versions go with their components.
        control
            .deployments
            .purge_expect_revision(id.key(), revision)
            .await
    }
    .with_context(|| format!("failed to remove deployment {id} (changed meanwhile? try again)"))?;

    let (_, unconfirmed) = wait_for_nodes(&control, id, timeout, &mut progress, |_| false).await?;
    let mut consumers = 0;
    if let Some(spec) = &stored
        && spec.partitions <= partition::MAX_PARTITIONS
        && let Ok(stream) = js.get_stream(&spec.stream).await
    {
        for partition in 0..spec.partitions {
            if stream
                .delete_consumer(&id.consumer_name(partition))
                .await
                .is_ok()
            {
                consumers += 1;
            }
        }
    }
    let artifacts = if keep_artifacts {
        0
    } else {
        control.artifacts.remove_all(id).await?
    };
    let dead_letters = crate::dlq::counts(js, Some(&id.tenant))
        .await?
        .get(&id.key())
        .copied()
        .unwrap_or(0);
    let state = match kept_state(js, id).await? {
        Some(bucket) if delete_state => Some((bucket.purge(id).await?, true)),
        Some(bucket) => Some((bucket.entries(id, None).await?.len(), false)),
        None => None,
    }
    .filter(|(keys, _)| *keys > 0);
    Ok(Undeployed {
        consumers,
        artifacts,
        dead_letters,
        unconfirmed,
        state,
    })
}

/// What a pause or a resume found and did.
#[derive(Debug)]
pub enum Paused {
    /// The deployment was in that state already; nothing was written.
    Already,
    /// Written; every live node that runs partitions of it reported them held (or running
    /// again), but those named here, which had not when the wait ran out.
    Done {
        /// Live nodes that reported the change.
        confirmed: Vec<String>,
        /// Live nodes that had not reported the change in time.
        unconfirmed: Vec<String>,
    },
}

/// Pauses (`paused`) or resumes `id`: every partition holds its messages after the one in
/// hand, keeping its place, or goes on in order. Waits until the live nodes report it.
pub async fn set_paused(
    js: &jetstream::Context,
    id: &DeploymentId,
    paused: bool,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Paused> {
    let control = existing(js, id).await?;
    let (revision, spec) = current(&control, id).await?;
    if spec.paused == paused {
        return Ok(Paused::Already);
    }
    let timeout = spec.limits.handler_timeout + NODES_GRACE;
    let spec = DeploymentSpec { paused, ..spec };
    control
        .deployments
        .update(id.key(), serde_json::to_vec(&spec)?.into(), revision)
        .await
        .with_context(|| {
            format!("failed to update deployment {id} (changed meanwhile? try again)")
        })?;
    let partitions = spec.partitions;
    let done = move |status: &NodeStatus| {
        // A node that cannot run it holds nothing.
        status.refuses()
            || if paused {
                status.partitions.iter().all(|p| status.paused.contains(p))
            } else {
                status.paused.is_empty()
            } && status.partitions.iter().all(|&p| p < partitions)
    };
    let (confirmed, unconfirmed) =
        wait_for_nodes(&control, id, timeout, &mut progress, done).await?;
    Ok(Paused::Done {
        confirmed,
        unconfirmed,
    })
}

/// One version of a deployment: a revision of its record that deployed (or rolled back to)
/// a handler, rather than only pausing or resuming it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    /// The record's revision in `weir_deployments`; `weir rollback --to` takes it.
    pub revision: u64,
    /// The spec, or why the record is not one.
    #[serde(flatten)]
    pub spec: VersionSpec,
    /// Whether this is the version that runs now.
    pub current: bool,
}

/// A version's spec, or what is wrong with the record.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSpec {
    /// A valid spec.
    Deployment(Box<DeploymentSpec>),
    /// A record no node would run, and why.
    Invalid(String),
}

/// The versions of `id` the record's history holds, oldest first. Read with a short-lived
/// ordered consumer of the deployments bucket, which the server removes by itself.
pub async fn versions(js: &jetstream::Context, id: &DeploymentId) -> anyhow::Result<Vec<Version>> {
    let deployments = js
        .get_key_value(crate::control::DEPLOYMENTS_BUCKET)
        .await
        .with_context(|| format!("there is no deployment {id}: nothing was ever deployed here"))?;
    let history = history(js, &deployments, id).await?;
    let reserved = Reserved::default();
    let mut versions: Vec<Version> = Vec::new();
    let mut last: Option<DeploymentSpec> = None;
    for entry in &history {
        let Some(value) = &entry.value else {
            last = None;
            continue;
        };
        let spec = spec::read_record(&id.key(), value, &reserved).map(|(_, spec)| spec);
        let spec = match spec {
            Ok(spec) if last.as_ref().is_some_and(|last| last.runs_like(&spec)) => {
                // A pause or a resume of the version before.
                last = Some(spec);
                continue;
            }
            Ok(spec) => {
                last = Some(spec.clone());
                VersionSpec::Deployment(Box::new(spec))
            }
            Err(error) => {
                last = None;
                VersionSpec::Invalid(format!("{error:#}"))
            }
        };
        versions.push(Version {
            revision: entry.revision,
            spec,
            current: false,
        });
    }
    let live = history.last().is_some_and(|entry| entry.value.is_some());
    if live && let Some(newest) = versions.last_mut() {
        newest.current = true;
    }
    if versions.is_empty() {
        anyhow::bail!("there is no deployment {id} (see `weir ls`)");
    }
    Ok(versions)
}

/// One revision of a deployment's record: its value, or `None` where it was removed.
struct Revision {
    revision: u64,
    value: Option<bytes::Bytes>,
}

/// Every revision of `id`'s record the deployments bucket keeps, oldest first.
async fn history(
    js: &jetstream::Context,
    deployments: &kv::Store,
    id: &DeploymentId,
) -> anyhow::Result<Vec<Revision>> {
    use futures::StreamExt as _;
    let failed = || format!("failed to read the history of deployment {id}");
    let filter = format!("{}{}", deployments.prefix, id.key());
    let all = jetstream::consumer::DeliverPolicy::All;
    let consumer = crate::control::reading_consumer(js, &deployments.stream, filter, all)
        .await
        .with_context(failed)?;
    let mut revisions = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(revisions);
    }
    let mut messages = consumer.messages().await.with_context(failed)?;
    while let Some(message) = messages.next().await {
        let message = message.with_context(failed)?;
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(failed)?;
        let (revision, last) = (info.stream_sequence, info.pending == 0);
        let removed = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("KV-Operation"))
            .is_some_and(|operation| matches!(operation.as_str(), "DEL" | "PURGE"));
        revisions.push(Revision {
            revision,
            value: (!removed).then(|| message.payload.clone()),
        });
        if last {
            break;
        }
    }
    Ok(revisions)
}

/// What `weir rollback` made current.
#[derive(Debug)]
pub struct RolledBack {
    /// The version rolled back to, as listed by [`versions`].
    pub to: Version,
    /// The new record's spec.
    pub spec: DeploymentSpec,
}

/// Makes an earlier version of `id` current again, with its own configuration and limits:
/// the version `to` names (a revision, or the start of a component digest), or by default the
/// one before the current one. The partitions keep their place, and a paused deployment stays
/// paused.
pub async fn rollback(
    js: &jetstream::Context,
    id: &DeploymentId,
    to: Option<&str>,
    deployed_by: Option<String>,
) -> anyhow::Result<RolledBack> {
    let control = existing(js, id).await?;
    let (revision, current) = current(&control, id).await?;
    let versions = versions(js, id).await?;
    anyhow::ensure!(
        versions
            .last()
            .is_some_and(|v| v.current && v.revision <= revision),
        "deployment {id} changed while its versions were read; try again"
    );
    let target = match to {
        None => versions
            .iter()
            .rev()
            .filter(|v| !v.current)
            .find(|v| matches!(&v.spec, VersionSpec::Deployment(spec) if !spec.runs_like_version(&current)))
            .with_context(|| format!("deployment {id} has no earlier version to roll back to (see `weir versions`)"))?,
        Some(to) => pick(&versions, to)
            .with_context(|| format!("deployment {id} has no version {to:?} (see `weir versions`)"))?,
    };
    let VersionSpec::Deployment(earlier) = &target.spec else {
        anyhow::bail!(
            "revision {} of deployment {id} is not a valid deployment",
            target.revision
        );
    };
    if target.current {
        anyhow::bail!(
            "revision {} is the version deployment {id} runs now",
            target.revision
        );
    }
    // What a node checks before it runs it: the component is still there, and the stream
    // still has the partitions the version was deployed for.
    if crate::builtin::Builtin::from_artifact(&earlier.artifact).is_none() {
        anyhow::ensure!(
            control.artifacts.contains(&earlier.artifact).await,
            "the component of revision {} ({}) is no longer stored",
            target.revision,
            earlier.artifact
        );
    }
    let partitions = partition::input_stream_partitions(js, &earlier.stream).await?;
    earlier.check_partitions(partitions)?;
    let spec = DeploymentSpec {
        deployed_at: now_rfc3339(),
        deployed_by,
        start: if earlier.stream == current.stream {
            current.start
        } else {
            earlier.start
        },
        paused: current.paused,
        ..(**earlier).clone()
    };
    control
        .deployments
        .update(id.key(), serde_json::to_vec(&spec)?.into(), revision)
        .await
        .with_context(|| {
            format!("failed to update deployment {id} (changed meanwhile? try again)")
        })?;
    Ok(RolledBack {
        to: target.clone(),
        spec,
    })
}

/// The version `to` names: a revision number, or else the newest version whose digest starts
/// with `to` (at least four hex digits).
fn pick<'a>(versions: &'a [Version], to: &str) -> Option<&'a Version> {
    if let Ok(revision) = to.parse::<u64>()
        && let Some(version) = versions.iter().find(|v| v.revision == revision)
    {
        return Some(version);
    }
    if to.len() < 4 {
        return None;
    }
    versions
        .iter()
        .rev()
        .find(|v| matches!(&v.spec, VersionSpec::Deployment(spec) if spec.version.starts_with(to)))
}

/// The control plane, which exists if anything was ever deployed.
async fn existing(js: &jetstream::Context, id: &DeploymentId) -> anyhow::Result<ControlPlane> {
    ControlPlane::existing(js)
        .await?
        .with_context(|| format!("there is no deployment {id}: nothing was ever deployed here"))
}

/// The state bucket of `id`'s tenant, if there is one.
pub async fn kept_state(
    js: &jetstream::Context,
    id: &DeploymentId,
) -> anyhow::Result<Option<StateBucket>> {
    let bucket = crate::state::state_bucket(&id.tenant);
    if crate::control::existing_stream(js, &format!("KV_{bucket}"))
        .await?
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(StateBucket::at(js, &id.tenant).await?))
}

/// Whether `id` is deployed and not paused: handling messages, with its state in memory.
pub async fn running(js: &jetstream::Context, id: &DeploymentId) -> anyhow::Result<bool> {
    // A record no node runs is not running.
    Ok(deployed_spec(js, id)
        .await?
        .and_then(Result::ok)
        .is_some_and(|spec| !spec.paused))
}

/// Whether `id` has a deployment record, valid or not.
pub async fn deployed(js: &jetstream::Context, id: &DeploymentId) -> anyhow::Result<bool> {
    Ok(deployed_spec(js, id).await?.is_some())
}

/// `id`'s record, as a spec or why it is not one; `None` if there is none.
async fn deployed_spec(
    js: &jetstream::Context,
    id: &DeploymentId,
) -> anyhow::Result<Option<anyhow::Result<DeploymentSpec>>> {
    let Some(control) = ControlPlane::existing(js).await? else {
        return Ok(None);
    };
    let entry = control
        .deployments
        .entry(id.key())
        .await
        .with_context(|| format!("failed to read deployment {id}"))?;
    Ok(entry
        .filter(|entry| entry.operation == kv::Operation::Put)
        .map(|entry| {
            spec::read_record(&entry.key, &entry.value, &Reserved::default()).map(|(_, s)| s)
        }))
}

/// The current record of `id` and its revision, which must be a valid deployment.
async fn current(
    control: &ControlPlane,
    id: &DeploymentId,
) -> anyhow::Result<(u64, DeploymentSpec)> {
    let entry = record(control, id).await?;
    let (_, spec) = spec::read_record(&entry.key, &entry.value, &Reserved::default())
        .with_context(|| {
            format!("the record of deployment {id} is invalid (see `weir ls`); deploy it again")
        })?;
    Ok((entry.revision, spec))
}

/// The record of `id`, which must exist.
async fn record(control: &ControlPlane, id: &DeploymentId) -> anyhow::Result<kv::Entry> {
    control
        .deployments
        .entry(id.key())
        .await
        .with_context(|| format!("failed to read deployment {id}"))?
        .filter(|entry| entry.operation == kv::Operation::Put)
        .with_context(|| format!("there is no deployment {id} (see `weir ls`)"))
}

/// Waits until every live node's report on `id` is `done` (or gone, when `done` is never
/// true), or `timeout` runs out; returns the nodes whose report was, and those whose was not.
async fn wait_for_nodes(
    control: &ControlPlane,
    id: &DeploymentId,
    timeout: Duration,
    progress: &mut impl FnMut(&str),
    done: impl Fn(&NodeStatus) -> bool,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let started = Instant::now();
    loop {
        let live: BTreeSet<String> = membership::live_nodes(&control.nodes)
            .await?
            .into_iter()
            .map(|record| record.node)
            .collect();
        let (mut finished, mut pending): (Vec<NodeStatus>, Vec<NodeStatus>) =
            status::node_statuses(control, Some(&id.tenant))
                .await?
                .remove(&id.key())
                .unwrap_or_default()
                .into_iter()
                .filter(|status| live.contains(&status.node))
                .partition(|status| done(status));
        finished.sort_by(|a, b| a.node.cmp(&b.node));
        pending.sort_by(|a, b| a.node.cmp(&b.node));
        let nodes = |reports: Vec<NodeStatus>| reports.into_iter().map(|r| r.node).collect();
        let pending: Vec<String> = nodes(pending);
        if pending.is_empty() || started.elapsed() >= timeout {
            return Ok((nodes(finished), pending));
        }
        progress(&format!("waiting for {}", pending.join(", ")));
        tokio::time::sleep(POLL).await;
    }
}

impl DeploymentSpec {
    /// Whether `other` is the same version as this one: the same in everything but when and by
    /// whom it was deployed, and being paused.
    fn runs_like_version(&self, other: &Self) -> bool {
        Self {
            deployed_at: other.deployed_at.clone(),
            deployed_by: other.deployed_by.clone(),
            paused: other.paused,
            start: other.start,
            ..self.clone()
        } == *other
    }
}
