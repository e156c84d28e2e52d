//! Several `weir node` processes against one NATS, and what they say they did.
//!
//! Each node runs the real binary with JSON logs, including the worker's debug event
//! `handling` (node, partition, stream sequence, pin) written just before a message
//! is handed to the handler. Nodes run on one machine, so their log timestamps share a clock
//! and merge into one history of handler calls, which the checkers below judge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use weir::status::ClusterStatus;

use crate::support::wait_for;

/// A `weir node` child process, killed when dropped.
pub struct NodeProcess {
    pub id: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Starts `weir node --node-id <id>` against `urls` (comma-separated).
    pub fn start(id: &str, urls: &str) -> Self {
        Self::start_with(id, urls, &[])
    }

    /// Like [`NodeProcess::start`], with extra `weir node` arguments.
    pub fn start_with(id: &str, urls: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // WEIR_TEST_LOGS=<dir> keeps every node's log there for a look after the test.
        let log = match std::env::var_os("WEIR_TEST_LOGS") {
            Some(keep) => PathBuf::from(keep).join(format!("{id}.log")),
            None => dir.path().join("node.log"),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "--nats-url",
                urls,
                "--log-format",
                "json",
                "node",
                "--node-id",
                id,
                "--http",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("RUST_LOG", "info,weir::worker=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("weir binary starts");
        Self {
            id: id.to_owned(),
            child,
            log,
            _dir: dir,
        }
    }

    /// Kills the process without warning, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns how it exited and how long
    /// the drain took.
    pub async fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        let status = wait_for(&format!("node {} to exit", self.id), || {
            let exited = self.child.try_wait().expect("child status");
            async move { exited }
        })
        .await;
        (status, started.elapsed())
    }

    /// Stops the process where it is (SIGSTOP), as a long stall, a virtual machine being
    /// moved or a laptop being closed would: it neither runs nor closes its connections.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(
            sent.success(),
            "could not send SIG{signal} to node {}",
            self.id
        );
    }

    /// The node's log so far, one JSON object per line.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log as text, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every handler call this node logged.
    pub fn calls(&self) -> Vec<Call> {
        self.log_lines()
            .iter()
            .filter(|line| line["fields"]["message"] == "handling")
            .map(|line| Call {
                at: timestamp(line),
                node: self.id.clone(),
                handler: span_field(line, "handler"),
                partition: span_field(line, "partition")
                    .parse()
                    .expect("partition number"),
                stream_seq: line["fields"]["stream_seq"].as_u64().expect("stream_seq"),
                pin: line["fields"]["pin"].as_str().unwrap_or("").to_owned(),
            })
            .collect()
    }

    /// When this node logged `message` last, if it did.
    pub fn logged_at(&self, message: &str) -> Option<i128> {
        self.log_lines()
            .iter()
            .filter(|line| line["fields"]["message"] == message)
            .map(timestamp)
            .next_back()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One handler call, as its node logged it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Nanoseconds since the epoch.
    pub at: i128,
    pub node: String,
    pub handler: String,
    pub partition: u32,
    pub stream_seq: u64,
    pub pin: String,
}

fn timestamp(line: &serde_json::Value) -> i128 {
    let text = line["timestamp"].as_str().expect("timestamp");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 timestamp")
        .unix_timestamp_nanos()
}

fn span_field(line: &serde_json::Value, field: &str) -> String {
    let value = &line["span"][field];
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// Every call of every node, in the order they happened.
pub fn history(nodes: &[&NodeProcess]) -> Vec<Call> {
    let mut calls: Vec<Call> = nodes.iter().flat_map(|n| n.calls()).collect();
    calls.sort_by_key(|c| c.at);
    calls
}

/// For the partitions `moved` picks: how many were handled again after `since` (nanoseconds
/// since the epoch), and the longest wait from `since` to a partition's first call.
pub fn resumption(calls: &[Call], since: i128, moved: impl Fn(u32) -> bool) -> (usize, Duration) {
    let mut first: BTreeMap<u32, i128> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.at > since && moved(c.partition)) {
        first.entry(call.partition).or_insert(call.at);
    }
    let longest = first.values().map(|at| at - since).max().unwrap_or(0);
    let longest = Duration::from_nanos(u64::try_from(longest).unwrap_or(0));
    (first.len(), longest)
}

/// What a history proves about one handler's calls. (Order is judged from the output stream,
/// as users see it: a node that dies with a window of messages in flight has called some that
/// its successor calls again.)
#[derive(Debug, Default)]
pub struct Verdict {
    /// Stream sequences handled more than once.
    pub duplicates: BTreeSet<u64>,
    /// Pins that more than one node used.
    pub shared_pins: Vec<String>,
}

/// Judges the calls of `handler`: which messages were called more than once, and whether a
/// pin belonged to more than one node.
pub fn judge(calls: &[Call], handler: &str) -> Verdict {
    let mut verdict = Verdict::default();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut pins: BTreeMap<&str, &str> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.handler == handler) {
        if !seen.insert(call.stream_seq) {
            verdict.duplicates.insert(call.stream_seq);
        }
        if !call.pin.is_empty()
            && let Some(owner) = pins.insert(&call.pin, &call.node)
            && owner != call.node
        {
            verdict.shared_pins.push(call.pin.clone());
        }
    }
    verdict
}

/// Reads the cluster status once.
pub async fn status(js: &jetstream::Context) -> Option<ClusterStatus> {
    let control = weir::control::ControlPlane::open(js).await.ok()?;
    weir::status::read(js, &control, None).await.ok()
}

/// Waits until `nodes` are exactly the live, active nodes and every partition of every
/// deployment (there must be `deployments` of them) has exactly one owner, then returns the
/// status.
pub async fn settled(js: &jetstream::Context, nodes: &[&str], deployments: usize) -> ClusterStatus {
    let expected: BTreeSet<&str> = nodes.iter().copied().collect();
    wait_for(
        &format!("nodes {nodes:?} to own every partition once"),
        || async {
            let status = status(js).await?;
            let live: BTreeSet<&str> = status
                .nodes
                .iter()
                .filter(|n| n.state == weir::ownership::membership::MemberState::Active)
                .map(|n| n.node.as_str())
                .collect();
            let placed = status.deployments.len() == deployments
                && status.deployments.iter().all(|d| {
                    d.errors.is_empty()
                        && d.partitions
                            .iter()
                            .all(|p| p.owners.len() == 1 && expected.contains(p.owners[0].as_str()))
                });
            (live == expected && status.nodes.len() == nodes.len() && placed).then_some(status)
        },
    )
    .await
}

/// The owner of every partition of `handler`, by partition.
pub fn owners(status: &ClusterStatus, handler: &str) -> Vec<String> {
    status
        .deployments
        .iter()
        .find(|d| d.handler == handler)
        .expect("deployment listed")
        .partitions
        .iter()
        .map(|p| p.owners[0].clone())
        .collect()
}

/// Waits until the consumers of `handler` have acknowledged everything in the stream.
pub async fn drained(js: &jetstream::Context, handler: &str) {
    wait_for(&format!("{handler} to settle every message"), || async {
        let status = status(js).await?;
        let deployment = status.deployments.iter().find(|d| d.handler == handler)?;
        deployment
            .partitions
            .iter()
            .all(|p| p.lag == 0 && p.pending == 0)
            .then_some(())
    })
    .await;
}

/// Waits until `stream` holds at least `count` messages, without reading them.
pub async fn wait_stored(js: &jetstream::Context, stream: &str, count: u64) {
    wait_for(&format!("{count} message(s) in {stream}"), || async {
        let mut handle = js.get_stream(stream).await.ok()?;
        (handle.info().await.ok()?.state.messages >= count).then_some(())
    })
    .await;
}
