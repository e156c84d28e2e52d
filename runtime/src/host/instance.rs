//! One warm instance of a handler version, serving one partition.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::Handler;
use super::bindings::weir::handler::types::{Header, Level, Message, Outcome};
use super::budget::TenantBudget;
use super::console::Channel;
use super::fairness::{Claim, Fair};
use super::limits::{CallLimits, MemoryRefusal};
use super::state::{CallState, HostState};
use super::version::HandlerVersion;
use crate::outputs::OutputRules;

/// What a deployment allows and tells each of its instances; shared by all of them. Who an
/// instance works for (handler, partition) comes from the tracing span of its task.
#[derive(Debug, Clone)]
pub struct InstanceContext {
    /// What each call may use.
    pub limits: CallLimits,
    /// Where the handler may publish, and with which headers.
    pub outputs: OutputRules,
    /// The deployment's configuration, handed to `init`.
    pub config: Vec<(String, String)>,
    /// What the instance shares with the tenant's other instances on this node.
    pub budget: Arc<TenantBudget>,
    /// Where the lines the guest logs and prints are published for `weir logs`, besides the
    /// node's log; `None` to keep them in the node's log only.
    pub logs: Option<crate::logs::LogSink>,
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
    /// What the call wrote to its partition's state; to be committed only if `outcome` is
    /// `ack`.
    pub writes: crate::state::Writes,
    /// The writes to its state the tenant's quotas refused.
    pub refused_writes: crate::state::Refusals,
}

/// Why a call produced no outcome. Every kind discards the instance and the call's outputs and
/// is retried with the deployment's backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerFailure {
    /// The guest trapped (a panic, an `unreachable`, a stack overflow…); the detail is the trap and the guest's last words on stderr.
    #[error("trap: {0}")]
    Trap(String),
    /// The call ran past the deployment's handler timeout, having computed for `cpu` of it
    /// (little, for a call that waited in a host call, or that the node's other work kept from
    /// a core).
    #[error(
        "deadline of {} exceeded after {:.3}s of CPU time",
        humantime::format_duration(*timeout),
        cpu.as_secs_f64()
    )]
    Deadline {
        /// The deployment's handler timeout.
        timeout: Duration,
        /// The call's CPU time until then.
        cpu: Duration,
    },
    /// The call used more CPU time than its tenant's quota per message.
    #[error("CPU time limit of {} per message exceeded", humantime::format_duration(*.0))]
    CpuTime(Duration),
    /// The guest tried to grow its memory past the deployment's limit.
    #[error("memory limit of {limit_bytes} bytes exceeded (the guest asked for {requested_bytes})")]
    MemoryLimit {
        /// The limit.
        limit_bytes: u64,
        /// The total the guest asked for.
        requested_bytes: u64,
    },
    /// The tenant's instances on this node together would pass the tenant's memory quota.
    #[error(
        "tenant memory quota of {quota_bytes} bytes on this node exceeded (its instances hold \
         {held_bytes}; this one asked for {requested_bytes} more)"
    )]
    TenantMemoryQuota {
        /// The quota.
        quota_bytes: u64,
        /// What the tenant's instances held when the guest asked.
        held_bytes: u64,
        /// What the guest asked for on top.
        requested_bytes: u64,
    },
    /// `init` returned an error for the deployment's configuration.
    #[error("init refused the configuration: {0}")]
    InitRefused(String),
    /// A `publish` was refused (subject invalid, reserved or not allowed, a header weir's own,
    /// or over a per-call limit).
    #[error("publish refused: {0}")]
    OutputRefused(String),
    /// The partition's state could not be read (NATS did not answer): no fault of the
    /// handler's.
    #[error("the partition's state could not be read: {0}")]
    StateUnavailable(String),
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
    /// under the call deadline, the memory limits and the CPU time per message.
    pub async fn start(
        version: &HandlerVersion,
        context: Arc<InstanceContext>,
    ) -> Result<Self, HandlerFailure> {
        Self::start_on(version, context, None, None).await
    }

    /// [`HandlerInstance::start`], beginning with `first` if given (see
    /// [`TenantBudget::claim`]), for `partition`, whose lines it publishes (see
    /// [`InstanceContext::logs`]).
    pub async fn start_on(
        version: &HandlerVersion,
        context: Arc<InstanceContext>,
        first: Option<Claim>,
        partition: Option<u32>,
    ) -> Result<Self, HandlerFailure> {
        let limits = context.limits.clone();
        let state = HostState::new(context, &limits, partition);
        let mut store = Store::new(version.pre.engine(), state);
        store.limiter(|state| &mut state.memory);
        // At every epoch check: stop a call past its CPU time, else yield to the async runtime,
        // which gives the call's turn back (see `Fair`), if the scheduler says so. The deadline
        // is a timer around the call, so it also covers a guest waiting inside a host call.
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            let budget = &state.context.budget;
            let limit = budget.quota.cpu_time_per_message;
            if state.cpu.spent() > limit {
                state.call.out_of_cpu = true;
                wasmtime::bail!(
                    "CPU time limit of {} per message exceeded",
                    humantime::format_duration(limit)
                );
            }
            if budget
                .scheduler
                .should_yield(&budget.tenant, state.cpu.slice())
            {
                Ok(UpdateDeadline::Yield(1))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);

        let parts = store_parts(&store);
        let instantiate = version.pre.instantiate_async(&mut store);
        let instantiated = bounded(&limits, &parts, first, instantiate).await;
        let bindings = settle(&mut store, limits.handler_timeout, instantiated)?;
        let mut instance = Self { store, bindings };

        let config = instance.store.data().context.config.clone();
        let parts = store_parts(&instance.store);
        let init = instance.bindings.call_init(&mut instance.store, &config);
        let init = bounded(&limits, &parts, None, init).await;
        settle(&mut instance.store, limits.handler_timeout, init)?
            .map_err(HandlerFailure::InitRefused)?;
        Ok(instance)
    }

    /// Hands `message` to the handler, with no state (a handler that uses it traps). On
    /// `Ok`, the outputs are those of this call only.
    pub async fn handle(&mut self, message: &Message) -> Result<Handled, HandlerFailure> {
        self.handle_on(message, None, None).await
    }

    /// [`HandlerInstance::handle`], beginning with `first` if given (see
    /// [`TenantBudget::claim`]), with the partition's `state` if it keeps any.
    pub(crate) async fn handle_on(
        &mut self,
        message: &Message,
        first: Option<Claim>,
        state: Option<Arc<crate::state::PartitionState>>,
    ) -> Result<Handled, HandlerFailure> {
        self.store.data_mut().call = CallState {
            stream_seq: message.stream_seq,
            state,
            ..CallState::default()
        };
        let limits = self.store.data().context.limits.clone();
        let parts = store_parts(&self.store);
        // A full slice to begin with, not what was left of the previous call's.
        self.store.set_epoch_deadline(1);
        let call = self.bindings.call_handle(&mut self.store, message);
        let called = bounded(&limits, &parts, first, call).await;
        let outcome = settle(&mut self.store, limits.handler_timeout, called)?;
        let call = std::mem::take(&mut self.store.data_mut().call);
        if let Some(refusal) = call.refusal {
            return Err(HandlerFailure::OutputRefused(refusal));
        }
        Ok(Handled {
            outcome,
            outputs: call.outputs,
            writes: call.writes,
            refused_writes: call.refused_writes,
        })
    }

    /// The instance's linear memory, summed over its memories: its high-water mark, since
    /// Wasm memories never shrink.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().memory.used_bytes()
    }
}

/// What a call needs from its store while the store is lent to the call.
struct StoreParts {
    budget: Arc<TenantBudget>,
    cpu: Arc<super::fairness::CpuMeter>,
}

fn store_parts(store: &Store<HostState>) -> StoreParts {
    let state = store.data();
    StoreParts {
        budget: state.context.budget.clone(),
        cpu: state.cpu.clone(),
    }
}

/// Runs a call on the tenant's turns, beginning with `first` if given, metered, under the
/// deadline.
async fn bounded<T>(
    limits: &CallLimits,
    parts: &StoreParts,
    first: Option<Claim>,
    call: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    parts.cpu.reset();
    let fair = Fair::new(
        call,
        parts.budget.scheduler.clone(),
        parts.budget.tenant.clone(),
        parts.cpu.clone(),
        first,
    );
    tokio::time::timeout(limits.handler_timeout, fair).await
}

/// Turns the end of a bounded call into a result, after logging what the guest printed.
fn settle<T>(
    store: &mut Store<HostState>,
    timeout: Duration,
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, HandlerFailure> {
    let state = store.data_mut();
    let captured = state.console.take();
    if captured.lines.is_empty() && captured.dropped_bytes == 0 {
        // The common case, without the tenant's log budget or the stderr scan.
        return conclude(state, timeout, result, &[]);
    }
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
    let mut log_budget = state.context.budget.log_budget();
    for (channel, line) in &captured.lines {
        if log_budget.take() {
            let level = if channel == &Channel::Stderr {
                Level::Warn
            } else {
                Level::Info
            };
            let source = if channel == &Channel::Stderr {
                "stderr"
            } else {
                "stdout"
            };
            state.guest_line(level, source, line);
        }
    }
    if captured.dropped_bytes > 0 {
        tracing::warn!(
            stream_seq = state.call.stream_seq,
            "guest output over the per-call limit: {} bytes dropped",
            captured.dropped_bytes
        );
    }
    let dropped_lines = std::mem::take(&mut log_budget.dropped);
    let per_second = log_budget.per_second;
    drop(log_budget);
    if dropped_lines > 0 {
        tracing::warn!(
            stream_seq = state.call.stream_seq,
            "guest log over the tenant's limit of {per_second} lines/s: {dropped_lines} line(s) dropped"
        );
    }
    conclude(state, timeout, result, &stderr)
}

/// The call's value, or the failure it ended in; `stderr` is what the guest printed there.
fn conclude<T>(
    state: &HostState,
    timeout: Duration,
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    stderr: &[&str],
) -> Result<T, HandlerFailure> {
    match result {
        Err(_elapsed) => Err(HandlerFailure::Deadline {
            timeout,
            cpu: state.cpu.spent(),
        }),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            match state.memory.refused {
                Some(MemoryRefusal::Instance { requested }) => {
                    return Err(HandlerFailure::MemoryLimit {
                        limit_bytes: state.context.limits.max_memory_bytes,
                        requested_bytes: requested,
                    });
                }
                Some(MemoryRefusal::Tenant { quota, held, asked }) => {
                    return Err(HandlerFailure::TenantMemoryQuota {
                        quota_bytes: quota,
                        held_bytes: held,
                        requested_bytes: asked,
                    });
                }
                None => {}
            }
            if state.call.out_of_cpu {
                return Err(HandlerFailure::CpuTime(
                    state.context.budget.quota.cpu_time_per_message,
                ));
            }
            if let Some(reason) = &state.call.state_unavailable {
                return Err(HandlerFailure::StateUnavailable(reason.clone()));
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
