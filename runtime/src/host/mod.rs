//! The Wasm side of a node: one engine, handler versions compiled and linked once, and one warm
//! instance per owned partition.
//!
//! ```text
//! Host (per node)          engine with epoch interruption, linker with WASI + weir:handler (wasi:http refused)
//!  └─ HandlerVersion       compiled component + InstancePre, checked against the world once
//!      └─ HandlerInstance  Store<HostState> + instance, one per partition, replaced after a failure
//! ```
//!
//! Every call runs under a deadline, a memory limit and its tenant's CPU time per message. All
//! instances of one tenant share a [`TenantBudget`]: a memory quota over all of them, a log
//! rate, and a weighted share of the node's guest threads (see `fairness`): a guest that spins
//! gives its thread at once to a call of a tenant that has had less CPU time, and to others
//! a slice at a time.

mod bindings;
mod budget;
mod compile_cache;
mod componentize;
mod console;
mod engine;
mod fairness;
mod http;
mod instance;
mod limits;
mod state;
mod version;

pub use bindings::weir::handler::types::{Header, Level, Message, Outcome};
pub use budget::{BudgetQuota, TenantBudget};
pub use compile_cache::CompileCache;
pub use componentize::componentize;
pub use engine::{Allocation, Host, POOLED_INSTANCES};
pub use fairness::{Claim, CpuUsage, DEFAULT_CPU_WEIGHT, GuestThreads, Place, Turn};
pub use instance::{Handled, HandlerFailure, HandlerInstance, InstanceContext, Output};
pub use limits::CallLimits;
pub use version::{ComponentError, HandlerVersion, WORLD};
