//! The per-partition loop: pull one message, hand it to the partition's handler instance, carry
//! out the answer, and only then take the next.
//!
//! ```text
//! pull ──► HandlerInstance::handle ──► ack:    store outputs (Nats-Msg-Id), await acks, +ACK
//!                                  ├─► retry:  -NAK {"delay": ...}
//!                                  ├─► reject: +TERM <reason>
//!                                  └─► failure: drop the instance, -NAK with backoff
//! ```
//!
//! Before any `-NAK` or `+TERM` the worker records what went wrong in `weir_failures`
//! ([`crate::failures`]); the dead-letter mover copies the last record into the dead letter.
//!
//! The consumer allows one unacknowledged message (MaxAckPending 1), so the server itself keeps
//! a retried message ahead of every later message of its partition.
//!
//! **Exclusive delivery.** Every partition consumer belongs to the priority group `weir` with
//! policy `pinned_client`: of all the pull streams on it, the server delivers to one, the
//! pinned one, whose id comes with each message as `Nats-Pin-Id`. A worker remembers its pin
//! and watches the consumer's pin advisories: the moment another client is pinned it drops its
//! claim and waits on standby. Two nodes that briefly disagree about placement therefore never
//! both hand messages of one partition to a handler: only the pinned one receives any.
//!
//! **Handoff.** A worker told to stop (placement moved the partition, the node drains, the
//! deployment was withdrawn) stops pulling, finishes the message in hand, settles it, and
//! unpins the consumer so the next owner, already waiting on standby, is pinned at once.
//!
//! **Reclaim.** A worker that takes over from a node that died with a message in hand finds
//! the consumer unpinned with one message pending (a live holder keeps pulling, and so keeps
//! its pin, until it settles); it resets the consumer to its ack floor so that message is
//! redelivered at once instead of after AckWait.
//!
//! A worker runs inside a `partition` span carrying `tenant`, `handler` and `partition`, so its
//! events, and its handler's log lines, name them without repeating them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{
    AckPolicy, DeliverPolicy, PriorityPolicy, PullConsumer, pull,
};
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::deployment::{Deployment, HandlerCode, SharedDeployment};
use crate::failures::{self, Failure};
use crate::host::{
    GuestThreads, Handled, HandlerFailure, HandlerInstance, Header, Message, Outcome, Output,
};
use crate::metrics::SharedCounters;
use crate::partition;
use crate::resources::PRIORITY_GROUP;
use crate::spec::now_rfc3339;
use crate::tenants::Tenant;

/// How long one pull request waits on the server. Pulls also keep the pin alive, so this stays
/// well below the pin timeout.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Wait before re-creating a consumer or pull that failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How often a worker taking over from a dead node looks for a message it left in hand.
const RECLAIM_CHECK: Duration = Duration::from_secs(1);
/// Bounds of the pause between attempts to store a call's outputs.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// How soon a rejected message comes back when its failure record could not be written.
const TERM_RECORD_RETRY: Duration = Duration::from_secs(1);
/// Longest reason sent with `+TERM`.
const MAX_TERM_REASON_BYTES: usize = 1024;
/// The header carrying the pinned client's id on every delivered message.
const PIN_ID_HEADER: &str = "Nats-Pin-Id";

/// How long the server keeps a client pinned after its last pull: with the membership TTL,
/// how long a dead node's partitions wait before a survivor may take them.
pub const DEFAULT_PIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one partition of one deployment on this node.
pub(crate) struct PartitionWorker {
    partition: u32,
    updates: watch::Receiver<SharedDeployment>,
    deployment: SharedDeployment,
    /// The warm instance; `None` until the first message, after a failure, and after a swap.
    instance: Option<HandlerInstance>,
    /// The pin this worker's pull stream holds, from the last message it received.
    pin: Option<String>,
    /// Whether the last reclaim check found the consumer unpinned with a message pending.
    seen_abandoned: bool,
    js: jetstream::Context,
    /// Where handler calls run.
    guests: Arc<GuestThreads>,
    /// Where failures are recorded for dead letters.
    failures: async_nats::jetstream::kv::Store,
    node_id: String,
    pin_timeout: Duration,
    counters: SharedCounters,
    stop: CancellationToken,
}

/// The pull stream and the pin advisories of one subscription to the partition's consumer.
struct Pulling {
    consumer: PullConsumer,
    messages: pull::Stream,
    pin_events: async_nats::Subscriber,
    /// A message that arrived while another was being processed (which MaxAckPending 1
    /// should prevent), kept for the next turn.
    stray: Option<Box<jetstream::Message>>,
}

enum Event {
    Stop,
    Swapped { consumer_changed: bool },
    DeploymentGone,
    Message(Box<jetstream::Message>),
    PullFailed(async_nats::jetstream::consumer::pull::MessagesError),
    PullEnded,
    Pin(async_nats::Message),
    ReclaimCheck,
}

enum Next {
    Resubscribe,
    Stop,
}

/// What to tell the server about a handled message; `error` is what the failure record says.
enum Verdict {
    Ack {
        outputs: usize,
        /// When the message was published, Unix nanoseconds.
        published_at: u64,
    },
    Nak {
        delay: Duration,
        last_delivery: bool,
        error: String,
    },
    Term {
        reason: String,
        error: String,
    },
}

/// What became of a failure record.
enum Recorded {
    /// It is stored: the message may be settled.
    Yes,
    /// The message has been delivered again since: it is not this delivery's to settle.
    Superseded,
    /// It could not be stored, for this reason.
    Failed(anyhow::Error),
}

impl PartitionWorker {
    pub(crate) fn new(
        partition: u32,
        mut updates: watch::Receiver<SharedDeployment>,
        node: &crate::node::NodeContext,
        stop: CancellationToken,
    ) -> Self {
        let deployment = updates.borrow_and_update().clone();
        let js = deployment.tenant.js.clone();
        Self {
            partition,
            updates,
            deployment,
            instance: None,
            pin: None,
            seen_abandoned: false,
            js,
            guests: node.host.guest_threads(),
            failures: node.control.failures.clone(),
            node_id: node.id.clone(),
            pin_timeout: node.pin_timeout,
            counters: node.counters.clone(),
            stop,
        }
    }

    /// Processes the partition until told to stop or until the deployment is withdrawn, then
    /// hands it off: the message in hand is finished and settled, and the pin released.
    ///
    /// The partition counts against its tenant's instances on this node from the start: when
    /// they are all in use, the worker waits, without pulling, until one is free.
    pub(crate) async fn run(mut self) {
        let tenant = self.deployment.tenant.clone();
        let Some(_instance_permit) = take_instance_permit(tenant, self.stop.clone()).await else {
            return;
        };
        loop {
            let next = match self.subscribe().await {
                Ok(pulling) => self.pump(pulling).await,
                Err(error) => {
                    tracing::error!("{error:#}; retrying in {RESUBSCRIBE_DELAY:?}");
                    Next::Resubscribe
                }
            };
            match next {
                Next::Stop => return,
                Next::Resubscribe => {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                    }
                }
            }
        }
    }

    async fn subscribe(&mut self) -> anyhow::Result<Pulling> {
        let consumer =
            ensure_consumer(&self.js, &self.deployment, self.partition, self.pin_timeout).await?;
        let name = self.consumer_name();
        let pin_events = self
            .js
            .client()
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.*.{}.{name}",
                self.deployment.spec.stream
            ))
            .await
            .with_context(|| format!("failed to follow the pin advisories of {name}"))?;
        let messages = consumer
            .stream()
            .group(PRIORITY_GROUP)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .with_context(|| format!("failed to pull from consumer {name}"))?;
        self.pin = None;
        Ok(Pulling {
            consumer,
            messages,
            pin_events,
            stray: None,
        })
    }

    async fn pump(&mut self, mut pulling: Pulling) -> Next {
        let mut reclaim_check = tokio::time::interval(RECLAIM_CHECK);
        loop {
            match self.next_event(&mut pulling, &mut reclaim_check).await {
                Event::Stop | Event::DeploymentGone => {
                    self.release(pulling).await;
                    return Next::Stop;
                }
                Event::Swapped { consumer_changed } => {
                    if consumer_changed {
                        self.release(pulling).await;
                        return Next::Resubscribe;
                    }
                }
                Event::Message(message) => {
                    self.process_while_pulling(&message, &mut pulling).await;
                    if self.stop.is_cancelled() {
                        self.release(pulling).await;
                        return Next::Stop;
                    }
                }
                Event::PullFailed(error) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                    tracing::warn!("pull from consumer {}: {error}", self.consumer_name());
                    if !matches!(error.kind(), Kind::MissingHeartbeat) {
                        self.release(pulling).await;
                        return Next::Resubscribe;
                    }
                }
                Event::PullEnded => {
                    self.release(pulling).await;
                    return Next::Resubscribe;
                }
                Event::Pin(advisory) => self.follow_pin(&advisory),
                Event::ReclaimCheck => self.reclaim(&pulling.consumer).await,
            }
        }
    }

    async fn next_event(
        &mut self,
        pulling: &mut Pulling,
        reclaim_check: &mut tokio::time::Interval,
    ) -> Event {
        if let Some(message) = pulling.stray.take() {
            return Event::Message(message);
        }
        // Only a worker on standby looks for a message abandoned by a dead holder.
        let standby = self.pin.is_none();
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Event::Stop,
            changed = self.updates.changed() => match changed {
                Ok(()) => Event::Swapped { consumer_changed: self.swap() },
                Err(_) => Event::DeploymentGone,
            },
            Some(advisory) = pulling.pin_events.next() => Event::Pin(advisory),
            next = pulling.messages.next() => match next {
                Some(Ok(message)) => Event::Message(Box::new(message)),
                Some(Err(error)) => Event::PullFailed(error),
                None => Event::PullEnded,
            },
            _ = reclaim_check.tick(), if standby => Event::ReclaimCheck,
        }
    }

    /// Takes the newest deployment at a message boundary: the next message goes to a fresh
    /// instance of the new version. Returns whether the consumer must change too.
    fn swap(&mut self) -> bool {
        let next = self.updates.borrow_and_update().clone();
        let consumer_changed = next.spec.retry.max_deliver
            != self.deployment.spec.retry.max_deliver
            || next.spec.retry.ack_wait != self.deployment.spec.retry.ack_wait;
        tracing::info!(
            "switching from version {} to {}",
            self.deployment.spec.short_version(),
            next.spec.short_version()
        );
        self.deployment = next;
        self.instance = None;
        consumer_changed
    }

    /// Remembers the pin this stream was given with `message`.
    fn track_pin(&mut self, message: &jetstream::Message) {
        let pin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(PIN_ID_HEADER))
            .map(|value| value.as_str());
        if pin == self.pin.as_deref() {
            return;
        }
        match (&self.pin, pin) {
            (None, Some(pin)) => tracing::debug!(pin, "pinned"),
            (Some(old), Some(new)) => {
                tracing::info!(old, new, "pinned again after the pin expired")
            }
            (_, None) => {
                tracing::warn!("message without {PIN_ID_HEADER}: the consumer is not pinned_client")
            }
        }
        self.pin = pin.map(str::to_owned);
    }

    /// Drops this worker's claim to the pin when an advisory says that another client now
    /// holds it, or nobody does. The stream then pulls on standby (the server answers its
    /// next pull with 423 and it pulls without a pin id), and the worker, unpinned, watches
    /// for a message abandoned by a dead holder.
    fn follow_pin(&mut self, advisory: &async_nats::Message) {
        #[derive(Deserialize)]
        struct PinAdvisory {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            pinned_id: Option<String>,
            #[serde(default)]
            reason: Option<String>,
        }
        let Ok(event) = serde_json::from_slice::<PinAdvisory>(&advisory.payload) else {
            return;
        };
        let Some(mine) = self.pin.clone() else {
            return;
        };
        let lost = match event.kind.as_str() {
            "io.nats.jetstream.advisory.v1.consumer_group_pinned" => {
                event.pinned_id.as_deref() != Some(mine.as_str())
            }
            "io.nats.jetstream.advisory.v1.consumer_group_unpinned" => true,
            _ => false,
        };
        if lost {
            tracing::info!(
                pin = mine,
                now = event.pinned_id.as_deref().unwrap_or("nobody"),
                reason = event.reason.as_deref().unwrap_or(""),
                "no longer pinned; on standby"
            );
            self.pin = None;
        }
    }

    /// Looks for a message abandoned by a holder that died. A live holder keeps pulling, and
    /// so keeps its pin, for as long as it has a message in hand; a consumer found twice in a
    /// row with no pin and a message pending has lost its holder. Resetting it to its ack floor
    /// makes the server redeliver that message now rather than after AckWait, ahead of every
    /// later message of the partition.
    async fn reclaim(&mut self, consumer: &PullConsumer) {
        let mut consumer = consumer.clone();
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(error) => {
                tracing::warn!("failed to read consumer {}: {error}", self.consumer_name());
                return;
            }
        };
        let pinned = info
            .priority_groups
            .iter()
            .any(|group| group.pinned_client_id.is_some());
        let abandoned = !pinned && info.num_ack_pending > 0;
        if !abandoned || !std::mem::replace(&mut self.seen_abandoned, true) {
            self.seen_abandoned = abandoned;
            return;
        }
        self.seen_abandoned = false;
        let stream = match self.js.get_stream(&self.deployment.spec.stream).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(
                    "failed to open stream {}: {error}",
                    self.deployment.spec.stream
                );
                return;
            }
        };
        match stream.reset_consumer(&self.consumer_name(), None).await {
            Ok(reset) => tracing::info!(
                ack_floor = reset.reset_seq,
                "the partition's last holder is gone with a message in hand; \
                 redelivering it now"
            ),
            Err(error) => {
                tracing::warn!("failed to reset consumer {}: {error}", self.consumer_name())
            }
        }
    }

    /// Lets the next puller in (another node's, or this worker's next subscription), with
    /// nothing in hand: releases the pin, then finishes any message the server delivered before
    /// it saw the release (the next puller cannot get one until that is settled), and stops
    /// pulling.
    async fn release(&mut self, mut pulling: Pulling) {
        if self.unpin(&pulling.consumer).await {
            // The release was answered on this connection, so everything the server sent
            // before it is already in the stream's buffer.
            let stray = pulling.stray.take().map(|message| *message);
            let buffered = std::iter::from_fn(|| match pulling.messages.next().now_or_never() {
                Some(Some(Ok(message))) => Some(message),
                _ => None,
            });
            for message in stray.into_iter().chain(buffered.collect::<Vec<_>>()) {
                self.process(&message).await;
            }
        }
    }

    /// Handles and settles one message while still polling the pull stream: that keeps the
    /// pull requests, and with them the pin, alive through a long call, so that no standby
    /// puller mistakes this worker for a dead one.
    async fn process_while_pulling(&mut self, message: &jetstream::Message, pulling: &mut Pulling) {
        let work = self.process(message);
        tokio::pin!(work);
        let mut pulling_ended = false;
        loop {
            tokio::select! {
                biased;
                () = &mut work => return,
                next = pulling.messages.next(), if !pulling_ended && pulling.stray.is_none() => {
                    match next {
                        Some(Ok(message)) => pulling.stray = Some(Box::new(message)),
                        Some(Err(error)) => tracing::debug!("pull while handling: {error}"),
                        None => pulling_ended = true,
                    }
                }
            }
        }
    }

    /// Handles one message and settles it.
    async fn process(&mut self, message: &jetstream::Message) {
        self.track_pin(message);
        let verdict = self.handle(message).await;
        self.settle(message, verdict).await;
    }

    /// Releases the pin if this worker still holds it, so a standby puller is pinned at once.
    /// Returns whether it released one.
    async fn unpin(&mut self, consumer: &PullConsumer) -> bool {
        let Some(pin) = self.pin.take() else {
            return false;
        };
        let mut consumer = consumer.clone();
        let holds_pin = match consumer.info().await {
            Ok(info) => info
                .priority_groups
                .iter()
                .any(|group| group.pinned_client_id.as_deref() == Some(pin.as_str())),
            Err(error) => {
                tracing::warn!("failed to read consumer {}: {error}", self.consumer_name());
                false
            }
        };
        if !holds_pin {
            return false;
        }
        let unpinned = match self.js.get_stream(&self.deployment.spec.stream).await {
            Ok(stream) => stream
                .unpin_consumer(&self.consumer_name(), PRIORITY_GROUP)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error.into()),
        };
        match unpinned {
            Ok(()) => {
                tracing::debug!(pin, "unpinned");
                true
            }
            Err(error) => {
                // The pin times out by itself.
                tracing::warn!(
                    "failed to unpin consumer {}: {error:#}; the next owner waits for the \
                     pin timeout",
                    self.consumer_name()
                );
                false
            }
        }
    }

    /// Hands the message to the handler and decides what to tell the server.
    async fn handle(&mut self, message: &jetstream::Message) -> Verdict {
        let input = match to_input(message, &self.deployment.spec.stream) {
            Ok(input) => input,
            Err(error) => {
                tracing::error!(subject = %message.subject, "{error:#}; terminating it");
                let reason = format!("weir could not read the message: {error:#}");
                return Verdict::Term {
                    error: reason.clone(),
                    reason,
                };
            }
        };
        let (stream_seq, attempt, published_at) =
            (input.stream_seq, input.delivery_attempt, input.published_at);
        tracing::debug!(
            stream_seq,
            delivery = attempt,
            pin = self.pin.as_deref().unwrap_or(""),
            "handling"
        );
        let result = self.call_with_progress(message, input).await;

        let deployment = self.deployment.clone();
        let retry = &deployment.spec.retry;
        let last_delivery = attempt >= retry.max_deliver;
        let nak = |delay, error| Verdict::Nak {
            delay,
            last_delivery,
            error,
        };
        match result {
            Ok(Handled {
                outcome: Outcome::Ack,
                outputs,
            }) => match self.store_until_stored(message, stream_seq, &outputs).await {
                Ok(()) => Verdict::Ack {
                    outputs: outputs.len(),
                    published_at,
                },
                Err(error) => {
                    tracing::warn!(stream_seq, delivery = attempt, "{error:#}; retrying");
                    nak(Duration::ZERO, format!("outputs not stored: {error:#}"))
                }
            },
            Ok(Handled {
                outcome: Outcome::Retry(delay),
                ..
            }) => {
                self.counters.retried();
                match delay.map(Duration::from_nanos) {
                    Some(delay) => nak(
                        delay,
                        format!(
                            "the handler asked for a retry after {}",
                            humantime::format_duration(delay)
                        ),
                    ),
                    None => nak(
                        retry.backoff_for(attempt),
                        "the handler asked for a retry".to_owned(),
                    ),
                }
            }
            Ok(Handled {
                outcome: Outcome::Reject(reason),
                ..
            }) => {
                self.counters.rejected();
                Verdict::Term {
                    error: format!("rejected: {reason}"),
                    reason,
                }
            }
            Err(failure) => {
                self.counters.failed();
                self.instance = None;
                tracing::warn!(
                    stream_seq,
                    delivery = attempt,
                    "handler failed: {failure}; instance replaced, message retried"
                );
                nak(retry.backoff_for(attempt), failure.to_string())
            }
        }
    }

    /// Stores the outputs of an acknowledged call, trying again while NATS cannot take them
    /// (a server restarting, a stream leader moving): that is no fault of the handler's and
    /// must not use up the message's deliveries. Gives up only when the worker must stop.
    async fn store_until_stored(
        &mut self,
        message: &jetstream::Message,
        stream_seq: u64,
        outputs: &[Output],
    ) -> anyhow::Result<()> {
        let mut delay = STORE_RETRY_MIN;
        loop {
            let error = match store_outputs(&self.js, &self.deployment, stream_seq, outputs).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if self.stop.is_cancelled() {
                return Err(error);
            }
            tracing::warn!(stream_seq, "{error:#}; trying again in {delay:?}");
            self.counters.failed();
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::warn!("failed to send in-progress: {error}");
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(error),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(STORE_RETRY_MAX);
        }
    }

    /// Tells the server what became of the message.
    async fn settle(&mut self, message: &jetstream::Message, verdict: Verdict) {
        let settled = match verdict {
            Verdict::Ack {
                outputs,
                published_at,
            } => {
                let acked = message
                    .double_ack()
                    .await
                    .map_err(anyhow::Error::from_boxed);
                if acked.is_ok() {
                    self.counters.acked(outputs, published_at);
                }
                acked
            }
            Verdict::Nak {
                delay,
                last_delivery,
                error,
            } => match self.failure_log().record(message, error, false).await {
                Recorded::Yes => nak(message, delay, last_delivery).await,
                Recorded::Superseded => return,
                Recorded::Failed(record_error) => {
                    tracing::warn!("{record_error:#}; its dead letter will not say why it failed");
                    nak(message, delay, last_delivery).await
                }
            },
            // weir never terminates a message without the record that tells the mover the
            // termination is its own.
            Verdict::Term { reason, error } => {
                match self.failure_log().record(message, error, true).await {
                    Recorded::Yes => term(&self.js, message, &reason).await,
                    Recorded::Superseded => return,
                    Recorded::Failed(record_error) => {
                        tracing::warn!(
                            "{record_error:#}; retrying the message instead of terminating it"
                        );
                        nak(message, TERM_RECORD_RETRY, false).await
                    }
                }
            }
        };
        if let Err(error) = settled {
            // The server redelivers after AckWait; outputs already stored are deduplicated.
            tracing::warn!(subject = %message.subject, "failed to settle the message: {error:#}");
        }
    }

    fn failure_log(&self) -> FailureLog<'_> {
        FailureLog {
            js: &self.js,
            failures: &self.failures,
            deployment: &self.deployment,
            node_id: &self.node_id,
            consumer: self.consumer_name(),
        }
    }

    /// Runs the handler, telling the server the message is in progress while it runs long.
    async fn call_with_progress(
        &mut self,
        message: &jetstream::Message,
        input: Message,
    ) -> Result<Handled, HandlerFailure> {
        let period = self.deployment.spec.retry.ack_wait / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let call = call_handler(&mut self.instance, &self.deployment, &self.guests, input);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                result = &mut call => return result,
                _ = progress.tick() => {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(
                            "failed to send in-progress: {error}"
                        );
                    }
                }
            }
        }
    }

    fn consumer_name(&self) -> String {
        self.deployment.id.consumer_name(self.partition)
    }
}

/// Publishes every output with its deterministic `Nats-Msg-Id` and waits until the server
/// has stored each one.
async fn store_outputs(
    js: &jetstream::Context,
    deployment: &Deployment,
    stream_seq: u64,
    outputs: &[Output],
) -> anyhow::Result<()> {
    let stream = &deployment.spec.stream;
    let mut acks = Vec::with_capacity(outputs.len());
    for (n, output) in outputs.iter().enumerate() {
        let mut headers = HeaderMap::new();
        for Header { name, value } in &output.headers {
            // `append` panics on a name or value that is not valid in NATS; the host refused
            // every such header when the handler published it (`outputs::check_header`).
            headers.append(name.as_str(), value.as_str());
        }
        headers.insert(
            "Nats-Msg-Id",
            deployment.id.output_msg_id(stream, stream_seq, n),
        );
        let ack = js
            .publish_with_headers(output.subject.clone(), headers, output.payload.clone())
            .await
            .with_context(|| format!("failed to publish output {n} to {}", output.subject))?;
        acks.push((n, ack));
    }
    for (n, ack) in acks {
        ack.await.with_context(|| {
            format!(
                "output {n} to {} was not stored (does a stream capture it?)",
                outputs[n].subject
            )
        })?;
    }
    Ok(())
}

/// What a worker needs to record a failure: borrowed from it, so the record can be written
/// while the worker's instance (which is not `Sync`) stays where it is.
struct FailureLog<'a> {
    js: &'a jetstream::Context,
    failures: &'a async_nats::jetstream::kv::Store,
    deployment: &'a Deployment,
    node_id: &'a str,
    consumer: String,
}

impl FailureLog<'_> {
    /// Records why a delivery did not end in an ack, for the message's dead letter, unless the
    /// delivery is no longer the one the server waits on. That happens only to a worker whose
    /// pin lapsed mid-call: another worker has the message now, and this one must neither
    /// settle it nor overwrite what the other records.
    async fn record(
        &self,
        message: &jetstream::Message,
        error: String,
        terminated: bool,
    ) -> Recorded {
        let info = match message.info() {
            Ok(info) => info,
            Err(error) => {
                return Recorded::Failed(anyhow::anyhow!("unreadable ack metadata: {error}"));
            }
        };
        let subject = partition::split_subject(&message.subject)
            .map_or(message.subject.as_str(), |(_, subject)| subject);
        let failure = Failure {
            version: self.deployment.spec.version.clone(),
            subject: subject.to_owned(),
            delivery: u64::try_from(info.delivered).unwrap_or(0),
            consumer_seq: info.consumer_sequence,
            error: failures::clip(&error, failures::MAX_ERROR_BYTES),
            terminated,
            node: self.node_id.to_owned(),
            at: now_rfc3339(),
        };
        let stream_seq = info.stream_sequence;
        let record = async {
            if !self
                .is_current_delivery(info.consumer_sequence, stream_seq)
                .await?
            {
                return Ok(false);
            }
            let spec = &self.deployment.spec;
            failures::record(
                self.failures,
                &self.deployment.id,
                &spec.stream,
                stream_seq,
                &failure,
            )
            .await?;
            Ok(true)
        };
        // Within the ack wait, so the server does not redeliver while the record is written.
        let limit = self.deployment.spec.retry.ack_wait / 3;
        match tokio::time::timeout(limit, record).await {
            Ok(Ok(true)) => Recorded::Yes,
            Ok(Ok(false)) => {
                tracing::warn!(
                    stream_seq,
                    consumer_seq = info.consumer_sequence,
                    "the partition's consumer has delivered this message again since (this \
                     worker's pin lapsed during the call); leaving it to the new delivery"
                );
                Recorded::Superseded
            }
            Ok(Err(error)) => Recorded::Failed(error),
            Err(_) => Recorded::Failed(anyhow::anyhow!(
                "recording the failure of stream sequence {stream_seq} took longer than {limit:?}"
            )),
        }
    }

    /// Whether the delivery `consumer_seq` of `stream_seq` is still the consumer's latest: with
    /// one message in flight per partition, a later delivery (or a reset by a worker that took
    /// this one for abandoned) means this one is over. A reset restarts delivery sequences at 1,
    /// so a redelivery after one can carry this delivery's numbers; that case is not told apart.
    async fn is_current_delivery(
        &self,
        consumer_seq: u64,
        stream_seq: u64,
    ) -> anyhow::Result<bool> {
        let name = &self.consumer;
        let info = self
            .js
            .get_stream_no_info(&self.deployment.spec.stream)
            .await?
            .consumer_info(name)
            .await
            .with_context(|| format!("failed to read consumer {name}"))?;
        Ok(info.delivered.consumer_sequence == consumer_seq
            && info.delivered.stream_sequence == stream_seq)
    }
}

/// Asks for redelivery after `delay`; on the last allowed delivery, at once, so the server
/// gives up on the message without holding its partition for the delay.
async fn nak(
    message: &jetstream::Message,
    delay: Duration,
    last_delivery: bool,
) -> anyhow::Result<()> {
    let kind = if last_delivery {
        AckKind::Nak(None)
    } else {
        AckKind::Nak(Some(delay))
    };
    message
        .double_ack_with(kind)
        .await
        .map_err(anyhow::Error::from_boxed)
}

/// Terminates the message with a reason; async-nats has no term-with-reason, so this sends
/// the protocol's `+TERM <reason>` itself.
async fn term(
    js: &jetstream::Context,
    message: &jetstream::Message,
    reason: &str,
) -> anyhow::Result<()> {
    let reply = message
        .reply
        .clone()
        .context("the message has no reply subject to terminate it on")?;
    let reason = failures::clip(reason, MAX_TERM_REASON_BYTES);
    js.client()
        .request(reply, format!("+TERM {reason}").into())
        .await
        .context("the server did not confirm the termination")?;
    Ok(())
}

/// One of `tenant`'s instances on this node, waited for if need be; `None` if told to stop
/// first. (A free function: the worker, which holds a Wasm store, is not `Sync`.)
async fn take_instance_permit(
    tenant: Arc<Tenant>,
    stop: CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(permit) = tenant.instances.clone().try_acquire_owned() {
        return Some(permit);
    }
    tracing::warn!(
        "waiting: tenant {} already runs its quota of {} instance(s) on this node",
        tenant.name,
        tenant.quotas.max_instances
    );
    tokio::select! {
        _ = stop.cancelled() => None,
        permit = tenant.instances.clone().acquire_owned() => permit.ok(),
    }
}

/// Starts an instance if there is none, then hands it the message: in place for the call's
/// first slice, then on the node's guest threads if it needs more ([`GuestThreads::run`]); the
/// instance goes with the call and comes back with its result. A built-in handler answers in
/// place.
async fn call_handler(
    slot: &mut Option<HandlerInstance>,
    deployment: &SharedDeployment,
    guests: &GuestThreads,
    input: Message,
) -> Result<Handled, HandlerFailure> {
    // The warm instance, or the version to start one from.
    let warm = match (&deployment.code, slot.take()) {
        (HandlerCode::Builtin(builtin), _) => return Ok(builtin.handle(&input)),
        (HandlerCode::Wasm(_), Some(instance)) => Ok(instance),
        (HandlerCode::Wasm(version), None) => Err(version.clone()),
    };
    let deployment = deployment.clone();
    // The call's first turn is taken here, before it runs: see `host::fairness`.
    let turn = deployment.context.budget.turn().await;
    let call = guests
        .run(
            async move {
                let (mut instance, turn) = match warm {
                    Ok(instance) => (instance, Some(turn)),
                    Err(version) => {
                        let context = deployment.context.clone();
                        match HandlerInstance::start_on(&version, context, Some(turn)).await {
                            Ok(instance) => (instance, None),
                            Err(failure) => return (None, Err(failure)),
                        }
                    }
                };
                let result = instance.handle_on(&input, turn).await;
                (Some(instance), result)
            }
            .instrument(tracing::Span::current()),
        )
        .await;
    match call {
        Ok((instance, result)) => {
            *slot = instance;
            result
        }
        Err(error) => Err(HandlerFailure::Trap(format!(
            "the call's task did not finish: {error}"
        ))),
    }
}

/// Creates the partition's durable consumer, or updates it to the deployment's settings. A
/// consumer made before weir used priority groups cannot be changed in place; it is replaced
/// by one that starts right after the old one's ack floor, so nothing is lost or repeated.
pub(crate) async fn ensure_consumer(
    js: &jetstream::Context,
    deployment: &Deployment,
    partition: u32,
    pin_timeout: Duration,
) -> anyhow::Result<PullConsumer> {
    let spec = &deployment.spec;
    let name = deployment.id.consumer_name(partition);
    let stream = js
        .get_stream(&spec.stream)
        .await
        .with_context(|| format!("failed to open stream {} for consumer {name}", spec.stream))?;
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("weir: {} partition {partition}", deployment.id)),
        filter_subject: partition::filter_subject(partition),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.retry.ack_wait,
        max_deliver: i64::from(spec.retry.max_deliver),
        max_ack_pending: 1,
        priority_groups: vec![PRIORITY_GROUP.to_owned()],
        priority_policy: PriorityPolicy::PinnedClient,
        priority_timeout: pin_timeout,
        ..Default::default()
    };
    let created = stream.create_consumer(config.clone()).await;
    let error = match created {
        Ok(consumer) => return Ok(consumer),
        Err(error) => error,
    };
    let existing = stream.consumer_info(&name).await.ok();
    let Some(existing) = existing.filter(|info| {
        info.config.priority_policy != PriorityPolicy::PinnedClient && info.num_ack_pending == 0
    }) else {
        return Err(error).with_context(|| {
            format!("failed to create consumer {name} on stream {}", spec.stream)
        });
    };
    let resume_at = existing.ack_floor.stream_sequence + 1;
    tracing::info!(
        "replacing consumer {name} with a pinned_client one, resuming at stream sequence \
         {resume_at}"
    );
    stream
        .delete_consumer(&name)
        .await
        .with_context(|| format!("failed to replace consumer {name}"))?;
    stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: resume_at,
            },
            ..config
        })
        .await
        .with_context(|| format!("failed to create consumer {name} on stream {}", spec.stream))
}

/// Builds the handler's view of a stored message.
fn to_input(message: &jetstream::Message, stream: &str) -> anyhow::Result<Message> {
    let info = message
        .info()
        .map_err(|e| anyhow::anyhow!("unreadable ack metadata: {e}"))?;
    let (partition, subject) = partition::split_subject(&message.subject).with_context(|| {
        format!(
            "subject {:?} does not start with a partition number",
            message.subject
        )
    })?;
    let headers = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .flat_map(|(name, values)| {
            values.iter().map(move |value| Header {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect();
    Ok(Message {
        subject: subject.to_owned(),
        payload: message.payload.to_vec(),
        headers,
        stream: stream.to_owned(),
        stream_seq: info.stream_sequence,
        partition,
        delivery_attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX),
        published_at: u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
    })
}
