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

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::control::DeploymentId;

pub use mover::{Moved, Mover};

pub use crate::control::{ADVISORIES_STREAM, DLQ_STREAM};
/// The durable consumer every node's mover pulls advisories from.
pub const MOVER_CONSUMER: &str = "weir_dlq_mover";
/// How long a captured advisory waits for a mover before the stream drops it.
pub const ADVISORY_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The subjects of the advisories the mover acts on.
pub const ADVISORY_SUBJECTS: [&str; 2] = [
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>",
];

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

/// The subject of the dead letter of `stream_seq`: `weir.dlq.<tenant>.<handler>.<stream>.<seq>`.
pub fn record_subject(id: &DeploymentId, stream: &str, stream_seq: u64) -> String {
    format!(
        "weir.dlq.{}.{}.{stream}.{stream_seq}",
        id.tenant, id.handler
    )
}

/// The subjects of the dead letters of one tenant, one handler, or all.
pub fn filter_subject(tenant: Option<&str>, handler: Option<&str>) -> String {
    format!(
        "weir.dlq.{}.{}.>",
        tenant.unwrap_or("*"),
        handler.unwrap_or("*")
    )
}

/// The `Nats-Msg-Id` of a dead letter.
pub fn record_msg_id(id: &DeploymentId, stream: &str, stream_seq: u64) -> String {
    format!("dlq:{}.{}:{stream}:{stream_seq}", id.tenant, id.handler)
}

/// Creates the advisory capture stream and the dead-letter stream if they do not exist.
pub(crate) async fn ensure_streams(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    ensure_stream(
        js,
        stream::Config {
            name: ADVISORIES_STREAM.to_owned(),
            description: Some(
                "weir: dead-letter advisories waiting for the mover (a work queue)".to_owned(),
            ),
            subjects: ADVISORY_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            retention: stream::RetentionPolicy::WorkQueue,
            // Bounded, so advisories nobody moves (no node running for a week) cannot pile up.
            max_age: ADVISORY_AGE,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: DLQ_STREAM.to_owned(),
            description: Some("weir: dead letters, one subject each".to_owned()),
            subjects: vec!["weir.dlq.>".to_owned()],
            retention: stream::RetentionPolicy::Limits,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// Creates the stream `config` describes unless it exists (see [`ensure_streams`]).
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<()> {
    if js.get_stream(&config.name).await.is_ok() {
        return Ok(());
    }
    let name = config.name.clone();
    let subjects = config.subjects.clone();
    let error = match js.create_stream(config).await {
        Ok(_) => return Ok(()),
        // Another node or command made it first.
        Err(_) if js.get_stream(&name).await.is_ok() => return Ok(()),
        Err(error) => error,
    };
    for subject in &subjects {
        if let Ok(other) = js.stream_by_subject(subject.as_str()).await {
            anyhow::bail!(
                "cannot create stream {name}: stream {other} already stores subjects that \
                 overlap {subject}, and weir needs to capture them itself (remove stream \
                 {other}, or change its subjects)"
            );
        }
    }
    Err(error)
        .with_context(|| format!("failed to create stream {name} for {}", subjects.join(", ")))
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
    for subject in crate::control::stream_subjects(&stream, filter_subject(tenant, None)).await? {
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
    fn each_dead_message_has_a_subject_and_a_message_id_of_its_own() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        assert_eq!(
            record_subject(&id, "ORDERS", 42),
            "weir.dlq.acme.orders.ORDERS.42"
        );
        assert_eq!(
            record_msg_id(&id, "ORDERS", 42),
            "dlq:acme.orders:ORDERS:42"
        );
        assert_eq!(filter_subject(Some("acme"), None), "weir.dlq.acme.*.>");
        assert_eq!(filter_subject(None, None), "weir.dlq.*.*.>");
        Ok(())
    }

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
