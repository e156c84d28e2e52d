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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::builtin::Builtin;
use crate::deployment::{Deployment, HandlerCode, SharedDeployment};
use crate::membership::MemberView;
use crate::node::NodeContext;
use crate::resources::DeploymentId;
use crate::spec::{self, DeploymentSpec, NodeStatus, now_rfc3339};
use crate::supervision::{self, Failing};
use crate::tenants::Tenant;
use crate::worker::{PartitionWorker, Waiting};
use crate::{partition, placement};

/// Pause before watching `weir_deployments` again after the watch broke.
const REWATCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

struct Running {
    updates: watch::Sender<SharedDeployment>,
    /// The stop signal of each partition worker this node runs.
    workers: BTreeMap<u32, CancellationToken>,
    /// The partitions whose workers wait for capacity, and why.
    waiting: BTreeMap<u32, String>,
    /// The partitions whose workers failed and are being started again, and why.
    failing: BTreeMap<u32, String>,
}

pub(crate) struct Registry {
    node: NodeContext,
    running: HashMap<DeploymentId, Running>,
    members: watch::Receiver<Option<MemberView>>,
    /// The active members placement was last computed from.
    placed_with: Option<Vec<String>>,
    /// Every worker task, including those still handing off after being told to stop.
    workers: TaskTracker,
    /// Where workers say they begin or end a wait for capacity.
    waits: (
        mpsc::UnboundedSender<Waiting>,
        mpsc::UnboundedReceiver<Waiting>,
    ),
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
            waits: mpsc::unbounded_channel(),
            failures: mpsc::unbounded_channel(),
        }
    }

    /// Follows `weir_deployments` and the membership until `shutdown`, then stops every
    /// worker and waits while each hands its partition off. A watch that breaks (say, across a
    /// server restart) is opened again; replayed entries that match what runs change nothing.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        'watching: while !shutdown.is_cancelled() {
            match self.node.control.deployments.watch_with_history(">").await {
                Ok(mut entries) => loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        changed = self.members.changed() => {
                            if changed.is_err() {
                                tracing::error!("the membership view closed; stopping every partition");
                                break 'watching;
                            }
                            self.place_all().await;
                        }
                        Some(waiting) = self.waits.1.recv() => self.waiting(waiting).await,
                        Some(failing) = self.failures.1.recv() => self.failing(failing).await,
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => self.apply(entry).await,
                            Some(Err(error)) => tracing::warn!("deployment watch: {error}"),
                            None => {
                                tracing::warn!("the watch on weir_deployments ended; watching again");
                                break;
                            }
                        },
                    }
                },
                Err(error) => tracing::error!("failed to watch weir_deployments: {error}"),
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
        match entry.operation {
            Operation::Delete | Operation::Purge => self.stop(&id).await,
            Operation::Put => {
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
                if self
                    .running
                    .get(&id)
                    .is_some_and(|r| r.updates.borrow().spec == spec)
                {
                    // The same spec written again: nothing to change but the revision it runs as.
                    self.report_running(&id, Some(entry.revision)).await;
                    return;
                }
                match self.load(&id, spec.clone(), tenant).await {
                    Ok(deployment) => {
                        self.start_or_swap(Arc::new(deployment), entry.revision)
                            .await
                    }
                    Err(error) => {
                        self.report_error(&id, entry.revision, &spec.version, format!("{error:#}"))
                            .await
                    }
                }
            }
        }
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
        let version = tokio::task::spawn_blocking(move || host.compile(&bytes))
            .await
            .context("the compile task panicked")?
            .with_context(|| format!("failed to load artifact {}", spec.artifact))?;
        anyhow::ensure!(
            version.digest() == spec.version,
            "artifact {} has digest {}, not the deployed version {}",
            spec.artifact,
            version.digest(),
            spec.version
        );
        Ok(Deployment::new(
            id.clone(),
            spec,
            HandlerCode::Wasm(version),
            tenant,
        ))
    }

    async fn start_or_swap(&mut self, deployment: SharedDeployment, revision: u64) {
        let id = deployment.id.clone();
        match self.running.get(&id) {
            Some(running) => {
                let before = running.updates.send_replace(deployment.clone());
                // Each worker moves to the new stream itself; another partition count is
                // another set of partitions.
                if before.spec.partitions != deployment.spec.partitions {
                    self.place(&id);
                }
            }
            None => {
                let (updates, _) = watch::channel(deployment.clone());
                self.running.insert(
                    id.clone(),
                    Running {
                        updates,
                        workers: BTreeMap::new(),
                        waiting: BTreeMap::new(),
                        failing: BTreeMap::new(),
                    },
                );
                self.place(&id);
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

    /// Places every deployment again after the membership changed.
    async fn place_all(&mut self) {
        let Some(active) = self.active_members() else {
            return;
        };
        if self.placed_with.as_ref() == Some(&active) {
            return;
        }
        tracing::info!(members = ?active, "membership changed");
        self.placed_with = Some(active);
        let ids: Vec<DeploymentId> = self.running.keys().cloned().collect();
        for id in ids {
            if self.place(&id) {
                self.report_running(&id, None).await;
            }
        }
    }

    /// Starts and stops workers of one deployment so that this node runs exactly the
    /// partitions placement gives it. Returns whether anything changed.
    fn place(&mut self, id: &DeploymentId) -> bool {
        let Some(active) = self.active_members() else {
            return false;
        };
        let me = self.node.id.clone();
        let Some(running) = self.running.get_mut(id) else {
            return false;
        };
        let deployment = running.updates.borrow().clone();
        let partitions = deployment.spec.partitions;
        let owned = if self.node.claim_all_partitions && active.contains(&me) {
            (0..partitions).collect()
        } else {
            placement::owned_partitions(id, partitions, &active, &me)
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
        for partition in owned {
            if running.workers.contains_key(&partition) {
                continue;
            }
            let stop = CancellationToken::new();
            let (updates, node, waits) = (
                running.updates.subscribe(),
                self.node.clone(),
                self.waits.0.clone(),
            );
            let worker_stop = stop.clone();
            let start = move || {
                let worker = PartitionWorker::new(
                    partition,
                    updates.clone(),
                    &node,
                    waits.clone(),
                    worker_stop.clone(),
                );
                worker.run()
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
            self.workers.spawn(supervised.instrument(span));
            running.workers.insert(partition, stop);
            changed = true;
        }
        changed
    }

    /// Records a partition's wait for capacity, begun or over, in `weir_status`.
    async fn waiting(
        &mut self,
        Waiting {
            id,
            partition,
            reason,
        }: Waiting,
    ) {
        let Some(running) = self.running_partition(&id, partition) else {
            return;
        };
        match reason {
            Some(reason) => running.waiting.insert(partition, reason),
            None => running.waiting.remove(&partition),
        };
        self.report_running(&id, None).await;
    }

    /// The running deployment `id`, if this node still runs its `partition`: a report from a
    /// worker told to stop is stale.
    fn running_partition(&mut self, id: &DeploymentId, partition: u32) -> Option<&mut Running> {
        self.running
            .get_mut(id)
            .filter(|running| running.workers.contains_key(&partition))
    }

    /// Records a partition's worker failure, or its recovery, in `weir_status`.
    async fn failing(
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
                // What the failed worker waited for, it no longer does.
                running.waiting.remove(&partition);
                running.failing.insert(partition, error)
            }
            None => running.failing.remove(&partition),
        };
        self.report_running(&id, None).await;
    }

    /// Records in `weir_status` what this node runs of the deployment; `revision` is the
    /// `weir_deployments` revision it runs, `None` to keep the one last reported.
    async fn report_running(&mut self, id: &DeploymentId, revision: Option<u64>) {
        let Some(running) = self.running.get(id) else {
            return;
        };
        let revision = match revision {
            Some(revision) => revision,
            None => self
                .node
                .control
                .deployments
                .entry(id.key())
                .await
                .ok()
                .flatten()
                .map_or(0, |entry| entry.revision),
        };
        let version = running.updates.borrow().spec.version.clone();
        let status = NodeStatus {
            node: self.node.id.clone(),
            revision,
            version,
            partitions: running.workers.keys().copied().collect(),
            waiting: running.waiting.clone(),
            failing: running.failing.clone(),
            error: None,
            updated_at: now_rfc3339(),
        };
        self.report(id, status).await;
    }

    /// Tells every worker of the deployment to stop; they hand off in the background.
    async fn stop(&mut self, id: &DeploymentId) {
        if let Some(running) = self.running.remove(id) {
            for stop in running.workers.values() {
                stop.cancel();
            }
            tracing::info!(tenant = id.tenant, handler = id.handler, "stopping");
        }
        if let Err(error) = self
            .node
            .control
            .status
            .delete(id.status_key(&self.node.id))
            .await
        {
            tracing::warn!(deployment = %id, "failed to clear status: {error}");
        }
    }

    async fn report_error(&self, id: &DeploymentId, revision: u64, version: &str, error: String) {
        tracing::error!(
            tenant = id.tenant,
            handler = id.handler,
            "cannot run deployment: {error}"
        );
        // A version that fails to load leaves the previous one, if any, running.
        let (partitions, error) = match self.running.get(id) {
            Some(running) => (
                running.workers.keys().copied().collect(),
                format!(
                    "{error} (still running version {})",
                    running.updates.borrow().spec.short_version()
                ),
            ),
            None => (Vec::new(), error),
        };
        let status = NodeStatus {
            node: self.node.id.clone(),
            revision,
            version: version.to_owned(),
            partitions,
            waiting: BTreeMap::new(),
            failing: BTreeMap::new(),
            error: Some(error),
            updated_at: now_rfc3339(),
        };
        self.report(id, status).await;
    }

    async fn report(&self, id: &DeploymentId, status: NodeStatus) {
        let put = match serde_json::to_vec(&status) {
            Ok(json) => self
                .node
                .control
                .status
                .put(id.status_key(&self.node.id), json.into())
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = put {
            tracing::warn!(deployment = %id, "failed to write status: {error:#}");
        }
    }
}
