//! The names weir gives things in NATS, every one of them: buckets, streams, consumers,
//! subjects and message ids; and the control-plane buckets every node and command shares. See
//! the control-plane table in DESIGN.md.

mod streams;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store};

pub use streams::{
    ADVISORY_AGE, ADVISORY_SUBJECTS, FAILURE_RECORD_AGE, LOGS_MAX_AGE, LOGS_MAX_BYTES,
};

/// The uploaded components: one object store per tenant, `weir_artifacts_<tenant>` (see
/// [`artifacts_bucket`]), keyed `<tenant>/<handler>/<sha256>`. Before weir had tenant
/// permissions every tenant's components were in this one bucket, which is still read.
pub const ARTIFACTS_BUCKET: &str = "weir_artifacts";
/// KV of deployment specs, keyed `<tenant>.<handler>`.
pub const DEPLOYMENTS_BUCKET: &str = "weir_deployments";
/// KV of what each node made of each deployment, keyed `<tenant>.<handler>.<node-id>`.
pub const STATUS_BUCKET: &str = "weir_status";
/// KV of live nodes, keyed `<node-id>`, each record under a per-key TTL.
pub const NODES_BUCKET: &str = "weir_nodes";
/// The priority group every partition consumer belongs to.
pub const PRIORITY_GROUP: &str = "weir";
/// KV of failure records, keyed `<tenant>.<handler>.<stream>.<seq>`.
pub const FAILURES_BUCKET: &str = "weir_failures";
/// The stream that captures dead-letter advisories until the mover has handled them.
pub const ADVISORIES_STREAM: &str = "WEIR_ADVISORIES";
/// The durable consumer of [`ADVISORIES_STREAM`] every node's dead-letter mover pulls from.
pub const MOVER_CONSUMER: &str = "weir_dlq_mover";
/// The stream of dead letters, on `weir.dlq.<tenant>.<handler>.<stream>.<seq>`
/// ([`dead_letter_subject`]).
pub const DLQ_STREAM: &str = "WEIR_DLQ";
/// The stream that keeps recent handler log lines, on [`log_subject`]s.
pub const LOGS_STREAM: &str = "WEIR_LOGS";

/// The subject of `id`'s log lines from `partition`, or of every partition's with `None`.
pub fn log_subject(id: &DeploymentId, partition: Option<u32>) -> String {
    match partition {
        Some(partition) => format!("weir.logs.{}.{}.{partition}", id.tenant, id.handler),
        None => format!("weir.logs.{}.{}.>", id.tenant, id.handler),
    }
}

/// The subject of the dead letter of `stream_seq`: `weir.dlq.<tenant>.<handler>.<stream>.<seq>`.
pub fn dead_letter_subject(id: &DeploymentId, stream: &str, stream_seq: u64) -> String {
    format!(
        "weir.dlq.{}.{}.{stream}.{stream_seq}",
        id.tenant, id.handler
    )
}

/// The subjects of the dead letters of one tenant, one handler, or all.
pub fn dead_letters_subject(tenant: Option<&str>, handler: Option<&str>) -> String {
    format!(
        "weir.dlq.{}.{}.>",
        tenant.unwrap_or("*"),
        handler.unwrap_or("*")
    )
}

/// The `Nats-Msg-Id` of a dead letter.
pub fn dead_letter_msg_id(id: &DeploymentId, stream: &str, stream_seq: u64) -> String {
    format!("dlq:{}.{}:{stream}:{stream_seq}", id.tenant, id.handler)
}

/// The subject on which a node answers that its connection is up.
pub fn alive_subject(node: &str) -> String {
    format!("weir.node.{node}.alive")
}

/// How many past records the deployments bucket keeps per handler (the most NATS allows):
/// the versions `weir rollback` can go back to, and the pauses between them.
const DEPLOYMENT_HISTORY: i64 = 64;

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
    /// redelivery, so the output stream drops what was already stored. A handler that keeps
    /// state computes its outputs from its partition's state, so their ids also name the
    /// revision of the state they were computed from (the marker's, which the message's commit
    /// expects): computed again from the same state after a crash, they are the same ids;
    /// computed again after the state was changed underneath (a repair), they are new outputs.
    pub fn output_msg_id(
        &self,
        stream: &str,
        stream_seq: u64,
        n: usize,
        state_revision: Option<u64>,
    ) -> String {
        let id = format!(
            "weir:{}:{}:{stream}:{stream_seq}:{n}",
            self.tenant, self.handler
        );
        match state_revision {
            Some(revision) => format!("{id}:{revision}"),
            None => id,
        }
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.handler)
    }
}

/// The object store of `tenant`'s components. A bucket of its own, rather than a shared one,
/// because an object's subjects (`$O.<bucket>.C.<nuid>` for its chunks, `$O.<bucket>.M.<base64
/// name>` for its metadata) do not name the tenant: only the bucket can fence them by subject.
pub fn artifacts_bucket(tenant: &str) -> String {
    format!("{ARTIFACTS_BUCKET}_{tenant}")
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

/// The control-plane buckets, created on first use by whichever node or command comes first
/// (and may create them: a tenant's user binds to them but cannot create them).
#[derive(Clone)]
pub struct ControlPlane {
    /// See [`ARTIFACTS_BUCKET`].
    pub artifacts: Artifacts,
    /// See [`DEPLOYMENTS_BUCKET`].
    pub deployments: kv::Store,
    /// See [`STATUS_BUCKET`].
    pub status: kv::Store,
    /// See [`NODES_BUCKET`].
    pub nodes: kv::Store,
    /// See [`FAILURES_BUCKET`].
    pub failures: kv::Store,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens the buckets and the streams ([`streams`]), creating any that do not exist yet,
    /// all replicated three times on a NATS cluster of three or more servers. The tenants'
    /// artifact buckets are opened when needed ([`Artifacts`]).
    pub async fn open(js: &jetstream::Context) -> anyhow::Result<Self> {
        let replicas = control_plane_replicas(&js.client().server_info());
        let artifacts = Artifacts {
            js: js.clone(),
            replicas,
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
        let failures = open_kv(js, streams::failures_bucket(replicas)).await?;
        streams::ensure_all(js, replicas).await?;
        Ok(Self {
            artifacts,
            deployments,
            status,
            nodes,
            failures,
        })
    }
}

impl ControlPlane {
    /// The control plane as it is, creating nothing, for the commands that only read it;
    /// `None` when no node or command has made it yet. The tenants' artifact buckets are
    /// opened when needed, as with [`ControlPlane::open`].
    pub async fn existing(js: &jetstream::Context) -> anyhow::Result<Option<Self>> {
        let mut stores = Vec::new();
        for bucket in [
            DEPLOYMENTS_BUCKET,
            STATUS_BUCKET,
            NODES_BUCKET,
            FAILURES_BUCKET,
        ] {
            match js.get_key_value(bucket).await {
                Ok(store) => stores.push(store),
                Err(_) if stream_missing(js, &format!("KV_{bucket}")).await => return Ok(None),
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("failed to open KV bucket {bucket}"));
                }
            }
        }
        let [deployments, status, nodes, failures] = <[kv::Store; 4]>::try_from(stores)
            .map_err(|_| anyhow::anyhow!("weir has four control-plane buckets"))?;
        let artifacts = Artifacts {
            js: js.clone(),
            replicas: control_plane_replicas(&js.client().server_info()),
        };
        Ok(Some(Self {
            artifacts,
            deployments,
            status,
            nodes,
            failures,
        }))
    }
}

/// An ordered consumer of `stream` on `filter`, for a command that reads: named, because a
/// tenant's permissions can allow only a consumer whose name and filter are in the request's
/// subject. The server removes it by itself once the command is gone.
pub async fn reading_consumer(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    filter: String,
    deliver_policy: jetstream::consumer::DeliverPolicy,
) -> Result<
    jetstream::consumer::Consumer<jetstream::consumer::push::OrderedConfig>,
    jetstream::stream::ConsumerError,
> {
    let config = jetstream::consumer::push::OrderedConfig {
        filter_subject: filter,
        deliver_policy,
        ..Default::default()
    };
    reading_consumer_of(js, stream, config).await
}

/// [`reading_consumer`] with the rest of `config` as given (only its name and deliver subject
/// are weir's).
pub async fn reading_consumer_of<I>(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream<I>,
    config: jetstream::consumer::push::OrderedConfig,
) -> Result<
    jetstream::consumer::Consumer<jetstream::consumer::push::OrderedConfig>,
    jetstream::stream::ConsumerError,
> {
    let inbox = js.client().new_inbox();
    let unique = inbox.rsplit('.').next().unwrap_or_default();
    stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            name: Some(format!("weir_read_{unique}")),
            deliver_subject: inbox.clone(),
            ..config
        })
        .await
}

/// Whether the server says there is no stream `name` (rather than, say, not answering).
pub(crate) async fn stream_missing(js: &jetstream::Context, name: &str) -> bool {
    matches!(existing_stream(js, name).await, Ok(None))
}

/// The stream `name`, or `None` where the server says there is none.
pub(crate) async fn existing_stream(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<Option<jetstream::stream::Stream>> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(error)
            if matches!(
                error.kind(),
                GetStreamErrorKind::JetStream(error)
                    if error.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error).with_context(|| format!("failed to open stream {name}")),
    }
}

/// The subjects `stream` holds messages on that match `filter`, read from stream info: no
/// consumer, and nothing of what the messages hold.
pub async fn stream_subjects(
    stream: &jetstream::stream::Stream,
    filter: String,
) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt as _;
    let failed = || {
        format!(
            "failed to list the subjects {filter} of stream {}",
            stream.cached_info().config.name
        )
    };
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(filter.clone())
        .await
        .with_context(failed)?
        .try_collect()
        .await
        .with_context(failed)?;
    Ok(subjects.into_iter().map(|(subject, _)| subject).collect())
}

/// How long the marker left by an expired node record stays readable.
const NODE_MARKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Three replicas when the server is part of a cluster of at least three, else one.
pub(crate) fn control_plane_replicas(server: &async_nats::ServerInfo) -> usize {
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
    let error = match js.create_key_value(config).await {
        Ok(store) => return Ok(store),
        Err(error) => error,
    };
    // Made meanwhile by another node, or there all along and the first look went unanswered
    // (a busy cluster): creating it again is then refused as a different configuration, and
    // the next look may go unanswered too, so look a few times.
    for attempt in 1..=LOOKS_AFTER_CREATE {
        if let Ok(store) = js.get_key_value(&bucket).await {
            return Ok(store);
        }
        if attempt < LOOKS_AFTER_CREATE {
            tokio::time::sleep(LOOK_AGAIN_AFTER).await;
        }
    }
    Err(error).with_context(|| format!("failed to create KV bucket {bucket}{MADE_BY_OPERATORS}"))
}

/// How many times [`open_kv`] looks for a bucket it could not create, and how long it waits
/// between looks.
const LOOKS_AFTER_CREATE: u32 = 5;
const LOOK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Said when weir fails to create one of its buckets, which a tenant's user may not do.
pub(crate) const MADE_BY_OPERATORS: &str = " (if this user may not create it, an operator must \
     start a node, or run a weir command as a user with every right, first)";

/// The keys of `store` under `<prefix>.`, or all its keys, sorted, including keys whose last
/// entry is a deletion (reading them says so).
///
/// Read from the stream's subject counts (stream info), not with a consumer like
/// [`kv::Store::keys`]: a tenant's user may read a shared bucket's stream info, but may create
/// consumers, and read values, only under its own prefix. Which keys exist is therefore no
/// secret between tenants; what they hold is.
pub async fn keys(store: &kv::Store, prefix: Option<&str>) -> anyhow::Result<Vec<String>> {
    let filter = match prefix {
        Some(prefix) => format!("{}{prefix}.>", store.prefix),
        None => format!("{}>", store.prefix),
    };
    let subjects = stream_subjects(&store.stream, filter)
        .await
        .with_context(|| format!("failed to list the keys of {}", store.name))?;
    let mut keys: Vec<String> = subjects
        .into_iter()
        .filter_map(|subject| subject.strip_prefix(&store.prefix).map(str::to_owned))
        .collect();
    keys.sort();
    Ok(keys)
}

/// The tenants' artifact buckets ([`artifacts_bucket`]), opened when needed. Cheap to clone.
#[derive(Clone)]
pub struct Artifacts {
    js: jetstream::Context,
    replicas: usize,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts").finish_non_exhaustive()
    }
}

impl Artifacts {
    /// Opens `tenant`'s bucket, creating it if it does not exist yet. Only an operator may
    /// create it (a node creates the buckets of the tenants in its configuration); a tenant's
    /// user may only use it.
    pub async fn bucket(&self, tenant: &str) -> anyhow::Result<object_store::ObjectStore> {
        let bucket = artifacts_bucket(tenant);
        if let Ok(store) = self.js.get_object_store(&bucket).await {
            return Ok(store);
        }
        let created = self
            .js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                description: Some(format!("weir: tenant {tenant}'s handler components")),
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await;
        let error = match created {
            Ok(store) => return Ok(store),
            Err(error) => error,
        };
        // Another node or command may have made it first.
        match self.js.get_object_store(&bucket).await {
            Ok(store) => Ok(store),
            Err(_) => Err(error).with_context(|| {
                format!("failed to create object store {bucket}{MADE_BY_OPERATORS}")
            }),
        }
    }

    /// Stores `component` as version `digest` of `id`, unless it is there already; returns
    /// the artifact's name.
    pub async fn store(
        &self,
        id: &DeploymentId,
        digest: &str,
        component: &[u8],
    ) -> anyhow::Result<String> {
        let name = id.artifact_name(digest);
        let bucket = self.bucket(&id.tenant).await?;
        if bucket.info(&name).await.is_err() {
            let metadata = object_store::ObjectMetadata {
                name: name.clone(),
                description: Some(format!("weir handler {id}")),
                ..Default::default()
            };
            bucket
                .put(metadata, &mut &component[..])
                .await
                .with_context(|| format!("failed to upload {name}"))?;
        }
        Ok(name)
    }

    /// Removes every stored component of `id` from its tenant's bucket; returns how many.
    /// (Components stored in the shared bucket, before tenants had buckets of their own, stay
    /// there: a tenant's user may not even look into it.)
    pub async fn remove_all(&self, id: &DeploymentId) -> anyhow::Result<usize> {
        let prefix = format!("{}/{}/", id.tenant, id.handler);
        let bucket = artifacts_bucket(&id.tenant);
        let Ok(store) = self.js.get_object_store(&bucket).await else {
            return Ok(0);
        };
        // The names are in the subjects of the objects' metadata, `$O.<bucket>.M.<base64 name>`,
        // which stream info lists without a consumer; a removed object's stays, with no object.
        let meta = format!("$O.{bucket}.M.");
        let stream = self
            .js
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .with_context(|| format!("failed to open object store {bucket}"))?;
        let subjects = stream_subjects(&stream, format!("{meta}>"))
            .await
            .with_context(|| format!("failed to list the components in {bucket}"))?;
        let mut names = Vec::new();
        for subject in subjects {
            use base64::Engine as _;
            let Some(encoded) = subject.strip_prefix(&meta) else {
                continue;
            };
            let Ok(name) = base64::engine::general_purpose::URL_SAFE.decode(encoded) else {
                continue;
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(&prefix) && store.info(&name).await.is_ok() {
                names.push(name);
            }
        }
        for name in &names {
            store
                .delete(name)
                .await
                .with_context(|| format!("failed to remove {name} from {bucket}"))?;
        }
        Ok(names.len())
    }

    /// Whether the artifact `name` is stored (read from its metadata, without a consumer).
    pub async fn contains(&self, name: &str) -> bool {
        let Some((tenant, _)) = name.split_once('/') else {
            return false;
        };
        for bucket in [artifacts_bucket(tenant), ARTIFACTS_BUCKET.to_owned()] {
            if let Ok(store) = self.js.get_object_store(&bucket).await
                && store.info(name).await.is_ok()
            {
                return true;
            }
        }
        false
    }

    /// The artifact `name` (`<tenant>/<handler>/<sha256>`), from its tenant's bucket, or from
    /// the shared bucket of earlier versions.
    pub async fn get(&self, name: &str) -> anyhow::Result<object_store::Object> {
        let tenant = name
            .split_once('/')
            .map(|(tenant, _)| tenant)
            .with_context(|| {
                format!("artifact name {name:?} is not <tenant>/<handler>/<sha256>")
            })?;
        let bucket = artifacts_bucket(tenant);
        let error = match self.js.get_object_store(&bucket).await {
            Ok(store) => match store.get(name).await {
                Ok(object) => return Ok(object),
                Err(error) => anyhow::Error::new(error).context(format!("not in {bucket}")),
            },
            Err(error) => anyhow::Error::new(error).context(format!("cannot open {bucket}")),
        };
        if let Ok(shared) = self.js.get_object_store(ARTIFACTS_BUCKET).await
            && let Ok(object) = shared.get(name).await
        {
            return Ok(object);
        }
        Err(error)
    }
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
        assert_eq!(artifacts_bucket("acme"), "weir_artifacts_acme");
        assert_eq!(
            id.output_msg_id("ORDERS", 42, 1, None),
            "weir:acme:orders:ORDERS:42:1"
        );
        assert_eq!(
            id.output_msg_id("ORDERS", 42, 1, Some(7)),
            "weir:acme:orders:ORDERS:42:1:7"
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
    fn each_dead_message_has_a_subject_and_a_message_id_of_its_own() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        assert_eq!(
            dead_letter_subject(&id, "ORDERS", 42),
            "weir.dlq.acme.orders.ORDERS.42"
        );
        assert_eq!(
            dead_letter_msg_id(&id, "ORDERS", 42),
            "dlq:acme.orders:ORDERS:42"
        );
        assert_eq!(
            dead_letters_subject(Some("acme"), None),
            "weir.dlq.acme.*.>"
        );
        assert_eq!(dead_letters_subject(None, None), "weir.dlq.*.*.>");
        Ok(())
    }

    #[test]
    fn names_that_would_be_ambiguous_are_refused() {
        for bad in ["", "Acme", "a_b", "a.b", "-a", "a b", &"x".repeat(33)] {
            assert!(DeploymentId::new(bad, "h").is_err(), "{bad:?} accepted");
        }
    }
}
