//! The Wasm side of a node: one engine, handler versions compiled and linked once, and one warm
//! instance per owned partition.
//!
//! ```text
//! Host (per node)          engine with epoch interruption, linker with WASI + weir:handler/host
//!  └─ HandlerVersion       compiled component + InstancePre, checked against the world once
//!      └─ HandlerInstance  Store<HostState> + instance, one per partition, replaced after a failure
//! ```
//!
//! Every call runs under a deadline and a memory limit. A guest that spins yields to the async
//! runtime at every epoch tick, so it delays nothing else on the node, and the deadline stops it.

mod bindings;
mod componentize;
mod console;
mod engine;
mod instance;
mod limits;
mod state;
mod version;

pub use bindings::weir::handler::types::{Header, Level, Message, Outcome};
pub use componentize::componentize;
pub use engine::Host;
pub use instance::{Handled, HandlerFailure, HandlerInstance, InstanceContext, Output};
pub use limits::CallLimits;
pub use version::{ComponentError, HandlerVersion, WORLD};
