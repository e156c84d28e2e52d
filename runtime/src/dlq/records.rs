//! Reading, replaying and purging dead letters: what `weir dlq` does.
//!
//! A dead letter's id is its sequence in `WEIR_DLQ`. Its subject holds the record first, then
//! one marker per replay (headers only: where the replayed message went), so a listing shows
//! what was replayed and `replay --all` skips it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::{self, message::StreamMessage};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;

use super::{DLQ_STREAM, Reason, headers};
use crate::control::dead_letters_subject;

/// How long reading the DLQ waits for the next message before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The headers weir writes on a record, as opposed to the original message's.
const RECORD_HEADERS: [&str; 11] = [
    headers::REASON,
    headers::TERM_REASON,
    headers::LAST_ERROR,
    headers::STREAM,
    headers::STREAM_SEQ,
    headers::SUBJECT,
    headers::DELIVERIES,
    headers::TENANT,
    headers::HANDLER,
    headers::HANDLER_VERSION,
    headers::ORIGINAL_MISSING,
];

/// One dead letter, with its replays.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence in `WEIR_DLQ`.
    pub id: u64,
    /// When it was recorded, RFC 3339.
    pub dead_at: String,
    /// The deployment's tenant.
    pub tenant: String,
    /// The deployment's handler.
    pub handler: String,
    /// Why the message died.
    pub reason: Option<Reason>,
    /// The reason the termination gave, if it was one.
    pub term_reason: Option<String>,
    /// The last failure weir saw.
    pub last_error: String,
    /// The input stream.
    pub stream: String,
    /// The message's sequence there.
    pub stream_seq: u64,
    /// The subject as published, if known.
    pub subject: Option<String>,
    /// Deliveries the message had.
    pub deliveries: u64,
    /// The handler version that last saw it.
    pub handler_version: String,
    /// Why there is no copy of the message, when there is none.
    pub original_missing: Option<String>,
    /// The original message's headers.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The original payload's size.
    pub payload_bytes: usize,
    /// The original payload.
    #[serde(skip)]
    pub payload: Bytes,
    /// Every replay so far, oldest first.
    pub replays: Vec<Replay>,
    /// The record's subject in `WEIR_DLQ`.
    #[serde(skip)]
    pub record_subject: String,
}

/// One replay of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// When, RFC 3339.
    pub at: String,
    /// The subject it was published to.
    pub to: String,
    /// Where it was stored: `<stream>:<seq>`.
    pub stored_as: String,
}

/// A message read back from `WEIR_DLQ`.
struct Stored {
    sequence: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    time: time::OffsetDateTime,
}

impl From<StreamMessage> for Stored {
    fn from(message: StreamMessage) -> Self {
        Self {
            sequence: message.sequence,
            subject: message.subject.to_string(),
            headers: message.headers,
            payload: message.payload,
            time: message.time,
        }
    }
}

/// Every dead letter of a tenant, a handler, or all, oldest first.
pub async fn list(
    js: &jetstream::Context,
    tenant: Option<&str>,
    handler: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let stored = read(js, &dead_letters_subject(tenant, handler)).await?;
    Ok(assemble(stored))
}

/// There is no dead letter of that id.
#[derive(Debug, thiserror::Error)]
#[error("there is no dead letter {0} (see `weir dlq ls`)")]
pub struct NoDeadLetter(pub u64);

/// The dead letter `id`, or [`NoDeadLetter`].
pub async fn get(js: &jetstream::Context, id: u64) -> anyhow::Result<DeadLetter> {
    use jetstream::stream::RawMessageErrorKind;
    let stream = open(js).await?;
    let record = match stream.get_raw_message(id).await {
        Ok(message) => message,
        Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
            return Err(NoDeadLetter(id).into());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read dead letter {id}"));
        }
    };
    let subject = record.subject.to_string();
    assemble(read(js, &subject).await?)
        .into_iter()
        .find(|letter| letter.id == id)
        .with_context(|| {
            format!("{DLQ_STREAM} sequence {id} is a replay marker, not a dead letter")
        })
}

/// Publishes the dead letter's message again, to `to` or to the subject it was first
/// published to, with its original headers plus `Weir-Replayed-From: <id>`, then marks the
/// dead letter replayed. The message then goes through the normal path.
pub async fn replay(
    js: &jetstream::Context,
    letter: &DeadLetter,
    to: Option<&str>,
) -> anyhow::Result<Replay> {
    let id = letter.id;
    if let Some(why) = &letter.original_missing {
        anyhow::bail!("dead letter {id} has no message to replay: {why}");
    }
    let subject = to
        .map(str::to_owned)
        .or_else(|| letter.subject.clone())
        .with_context(|| {
            format!("dead letter {id} does not say its subject; give one with --to")
        })?;
    let attempt = letter.replays.len() + 1;
    let mut message_headers = HeaderMap::new();
    for (name, values) in &letter.headers {
        for value in values {
            message_headers.append(name.as_str(), value.as_str());
        }
    }
    message_headers.insert(headers::REPLAYED_FROM, HeaderValue::from(id));
    // A replay retried within the stream's duplicate window is stored once.
    message_headers.insert("Nats-Msg-Id", format!("weir-replay:{id}:{attempt}"));
    let ack = js
        .publish_with_headers(subject.clone(), message_headers, letter.payload.clone())
        .await
        .with_context(|| format!("failed to replay dead letter {id} to {subject}"))?
        .await
        .with_context(|| {
            format!(
                "dead letter {id} was not stored again on {subject} (does a stream capture it?)"
            )
        })?;
    let replay = Replay {
        at: crate::clock::now_rfc3339(),
        to: subject,
        stored_as: format!("{}:{}", ack.stream, ack.sequence),
    };
    let mut marker = HeaderMap::new();
    marker.insert(headers::REPLAY_OF, HeaderValue::from(id));
    marker.insert(headers::REPLAYED_TO, replay.to.as_str());
    marker.insert(headers::REPLAYED_AS, replay.stored_as.as_str());
    marker.insert("Nats-Msg-Id", format!("weir-replayed:{id}:{attempt}"));
    let unmarked = || {
        format!(
            "dead letter {id} was replayed as {} but not marked",
            replay.stored_as
        )
    };
    js.publish_with_headers(letter.record_subject.clone(), marker, Bytes::new())
        .await
        .with_context(unmarked)?
        .await
        .with_context(unmarked)?;
    Ok(replay)
}

/// Deletes a dead letter and its replay markers.
pub async fn purge(js: &jetstream::Context, letter: &DeadLetter) -> anyhow::Result<()> {
    open(js)
        .await?
        .purge()
        .filter(letter.record_subject.clone())
        .await
        .with_context(|| format!("failed to purge dead letter {}", letter.id))?;
    Ok(())
}

/// Deletes every dead letter of a tenant, a handler, or all; returns how many messages
/// (records and replay markers) went.
pub async fn purge_all(
    js: &jetstream::Context,
    tenant: Option<&str>,
    handler: Option<&str>,
) -> anyhow::Result<u64> {
    let filter = dead_letters_subject(tenant, handler);
    let purged = open(js)
        .await?
        .purge()
        .filter(filter.clone())
        .await
        .with_context(|| format!("failed to purge {filter} from {DLQ_STREAM}"))?;
    Ok(purged.purged)
}

async fn open(js: &jetstream::Context) -> anyhow::Result<jetstream::stream::Stream> {
    js.get_stream(DLQ_STREAM)
        .await
        .with_context(|| format!("failed to open stream {DLQ_STREAM}"))
}

/// Every message of `WEIR_DLQ` on `filter`, in order, read with an ordered consumer.
async fn read(js: &jetstream::Context, filter: &str) -> anyhow::Result<Vec<Stored>> {
    let stream = open(js).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("failed to read {filter} from {DLQ_STREAM}"))?;
    let mut stored = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(stored);
    }
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("failed to read {filter} from {DLQ_STREAM}"))?;
    loop {
        let message = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .with_context(|| format!("timed out reading {filter} from {DLQ_STREAM}"))?
            .with_context(|| format!("reading {filter} from {DLQ_STREAM} ended early"))?
            .with_context(|| format!("failed to read {filter} from {DLQ_STREAM}"))?;
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("unreadable metadata in {DLQ_STREAM}: {e}"))?;
        let (sequence, time, pending) = (info.stream_sequence, info.published, info.pending);
        stored.push(Stored {
            sequence,
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            time,
        });
        if pending == 0 {
            return Ok(stored);
        }
    }
}

/// Turns records and replay markers, in stream order, into dead letters.
fn assemble(stored: Vec<Stored>) -> Vec<DeadLetter> {
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut by_subject: BTreeMap<String, usize> = BTreeMap::new();
    for message in stored {
        let get = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        if get(headers::REPLAY_OF).is_some() {
            if let Some(&index) = by_subject.get(&message.subject) {
                letters[index].replays.push(Replay {
                    at: rfc3339(message.time),
                    to: get(headers::REPLAYED_TO).unwrap_or_default(),
                    stored_as: get(headers::REPLAYED_AS).unwrap_or_default(),
                });
            }
            continue;
        }
        if get(headers::REASON).is_none() {
            continue;
        }
        let mut original = BTreeMap::<String, Vec<String>>::new();
        for (name, values) in message.headers.iter() {
            let name = name.to_string();
            if RECORD_HEADERS.contains(&name.as_str())
                || name.to_ascii_lowercase().starts_with("nats-")
            {
                continue;
            }
            original
                .entry(name)
                .or_default()
                .extend(values.iter().map(|v| v.as_str().to_owned()));
        }
        by_subject.insert(message.subject.clone(), letters.len());
        letters.push(DeadLetter {
            id: message.sequence,
            dead_at: rfc3339(message.time),
            tenant: get(headers::TENANT).unwrap_or_default(),
            handler: get(headers::HANDLER).unwrap_or_default(),
            reason: get(headers::REASON).as_deref().and_then(Reason::parse),
            term_reason: get(headers::TERM_REASON),
            last_error: get(headers::LAST_ERROR).unwrap_or_default(),
            stream: get(headers::STREAM).unwrap_or_default(),
            stream_seq: get(headers::STREAM_SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            subject: get(headers::SUBJECT),
            deliveries: get(headers::DELIVERIES)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            handler_version: get(headers::HANDLER_VERSION).unwrap_or_default(),
            original_missing: get(headers::ORIGINAL_MISSING),
            headers: original,
            payload_bytes: message.payload.len(),
            payload: message.payload,
            replays: Vec::new(),
            record_subject: message.subject,
        });
    }
    letters.sort_by_key(|letter| letter.id);
    letters
}

fn rfc3339(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sequence: u64, subject: &str, pairs: &[(&str, &str)], payload: &str) -> Stored {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, *value);
        }
        Stored {
            sequence,
            subject: subject.to_owned(),
            headers,
            payload: Bytes::from(payload.to_owned()),
            time: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn replay_markers_attach_to_the_record_on_their_subject() {
        let record = |seq, subject: &str| {
            stored(
                seq,
                subject,
                &[
                    (headers::REASON, "terminated"),
                    (headers::TERM_REASON, "not json"),
                    (headers::TENANT, "acme"),
                    (headers::HANDLER, "orders"),
                    (headers::STREAM, "ORDERS"),
                    (headers::STREAM_SEQ, "7"),
                    (headers::DELIVERIES, "1"),
                    ("trace-id", "t-1"),
                    ("Nats-Msg-Id", "dlq:acme.orders:ORDERS:7"),
                ],
                "{",
            )
        };
        let letters = assemble(vec![
            record(1, "weir.dlq.acme.orders.ORDERS.7"),
            record(2, "weir.dlq.acme.orders.ORDERS.9"),
            stored(
                3,
                "weir.dlq.acme.orders.ORDERS.7",
                &[
                    (headers::REPLAY_OF, "1"),
                    (headers::REPLAYED_TO, "orders.c1.created"),
                    (headers::REPLAYED_AS, "ORDERS:12"),
                ],
                "",
            ),
        ]);
        assert_eq!(letters.len(), 2);
        let first = &letters[0];
        assert_eq!((first.id, first.reason), (1, Some(Reason::Terminated)));
        assert_eq!(first.term_reason.as_deref(), Some("not json"));
        assert_eq!(first.stream_seq, 7);
        assert_eq!(&first.payload[..], b"{");
        assert_eq!(
            first.headers,
            BTreeMap::from([("trace-id".to_owned(), vec!["t-1".to_owned()])]),
            "only the original's headers, without weir's or NATS's"
        );
        assert_eq!(first.replays.len(), 1);
        assert_eq!(first.replays[0].stored_as, "ORDERS:12");
        assert!(letters[1].replays.is_empty());
    }
}
