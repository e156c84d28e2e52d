//! Sharing the node's cores between tenants.
//!
//! Guest code runs only while its task holds a [`Turn`], and a node has one turn per core. A
//! call holds a turn for one poll of its future at a time: wasmtime returns from a poll when the
//! guest reaches an epoch yield point (every tick, see `EPOCH_TICK`) or waits in a host call,
//! so a guest that sleeps holds no turn, and one that spins gives its turn back at every tick.
//! Freed turns go round the tenants that are waiting, one tenant after the other and first come
//! first served within a tenant: a tenant with many busy partitions gets one turn in its round
//! like a tenant with one. A task of a tenant that holds no turn advances the engine's epoch
//! when it has to wait, so running guests reach a yield point at once instead of at the next
//! tick. A node takes a call's first turn before the call starts ([`TenantBudget::turn_now`]):
//! the guests the turn was taken from then find none, and leave the threads to the call. When
//! no turn is free, the call waits for one on the guest threads, not in its partition's task,
//! which may be waiting for the server meanwhile: a turn handed to a waiter is used at once.
//!
//! The same polls measure each call's CPU time ([`CpuMeter`]), which the epoch callback holds
//! against the tenant's CPU time per message.
//!
//! On a node, a call's first slice runs in place, on the runtime that talks to NATS, and
//! whatever it has left after that on threads of its own ([`GuestThreads::run`]), apart and at
//! the lowest priority: a spinning guest holds a thread until its next yield point, and on a
//! shared runtime, or at the same priority, every network step of every other partition would
//! queue behind it. Most calls end within their first slice, and so never pay for the handoff
//! between threads (measured: it cost more CPU time per message than the call itself); a guest
//! that computes takes the network runtime for one slice of each call at most.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Hands out the node's turns. One per engine; shared by every tenant's instances.
pub(crate) struct CpuScheduler {
    state: Mutex<Queue>,
    /// Advanced when a task has to wait, so that running guests yield at once.
    engine: wasmtime::EngineWeak,
}

impl std::fmt::Debug for CpuScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuScheduler").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    /// Turns nobody holds.
    free: usize,
    /// Turns each tenant holds.
    held: BTreeMap<Arc<str>, usize>,
    /// Tasks waiting for a turn, by tenant.
    waiting: BTreeMap<Arc<str>, VecDeque<oneshot::Sender<Turn>>>,
    /// The tenant served last, so that the next free turn goes to the one after it.
    served_last: Option<Arc<str>>,
}

impl Queue {
    fn hold(&mut self, tenant: &Arc<str>) {
        *self.held.entry(tenant.clone()).or_default() += 1;
    }

    fn unhold(&mut self, tenant: &Arc<str>) {
        if let Some(held) = self.held.get_mut(tenant) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(tenant);
            }
        }
    }

    /// The next waiter, from the first tenant after the one served last that has any.
    fn next_waiter(&mut self) -> Option<(Arc<str>, oneshot::Sender<Turn>)> {
        loop {
            let tenant = {
                let after = self.served_last.as_ref().and_then(|last| {
                    self.waiting
                        .range::<str, _>((
                            std::ops::Bound::Excluded(&**last),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                });
                after.or_else(|| self.waiting.iter().next())?.0.clone()
            };
            let queue = self.waiting.get_mut(&tenant)?;
            let waiter = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            }
            self.served_last = Some(tenant.clone());
            match waiter {
                Some(waiter) if !waiter.is_closed() => return Some((tenant, waiter)),
                _ => continue,
            }
        }
    }
}

impl CpuScheduler {
    /// A scheduler with `turns` turns (at least one) for the guests of `engine`.
    pub(crate) fn new(turns: usize, engine: &wasmtime::Engine) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Queue {
                free: turns.max(1),
                ..Queue::default()
            }),
            engine: engine.weak(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn for `tenant` if one is free; none is while anybody waits for one.
    pub(crate) fn turn_now(self: &Arc<Self>, tenant: &Arc<str>) -> Option<Turn> {
        self.take_free(&mut self.lock(), tenant)
    }

    fn take_free(self: &Arc<Self>, queue: &mut Queue, tenant: &Arc<str>) -> Option<Turn> {
        if queue.free == 0 {
            return None;
        }
        queue.free -= 1;
        queue.served_last = Some(tenant.clone());
        queue.hold(tenant);
        Some(Turn::new(self.clone(), tenant.clone()))
    }

    /// A turn now, or a place in `tenant`'s queue.
    fn try_turn(self: &Arc<Self>, tenant: &Arc<str>) -> Result<Turn, oneshot::Receiver<Turn>> {
        let mut queue = self.lock();
        if let Some(turn) = self.take_free(&mut queue, tenant) {
            return Ok(turn);
        }
        let (sender, receiver) = oneshot::channel();
        queue
            .waiting
            .entry(tenant.clone())
            .or_default()
            .push_back(sender);
        let starved = !queue.held.contains_key(tenant);
        drop(queue);
        // A tenant with no turn at all makes the guests that hold them reach a yield point now;
        // one that already computes waits for the next tick, like everybody else.
        if starved && let Some(engine) = self.engine.upgrade() {
            engine.increment_epoch();
        }
        Err(receiver)
    }

    /// Gives `tenant`'s turn back: to the next waiter in the round, or to the free pool.
    fn give_back(self: &Arc<Self>, tenant: &Arc<str>) {
        self.lock().unhold(tenant);
        loop {
            let (next, waiter) = {
                let mut queue = self.lock();
                match queue.next_waiter() {
                    Some((next, waiter)) => {
                        queue.hold(&next);
                        (next, waiter)
                    }
                    None => {
                        queue.free += 1;
                        return;
                    }
                }
            };
            match waiter.send(Turn::new(self.clone(), next.clone())) {
                Ok(()) => return,
                // The waiter left between being picked and being sent the turn: pass it on.
                Err(turn) => {
                    turn.disarm();
                    self.lock().unhold(&next);
                }
            }
        }
    }
}

/// The right to run guest code on one core; given back when dropped.
#[derive(Debug)]
pub struct Turn {
    scheduler: Option<Arc<CpuScheduler>>,
    tenant: Arc<str>,
}

impl Turn {
    fn new(scheduler: Arc<CpuScheduler>, tenant: Arc<str>) -> Self {
        Self {
            scheduler: Some(scheduler),
            tenant,
        }
    }

    /// Forgets the turn without giving it back (its giver passes it on itself).
    fn disarm(mut self) {
        self.scheduler = None;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.give_back(&self.tenant);
        }
    }
}

/// The CPU time of the call in progress: the time spent in polls of its future, counting the
/// poll under way. Shared by the call's [`Fair`] future and the store's epoch callback.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter(Mutex<Meter>);

#[derive(Debug, Default)]
struct Meter {
    spent: Duration,
    polling_since: Option<Instant>,
}

impl CpuMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new call at zero.
    pub(crate) fn reset(&self) {
        *self.lock() = Meter::default();
    }

    /// The call's CPU time so far.
    pub(crate) fn spent(&self) -> Duration {
        let meter = self.lock();
        meter.spent
            + meter
                .polling_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn poll_started(&self) {
        self.lock().polling_since = Some(Instant::now());
    }

    fn poll_ended(&self) {
        let mut meter = self.lock();
        if let Some(since) = meter.polling_since.take() {
            meter.spent += since.elapsed();
        }
    }
}

/// The threads guest calls run on: one per turn, in a Tokio runtime of their own.
pub struct GuestThreads {
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for GuestThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestThreads").finish_non_exhaustive()
    }
}

impl GuestThreads {
    pub(crate) fn start(threads: usize) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("weir-guest")
            // A new call is taken up at the next yield point, not after dozens of polls of the
            // calls that were already there.
            .global_queue_interval(1)
            .on_thread_start(lower_priority)
            .enable_time()
            .build()?;
        Ok(Arc::new(Self {
            runtime: Some(runtime),
        }))
    }

    /// Runs `call`'s first slice here, and the rest of it, if it does not end there, on the
    /// guest threads.
    pub async fn run<F>(&self, call: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut call = Box::pin(call);
        if let Poll::Ready(output) = futures::poll!(call.as_mut()) {
            return Ok(output);
        }
        // Boxed, the call moves to the other runtime without moving in memory.
        self.spawn(call).await
    }

    /// Runs `call` on the guest threads; its result comes back through the handle. A call that
    /// took its first turn beforehand finds a thread free: the guest whose turn it took has
    /// left it. One that found no turn free waits there, in its tenant's queue, for one.
    pub fn spawn<F>(&self, call: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(call),
            None => unreachable!("the guest runtime lives until GuestThreads is dropped"),
        }
    }
}

/// Guest threads run at a lower scheduling priority (nice 10) than the rest of the node: its
/// network work, and a NATS server on the same machine, get a core before a guest that computes.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), 10) {
            tracing::warn!("could not lower the priority of a guest thread: {error}");
        }
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Possibly dropped inside another runtime, where waiting for threads is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A guest call that runs only while it holds a turn of `tenant`'s, and meters its CPU time.
pub(crate) struct Fair<F> {
    call: Pin<Box<F>>,
    scheduler: Arc<CpuScheduler>,
    tenant: Arc<str>,
    meter: Arc<CpuMeter>,
    waiting: Option<oneshot::Receiver<Turn>>,
    /// A turn taken before the call started, for its first poll.
    first: Option<Turn>,
}

impl<F: Future> Fair<F> {
    pub(crate) fn new(
        call: F,
        scheduler: Arc<CpuScheduler>,
        tenant: Arc<str>,
        meter: Arc<CpuMeter>,
        first: Option<Turn>,
    ) -> Self {
        Self {
            call: Box::pin(call),
            scheduler,
            tenant,
            meter,
            waiting: None,
            first,
        }
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let turn = if let Some(turn) = this.first.take() {
            turn
        } else {
            loop {
                if let Some(waiting) = &mut this.waiting {
                    match Pin::new(waiting).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(turn)) => {
                            this.waiting = None;
                            break turn;
                        }
                        // The scheduler dropped our place (it never does while it lives): queue
                        // again.
                        Poll::Ready(Err(_)) => this.waiting = None,
                    }
                }
                match this.scheduler.try_turn(&this.tenant) {
                    Ok(turn) => break turn,
                    Err(waiting) => this.waiting = Some(waiting),
                }
            }
        };
        this.meter.poll_started();
        let result = this.call.as_mut().poll(cx);
        this.meter.poll_ended();
        drop(turn);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(turns: usize) -> Arc<CpuScheduler> {
        CpuScheduler::new(turns, &wasmtime::Engine::default())
    }

    fn tenant(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// A free turn for `name`; there must be one.
    fn take(scheduler: &Arc<CpuScheduler>, name: &str) -> Turn {
        match scheduler.try_turn(&tenant(name)) {
            Ok(turn) => turn,
            Err(_) => panic!("{name} found no free turn"),
        }
    }

    /// A place in `name`'s queue; there must be no free turn.
    fn queue(scheduler: &Arc<CpuScheduler>, name: &str) -> oneshot::Receiver<Turn> {
        match scheduler.try_turn(&tenant(name)) {
            Ok(_) => panic!("{name} found a free turn"),
            Err(place) => place,
        }
    }

    #[test]
    fn free_turns_are_handed_out_then_waiters_queue() {
        let scheduler = scheduler(1);
        let first = take(&scheduler, "a");
        let mut waiting = queue(&scheduler, "b");
        assert!(
            waiting.try_recv().is_err(),
            "no turn while the only one is held"
        );
        drop(first);
        assert!(
            waiting.try_recv().is_ok(),
            "the freed turn goes to the waiter"
        );
    }

    #[test]
    fn a_turn_now_is_only_a_free_one_and_never_jumps_the_queue() {
        let scheduler = scheduler(1);
        let Some(held) = scheduler.turn_now(&tenant("a")) else {
            panic!("the free turn was not handed out");
        };
        assert!(scheduler.turn_now(&tenant("b")).is_none(), "none is free");
        let mut waiting = queue(&scheduler, "b");
        drop(held);
        assert!(
            scheduler.turn_now(&tenant("c")).is_none(),
            "the freed turn went to the waiter"
        );
        assert!(
            waiting.try_recv().is_ok(),
            "the waiter holds the turn, and drops it"
        );
        assert!(scheduler.turn_now(&tenant("c")).is_some(), "free again");
    }

    #[test]
    fn freed_turns_go_round_the_waiting_tenants() {
        let scheduler = scheduler(1);
        let held = take(&scheduler, "busy");
        // The busy tenant queues three tasks before the quiet one queues its first.
        let mut waiters: Vec<(&str, oneshot::Receiver<Turn>)> = Vec::new();
        for name in ["busy", "busy", "busy", "quiet"] {
            waiters.push((name, queue(&scheduler, name)));
        }
        let mut served = Vec::new();
        drop(held);
        for _ in 0..4 {
            let Some((index, turn)) = waiters
                .iter_mut()
                .enumerate()
                .find_map(|(i, (_, place))| place.try_recv().ok().map(|turn| (i, turn)))
            else {
                panic!("no waiter holds the turn");
            };
            served.push(waiters.remove(index).0);
            drop(turn);
        }
        // Round robin after "busy" was served last: quiet first, then busy's queue in order.
        assert_eq!(served, ["quiet", "busy", "busy", "busy"]);
    }

    #[test]
    fn a_waiter_that_left_does_not_swallow_the_turn() {
        let scheduler = scheduler(1);
        let held = take(&scheduler, "a");
        let gone = queue(&scheduler, "b");
        let mut staying = queue(&scheduler, "c");
        drop(gone);
        drop(held);
        assert!(staying.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_call_holds_a_turn_only_while_it_is_polled() {
        let scheduler = scheduler(1);
        let meter = Arc::new(CpuMeter::default());
        // A call that waits (as a guest waits in a host call) holds no turn meanwhile.
        let (finish, finished) = oneshot::channel::<()>();
        let mut waiting = std::pin::pin!(Fair::new(
            finished,
            scheduler.clone(),
            tenant("sleepy"),
            meter.clone(),
            None,
        ));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let other = scheduler.try_turn(&tenant("other"));
        assert!(other.is_ok(), "the waiting call kept its turn");
        drop(other);
        assert!(finish.send(()).is_ok(), "the call stopped waiting");
        assert!(matches!(
            futures::poll!(waiting.as_mut()),
            Poll::Ready(Ok(()))
        ));
    }
}
