//! A processing node: one NATS connection, one Wasm engine, its membership in `weir_nodes`,
//! the registry that runs every deployment in `weir_deployments` on the partitions placement
//! gives this node, and a dead-letter mover.
//!
//! Stopping a node is a drain: it announces that it is draining (the other nodes place its
//! partitions elsewhere and wait on standby), hands every partition off, deregisters, and
//! flushes its connection.

mod registry;
pub(crate) mod supervision;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use self::registry::Registry;
use crate::control::ControlPlane;
use crate::dlq::Mover;
use crate::host::Host;
use crate::metrics::SharedCounters;
use crate::observe::{Health, Metrics};
use crate::ownership::membership::{self, MaxInstances, MemberState, Membership, MembershipConfig};
use crate::tenants::{Tenants, TenantsConfig};

/// How long a stopping node tries to hand its last acknowledgements to NATS.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node is told at start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name in status records and logs; unique among the nodes of a cluster.
    pub node_id: String,
    /// How this node keeps its place in `weir_nodes`.
    pub membership: MembershipConfig,
    /// How long the server keeps a partition pinned to a node that stopped pulling; set on
    /// every partition consumer this node creates.
    pub pin_timeout: Duration,
    /// Ignore placement and run every partition of every deployment. Only the pin then keeps
    /// delivery exclusive; this exists to test that fence, not for production.
    pub claim_all_partitions: bool,
    /// Run deployments of built-in native handlers ([`crate::builtin`]). Only `weir bench`
    /// does, to measure weir without Wasm.
    pub builtin_handlers: bool,
    /// Run a dead-letter mover ([`crate::dlq::Mover`]) beside the partitions. Every node does by
    /// default; any number may, since they share one consumer.
    pub dlq_mover: bool,
    /// Each tenant's quotas and identity (`weir node --config`).
    pub tenants: TenantsConfig,
    /// Where the connections of tenants with credentials of their own go: the URL(s) the node
    /// itself was given. Needed only when a tenant has credentials.
    pub nats_urls: Option<String>,
    /// Makes partition workers panic as they start, where it says so. This exists to test
    /// their supervision, not for production.
    pub worker_fault: Option<WorkerFault>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` ([`crate::observe`]); `None`:
    /// nowhere.
    pub http: Option<std::net::SocketAddr>,
    /// Where compiled components are kept ([`crate::host::CompileCache`]).
    pub compile_cache: crate::host::CompileCache,
}

/// Whether a worker of a deployment's partition panics as it starts: see
/// [`NodeConfig::worker_fault`].
#[derive(Clone)]
pub struct WorkerFault(pub Arc<FaultAt>);

/// See [`WorkerFault`]: whether the worker of this deployment's partition panics.
pub type FaultAt = dyn Fn(&crate::control::DeploymentId, u32) -> bool + Send + Sync;

impl std::fmt::Debug for WorkerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerFault")
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            membership: MembershipConfig::default(),
            pin_timeout: crate::worker::DEFAULT_PIN_TIMEOUT,
            claim_all_partitions: false,
            builtin_handlers: false,
            dlq_mover: true,
            tenants: TenantsConfig::default(),
            nats_urls: None,
            worker_fault: None,
            http: None,
            compile_cache: crate::host::CompileCache::Default,
        }
    }
}

/// `<hostname>-<pid>`: unique among processes on one machine and readable.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The process-wide things every deployment on a node shares.
#[derive(Debug, Clone)]
pub(crate) struct NodeContext {
    pub(crate) id: String,
    pub(crate) host: Host,
    pub(crate) control: ControlPlane,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) pin_timeout: Duration,
    pub(crate) claim_all_partitions: bool,
    /// What this node announces in its membership record.
    pub(crate) max_instances: MaxInstances,
    pub(crate) builtin_handlers: bool,
    /// Publishes the handlers' log lines for `weir logs`.
    pub(crate) logs: crate::logs::LogPublisher,
    /// The node's own connection.
    pub(crate) client: async_nats::Client,
    /// See [`NodeConfig::worker_fault`].
    pub(crate) worker_fault: Option<WorkerFault>,
    pub(crate) metrics: Metrics,
    pub(crate) health: Arc<Health>,
}

impl NodeContext {
    /// What the node's partition workers share.
    pub(crate) fn for_workers(&self) -> crate::worker::NodeShare {
        crate::worker::NodeShare {
            node_id: self.id.clone(),
            guests: self.host.guest_threads(),
            failures: self.control.failures.clone(),
            deployments: self.control.deployments.clone(),
            pin_timeout: self.pin_timeout,
            metrics: self.metrics.clone(),
            client: self.client.clone(),
        }
    }
}

/// A running node. Dropping the handle leaves the node running; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    id: String,
    client: async_nats::Client,
    counters: SharedCounters,
    state: watch::Sender<MemberState>,
    /// Stops the registry: every worker hands its partition off.
    drain: CancellationToken,
    registry: JoinHandle<anyhow::Result<()>>,
    /// Stops the membership tasks: the node deregisters.
    leave: CancellationToken,
    membership: JoinHandle<()>,
    /// The dead-letter mover, stopped with the registry.
    mover: Option<JoinHandle<()>>,
    tenants: Arc<Tenants>,
    health: Arc<Health>,
    /// Where the HTTP endpoints are served, if anywhere.
    http: Option<std::net::SocketAddr>,
}

/// Starts a node on `client`: creates the control-plane buckets if needed, registers in
/// `weir_nodes`, and begins following `weir_deployments` and the membership.
pub async fn start(client: async_nats::Client, config: NodeConfig) -> anyhow::Result<NodeHandle> {
    anyhow::ensure!(
        config.membership.ttl >= Duration::from_secs(1),
        "the membership TTL must be at least 1s, not {:?}",
        config.membership.ttl
    );
    let valid_id = !config.node_id.is_empty()
        && config
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    anyhow::ensure!(
        valid_id,
        "invalid node id {:?}: use letters, digits, '-', '_' and '.'",
        config.node_id
    );
    // Taken first: an address in use is said before anything is made.
    let listener = match config.http {
        Some(addr) => Some(crate::observe::http::bind(addr).await?),
        None => None,
    };
    let js = jetstream::new(client.clone());
    let host = Host::with_cache(&config.compile_cache)?;
    let control = ControlPlane::open(&js)
        .await
        .context("failed to open weir's control plane")?;
    let counters = SharedCounters::default();
    let metrics = Metrics::new(counters.clone());
    let health = Arc::new(Health::default());
    // A tenant's user may use its artifact bucket but not create it: the node does.
    for tenant in config.tenants.tenants.keys() {
        control
            .artifacts
            .bucket(tenant)
            .await
            .with_context(|| format!("failed to open the artifact bucket of tenant {tenant}"))?;
    }
    let max_instances = MaxInstances {
        default: config.tenants.defaults.max_instances,
        tenants: (config.tenants.tenants.iter())
            .map(|(tenant, policy)| (tenant.clone(), policy.quotas.max_instances))
            .collect(),
    };
    let tenants = Arc::new(
        Tenants::open(
            config.tenants,
            host.clone(),
            js.clone(),
            config.nats_urls.as_deref(),
        )
        .await?,
    );
    let span = tracing::info_span!("node", node = config.node_id.as_str());

    let membership = Membership::join(
        js.clone(),
        control.nodes.clone(),
        &config.node_id,
        max_instances.clone(),
        config.membership,
    )
    .await?;
    health.set_registered(true);
    let (state, state_rx) = watch::channel(MemberState::Active);
    let (view_tx, view) = watch::channel(None);
    let leave = CancellationToken::new();
    let membership = tokio::spawn(
        {
            let (nodes, leave, health) = (control.nodes.clone(), leave.clone(), health.clone());
            let (client, id) = (client.clone(), config.node_id.clone());
            async move {
                tokio::join!(
                    membership.keep(state_rx, health, leave.clone()),
                    membership::watch_members(nodes, view_tx, leave.clone()),
                    membership::answer_alive(client, id, leave),
                );
            }
        }
        .instrument(span.clone()),
    );

    let drain = CancellationToken::new();
    let mover = config.dlq_mover.then(|| {
        tokio::spawn(
            Mover::new(js.clone(), &control)
                .counting_in(metrics.clone())
                .run(drain.clone())
                .instrument(span.clone()),
        )
    });
    let context = NodeContext {
        id: config.node_id.clone(),
        host,
        control,
        tenants: tenants.clone(),
        pin_timeout: config.pin_timeout,
        claim_all_partitions: config.claim_all_partitions,
        max_instances,
        builtin_handlers: config.builtin_handlers,
        logs: crate::logs::LogPublisher::start(client.clone(), &config.node_id),
        client: client.clone(),
        worker_fault: config.worker_fault.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let http = listener.and_then(|listener| {
        let addr = listener.local_addr().ok();
        let sources = crate::observe::http::Sources {
            metrics,
            health: health.clone(),
            client: client.clone(),
            tenants: tenants.clone(),
        };
        let served = crate::observe::http::serve(listener, sources, leave.clone());
        tokio::spawn(served.instrument(span.clone()));
        addr
    });
    let registry = tokio::spawn(
        Registry::new(context, view)
            .run(drain.clone())
            .instrument(span),
    );
    tracing::info!(node = config.node_id, "node started");
    Ok(NodeHandle {
        id: config.node_id,
        client,
        counters,
        state,
        drain,
        registry,
        leave,
        membership,
        mover,
        tenants,
        health,
        http,
    })
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the node serves `/metrics`, `/healthz` and `/readyz`, if anywhere.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http
    }

    /// Message counts over every deployment this node runs.
    pub fn counters(&self) -> SharedCounters {
        self.counters.clone()
    }

    /// Drains the node: announces it, hands every partition off (each worker finishes and
    /// settles the message in hand and releases its pin), deregisters, and flushes what the
    /// node still has to send. A message whose answer never reached the server is redelivered.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!(node = self.id, "draining");
        self.health.set_draining();
        self.state.send_replace(MemberState::Draining);
        self.drain.cancel();
        let result = self.registry.await.context("the node task panicked")?;
        if let Some(mover) = self.mover
            && let Err(error) = mover.await
        {
            tracing::warn!(node = self.id, "dead-letter mover failed: {error}");
        }
        self.tenants.flush().await;
        self.leave.cancel();
        if let Err(error) = self.membership.await {
            tracing::warn!(node = self.id, "membership task failed: {error}");
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(flushed) => flushed.context("failed to flush the NATS connection")?,
            Err(_) => tracing::warn!(
                node = self.id,
                "could not flush to NATS within {FLUSH_TIMEOUT:?}"
            ),
        }
        tracing::info!(node = self.id, "node stopped");
        result
    }

    /// Waits until the node stops by itself, which it does only on a fatal error.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.registry)
            .await
            .context("the node task panicked")?
    }
}
