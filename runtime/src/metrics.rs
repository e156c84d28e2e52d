//! Counters a node keeps about the messages it handles, for `weir demo` and the logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Totals over every partition worker of a node. Workers only add; readers take snapshots.
#[derive(Debug, Default)]
pub struct Counters {
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
    pub(crate) fn acked(&self, outputs: usize) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.outputs.fetch_add(outputs as u64, Ordering::Relaxed);
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
