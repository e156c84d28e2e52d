//! Storing a message's outputs: every output published with its deterministic `Nats-Msg-Id`,
//! then every publish acknowledgement awaited. A message's outputs are stored only once the
//! previous message's are, so the output stream keeps input order even across a retried
//! publish; the next message's call runs meanwhile.

use std::error::Error as _;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::{GetStreamByNameErrorKind, PublishErrorKind},
};

use super::lease::Lease;
use crate::deployment::SharedDeployment;
use crate::host::{Header, Output};

/// Why a message's outputs are not stored.
#[derive(Debug)]
pub(crate) enum NotStored {
    /// NATS cannot take them now (a server restarting, a stream leader moving): no fault of
    /// the handler's, so they are tried again without spending an attempt.
    ForNow(anyhow::Error),
    /// They never will be, for this reason; the call fails, and the message is retried.
    Ever(String),
    /// The message's state changes were refused: someone else has written the partition's
    /// state since this worker read it. The worker takes the partition's messages back.
    Fenced(anyhow::Error),
    /// The outputs are stored, but NATS cannot take the state changes now: tried again, like
    /// [`NotStored::ForNow`].
    Uncommitted(anyhow::Error),
    /// Nothing more was sent: the worker has not heard from the server for too long to be sure
    /// the partition is still its own, and asks first (see [`super::lease`]).
    Unconfirmed,
}

/// Publishes every output of the message at `stream_seq`, computed from the partition's state
/// at `state_revision` if the handler keeps any, and waits until the server has stored each one.
/// Each output is sent only while `lease` is fresh.
pub(crate) async fn store(
    js: jetstream::Context,
    deployment: SharedDeployment,
    (stream_seq, state_revision): (u64, Option<u64>),
    outputs: Arc<[Output]>,
    lease: Arc<Lease>,
) -> Result<(), NotStored> {
    let stream = &deployment.spec.stream;
    let msg_id = |n| {
        deployment
            .id
            .output_msg_id(stream, stream_seq, n, state_revision)
    };
    let mut acks = Vec::with_capacity(outputs.len());
    for (n, output) in outputs.iter().enumerate() {
        let mut headers = HeaderMap::new();
        for Header { name, value } in &output.headers {
            // `append` panics on a name or value that is not valid in NATS; the host refused
            // every such header when the handler published it (`outputs::check_header`).
            headers.append(name.as_str(), value.as_str());
        }
        headers.insert("Nats-Msg-Id", msg_id(n));
        if !lease.fresh() {
            return Err(NotStored::Unconfirmed);
        }
        let at = lease.now();
        let sent = js
            .publish_with_headers(output.subject.clone(), headers, output.payload.clone())
            .await;
        match sent {
            Ok(ack) => acks.push((n, at, ack)),
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(NotStored::Ever(format!(
                    "output {n} to {} is larger than the server takes: {error}",
                    output.subject
                )));
            }
            Err(error) => {
                return Err(NotStored::ForNow(anyhow::Error::new(error).context(
                    format!("failed to publish output {n} to {}", output.subject),
                )));
            }
        }
    }
    for (n, at, ack) in acks {
        let output = &outputs[n];
        let stored = ack.await;
        if stored.is_ok() {
            lease.heard(at);
        }
        match stored {
            Ok(ack) if ack.duplicate => {
                check_duplicate(&js, &ack, output, n, &msg_id(n)).await?;
            }
            Ok(_) => {}
            Err(error) => return Err(not_stored(&js, error, output, n).await),
        }
    }
    Ok(())
}

/// What a refused publish acknowledgement means for output `n`.
async fn not_stored(
    js: &jetstream::Context,
    error: jetstream::context::PublishError,
    output: &Output,
    n: usize,
) -> NotStored {
    let subject = &output.subject;
    let code = error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    if code == Some(jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) {
        return NotStored::Ever(format!(
            "output {n} to {subject} is larger than the stream that stores it allows"
        ));
    }
    if error.kind() == PublishErrorKind::StreamNotFound {
        // Nobody answered: no stream stores the subject, or its leader is being elected.
        match js.stream_by_subject(subject.clone()).await {
            Err(lookup) if lookup.kind() == GetStreamByNameErrorKind::NotFound => {
                return NotStored::Ever(format!(
                    "output {n} to {subject} cannot be stored: no stream stores that subject"
                ));
            }
            _ => {}
        }
    }
    NotStored::ForNow(
        anyhow::Error::new(error).context(format!("output {n} to {subject} was not stored")),
    )
}

/// A publish the server took for a duplicate: the same output stored before (a redelivered
/// message computed again), or another message that happens to carry the same id, which
/// would be lost if taken for success (an input stream deleted and created again within the
/// output stream's duplicate window restarts its sequences, and with them weir's ids).
async fn check_duplicate(
    js: &jetstream::Context,
    ack: &jetstream::publish::PublishAck,
    output: &Output,
    n: usize,
    msg_id: &str,
) -> Result<(), NotStored> {
    let stored = match js.get_stream_no_info(&ack.stream).await {
        Ok(stream) => stream
            .get_raw_message(ack.sequence)
            .await
            .map_err(anyhow::Error::new),
        Err(error) => Err(anyhow::Error::new(error)),
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Gone since (its limits, a purge), or not readable with the tenant's rights:
            // taken for the duplicate it most likely is, but not silently.
            tracing::warn!(
                "output {n} to {} was taken for a duplicate of message {} in stream {}, which \
                 could not be read to compare ({error:#}); assuming it is this output",
                output.subject,
                ack.sequence,
                ack.stream
            );
            return Ok(());
        }
    };
    if stored.subject.as_str() == output.subject && stored.payload == output.payload {
        return Ok(());
    }
    Err(NotStored::Ever(format!(
        "output {n} to {} was taken for a duplicate of message {} in stream {}, which is \
         another message with the same id {msg_id} (was the input stream created again within \
         the output stream's duplicate window?)",
        output.subject, ack.sequence, ack.stream
    )))
}
