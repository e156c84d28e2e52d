//! Dead letters: the messages weir gave up on, kept with everything needed to understand them
//! and to send them through again.
//!
//! ```text
//! worker: failure ──► weir_failures/<t>.<h>.<stream>.<seq> ──► -NAK / +TERM
//! server: MAX_DELIVERIES / MSG_TERMINATED advisory ──► WEIR_ADVISORIES (captured, work queue)
//! mover (every node, one shared durable consumer):
//!   advisory ──► judge ──► original from the input stream's leader + last failure
//!            ──► WEIR_DLQ weir.dlq.<t>.<h>.<stream>.<seq>  (first and only record there)
//! ```
//!
//! A message dies for one of three [`Reason`]s: the handler rejected it (`terminated`), its
//! deliveries ran out (`max_deliveries`), or the stream removed it while weir still had it
//! pending (`deleted_before_processing`; recorded without payload). Advisories about consumers
//! weir does not own, and terminations weir did not send, are ignored.
//!
//! **Exactly one record per dead message.** Each record has a subject of its own and is
//! published with `Nats-Expected-Last-Subject-Sequence: 0`, so the server stores it only if that
//! subject is empty: a duplicate advisory, a redelivered one, or two movers racing on one
//! message all end with the one record (and `Nats-Msg-Id` makes a retried publish a no-op too).
//! Replays append a marker on the record's subject ([`records`]), which therefore holds the
//! record first and its replays after it.

mod mover;
pub mod records;

use async_nats::jetstream;

pub use mover::{Moved, Mover};

use crate::control::dead_letters_subject;
pub use crate::control::{ADVISORIES_STREAM, DLQ_STREAM};

/// The headers weir adds to a dead letter; the original's headers are kept beside them.
pub mod headers {
    /// `terminated`, `max_deliveries` or `deleted_before_processing`.
    pub const REASON: &str = "Weir-Dlq-Reason";
    /// The reason given with the termination: the handler's, or the server's for a removal.
    pub const TERM_REASON: &str = "Weir-Term-Reason";
    /// The last failure weir saw for the message.
    pub const LAST_ERROR: &str = "Weir-Last-Error";
    /// The input stream.
    pub const STREAM: &str = "Weir-Stream";
    /// The message's sequence in the input stream.
    pub const STREAM_SEQ: &str = "Weir-Stream-Seq";
    /// The subject as published (without the partition token).
    pub const SUBJECT: &str = "Weir-Subject";
    /// Deliveries the message had, as the server counted them.
    pub const DELIVERIES: &str = "Weir-Deliveries";
    /// The deployment's tenant.
    pub const TENANT: &str = "Weir-Tenant";
    /// The deployment's handler.
    pub const HANDLER: &str = "Weir-Handler";
    /// The handler version (component digest) that last saw the message.
    pub const HANDLER_VERSION: &str = "Weir-Handler-Version";
    /// Present when the original could not be copied, saying why.
    pub const ORIGINAL_MISSING: &str = "Weir-Original-Missing";
    /// The original's `Nats-Msg-Id`, which the record cannot carry under its own name.
    pub const ORIGINAL_MSG_ID: &str = "Weir-Original-Msg-Id";
    /// On a replayed message: the id of the dead letter it came from.
    pub const REPLAYED_FROM: &str = "Weir-Replayed-From";
    /// On a replay marker: the id of the record it marks.
    pub const REPLAY_OF: &str = "Weir-Replay-Of";
    /// On a replay marker: the subject the message was published to.
    pub const REPLAYED_TO: &str = "Weir-Replayed-To";
    /// On a replay marker: where the replayed message was stored, `<stream>:<seq>`.
    pub const REPLAYED_AS: &str = "Weir-Replayed-As";
}

/// Why a message became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The handler rejected it (weir sent `+TERM`).
    Terminated,
    /// Every allowed delivery failed or asked for a retry.
    MaxDeliveries,
    /// The stream removed it (limits, or a delete) while weir had it pending.
    DeletedBeforeProcessing,
}

impl Reason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminated => "terminated",
            Self::MaxDeliveries => "max_deliveries",
            Self::DeletedBeforeProcessing => "deleted_before_processing",
        }
    }

    /// Parses a header value.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Terminated,
            Self::MaxDeliveries,
            Self::DeletedBeforeProcessing,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts the dead letters held for each deployment (of every tenant, or of `tenant`), keyed
/// `<tenant>.<handler>`.
pub async fn counts(
    js: &jetstream::Context,
    tenant: Option<&str>,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    // No dead-letter stream yet, no dead letters.
    let Some(stream) = crate::control::existing_stream(js, DLQ_STREAM).await? else {
        return Ok(counts);
    };
    for subject in
        crate::control::stream_subjects(&stream, dead_letters_subject(tenant, None)).await?
    {
        let mut tokens = subject.split('.').skip(2);
        if let (Some(tenant), Some(handler)) = (tokens.next(), tokens.next()) {
            *counts.entry(format!("{tenant}.{handler}")).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_from_their_header_values() {
        for reason in [
            Reason::Terminated,
            Reason::MaxDeliveries,
            Reason::DeletedBeforeProcessing,
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("other"), None);
    }
}
