//! The data a `Store` carries for one instance: WASI, limits, and what the current call buffered.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::handler::{host, types};
use super::console::Console;
use super::fairness::CpuMeter;
use super::instance::{InstanceContext, Output, log_guest_line};
use super::limits::{CallLimits, MemoryLimiter};

/// The host side of one instance. Owned by its `Store`; reset at the start of every call.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryLimiter,
    pub(crate) console: Console,
    pub(crate) context: Arc<InstanceContext>,
    /// The partition the instance serves, where it serves one.
    partition: Option<u32>,
    pub(crate) call: CallState,
    /// The CPU time of the call in progress.
    pub(crate) cpu: Arc<CpuMeter>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// What the current call has buffered so far.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    /// The stream sequence of the message in hand (0 during `init`), for log lines.
    pub(crate) stream_seq: u64,
    pub(crate) outputs: Vec<Output>,
    pub(crate) output_bytes: u64,
    /// Why a `publish` was refused. A refused publish fails the whole call.
    pub(crate) refusal: Option<String>,
    /// Set when the call ran past the tenant's CPU time per message.
    pub(crate) out_of_cpu: bool,
}

impl HostState {
    pub(crate) fn new(
        context: Arc<InstanceContext>,
        limits: &CallLimits,
        partition: Option<u32>,
    ) -> Self {
        let console = Console::default();
        // No preopened directories, no environment, no arguments and no network: the guest gets
        // clocks, random, and a stdout/stderr that land in the node's log.
        let wasi = WasiCtx::builder()
            .stdout(console.stdout())
            .stderr(console.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryLimiter::new(limits.max_memory_bytes, context.budget.memory.clone()),
            console,
            context,
            partition,
            call: CallState::default(),
            cpu: Arc::new(CpuMeter::default()),
        }
    }

    /// Writes a line the guest logged or printed (`source`) to the node's log, and publishes
    /// it for `weir logs`.
    pub(crate) fn guest_line(&self, level: types::Level, source: &str, line: &str) {
        log_guest_line(level, self.call.stream_seq, line);
        if let (Some(logs), Some(partition)) = (&self.context.logs, self.partition) {
            let level = match level {
                types::Level::Trace => "trace",
                types::Level::Debug => "debug",
                types::Level::Info => "info",
                types::Level::Warn => "warn",
                types::Level::Error => "error",
            };
            logs.send(partition, self.call.stream_seq, level, source, line);
        }
    }

    fn refuse(&mut self, reason: String) -> Result<(), String> {
        self.call.refusal.get_or_insert_with(|| reason.clone());
        Err(reason)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<types::Header>,
    ) -> Result<(), String> {
        let limits = &self.context.limits;
        let headers_text = headers.iter().map(|h| (h.name.as_str(), h.value.as_str()));
        if let Err(reason) =
            self.context
                .outputs
                .check(&self.context.budget.tenant, &subject, headers_text)
        {
            return self.refuse(reason);
        }
        if self.call.outputs.len() >= limits.max_outputs_per_call as usize {
            return self.refuse(format!(
                "limit of {} outputs per call reached",
                limits.max_outputs_per_call
            ));
        }
        let size = payload.len()
            + subject.len()
            + headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum::<usize>();
        let total = self.call.output_bytes + size as u64;
        if total > limits.max_output_bytes_per_call {
            return self.refuse(format!(
                "limit of {} output bytes per call exceeded: this call would buffer {total}",
                limits.max_output_bytes_per_call
            ));
        }
        self.call.output_bytes = total;
        self.call.outputs.push(Output {
            subject,
            payload: payload.into(),
            headers,
        });
        Ok(())
    }

    fn log(&mut self, level: types::Level, message: String) {
        if self.context.budget.log_budget().take() {
            self.guest_line(level, "log", &message);
        }
    }
}
