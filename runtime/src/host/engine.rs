//! The node's one engine and linker.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine};

use super::bindings::{Handler, v0_1};
use super::budget::{BudgetQuota, TenantBudget};
use super::compile_cache::CompileCache;
use super::fairness::{CpuScheduler, GuestThreads};
use super::state::HostState;
use super::version::{ComponentError, HandlerVersion};

/// How often the epoch advances: how often a running guest's CPU time is checked, and it is
/// asked whether to give its turn back (also whenever a call of another tenant queues for one).
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine and the linker shared by every handler on a node: WASI preview 2 plus
/// `weir:handler/host`, set up once; and the scheduler that shares the node's cores between
/// tenants.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    /// Where compiled components are kept, if anywhere.
    cache: Option<wasmtime::Cache>,
    linker: Linker<HostState>,
    scheduler: Arc<CpuScheduler>,
    guests: Arc<GuestThreads>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

/// Guests may compute on every core but one (and on one of one): the node's own network work,
/// and a NATS server on the same machine, always have a core no guest can take.
fn guest_turns() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(1).max(1)
}

/// How a node allocates its instances' memories, tables and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// From pools reserved once, when the engine is built: an instance reuses a slot a
    /// previous instance of the same module left, memory image already mapped. Up to
    /// [`POOLED_INSTANCES`] instances at a time.
    Pooling,
    /// Fresh mappings for every instance, as many as memory allows.
    OnDemand,
}

/// The instances a node's pool holds at once. A Rust or Go handler is one component of a few
/// core modules, at most two of them with a linear memory; the pool reserves (but does not
/// commit) 4 GiB of address space per memory, 8 TiB in all, of the 128 TiB a process has on
/// x86_64 Linux. An instance past this many fails to start, and its message is retried.
pub const POOLED_INSTANCES: u32 = 1024;

fn pooling_config() -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 8)
        .total_memories(POOLED_INSTANCES * 2)
        .total_tables(POOLED_INSTANCES * 4)
        .total_stacks(POOLED_INSTANCES)
        .max_memories_per_component(4)
        .max_core_instances_per_component(16)
        // Slots freed together are decommitted together: one TLB flush for many.
        .decommit_batch_size(16)
        // The start of a freed slot's tables is zeroed in place rather than given back to the
        // kernel, to be faulted in again by the next instance.
        .table_keep_resident(16 << 10);
    pool
}

impl Host {
    /// Builds the engine, with pooled instance allocation where the process can reserve the
    /// pool and on demand where it cannot (a limit on address space, say), and starts the
    /// thread that advances its epoch; the thread ends when the engine and everything
    /// compiled with it have been dropped. Compiled components are kept where
    /// [`CompileCache::Default`] says.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_cache(&CompileCache::Default)
    }

    /// [`Host::new`], keeping compiled components in `cache`.
    pub fn with_cache(cache: &CompileCache) -> anyhow::Result<Self> {
        match Self::with(Allocation::Pooling, cache) {
            Ok(host) => Ok(host),
            Err(error) => {
                tracing::warn!(
                    "{error:#}; allocating every instance on demand instead (slower to start)"
                );
                Self::with(Allocation::OnDemand, cache)
            }
        }
    }

    /// [`Host::new`] with the given allocation, and no fallback.
    pub fn with_allocation(allocation: Allocation) -> anyhow::Result<Self> {
        Self::with(allocation, &CompileCache::Default)
    }

    fn with(allocation: Allocation, cache: &CompileCache) -> anyhow::Result<Self> {
        let cache = cache.open();
        let mut config = Config::new();
        config
            .cache(cache.clone())
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Memories start as copy-on-write mappings of the module's initial image.
            .memory_init_cow(true);
        if allocation == Allocation::Pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pooling_config(),
            ));
        }
        let engine = Engine::new(&config).with_context(|| match allocation {
            Allocation::Pooling => "failed to create the wasmtime engine with an instance pool",
            Allocation::OnDemand => "failed to create the wasmtime engine",
        })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .context("failed to link WASI preview 2")?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .context("failed to link weir:handler@0.2.0")?;
        v0_1::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .context("failed to link weir:handler@0.1.0")?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("failed to start the epoch thread")?;

        let turns = guest_turns();
        let scheduler = CpuScheduler::new(turns, &engine);
        let guests = GuestThreads::start(turns).context("failed to start the guest threads")?;
        Ok(Self {
            engine,
            cache,
            linker,
            scheduler,
            guests,
        })
    }

    /// The threads a node runs guest calls on, apart from its network work.
    pub fn guest_threads(&self) -> Arc<GuestThreads> {
        self.guests.clone()
    }

    /// A new share of this node for `tenant`'s instances, under `quota`. Instances share
    /// quotas only through the same budget: a node keeps one per tenant.
    pub fn tenant_budget(&self, tenant: &str, quota: BudgetQuota) -> Arc<TenantBudget> {
        Arc::new(TenantBudget::new(tenant, quota, self.scheduler.clone()))
    }

    /// Compiles `bytes` and checks them against the `weir:handler` world. Compilation is CPU
    /// work: call this from a blocking task on a running node.
    pub fn compile(&self, bytes: &[u8]) -> Result<HandlerVersion, ComponentError> {
        HandlerVersion::compile(&self.engine, &self.linker, bytes)
    }

    /// How many compiles loaded the code of an earlier one from the cache, in this process.
    pub fn compiles_cached(&self) -> usize {
        self.cache.as_ref().map_or(0, wasmtime::Cache::cache_hits)
    }
}
