//! Exclusive delivery, and letting go of it. Every partition consumer belongs to the priority
//! group `weir` with policy `pinned_client`: of all the pull streams on it, the server delivers
//! to one, the pinned one, whose id comes with each message as `Nats-Pin-Id`.
//!
//! - **Following the pin.** A worker remembers its pin and watches the consumer's pin
//!   advisories: the moment another client is pinned, it stops taking messages from its
//!   window and stands by.
//! - **Taking over.** The messages a previous holder still had in hand stay pending to it, and
//!   the server goes on with later ones for the new holder. A worker newly pinned whose first
//!   delivery is not the one right after the consumer's ack floor resets the consumer to that
//!   floor, so that every message above it comes to the worker again, in order.
//! - **Reclaiming.** A worker on standby that finds the consumer unpinned with messages pending
//!   (twice in a row: a live holder keeps pulling, and so keeps its pin) resets it the same way,
//!   so the messages a dead holder had in hand come back now instead of after AckWait. It looks
//!   when it subscribes and when the pin is released or runs out (an advisory says so), and
//!   otherwise only now and then, so that an idle partition costs next to nothing.
//! - **Letting go.** A worker that hands its partition off confirms its acknowledgements, resets
//!   the consumer to its ack floor so that the messages it still held go to the next holder,
//!   and unpins, so that the next owner, waiting on standby, is pinned at once.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use serde::Deserialize;

use crate::control::PRIORITY_GROUP;

/// What a worker knows of its pin.
#[derive(Debug, Default)]
pub(crate) struct Pin {
    /// The pin this worker's pull stream holds, from the last message it received.
    current: Option<String>,
    /// Whether the last reclaim check found the consumer unpinned with messages pending.
    seen_abandoned: bool,
}

/// What a message's pin says about this worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pinned {
    /// Pinned as before.
    Still,
    /// Newly pinned: messages a previous holder had may still be pending elsewhere.
    Newly,
}

impl Pin {
    /// The pin held, if any.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Forgets the pin: a new subscription starts on standby.
    pub(crate) fn forget(&mut self) {
        self.current = None;
    }

    /// Remembers the pin a message was delivered under.
    pub(crate) fn track(&mut self, pin: Option<&str>) -> Pinned {
        if pin == self.current.as_deref() {
            return Pinned::Still;
        }
        match (&self.current, pin) {
            (None, Some(pin)) => tracing::debug!(pin, "pinned"),
            (Some(old), Some(new)) => {
                tracing::info!(old, new, "pinned again after the pin expired")
            }
            (_, None) => {
                tracing::warn!("message without Nats-Pin-Id: the consumer is not pinned_client")
            }
        }
        self.current = pin.map(str::to_owned);
        Pinned::Newly
    }

    /// Reads a pin advisory: returns true, and forgets the pin, when another client now holds
    /// it or nobody does.
    pub(crate) fn lost(&mut self, advisory: &async_nats::Message) -> bool {
        #[derive(Deserialize)]
        struct PinAdvisory {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            pinned_id: Option<String>,
            #[serde(default)]
            reason: Option<String>,
        }
        let Ok(event) = serde_json::from_slice::<PinAdvisory>(&advisory.payload) else {
            return false;
        };
        let Some(mine) = self.current.clone() else {
            return false;
        };
        let lost = match event.kind.as_str() {
            "io.nats.jetstream.advisory.v1.consumer_group_pinned" => {
                event.pinned_id.as_deref() != Some(mine.as_str())
            }
            "io.nats.jetstream.advisory.v1.consumer_group_unpinned" => true,
            _ => false,
        };
        if lost {
            tracing::info!(
                pin = mine,
                now = event.pinned_id.as_deref().unwrap_or("nobody"),
                reason = event.reason.as_deref().unwrap_or(""),
                "no longer pinned; on standby"
            );
            self.current = None;
        }
        lost
    }

    /// Whether `consumer` still has this worker's pin.
    pub(crate) async fn holds(&self, consumer: &PullConsumer) -> anyhow::Result<bool> {
        let Some(mine) = self.current.as_deref() else {
            return Ok(false);
        };
        let mut consumer = consumer.clone();
        let info = consumer
            .info()
            .await
            .context("failed to read the consumer")?;
        Ok(info
            .priority_groups
            .iter()
            .any(|group| group.pinned_client_id.as_deref() == Some(mine)))
    }

    /// Looks for messages abandoned by a holder that died (see the module's "Reclaiming").
    pub(crate) async fn reclaim(
        &mut self,
        js: &jetstream::Context,
        consumer: &PullConsumer,
        stream: &str,
    ) -> Reclaim {
        let mut consumer = consumer.clone();
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(error) => {
                // A server too busy to answer is not asked again at once: abandoned messages
                // come back after AckWait anyway.
                tracing::warn!("failed to read consumer: {error}; looking again later");
                return Reclaim::Nothing;
            }
        };
        let pinned = info
            .priority_groups
            .iter()
            .any(|group| group.pinned_client_id.is_some());
        let abandoned = !pinned && info.num_ack_pending > 0;
        if !abandoned {
            self.seen_abandoned = false;
            return Reclaim::Nothing;
        }
        if !std::mem::replace(&mut self.seen_abandoned, true) {
            return Reclaim::Suspect;
        }
        self.seen_abandoned = false;
        tracing::info!(
            pending = info.num_ack_pending,
            "the partition's last holder is gone with messages in hand; redelivering them now"
        );
        if reset_to_ack_floor(js, stream, &info.name).await {
            Reclaim::Reset
        } else {
            Reclaim::Suspect
        }
    }
}

/// What a reclaim check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Nothing abandoned, or nothing known.
    Nothing,
    /// Perhaps abandoned: look again soon.
    Suspect,
    /// Abandoned, and the consumer reset: the messages come again.
    Reset,
}

/// Whether an advisory says the consumer's pin was released or ran out: a holder that stopped
/// pulling may have left messages in hand.
pub(crate) fn unpinned(advisory: &async_nats::Message) -> bool {
    #[derive(Deserialize)]
    struct Advisory {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Advisory>(&advisory.payload)
        .is_ok_and(|event| event.kind == "io.nats.jetstream.advisory.v1.consumer_group_unpinned")
}

/// Whether, newly pinned with `first` as the first delivery it received, this worker must
/// reset the consumer: an earlier delivery is not acknowledged, so a previous holder may still
/// have it (see "Taking over"). The ack floor names the last delivery before which every one is
/// acknowledged, and only moves forward, so the answer does not depend on timing.
pub(crate) async fn pending_elsewhere(consumer: &PullConsumer, first_consumer_seq: u64) -> bool {
    if first_consumer_seq <= 1 {
        // The consumer's first delivery ever: there is no earlier one.
        return false;
    }
    let mut consumer = consumer.clone();
    match consumer.info().await {
        Ok(info) => info.ack_floor.consumer_sequence + 1 < first_consumer_seq,
        Err(error) => {
            // Resetting when in doubt costs a redelivery of what is held; not resetting could
            // hand a later message to the handler before an earlier one.
            tracing::warn!("failed to read consumer: {error}; resetting it to be sure");
            true
        }
    }
}

/// Resets the consumer to its ack floor: every message above it is delivered again, in order,
/// to the pinned client. Returns whether it did.
pub(crate) async fn reset_to_ack_floor(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> bool {
    let reset = match js.get_stream_no_info(stream).await {
        Ok(stream) => stream
            .reset_consumer(consumer, None)
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error.into()),
    };
    match reset {
        Ok(reset) => {
            tracing::info!(
                ack_floor = reset.reset_seq,
                "reset the consumer to its ack floor"
            );
            true
        }
        Err(error) => {
            tracing::warn!("failed to reset consumer {consumer}: {error:#}");
            false
        }
    }
}

/// How long a new owner waits for a node that left to say its connection is up.
const GONE_PATIENCE: Duration = Duration::from_secs(1);

/// Releases the pin a crashed node still holds, so that this worker, pulling on standby, is
/// pinned at once rather than when the pin times out, and has the messages the crashed node
/// held delivered again first. Only the pin `takeover` names, and only
/// once the server says that node's connection is gone: a node that left the membership but
/// still runs (a busy one whose renewal was late) keeps its pin, and its partition.
pub(crate) async fn take_over(
    js: &jetstream::Context,
    control: &async_nats::Client,
    consumer: &PullConsumer,
    stream: &str,
    name: &str,
    takeover: &super::Takeover,
) {
    let Ok(info) = consumer.get_info().await else {
        return;
    };
    let pinned = info
        .priority_groups
        .first()
        .and_then(|group| group.pinned_client_id.clone());
    if pinned.as_deref() != Some(takeover.pin.as_str()) {
        return;
    }
    let node = &takeover.node;
    if !crate::ownership::membership::connection_gone(control, node, GONE_PATIENCE).await {
        tracing::info!(
            "{node} left without handing the partition off, but may still run: waiting for its pin to time out"
        );
        return;
    }
    // Another may have been pinned while the node was asked about.
    let still = consumer.get_info().await.ok().and_then(|info| {
        info.priority_groups
            .first()
            .and_then(|group| group.pinned_client_id.clone())
    });
    if still.as_deref() != Some(takeover.pin.as_str()) {
        return;
    }
    tracing::info!(
        pending = info.num_ack_pending,
        "{node}, which held the partition, is gone: releasing its pin and delivering what it \
         had in hand again, in order"
    );
    // What it had in hand may fill the window, and nothing would be delivered (and pinned)
    // before its AckWait ran out.
    if info.num_ack_pending > 0 {
        reset_to_ack_floor(js, stream, name).await;
    }
    unpin(js, stream, name).await;
}

/// Releases the pin, so a standby puller is pinned at once. Returns whether it did.
pub(crate) async fn unpin(js: &jetstream::Context, stream: &str, consumer: &str) -> bool {
    let unpinned = match js.get_stream_no_info(stream).await {
        Ok(stream) => stream
            .unpin_consumer(consumer, PRIORITY_GROUP)
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error.into()),
    };
    match unpinned {
        Ok(()) => {
            tracing::debug!("unpinned");
            true
        }
        Err(error) => {
            // The pin times out by itself.
            tracing::warn!(
                "failed to unpin consumer {consumer}: {error:#}; the next owner waits for the \
                 pin timeout"
            );
            false
        }
    }
}
