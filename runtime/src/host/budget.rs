//! What every instance of one tenant on a node shares: a memory quota over all of them, a rate
//! of log lines, a CPU time per message, and a share of the node's guest CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::fairness::{Claim, CpuScheduler, CpuUsage};

/// The quotas a [`TenantBudget`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetQuota {
    /// Linear memory of all the tenant's instances on the node together.
    pub max_memory_total_bytes: u64,
    /// CPU time one `init` or `handle` call may use.
    pub cpu_time_per_message: Duration,
    /// Log lines (the `log` import, stdout and stderr) per second over all the tenant's
    /// instances, with a burst of the same size.
    pub log_lines_per_second: u32,
    /// The tenant's share of the node's guest CPU against the other tenants' when all want
    /// more than they get: a tenant of weight 2 gets twice what one of weight 1 does.
    pub cpu_weight: u32,
}

/// One tenant's share of a node; see the module documentation.
#[derive(Debug)]
pub struct TenantBudget {
    pub(crate) tenant: Arc<str>,
    pub(crate) quota: BudgetQuota,
    pub(crate) memory: Arc<MemoryPool>,
    /// Raised when a call was refused memory because the tenant's instances hold all of its
    /// quota: every partition of the tenant gives its warm instance back once it has no call
    /// in flight, so that memory held by idle instances goes where it is needed.
    memory_wanted: watch::Sender<()>,
    pub(crate) log: Mutex<LogBudget>,
    pub(crate) scheduler: Arc<CpuScheduler>,
}

impl TenantBudget {
    pub(crate) fn new(tenant: &str, quota: BudgetQuota, scheduler: Arc<CpuScheduler>) -> Self {
        let tenant: Arc<str> = Arc::from(tenant);
        scheduler.set_weight(&tenant, quota.cpu_weight);
        Self {
            tenant,
            memory: Arc::new(MemoryPool::new(quota.max_memory_total_bytes)),
            memory_wanted: watch::Sender::new(()),
            log: Mutex::new(LogBudget::new(quota.log_lines_per_second)),
            quota,
            scheduler,
        }
    }

    /// What the tenant's calls (instantiation, `init`, `handle`) have used of the guest
    /// threads on this node so far, counting every poll that has ended.
    pub fn cpu_usage(&self) -> CpuUsage {
        self.scheduler.usage(&self.tenant)
    }

    /// The tenant's name.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Linear memory the tenant's instances hold on this node right now.
    pub fn memory_in_use(&self) -> u64 {
        self.memory.in_use()
    }

    /// Asks the tenant's partitions to give back the memory of instances they keep warm.
    pub fn want_memory(&self) {
        self.memory_wanted.send_replace(());
    }

    /// Tells a partition when the tenant wants the memory of its warm instance back.
    pub fn memory_wanted(&self) -> watch::Receiver<()> {
        self.memory_wanted.subscribe()
    }

    /// A call's first turn on the guest threads, claimed before the call starts: a free one,
    /// for the call's first poll, or a place in the tenant's queue.
    pub fn claim(&self) -> Claim {
        self.scheduler.claim(&self.tenant)
    }

    /// Guest log lines dropped over the tenant's rate since the node started.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_budget().dropped_total
    }

    pub(crate) fn log_budget(&self) -> std::sync::MutexGuard<'_, LogBudget> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Memory shared by a tenant's instances: each instance reserves what it grows by and gives it
/// all back when dropped.
#[derive(Debug)]
pub(crate) struct MemoryPool {
    quota: u64,
    in_use: AtomicU64,
}

impl MemoryPool {
    pub(crate) fn new(quota: u64) -> Self {
        Self {
            quota,
            in_use: AtomicU64::new(0),
        }
    }

    pub(crate) fn quota(&self) -> u64 {
        self.quota
    }

    pub(crate) fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the pool, or returns what the pool's instances hold if that would
    /// pass the quota.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<(), u64> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.quota)
            })
            .map(|_| ())
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A token bucket for guest log lines; lines past it are dropped and counted, and the count is
/// reported after a call.
#[derive(Debug)]
pub(crate) struct LogBudget {
    pub(crate) per_second: u32,
    tokens: f64,
    refilled_at: Instant,
    /// Dropped since the last report.
    pub(crate) dropped: u64,
    dropped_total: u64,
}

impl LogBudget {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second),
            refilled_at: Instant::now(),
            dropped: 0,
            dropped_total: 0,
        }
    }

    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.per_second);
        let earned = now.duration_since(self.refilled_at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            self.dropped_total += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_allows_a_burst_then_drops_and_counts() {
        let mut budget = LogBudget::new(10);
        let allowed = (0..25).filter(|_| budget.take()).count();
        assert!((10..=11).contains(&allowed), "allowed {allowed}");
        assert_eq!(budget.dropped, 25 - allowed as u64);
    }

    #[test]
    fn the_memory_pool_refuses_past_its_quota_and_takes_back_what_is_released() {
        let pool = MemoryPool::new(100);
        assert_eq!(pool.reserve(60), Ok(()));
        assert_eq!(pool.reserve(41), Err(60));
        assert_eq!(pool.reserve(40), Ok(()));
        pool.release(60);
        assert_eq!(pool.in_use(), 40);
        assert_eq!(pool.reserve(60), Ok(()));
    }
}
