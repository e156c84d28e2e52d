//! Keeps a node's running deployments in step with `weir_deployments` and the membership.
//!
//! The registry task owns the map of running deployments. It checks every record it reads as
//! strictly as `weir deploy` does ([`crate::spec`]) and refuses, in `weir_status`, one that
//! fails, leaving the version that ran before running. For each valid one it loads the
//! component (object store → digest check → compile and link once), then runs a partition
//! worker for every partition placement gives this node, and hands new versions to them
//! through a watch channel, so a redeploy is taken at the next message boundary of each
//! partition. When the membership changes it places every deployment again: workers for
//! partitions that moved away are told to stop (they hand off in the background), workers for
//! partitions that moved here start on standby until the previous owner lets go.
//!
//! Placement is among the nodes able to run a deployment: a node that cannot (the tenant may
//! not read its stream there, its component does not load, its record is invalid) says why in
//! `weir_status` and runs none of its partitions, and every node, following `weir_status`,
//! leaves it out of that deployment's placement, so its share goes to the others. A load that
//! failed is tried again, after a pause that doubles up to a minute. A node is given no more of
//! a tenant's partitions, over all the tenant's deployments, than its quota lets it run
//! (`max_instances`, announced in its membership record), so a tenant's deployments are placed
//! together, and again whenever one of them comes, goes or changes its partition count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    kv::{Entry, Operation},
};
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::builtin::Builtin;
use crate::clock::now_rfc3339;
use crate::control::{self, DeploymentId};
use crate::deployment::{Deployment, HandlerCode, SharedDeployment};
use crate::logs::LogSink;
use crate::node::NodeContext;
use crate::node::supervision::{self, Failing};
use crate::observe::health::Loop;
use crate::observe::metrics::PartitionState;
use crate::ownership::membership::{MaxInstances, MemberView};
use crate::ownership::placement;
use crate::partition;
use crate::spec::{self, DeploymentSpec, NodeStatus};
use crate::state::StateBucket;
use crate::tenants::Tenant;
use crate::worker::{Change, PartitionReport, PartitionWorker, Takeover};

/// Pause before watching `weir_deployments` again after the watch broke.
const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// How long what workers say of their partitions is gathered before it is written to
/// `weir_status`: at a thousand partitions, one record rather than a thousand.
const REPORT_DELAY: Duration = Duration::from_millis(250);
/// How long changes to a tenant's deployments are gathered before it is placed again.
const PLACE_DELAY: Duration = Duration::from_millis(250);
/// Bounds of the pause before a deployment that failed to load is loaded again.
const RELOAD_DELAY_MIN: Duration = Duration::from_secs(1);
const RELOAD_DELAY_MAX: Duration = Duration::from_secs(60);

struct Running {
    updates: watch::Sender<SharedDeployment>,
    /// The stop signal of each partition worker this node runs.
    workers: BTreeMap<u32, CancellationToken>,
    /// Every worker task of this deployment, so that its status is cleared once they are done.
    tracker: TaskTracker,
    /// The partitions whose workers wait for capacity, and why.
    waiting: BTreeMap<u32, String>,
    /// The partitions whose workers hold their messages for a pause.
    paused: BTreeSet<u32>,
    /// The pin each partition's worker holds, where it holds one.
    pins: BTreeMap<u32, String>,
    /// The partitions whose workers failed and are being started again, and why.
    failing: BTreeMap<u32, String>,
    /// The writes to its state the tenant's quotas refused here, by quota
    /// ([`crate::state::Refusals::QUOTAS`]).
    state_refusals: BTreeMap<&'static str, u64>,
    /// The revision of this node's last report in `weir_status`.
    reported: Option<u64>,
    /// The `weir_deployments` revision this node runs.
    revision: u64,
    /// A later revision that failed to load, while this one runs on: its revision, version
    /// and why.
    failed: Option<(u64, String, String)>,
    /// The owner of every partition, as this node last placed them.
    owners: Vec<String>,
    /// The most partitions any version of it run here had: those whose series to remove.
    most_partitions: u32,
}

/// A deployment that failed to load, to be loaded again.
struct Reload {
    at: Instant,
    /// The pause before the attempt after this one.
    next_delay: Duration,
}

pub(crate) struct Registry {
    node: NodeContext,
    running: HashMap<DeploymentId, Running>,
    members: watch::Receiver<Option<MemberView>>,
    /// The active members placement was last computed from.
    placed_with: Option<Vec<(String, MaxInstances)>>,
    /// Every worker task, including those still handing off after being told to stop.
    workers: TaskTracker,
    /// Where workers say they begin or end a wait for capacity or a pause.
    reports: (
        mpsc::UnboundedSender<PartitionReport>,
        mpsc::UnboundedReceiver<PartitionReport>,
    ),
    /// The partitions every record in `weir_deployments` states ([`spec::partitions_of_record`]),
    /// run here or not: with its quota, a node may run only so many of a tenant's partitions,
    /// over all of the tenant's deployments.
    demand: BTreeMap<DeploymentId, u32>,
    /// Tenants whose deployments' partitions changed, to be placed again, and when.
    unplaced: (BTreeSet<String>, Option<Instant>),
    /// Whether the records there were at start are still being read: the deployments started
    /// meanwhile are placed in batches, not one by one.
    replaying: bool,
    /// By deployment, the nodes that say in `weir_status` they cannot run it.
    refusals: HashMap<DeploymentId, BTreeSet<String>>,
    /// By deployment and node, the pins that node's workers last said they hold, kept after
    /// the node is gone: a new owner releases a pin a crashed node still holds.
    pins: HashMap<DeploymentId, BTreeMap<String, BTreeMap<u32, String>>>,
    /// The deployments that failed to load here, and when to load them again.
    reloads: HashMap<DeploymentId, Reload>,
    /// Deployments whose workers said something not yet written to `weir_status`, and when it
    /// is written.
    unreported: (BTreeSet<DeploymentId>, Option<Instant>),
    /// Where the workers' supervisors say a worker failed, or is healthy again.
    failures: (
        mpsc::UnboundedSender<Failing>,
        mpsc::UnboundedReceiver<Failing>,
    ),
}

impl Registry {
    pub(crate) fn new(node: NodeContext, members: watch::Receiver<Option<MemberView>>) -> Self {
        Self {
            node,
            running: HashMap::new(),
            members,
            placed_with: None,
            workers: TaskTracker::new(),
            demand: BTreeMap::new(),
            unplaced: (BTreeSet::new(), None),
            replaying: true,
            reports: mpsc::unbounded_channel(),
            refusals: HashMap::new(),
            pins: HashMap::new(),
            reloads: HashMap::new(),
            unreported: (BTreeSet::new(), None),
            failures: mpsc::unbounded_channel(),
        }
    }

    /// Follows `weir_deployments`, `weir_status` and the membership until `shutdown`, then
    /// stops every worker and waits while each hands its partition off. A watch that breaks
    /// (say, across a server restart) is opened again; replayed entries that match what runs
    /// change nothing.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        'watching: while !shutdown.is_cancelled() {
            let control = &self.node.control;
            let watching = async {
                let watches = tokio::try_join!(
                    control.deployments.watch_with_history(">"),
                    control.status.watch_with_history(">"),
                );
                // With no record at all, there is nothing to read before the node is ready.
                let mut stream = control.deployments.stream.clone();
                let empty = stream
                    .info()
                    .await
                    .is_ok_and(|info| info.state.messages == 0);
                (watches, empty)
            };
            // Bounded by the client's timeouts: waiting on a slow server is not a stall. A node
            // told to stop does not wait for a server that is gone.
            let watched = self.node.health.turning_while(Loop::Registry, watching);
            let (watches, empty) = tokio::select! {
                _ = shutdown.cancelled() => break 'watching,
                watched = watched => watched,
            };
            if empty {
                self.replaying = false;
                self.node.health.set_loaded();
            }
            let mut turns = tokio::time::interval(Duration::from_secs(1));
            match watches {
                Ok((mut entries, mut reports)) => loop {
                    self.node.health.turned(Loop::Registry);
                    let reload = self.next_reload();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = turns.tick() => {}
                        changed = self.members.changed() => {
                            if changed.is_err() {
                                tracing::error!("the membership view closed; stopping every partition");
                                break 'watching;
                            }
                            self.place_all().await;
                        }
                        Some(report) = self.reports.1.recv() => self.partition_report(report),
                        Some(failing) = self.failures.1.recv() => self.failing(failing),
                        () = sleep_until(self.unreported.1) => self.report_unreported().await,
                        () = sleep_until(self.unplaced.1) => self.place_unplaced().await,
                        () = sleep_until(reload.as_ref().map(|(_, at)| *at)) => {
                            if let Some((id, _)) = reload {
                                self.reload(&id).await;
                            }
                        }
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => {
                                // The last of the records there were when the watch began.
                                let caught_up = entry.delta == 0;
                                self.apply(entry).await;
                                if caught_up {
                                    self.replaying = false;
                                    self.node.health.set_loaded();
                                }
                            }
                            Some(Err(error)) => tracing::warn!("deployment watch: {error}"),
                            None => {
                                tracing::warn!("the watch on weir_deployments ended; watching again");
                                break;
                            }
                        },
                        report = reports.next() => match report {
                            Some(Ok(report)) => self.node_report(report).await,
                            Some(Err(error)) => tracing::warn!("status watch: {error}"),
                            None => {
                                tracing::warn!("the watch on weir_status ended; watching again");
                                break;
                            }
                        },
                    }
                },
                Err(error) => {
                    tracing::error!("failed to watch weir_deployments and weir_status: {error}")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(REWATCH_DELAY) => {}
            }
        }
        let ids: Vec<DeploymentId> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
        self.workers.close();
        self.workers.wait().await;
        Ok(())
    }

    async fn apply(&mut self, entry: Entry) {
        let id = match DeploymentId::from_key(&entry.key) {
            Ok(id) => id,
            Err(error) => {
                tracing::warn!("ignoring deployment entry: {error:#}");
                return;
            }
        };
        self.reloads.remove(&id);
        match entry.operation {
            Operation::Delete | Operation::Purge => {
                self.stop(&id).await;
                self.set_demand(&id, None);
            }
            Operation::Put => {
                // Placed by what the record says, whether it is valid here or not: the same
                // on every node, though what a node accepts depends on its configuration.
                self.set_demand(&id, spec::partitions_of_record(&entry.value));
                let tenant = self.node.tenants.get(&id.tenant);
                // Anybody who may write the tenant's records may write one that is wrong.
                let spec = match spec::read_record(&entry.key, &entry.value, &tenant.reserved) {
                    Ok((_, spec)) => spec,
                    Err(error) => {
                        let message = format!("invalid deployment record: {error:#}");
                        self.report_error(&id, entry.revision, "", message).await;
                        return;
                    }
                };
                if let Some(running) = self.running.get(&id) {
                    let before = running.updates.borrow().clone();
                    if before.spec == spec {
                        // The same spec written again: nothing to change but the revision it
                        // runs as.
                        self.report_running(&id, Some(entry.revision)).await;
                        return;
                    }
                    if before.spec.runs_like(&spec) {
                        // Paused or resumed: the same code goes on.
                        let deployment = self.with_code_of(&before, spec, tenant);
                        self.start_or_swap(deployment, entry.revision).await;
                        return;
                    }
                }
                // A load is work, not a stall: the loop counts as turning meanwhile.
                let load = self.load(&id, spec.clone(), tenant.clone());
                let loaded = self.node.health.turning_while(Loop::Registry, load).await;
                match loaded {
                    // Loading takes a while: a record removed or replaced meanwhile is not
                    // started (the watch brings what came after).
                    Ok(_) if !self.still_current(&id, entry.revision).await => {}
                    Ok(deployment) => {
                        self.start_or_swap(Arc::new(deployment), entry.revision)
                            .await
                    }
                    Err(error) => {
                        self.schedule_reload(&id);
                        self.hold_as(&id, spec.paused, tenant);
                        self.report_error(&id, entry.revision, &spec.version, format!("{error:#}"))
                            .await
                    }
                }
            }
        }
    }

    /// Follows how many partitions `id`'s record states (`None`: no record, or none stated), and
    /// places its tenant again soon if that changed. (Soon, not at once: a tenant may write
    /// many records in a row, and one placement after them does.)
    fn set_demand(&mut self, id: &DeploymentId, partitions: Option<u32>) {
        let before = match partitions {
            Some(partitions) => self.demand.insert(id.clone(), partitions),
            None => self.demand.remove(id),
        };
        if before != partitions {
            self.place_soon(&id.tenant);
        }
    }

    /// Places `tenant`'s deployments again within [`PLACE_DELAY`].
    fn place_soon(&mut self, tenant: &str) {
        self.unplaced.0.insert(tenant.to_owned());
        self.unplaced
            .1
            .get_or_insert_with(|| Instant::now() + PLACE_DELAY);
    }

    async fn place_unplaced(&mut self) {
        self.unplaced.1 = None;
        for tenant in std::mem::take(&mut self.unplaced.0) {
            self.place_and_report(&tenant).await;
        }
    }

    /// Whether `revision` is still the last word on `id` in `weir_deployments`.
    async fn still_current(&self, id: &DeploymentId, revision: u64) -> bool {
        match self.node.control.deployments.entry(id.key()).await {
            Ok(Some(entry)) => entry.revision == revision && entry.operation == Operation::Put,
            Ok(None) => false,
            // Not known: the record as watched stands.
            Err(_) => true,
        }
    }

    /// Pauses or resumes the version that runs when a later one, which says `paused`, failed
    /// to load: a paused handler is held whichever of its versions runs.
    fn hold_as(&mut self, id: &DeploymentId, paused: bool, tenant: Arc<Tenant>) {
        let Some(running) = self.running.get(id) else {
            return;
        };
        let before = running.updates.borrow().clone();
        if before.spec.paused == paused {
            return;
        }
        let spec = DeploymentSpec {
            paused,
            ..before.spec.clone()
        };
        running
            .updates
            .send_replace(self.with_code_of(&before, spec, tenant));
    }

    /// `spec`, run by the code that runs `before`.
    fn with_code_of(
        &self,
        before: &Deployment,
        spec: DeploymentSpec,
        tenant: Arc<Tenant>,
    ) -> SharedDeployment {
        let id = before.id.clone();
        let logs = self.logs(&id);
        Arc::new(Deployment {
            state: before.state.clone(),
            ..Deployment::new(id, spec, before.code.clone(), tenant, logs)
        })
    }

    /// Makes a validated spec runnable: checks what needs the server (the tenant may read the
    /// stream, which has the partitions the spec says), then fetches, checks and compiles the
    /// component.
    async fn load(
        &self,
        id: &DeploymentId,
        spec: DeploymentSpec,
        tenant: Arc<Tenant>,
    ) -> anyhow::Result<Deployment> {
        tenant.quotas.check_input_stream(&id.tenant, &spec.stream)?;
        let partitions = partition::input_stream_partitions(&tenant.js, &spec.stream).await?;
        spec.check_partitions(partitions)?;
        if let Some(builtin) = Builtin::from_artifact(&spec.artifact) {
            anyhow::ensure!(
                self.node.builtin_handlers,
                "{} names a built-in handler, which only `weir bench` nodes run",
                spec.artifact
            );
            return Ok(Deployment::new(
                id.clone(),
                spec,
                HandlerCode::Builtin(builtin),
                tenant,
                self.logs(id),
            ));
        }
        let mut object = self
            .node
            .control
            .artifacts
            .get(&spec.artifact)
            .await
            .with_context(|| format!("failed to fetch artifact {}", spec.artifact))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("failed to read artifact {}", spec.artifact))?;
        let host = self.node.host.clone();
        let (started, cached) = (Instant::now(), host.compiles_cached());
        let version = tokio::task::spawn_blocking(move || host.compile(&bytes))
            .await
            .context("the compile task panicked")?
            .with_context(|| format!("failed to load artifact {}", spec.artifact))?;
        tracing::info!(
            tenant = id.tenant,
            handler = id.handler,
            "version {} {} in {:.1?}",
            spec.version.get(..12).unwrap_or(&spec.version),
            if self.node.host.compiles_cached() > cached {
                "loaded from the compile cache"
            } else {
                "compiled"
            },
            started.elapsed()
        );
        anyhow::ensure!(
            version.digest() == spec.version,
            "artifact {} has digest {}, not the deployed version {}",
            spec.artifact,
            version.digest(),
            spec.version
        );
        // Its state bucket: made with the node's rights, used with the tenant's.
        let state = if version.keeps_state() {
            let js = jetstream::new(self.node.client.clone());
            let replicas = control::control_plane_replicas(&self.node.client.server_info());
            StateBucket::ensure(&js, &id.tenant, replicas).await?;
            Some(StateBucket::at(&tenant.js, &id.tenant).await?)
        } else {
            None
        };
        Ok(Deployment {
            state,
            ..Deployment::new(
                id.clone(),
                spec,
                HandlerCode::Wasm(version),
                tenant,
                self.logs(id),
            )
        })
    }

    /// Where `id`'s instances publish their lines.
    fn logs(&self, id: &DeploymentId) -> Option<LogSink> {
        Some(LogSink::new(&self.node.logs, id))
    }

    async fn start_or_swap(&mut self, deployment: SharedDeployment, revision: u64) {
        let id = deployment.id.clone();
        let placed_again = match self.running.get_mut(&id) {
            Some(running) => {
                let before = running.updates.send_replace(deployment.clone());
                running.most_partitions = running.most_partitions.max(deployment.spec.partitions);
                // Each worker moves to the new stream itself; another partition count is
                // another set of partitions.
                before.spec.partitions != deployment.spec.partitions
            }
            None => {
                let (updates, _) = watch::channel(deployment.clone());
                self.running.insert(
                    id.clone(),
                    Running {
                        updates,
                        workers: BTreeMap::new(),
                        tracker: TaskTracker::new(),
                        waiting: BTreeMap::new(),
                        paused: BTreeSet::new(),
                        pins: BTreeMap::new(),
                        failing: BTreeMap::new(),
                        state_refusals: BTreeMap::new(),
                        reported: None,
                        revision,
                        failed: None,
                        owners: Vec::new(),
                        most_partitions: deployment.spec.partitions,
                    },
                );
                true
            }
        };
        if placed_again && self.replaying {
            // Reading what was there at start: placed with the others in batches, every
            // PLACE_DELAY, rather than one by one.
            self.place_soon(&id.tenant);
        } else if placed_again {
            // The tenant's other deployments make room for it, or take what it left.
            for other in self.place_tenant(&id.tenant) {
                if other != id {
                    self.report_running(&other, None).await;
                }
            }
        }
        let running = &self.running[&id];
        tracing::info!(
            tenant = id.tenant,
            handler = id.handler,
            version = deployment.spec.short_version(),
            "running {} partition(s) of stream {}",
            running.workers.len(),
            deployment.spec.stream
        );
        self.report_running(&id, Some(revision)).await;
    }

    /// The active members, once the membership is known, this node among them while it runs
    /// and does not drain. Its record lapses when the server is too busy to take a renewal in
    /// time, and letting every partition go for that would only add to the load: the nodes
    /// whose views dropped it stand by on its partitions meanwhile, since the consumers' pins
    /// keep any two from receiving the same partition's messages.
    fn active_members(&self) -> Option<Vec<String>> {
        let view = self.members.borrow();
        let view = view.as_ref()?;
        let mut active = view.active();
        if !view.is_live(&self.node.id) {
            active.push(self.node.id.clone());
            active.sort();
        }
        Some(active)
    }

    /// What `member` announces it runs at most; this node's own while its record has lapsed.
    fn max_instances_of<'v>(&'v self, view: &'v MemberView, member: &str) -> &'v MaxInstances {
        match view.live.get(member) {
            Some(record) => &record.max_instances,
            None => &self.node.max_instances,
        }
    }

    /// Places every deployment again after the membership changed.
    async fn place_all(&mut self) {
        let Some(active) = self.active_members() else {
            return;
        };
        // Who takes partitions, and how many of each tenant's.
        let view = self.members.borrow().clone().unwrap_or_default();
        let placed_with: Vec<(String, MaxInstances)> = (active.iter())
            .map(|member| (member.clone(), self.max_instances_of(&view, member).clone()))
            .collect();
        if self.placed_with.as_ref() == Some(&placed_with) {
            return;
        }
        tracing::info!(members = ?active, "membership changed");
        self.placed_with = Some(placed_with);
        let tenants: BTreeSet<String> = self.running.keys().map(|id| id.tenant.clone()).collect();
        for tenant in tenants {
            self.place_and_report(&tenant).await;
        }
    }

    /// Places the deployments of `tenant` that this node runs again, and reports those whose
    /// partitions changed here.
    async fn place_and_report(&mut self, tenant: &str) {
        for id in self.place_tenant(tenant) {
            self.report_running(&id, None).await;
        }
    }

    /// Starts and stops workers of `tenant`'s deployments so that this node runs exactly the
    /// partitions placement gives it ([`placement::tenant_owners`]): among the active members
    /// able to run each deployment, and within each member's quota of the tenant's
    /// partitions. Returns the deployments whose partitions here changed.
    fn place_tenant(&mut self, tenant: &str) -> Vec<DeploymentId> {
        let Some(active) = self.active_members() else {
            return Vec::new();
        };
        if !self.running.keys().any(|id| id.tenant == tenant) {
            return Vec::new();
        }
        let me = self.node.id.clone();
        let able = |id: &DeploymentId| -> Vec<String> {
            let refusing = self.refusals.get(id);
            let runs_here = self.running.contains_key(id);
            (active.iter())
                .filter(|member| {
                    // This node runs it, whatever it said before.
                    (runs_here && **member == me)
                        || !refusing.is_some_and(|refusing| refusing.contains(*member))
                })
                .cloned()
                .collect()
        };
        // Every deployment of the tenant in `weir_deployments`, run here or not, with the
        // partition count its record says: the same on every node.
        let demands: Vec<(&DeploymentId, u32, Vec<String>)> = (self.demand.iter())
            .filter(|(id, _)| id.tenant == tenant)
            .map(|(id, &partitions)| (id, partitions, able(id)))
            .collect();
        let list: Vec<placement::Demand<'_, '_>> = (demands.iter())
            .map(|(id, partitions, able)| placement::Demand {
                id,
                partitions: *partitions,
                able,
            })
            .collect();
        let view = self.members.borrow().clone().unwrap_or_default();
        let room = |member: &str| self.max_instances_of(&view, member).of(tenant);
        let placed = placement::tenant_owners(&list, room);
        let owners: Vec<(DeploymentId, Vec<String>)> = (self.running.iter())
            .filter(|(id, _)| id.tenant == tenant)
            .map(|(id, running)| {
                let partitions = running.updates.borrow().spec.partitions;
                let owners: Vec<String> = match placed.get(id) {
                    _ if self.node.claim_all_partitions && active.contains(&me) => {
                        vec![me.clone(); partitions as usize]
                    }
                    Some(owners) if owners.len() == partitions as usize => {
                        owners.iter().map(|&owner| owner.to_owned()).collect()
                    }
                    // It runs a version whose partition count is not its record's (that one
                    // failed to load here): placed by itself, as every node that runs that
                    // version places it.
                    _ => placement::owners(id, partitions, &able(id))
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                };
                (id.clone(), owners)
            })
            .collect();
        owners
            .into_iter()
            .filter_map(|(id, owners)| self.run_placed(&id, owners).then_some(id))
            .collect()
    }

    /// Starts and stops workers of one deployment so that this node runs exactly the
    /// partitions that `owners` (indexed by partition) gives it. Returns whether anything
    /// changed.
    fn run_placed(&mut self, id: &DeploymentId, owners: Vec<String>) -> bool {
        let me = self.node.id.clone();
        let Some(running) = self.running.get_mut(id) else {
            return false;
        };
        let owned: Vec<u32> = (0..)
            .zip(&owners)
            .filter(|(_, owner)| **owner == me)
            .map(|(partition, _)| partition)
            .collect();
        // A partition whose owner left without handing it off: its pin may be a dead node's.
        let previous = std::mem::replace(&mut running.owners, owners);
        let view = self.members.borrow().clone().unwrap_or_default();
        let pins = self.pins.get(id);
        let takeover = |partition: u32| {
            let node = previous.get(partition as usize)?;
            let pin = pins?.get(node)?.get(&partition)?;
            (*node != me && !view.is_live(node)).then(|| Takeover {
                node: node.clone(),
                pin: pin.clone(),
            })
        };
        let mut changed = false;
        running.workers.retain(|partition, stop| {
            let keep = owned.contains(partition);
            if !keep {
                tracing::info!(
                    tenant = id.tenant,
                    handler = id.handler,
                    partition,
                    "partition moved to another node; handing it off"
                );
                stop.cancel();
                changed = true;
            }
            keep
        });
        let workers = &running.workers;
        running
            .waiting
            .retain(|partition, _| workers.contains_key(partition));
        running
            .failing
            .retain(|partition, _| workers.contains_key(partition));
        running
            .paused
            .retain(|partition| workers.contains_key(partition));
        running
            .pins
            .retain(|partition, _| workers.contains_key(partition));
        for partition in owned {
            if running.workers.contains_key(&partition) {
                continue;
            }
            let stop = CancellationToken::new();
            let (updates, shared, fault, reports) = (
                running.updates.subscribe(),
                self.node.for_workers(),
                self.node.worker_fault.clone(),
                self.reports.0.clone(),
            );
            let worker_stop = stop.clone();
            let takeover = takeover(partition);
            let worker_id = id.clone();
            let start = move || {
                let worker = PartitionWorker::new(
                    partition,
                    updates.clone(),
                    &shared,
                    reports.clone(),
                    worker_stop.clone(),
                    takeover.clone(),
                );
                let fault = fault
                    .as_ref()
                    .is_some_and(|fault| (fault.0)(&worker_id, partition));
                async move {
                    assert!(!fault, "a fault injected by the node's configuration");
                    worker.run().await;
                }
            };
            let span = tracing::info_span!(
                "partition",
                tenant = id.tenant.as_str(),
                handler = id.handler.as_str(),
                partition
            );
            let supervised = supervision::supervise(
                id.clone(),
                partition,
                start,
                stop.clone(),
                self.failures.0.clone(),
            );
            self.workers
                .spawn(running.tracker.track_future(supervised.instrument(span)));
            running.workers.insert(partition, stop);
            changed = true;
        }
        changed
    }

    /// Records what a worker says of its partition (a wait for capacity, a pause, begun or
    /// over) in `weir_status`.
    fn partition_report(
        &mut self,
        PartitionReport {
            id,
            partition,
            change,
        }: PartitionReport,
    ) {
        let Some(running) = self.running_partition(&id, partition) else {
            return;
        };
        match change {
            Change::Waiting(Some(reason)) => {
                running.waiting.insert(partition, reason);
            }
            Change::Waiting(None) => {
                running.waiting.remove(&partition);
            }
            Change::Paused(true) => {
                running.paused.insert(partition);
            }
            Change::Paused(false) => {
                running.paused.remove(&partition);
            }
            Change::Pin(Some(pin)) => {
                running.pins.insert(partition, pin);
            }
            Change::Pin(None) => {
                running.pins.remove(&partition);
            }
            Change::StateRefused(refusals) => {
                for (quota, count) in refusals.by_quota() {
                    let counted = running.state_refusals.entry(quota).or_default();
                    *counted = counted.saturating_add(u64::from(count));
                }
            }
        }
        self.report_soon(id);
    }

    /// Writes what the workers of `id` said within [`REPORT_DELAY`].
    fn report_soon(&mut self, id: DeploymentId) {
        self.unreported.0.insert(id);
        self.unreported
            .1
            .get_or_insert_with(|| Instant::now() + REPORT_DELAY);
    }

    async fn report_unreported(&mut self) {
        self.unreported.1 = None;
        for id in std::mem::take(&mut self.unreported.0) {
            self.report_running(&id, None).await;
        }
    }

    /// Follows what another node (or this one) says it made of a deployment: whether it
    /// refuses it, which leaves it out of the deployment's placement.
    async fn node_report(&mut self, entry: Entry) {
        // `<tenant>.<handler>.<node-id>`: names never contain dots, node ids may.
        let mut parts = entry.key.splitn(3, '.');
        let (Some(tenant), Some(handler), Some(node)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(id) = DeploymentId::new(tenant, handler) else {
            return;
        };
        let status = (entry.operation == Operation::Put)
            .then(|| serde_json::from_slice::<NodeStatus>(&entry.value).ok())
            .flatten()
            .filter(|status| status.node == node);
        let refuses = status.as_ref().is_some_and(NodeStatus::refuses);
        let pins = self.pins.entry(id.clone()).or_default();
        match status {
            Some(status) if !status.pins.is_empty() => {
                pins.insert(node.to_owned(), status.pins);
            }
            _ => {
                pins.remove(node);
            }
        }
        if pins.is_empty() {
            self.pins.remove(&id);
        }
        let refusing = self.refusals.entry(id.clone()).or_default();
        let changed = if refuses {
            refusing.insert(node.to_owned())
        } else {
            refusing.remove(node)
        };
        if refusing.is_empty() {
            self.refusals.remove(&id);
        }
        if changed && node != self.node.id {
            tracing::info!(
                tenant = id.tenant,
                handler = id.handler,
                node,
                "{}",
                if refuses {
                    "node cannot run the deployment; placing it among the others"
                } else {
                    "node can run the deployment again"
                }
            );
            self.place_and_report(&id.tenant).await;
        }
    }

    /// Loads a deployment that failed to load again, after a pause that doubles each time.
    fn schedule_reload(&mut self, id: &DeploymentId) {
        let delay = self
            .reloads
            .get(id)
            .map_or(RELOAD_DELAY_MIN, |reload| reload.next_delay);
        tracing::info!(
            tenant = id.tenant,
            handler = id.handler,
            "loading it again in {delay:?}"
        );
        self.reloads.insert(
            id.clone(),
            Reload {
                at: Instant::now() + delay,
                next_delay: (delay * 2).min(RELOAD_DELAY_MAX),
            },
        );
    }

    /// The deployment to load again first, and when.
    fn next_reload(&self) -> Option<(DeploymentId, Instant)> {
        self.reloads
            .iter()
            .min_by_key(|(_, reload)| reload.at)
            .map(|(id, reload)| (id.clone(), reload.at))
    }

    /// Reads the deployment's record again and applies it, as if it had just been written;
    /// keeps the pause it is at, to double it should this attempt fail too.
    async fn reload(&mut self, id: &DeploymentId) {
        let Some(reload) = self.reloads.remove(id) else {
            return;
        };
        match self.node.control.deployments.entry(id.key()).await {
            Ok(Some(entry)) => {
                let next_delay = reload.next_delay;
                self.apply(entry).await;
                if let Some(again) = self.reloads.get_mut(id) {
                    again.at = Instant::now() + next_delay;
                    again.next_delay = (next_delay * 2).min(RELOAD_DELAY_MAX);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(deployment = %id, "failed to read the deployment again: {error}");
                self.reloads.insert(id.clone(), reload);
                self.schedule_reload(id);
            }
        }
    }

    /// The running deployment `id`, if this node still runs its `partition`: a report from a
    /// worker told to stop is stale.
    fn running_partition(&mut self, id: &DeploymentId, partition: u32) -> Option<&mut Running> {
        self.running
            .get_mut(id)
            .filter(|running| running.workers.contains_key(&partition))
    }

    /// Records a partition's worker failure, or its recovery, in `weir_status`.
    fn failing(
        &mut self,
        Failing {
            id,
            partition,
            error,
        }: Failing,
    ) {
        let Some(running) = self.running_partition(&id, partition) else {
            return;
        };
        match error {
            Some(error) => {
                // What the failed worker waited for, held or pinned, it no longer does.
                running.waiting.remove(&partition);
                running.paused.remove(&partition);
                running.pins.remove(&partition);
                running.failing.insert(partition, error)
            }
            None => running.failing.remove(&partition),
        };
        self.report_soon(id);
    }

    /// Records in `weir_status` what this node runs of the deployment; `revision` is the
    /// `weir_deployments` revision it now runs, `None` to keep the one it ran. A later revision
    /// that failed to load is reported with it, until one loads.
    async fn report_running(&mut self, id: &DeploymentId, revision: Option<u64>) {
        let Some(running) = self.running.get_mut(id) else {
            return;
        };
        if let Some(revision) = revision {
            running.revision = revision;
            running.failed = None;
        }
        let spec_version = running.updates.borrow().spec.version.clone();
        let (revision, version, error) = match &running.failed {
            Some((revision, version, error)) => (
                *revision,
                version.clone(),
                Some(format!(
                    "{error} (still running version {})",
                    spec_version.get(..12).unwrap_or(&spec_version)
                )),
            ),
            None => (running.revision, spec_version, None),
        };
        let (waiting, paused, failing) = (
            running.waiting.len(),
            running.paused.len(),
            running.failing.len(),
        );
        let running_now = running
            .workers
            .len()
            .saturating_sub(waiting + paused + failing);
        self.node.metrics.set_partitions(
            id,
            Some([
                (PartitionState::running, running_now),
                (PartitionState::waiting, waiting),
                (PartitionState::paused, paused),
                (PartitionState::failing, failing),
            ]),
        );
        let status = NodeStatus {
            node: self.node.id.clone(),
            revision,
            version,
            partitions: running.workers.keys().copied().collect(),
            waiting: running.waiting.clone(),
            paused: running.paused.iter().copied().collect(),
            pins: running.pins.clone(),
            failing: running.failing.clone(),
            state_refusals: (running.state_refusals.iter())
                .map(|(&quota, &count)| (quota.to_owned(), count))
                .collect(),
            error,
            refused: Some(false),
            updated_at: now_rfc3339(),
        };
        self.report(id, status).await;
    }

    /// Tells every worker of the deployment to stop; they hand off in the background, and
    /// this node's status for it is cleared once they are done (`weir undeploy` waits for
    /// that), unless the node has reported on it again meanwhile.
    async fn stop(&mut self, id: &DeploymentId) {
        let status = self.node.control.status.clone();
        let key = id.status_key(&self.node.id);
        let Some(running) = self.running.remove(id) else {
            if let Err(error) = status.delete(&key).await {
                tracing::warn!(deployment = %id, "failed to clear status: {error}");
            }
            return;
        };
        for stop in running.workers.values() {
            stop.cancel();
        }
        tracing::info!(tenant = id.tenant, handler = id.handler, "stopping");
        self.node.metrics.forget(id, running.most_partitions);
        running.tracker.close();
        let (tracker, reported, id) = (running.tracker, running.reported, id.clone());
        self.workers.spawn(async move {
            tracker.wait().await;
            if let Err(error) = status.delete_expect_revision(&key, reported).await {
                tracing::debug!(deployment = %id, "status not cleared: {error}");
            }
        });
    }

    async fn report_error(
        &mut self,
        id: &DeploymentId,
        revision: u64,
        version: &str,
        error: String,
    ) {
        tracing::error!(
            tenant = id.tenant,
            handler = id.handler,
            "cannot run deployment: {error}"
        );
        // A version that fails to load leaves the previous one, if any, running.
        if let Some(running) = self.running.get_mut(id) {
            running.failed = Some((revision, version.to_owned(), error));
            self.report_running(id, None).await;
            return;
        }
        // Running nothing of it: the other nodes place it without this one.
        let status = NodeStatus {
            node: self.node.id.clone(),
            revision,
            version: version.to_owned(),
            error: Some(error),
            refused: Some(true),
            updated_at: now_rfc3339(),
            ..NodeStatus::default()
        };
        self.report(id, status).await;
    }

    /// Writes this node's status for `id`, and remembers its revision for [`Registry::stop`].
    async fn report(&mut self, id: &DeploymentId, status: NodeStatus) {
        let put = match serde_json::to_vec(&status) {
            Ok(json) => {
                // Bounded by the client's timeout: waiting on a slow server is not a stall.
                let put = self
                    .node
                    .control
                    .status
                    .put(id.status_key(&self.node.id), json.into());
                (self.node.health.turning_while(Loop::Registry, put).await)
                    .map_err(anyhow::Error::from)
            }
            Err(error) => Err(error.into()),
        };
        match put {
            Ok(revision) => {
                if let Some(running) = self.running.get_mut(id) {
                    running.reported = Some(revision);
                }
            }
            Err(error) => tracing::warn!(deployment = %id, "failed to write status: {error:#}"),
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
