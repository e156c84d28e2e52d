//! Sharing the node's cores between tenants.
//!
//! Guest code runs only while its task holds a [`Turn`], and a node has one turn per guest
//! thread. A call holds a turn for one poll of its future at a time: wasmtime returns from a
//! poll when the guest waits in a host call, or when it yields at an epoch check, so a guest
//! that sleeps holds no turn.
//!
//! **Who gets a turn: the tenant that has had the least.** The time each tenant's polls have
//! held turns is counted, divided by its weight (`cpu_weight`, 1 unless its configuration says
//! otherwise), as its *virtual time*. (A turn is charged for as long as it is held, whether or
//! not the OS ran its guest all that while: the turn was nobody else's meanwhile.) A freed turn
//! goes to the waiting tenant with the least virtual time; within a tenant, first come first
//! served. A tenant that had nothing to run starts again at most [`WAKE_CREDIT`] behind the
//! busiest tenant's least, so that idle time is no credit to spend later, yet a tenant that
//! computes a little at a time (most of them) is always behind one that computes without end,
//! and is served first.
//!
//! **Taking a turn back.** A call of a tenant that has had less than a tenant holding a turn
//! takes that turn at once, rather than wait for it: the guest it is taken from owes it, and
//! yields at its next epoch check (the epoch is advanced at once), and the turn it then gives
//! back is gone. So for a moment one more guest may run than there are turns; but a calm call
//! never waits for a spinning guest to reach its check, which, on a guest thread at the lowest
//! priority, can take as long as the node's network work keeps the cores busy.
//!
//! **When a guest gives its turn back.** Every epoch check of a running guest (at each tick,
//! and whenever a call queues for a turn that another tenant holds, or takes one, which
//! advances the epoch at once) asks [`CpuScheduler::should_yield`]: a guest yields when it owes
//! a turn, when a tenant with less virtual time waits, and in any case once its poll has run for
//! a [`SLICE`] (so that its deadline is looked at, and the runtime it runs on gets to its other
//! tasks). So a spinning guest shares its turn with other spinners a slice at a time.
//!
//! **Where a call waits.** A node claims a call's first turn before the call starts
//! ([`CpuScheduler::claim`]): a free turn, with which the call's first slice runs in place; or
//! a place in the tenant's queue, taken then, so that the guests holding the turns are asked to
//! yield at once. A call with a place waits for its turn in a task of its own, not in its
//! partition's task, which may be waiting for the server meanwhile: a turn handed to a waiter
//! is used at once. It then runs its first slice there, as if it had found the turn free.
//! (It used to wait on a guest thread, where, with one guest thread, it could only queue once
//! the spinning guest on that thread had reached its next tick: every call of a calm tenant
//! waited a tick.)
//!
//! The same polls measure each call's CPU time, read from the CPU clock of the thread each poll
//! runs on ([`CpuMeter`]), which the epoch callback holds against the tenant's CPU time per
//! message, and each tenant's total guest CPU time and time spent waiting for a turn, which the
//! node's metrics report.
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

/// How long a poll may go on unless a tenant that has had less waits. Half the epoch tick, so
/// that a guest yields at the first tick that finds it this far into its poll.
pub(crate) const SLICE: Duration = Duration::from_millis(5);

/// How far behind the others a tenant that had nothing to run may start again: what lets a
/// tenant that computes a little at a time be served before one that never stops.
pub(crate) const WAKE_CREDIT: Duration = Duration::from_millis(20);

/// The weight of a tenant whose configuration names none.
pub const DEFAULT_CPU_WEIGHT: u32 = 1;

/// Hands out the node's turns. One per engine; shared by every tenant's instances.
pub(crate) struct CpuScheduler {
    state: Mutex<Queue>,
    /// Advanced when a call queues behind another tenant, so that running guests ask at once
    /// whether to yield.
    engine: wasmtime::EngineWeak,
}

impl std::fmt::Debug for CpuScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuScheduler").finish_non_exhaustive()
    }
}

/// Virtual time: nanoseconds of holding turns, divided by the tenant's weight.
type Virtual = u128;

fn virtual_time(spent: Duration, weight: u32) -> Virtual {
    spent.as_nanos() / Virtual::from(weight.max(1))
}

#[derive(Default)]
struct Queue {
    /// Turns nobody holds.
    free: usize,
    /// Every tenant that has asked for a turn on this node.
    tenants: BTreeMap<Arc<str>, Share>,
    /// The least virtual time of the tenants that wanted turns when a tenant last began to:
    /// where a tenant that had nothing to run starts again from (less the credit).
    floor: Virtual,
}

/// One tenant's part of the [`Queue`].
#[derive(Debug)]
struct Share {
    weight: u32,
    /// Time its polls have held turns so far, divided by the weight.
    vtime: Virtual,
    /// Turns it holds.
    held: usize,
    /// Turns taken from its running guests by a tenant that has had less, which they have
    /// yet to give back: its guests yield at their next check, and the turns they give back
    /// are gone.
    owed: usize,
    /// Its calls waiting for a turn, first come first.
    waiting: VecDeque<oneshot::Sender<Turn>>,
    /// What its calls have used.
    usage: CpuUsage,
}

/// What a tenant's calls have used of the guest threads on a node, as its metrics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// Guest CPU time its calls have spent.
    pub cpu: Duration,
    /// Time its calls have waited for a turn, summed over the calls.
    pub waited: Duration,
    /// Time its guests held turns without computing: the OS ran other work on their cores
    /// (guest threads run at a lower priority than the node's network work).
    pub preempted: Duration,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            weight: DEFAULT_CPU_WEIGHT,
            vtime: 0,
            held: 0,
            owed: 0,
            waiting: VecDeque::new(),
            usage: CpuUsage::default(),
        }
    }
}

impl Share {
    /// Holds a turn or waits for one.
    fn wants(&self) -> bool {
        self.held > 0 || self.waits()
    }

    /// Has a call waiting for a turn (not one that gave up: a call past its deadline).
    fn waits(&self) -> bool {
        self.waiting.iter().any(|waiter| !waiter.is_closed())
    }
}

impl Queue {
    /// `tenant`'s share, started again no further behind the others than the credit if it
    /// wanted no turn until now.
    fn share(&mut self, tenant: &Arc<str>) -> &mut Share {
        let wants = self.tenants.get(tenant).is_some_and(Share::wants);
        if !wants {
            let least = self
                .tenants
                .iter()
                .filter(|(name, share)| *name != tenant && share.wants())
                .map(|(_, share)| share.vtime)
                .min();
            if let Some(least) = least {
                self.floor = self.floor.max(least);
            }
            let start = self
                .floor
                .saturating_sub(virtual_time(WAKE_CREDIT, DEFAULT_CPU_WEIGHT));
            let share = self.tenants.entry(tenant.clone()).or_default();
            share.vtime = share.vtime.max(start);
        }
        self.tenants.entry(tenant.clone()).or_default()
    }

    fn unhold(&mut self, tenant: &Arc<str>) {
        if let Some(share) = self.tenants.get_mut(tenant) {
            share.held = share.held.saturating_sub(1);
        }
    }

    fn charge(&mut self, tenant: &Arc<str>, used: Used, waited: Duration) {
        if let Some(share) = self.tenants.get_mut(tenant) {
            share.vtime += virtual_time(used.held, share.weight);
            share.usage.cpu += used.cpu;
            share.usage.waited += waited;
            share.usage.preempted += used.held.saturating_sub(used.cpu);
        }
    }

    /// Gives `tenant` a turn held by the tenant that has had the most, if that is more than
    /// `tenant` has had: its guest gives it back at its next check. Without this, a calm
    /// tenant's call would wait until the guest holding the turn ran to that check, and a
    /// guest thread, at the lowest priority, may wait for a core for a while first: the node's
    /// network work, which the calm tenant's messages need too, runs before it.
    fn take_from_one_that_had_more(&mut self, tenant: &Arc<str>) -> bool {
        let mine = self.share(tenant).vtime;
        let Some(holder) = (self.tenants.iter())
            .filter(|(name, share)| *name != tenant && share.held > 0 && share.vtime > mine)
            .max_by_key(|(_, share)| share.vtime)
            .map(|(name, _)| name.clone())
        else {
            return false;
        };
        if let Some(share) = self.tenants.get_mut(&holder) {
            share.held -= 1;
            share.owed += 1;
        }
        // Its share as `share` made it above: asking again, with the holder's turn gone, could
        // move where it starts from.
        if let Some(share) = self.tenants.get_mut(tenant) {
            share.held += 1;
        }
        true
    }

    /// The next waiter: the first of the waiting tenant with the least virtual time.
    fn next_waiter(&mut self) -> Option<(Arc<str>, oneshot::Sender<Turn>)> {
        loop {
            let (tenant, share) = self
                .tenants
                .iter_mut()
                .filter(|(_, share)| !share.waiting.is_empty())
                .min_by_key(|(_, share)| share.vtime)?;
            let waiter = share.waiting.pop_front()?;
            if !waiter.is_closed() {
                return Some((tenant.clone(), waiter));
            }
        }
    }

    /// Whether a guest of `tenant`, `slice` into its poll, should give its turn back: after a
    /// slice in any case (so that the call's deadline and the runtime's other tasks are
    /// looked at), and before it if a tenant that has had less waits.
    fn should_yield(&self, tenant: &str, slice: Duration) -> bool {
        if slice >= SLICE {
            return true;
        }
        let Some(me) = self.tenants.get(tenant) else {
            return false;
        };
        if me.owed > 0 {
            return true;
        }
        let mine = me.vtime + virtual_time(slice, me.weight);
        self.tenants
            .iter()
            .any(|(name, share)| &**name != tenant && share.waits() && share.vtime < mine)
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

    /// Sets `tenant`'s weight: its share of the guest threads' time against the others' when
    /// all want more than they get.
    pub(crate) fn set_weight(&self, tenant: &Arc<str>, weight: u32) {
        self.lock()
            .tenants
            .entry(tenant.clone())
            .or_default()
            .weight = weight.max(1);
    }

    /// What `tenant`'s calls have used so far, counting every poll that has ended.
    pub(crate) fn usage(&self, tenant: &str) -> CpuUsage {
        self.lock()
            .tenants
            .get(tenant)
            .map_or(CpuUsage::default(), |share| share.usage)
    }

    /// A call's first turn: a free one, or else a place in `tenant`'s queue.
    pub(crate) fn claim(self: &Arc<Self>, tenant: &Arc<str>) -> Claim {
        match self.try_turn(tenant) {
            Ok(turn) => Claim::Turn(turn),
            Err(place) => Claim::Place(place),
        }
    }

    /// A turn now, or a place in `tenant`'s queue; none is free while anybody waits for one.
    fn try_turn(self: &Arc<Self>, tenant: &Arc<str>) -> Result<Turn, Place> {
        let mut queue = self.lock();
        if queue.free > 0 {
            queue.free -= 1;
            queue.share(tenant).held += 1;
            return Ok(Turn::new(self.clone(), tenant.clone()));
        }
        if queue.take_from_one_that_had_more(tenant) {
            drop(queue);
            // The guest it was taken from yields at its next check, now.
            if let Some(engine) = self.engine.upgrade() {
                engine.increment_epoch();
            }
            return Ok(Turn::new(self.clone(), tenant.clone()));
        }
        let (sender, receiver) = oneshot::channel();
        queue.share(tenant).waiting.push_back(sender);
        let behind_another = queue
            .tenants
            .iter()
            .any(|(name, share)| name != tenant && share.held > 0);
        drop(queue);
        // The guests of the other tenants ask whether to yield now, not at the next tick.
        if behind_another && let Some(engine) = self.engine.upgrade() {
            engine.increment_epoch();
        }
        Err(Place {
            receiver,
            since: Instant::now(),
        })
    }

    /// Whether a guest of `tenant`, `slice` into its poll, should give its turn back: asked at
    /// its epoch checks.
    pub(crate) fn should_yield(&self, tenant: &str, slice: Duration) -> bool {
        self.lock().should_yield(tenant, slice)
    }

    /// Counts what a turn of `tenant`'s was used for, and gives it back: to the next waiter, or
    /// to the free pool; or to nobody, if it was taken from the tenant already.
    fn give_back(self: &Arc<Self>, tenant: &Arc<str>, used: Used, waited: Duration) {
        let mut queue = self.lock();
        queue.charge(tenant, used, waited);
        if let Some(share) = queue.tenants.get_mut(tenant)
            && share.owed > 0
        {
            share.owed -= 1;
            return;
        }
        queue.unhold(tenant);
        loop {
            let Some((next, waiter)) = queue.next_waiter() else {
                queue.free += 1;
                return;
            };
            queue.share(&next).held += 1;
            drop(queue);
            match waiter.send(Turn::new(self.clone(), next.clone())) {
                Ok(()) => return,
                // The waiter left between being picked and being sent the turn: pass it on.
                Err(turn) => {
                    turn.disarm();
                    queue = self.lock();
                    queue.unhold(&next);
                }
            }
        }
    }
}

/// A call's first turn, claimed before the call starts ([`CpuScheduler::claim`]).
#[derive(Debug)]
pub enum Claim {
    /// A turn that was free.
    Turn(Turn),
    /// A place in the tenant's queue.
    Place(Place),
}

/// A place in a tenant's queue for a turn.
#[derive(Debug)]
pub struct Place {
    receiver: oneshot::Receiver<Turn>,
    since: Instant,
}

impl Place {
    /// Waits for the turn, which counts the wait; `None` if the place was lost (the scheduler
    /// never drops one while it lives), and the call is to queue again.
    pub async fn turn(self) -> Option<Turn> {
        let mut turn = self.receiver.await.ok()?;
        turn.waited = self.since.elapsed();
        Some(turn)
    }
}

/// The right to run guest code on one guest thread; given back when dropped.
#[derive(Debug)]
pub struct Turn {
    scheduler: Option<Arc<CpuScheduler>>,
    tenant: Arc<str>,
    /// How long its call waited for it.
    waited: Duration,
}

impl Turn {
    fn new(scheduler: Arc<CpuScheduler>, tenant: Arc<str>) -> Self {
        Self {
            scheduler: Some(scheduler),
            tenant,
            waited: Duration::ZERO,
        }
    }

    /// Gives the turn back, counting what it was `used` for, and the wait for the turn.
    fn finish(mut self, used: Used) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.give_back(&self.tenant, used, self.waited);
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
            scheduler.give_back(&self.tenant, Used::default(), Duration::ZERO);
        }
    }
}

/// The CPU time a call's polls took on the threads they ran on, counting the poll under way, and
/// how long that poll has held its turn. Shared by the call's [`Fair`] future and the store's
/// epoch callback.
///
/// The two differ when the OS runs something else on the guest's thread meanwhile (a guest
/// thread runs at a low priority, and the node's network work, or a NATS server on the same
/// machine, gets the core first): that time is no CPU time of the tenant's, and counts neither
/// against its CPU time per message nor in its metrics; but the turn was held all along, and
/// the scheduler charges it (see [`Used`]).
#[derive(Debug, Default)]
pub(crate) struct CpuMeter(Mutex<Meter>);

#[derive(Debug, Default)]
struct Meter {
    /// CPU time of the polls that have ended.
    cpu: Duration,
    /// The poll under way, if any.
    poll: Option<PollStart>,
}

/// When a poll began, on the clock and on its thread's CPU clock.
#[derive(Debug, Clone, Copy)]
struct PollStart {
    at: Instant,
    thread_cpu: Duration,
}

/// What one poll of a call used, which its turn is charged when given back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Used {
    /// How long it held the turn: what the scheduler shares out.
    pub(crate) held: Duration,
    /// The CPU time its thread spent meanwhile: what the tenant's metrics report.
    pub(crate) cpu: Duration,
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

impl CpuMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new call at zero.
    pub(crate) fn reset(&self) {
        *self.lock() = Meter::default();
    }

    /// The call's CPU time so far. Inside a poll (at an epoch check) it is asked on the thread
    /// the poll runs on, whose CPU clock the poll under way is read from; between polls (once
    /// the call is over) it is the polls that have ended.
    pub(crate) fn spent(&self) -> Duration {
        let meter = self.lock();
        meter.cpu
            + meter.poll.map_or(Duration::ZERO, |poll| {
                thread_cpu().saturating_sub(poll.thread_cpu)
            })
    }

    /// How long the poll under way has held its turn.
    pub(crate) fn slice(&self) -> Duration {
        self.lock()
            .poll
            .map_or(Duration::ZERO, |poll| poll.at.elapsed())
    }

    fn poll_started(&self) {
        self.lock().poll = Some(PollStart {
            at: Instant::now(),
            thread_cpu: thread_cpu(),
        });
    }

    /// Ends the poll under way, and returns what it used.
    fn poll_ended(&self) -> Used {
        let mut meter = self.lock();
        let used = meter.poll.take().map_or(Used::default(), |poll| Used {
            held: poll.at.elapsed(),
            cpu: thread_cpu().saturating_sub(poll.thread_cpu),
        });
        meter.cpu += used.cpu;
        used
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

    /// Runs `call` on the guest threads; its result comes back through the handle.
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
/// Not `SCHED_IDLE`, though it protects a calm tenant better beside a spinning one (a core running
/// only `SCHED_IDLE` threads counts as idle, so the node's threads wake there and preempt the
/// guest at once, where beside one at nice 10 they queue for the other core): under it a guest
/// that legitimately computes gets only the cores' idle time, and on a busy node runs into its
/// deadline (BENCHMARKS.md, "A spinning neighbour").
const GUEST_NICENESS: i32 = 10;

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), GUEST_NICENESS) {
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
    /// The turn for the next poll, if the call has one.
    turn: Option<Turn>,
    /// Its place in the queue, if it waits for one.
    waiting: Option<Place>,
}

impl<F: Future> Fair<F> {
    /// `call`, beginning with `first` if it was claimed beforehand.
    pub(crate) fn new(
        call: F,
        scheduler: Arc<CpuScheduler>,
        tenant: Arc<str>,
        meter: Arc<CpuMeter>,
        first: Option<Claim>,
    ) -> Self {
        let (turn, waiting) = match first {
            Some(Claim::Turn(turn)) => (Some(turn), None),
            Some(Claim::Place(place)) => (None, Some(place)),
            None => (None, None),
        };
        Self {
            call: Box::pin(call),
            scheduler,
            tenant,
            meter,
            turn,
            waiting,
        }
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let turn = loop {
            if let Some(turn) = this.turn.take() {
                break turn;
            }
            if let Some(place) = &mut this.waiting {
                match Pin::new(&mut place.receiver).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(mut turn)) => {
                        turn.waited = place.since.elapsed();
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
                Err(place) => this.waiting = Some(place),
            }
        };
        this.meter.poll_started();
        let result = this.call.as_mut().poll(cx);
        turn.finish(this.meter.poll_ended());
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

    /// A turn for `name`, free or taken from a tenant that has had more; there must be one.
    fn take(scheduler: &Arc<CpuScheduler>, name: &str) -> Turn {
        match scheduler.claim(&tenant(name)) {
            Claim::Turn(turn) => turn,
            Claim::Place(_) => panic!("{name} found no free turn"),
        }
    }

    /// A place in `name`'s queue; there must be no turn to have.
    fn queue(scheduler: &Arc<CpuScheduler>, name: &str) -> Place {
        match scheduler.claim(&tenant(name)) {
            Claim::Turn(_) => panic!("{name} found a free turn"),
            Claim::Place(place) => place,
        }
    }

    /// The turn handed to `place`, if it has been.
    fn handed(place: &mut Place) -> Option<Turn> {
        place.receiver.try_recv().ok()
    }

    /// A poll that held its turn for `ran` and computed all the while.
    fn computed(ran: Duration) -> Used {
        Used {
            held: ran,
            cpu: ran,
        }
    }

    /// Runs a turn of `name`'s for `ran` of (pretended) guest CPU time, and gives it back.
    fn run(scheduler: &Arc<CpuScheduler>, name: &str, ran: Duration) {
        take(scheduler, name).finish(computed(ran));
    }

    #[test]
    fn free_turns_are_handed_out_then_waiters_queue() {
        let scheduler = scheduler(1);
        let first = take(&scheduler, "a");
        let mut waiting = queue(&scheduler, "b");
        assert!(handed(&mut waiting).is_none(), "the only turn is held");
        drop(first);
        assert!(
            handed(&mut waiting).is_some(),
            "the freed turn went to the waiter"
        );
        assert!(
            matches!(scheduler.claim(&tenant("c")), Claim::Turn(_)),
            "free again"
        );
    }

    #[test]
    fn a_freed_turn_goes_to_the_waiting_tenant_that_has_had_the_least() {
        let scheduler = scheduler(1);
        run(&scheduler, "busy", Duration::from_secs(5));
        // Held by a tenant that has had no more than anybody, so nobody takes it.
        let held = take(&scheduler, "holder");
        // The busy tenant queues three calls before the quiet one queues its first.
        let mut places: Vec<(&str, Place)> = ["busy", "busy", "busy", "quiet"]
            .into_iter()
            .map(|name| (name, queue(&scheduler, name)))
            .collect();
        held.finish(computed(SLICE));
        let mut served = Vec::new();
        for _ in 0..4 {
            let Some((index, turn)) = places
                .iter_mut()
                .enumerate()
                .find_map(|(i, (_, place))| handed(place).map(|turn| (i, turn)))
            else {
                panic!("no waiter holds the turn");
            };
            served.push(places.remove(index).0);
            turn.finish(computed(Duration::from_micros(10)));
        }
        assert_eq!(served, ["quiet", "busy", "busy", "busy"]);
    }

    #[test]
    fn a_spinning_guest_yields_at_once_to_a_tenant_that_has_had_less_and_otherwise_after_a_slice() {
        let scheduler = scheduler(1);
        run(&scheduler, "spinner", Duration::from_secs(1));
        let _spinning = take(&scheduler, "spinner");
        let just_begun = Duration::from_micros(50);
        assert!(
            !scheduler.should_yield("spinner", just_begun),
            "nobody waits: it goes on"
        );
        assert!(
            scheduler.should_yield("spinner", SLICE),
            "after a slice, it yields in any case"
        );
        let _own = queue(&scheduler, "spinner");
        assert!(
            !scheduler.should_yield("spinner", just_begun),
            "its own next call waits for the slice"
        );
        let _calm = take(&scheduler, "calm");
        assert!(
            scheduler.should_yield("spinner", just_begun),
            "a tenant that has had less took its turn"
        );
    }

    #[test]
    fn a_turn_taken_from_a_running_guest_is_gone_when_that_guest_yields() {
        let scheduler = scheduler(1);
        run(&scheduler, "spinner", Duration::from_secs(1));
        let spinning = take(&scheduler, "spinner");
        let calm = take(&scheduler, "calm");
        spinning.finish(computed(Duration::from_micros(30)));
        let mut again = queue(&scheduler, "spinner");
        assert!(
            handed(&mut again).is_none(),
            "the calm tenant holds the only turn"
        );
        assert!(!scheduler.should_yield("calm", Duration::from_micros(1)));
        drop(calm);
        let Some(_turn) = handed(&mut again) else {
            panic!("the calm tenant's turn was not handed on");
        };
        let _none_free = queue(&scheduler, "spinner");
    }

    #[test]
    fn a_tenant_that_has_had_more_waits_for_the_slice() {
        let scheduler = scheduler(1);
        run(&scheduler, "spinner", Duration::from_secs(1));
        let _ahead = take(&scheduler, "other");
        let _behind = queue(&scheduler, "spinner");
        assert!(!scheduler.should_yield("other", Duration::from_micros(50)));
        assert!(scheduler.should_yield("other", SLICE));
    }

    #[test]
    fn idle_time_is_no_credit_beyond_the_wake_credit() {
        let scheduler = scheduler(1);
        // Both spin for a while; then "sleeper" stops while "spinner" goes on for a minute.
        run(&scheduler, "sleeper", Duration::from_secs(1));
        run(&scheduler, "spinner", Duration::from_secs(1));
        let spinning = take(&scheduler, "spinner");
        spinning.finish(computed(Duration::from_secs(60)));
        let _spinning = take(&scheduler, "spinner");
        // The sleeper comes back: it is ahead, but only by the credit.
        let back = take(&scheduler, "sleeper");
        assert!(scheduler.should_yield("spinner", Duration::from_micros(1)));
        drop(_spinning);
        back.finish(computed(WAKE_CREDIT * 2));
        let _sleeper = take(&scheduler, "sleeper");
        let _spinner = take(&scheduler, "spinner");
        assert!(
            scheduler.should_yield("sleeper", Duration::from_micros(1)),
            "past the credit, the sleeper is no longer ahead"
        );
    }

    #[test]
    fn a_weight_is_a_share_of_the_cpu() {
        let scheduler = scheduler(1);
        scheduler.set_weight(&tenant("heavy"), 2);
        // Two seconds at weight 2 are less than 1.2 at weight 1.
        run(&scheduler, "heavy", Duration::from_secs(2));
        run(&scheduler, "light", Duration::from_millis(1200));
        let heavy = take(&scheduler, "heavy");
        let light = queue(&scheduler, "light");
        assert!(!scheduler.should_yield("heavy", Duration::from_micros(1)));
        drop(light);
        drop(heavy);
        let _light = take(&scheduler, "light");
        let _heavy = take(&scheduler, "heavy");
        assert!(scheduler.should_yield("light", Duration::from_micros(1)));
    }

    #[test]
    fn usage_counts_what_ran_and_what_waited() {
        let scheduler = scheduler(1);
        let mut turn = take(&scheduler, "a");
        turn.waited = Duration::from_millis(7);
        turn.finish(computed(Duration::from_millis(3)));
        run(&scheduler, "a", Duration::from_millis(1));
        assert_eq!(
            scheduler.usage("a"),
            CpuUsage {
                cpu: Duration::from_millis(4),
                waited: Duration::from_millis(7),
                preempted: Duration::ZERO,
            }
        );
        assert_eq!(scheduler.usage("nobody"), CpuUsage::default());
    }

    #[test]
    fn a_waiter_that_left_does_not_swallow_the_turn() {
        let scheduler = scheduler(1);
        let held = take(&scheduler, "a");
        let gone = queue(&scheduler, "b");
        let mut staying = queue(&scheduler, "c");
        drop(gone);
        drop(held);
        assert!(handed(&mut staying).is_some());
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
        let other = take(&scheduler, "other");
        drop(other);
        assert!(finish.send(()).is_ok(), "the call stopped waiting");
        assert!(matches!(
            futures::poll!(waiting.as_mut()),
            Poll::Ready(Ok(()))
        ));
    }

    #[tokio::test]
    async fn a_call_that_claimed_a_place_runs_when_the_turn_is_handed_to_it() {
        let scheduler = scheduler(1);
        let held = take(&scheduler, "spinner");
        let place = queue(&scheduler, "calm");
        let mut call = std::pin::pin!(Fair::new(
            std::future::ready(()),
            scheduler.clone(),
            tenant("calm"),
            Arc::new(CpuMeter::default()),
            Some(Claim::Place(place)),
        ));
        assert!(
            futures::poll!(call.as_mut()).is_pending(),
            "its turn is held"
        );
        drop(held);
        assert!(futures::poll!(call.as_mut()).is_ready());
        assert!(
            scheduler.usage("calm").waited > Duration::ZERO,
            "its wait was counted"
        );
    }

    #[test]
    fn a_turn_held_while_the_os_ran_something_else_is_charged_but_is_no_cpu_time_of_its() {
        let scheduler = scheduler(1);
        let preempted = Used {
            held: Duration::from_secs(1),
            cpu: Duration::ZERO,
        };
        take(&scheduler, "preempted").finish(preempted);
        let usage = scheduler.usage("preempted");
        assert_eq!(usage.cpu, Duration::ZERO);
        assert_eq!(usage.preempted, Duration::from_secs(1));
        let _held_again = take(&scheduler, "preempted");
        // It has held turns for longer than a tenant new to them, which takes its turn.
        let _calm = take(&scheduler, "calm");
    }

    #[tokio::test]
    async fn a_call_that_sleeps_in_a_poll_holds_its_turn_but_uses_no_cpu_time() {
        let scheduler = scheduler(1);
        let meter = Arc::new(CpuMeter::default());
        let sleeps = async { std::thread::sleep(Duration::from_millis(50)) };
        Fair::new(sleeps, scheduler.clone(), tenant("sleepy"), meter, None).await;
        let cpu = scheduler.usage("sleepy").cpu;
        assert!(
            cpu < Duration::from_millis(25),
            "counted {cpu:?} of CPU time"
        );
        let _held_again = take(&scheduler, "sleepy");
        let _calm = take(&scheduler, "calm");
    }
}
