//! The data a `Store` carries for one instance: WASI, limits, and what the current call buffered.

use std::sync::Arc;

use bytes::Bytes;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1;
use super::bindings::weir::handler::{host, state, types};
use super::console::Console;
use super::fairness::CpuMeter;
use super::instance::{InstanceContext, Output, log_guest_line};
use super::limits::{CallLimits, MemoryLimiter};
use crate::state::{PartitionState, Refusals, Refused, Writes};

/// The most WASI resources (streams, pollables…) an instance may hold at once. They live in
/// host memory, outside the instance's memory limit; a handler needs a handful.
pub(crate) const MAX_RESOURCES: usize = 1024;

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
    /// The partition's state, during a call that may use it.
    pub(crate) state: Option<Arc<PartitionState>>,
    /// What the call wrote to its partition's state, to be committed if it acks.
    pub(crate) writes: Writes,
    /// Why the partition's state could not be read: the call ends there.
    pub(crate) state_unavailable: Option<String>,
    /// The writes refused, by what refused them.
    pub(crate) refused_writes: Refusals,
}

impl HostState {
    pub(crate) fn new(
        context: Arc<InstanceContext>,
        limits: &CallLimits,
        partition: Option<u32>,
    ) -> Self {
        let console = Console::default();
        // No preopened directories, no environment, no arguments and no network (wasi:http, where
        // imported, refuses every call: `http`): the guest gets clocks, random, and a
        // stdout/stderr that land in the node's log.
        let wasi = WasiCtx::builder()
            .stdout(console.stdout())
            .stderr(console.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi,
            table,
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

/// Said when a guest uses state where there is none: in `init`, or outside a node.
const NO_STATE: &str = "state is only available while handling a message on a node";

impl HostState {
    fn partition_state(&self) -> wasmtime::Result<Arc<PartitionState>> {
        self.call
            .state
            .clone()
            .ok_or_else(|| wasmtime::format_err!("{NO_STATE}"))
    }

    /// Buffers a write of `key` (`None`: a deletion), if the tenant's quotas allow it.
    fn write(
        &mut self,
        key: String,
        value: Option<Bytes>,
    ) -> wasmtime::Result<Result<(), state::StateError>> {
        let partition = self.partition_state()?;
        let size = value.as_ref().map(|v| v.len() as u64);
        if let Err(refused) = partition.check(&self.call.writes, &key, size) {
            self.call.refused_writes.count(refused);
            return Ok(Err(match refused {
                Refused::InvalidKey => state::StateError::InvalidKey,
                Refused::ValueTooLarge(limit) => state::StateError::ValueTooLarge(limit),
                Refused::TooManyKeys(limit) => state::StateError::TooManyKeys(limit),
                Refused::TooManyBytes(limit) => state::StateError::TooManyBytes(limit),
                Refused::TooManyWrites(limit) => state::StateError::TooManyWrites(limit),
            }));
        }
        self.call.writes.insert(key, value);
        Ok(Ok(()))
    }
}

impl state::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let partition = self.partition_state()?;
        if let Some(written) = self.call.writes.get(&key) {
            return Ok(written.as_ref().map(|value| value.to_vec()));
        }
        match partition.read(&key).await {
            Ok(value) => Ok(value.map(|value| value.to_vec())),
            Err(error) => {
                let reason = format!("{error:#}");
                self.call.state_unavailable = Some(reason.clone());
                Err(wasmtime::format_err!(
                    "the partition's state could not be read: {reason}"
                ))
            }
        }
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), state::StateError>> {
        self.write(key, Some(value.into()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), state::StateError>> {
        self.write(key, None)
    }

    async fn keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        let partition = self.partition_state()?;
        let limit = limit.min(1000) as usize;
        Ok(partition.keys(&self.call.writes, &prefix, after.as_deref(), limit))
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

impl v0_1::weir::handler::types::Host for HostState {}

/// `weir:handler/host@0.1.0`: the same functions as today's.
impl v0_1::weir::handler::host::Host for HostState {
    fn publish(
        &mut self,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<v0_1::weir::handler::types::Header>,
    ) -> Result<(), String> {
        let headers = headers
            .into_iter()
            .map(|h| types::Header {
                name: h.name,
                value: h.value,
            })
            .collect();
        host::Host::publish(self, subject, payload, headers)
    }

    fn log(&mut self, level: v0_1::weir::handler::types::Level, message: String) {
        use v0_1::weir::handler::types::Level as Old;
        let level = match level {
            Old::Trace => types::Level::Trace,
            Old::Debug => types::Level::Debug,
            Old::Info => types::Level::Info,
            Old::Warn => types::Level::Warn,
            Old::Error => types::Level::Error,
        };
        host::Host::log(self, level, message);
    }
}
