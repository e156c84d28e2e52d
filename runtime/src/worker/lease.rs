//! Knowing the partition is still this worker's before storing anything for it.
//!
//! The server delivers a partition's messages only to the pinned pull stream, but it does not
//! ask who stores outputs, commits state or acks. A worker that was stopped for a while (a
//! `SIGSTOP`, a stall, a virtual machine moved, a laptop closed) or cut off from NATS wakes with
//! messages in hand whose partition may have moved on to another worker while it was away:
//! outputs it stored then would come after the new holder's, and once the output stream's
//! duplicate window is over they would not be dropped as duplicates. Kafka calls such a worker a
//! zombie.
//!
//! So each worker keeps a lease: when it last heard from the server, and over which connection.
//! Hearing means a request the server answered, dated when it was *sent*: an answer read after
//! a pause may have waited in the socket through all of it. The clock is one that goes on while
//! the process is stopped or the machine sleeps (`CLOCK_BOOTTIME`). Before every output, state
//! commit, ack, termination and in-progress it sends, the worker checks its lease; once it has
//! not heard from the server for half the pin timeout, or its connection was made again since,
//! or is down (the client would keep what it is given until it reconnects), it asks the server
//! whose the consumer's pin is. Pin ids are never reused, so finding its own
//! means nobody else received the partition meanwhile; finding another, or no answer, it lets
//! go of everything it holds and subscribes again, and the partition's messages come back from
//! the ack floor to whoever holds the pin then.
//!
//! A busy worker hears from the server with every publish acknowledgement and commit, so the
//! check costs it a read of the clock. What a check cannot cover is a pause that begins between
//! the check and the moment the bytes leave the process (a few microseconds, more on a starved
//! machine), or bytes held in the network through a cut: those reach the server late, and are
//! dropped as duplicates only within the output stream's duplicate window (see the README's
//! "Reliability").

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::Statistics;
use async_nats::connection::State;
use async_nats::jetstream::consumer::PullConsumer;

use super::pin::Pin;

/// A moment a request was sent: the time on [`since_boot`], and the connection it went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    at: Duration,
    connection: u64,
}

/// When the worker last heard from the server (see the module).
pub(crate) struct Lease {
    heard: Mutex<Option<Sent>>,
    /// The connection's counters, of which the number of connections made.
    connection: Arc<Statistics>,
    /// Whether the client is connected now: while it is not, what it is given to send waits in
    /// its buffer for the next connection, however long that takes.
    connected: Box<dyn Fn() -> bool + Send + Sync>,
    /// How long after it last heard the worker goes on without asking.
    valid_for: Duration,
}

/// What the server said about the pin.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// The consumer's pin is this worker's, as it has been since the worker got it.
    Kept,
    /// Another holds it, nobody does, or the server could not say (why).
    Unsure(String),
}

impl Lease {
    /// A lease that has heard nothing yet, over `client`'s connection, for a consumer whose pin
    /// lasts `pin_timeout` after its holder's last pull. Half of it leaves the pull that renews
    /// the pin (one a second before it runs out, see [`super::consumer`]) room to be late.
    pub(crate) fn new(client: &async_nats::Client, pin_timeout: Duration) -> Arc<Self> {
        let client = client.clone();
        Arc::new(Self {
            heard: Mutex::new(None),
            connection: client.statistics(),
            connected: Box::new(move || client.connection_state() == State::Connected),
            valid_for: pin_timeout / 2,
        })
    }

    /// Now, to date a request about to be sent.
    pub(crate) fn now(&self) -> Sent {
        Sent {
            at: since_boot(),
            connection: self.connections(),
        }
    }

    /// The server answered a request sent at `sent`.
    pub(crate) fn heard(&self, sent: Sent) {
        let mut heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        if heard.is_none_or(|heard| sent.at > heard.at) {
            *heard = Some(sent);
        }
    }

    /// Whether the worker may send without asking first.
    pub(crate) fn fresh(&self) -> bool {
        let heard = *self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        heard.is_some_and(|heard| {
            heard.connection == self.connections()
                && since_boot().saturating_sub(heard.at) < self.valid_for
                && (self.connected)()
        })
    }

    /// Asks the server whether `pin` is still the consumer's; renews the lease if it is.
    pub(crate) async fn confirm(&self, pin: &Pin, consumer: &PullConsumer) -> Ownership {
        let sent = self.now();
        match pin.holds(consumer).await {
            Ok(true) => {
                self.heard(sent);
                Ownership::Kept
            }
            Ok(false) => Ownership::Unsure(match pin.current() {
                Some(_) => "the consumer's pin is no longer this worker's".to_owned(),
                None => "this worker holds no pin".to_owned(),
            }),
            Err(error) => Ownership::Unsure(format!("{error:#}")),
        }
    }

    fn connections(&self) -> u64 {
        self.connection
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Time since the machine booted, counting time it slept and time this process was stopped.
fn since_boot() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let clock = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let clock = rustix::time::ClockId::Monotonic;
    let now = rustix::time::clock_gettime(clock);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(valid_for: Duration) -> Lease {
        Lease {
            heard: Mutex::new(None),
            connection: Arc::new(Statistics::default()),
            connected: Box::new(|| true),
            valid_for,
        }
    }

    #[test]
    fn a_lease_that_heard_nothing_is_not_fresh() {
        assert!(!lease(Duration::from_secs(60)).fresh());
    }

    /// A request sent `ago`, over the lease's connection.
    fn sent(lease: &Lease, ago: Duration) -> Sent {
        let now = lease.now();
        Sent {
            at: now.at.saturating_sub(ago),
            ..now
        }
    }

    #[test]
    fn a_lease_is_fresh_until_it_has_not_heard_for_its_span() {
        let lease = lease(Duration::from_secs(60));
        lease.heard(sent(&lease, Duration::from_secs(59)));
        assert!(lease.fresh());
        let lease = self::lease(Duration::from_secs(60));
        lease.heard(sent(&lease, Duration::from_secs(61)));
        assert!(
            !lease.fresh(),
            "a request sent 61 s ago, with 60 s to go on"
        );
    }

    #[test]
    fn an_answer_to_an_older_request_does_not_take_the_lease_back() {
        let lease = lease(Duration::from_secs(60));
        lease.heard(sent(&lease, Duration::from_secs(1)));
        lease.heard(sent(&lease, Duration::from_secs(120)));
        assert!(lease.fresh());
    }

    #[test]
    fn a_new_connection_ends_the_lease() {
        let lease = lease(Duration::from_secs(60));
        lease.heard(lease.now());
        lease
            .connection
            .connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(!lease.fresh(), "heard over the connection before");
        lease.heard(lease.now());
        assert!(lease.fresh());
    }
}
