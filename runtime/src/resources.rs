//! The names weir gives things in NATS, and the control-plane buckets every node and command
//! shares. See the control-plane table in DESIGN.md.

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store};

/// Object store of uploaded components, keyed `<tenant>/<handler>/<sha256>`.
pub const ARTIFACTS_BUCKET: &str = "weir_artifacts";
/// KV of deployment specs, keyed `<tenant>.<handler>`.
pub const DEPLOYMENTS_BUCKET: &str = "weir_deployments";
/// KV of what each node made of each deployment, keyed `<tenant>.<handler>.<node-id>`.
pub const STATUS_BUCKET: &str = "weir_status";
/// KV of live nodes, keyed `<node-id>`, each record under a per-key TTL.
pub const NODES_BUCKET: &str = "weir_nodes";
/// The priority group every partition consumer belongs to.
pub const PRIORITY_GROUP: &str = "weir";

/// How many past specs the deployments bucket keeps per handler.
const DEPLOYMENT_HISTORY: i64 = 16;

/// A handler's identity: `<tenant>.<handler>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId {
    /// The tenant; see [`DeploymentId::new`] for what a name may be.
    pub tenant: String,
    /// The handler's name within its tenant.
    pub handler: String,
}

impl DeploymentId {
    /// Validates both names: 1–32 characters of `a-z`, `0-9` and `-`, starting with a letter or
    /// digit, so that they fit unambiguously in subjects, KV keys and consumer names.
    pub fn new(tenant: &str, handler: &str) -> anyhow::Result<Self> {
        validate_name("tenant", tenant)?;
        validate_name("handler", handler)?;
        Ok(Self {
            tenant: tenant.to_owned(),
            handler: handler.to_owned(),
        })
    }

    /// Parses a `weir_deployments` key.
    pub fn from_key(key: &str) -> anyhow::Result<Self> {
        let (tenant, handler) = key
            .split_once('.')
            .with_context(|| format!("deployment key {key:?} is not <tenant>.<handler>"))?;
        Self::new(tenant, handler)
    }

    /// The key in `weir_deployments`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.tenant, self.handler)
    }

    /// The durable consumer for one partition: `weir_<tenant>_<handler>_p<NNN>`.
    pub fn consumer_name(&self, partition: u32) -> String {
        format!("weir_{}_{}_p{partition:03}", self.tenant, self.handler)
    }

    /// The deployment and partition of a consumer named by [`DeploymentId::consumer_name`];
    /// `None` for any other name.
    pub fn from_consumer_name(name: &str) -> Option<(Self, u32)> {
        let (names, partition) = name.strip_prefix("weir_")?.rsplit_once("_p")?;
        let (tenant, handler) = names.split_once('_')?;
        let partition = partition.parse().ok()?;
        Some((Self::new(tenant, handler).ok()?, partition))
    }

    /// The object name of a component in `weir_artifacts`.
    pub fn artifact_name(&self, digest: &str) -> String {
        format!("{}/{}/{digest}", self.tenant, self.handler)
    }

    /// The key of a node's status for this deployment in `weir_status`.
    pub fn status_key(&self, node: &str) -> String {
        format!("{}.{}.{node}", self.tenant, self.handler)
    }

    /// The `Nats-Msg-Id` of output `n` of the message at `stream_seq`: the same on every
    /// redelivery, so the output stream drops what was already stored.
    pub fn output_msg_id(&self, stream: &str, stream_seq: u64, n: usize) -> String {
        format!(
            "weir:{}:{}:{stream}:{stream_seq}:{n}",
            self.tenant, self.handler
        )
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.handler)
    }
}

/// Checks a tenant or handler name (`what` says which) against the rule of
/// [`DeploymentId::new`].
pub fn validate_name(what: &str, name: &str) -> anyhow::Result<()> {
    let valid = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    anyhow::ensure!(
        valid,
        "invalid {what} name {name:?}: use 1 to 32 characters of a-z, 0-9 and '-', \
         not starting with '-'"
    );
    Ok(())
}

/// The control-plane buckets, created on first use by whichever node or command comes first.
#[derive(Clone)]
pub struct ControlPlane {
    /// See [`ARTIFACTS_BUCKET`].
    pub artifacts: object_store::ObjectStore,
    /// See [`DEPLOYMENTS_BUCKET`].
    pub deployments: kv::Store,
    /// See [`STATUS_BUCKET`].
    pub status: kv::Store,
    /// See [`NODES_BUCKET`].
    pub nodes: kv::Store,
    /// See [`crate::failures::FAILURES_BUCKET`].
    pub failures: kv::Store,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens the buckets, creating any that do not exist yet, and the dead-letter streams
    /// ([`crate::dlq`]), all replicated three times on a NATS cluster of three or more servers.
    pub async fn open(js: &jetstream::Context) -> anyhow::Result<Self> {
        let replicas = control_plane_replicas(&js.client().server_info());
        let artifacts = match js.get_object_store(ARTIFACTS_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: ARTIFACTS_BUCKET.to_owned(),
                    description: Some("weir: uploaded handler components".to_owned()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("failed to create object store {ARTIFACTS_BUCKET}"))?,
        };
        let kv = |bucket: &str, description: &str, history| kv::Config {
            bucket: bucket.to_owned(),
            description: description.to_owned(),
            history,
            num_replicas: replicas,
            ..Default::default()
        };
        let deployments = open_kv(
            js,
            kv(
                DEPLOYMENTS_BUCKET,
                "weir: deployment specs",
                DEPLOYMENT_HISTORY,
            ),
        )
        .await?;
        let status = open_kv(
            js,
            kv(
                STATUS_BUCKET,
                "weir: what each node made of each deployment",
                1,
            ),
        )
        .await?;
        let nodes = open_kv(
            js,
            kv::Config {
                // Per-key TTLs, and a delete marker when one runs out so watchers see it.
                limit_markers: Some(NODE_MARKER_TTL),
                ..kv(NODES_BUCKET, "weir: live nodes", 1)
            },
        )
        .await?;
        let failures = open_kv(js, crate::failures::bucket_config(replicas)).await?;
        crate::dlq::ensure_streams(js, replicas).await?;
        Ok(Self {
            artifacts,
            deployments,
            status,
            nodes,
            failures,
        })
    }
}

/// How long the marker left by an expired node record stays readable.
const NODE_MARKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Three replicas when the server is part of a cluster of at least three, else one.
fn control_plane_replicas(server: &async_nats::ServerInfo) -> usize {
    // `connect_urls` lists the client URLs of every server in the cluster.
    if server.cluster.is_some() && server.connect_urls.len() >= 3 {
        3
    } else {
        1
    }
}

async fn open_kv(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    js.create_key_value(config)
        .await
        .with_context(|| format!("failed to create KV bucket {bucket}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        assert_eq!(id.key(), "acme.orders");
        assert_eq!(id.consumer_name(3), "weir_acme_orders_p003");
        assert_eq!(id.artifact_name("ab12"), "acme/orders/ab12");
        assert_eq!(
            id.output_msg_id("ORDERS", 42, 1),
            "weir:acme:orders:ORDERS:42:1"
        );
        assert_eq!(DeploymentId::from_key("acme.orders")?, id);
        assert_eq!(
            DeploymentId::from_consumer_name("weir_acme_orders_p003"),
            Some((id.clone(), 3))
        );
        for other in [
            "weir_dlq_mover",
            "orders_p003",
            "weir_acme_orders_pX",
            "weir_a_b_c_p1",
        ] {
            assert_eq!(DeploymentId::from_consumer_name(other), None, "{other}");
        }
        Ok(())
    }

    #[test]
    fn names_that_would_be_ambiguous_are_refused() {
        for bad in ["", "Acme", "a_b", "a.b", "-a", "a b", &"x".repeat(33)] {
            assert!(DeploymentId::new(bad, "h").is_err(), "{bad:?} accepted");
        }
    }
}
