//! Counters a node keeps about the messages it handles, for `weir demo`, `weir bench` and the
//! logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Totals over every partition worker of a node. Workers only add; readers take snapshots.
#[derive(Debug, Default)]
pub struct Counters {
    /// Microseconds from each acked message's publication (its stream timestamp) to its ack.
    latency: Latency,
    acked: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    outputs: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Messages acked after the handler answered `ack` and its outputs were stored.
    pub acked: u64,
    /// Deliveries the handler answered with `retry`.
    pub retried: u64,
    /// Messages the handler rejected (terminated).
    pub rejected: u64,
    /// Calls that trapped, overran their deadline or memory, or whose outputs could not be
    /// stored; each is retried.
    pub failed: u64,
    /// Output messages stored.
    pub outputs: u64,
}

/// Counters shared by every worker of a node.
pub type SharedCounters = Arc<Counters>;

impl Counters {
    /// Counts an acked message published at `published_at` (Unix nanoseconds) that produced
    /// `outputs`.
    pub(crate) fn acked(&self, outputs: usize, published_at: u64) {
        self.acked_after(outputs, since_published(published_at));
    }

    /// Counts an acked message, `latency` after its publication, that produced `outputs`.
    pub(crate) fn acked_after(&self, outputs: usize, latency: std::time::Duration) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.outputs.fetch_add(outputs as u64, Ordering::Relaxed);
        self.latency.record(latency);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The latencies from publication to ack recorded since the last reset, in microseconds.
    pub fn latencies(&self) -> Histogram<u64> {
        self.latency.lock().clone()
    }

    /// Forgets the latencies recorded so far.
    pub fn reset_latencies(&self) {
        self.latency.lock().reset();
    }

    /// The counts now.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            acked: self.acked.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            outputs: self.outputs.load(Ordering::Relaxed),
        }
    }
}

/// The time from `published_at` (Unix nanoseconds, a stream timestamp) to now.
pub(crate) fn since_published(published_at: u64) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    std::time::Duration::from_nanos(now.saturating_sub(published_at))
}

/// A histogram of microseconds, up to an hour, at three significant figures.
#[derive(Debug)]
struct Latency(Mutex<Histogram<u64>>);

/// The longest latency recorded as itself; longer ones count as this.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

impl Default for Latency {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Self(Mutex::new(histogram))
    }
}

impl Latency {
    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, latency: std::time::Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.lock()
            .saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_runs_from_publication_to_ack_and_resets() {
        let counters = Counters::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        counters.acked(2, now - 5_000_000_000);
        counters.acked(0, now - 1_000_000);
        let latencies = counters.latencies();
        assert_eq!(latencies.len(), 2);
        assert!(latencies.max() >= 5_000_000, "{}", latencies.max());
        assert!(latencies.min() >= 1_000 && latencies.min() < 5_000_000);
        assert_eq!(counters.snapshot().outputs, 2);
        counters.reset_latencies();
        assert_eq!(counters.latencies().len(), 0);
        assert_eq!(counters.snapshot().acked, 2);
    }
}
