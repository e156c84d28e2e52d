//! A processing node: one NATS connection, one Wasm engine, and the registry that runs every
//! deployment in `weir_deployments` on the partitions this node owns.

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::host::Host;
use crate::metrics::SharedCounters;
use crate::registry::Registry;
use crate::resources::ControlPlane;

/// How long a stopping node tries to hand its last acknowledgements to NATS.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a node is told at start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name in status records and logs; unique among the nodes of a cluster.
    pub node_id: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
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
    pub(crate) js: jetstream::Context,
    pub(crate) host: Host,
    pub(crate) control: ControlPlane,
    pub(crate) counters: SharedCounters,
}

/// A running node. Dropping the handle leaves the node running; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    id: String,
    client: async_nats::Client,
    counters: SharedCounters,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Starts a node on `client`: creates the control-plane buckets if needed and begins following
/// `weir_deployments`.
pub async fn start(client: async_nats::Client, config: NodeConfig) -> anyhow::Result<NodeHandle> {
    let js = jetstream::new(client.clone());
    let host = Host::new()?;
    let control = ControlPlane::open(&js)
        .await
        .context("failed to open weir's control plane")?;
    let counters = SharedCounters::default();
    let context = NodeContext {
        id: config.node_id.clone(),
        js,
        host,
        control,
        counters: counters.clone(),
    };
    let shutdown = CancellationToken::new();
    let span = tracing::info_span!("node", node = config.node_id.as_str());
    let task = tokio::spawn(
        Registry::new(context)
            .run(shutdown.clone())
            .instrument(span),
    );
    tracing::info!(node = config.node_id, "node started");
    Ok(NodeHandle {
        id: config.node_id,
        client,
        counters,
        shutdown,
        task,
    })
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Message counts over every deployment this node runs.
    pub fn counters(&self) -> SharedCounters {
        self.counters.clone()
    }

    /// Stops every partition worker after the message in hand, then flushes what the node
    /// still has to send. A message whose answer never reached the server is redelivered.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let result = self.task.await.context("the node task panicked")?;
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
        (&mut self.task).await.context("the node task panicked")?
    }
}
