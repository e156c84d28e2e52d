//! The partition pipeline: up to a window of messages in flight per partition, handed to the
//! handler one at a time in stream order, settled in that order once their outputs are stored.
//!
//! ```text
//! consumer (MaxAckPending W) ──► window ──► the call ──► verdict ──► settling, in order:
//!   pull stream, batches of W    by stream    one at a    (a pure      store outputs (the next
//!   pin advisories               sequence     time        function)   message's wait for these),
//!                                                 │                   then +ACK; or +TERM
//!                                                 └─ retry: the message stays in hand, the
//!                                                    worker waits out the delay itself and
//!                                                    calls again; everything behind it waits
//! ```
//!
//! One task owns every stage's state, and the stages are futures it polls side by side: while
//! a message's outputs are being stored, the next message is already in the handler; but no
//! message's outputs are sent before every earlier message's are stored, so the output stream
//! keeps input order even when a publish fails and is tried again.
//!
//! **Attempts are weir's.** A retry never goes back to the server: the worker holds the message
//! (and everything behind it) and keeps the whole window alive with `+WPI`. It counts attempts
//! itself and records each failure with its count in `weir_failures`, so a node that takes the
//! message over (after a crash, a reclaim or a handoff) continues the count. After the last
//! attempt it terminates the message, recorded as giving up, which the dead-letter mover turns
//! into a `max_deliveries` dead letter. The consumer's MaxDeliver is a backstop above that.
//!
//! **Acks are plain**, and confirmed in batches: the last one is confirmed at every tick that
//! keeps the window alive, and before the worker lets its partition go. A redelivery of a
//! message this worker already settled is settled again without calling the handler.
//!
//! **Exclusive delivery and handoff** are in [`pin`]: only the pinned pull stream receives
//! messages; a newly pinned worker resets the consumer when a previous holder may still have
//! some; a worker told to stop (placement moved the partition, the node drains, the deployment
//! was withdrawn or changed its consumer) stops calling the handler, finishes the message in
//! hand and settles what it computed, then confirms its acks, resets the consumer to its ack
//! floor (the rest of its window goes to the next holder, in order) and unpins.
//!
//! **Fencing.** A worker sends outputs, state changes, acks and terminations only while it
//! knows the partition is still its own: once it has not heard from the server for half the pin
//! timeout (a pause, a cut) or its connection was made again, it asks the server whose the pin
//! is before it sends anything more, and drops what it holds if it cannot be sure ([`lease`]).
//!
//! **Pause.** While its deployment is paused, a worker finishes the message in hand (a call, or
//! a retry's wait), then hands the handler nothing more: it keeps what it pulled, alive with
//! `+WPI`, keeps its instance and its place, and says so to the registry; a resume goes on in
//! order. A crashed node's partition is taken over in [`pin::take_over`].
//!
//! A worker runs inside a `partition` span carrying `tenant`, `handler` and `partition`, so its
//! events, and its handler's log lines, name them without repeating them.

mod call;
mod consumer;
mod lease;
mod outputs;
mod pin;
mod settle;
mod verdict;
mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::call::CallResult;
use self::consumer::Pulling;
use self::lease::{Lease, Ownership};
use self::outputs::NotStored;
use self::pin::{Pin, Pinned};
use self::settle::{Attempted, Recorded};
use self::verdict::{Ended, Verdict};
use self::window::{Delivery, Window};
use crate::control::DeploymentId;
use crate::deployment::SharedDeployment;
use crate::failures;
use crate::host::{GuestThreads, HandlerFailure, HandlerInstance, Output};
use crate::observe::metrics::{FailureKind, Metrics, Outcome, PartitionMetrics, Quota};
use crate::state::{Changes, CommitError, PartitionState, Refusals, Writes};
use crate::tenants::Tenant;

/// Wait before re-creating a consumer or pull that failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How soon a worker on standby looks for messages left in hand by a holder that died, once it
/// has reason to (it subscribed, the pin ran out, it saw some once), and how often otherwise.
const RECLAIM_CHECK: Duration = Duration::from_secs(1);
const RECLAIM_CHECK_IDLE: Duration = Duration::from_secs(30);
/// The most messages whose changes are committed together.
const COMMIT_GROUP: usize = 256;
/// Bounds of the pause between attempts to store a message's outputs.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// How long the server keeps a client pinned after its last pull: with the membership TTL,
/// how long a dead node's partitions wait before a survivor may take them.
pub const DEFAULT_PIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one partition of one deployment on this node.
pub(crate) struct PartitionWorker {
    partition: u32,
    updates: watch::Receiver<SharedDeployment>,
    deployment: SharedDeployment,
    /// The warm instance; `None` until the first message, after a failure, after a swap, and
    /// while a call has it.
    instance: Option<HandlerInstance>,
    /// A redeploy arrived while a call had the instance: it is not used again.
    instance_outdated: bool,
    /// The partition's state, once a version that keeps state has been called.
    state: Option<Arc<PartitionState>>,
    pin: Pin,
    /// When the worker last heard from the server, which says whether it must ask before it
    /// stores anything (see [`lease`]).
    lease: Arc<Lease>,
    /// The first message after a new pin may be one a previous holder attempted.
    taken_over: bool,
    /// The consumer sequence the next delivery must have, while pinned.
    next_consumer_seq: Option<u64>,
    window: Window,
    /// The message in the handler, or waiting out a retry's delay.
    in_hand: Option<InHand>,
    /// Messages whose calls are over, in stream order, each settled once those before it are.
    settling: VecDeque<Settling>,
    /// The last message this worker settled, whose confirmed ack confirms every earlier one.
    last_settled: Option<Settled>,
    /// Set once the worker must stop calling the handler: what to do when the pipeline is empty.
    fence: Option<Next>,
    js: jetstream::Context,
    /// Where handler calls run.
    guests: Arc<GuestThreads>,
    /// Where failures, and attempt counts, are recorded.
    failures: kv::Store,
    /// The deployment records.
    deployments: kv::Store,
    node_id: String,
    pin_timeout: Duration,
    /// This partition's series, and the node's totals.
    metrics: PartitionMetrics,
    /// When the call in flight began.
    call_started: Option<std::time::Instant>,
    /// Says when the tenant wants the memory of idle instances back.
    memory_wanted: watch::Receiver<()>,
    /// Whether the partition waits for capacity, as last told to the registry.
    waiting: bool,
    /// Whether the partition holds its messages for a pause, as last told to the registry.
    paused: bool,
    /// The pin this worker holds, as last told to the registry.
    reported_pin: Option<String>,
    /// The node that held the partition before and left without handing it off, and its pin.
    takeover: Option<Takeover>,
    /// The node's own connection (a tenant's may not ask about nodes).
    control: async_nats::Client,
    reports: mpsc::UnboundedSender<PartitionReport>,
    stop: CancellationToken,
}

/// A partition taken from a node that left the membership without handing it off, and the pin
/// that node said it held: if the consumer still has that pin and the node's connection is gone
/// (it crashed), the new owner releases the pin rather than wait for it to time out.
#[derive(Debug, Clone)]
pub(crate) struct Takeover {
    pub(crate) node: String,
    pub(crate) pin: String,
}

/// What a worker tells the registry about its partition, which reports it in `weir_status`.
#[derive(Debug)]
pub(crate) struct PartitionReport {
    pub(crate) id: DeploymentId,
    pub(crate) partition: u32,
    pub(crate) change: Change,
}

/// See [`PartitionReport`].
#[derive(Debug)]
pub(crate) enum Change {
    /// A wait for capacity begun, with its reason, or over.
    Waiting(Option<String>),
    /// The partition holds its messages for a pause (the message in hand is finished), or
    /// runs again.
    Paused(bool),
    /// The worker holds the consumer's pin (its id), or none: it is on standby, or its
    /// partition is idle (the next delivery pins it).
    Pin(Option<String>),
    /// A call had writes to its state refused by the tenant's quotas.
    StateRefused(Refusals),
}

/// The message in hand.
struct InHand {
    delivery: Delivery,
    /// The attempt the next (or current) call is.
    attempt: u32,
    /// The server terminated the message during its call: the call's end is ignored.
    terminated: bool,
}

/// A message whose call is over, waiting for its turn to be settled.
struct Settling {
    delivery: Delivery,
    /// The attempt its call was.
    attempt: u32,
    then: Then,
}

enum Then {
    /// Store the outputs, then ack.
    Ack { outputs: Arc<[Output]> },
    /// `+TERM` with this reason: its failure record is written.
    Term { reason: String },
}

/// How the last settled message was settled.
struct Settled {
    delivery: Delivery,
    /// The `+TERM` reason, or `None` for an ack.
    term: Option<String>,
    /// Whether the server confirmed it (and with it every earlier ack).
    confirmed: bool,
}

/// What the worker does once its pipeline is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Subscribe again at once: the deployment changed its consumer.
    Move,
    /// Subscribe again after a pause: the subscription failed.
    Resubscribe,
    Stop,
}

/// The stages in flight, polled side by side with the pull stream.
#[derive(Default)]
struct Flight {
    /// The handler's call of the message in hand.
    call: Option<BoxFuture<'static, CallResult>>,
    /// The delay before the message in hand is called again.
    retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Storing the outputs of the first message in `settling` and committing its changes, or
    /// committing the changes of the first few, which have no outputs, together: how many
    /// it settled.
    store: Option<BoxFuture<'static, Result<usize, NotStored>>>,
    /// The pause before the next attempt to store, after one failed.
    store_delay: Duration,
}

enum Event {
    Stop,
    Swapped,
    DeploymentGone,
    Delivered(Box<jetstream::Message>),
    PullFailed(jetstream::consumer::pull::MessagesError),
    PullEnded,
    /// One of the consumer's advisories: a pin, or a termination.
    Advisory(async_nats::Message),
    ReclaimCheck,
    /// The tenant wants the memory of idle instances back.
    MemoryWanted,
    Called(CallResult),
    RetryDue,
    Stored(Result<usize, NotStored>),
    Progress,
}

/// What the partition workers of one node share, given them by the node.
#[derive(Debug, Clone)]
pub(crate) struct NodeShare {
    pub(crate) node_id: String,
    pub(crate) guests: Arc<GuestThreads>,
    pub(crate) failures: kv::Store,
    pub(crate) deployments: kv::Store,
    pub(crate) pin_timeout: Duration,
    pub(crate) metrics: Metrics,
    /// The node's own connection.
    pub(crate) client: async_nats::Client,
}

/// Waits for the future in `slot`, or forever if there is none.
async fn next_of<F: std::future::Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

impl PartitionWorker {
    pub(crate) fn new(
        partition: u32,
        mut updates: watch::Receiver<SharedDeployment>,
        node: &NodeShare,
        reports: mpsc::UnboundedSender<PartitionReport>,
        stop: CancellationToken,
        takeover: Option<Takeover>,
    ) -> Self {
        let deployment = updates.borrow_and_update().clone();
        let js = deployment.tenant.js.clone();
        let memory_wanted = deployment.context.budget.memory_wanted();
        let metrics = node.metrics.partition(&deployment.id, partition);
        Self {
            partition,
            updates,
            deployment,
            instance: None,
            instance_outdated: false,
            state: None,
            pin: Pin::default(),
            lease: Lease::new(&js.client(), node.pin_timeout),
            taken_over: false,
            next_consumer_seq: None,
            window: Window::default(),
            in_hand: None,
            settling: VecDeque::new(),
            last_settled: None,
            fence: None,
            js,
            guests: node.guests.clone(),
            failures: node.failures.clone(),
            deployments: node.deployments.clone(),
            node_id: node.node_id.clone(),
            pin_timeout: node.pin_timeout,
            metrics,
            call_started: None,
            memory_wanted,
            waiting: false,
            paused: false,
            reported_pin: None,
            takeover,
            control: node.client.clone(),
            reports,
            stop,
        }
    }

    /// Processes the partition until told to stop or until the deployment is withdrawn, then
    /// hands it off (see the module's "Exclusive delivery and handoff").
    ///
    /// The partition counts against its tenant's instances on this node from the start: when
    /// they are all in use, the worker waits, without pulling, until one is free.
    pub(crate) async fn run(mut self) {
        let tenant = self.deployment.tenant.clone();
        let _instance_permit = match tenant.instances.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let reason = format!(
                    "tenant {} already runs its quota of {} partition(s) on this node",
                    tenant.name, tenant.quotas.max_instances
                );
                self.metrics.waits_for(Quota::instances);
                tracing::warn!("waiting: {reason}");
                self.waiting_for(Some(reason));
                // The consumer, so that `weir status` counts the messages that wait meanwhile.
                let made = consumer::ensure_consumer(
                    &self.js,
                    &self.deployment,
                    self.partition,
                    self.pin_timeout,
                )
                .await;
                if let Err(error) = made {
                    tracing::warn!("{error:#}");
                }
                let Some(permit) = take_instance_permit(tenant, self.stop.clone()).await else {
                    return;
                };
                self.waiting_for(None);
                permit
            }
        };
        loop {
            let subscribed =
                consumer::subscribe(&self.js, &self.deployment, self.partition, self.pin_timeout)
                    .await;
            let next = match subscribed {
                Ok(pulling) => {
                    self.waiting_for(None);
                    if let Some(takeover) = self.takeover.take() {
                        let stream = self.deployment.spec.stream.clone();
                        let name = self.consumer_name();
                        pin::take_over(
                            &self.js,
                            &self.control,
                            &pulling.consumer,
                            &stream,
                            &name,
                            &takeover,
                        )
                        .await;
                    }
                    self.pump(pulling).await
                }
                Err(error) => {
                    tracing::error!("{error:#}; retrying in {RESUBSCRIBE_DELAY:?}");
                    // Nothing moves meanwhile, and `weir status` says why.
                    self.waiting_for(Some(format!("cannot read its consumer: {error:#}")));
                    Next::Resubscribe
                }
            };
            match next {
                Next::Stop => return,
                Next::Move => continue,
                Next::Resubscribe => {}
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
            // Subscribing makes the consumer if it is gone: not for a deployment removed
            // (`weir undeploy` deletes its consumers) before this node heard of it.
            if deployment_removed(&self.deployments, &self.deployment.id).await {
                tracing::info!("the deployment was removed; stopping");
                return;
            }
        }
    }

    /// Runs the pipeline on one subscription until it must stop or resubscribe, then lets the
    /// partition go.
    async fn pump(&mut self, mut pulling: Pulling) -> Next {
        self.pin.forget();
        // Another node may have written the state since this worker last held the partition.
        if let Some(state) = &self.state {
            state.unload();
        }
        self.fence = None;
        self.next_consumer_seq = None;
        // Sequences are the stream's as this subscription finds it: a stream created again
        // under the same name starts them over.
        self.last_settled = None;
        let mut pulling_ended = false;
        let mut flight = Flight {
            store_delay: STORE_RETRY_MIN,
            ..Flight::default()
        };
        let mut reclaim_check = Some(Box::pin(tokio::time::sleep(RECLAIM_CHECK)));
        let mut progress = progress_interval(&self.deployment);
        loop {
            self.start_work(&mut flight, &pulling).await;
            self.metrics.set_window(
                self.window.len() + usize::from(self.in_hand.is_some()) + self.settling.len(),
            );
            if let Some(next) = self.fence
                && flight.call.is_none()
                && flight.store.is_none()
                && self.settling.is_empty()
            {
                self.release(pulling).await;
                return next;
            }
            let standby = self.pin.current().is_none();
            let event = tokio::select! {
                biased;
                _ = self.stop.cancelled(), if self.fence.is_none() => Event::Stop,
                changed = self.updates.changed(), if self.fence.is_none() => match changed {
                    Ok(()) => Event::Swapped,
                    Err(_) => Event::DeploymentGone,
                },
                Some(advisory) = pulling.advisories.next() => Event::Advisory(advisory),
                // Before the stages, so that a busy pipeline still keeps its window alive.
                _ = progress.tick() => Event::Progress,
                result = next_of(&mut flight.call) => Event::Called(result),
                result = next_of(&mut flight.store) => Event::Stored(result),
                () = next_of(&mut flight.retry) => Event::RetryDue,
                next = pulling.messages.next(), if !pulling_ended => match next {
                    Some(Ok(message)) => Event::Delivered(Box::new(message)),
                    Some(Err(error)) => Event::PullFailed(error),
                    None => Event::PullEnded,
                },
                () = next_of(&mut reclaim_check), if standby && self.fence.is_none() => {
                    Event::ReclaimCheck
                }
                // An idle (or paused) worker waits for the word; a busy one looks after each call.
                Ok(()) = self.memory_wanted.changed(),
                    if self.instance.is_some()
                        && flight.call.is_none()
                        && (self.window.is_empty() || self.deployment.spec.paused) => {
                    Event::MemoryWanted
                }
            };
            match event {
                Event::Stop | Event::DeploymentGone => self.fence(Next::Stop, &mut flight),
                Event::Swapped => {
                    if self.swap() {
                        self.fence(Next::Move, &mut flight);
                    }
                }
                Event::Delivered(message) => self.delivered(*message, &pulling, &mut flight).await,
                Event::PullFailed(error) => {
                    use jetstream::consumer::pull::MessagesErrorKind as Kind;
                    tracing::warn!("pull from consumer {}: {error}", self.consumer_name());
                    if !matches!(error.kind(), Kind::MissingHeartbeat) {
                        pulling_ended = true;
                        self.fence(Next::Resubscribe, &mut flight);
                    }
                }
                Event::PullEnded => {
                    pulling_ended = true;
                    self.fence(Next::Resubscribe, &mut flight);
                }
                Event::Advisory(advisory) => {
                    if pin::unpinned(&advisory) {
                        reclaim_check = Some(Box::pin(tokio::time::sleep(RECLAIM_CHECK)));
                    }
                    if let Some(stream_seq) = consumer::terminated(&advisory) {
                        self.forget(stream_seq, &mut flight);
                    } else if self.pin.lost(&advisory) {
                        // A new holder resets the consumer and gets these again, in order.
                        self.window.clear();
                        if flight.retry.take().is_some() {
                            self.in_hand = None;
                        }
                    }
                }
                Event::ReclaimCheck => {
                    let stream = self.deployment.spec.stream.clone();
                    let found = self.pin.reclaim(&self.js, &pulling.consumer, &stream).await;
                    let next = match found {
                        pin::Reclaim::Suspect => RECLAIM_CHECK,
                        pin::Reclaim::Nothing | pin::Reclaim::Reset => RECLAIM_CHECK_IDLE,
                    };
                    if found == pin::Reclaim::Reset {
                        self.window.clear();
                    }
                    reclaim_check = Some(Box::pin(tokio::time::sleep(next)));
                }
                Event::MemoryWanted => self.give_memory_back(),
                Event::Called(result) => {
                    flight.call = None;
                    self.called(result, &mut flight, &pulling).await;
                }
                Event::RetryDue => {
                    flight.retry = None;
                    if self.pin.current().is_none() {
                        // Its holder now is another: it retries the message itself.
                        self.in_hand = None;
                    } else if self.deployment.spec.paused {
                        // First again when the deployment resumes, its attempts counted; what
                        // it waited for, it no longer does.
                        self.waiting_for(None);
                        if let Some(in_hand) = self.in_hand.take() {
                            let mut delivery = in_hand.delivery;
                            delivery.attempted = in_hand.attempt.saturating_sub(1);
                            self.window.put_back(delivery);
                        }
                    } else {
                        self.start_call(&mut flight);
                    }
                }
                Event::Stored(result) => {
                    flight.store = None;
                    self.stored(result, &mut flight, &pulling).await;
                }
                Event::Progress => self.keep_alive(&pulling, &mut flight).await,
            }
        }
    }

    /// Stops feeding the handler; once the pipeline is empty, the worker does `next`. A message
    /// waiting out a retry is left to the next holder.
    fn fence(&mut self, next: Next, flight: &mut Flight) {
        if self.fence.is_none() {
            self.fence = Some(next);
        }
        if flight.retry.take().is_some() {
            self.in_hand = None;
        }
    }

    /// Whether the partition is still this worker's to store for: at once while its lease is
    /// fresh, or else once the server says the consumer's pin is still its own. If it cannot
    /// be sure, the worker lets go of everything it holds (see [`lease`]).
    async fn still_owned(&mut self, consumer: &PullConsumer, flight: &mut Flight) -> bool {
        if self.lease.fresh() {
            return true;
        }
        match self.lease.confirm(&self.pin, consumer).await {
            Ownership::Kept => {
                tracing::debug!("the server says the partition is still this worker's");
                true
            }
            Ownership::Unsure(why) => {
                self.metrics.fenced();
                self.let_go(
                    flight,
                    &format!(
                        "not heard from the server for a while, and now not sure the partition \
                         is still this worker's ({why}): storing nothing it holds"
                    ),
                );
                false
            }
        }
    }

    /// Drops everything computed and held, stored or settled nothing more, and takes the
    /// partition's messages back from the ack floor (see [`PartitionWorker::retake`]): what it
    /// held is computed again, from the state as the bucket holds it, by whichever worker holds
    /// the partition then.
    fn let_go(&mut self, flight: &mut Flight, why: &str) {
        self.settling.clear();
        flight.call = None;
        flight.retry = None;
        flight.store = None;
        self.in_hand = None;
        self.instance = None;
        if let Some(state) = &self.state {
            state.unload();
        }
        self.retake(flight, why);
    }

    /// Takes every message above the ack floor back, in order: once the pipeline is empty, the
    /// worker resets the consumer to its ack floor (see [`PartitionWorker::release`]) and
    /// subscribes again, so that no delivery made before the reset reaches the handler after one
    /// made since.
    fn retake(&mut self, flight: &mut Flight, why: &str) {
        tracing::info!("{why}; taking the partition's messages back in order");
        self.window.clear();
        self.fence(Next::Move, flight);
    }

    /// Forgets a message the server terminated (see [`consumer::terminated`]): removed from
    /// the stream while this worker waited to call it again, say. A call in progress for it
    /// ends as usual, and its settlement is refused by the server.
    fn forget(&mut self, stream_seq: u64, flight: &mut Flight) {
        self.window.remove(stream_seq);
        let Some(in_hand) = self
            .in_hand
            .as_mut()
            .filter(|in_hand| in_hand.delivery.stream_seq == stream_seq)
        else {
            return;
        };
        tracing::info!(stream_seq, "the server terminated the message in hand");
        if flight.retry.take().is_some() {
            self.in_hand = None;
        } else {
            in_hand.terminated = true;
        }
    }

    /// Takes the newest deployment at a message boundary: the next call goes to a fresh
    /// instance of the new version. Returns whether the consumer must change too.
    fn swap(&mut self) -> bool {
        let next = self.updates.borrow_and_update().clone();
        if next.spec.runs_like(&self.deployment.spec) {
            // Paused or resumed: the same version goes on, with its instance. Its state is
            // read again on resuming, for the repairs made meanwhile (`weir state put`).
            let resumed = self.deployment.spec.paused && !next.spec.paused;
            if resumed
                && self.settling.is_empty()
                && let Some(state) = &self.state
            {
                state.unload();
            }
            self.deployment = next;
            return false;
        }
        let consumer_changed = consumer::settings_differ(&self.deployment, &next);
        tracing::info!(
            "switching from version {} to {}",
            self.deployment.spec.short_version(),
            next.spec.short_version()
        );
        self.deployment = next;
        self.instance = None;
        self.instance_outdated = true;
        consumer_changed
    }

    /// Starts whatever can start: the next message's call, and storing the outputs of the
    /// first message waiting to be settled (or settling it, if it is a termination).
    async fn start_work(&mut self, flight: &mut Flight, pulling: &Pulling) {
        let pinned = self.pin.current().is_some();
        let paused = self.deployment.spec.paused;
        // Held once the message in hand is done: a call's, or a retry's wait.
        self.paused_now(paused && flight.call.is_none() && flight.retry.is_none());
        if self.pin.current() != self.reported_pin.as_deref() && !self.stop.is_cancelled() {
            self.reported_pin = self.pin.current().map(str::to_owned);
            self.report(Change::Pin(self.reported_pin.clone()));
        }
        // Changes not yet committed are held in memory: past a bound, the commits go first.
        let committing = self
            .state
            .as_ref()
            .is_some_and(|state| state.pending_bytes() > crate::state::PENDING_BYTES);
        if flight.call.is_none()
            && flight.retry.is_none()
            && self.in_hand.is_none()
            && self.fence.is_none()
            && pinned
            && !paused
            && !committing
            && let Some(delivery) = self.window.take_first()
        {
            let recorded =
                call::attempts_made(&self.failures, &self.deployment, &delivery, self.taken_over)
                    .await;
            let made = recorded.max(delivery.attempted);
            self.taken_over = false;
            self.in_hand = Some(InHand {
                delivery,
                attempt: made.saturating_add(1),
                terminated: false,
            });
            self.start_call(flight);
        }
        while flight.store.is_none()
            && let Some(first) = self.settling.front()
        {
            match &first.then {
                Then::Ack { .. } => flight.store = self.store(),
                Then::Term { reason } => {
                    let reason = reason.clone();
                    if !self.still_owned(&pulling.consumer, flight).await {
                        break;
                    }
                    if let Some(settling) = self.settling.pop_front() {
                        self.terminate(settling.delivery, reason).await;
                    }
                }
            }
        }
    }

    /// Hands the message in hand to the handler.
    fn start_call(&mut self, flight: &mut Flight) {
        let Some(in_hand) = &self.in_hand else {
            return;
        };
        let stream = &self.deployment.spec.stream;
        let input = match call::to_input(&in_hand.delivery, stream, in_hand.attempt) {
            Ok(input) => input,
            Err(error) => {
                let error = format!("weir could not read the message: {error:#}");
                tracing::error!(stream_seq = in_hand.delivery.stream_seq, "{error}");
                let result = Err(call::CallFailure::Handle(HandlerFailure::Trap(error)));
                flight.call = Some(Box::pin(std::future::ready((None, result))));
                return;
            }
        };
        tracing::debug!(
            stream_seq = in_hand.delivery.stream_seq,
            delivery = in_hand.attempt,
            pin = self.pin.current().unwrap_or(""),
            "handling"
        );
        if let Some(bucket) = &self.deployment.state
            && self.state.is_none()
        {
            let state = PartitionState::new(
                bucket.clone(),
                self.deployment.id.clone(),
                (self.partition, self.deployment.spec.partitions),
                self.deployment.tenant.quotas.state,
            );
            self.state = Some(Arc::new(state));
        }
        // A version that keeps no state is given none, though earlier messages' changes may
        // still be committed.
        let state = self.deployment.state.as_ref().and(self.state.clone());
        let call = call::call_handler(
            self.instance.take(),
            self.deployment.clone(),
            self.guests.clone(),
            input,
            state,
        );
        self.instance_outdated = false;
        self.call_started = Some(std::time::Instant::now());
        flight.call = Some(Box::pin(call));
    }

    /// Takes in a delivered message: into the window, or, if this worker settled it already,
    /// settled again.
    async fn delivered(
        &mut self,
        message: jetstream::Message,
        pulling: &Pulling,
        flight: &mut Flight,
    ) {
        let delivery = match Delivery::new(message) {
            Ok(delivery) => delivery,
            Err(error) => {
                // No real server sends this: nothing can be done with the message but to log.
                tracing::error!("{error}; ignoring it");
                return;
            }
        };
        self.metrics.set_lag(delivery.pending);
        if self.fence.is_some() {
            // Not to be handled here: the next subscription, or the next holder, gets it.
            return;
        }
        if self.pin.track(delivery.pin()) == Pinned::Newly {
            self.taken_over = true;
            self.next_consumer_seq = None;
            if pin::pending_elsewhere(&pulling.consumer, delivery.consumer_seq).await {
                self.retake(
                    flight,
                    "newly pinned while an earlier holder's messages are pending",
                );
                return;
            }
        }
        // While pinned, every delivery of the consumer comes here, numbered one after the
        // other: a missing number is a delivery lost on the way (a reconnection), and the
        // message it carried may come before those that follow it.
        if let Some(expected) = self.next_consumer_seq
            && delivery.consumer_seq > expected
        {
            self.retake(flight, "a delivery went missing");
            return;
        }
        self.next_consumer_seq = Some(delivery.consumer_seq + 1);
        if let Some(settled) = &self.last_settled
            && delivery.stream_seq <= settled.delivery.stream_seq
        {
            if self.still_owned(&pulling.consumer, flight).await {
                self.settle_again(delivery).await;
            }
            return;
        }
        if let Some(in_hand) = &mut self.in_hand
            && in_hand.delivery.stream_seq == delivery.stream_seq
        {
            in_hand.delivery = delivery;
            return;
        }
        if self
            .settling
            .iter()
            .any(|s| s.delivery.stream_seq == delivery.stream_seq)
        {
            return;
        }
        self.window.hold(delivery);
    }

    /// Settles again a message this worker settled before, without calling the handler: its
    /// ack or termination did not reach the server. Only the last settled message's
    /// termination is remembered; an earlier one is acked (its dead letter is then missing,
    /// which needs a `+TERM` lost on its way and a redelivery of that very message).
    async fn settle_again(&mut self, delivery: Delivery) {
        let term = self
            .last_settled
            .as_ref()
            .filter(|settled| settled.delivery.stream_seq == delivery.stream_seq)
            .and_then(|settled| settled.term.clone());
        tracing::debug!(
            stream_seq = delivery.stream_seq,
            "already settled; settling it again"
        );
        let settled = match term {
            Some(reason) => settle::term(&self.js, &delivery, &reason).await,
            None => settle::ack(&delivery).await,
        };
        if let Err(error) = settled {
            tracing::warn!("{error:#}");
        }
    }

    /// Carries out the verdict on a call.
    async fn called(
        &mut self,
        (instance, result): CallResult,
        flight: &mut Flight,
        pulling: &Pulling,
    ) {
        if !std::mem::take(&mut self.instance_outdated) {
            self.instance = instance;
        }
        if self.memory_wanted.has_changed().unwrap_or(false) {
            self.memory_wanted.mark_unchanged();
            self.give_memory_back();
        }
        let Some(in_hand) = self.in_hand.take().filter(|in_hand| !in_hand.terminated) else {
            return;
        };
        let failure = result.as_ref().err().map(ToString::to_string);
        let ended = match (&result, &failure) {
            (Ok(handled), _) => Ended::Answered(&handled.outcome),
            (Err(kind), Some(failure)) if kind.is_capacity() => {
                if kind.is_memory_quota() {
                    self.deployment.context.budget.want_memory();
                    // The others'; this worker's instance is gone with the failed call.
                    self.memory_wanted.mark_unchanged();
                }
                Ended::NoCapacity(failure)
            }
            (Err(_), Some(failure)) => Ended::Failed(failure),
            (Err(_), None) => Ended::Failed("the call failed"),
        };
        let verdict = verdict::decide(ended, in_hand.attempt, &self.deployment.spec.retry);
        let took = self
            .call_started
            .take()
            .map_or(Duration::ZERO, |started| started.elapsed());
        match (&result, &verdict) {
            (Err(call_failure), Verdict::Wait { .. }) => {
                if call_failure.is_memory_quota() {
                    self.metrics.waits_for(Quota::memory);
                } else if let Some(kind) = FailureKind::of(call_failure.failure()) {
                    // No instance could start: no call was made, but something failed.
                    self.metrics.failed(kind);
                }
            }
            (Err(call_failure), _) => {
                self.metrics.called(Outcome::failure, took);
                if let Some(kind) = FailureKind::of(call_failure.failure()) {
                    self.metrics.failed(kind);
                }
                tracing::warn!(
                    stream_seq = in_hand.delivery.stream_seq,
                    delivery = in_hand.attempt,
                    "handler failed: {}; instance replaced",
                    failure.as_deref().unwrap_or("")
                );
            }
            (Ok(_), Verdict::Retry { .. } | Verdict::GiveUp { .. }) => {
                self.metrics.called(Outcome::retry, took);
            }
            (Ok(_), Verdict::Reject { .. }) => self.metrics.called(Outcome::reject, took),
            (Ok(_), Verdict::Ack) => self.metrics.called(Outcome::ack, took),
            (Ok(_), Verdict::Wait { .. }) => {}
        }
        let (outputs, writes): (Arc<[Output]>, Writes) = match result {
            Ok(handled) => {
                if !handled.refused_writes.is_empty() {
                    self.metrics.refused_state_writes(handled.refused_writes);
                    self.report(Change::StateRefused(handled.refused_writes));
                }
                (handled.outputs.into(), handled.writes)
            }
            Err(_) => (Arc::from([]), Writes::new()),
        };
        if let (Verdict::Ack, Some(state)) = (&verdict, &self.state)
            && !writes.is_empty()
        {
            let stream_seq = in_hand.delivery.stream_seq;
            state.add(Changes { stream_seq, writes });
        }
        self.carry_out(in_hand, verdict, outputs, flight, pulling)
            .await;
    }

    /// What the verdict on the message in hand makes of it.
    async fn carry_out(
        &mut self,
        in_hand: InHand,
        verdict: Verdict,
        outputs: Arc<[Output]>,
        flight: &mut Flight,
        pulling: &Pulling,
    ) {
        let InHand {
            delivery, attempt, ..
        } = in_hand;
        self.waiting_for(match &verdict {
            Verdict::Wait { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        if let Verdict::Wait { delay, reason } = &verdict {
            tracing::warn!(
                stream_seq = delivery.stream_seq,
                "waiting {delay:?} for capacity: {reason}"
            );
            self.hold_for(delivery, attempt, *delay, flight);
            return;
        }
        let (error, terminated, gave_up) = match &verdict {
            Verdict::Ack => {
                self.settling.push_back(Settling {
                    delivery,
                    attempt,
                    then: Then::Ack { outputs },
                });
                return;
            }
            Verdict::Retry { error, .. } => (error.clone(), false, false),
            Verdict::GiveUp { error } => (error.clone(), true, true),
            Verdict::Reject { error, .. } => (error.clone(), true, false),
            Verdict::Wait { .. } => return,
        };
        let attempted = Attempted {
            delivery: &delivery,
            attempt,
            error: &error,
            terminated,
            gave_up,
        };
        let recorded = settle::record(
            &self.failures,
            &self.deployment,
            &self.node_id,
            &self.pin,
            &pulling.consumer,
            attempted,
        )
        .await;
        let (delay, next_attempt) = match (recorded, verdict) {
            (Recorded::Superseded, _) => return,
            (Recorded::Yes, Verdict::Retry { delay, .. }) => (delay, attempt.saturating_add(1)),
            (Recorded::Yes, Verdict::GiveUp { .. }) => {
                let reason = format!("weir gave up after {attempt} attempt(s): {error}");
                self.settling.push_back(Settling {
                    delivery,
                    attempt,
                    then: Then::Term { reason },
                });
                return;
            }
            (Recorded::Yes, Verdict::Reject { reason, .. }) => {
                self.settling.push_back(Settling {
                    delivery,
                    attempt,
                    then: Then::Term { reason },
                });
                return;
            }
            (Recorded::Failed(record_error), Verdict::Retry { delay, .. }) => {
                tracing::warn!("{record_error:#}; its dead letter may not say why it failed");
                (delay, attempt.saturating_add(1))
            }
            (Recorded::Failed(record_error), _) => {
                // Never settled without the record that tells the mover it is weir's.
                tracing::warn!(
                    "{record_error:#}; trying the message again instead of terminating it"
                );
                (settle::RECORD_RETRY, attempt)
            }
            (Recorded::Yes, Verdict::Ack | Verdict::Wait { .. }) => return,
        };
        self.hold_for(delivery, next_attempt, delay, flight);
    }

    /// Keeps the message in hand, to call it again (as attempt `attempt`) after `delay`;
    /// behind a fence it is left to the next holder, with its attempts recorded.
    fn hold_for(&mut self, delivery: Delivery, attempt: u32, delay: Duration, flight: &mut Flight) {
        if self.fence.is_some() {
            return;
        }
        self.in_hand = Some(InHand {
            delivery,
            attempt,
            terminated: false,
        });
        flight.retry = Some(Box::pin(tokio::time::sleep(delay)));
    }

    /// Acks the first messages waiting to be settled once they are (their outputs stored and
    /// their changes committed), or deals with why they are not.
    async fn stored(
        &mut self,
        result: Result<usize, NotStored>,
        flight: &mut Flight,
        pulling: &Pulling,
    ) {
        match result {
            Ok(settled) => {
                flight.store_delay = STORE_RETRY_MIN;
                for _ in 0..settled {
                    if !self.still_owned(&pulling.consumer, flight).await {
                        return;
                    }
                    let Some(settling) = self.settling.pop_front() else {
                        return;
                    };
                    let outputs = match &settling.then {
                        Then::Ack { outputs } => outputs.len(),
                        Then::Term { .. } => 0,
                    };
                    // Confirmed at the next tick, or when the partition is let go.
                    match settle::ack(&settling.delivery).await {
                        Ok(()) => self.metrics.acked(outputs, settling.delivery.published_at),
                        // The server redelivers after AckWait; stored outputs are deduplicated.
                        Err(error) => tracing::warn!("{error:#}"),
                    }
                    self.last_settled = Some(Settled {
                        delivery: settling.delivery,
                        term: None,
                        confirmed: false,
                    });
                }
            }
            Err(NotStored::Fenced(error)) => {
                self.metrics.failed(FailureKind::state);
                flight.store_delay = STORE_RETRY_MIN;
                self.let_go(flight, &format!("{error:#}"));
            }
            Err(NotStored::Unconfirmed) => {
                if self.still_owned(&pulling.consumer, flight).await {
                    flight.store = self.store();
                }
            }
            Err(NotStored::ForNow(error)) => {
                self.store_again(error, FailureKind::outputs_not_stored, flight);
            }
            Err(NotStored::Uncommitted(error)) => {
                self.store_again(error, FailureKind::state, flight)
            }
            Err(NotStored::Ever(reason)) => {
                flight.store_delay = STORE_RETRY_MIN;
                let Some(first) = self.settling.pop_front() else {
                    return;
                };
                // What was computed after this message assumed it done: it is computed again,
                // by a fresh instance, once this one is. A call in progress is not waited for
                // (it ends on the guest threads, and its instance with it).
                for later in self.settling.drain(..) {
                    let mut delivery = later.delivery;
                    delivery.attempted = later.attempt.saturating_sub(1);
                    self.window.put_back(delivery);
                }
                flight.call = None;
                flight.retry = None;
                if let Some(in_hand) = self.in_hand.take() {
                    let mut delivery = in_hand.delivery;
                    delivery.attempted = in_hand.attempt.saturating_sub(1);
                    self.window.put_back(delivery);
                }
                self.instance = None;
                if let Some(state) = &self.state {
                    // The changes computed after it are computed again.
                    state.unload();
                }
                self.metrics.failed(FailureKind::outputs_not_stored);
                let error = format!("outputs not stored: {reason}");
                tracing::warn!(stream_seq = first.delivery.stream_seq, "{error}");
                let retry = &self.deployment.spec.retry;
                let verdict = verdict::decide(Ended::Failed(&error), first.attempt, retry);
                let in_hand = InHand {
                    delivery: first.delivery,
                    attempt: first.attempt,
                    terminated: false,
                };
                self.carry_out(in_hand, verdict, Arc::from([]), flight, pulling)
                    .await;
            }
        }
    }

    /// Tries to settle the first messages again after a pause, after `error` (a failure of
    /// `kind`) kept them from it; behind a fence they are left to the next holder.
    fn store_again(&mut self, error: anyhow::Error, kind: FailureKind, flight: &mut Flight) {
        self.metrics.failed(kind);
        if self.fence.is_some() {
            // Whatever is not settled goes to the next holder.
            tracing::warn!("{error:#}; leaving the unsettled messages to the next holder");
            self.settling.clear();
            return;
        }
        let delay = flight.store_delay;
        tracing::warn!("{error:#}; trying again in {delay:?}");
        flight.store_delay = (delay * 2).min(STORE_RETRY_MAX);
        if let Some(store) = self.store() {
            flight.store = Some(Box::pin(async move {
                tokio::time::sleep(delay).await;
                store.await
            }));
        }
    }

    /// What settles the first messages waiting to be settled, if the first is acked: its
    /// outputs stored, then its state changes committed (see [`crate::state`]); or, when it has
    /// no outputs, the changes of it and of the acked messages without outputs right behind it
    /// committed together, in one commit. Returns how many it settles.
    fn store(&self) -> Option<BoxFuture<'static, Result<usize, NotStored>>> {
        let first = self.settling.front()?;
        let Then::Ack { outputs } = &first.then else {
            return None;
        };
        let committed_error = |error| match error {
            CommitError::Conflict(_) => NotStored::Fenced(anyhow::Error::from(error)),
            CommitError::ForNow(error) => NotStored::Uncommitted(error),
        };
        let state = self.state.clone();
        let lease = self.lease.clone();
        let commit = move |state: Arc<PartitionState>, seqs: Vec<u64>| async move {
            if !lease.fresh() {
                return Err(NotStored::Unconfirmed);
            }
            let at = lease.now();
            let committed = state.commit_through(&seqs).await;
            if !matches!(committed, Err(CommitError::ForNow(_))) {
                lease.heard(at);
            }
            committed.map_err(committed_error)
        };
        if !outputs.is_empty() {
            let stream_seq = first.delivery.stream_seq;
            // Every earlier message's changes are committed by now: the state is at the
            // revision this message's outputs were computed from.
            let revision = state.as_ref().and_then(|state| state.revision());
            let store = outputs::store(
                self.js.clone(),
                self.deployment.clone(),
                (stream_seq, revision),
                outputs.clone(),
                self.lease.clone(),
            );
            return Some(Box::pin(async move {
                store.await?;
                if let Some(state) = state {
                    commit(state, vec![stream_seq]).await?;
                }
                Ok(1)
            }));
        }
        let group: Vec<u64> = self
            .settling
            .iter()
            .take(COMMIT_GROUP)
            .take_while(|s| matches!(&s.then, Then::Ack { outputs } if outputs.is_empty()))
            .map(|s| s.delivery.stream_seq)
            .collect();
        Some(Box::pin(async move {
            match state {
                Some(state) => commit(state, group).await,
                None => Ok(group.len()),
            }
        }))
    }

    /// Terminates a message whose failure record is written.
    async fn terminate(&mut self, delivery: Delivery, reason: String) {
        let at = self.lease.now();
        match settle::term(&self.js, &delivery, &reason).await {
            Ok(()) => self.lease.heard(at),
            // The server redelivers after AckWait, and the failure record is still there.
            Err(error) => tracing::warn!("{error:#}"),
        }
        self.last_settled = Some(Settled {
            delivery,
            term: Some(reason),
            confirmed: true,
        });
    }

    /// Tells the server every message this worker holds is still in progress, and confirms
    /// the acks sent since the last tick.
    async fn keep_alive(&mut self, pulling: &Pulling, flight: &mut Flight) {
        let unconfirmed = self.last_settled.as_ref().is_some_and(|s| !s.confirmed);
        let holds = !self.window.is_empty() || self.in_hand.is_some() || !self.settling.is_empty();
        if !(unconfirmed || holds) || !self.still_owned(&pulling.consumer, flight).await {
            return;
        }
        let held = self
            .window
            .iter()
            .chain(self.in_hand.iter().map(|in_hand| &in_hand.delivery))
            .chain(self.settling.iter().map(|settling| &settling.delivery));
        for delivery in held {
            settle::in_progress(delivery).await;
        }
        self.confirm_acks().await;
    }

    /// Confirms every ack sent since the last confirmed one (acks are confirmed in batches: at
    /// every tick, and before the partition is let go).
    async fn confirm_acks(&mut self) {
        if let Some(settled) = self.last_settled.as_mut().filter(|s| !s.confirmed) {
            let at = self.lease.now();
            match settle::confirmed_ack(&settled.delivery).await {
                Ok(()) => {
                    settled.confirmed = true;
                    self.lease.heard(at);
                }
                Err(error) => tracing::warn!(
                    "{error:#}; the server delivers again whatever ack it missed, and it is \
                     acked again"
                ),
            }
        }
    }

    /// Lets the next holder in: stops pulling, confirms every ack, resets the consumer to its
    /// ack floor so that whatever this worker still held is delivered again, in order, and
    /// unpins.
    async fn release(&mut self, pulling: Pulling) {
        let Pulling {
            consumer, messages, ..
        } = pulling;
        drop(messages);
        let held = self.window.len() + usize::from(self.in_hand.is_some());
        self.window.clear();
        self.in_hand = None;
        if self.pin.current().is_none() {
            return;
        }
        let stream = self.deployment.spec.stream.clone();
        let name = self.consumer_name();
        match self.pin.holds(&consumer).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracing::warn!("{error:#}; letting the pin time out");
                return;
            }
        }
        self.confirm_acks().await;
        tracing::debug!(held, "handing the partition off");
        pin::reset_to_ack_floor(&self.js, &stream, &name).await;
        pin::unpin(&self.js, &stream, &name).await;
        self.pin.forget();
    }

    /// Drops the warm instance, whose memory another partition of the tenant waits for; the
    /// next message starts a new one.
    fn give_memory_back(&mut self) {
        if self.instance.take().is_some() {
            tracing::info!(
                "gave the memory of its instance back: another partition of the tenant waits for it"
            );
        }
    }

    /// Tells the registry when the partition begins (`Some(reason)`) or ends a wait for
    /// capacity. A worker told to stop no longer speaks for the partition.
    fn waiting_for(&mut self, reason: Option<String>) {
        if self.waiting == reason.is_some() || self.stop.is_cancelled() {
            return;
        }
        self.waiting = reason.is_some();
        // It may quote the handler (an `init` that refused, say).
        let reason = reason.map(|reason| failures::clip(&reason, failures::MAX_ERROR_BYTES));
        self.report(Change::Waiting(reason));
    }

    /// Tells the registry when the partition begins or ends holding its messages for a pause.
    fn paused_now(&mut self, paused: bool) {
        if self.paused == paused || self.stop.is_cancelled() {
            return;
        }
        self.paused = paused;
        tracing::info!(
            "{}",
            if paused {
                "paused: holding the partition's messages"
            } else {
                "resumed"
            }
        );
        self.report(Change::Paused(paused));
    }

    fn report(&self, change: Change) {
        let report = PartitionReport {
            id: self.deployment.id.clone(),
            partition: self.partition,
            change,
        };
        // The registry is gone only when the node stops.
        let _ = self.reports.send(report);
    }

    fn consumer_name(&self) -> String {
        self.deployment.id.consumer_name(self.partition)
    }
}

/// Whether `id`'s record is gone from `weir_deployments`.
async fn deployment_removed(deployments: &kv::Store, id: &DeploymentId) -> bool {
    match deployments.entry(id.key()).await {
        Ok(Some(entry)) => entry.operation != kv::Operation::Put,
        Ok(None) => true,
        // Not known: the registry stops the worker if it is.
        Err(_) => false,
    }
}

/// Ticks at a third of the deployment's AckWait, to keep held messages in progress.
fn progress_interval(deployment: &SharedDeployment) -> tokio::time::Interval {
    let period = (deployment.spec.retry.ack_wait / 3).max(Duration::from_millis(100));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// One of `tenant`'s instances on this node, once one is free; `None` if told to stop first.
/// (A free function: the worker, which holds a Wasm store, is not `Sync`.)
async fn take_instance_permit(
    tenant: Arc<Tenant>,
    stop: CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        _ = stop.cancelled() => None,
        permit = tenant.instances.clone().acquire_owned() => permit.ok(),
    }
}
