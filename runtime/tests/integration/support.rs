//! The test harness: a real nats-server per test, the test guests, and waits with timeouts.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::StreamMessage, stream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weir::control::{ControlPlane, DeploymentId};
use weir::deploy::{self, DeployRequest, Deployed};
use weir::dlq::records::{self, DeadLetter};
use weir::embedded::{NatsServer, ServerOptions};
use weir::host::{Host, TenantBudget};
use weir::node::{self, NodeConfig, NodeHandle};
use weir::partition::{self, StreamRequest};
use weir::spec::{DeploymentSpec, LimitsSpec, NodeStatus, RetrySpec};
use weir::tenants::Quotas;

/// A tenant budget under the default quotas, for instances started outside a node.
pub fn default_budget() -> std::sync::Arc<TenantBudget> {
    Host::new()
        .expect("host")
        .tenant_budget("test", Quotas::default().budget())
}

/// The input stream every NATS test uses: publishers send `in.<key>.<event>`.
pub const INPUT: &str = "IN";
/// The output stream: the scripted guest echoes to `out.<input subject>`.
pub const OUTPUT: &str = "OUT";
/// Long enough for a slow CI machine; only ever reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A nats-server for one test, with a client connected to it.
pub struct Env {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        let server = NatsServer::start(ServerOptions::default()).context(
            "the tests need nats-server: run scripts/bootstrap.sh or set NATS_SERVER_BIN",
        )?;
        let client = async_nats::connect(server.url()).await?;
        let js = jetstream::new(client.clone());
        Ok(Self { server, client, js })
    }

    /// `IN` with `partitions` partitions (`in.*.>`), and `OUT` capturing `out.>`.
    pub async fn with_streams(partitions: u32) -> anyhow::Result<Self> {
        let env = Self::start().await?;
        create_streams(&env.js, partitions, 1).await?;
        Ok(env)
    }

    pub async fn node(&self) -> anyhow::Result<NodeHandle> {
        node::start(self.client.clone(), NodeConfig::default()).await
    }

    /// Deploys and waits until `node` runs this version.
    pub async fn deploy_on(
        &self,
        node: &NodeHandle,
        request: DeployRequest,
    ) -> anyhow::Result<DeploymentSpec> {
        let id = request.id.clone();
        let Deployed { spec, revision } = deploy::deploy(&self.js, &Host::new()?, request).await?;
        let control = ControlPlane::open(&self.js).await?;
        wait_for(
            &format!("node {} to run {id} revision {revision}", node.id()),
            || async {
                let status = node_status(&control, node.id(), &id).await?;
                if let Some(error) = &status.error {
                    panic!("node could not run {id}: {error}");
                }
                (status.revision >= revision).then_some(())
            },
        )
        .await;
        Ok(spec)
    }

    /// Publishes `payload` to `subject` and returns its stream sequence.
    pub async fn publish(&self, subject: &str, payload: &str) -> anyhow::Result<u64> {
        let ack = self
            .js
            .publish(subject.to_owned(), payload.to_owned().into())
            .await?
            .await?;
        Ok(ack.sequence)
    }

    /// Waits until `stream` holds at least `count` messages, then returns them all.
    pub async fn wait_messages(&self, stream: &str, count: usize) -> Vec<StreamMessage> {
        wait_for(&format!("{count} message(s) in {stream}"), || async {
            let mut handle = self.js.get_stream(stream).await.ok()?;
            let held = handle.info().await.ok()?.state.messages as usize;
            (held >= count).then_some(())
        })
        .await;
        read(&self.js, stream).await
    }

    /// Waits until the dead-letter stream holds at least `count` dead letters, then returns
    /// them all, oldest first.
    pub async fn wait_dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        wait_for(&format!("{count} dead letter(s)"), || async {
            let letters = records::list(&self.js, None, None).await.ok()?;
            (letters.len() >= count).then_some(letters)
        })
        .await
    }
}

/// `IN` with `partitions` partitions (`in.*.>`), and `OUT` capturing `out.>`, each stored
/// `replicas` times.
pub async fn create_streams(
    js: &jetstream::Context,
    partitions: u32,
    replicas: usize,
) -> anyhow::Result<()> {
    create_streams_deduplicating(js, partitions, replicas, None).await
}

/// [`create_streams`], with `OUT` remembering message ids for `duplicate_window` (the
/// server's default if `None`).
pub async fn create_streams_deduplicating(
    js: &jetstream::Context,
    partitions: u32,
    replicas: usize,
    duplicate_window: Option<Duration>,
) -> anyhow::Result<()> {
    partition::create_stream(
        js,
        &StreamRequest {
            name: INPUT.into(),
            subjects: "in.*.>".into(),
            partitions,
            key_tokens: vec![],
            replicas,
        },
    )
    .await?;
    js.create_stream(stream::Config {
        name: OUTPUT.into(),
        subjects: vec!["out.>".into()],
        num_replicas: replicas,
        duplicate_window: duplicate_window.unwrap_or_default(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Publishes `count` messages `<command> <key> <seq>` to `IN` over `keys` keys, for the
/// scripted guest, which echoes each (after carrying out `command`, e.g. `sleep 100`).
pub async fn echoes(js: &jetstream::Context, command: &str, count: u64, keys: u64) {
    weir::traffic::Traffic {
        subject: "in.{key}.ev".into(),
        payload: weir::traffic::Payload::Template(format!("{command} {{key}} {{seq}}")),
        count,
        keys,
        headers: vec![],
    }
    .publish(js, |_| {})
    .await
    .expect("messages published");
}

/// Judges the output stream as users see it: every key's outputs exactly once, in the order
/// of its messages in the input stream. (The input's order, not the publisher's: a publisher
/// that publishes again after a server is lost may store a message after a later one.)
pub async fn assert_outputs_follow_inputs(js: &jetstream::Context) {
    let inputs = read(js, INPUT).await;
    let outputs = read(js, OUTPUT).await;
    let (expected, seen) = (seqs_per_key(&inputs), seqs_per_key(&outputs));
    for (key, expected) in &expected {
        assert_eq!(
            seen.get(key),
            Some(expected),
            "outputs of {key} repeated, out of order or incomplete"
        );
    }
    assert_eq!(outputs.len(), inputs.len(), "outputs lost or repeated");
}

/// What `node` last reported of deployment `id`, if it reported anything.
pub async fn node_status(
    control: &ControlPlane,
    node: &str,
    id: &DeploymentId,
) -> Option<NodeStatus> {
    let value = control.status.get(id.status_key(node)).await.ok()??;
    serde_json::from_slice(&value).ok()
}

/// Every partition of the one deployment there is, as `weir status` reads it.
pub async fn partitions(env: &Env) -> Vec<weir::status::PartitionStatus> {
    let control = ControlPlane::open(&env.js).await.expect("control plane");
    let mut cluster = weir::status::read(&env.js, &control, None)
        .await
        .expect("status");
    cluster
        .deployments
        .pop()
        .expect("one deployment")
        .partitions
}

/// Every message in `stream`, in order.
pub async fn read(js: &jetstream::Context, stream: &str) -> Vec<StreamMessage> {
    weir::traffic::read_stream(js, stream)
        .await
        .expect("stream readable")
}

/// A deploy request for the scripted guest on `IN`, allowed to publish to `out.>`, with quick
/// retries so tests do not wait on the default backoff.
pub fn scripted(handler: &str) -> DeployRequest {
    DeployRequest {
        id: DeploymentId::new("test", handler).expect("valid name"),
        component: guest("scripted"),
        stream: INPUT.into(),
        window: weir::spec::DEFAULT_WINDOW,
        limits: LimitsSpec::default(),
        retry: RetrySpec {
            backoff: vec![Duration::from_millis(100)],
            ..RetrySpec::default()
        },
        config: BTreeMap::new(),
        outputs: vec!["out.>".into()],
        from: None,
        deployed_by: None,
        reset_state: false,
    }
}

/// [`scripted`], giving a message up after `max_deliver` deliveries, `backoff` apart.
pub fn scripted_giving_up(handler: &str, max_deliver: u32, backoff: Duration) -> DeployRequest {
    DeployRequest {
        retry: RetrySpec {
            max_deliver,
            backoff: vec![backoff],
            ..RetrySpec::default()
        },
        ..scripted(handler)
    }
}

/// A key whose messages land in `partition` of a stream with `partitions` partitions; `n`
/// picks among such keys.
pub fn key_in(partition: u32, partitions: u32, n: usize) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|key| partition::partition_of(&[key], partitions) == partition)
        .nth(n)
        .expect("some key hashes to every partition")
}

/// The outputs of the scripted guest's echoes whose payloads end in `<key> <seq>`, as the
/// sequence numbers of each key in the order the output stream holds them.
pub fn seqs_per_key(outputs: &[StreamMessage]) -> BTreeMap<String, Vec<u64>> {
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for output in outputs {
        let text = String::from_utf8_lossy(&output.payload);
        let mut words = text.split_whitespace().rev();
        let (Some(seq), Some(key)) = (words.next(), words.next()) else {
            panic!("output {text:?} does not end in a key and a sequence number");
        };
        let seq = seq
            .parse()
            .unwrap_or_else(|_| panic!("output {text:?} does not end in a sequence number"));
        per_key.entry(key.to_owned()).or_default().push(seq);
    }
    per_key
}

/// The header `name` of a stored message.
pub fn header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The repository's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `out` is missing or older than any of the files in `sources` and the files directly
/// in the directories among them.
pub fn stale(out: &Path, sources: &[PathBuf]) -> bool {
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let files = sources
        .iter()
        .flat_map(|source| match std::fs::read_dir(source) {
            Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
            Err(_) => vec![source.clone()],
        });
    let newest = files.filter_map(|path| modified(&path)).max();
    match (modified(out), newest) {
        (Some(built), Some(newest)) => built < newest,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The bytes of a test or example guest.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read guest {}: {e}", path.display()))
}

/// Where a test or example guest is, built once per test run if missing or stale.
pub fn guest_path(name: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target/guests");
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        for manifest in ["tests/guests/Cargo.toml", "examples/Cargo.toml"] {
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join(manifest))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
            assert!(
                status.success(),
                "building the guests in {manifest} failed (is the wasm32-wasip2 target installed? run scripts/bootstrap.sh)"
            );
        }
        *built = true;
    }
    target.join(format!("wasm32-wasip2/release/{name}.wasm"))
}

/// `GET path` from `node`'s endpoints: the status code and the body.
pub async fn get(node: &NodeHandle, path: &str) -> Option<(u16, String)> {
    let addr = node.http_addr()?;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The value of the sample `series` (name and labels as exposed) in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
