//! What one call, and one instance, may use.

use std::sync::Arc;
use std::time::Duration;

use super::budget::MemoryPool;

/// The limits a deployment puts on each instance and each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLimits {
    /// Linear memory, summed over the instance's memories.
    pub max_memory_bytes: u64,
    /// Wall-clock time for one `init` or `handle` call.
    pub handler_timeout: Duration,
    /// Messages one call may buffer with `publish`.
    pub max_outputs_per_call: u32,
    /// Payload plus header bytes one call may buffer with `publish`.
    pub max_output_bytes_per_call: u64,
}

/// Enforces `max_memory_bytes` and the tenant's memory quota, and remembers which stopped the
/// guest, so that the trap it causes is reported as that limit rather than as an anonymous trap.
/// Dropping the limiter (with its store) gives the instance's memory back to the tenant.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    used_bytes: usize,
    tenant: Arc<MemoryPool>,
    /// What stopped the guest, if anything did.
    pub(crate) refused: Option<MemoryRefusal>,
}

/// Which memory limit refused a guest's growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemoryRefusal {
    /// The instance would pass its own limit: the total it asked for.
    Instance { requested: u64 },
    /// The tenant's instances together would pass the tenant's quota.
    Tenant { quota: u64, held: u64, asked: u64 },
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: u64, tenant: Arc<MemoryPool>) -> Self {
        Self {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            used_bytes: 0,
            tenant,
            refused: None,
        }
    }

    /// The linear memory granted so far.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes as u64
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.tenant.release(self.used_bytes as u64);
    }
}

/// Tables are bounded too, so that a guest cannot use them to get around the memory limit.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used_bytes - current.min(self.used_bytes) + desired;
        if total > self.max_bytes {
            self.refused = Some(MemoryRefusal::Instance {
                requested: total as u64,
            });
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the guest asked for {total}",
                self.max_bytes
            );
        }
        let more = desired.saturating_sub(current) as u64;
        if let Err(held) = self.tenant.reserve(more) {
            let quota = self.tenant.quota();
            self.refused = Some(MemoryRefusal::Tenant {
                quota,
                held,
                asked: more,
            });
            wasmtime::bail!(
                "the tenant's memory quota of {quota} bytes on this node is used up: its \
                 instances hold {held} and this one asked for {more} more"
            );
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn growth_within_the_limit_is_allowed_and_counted_across_memories() -> wasmtime::Result<()> {
        let mut limiter = MemoryLimiter::new(100, Arc::new(MemoryPool::new(1000)));
        assert!(limiter.memory_growing(0, 60, None)?);
        assert!(limiter.memory_growing(0, 40, None)?);
        assert!(limiter.memory_growing(60, 61, None).is_err());
        assert_eq!(
            limiter.refused,
            Some(MemoryRefusal::Instance { requested: 101 })
        );
        Ok(())
    }

    #[test]
    fn instances_of_a_tenant_share_its_quota_until_they_are_dropped() -> wasmtime::Result<()> {
        let tenant = Arc::new(MemoryPool::new(100));
        let mut first = MemoryLimiter::new(80, tenant.clone());
        let mut second = MemoryLimiter::new(80, tenant.clone());
        assert!(first.memory_growing(0, 70, None)?);
        assert!(second.memory_growing(0, 31, None).is_err());
        assert_eq!(
            second.refused,
            Some(MemoryRefusal::Tenant {
                quota: 100,
                held: 70,
                asked: 31
            })
        );
        drop(first);
        assert_eq!(tenant.in_use(), 0);
        assert!(second.memory_growing(0, 31, None)?);
        Ok(())
    }
}
