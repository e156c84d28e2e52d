//! Handlers' log lines and guest stdout/stderr, from every node, for `weir logs`.
//!
//! Every line a guest logs or prints that its tenant's log budget lets through goes to the
//! node's own log and is published on `weir.logs.<tenant>.<handler>.<partition>` as a JSON
//! [`LogLine`]. The stream [`LOGS_STREAM`] keeps them for an hour (and at most
//! [`LOGS_MAX_BYTES`]), so `weir logs` shows the recent past before it follows. A tenant's user
//! may read its own tenant's subjects; handlers cannot publish there (outputs never reach
//! `weir.>`).
//!
//! Publishing never holds a call up: lines go through a bounded queue to one publisher per
//! node, and a line that finds the queue full is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::control::{DeploymentId, log_subject as subject};

pub use crate::control::{LOGS_MAX_AGE, LOGS_MAX_BYTES, LOGS_STREAM};
/// Lines waiting for the node's publisher; more are dropped.
const QUEUE: usize = 4096;
/// The longest line published; the rest of a longer one is in the node's log.
const MAX_LINE_BYTES: usize = 16 << 10;

/// One line, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the node wrote it, RFC 3339.
    pub at: String,
    /// The node that ran the call.
    pub node: String,
    /// The partition of the instance.
    pub partition: u32,
    /// The message in hand (0 during `init`).
    pub stream_seq: u64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Where the guest wrote it: `log`, `stdout` or `stderr`.
    pub source: String,
    /// What it wrote.
    pub message: String,
}

/// Where a deployment's instances send their lines: the node's publisher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogSink {
    id: Arc<DeploymentId>,
    queue: mpsc::Sender<(String, LogLine)>,
    dropped: Arc<AtomicU64>,
    node: Arc<str>,
}

impl LogSink {
    /// The sink of deployment `id` on this node's `publisher`.
    pub fn new(publisher: &LogPublisher, id: &DeploymentId) -> Self {
        Self {
            id: Arc::new(id.clone()),
            queue: publisher.queue.clone(),
            dropped: publisher.dropped.clone(),
            node: publisher.node.clone(),
        }
    }

    /// Publishes a line of the instance serving `partition`, unless the queue is full.
    pub fn send(&self, partition: u32, stream_seq: u64, level: &str, source: &str, message: &str) {
        let line = LogLine {
            at: crate::clock::now_rfc3339(),
            node: self.node.to_string(),
            partition,
            stream_seq,
            level: level.to_owned(),
            source: source.to_owned(),
            message: clip(message, MAX_LINE_BYTES).to_owned(),
        };
        if self
            .queue
            .try_send((subject(&self.id, Some(partition)), line))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A node's publisher of log lines.
#[derive(Debug, Clone)]
pub struct LogPublisher {
    queue: mpsc::Sender<(String, LogLine)>,
    dropped: Arc<AtomicU64>,
    node: Arc<str>,
}

impl LogPublisher {
    /// Starts publishing on `client` what the node's sinks send, until every sink and this
    /// publisher are dropped.
    pub fn start(client: async_nats::Client, node: &str) -> Self {
        let (queue, mut lines) = mpsc::channel::<(String, LogLine)>(QUEUE);
        tokio::spawn(async move {
            while let Some((subject, line)) = lines.recv().await {
                let Ok(json) = serde_json::to_vec(&line) else {
                    continue;
                };
                // Lines are best effort: a node without a server keeps its own log.
                let _ = client.publish(subject, json.into()).await;
            }
        });
        Self {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
            node: node.into(),
        }
    }

    /// Lines dropped because the publisher fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Which lines `weir logs` reads.
#[derive(Debug, Clone)]
pub struct Query {
    /// Whose.
    pub id: DeploymentId,
    /// One partition's, or every partition's.
    pub partition: Option<u32>,
    /// From how long ago.
    pub since: Duration,
    /// Whether to go on with new lines as they come.
    pub follow: bool,
}

/// Hands every line `query` selects to `print`, oldest first; returns once the stored ones
/// are read, or, with `follow`, when `print` fails (its reader went away, say). Read with a
/// short-lived ordered consumer, which the server removes by itself.
pub async fn read(
    js: &jetstream::Context,
    query: &Query,
    mut print: impl FnMut(&LogLine) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stream = js.get_stream(LOGS_STREAM).await.with_context(|| {
        format!("there is no stream {LOGS_STREAM}: no node has run a handler here yet")
    })?;
    let start = time::OffsetDateTime::now_utc()
        .checked_sub(time::Duration::try_from(query.since).unwrap_or(time::Duration::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let filter = subject(&query.id, query.partition);
    let from = consumer::DeliverPolicy::ByStartTime { start_time: start };
    let consumer = crate::control::reading_consumer(js, &stream, filter, from)
        .await
        .with_context(|| format!("failed to read the log lines of {}", query.id))?;
    if consumer.cached_info().num_pending == 0 && !query.follow {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("failed to read the log lines of {}", query.id))?;
    while let Some(message) = messages.next().await {
        let message =
            message.with_context(|| format!("failed to read the log lines of {}", query.id))?;
        let caught_up = message.info().is_ok_and(|info| info.pending == 0);
        if let Ok(line) = serde_json::from_slice::<LogLine>(&message.payload) {
            print(&line)?;
        }
        if caught_up && !query.follow {
            return Ok(());
        }
    }
    Ok(())
}
