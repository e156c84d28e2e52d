//! One warm instance of a handler version, serving one partition.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::Handler;
use super::bindings::weir::handler::types::{Header, Level, Message, Outcome};
use super::console::Channel;
use super::limits::CallLimits;
use super::state::{CallState, HostState, LOG_LINES_PER_SECOND};
use super::version::HandlerVersion;

/// What a deployment allows and tells each of its instances; shared by all of them. Who an
/// instance works for (tenant, handler, partition) comes from the tracing span of its task.
#[derive(Debug, Clone)]
pub struct InstanceContext {
    /// What each call may use.
    pub limits: CallLimits,
    /// Subject patterns the handler may publish to.
    pub outputs: Vec<String>,
    /// The deployment's configuration, handed to `init`.
    pub config: Vec<(String, String)>,
}

/// Writes one line a guest logged or printed. Tenant, handler and partition come from the span
/// of the task that runs the instance.
pub(crate) fn log_guest_line(level: Level, stream_seq: u64, line: &str) {
    macro_rules! guest_event {
        ($level:expr) => {
            tracing::event!(target: "weir::guest", $level, stream_seq, "{line}")
        };
    }
    match level {
        Level::Trace => guest_event!(tracing::Level::TRACE),
        Level::Debug => guest_event!(tracing::Level::DEBUG),
        Level::Info => guest_event!(tracing::Level::INFO),
        Level::Warn => guest_event!(tracing::Level::WARN),
        Level::Error => guest_event!(tracing::Level::ERROR),
    }
}

/// A message a handler published during a call that ended in `ack`.
#[derive(Debug, Clone)]
pub struct Output {
    /// Where it goes.
    pub subject: String,
    /// Its body.
    pub payload: Bytes,
    /// Its headers, as the handler set them.
    pub headers: Vec<Header>,
}

/// A call that returned normally.
#[derive(Debug)]
pub struct Handled {
    /// The handler's answer.
    pub outcome: Outcome,
    /// What the call published; to be sent only if `outcome` is `ack`.
    pub outputs: Vec<Output>,
}

/// Why a call produced no outcome. Every kind discards the instance and the call's outputs and
/// is retried with the deployment's backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerFailure {
    /// The guest trapped (a panic, an `unreachable`, a stack overflow…); the detail is the trap and the guest's last words on stderr.
    #[error("trap: {0}")]
    Trap(String),
    /// The call ran past the deployment's handler timeout.
    #[error("deadline of {} exceeded", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// The guest tried to grow its memory past the deployment's limit.
    #[error("memory limit of {limit_bytes} bytes exceeded (the guest asked for {requested_bytes})")]
    MemoryLimit {
        /// The limit.
        limit_bytes: u64,
        /// The total the guest asked for.
        requested_bytes: u64,
    },
    /// `init` returned an error for the deployment's configuration.
    #[error("init refused the configuration: {0}")]
    InitRefused(String),
    /// A `publish` was refused (subject not allowed, invalid, or over a per-call limit).
    #[error("publish refused: {0}")]
    OutputRefused(String),
}

/// A handler instance with its store. Not reusable after a `HandlerFailure`.
pub struct HandlerInstance {
    store: Store<HostState>,
    bindings: Handler,
}

impl std::fmt::Debug for HandlerInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerInstance")
            .field("context", &self.store.data().context)
            .finish()
    }
}

impl HandlerInstance {
    /// Instantiates `version` and runs its `init` with the deployment's configuration, both
    /// under the call deadline and the memory limit.
    pub async fn start(
        version: &HandlerVersion,
        context: Arc<InstanceContext>,
    ) -> Result<Self, HandlerFailure> {
        let limits = context.limits.clone();
        let mut store = Store::new(version.pre.engine(), HostState::new(context, &limits));
        store.limiter(|state| &mut state.memory);
        // Yield to the async runtime at every epoch tick; the deadline is a timer around the
        // call, so it also covers a guest waiting inside a host call.
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        store.set_epoch_deadline(1);

        let instantiated = tokio::time::timeout(
            limits.handler_timeout,
            version.pre.instantiate_async(&mut store),
        )
        .await;
        let bindings = settle(&mut store, limits.handler_timeout, instantiated)?;
        let mut instance = Self { store, bindings };

        let config = instance.store.data().context.config.clone();
        let init = tokio::time::timeout(
            limits.handler_timeout,
            instance.bindings.call_init(&mut instance.store, &config),
        )
        .await;
        settle(&mut instance.store, limits.handler_timeout, init)?
            .map_err(HandlerFailure::InitRefused)?;
        Ok(instance)
    }

    /// Hands `message` to the handler. On `Ok`, the outputs are those of this call only.
    pub async fn handle(&mut self, message: &Message) -> Result<Handled, HandlerFailure> {
        self.store.data_mut().call = CallState {
            stream_seq: message.stream_seq,
            ..CallState::default()
        };
        let timeout = self.store.data().context.limits.handler_timeout;
        let called =
            tokio::time::timeout(timeout, self.bindings.call_handle(&mut self.store, message))
                .await;
        let outcome = settle(&mut self.store, timeout, called)?;
        let call = std::mem::take(&mut self.store.data_mut().call);
        if let Some(refusal) = call.refusal {
            return Err(HandlerFailure::OutputRefused(refusal));
        }
        Ok(Handled {
            outcome,
            outputs: call.outputs,
        })
    }

    /// The instance's linear memory, summed over its memories: its high-water mark, since
    /// Wasm memories never shrink.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().memory.used_bytes()
    }
}

/// Turns the end of a bounded call into a result, after logging what the guest printed.
fn settle<T>(
    store: &mut Store<HostState>,
    timeout: Duration,
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, HandlerFailure> {
    let state = store.data_mut();
    let captured = state.console.take();
    // A Rust guest's panic prints "thread ... panicked at FILE:LINE:" then the message, then a
    // hint about RUST_BACKTRACE; the first two say what went wrong.
    let stderr: Vec<&str> = captured
        .lines
        .iter()
        .filter(|(channel, line)| {
            channel == &Channel::Stderr && !line.starts_with("note: run with `RUST_BACKTRACE")
        })
        .map(|(_, line)| line.as_str())
        .collect();
    for (channel, line) in &captured.lines {
        if state.log_budget.take() {
            let level = if channel == &Channel::Stderr {
                Level::Warn
            } else {
                Level::Info
            };
            log_guest_line(level, state.call.stream_seq, line);
        }
    }
    if captured.dropped_bytes > 0 {
        tracing::warn!(
            stream_seq = state.call.stream_seq,
            "guest output over the per-call limit: {} bytes dropped",
            captured.dropped_bytes
        );
    }
    let dropped_lines = std::mem::take(&mut state.log_budget.dropped);
    if dropped_lines > 0 {
        tracing::warn!(
            stream_seq = state.call.stream_seq,
            "guest log over the limit of {LOG_LINES_PER_SECOND} lines/s: {dropped_lines} line(s) dropped"
        );
    }
    match result {
        Err(_elapsed) => Err(HandlerFailure::Deadline(timeout)),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            if let Some(requested) = state.memory.refused_at {
                return Err(HandlerFailure::MemoryLimit {
                    limit_bytes: state.context.limits.max_memory_bytes,
                    requested_bytes: requested as u64,
                });
            }
            let mut detail = match error.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => trap.to_string(),
                None => error.root_cause().to_string(),
            };
            // A Go guest's panic prints "panic: MESSAGE" (the runtime's own, "fatal error: ...")
            // and then every goroutine's stack: that first line says what went wrong.
            let go_panic = stderr
                .iter()
                .find(|line| line.starts_with("panic: ") || line.starts_with("fatal error: "));
            if let Some(line) = go_panic {
                detail = format!("{detail} (guest stderr: {line})");
            } else if !stderr.is_empty() {
                let tail = &stderr[stderr.len().saturating_sub(2)..];
                detail = format!("{detail} (guest stderr: {})", tail.join(" "));
            }
            Err(HandlerFailure::Trap(detail))
        }
    }
}
