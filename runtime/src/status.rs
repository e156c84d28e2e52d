//! What the cluster looks like right now: the live nodes, and for every deployment its dead
//! letters and, per partition, the node running it and its consumer's backlog. Read by
//! `weir status`.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use serde::Serialize;

use crate::control::{ControlPlane, DeploymentId};
use crate::deploy;
use crate::ownership::membership::{self, MemberRecord};
use crate::say;
use crate::spec::{DeploymentSpec, NodeStatus};

/// The whole cluster.
#[derive(Debug, Default, Serialize)]
pub struct ClusterStatus {
    /// Live nodes, by id.
    pub nodes: Vec<MemberRecord>,
    /// Every deployment.
    pub deployments: Vec<DeploymentStatus>,
}

/// One deployment across the cluster.
#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    /// Tenant.
    pub tenant: String,
    /// Handler.
    pub handler: String,
    /// The deployed version (component digest).
    pub version: String,
    /// The input stream.
    pub stream: String,
    /// The subject patterns it may publish to.
    pub outputs: Vec<String>,
    /// What its partitions do, in a word or three (see [`deployment_state`]).
    pub state: String,
    /// Whether it is paused (`weir pause`); its partitions' states say whether they hold.
    pub paused: bool,
    /// What keeps this command from reading the deployment whole: its record in
    /// `weir_deployments` is invalid (and every node refuses it), or its stream cannot be read.
    /// Its partitions are then not listed.
    pub problem: Option<String>,
    /// Load errors reported by live nodes, by node.
    pub errors: BTreeMap<String, String>,
    /// Dead letters held in `WEIR_DLQ` (see `weir dlq ls`).
    pub dead_letters: u64,
    /// What its handler keeps in state, over every partition, where read ([`add_state`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_state: Option<KeptState>,
    /// Writes to its state the tenant's quotas refused, by quota, over the live nodes running
    /// it, each since it began to (see [`NodeStatus::state_refusals`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub state_refusals: BTreeMap<String, u64>,
    /// Every partition, in order.
    pub partitions: Vec<PartitionStatus>,
}

/// What a handler keeps in state (see `weir state ls`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct KeptState {
    /// Keys, over every partition.
    pub keys: u64,
    /// Bytes of their values.
    pub bytes: u64,
}

/// Reads what each deployment of `status` keeps in state, from its tenant's state bucket: a
/// listing of every key, so `weir status` does it, and the console's sampler does not.
pub async fn add_state(js: &jetstream::Context, status: &mut ClusterStatus) -> anyhow::Result<()> {
    for deployment in &mut status.deployments {
        let Ok(id) = DeploymentId::new(&deployment.tenant, &deployment.handler) else {
            continue;
        };
        let Some(bucket) = crate::lifecycle::kept_state(js, &id).await? else {
            continue;
        };
        let entries = bucket.entries(&id, None).await?;
        if !entries.is_empty() {
            deployment.kept_state = Some(KeptState {
                keys: entries.len() as u64,
                bytes: entries.iter().map(|e| e.size).sum(),
            });
        }
    }
    Ok(())
}

/// One partition of a deployment.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// The live nodes running it: one normally, two for a moment during a handoff, none while
    /// a dead node's partition waits for its membership to expire.
    pub owners: Vec<String>,
    /// Messages delivered and not yet settled (up to the deployment's window).
    pub pending: u64,
    /// Messages delivered more than once so far.
    pub redelivered: u64,
    /// Messages in the partition not yet delivered.
    pub lag: u64,
    /// Deliveries settled so far (acked or rejected): the consumer's ack floor, counted in
    /// deliveries, so a retried message counts once per attempt. How fast it grows is the
    /// partition's throughput.
    pub settled: u64,
    /// What the partition waits for, if its owner lacks the capacity to run it: an instance or
    /// memory of the tenant's quota, or an instance that cannot start. Its messages wait too.
    pub waiting: Option<String>,
    /// Why its worker failed, while it is being started again.
    pub failing: Option<String>,
    /// The owner whose worker holds the consumer's pin, which only it receives messages
    /// under; none while the partition is idle (its next message pins a worker).
    pub holder: Option<String>,
    /// What the partition does, as its owners' workers report it.
    pub state: PartitionState,
}

/// What a partition does, as the workers running it report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Its messages are handled: by the holder of its pin, or by the first worker a message
    /// pins when it is idle.
    Running,
    /// Its owner waits for the pin, which an earlier holder keeps until it lets the partition
    /// go or its pin times out.
    Standby,
    /// The deployment is paused; its owner finishes the message in hand first.
    Pausing,
    /// The deployment is paused, and the partition holds its messages.
    Paused,
    /// Its owner lacks the capacity to run it (see `waiting`).
    Waiting,
    /// Its worker failed and is being started again (see `failing`).
    Failing,
    /// No live node runs it.
    NotRunning,
}

impl PartitionState {
    /// As `weir status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Standby => "standby",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Waiting => "waiting",
            Self::Failing => "failing",
            Self::NotRunning => "not running",
        }
    }
}

/// Reads the live nodes, the deployments (every tenant's, or `tenant`'s), what each live node
/// runs and every consumer's state.
pub async fn read(
    js: &jetstream::Context,
    control: &ControlPlane,
    tenant: Option<&str>,
) -> anyhow::Result<ClusterStatus> {
    let nodes = membership::live_nodes(&control.nodes).await?;
    let live: BTreeSet<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
    let mut statuses = node_statuses(control, tenant).await?;
    let dead_letters = crate::dlq::counts(js, tenant).await?;
    let mut deployments = Vec::new();
    for listed in deploy::list(control, tenant).await? {
        let key = listed.key;
        let reports: Vec<NodeStatus> = statuses
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .filter(|status| live.contains(status.node.as_str()))
            .collect();
        let errors = reports
            .iter()
            .filter_map(|r| Some((r.node.clone(), r.error.clone()?)))
            .collect();
        let dead_letters = dead_letters.get(&key).copied().unwrap_or(0);
        let mut state_refusals = BTreeMap::<String, u64>::new();
        for (quota, count) in reports.iter().flat_map(|r| &r.state_refusals) {
            // Summed from records in `weir_status`: never trusted not to overflow.
            let counted = state_refusals.entry(quota.clone()).or_default();
            *counted = counted.saturating_add(*count);
        }
        let spec = match listed.spec {
            Ok(spec) => spec,
            Err(reason) => {
                let (tenant, handler) = key.split_once('.').unwrap_or((&key, ""));
                deployments.push(DeploymentStatus {
                    tenant: tenant.to_owned(),
                    handler: handler.to_owned(),
                    version: String::new(),
                    stream: String::new(),
                    outputs: Vec::new(),
                    state: PartitionState::NotRunning.as_str().to_owned(),
                    paused: false,
                    problem: Some(format!("invalid deployment record: {reason}")),
                    errors,
                    dead_letters,
                    kept_state: None,
                    state_refusals,
                    partitions: Vec::new(),
                });
                continue;
            }
        };
        let id = spec.id()?;
        let (partitions, problem) = match js.get_stream(&spec.stream).await {
            Ok(stream) => (partitions(&stream, &id, &spec, &reports).await, None),
            Err(error) => {
                let problem = format!("cannot read stream {}: {error}", spec.stream);
                (Vec::new(), Some(problem))
            }
        };
        deployments.push(DeploymentStatus {
            tenant: spec.tenant.clone(),
            handler: spec.handler.clone(),
            version: spec.version.clone(),
            stream: spec.stream.clone(),
            outputs: spec.outputs.clone(),
            state: deployment_state(&spec, &reports),
            paused: spec.paused,
            problem,
            errors,
            dead_letters,
            kept_state: None,
            state_refusals,
            partitions,
        });
    }
    Ok(ClusterStatus { nodes, deployments })
}

/// A deployment's state as the live nodes report it, for `weir ls`: `running` when every partition runs
/// somewhere, `paused` once every one holds, else what is missing.
pub fn deployment_state(spec: &DeploymentSpec, reports: &[NodeStatus]) -> String {
    let running: BTreeSet<u32> = reports
        .iter()
        .flat_map(|r| r.partitions.iter().copied())
        .filter(|&p| p < spec.partitions)
        .collect();
    let held = reports
        .iter()
        .all(|r| r.partitions.iter().all(|p| r.paused.contains(p)));
    let paused = if spec.paused { " (paused)" } else { "" };
    match running.len() as u32 {
        0 => format!("not running{paused}"),
        n if n < spec.partitions => format!("{n}/{} running{paused}", spec.partitions),
        _ if spec.paused && held => "paused".to_owned(),
        _ if spec.paused => "pausing".to_owned(),
        _ => "running".to_owned(),
    }
}

/// Every partition of a deployment: the live nodes running it, by their `reports`, and its
/// consumer's backlog.
async fn partitions(
    stream: &jetstream::stream::Stream,
    id: &DeploymentId,
    spec: &DeploymentSpec,
    reports: &[NodeStatus],
) -> Vec<PartitionStatus> {
    let mut partitions = Vec::new();
    for partition in 0..spec.partitions {
        // A node that failed to load a new version still runs the one before.
        let running: Vec<&NodeStatus> = reports
            .iter()
            .filter(|r| r.partitions.contains(&partition))
            .collect();
        let owners = running.iter().map(|r| r.node.clone()).collect();
        let waiting = running
            .iter()
            .find_map(|r| r.waiting.get(&partition))
            .cloned();
        let failing = running
            .iter()
            .find_map(|r| r.failing.get(&partition))
            .cloned();
        let consumer = stream.consumer_info(id.consumer_name(partition)).await.ok();
        let pin = consumer
            .as_ref()
            .and_then(|c| c.priority_groups.first())
            .and_then(|group| group.pinned_client_id.clone());
        let holder = pin.as_ref().and_then(|pin| {
            running
                .iter()
                .find(|r| r.pins.get(&partition) == Some(pin))
                .map(|r| r.node.clone())
        });
        let paused = running.iter().all(|r| r.paused.contains(&partition));
        let state = match () {
            () if running.is_empty() => PartitionState::NotRunning,
            () if failing.is_some() => PartitionState::Failing,
            () if waiting.is_some() => PartitionState::Waiting,
            () if spec.paused && paused => PartitionState::Paused,
            () if spec.paused => PartitionState::Pausing,
            () if pin.is_some() && holder.is_none() => PartitionState::Standby,
            () => PartitionState::Running,
        };
        partitions.push(PartitionStatus {
            partition,
            owners,
            pending: consumer.as_ref().map_or(0, |c| c.num_ack_pending as u64),
            redelivered: consumer.as_ref().map_or(0, |c| c.num_redelivered as u64),
            lag: consumer.as_ref().map_or(0, |c| c.num_pending),
            settled: consumer
                .as_ref()
                .map_or(0, |c| c.ack_floor.consumer_sequence),
            waiting,
            failing,
            holder,
            state,
        });
    }
    partitions
}

/// What every node reported about every deployment (or `tenant`'s), by deployment key
/// (`<tenant>.<handler>`), including nodes that are gone.
pub async fn node_statuses(
    control: &ControlPlane,
    tenant: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Vec<NodeStatus>>> {
    let mut statuses: BTreeMap<String, Vec<NodeStatus>> = BTreeMap::new();
    for key in crate::control::keys(&control.status, tenant).await? {
        // `<tenant>.<handler>.<node-id>`: names never contain dots, node ids may.
        let mut parts = key.splitn(3, '.');
        let (Some(tenant), Some(handler)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some(value) = control.status.get(&key).await?
            && let Ok(status) = serde_json::from_slice(&value)
        {
            statuses
                .entry(format!("{tenant}.{handler}"))
                .or_default()
                .push(status);
        }
    }
    Ok(statuses)
}

/// Prints the status as tables.
pub fn print(status: &ClusterStatus) -> anyhow::Result<()> {
    if status.nodes.is_empty() {
        say!("no live nodes (start one with `weir node`)")?;
    } else {
        say!("{:<32} {:<9} {:<10} STARTED", "NODE", "STATE", "VERSION")?;
        for node in &status.nodes {
            let state = match node.state {
                membership::MemberState::Active => "active",
                membership::MemberState::Draining => "draining",
            };
            say!(
                "{:<32} {:<9} {:<10} {}",
                node.node,
                state,
                node.version,
                node.started_at
            )?;
        }
    }
    for deployment in &status.deployments {
        say!("")?;
        if deployment.version.is_empty() {
            say!("{}/{}", deployment.tenant, deployment.handler)?;
        } else {
            say!(
                "{}/{} version {} on stream {}, {} dead letter(s){}{}",
                deployment.tenant,
                deployment.handler,
                deployment.version.get(..12).unwrap_or(&deployment.version),
                deployment.stream,
                deployment.dead_letters,
                match deployment.kept_state {
                    Some(KeptState { keys, bytes }) => format!(", state {keys} key(s) {bytes} B"),
                    None => String::new(),
                },
                if deployment.paused { ", paused" } else { "" }
            )?;
        }
        if let Some(problem) = &deployment.problem {
            say!("  {problem}")?;
        }
        for (node, error) in &deployment.errors {
            say!("  error on {node}: {error}")?;
        }
        if !deployment.state_refusals.is_empty() {
            let by_quota: Vec<String> = (deployment.state_refusals.iter())
                .map(|(quota, count)| format!("{count} by {quota}"))
                .collect();
            say!(
                "  state writes refused by the tenant's quotas: {}",
                by_quota.join(", ")
            )?;
        }
        if deployment.partitions.is_empty() {
            continue;
        }
        say!(
            "  {:>9}  {:<32} {:>7} {:>11} {:>9}  STATE",
            "PARTITION",
            "OWNER",
            "PENDING",
            "REDELIVERED",
            "LAG"
        )?;
        for p in &deployment.partitions {
            let owner = if p.owners.is_empty() {
                "-".to_owned()
            } else {
                p.owners.join(",")
            };
            let state = match (p.state, &p.failing, &p.waiting) {
                (PartitionState::Failing, Some(error), _) => format!("failing: {error}"),
                (PartitionState::Waiting, _, Some(reason)) => format!("waiting: {reason}"),
                (PartitionState::Standby, _, _) => {
                    "standby: an earlier holder keeps the pin".to_owned()
                }
                (state, _, _) => state.as_str().to_owned(),
            };
            say!(
                "  {:>9}  {:<32} {:>7} {:>11} {:>9}  {state}",
                p.partition,
                owner,
                p.pending,
                p.redelivered,
                p.lag
            )?;
        }
    }
    Ok(())
}
