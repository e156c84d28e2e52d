//! The node's one engine and linker.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine};

use super::bindings::Handler;
use super::state::HostState;
use super::version::{ComponentError, HandlerVersion};

/// How often the epoch advances. A spinning guest yields to the async runtime this often, and
/// a deadline is noticed within this much of its expiry.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine and the linker shared by every handler on a node: WASI preview 2 plus
/// `weir:handler/host`, set up once.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Builds the engine and starts the thread that advances its epoch; the thread ends when
    /// the engine and everything compiled with it have been dropped.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).context("failed to create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .context("failed to link WASI preview 2")?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .context("failed to link weir:handler/host")?;

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

        Ok(Self { engine, linker })
    }

    /// Compiles `bytes` and checks them against the `weir:handler` world. Compilation is CPU
    /// work: call this from a blocking task on a running node.
    pub fn compile(&self, bytes: &[u8]) -> Result<HandlerVersion, ComponentError> {
        HandlerVersion::compile(&self.engine, &self.linker, bytes)
    }
}
