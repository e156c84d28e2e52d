//! Keeps a node's running deployments in step with `weir_deployments`.
//!
//! The registry task owns the map of running deployments. For each one it loads the component
//! (object store → digest check → compile and link once), then starts a partition worker for
//! every partition this node owns and hands new versions to them through a watch channel, so a
//! redeploy is taken at the next message boundary of each partition.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::deployment::{Deployment, DeploymentSpec, NodeStatus, SharedDeployment, now_rfc3339};
use crate::node::NodeContext;
use crate::ownership;
use crate::resources::DeploymentId;
use crate::worker::PartitionWorker;

/// Pause before watching `weir_deployments` again after the watch broke.
const REWATCH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

struct Running {
    updates: watch::Sender<SharedDeployment>,
    partitions: Vec<u32>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

pub(crate) struct Registry {
    node: NodeContext,
    running: HashMap<DeploymentId, Running>,
}

impl Registry {
    pub(crate) fn new(node: NodeContext) -> Self {
        Self {
            node,
            running: HashMap::new(),
        }
    }

    /// Follows `weir_deployments` until `shutdown`, then stops every deployment, letting each
    /// worker finish the message in hand. A watch that breaks (say, across a server restart) is
    /// opened again; replayed entries that match what runs change nothing.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            match self.node.control.deployments.watch_with_history(">").await {
                Ok(mut entries) => loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
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
                let spec: DeploymentSpec = match serde_json::from_slice(&entry.value) {
                    Ok(spec) => spec,
                    Err(error) => {
                        let message = format!("unreadable deployment spec: {error}");
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
                    self.report_running(&id, entry.revision).await;
                    return;
                }
                match self.load(&id, spec.clone()).await {
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

    async fn load(&self, id: &DeploymentId, spec: DeploymentSpec) -> anyhow::Result<Deployment> {
        anyhow::ensure!(
            spec.id()? == *id,
            "the spec stored under {} is for {}/{}",
            id.key(),
            spec.tenant,
            spec.handler
        );
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
        Ok(Deployment::new(id.clone(), spec, version))
    }

    async fn start_or_swap(&mut self, deployment: SharedDeployment, revision: u64) {
        let id = deployment.id.clone();
        let partitions = match self.running.get(&id) {
            Some(running) => {
                running.updates.send_replace(deployment.clone());
                running.partitions.clone()
            }
            None => {
                let node = &self.node;
                let members = [node.id.clone()];
                let partitions = ownership::owned_partitions(
                    &id,
                    deployment.spec.partitions,
                    &members,
                    &node.id,
                );
                let (updates, _) = watch::channel(deployment.clone());
                let shutdown = CancellationToken::new();
                let workers = TaskTracker::new();
                for &partition in &partitions {
                    let worker = PartitionWorker::new(
                        partition,
                        updates.subscribe(),
                        node.js.clone(),
                        node.counters.clone(),
                        shutdown.clone(),
                    );
                    let span = tracing::info_span!(
                        "partition",
                        tenant = id.tenant.as_str(),
                        handler = id.handler.as_str(),
                        partition
                    );
                    workers.spawn(worker.run().instrument(span));
                }
                workers.close();
                let task = tokio::spawn(async move { workers.wait().await });
                self.running.insert(
                    id.clone(),
                    Running {
                        updates,
                        partitions: partitions.clone(),
                        shutdown,
                        task,
                    },
                );
                partitions
            }
        };
        tracing::info!(
            tenant = id.tenant,
            handler = id.handler,
            version = deployment.spec.short_version(),
            "running {} partition(s) of stream {}",
            partitions.len(),
            deployment.spec.stream
        );
        self.report_running(&id, revision).await;
    }

    /// Records in `weir_status` that this node runs `revision` of the deployment.
    async fn report_running(&self, id: &DeploymentId, revision: u64) {
        let Some(running) = self.running.get(id) else {
            return;
        };
        let version = running.updates.borrow().spec.version.clone();
        let status = NodeStatus {
            node: self.node.id.clone(),
            revision,
            version,
            partitions: running.partitions.clone(),
            error: None,
            updated_at: now_rfc3339(),
        };
        self.report(id, status).await;
    }

    async fn stop(&mut self, id: &DeploymentId) {
        if let Some(running) = self.running.remove(id) {
            running.shutdown.cancel();
            if let Err(error) = running.task.await {
                tracing::error!(deployment = %id, "worker task failed: {error}");
            }
            tracing::info!(tenant = id.tenant, handler = id.handler, "stopped");
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
                running.partitions.clone(),
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
