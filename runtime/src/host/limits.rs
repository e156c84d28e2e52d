//! What one call, and one instance, may use.

use std::time::Duration;

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

/// Enforces `max_memory_bytes` and remembers that it did, so that a trap caused by the limit is
/// reported as a memory-limit hit rather than as an anonymous trap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    used_bytes: usize,
    /// The total the guest asked for when the limit stopped it.
    pub(crate) refused_at: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            used_bytes: 0,
            refused_at: None,
        }
    }

    /// The linear memory granted so far.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes as u64
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
            self.refused_at = Some(total);
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the guest asked for {total}",
                self.max_bytes
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
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None)?);
        assert!(limiter.memory_growing(0, 40, None)?);
        assert!(limiter.memory_growing(60, 61, None).is_err());
        assert_eq!(limiter.refused_at, Some(101));
        Ok(())
    }
}
