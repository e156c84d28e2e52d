//! Telling the server what became of a message: a plain `+ACK` once its outputs are stored,
//! or a `+TERM` (a rejection, or weir giving up) after the failure record that explains it.
//! Acks are not confirmed one by one: a worker confirms the last one now and then (every tick
//! that keeps its window alive) and before it lets its partition go, which confirms every
//! earlier one (the server handles a consumer's acks in order).
//!
//! Before any `+TERM`, and before a retry, the worker records what went wrong in
//! `weir_failures` ([`crate::failures`]), with its attempt count; the dead-letter mover copies
//! the last record into the dead letter, and a node that takes the message over continues the
//! count.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};

use super::pin::Pin;
use super::window::Delivery;
use crate::clock::now_rfc3339;
use crate::deployment::Deployment;
use crate::failures::{self, Failure};
use crate::partition;

/// Longest reason sent with `+TERM`.
const MAX_TERM_REASON_BYTES: usize = 1024;

/// What became of a failure record.
pub(crate) enum Recorded {
    /// It is stored: the message may be retried or settled.
    Yes,
    /// This worker no longer holds the partition's pin, so the message may have been delivered
    /// to another: it is not this worker's to settle.
    Superseded,
    /// It could not be stored, for this reason.
    Failed(anyhow::Error),
}

/// A failure, as the worker records it.
pub(crate) struct Attempted<'a> {
    pub(crate) delivery: &'a Delivery,
    /// weir's attempt (1-based).
    pub(crate) attempt: u32,
    pub(crate) error: &'a str,
    /// Whether a `+TERM` follows.
    pub(crate) terminated: bool,
    /// Whether that `+TERM` is weir giving up after its last attempt.
    pub(crate) gave_up: bool,
}

/// Records why an attempt did not end in an ack, for the message's dead letter and for the
/// next holder's attempt count, unless this worker's pin has lapsed.
pub(crate) async fn record(
    failures: &kv::Store,
    deployment: &Deployment,
    node_id: &str,
    pin: &Pin,
    consumer: &PullConsumer,
    attempted: Attempted<'_>,
) -> Recorded {
    let Attempted {
        delivery,
        attempt,
        error,
        terminated,
        gave_up,
    } = attempted;
    let subject = partition::split_subject(&delivery.message.subject)
        .map_or(delivery.message.subject.as_str(), |(_, subject)| subject);
    let failure = Failure {
        version: deployment.spec.version.clone(),
        subject: subject.to_owned(),
        delivery: u64::from(attempt),
        consumer_seq: delivery.consumer_seq,
        error: failures::clip(error, failures::MAX_ERROR_BYTES),
        terminated,
        gave_up,
        node: node_id.to_owned(),
        at: now_rfc3339(),
    };
    let stream_seq = delivery.stream_seq;
    let record = async {
        if !pin.holds(consumer).await? {
            return Ok(false);
        }
        let spec = &deployment.spec;
        failures::record(failures, &deployment.id, &spec.stream, stream_seq, &failure).await?;
        anyhow::Ok(true)
    };
    // Within the ack wait, so the server does not redeliver while the record is written.
    let limit = deployment.spec.retry.ack_wait / 3;
    match tokio::time::timeout(limit, record).await {
        Ok(Ok(true)) => Recorded::Yes,
        Ok(Ok(false)) => {
            tracing::warn!(
                stream_seq,
                "this worker lost the partition's pin during the call; leaving the message to \
                 its new holder"
            );
            Recorded::Superseded
        }
        Ok(Err(error)) => Recorded::Failed(error),
        Err(_) => Recorded::Failed(anyhow::anyhow!(
            "recording the failure of stream sequence {stream_seq} took longer than {limit:?}"
        )),
    }
}

/// Acknowledges the message; the server's confirmation is not awaited.
pub(crate) async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    delivery
        .message
        .ack()
        .await
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("failed to ack stream sequence {}", delivery.stream_seq))
}

/// Acknowledges the message and waits for the server's confirmation, which also confirms every
/// ack sent before it on the partition.
pub(crate) async fn confirmed_ack(delivery: &Delivery) -> anyhow::Result<()> {
    delivery
        .message
        .double_ack()
        .await
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| {
            format!(
                "the ack of stream sequence {} was not confirmed",
                delivery.stream_seq
            )
        })
}

/// Tells the server the message is still being worked on, so its AckWait starts over.
pub(crate) async fn in_progress(delivery: &Delivery) {
    if let Err(error) = delivery
        .message
        .ack_with(jetstream::AckKind::Progress)
        .await
    {
        tracing::warn!(
            stream_seq = delivery.stream_seq,
            "failed to send in-progress: {error}"
        );
    }
}

/// Terminates the message with a reason; async-nats has no term-with-reason, so this sends the
/// protocol's `+TERM <reason>` itself, and waits for the server's confirmation.
pub(crate) async fn term(
    js: &jetstream::Context,
    delivery: &Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    let reply = delivery
        .message
        .reply
        .clone()
        .context("the message has no reply subject to terminate it on")?;
    let reason = failures::clip(reason, MAX_TERM_REASON_BYTES);
    js.client()
        .request(reply, format!("+TERM {reason}").into())
        .await
        .context("the server did not confirm the termination")?;
    Ok(())
}

/// How soon a message is tried again when its failure record could not be written: weir never
/// settles or retries a message without the record that says why.
pub(crate) const RECORD_RETRY: Duration = Duration::from_secs(1);
