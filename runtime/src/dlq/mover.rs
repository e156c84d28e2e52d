//! The mover: turns the advisories captured in `WEIR_ADVISORIES` into dead letters.
//!
//! Every node runs one, all pulling from the one durable consumer `weir_dlq_mover`, so each
//! advisory goes to one mover at a time and is acked only once its dead letter is stored (or it
//! is found to need none). A mover that dies mid-way leaves the advisory to be redelivered;
//! the record's own subject and `Nats-Expected-Last-Subject-Sequence: 0` make the second
//! attempt, or a second mover, find the record already there instead of writing another.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, AckKind, consumer::pull, kv};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{ADVISORIES_STREAM, Reason, headers};
use crate::control::{ControlPlane, DeploymentId};
use crate::control::{MOVER_CONSUMER, dead_letter_msg_id, dead_letter_subject};
use crate::failures::{self, Failure, MAX_ERROR_BYTES, clip};
use crate::observe::Metrics;
use crate::outputs::Reserved;
use crate::partition;
use crate::spec;

/// The reasons nats-server gives when it terminates a pending message that the stream removed.
const SERVER_REMOVAL_REASONS: [&str; 2] = [
    "Message deleted by stream limits",
    "Unacknowledged message was deleted",
];
const TERMINATED_TYPE: &str = "io.nats.jetstream.advisory.v1.terminated";
const MAX_DELIVER_TYPE: &str = "io.nats.jetstream.advisory.v1.max_deliver";
/// How long an advisory whose dead letter could not be written waits before another try.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Wait before following the advisories again after the pull failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// A MAX_DELIVERIES or MSG_TERMINATED advisory, as the server sends it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Advisory {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) stream_seq: u64,
    /// The delivery a termination was sent for (MAX_DELIVERIES advisories have none).
    #[serde(default)]
    pub(crate) consumer_seq: Option<u64>,
    pub(crate) deliveries: u64,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// What became of one advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// A dead letter was stored under this `WEIR_DLQ` sequence.
    Recorded(u64),
    /// The message already had its dead letter.
    AlreadyRecorded,
    /// The advisory needs no dead letter, for this reason.
    Ignored(String),
}

/// What came of one attempt to store a dead letter.
enum Stored {
    Done(Moved),
    /// Larger than the server's `max_payload`.
    TooLarge,
}

/// Moves dead messages to `WEIR_DLQ`.
#[derive(Debug, Clone)]
pub struct Mover {
    js: jetstream::Context,
    deployments: kv::Store,
    failures: kv::Store,
    /// Where the dead letters it stores are counted, if anywhere.
    metrics: Option<Metrics>,
}

impl Mover {
    /// A mover on the control plane's streams and buckets.
    pub fn new(js: jetstream::Context, control: &ControlPlane) -> Self {
        Self {
            js,
            deployments: control.deployments.clone(),
            failures: control.failures.clone(),
            metrics: None,
        }
    }

    /// The same mover, counting the dead letters it stores in `metrics`.
    pub fn counting_in(self, metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Counts a dead letter this mover stored.
    fn count(&self, id: &DeploymentId, reason: Reason, moved: &Moved) {
        if let (Some(metrics), Moved::Recorded(_)) = (&self.metrics, moved) {
            metrics.dead_letter_moved(id, reason);
        }
    }

    /// Handles advisories until `stop` is cancelled, finishing the one in hand.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.follow(&stop).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(
                    "dead-letter mover: {error:#}; following {ADVISORIES_STREAM} again in \
                     {RESUBSCRIBE_DELAY:?}"
                ),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
        }
    }

    async fn follow(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        // Nothing is in hand yet: a mover told to stop does not wait for a server that is gone.
        let mut messages = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            messages = self.subscribe() => messages?,
        };
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => self.settle(&message).await,
                Some(Err(error)) => {
                    use jetstream::consumer::pull::MessagesErrorKind as Kind;
                    if !matches!(error.kind(), Kind::MissingHeartbeat) {
                        return Err(error.into());
                    }
                    tracing::debug!("dead-letter mover: {error}");
                }
                None => anyhow::bail!("the pull from {MOVER_CONSUMER} ended"),
            }
        }
    }

    /// Pulls from the movers' shared consumer, making it if needed.
    async fn subscribe(&self) -> anyhow::Result<jetstream::consumer::pull::Stream> {
        let stream = self
            .js
            .get_stream(ADVISORIES_STREAM)
            .await
            .with_context(|| format!("failed to open stream {ADVISORIES_STREAM}"))?;
        let consumer = stream
            .get_or_create_consumer(
                MOVER_CONSUMER,
                pull::Config {
                    durable_name: Some(MOVER_CONSUMER.to_owned()),
                    description: Some("weir: the dead-letter movers of every node".to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 256,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("failed to open consumer {MOVER_CONSUMER}"))?;
        consumer
            .stream()
            .max_messages_per_batch(16)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .with_context(|| format!("failed to pull from consumer {MOVER_CONSUMER}"))
    }

    /// Moves one advisory and acks it, or asks for it again if its dead letter could not be
    /// written.
    async fn settle(&self, message: &jetstream::Message) {
        let ack = match self.move_advisory(&message.payload).await {
            Ok(Moved::Recorded(id)) => {
                tracing::info!(id, "dead letter recorded");
                AckKind::Ack
            }
            Ok(Moved::AlreadyRecorded) => AckKind::Ack,
            Ok(Moved::Ignored(why)) => {
                tracing::debug!("advisory ignored: {why}");
                AckKind::Ack
            }
            Err(error) => {
                tracing::warn!("dead-letter mover: {error:#}; trying again in {RETRY_DELAY:?}");
                AckKind::Nak(Some(RETRY_DELAY))
            }
        };
        if let Err(error) = message.ack_with(ack).await {
            tracing::warn!("dead-letter mover: failed to settle an advisory: {error}");
        }
    }

    /// Writes the dead letter an advisory calls for, if it calls for one.
    pub async fn move_advisory(&self, payload: &[u8]) -> anyhow::Result<Moved> {
        let Ok(advisory) = serde_json::from_slice::<Advisory>(payload) else {
            return Ok(Moved::Ignored(
                "not a consumer delivery advisory".to_owned(),
            ));
        };
        let (id, _partition) = match owner(&advisory) {
            Ok(owner) => owner,
            Err(why) => return Ok(Moved::Ignored(why)),
        };
        let failure =
            failures::last(&self.failures, &id, &advisory.stream, advisory.stream_seq).await?;
        let reason = match judge(&advisory, failure.as_ref()) {
            Ok(reason) => reason,
            Err(why) => return Ok(Moved::Ignored(why)),
        };
        let original = match reason {
            Reason::DeletedBeforeProcessing => Err(format!(
                "stream {} removed it before it was handled",
                advisory.stream
            )),
            _ => self.original(&advisory).await?,
        };
        let version = match &failure {
            Some(failure) => failure.version.clone(),
            None => self.current_version(&id).await,
        };
        let letter =
            |original| dead_letter(&advisory, &id, reason, failure.as_ref(), &version, original);
        if let Stored::Done(moved) = self
            .store(&id, &advisory, letter(original.as_ref()))
            .await?
        {
            self.count(&id, reason, &moved);
            return Ok(moved);
        }
        // The original fills the server's max_payload, leaving no room for weir's headers.
        let why = format!(
            "too large to copy with weir's headers; it is {} sequence {}",
            advisory.stream, advisory.stream_seq
        );
        match self.store(&id, &advisory, letter(Err(&why))).await? {
            Stored::Done(moved) => {
                self.count(&id, reason, &moved);
                Ok(moved)
            }
            Stored::TooLarge => anyhow::bail!(
                "the dead letter of {} sequence {} is too large even without the original",
                advisory.stream,
                advisory.stream_seq
            ),
        }
    }

    /// The original message, from the input stream's leader, or why it cannot be had.
    async fn original(&self, advisory: &Advisory) -> anyhow::Result<Result<StreamMessage, String>> {
        use jetstream::stream::RawMessageErrorKind as Kind;
        let stream = self
            .js
            .get_stream_no_info(&advisory.stream)
            .await
            .with_context(|| format!("failed to open stream {}", advisory.stream))?;
        match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => Ok(Ok(message)),
            Err(error) if error.kind() == Kind::NoMessageFound => Ok(Err(format!(
                "stream {} no longer holds sequence {} (removed by its limits or deleted before \
                 it was copied)",
                advisory.stream, advisory.stream_seq
            ))),
            Err(error)
                if matches!(
                    error.kind(),
                    Kind::JetStream(e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(Err(format!("stream {} no longer exists", advisory.stream)))
            }
            Err(error) => Err(error).with_context(|| {
                format!(
                    "failed to read {} sequence {}",
                    advisory.stream, advisory.stream_seq
                )
            }),
        }
    }

    /// The version deployed now, for a message that died without a recorded failure; only a
    /// record nodes would run names one (a record is anybody's who may write the tenant's, and
    /// its version goes into a header).
    async fn current_version(&self, id: &DeploymentId) -> String {
        let spec = self
            .deployments
            .get(id.key())
            .await
            .ok()
            .flatten()
            .and_then(|value| spec::read_record(&id.key(), &value, &Reserved::default()).ok());
        spec.map_or_else(|| "unknown".to_owned(), |(_, spec)| spec.version)
    }

    /// Publishes the dead letter unless its subject already holds one.
    async fn store(
        &self,
        id: &DeploymentId,
        advisory: &Advisory,
        (mut headers, payload): (HeaderMap, Bytes),
    ) -> anyhow::Result<Stored> {
        use jetstream::context::PublishErrorKind;
        headers.insert(
            "Nats-Msg-Id",
            dead_letter_msg_id(id, &advisory.stream, advisory.stream_seq),
        );
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let subject = dead_letter_subject(id, &advisory.stream, advisory.stream_seq);
        let sent = match self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
        {
            Ok(sent) => sent,
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Ok(Stored::TooLarge);
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("failed to publish dead letter {subject}"));
            }
        };
        let moved = match sent.await {
            Ok(ack) if ack.duplicate => Moved::AlreadyRecorded,
            Ok(ack) => Moved::Recorded(ack.sequence),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                Moved::AlreadyRecorded
            }
            Err(error) => {
                return Err(error).with_context(|| format!("dead letter {subject} was not stored"));
            }
        };
        Ok(Stored::Done(moved))
    }
}

/// The deployment and partition whose consumer an advisory is about, or why it is none of
/// weir's business.
pub(crate) fn owner(advisory: &Advisory) -> Result<(DeploymentId, u32), String> {
    if ![TERMINATED_TYPE, MAX_DELIVER_TYPE].contains(&advisory.kind.as_str()) {
        return Err(format!(
            "advisory type {} is not about a dead message",
            advisory.kind
        ));
    }
    DeploymentId::from_consumer_name(&advisory.consumer).ok_or_else(|| {
        format!(
            "consumer {} is not a weir partition consumer",
            advisory.consumer
        )
    })
}

/// Why the message an advisory is about died, or why it did not.
///
/// A termination is weir's only if the worker recorded a failure that ended in one, for that
/// very delivery: weir writes that record before every `+TERM`, and only while the delivery is
/// still the consumer's latest. Any other `+TERM` (another client's, or a late one from a
/// worker whose message has since been delivered to another) has no such record. The server's
/// own terminations say the stream removed the message.
pub(crate) fn judge(advisory: &Advisory, failure: Option<&Failure>) -> Result<Reason, String> {
    if advisory.kind == MAX_DELIVER_TYPE {
        return Ok(Reason::MaxDeliveries);
    }
    if let Some(failure) = failure
        && failure.terminated
        && advisory.consumer_seq == Some(failure.consumer_seq)
    {
        return Ok(if failure.gave_up {
            Reason::MaxDeliveries
        } else {
            Reason::Terminated
        });
    }
    let reason = advisory.reason.as_deref().unwrap_or("");
    if SERVER_REMOVAL_REASONS.contains(&reason) {
        return Ok(Reason::DeletedBeforeProcessing);
    }
    Err(format!(
        "{} sequence {} was terminated ({reason:?}) on delivery {}, but not by weir",
        advisory.stream,
        advisory.stream_seq,
        advisory.consumer_seq.unwrap_or(0)
    ))
}

/// The headers and payload of a dead letter: the original's, plus weir's own.
pub(crate) fn dead_letter(
    advisory: &Advisory,
    id: &DeploymentId,
    reason: Reason,
    failure: Option<&Failure>,
    version: &str,
    original: Result<&StreamMessage, &String>,
) -> (HeaderMap, Bytes) {
    let mut out = HeaderMap::new();
    let mut payload = Bytes::new();
    let mut subject = failure.map(|f| f.subject.clone());
    match original {
        Ok(original) => {
            for (name, values) in original.headers.iter() {
                let name = name.to_string();
                for value in values {
                    if name.eq_ignore_ascii_case("Nats-Msg-Id") {
                        out.insert(headers::ORIGINAL_MSG_ID, value.as_str());
                    } else if !name.to_ascii_lowercase().starts_with("nats-") {
                        // Nats-* headers would ask the DLQ stream for things (expectations,
                        // rollups, TTLs) meant for the input stream.
                        out.append(name.as_str(), value.as_str());
                    }
                }
            }
            payload = original.payload.clone();
            if let Some((_, published)) = partition::split_subject(&original.subject) {
                subject = Some(published.to_owned());
            }
        }
        Err(why) => out.insert(headers::ORIGINAL_MISSING, why.as_str()),
    }
    let last_error = match (failure, reason) {
        (Some(failure), _) => failure.error.clone(),
        (None, Reason::MaxDeliveries) => {
            "no failure recorded: every delivery's ack wait ran out without an answer".to_owned()
        }
        (None, _) => "no failure recorded".to_owned(),
    };
    out.insert(headers::REASON, reason.as_str());
    if reason != Reason::MaxDeliveries {
        let term_reason = advisory.reason.as_deref().unwrap_or("");
        out.insert(
            headers::TERM_REASON,
            clip(term_reason, MAX_ERROR_BYTES).as_str(),
        );
    }
    out.insert(
        headers::LAST_ERROR,
        clip(&last_error, MAX_ERROR_BYTES).as_str(),
    );
    out.insert(headers::STREAM, advisory.stream.as_str());
    out.insert(headers::STREAM_SEQ, HeaderValue::from(advisory.stream_seq));
    if let Some(subject) = subject {
        out.insert(headers::SUBJECT, subject.as_str());
    }
    // weir's own count of attempts, or the server's deliveries where it gave up first.
    let deliveries = failure.map_or(0, |f| f.delivery).max(advisory.deliveries);
    out.insert(headers::DELIVERIES, HeaderValue::from(deliveries));
    out.insert(headers::TENANT, id.tenant.as_str());
    out.insert(headers::HANDLER, id.handler.as_str());
    out.insert(headers::HANDLER_VERSION, version);
    (out, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(kind: &str, reason: Option<&str>) -> Advisory {
        Advisory {
            kind: kind.to_owned(),
            stream: "ORDERS".to_owned(),
            consumer: "weir_acme_orders_p003".to_owned(),
            stream_seq: 42,
            consumer_seq: (kind == TERMINATED_TYPE).then_some(9),
            deliveries: 5,
            reason: reason.map(str::to_owned),
        }
    }

    fn failure(terminated: bool) -> Failure {
        Failure {
            version: "v2".to_owned(),
            subject: "orders.c1.created".to_owned(),
            delivery: 5,
            consumer_seq: 9,
            error: if terminated {
                "rejected: not json".to_owned()
            } else {
                "trap: wasm `unreachable`\ninstruction executed".to_owned()
            },
            terminated,
            gave_up: false,
            node: "n1".to_owned(),
            at: "2026-11-22T12:00:00Z".to_owned(),
        }
    }

    #[test]
    fn running_out_of_deliveries_is_always_a_dead_letter() {
        let advisory = advisory(MAX_DELIVER_TYPE, None);
        assert_eq!(judge(&advisory, None), Ok(Reason::MaxDeliveries));
        assert_eq!(
            judge(&advisory, Some(&failure(false))),
            Ok(Reason::MaxDeliveries)
        );
    }

    #[test]
    fn a_termination_is_a_dead_letter_only_when_weir_recorded_a_rejection_first() {
        let term = advisory(TERMINATED_TYPE, Some("not json"));
        assert_eq!(judge(&term, Some(&failure(true))), Ok(Reason::Terminated));
        assert!(judge(&term, None).is_err(), "somebody else's +TERM");
        assert!(
            judge(&term, Some(&failure(false))).is_err(),
            "a +TERM after a retry weir asked for is not weir's"
        );
        let mut late = term.clone();
        late.consumer_seq = Some(8);
        assert!(
            judge(&late, Some(&failure(true))).is_err(),
            "a +TERM for an earlier delivery than the recorded one is stale"
        );
    }

    #[test]
    fn weir_giving_up_after_its_last_attempt_is_a_max_deliveries_dead_letter() {
        let term = advisory(TERMINATED_TYPE, Some("weir gave up"));
        let gave_up = Failure {
            gave_up: true,
            ..failure(true)
        };
        assert_eq!(judge(&term, Some(&gave_up)), Ok(Reason::MaxDeliveries));
        let mut late = term.clone();
        late.consumer_seq = Some(8);
        assert!(
            judge(&late, Some(&gave_up)).is_err(),
            "a stale +TERM is not weir's"
        );
    }

    #[test]
    fn weirs_own_rejection_wins_even_when_its_reason_reads_like_the_servers() {
        let term = advisory(TERMINATED_TYPE, Some(SERVER_REMOVAL_REASONS[0]));
        assert_eq!(judge(&term, Some(&failure(true))), Ok(Reason::Terminated));
    }

    #[test]
    fn a_message_the_stream_removed_while_pending_was_deleted_before_processing() {
        for reason in SERVER_REMOVAL_REASONS {
            let removed = advisory(TERMINATED_TYPE, Some(reason));
            assert_eq!(judge(&removed, None), Ok(Reason::DeletedBeforeProcessing));
        }
    }

    #[test]
    fn advisories_about_other_consumers_are_not_weirs_business() {
        let mut other = advisory(MAX_DELIVER_TYPE, None);
        other.consumer = "billing-worker".to_owned();
        assert!(owner(&other).is_err());
        let mut unrelated = advisory("io.nats.jetstream.advisory.v1.nak", None);
        unrelated.consumer = "weir_acme_orders_p003".to_owned();
        assert!(owner(&unrelated).is_err());
        let owned = owner(&advisory(TERMINATED_TYPE, None)).map(|(id, p)| (id.key(), p));
        assert_eq!(owned, Ok(("acme.orders".to_owned(), 3)));
    }

    #[test]
    fn a_dead_letter_keeps_the_original_and_says_what_happened() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        let mut original_headers = HeaderMap::new();
        original_headers.insert("trace-id", "t-1");
        original_headers.insert("Nats-Msg-Id", "publisher-7");
        original_headers.insert("Nats-Expected-Stream", "ORDERS");
        let original = StreamMessage {
            subject: "3.orders.c1.created".into(),
            sequence: 42,
            headers: original_headers,
            payload: Bytes::from_static(b"{}"),
            time: time::OffsetDateTime::UNIX_EPOCH,
        };
        let advisory = advisory(MAX_DELIVER_TYPE, None);
        let (headers, payload) = dead_letter(
            &advisory,
            &id,
            Reason::MaxDeliveries,
            Some(&failure(false)),
            "v2",
            Ok(&original),
        );
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(&payload[..], b"{}");
        assert_eq!(get("trace-id").as_deref(), Some("t-1"));
        assert_eq!(
            get(headers::ORIGINAL_MSG_ID).as_deref(),
            Some("publisher-7")
        );
        assert_eq!(get("Nats-Msg-Id"), None);
        assert_eq!(get("Nats-Expected-Stream"), None);
        assert_eq!(get(headers::REASON).as_deref(), Some("max_deliveries"));
        assert_eq!(get(headers::TERM_REASON), None);
        assert_eq!(
            get(headers::LAST_ERROR).as_deref(),
            Some("trap: wasm `unreachable` instruction executed")
        );
        assert_eq!(get(headers::STREAM).as_deref(), Some("ORDERS"));
        assert_eq!(get(headers::STREAM_SEQ).as_deref(), Some("42"));
        assert_eq!(get(headers::SUBJECT).as_deref(), Some("orders.c1.created"));
        assert_eq!(get(headers::DELIVERIES).as_deref(), Some("5"));
        assert_eq!(get(headers::TENANT).as_deref(), Some("acme"));
        assert_eq!(get(headers::HANDLER).as_deref(), Some("orders"));
        assert_eq!(get(headers::HANDLER_VERSION).as_deref(), Some("v2"));
        assert_eq!(get(headers::ORIGINAL_MISSING), None);
        Ok(())
    }

    #[test]
    fn a_dead_letter_without_its_original_says_why_and_carries_no_payload() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        let advisory = advisory(TERMINATED_TYPE, Some("Unacknowledged message was deleted"));
        let why = "stream ORDERS removed it before it was handled".to_owned();
        let (headers, payload) = dead_letter(
            &advisory,
            &id,
            Reason::DeletedBeforeProcessing,
            None,
            "v1",
            Err(&why),
        );
        assert!(payload.is_empty());
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(headers::ORIGINAL_MISSING), Some(why));
        assert_eq!(
            get(headers::REASON).as_deref(),
            Some("deleted_before_processing")
        );
        assert_eq!(
            get(headers::TERM_REASON).as_deref(),
            Some("Unacknowledged message was deleted")
        );
        assert_eq!(
            get(headers::LAST_ERROR).as_deref(),
            Some("no failure recorded")
        );
        assert_eq!(get(headers::SUBJECT), None);
        Ok(())
    }
}
