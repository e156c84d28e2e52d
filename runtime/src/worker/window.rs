//! The partition's window: the messages the server has delivered to this worker and the
//! handler has not taken yet, in stream order. The consumer's MaxAckPending bounds it; a
//! message delivered again (after a reset, or an AckWait that ran out) replaces the copy held.

use std::collections::BTreeMap;

use async_nats::jetstream;

/// One delivery of one message, with what the worker reads of its ack metadata.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The message, whose reply subject acknowledges this delivery.
    pub(crate) message: jetstream::Message,
    /// Its sequence in the stream: the partition's order.
    pub(crate) stream_seq: u64,
    /// This delivery's sequence in the consumer, as the server's advisories name it.
    pub(crate) consumer_seq: u64,
    /// How many times the server has delivered the message, this time included.
    pub(crate) delivered: u64,
    /// When the stream stored the message, Unix nanoseconds.
    pub(crate) published_at: u64,
    /// Attempts this worker made at the message before it went back into the window.
    pub(crate) attempted: u32,
    /// Messages of the consumer the server had yet to deliver when it sent this one.
    pub(crate) pending: u64,
}

impl Delivery {
    /// Reads the ack metadata of a delivered message.
    pub(crate) fn new(message: jetstream::Message) -> Result<Self, String> {
        let info = message.info().map_err(|error| {
            format!(
                "the delivery on {} has unreadable ack metadata: {error}",
                message.subject
            )
        })?;
        let (stream_seq, consumer_seq) = (info.stream_sequence, info.consumer_sequence);
        let delivered = u64::try_from(info.delivered).unwrap_or(0);
        let published_at = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
        let pending = info.pending;
        Ok(Self {
            message,
            stream_seq,
            consumer_seq,
            delivered,
            published_at,
            attempted: 0,
            pending,
        })
    }

    /// The pin the server delivered it under, if the consumer is `pinned_client`.
    pub(crate) fn pin(&self) -> Option<&str> {
        self.message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(PIN_ID_HEADER))
            .map(|value| value.as_str())
    }
}

/// The header carrying the pinned client's id on every delivered message.
const PIN_ID_HEADER: &str = "Nats-Pin-Id";

/// Delivered messages not yet handed to the handler, by stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Window {
    held: BTreeMap<u64, Delivery>,
}

impl Window {
    /// Holds `delivery`, in place of an earlier delivery of the same message.
    pub(crate) fn hold(&mut self, delivery: Delivery) {
        self.held.insert(delivery.stream_seq, delivery);
    }

    /// The earliest message held, taken out of the window.
    pub(crate) fn take_first(&mut self) -> Option<Delivery> {
        self.held.pop_first().map(|(_, delivery)| delivery)
    }

    /// Puts back messages taken out, e.g. computed ahead of a message whose outputs could not
    /// be stored; a copy delivered since is kept instead.
    pub(crate) fn put_back(&mut self, delivery: Delivery) {
        self.held.entry(delivery.stream_seq).or_insert(delivery);
    }

    /// Drops one message: the server terminated it.
    pub(crate) fn remove(&mut self, stream_seq: u64) {
        self.held.remove(&stream_seq);
    }

    /// Drops every message held: a reset of the consumer delivers them again.
    pub(crate) fn clear(&mut self) {
        self.held.clear();
    }

    /// Every message held, in stream order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.held.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}
