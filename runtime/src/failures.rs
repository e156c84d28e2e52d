//! What went wrong with a message, kept where the dead-letter mover can find it.
//!
//! Every time a delivery ends in anything but an ack, the worker writes a [`Failure`] to the
//! `weir_failures` KV bucket under `<tenant>.<handler>.<stream>.<seq>`, and only then tells the
//! server. When the message dies, the mover copies the last failure into the dead letter's
//! `Weir-Last-Error`. A failure that ended in a termination (`terminated`) is also how the mover
//! tells weir's own `+TERM`s from anybody else's: weir never terminates a message without
//! writing one first, naming the delivery (`consumer_seq`) the `+TERM` is for. weir retries a
//! message itself and counts its attempts here (`delivery`), so a node that takes a message over
//! continues the count; after the last attempt weir terminates the message (`gave_up`).
//!
//! Records outlive the captured advisories ([`crate::control::ADVISORY_AGE`]) by a day: a record
//! is written before its advisory exists, so the mover always finds it while the advisory waits.

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use crate::control::DeploymentId;

pub use crate::control::FAILURES_BUCKET;
/// Longest error a record keeps; the rest of a long trap report is in the node's log.
pub const MAX_ERROR_BYTES: usize = 1024;

/// One delivery of one message that did not end in an ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The handler version that saw the message.
    pub version: String,
    /// The subject as published, without the partition token.
    pub subject: String,
    /// weir's attempt at the message (1 on the first call); it counts attempts itself,
    /// across redeliveries, restarts and handoffs, and a new holder continues from here.
    pub delivery: u64,
    /// The delivery's sequence in the partition's consumer, as the server's advisories give it.
    pub consumer_seq: u64,
    /// What went wrong: a trap, a deadline, the memory limit, a refused output, the handler's
    /// retry or rejection.
    pub error: String,
    /// Whether weir terminated the message after this failure (a rejection, or giving up).
    pub terminated: bool,
    /// Whether the termination was weir giving up after its last allowed attempt, which makes
    /// a `max_deliveries` dead letter rather than a `terminated` one.
    #[serde(default)]
    pub gave_up: bool,
    /// The node that handled this delivery.
    pub node: String,
    /// When, RFC 3339.
    pub at: String,
}

/// The key of a message's failure record. Stream names may hold characters KV keys may not;
/// those are written as `=XX` (hex).
pub fn failure_key(id: &DeploymentId, stream: &str, stream_seq: u64) -> String {
    let mut escaped = String::with_capacity(stream.len());
    for byte in stream.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("={byte:02X}"));
        }
    }
    format!("{}.{}.{escaped}.{stream_seq}", id.tenant, id.handler)
}

/// Writes `failure` as the message's last failure; returns once the server has stored it.
pub(crate) async fn record(
    failures: &kv::Store,
    id: &DeploymentId,
    stream: &str,
    stream_seq: u64,
    failure: &Failure,
) -> anyhow::Result<()> {
    let key = failure_key(id, stream, stream_seq);
    failures
        .put(&key, serde_json::to_vec(failure)?.into())
        .await
        .with_context(|| {
            format!("failed to record the failure of {stream} sequence {stream_seq}")
        })?;
    Ok(())
}

/// Reads a message's last failure from the bucket's stream leader, so a record written just
/// before the message died is always seen (a KV get may be served by a lagging replica).
pub(crate) async fn last(
    failures: &kv::Store,
    id: &DeploymentId,
    stream: &str,
    stream_seq: u64,
) -> anyhow::Result<Option<Failure>> {
    use jetstream::stream::LastRawMessageErrorKind as Kind;
    let key = failure_key(id, stream, stream_seq);
    let message = match failures
        .stream
        .get_last_raw_message_by_subject(&format!("{}{key}", failures.prefix))
        .await
    {
        Ok(message) => message,
        Err(error) if error.kind() == Kind::NoMessageFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read failure record {key}"));
        }
    };
    match serde_json::from_slice(&message.payload) {
        Ok(failure) => Ok(Some(failure)),
        // Reading it again would not help; the dead letter says no failure was recorded.
        Err(error) => {
            tracing::warn!("failure record {key} is unreadable, so ignored: {error}");
            Ok(None)
        }
    }
}

/// The longest prefix of `text`, on one line, that fits in `max_bytes`: what a header value
/// or a `+TERM` reason can carry, and a terminal shows as it is (every control character,
/// a handler's escape sequence say, is a space).
pub(crate) fn clip(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_deployment_stream_and_sequence_and_escape_what_keys_cannot_hold()
    -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        assert_eq!(failure_key(&id, "ORDERS", 42), "acme.orders.ORDERS.42");
        assert_eq!(failure_key(&id, "in$1", 7), "acme.orders.in=241.7");
        Ok(())
    }

    #[test]
    fn clipped_text_fits_on_one_line_and_never_splits_a_character() {
        assert_eq!(clip("trap:\nunreachable", 100), "trap: unreachable");
        assert_eq!(clip("init: \x1b[2Jgone\r", 100), "init:  [2Jgone ");
        assert_eq!(
            clip("héllo", 2),
            "h",
            "é is two bytes; half of it is dropped"
        );
        assert_eq!(
            clip(&"x".repeat(5000), MAX_ERROR_BYTES).len(),
            MAX_ERROR_BYTES
        );
    }
}
