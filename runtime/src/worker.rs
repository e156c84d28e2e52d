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
//! The consumer allows one unacknowledged message (MaxAckPending 1), so the server itself keeps
//! a retried message ahead of every later message of its partition.
//!
//! A worker runs inside a `partition` span carrying `tenant`, `handler` and `partition`, so its
//! events, and its handler's log lines, name them without repeating them.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::deployment::{Deployment, SharedDeployment};
use crate::host::{Handled, HandlerFailure, HandlerInstance, Header, Message, Outcome, Output};
use crate::metrics::SharedCounters;
use crate::partition;

/// How long one pull request waits on the server; heartbeats reveal a lost request sooner.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Wait before re-creating a consumer or pull that failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// Longest reason sent with `+TERM`.
const MAX_TERM_REASON_BYTES: usize = 1024;

/// Runs one partition of one deployment on this node.
pub(crate) struct PartitionWorker {
    partition: u32,
    updates: watch::Receiver<SharedDeployment>,
    deployment: SharedDeployment,
    /// The warm instance; `None` until the first message, after a failure, and after a swap.
    instance: Option<HandlerInstance>,
    js: jetstream::Context,
    counters: SharedCounters,
    shutdown: CancellationToken,
}

enum Next {
    Resubscribe,
    Stop,
}

impl PartitionWorker {
    pub(crate) fn new(
        partition: u32,
        mut updates: watch::Receiver<SharedDeployment>,
        js: jetstream::Context,
        counters: SharedCounters,
        shutdown: CancellationToken,
    ) -> Self {
        let deployment = updates.borrow_and_update().clone();
        Self {
            partition,
            updates,
            deployment,
            instance: None,
            js,
            counters,
            shutdown,
        }
    }

    /// Processes the partition until shutdown or until the deployment is withdrawn. The
    /// message in hand is always finished first.
    pub(crate) async fn run(mut self) {
        loop {
            let next = match self.subscribe().await {
                Ok(messages) => self.pump(messages).await,
                Err(error) => {
                    tracing::error!("{error:#}; retrying in {RESUBSCRIBE_DELAY:?}");
                    Next::Resubscribe
                }
            };
            match next {
                Next::Stop => return,
                Next::Resubscribe => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                    }
                }
            }
        }
    }

    async fn subscribe(&mut self) -> anyhow::Result<pull::Stream> {
        let consumer = ensure_consumer(&self.js, &self.deployment, self.partition).await?;
        consumer
            .stream()
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .with_context(|| format!("failed to pull from consumer {}", self.consumer_name()))
    }

    async fn pump(&mut self, mut messages: pull::Stream) -> Next {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Next::Stop,
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return Next::Stop;
                    }
                    if self.swap() {
                        return Next::Resubscribe;
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => self.process(message).await,
                    Some(Err(error)) => {
                        use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                        tracing::warn!(
                            "pull from consumer {}: {error}",
                            self.consumer_name()
                        );
                        if !matches!(error.kind(), Kind::MissingHeartbeat) {
                            return Next::Resubscribe;
                        }
                    }
                    None => return Next::Resubscribe,
                },
            }
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

    async fn process(&mut self, message: jetstream::Message) {
        let input = match to_input(&message, &self.deployment.spec.stream) {
            Ok(input) => input,
            Err(error) => {
                tracing::error!(
                    subject = %message.subject,
                    "{error:#}; terminating it"
                );
                let _ = term(
                    &self.js,
                    &message,
                    &format!("weir could not read the message: {error:#}"),
                )
                .await;
                return;
            }
        };
        let (stream_seq, attempt) = (input.stream_seq, input.delivery_attempt);
        let result = self.call_with_progress(&message, &input).await;

        let deployment = self.deployment.clone();
        let retry = &deployment.spec.retry;
        let last_delivery = attempt >= retry.max_deliver;
        let settled = match result {
            Ok(Handled {
                outcome: Outcome::Ack,
                outputs,
            }) => match store_outputs(&self.js, &deployment, stream_seq, &outputs).await {
                Ok(()) => {
                    let acked = message
                        .double_ack()
                        .await
                        .map_err(anyhow::Error::from_boxed);
                    if acked.is_ok() {
                        self.counters.acked(outputs.len());
                    }
                    acked
                }
                Err(error) => {
                    self.counters.failed();
                    tracing::warn!(stream_seq, delivery = attempt, "{error:#}; retrying");
                    nak(&message, retry.backoff_for(attempt), last_delivery).await
                }
            },
            Ok(Handled {
                outcome: Outcome::Retry(delay),
                ..
            }) => {
                self.counters.retried();
                let delay = delay
                    .map(Duration::from_nanos)
                    .unwrap_or_else(|| retry.backoff_for(attempt));
                nak(&message, delay, last_delivery).await
            }
            Ok(Handled {
                outcome: Outcome::Reject(reason),
                ..
            }) => {
                self.counters.rejected();
                term(&self.js, &message, &reason).await
            }
            Err(failure) => {
                self.counters.failed();
                self.instance = None;
                tracing::warn!(
                    stream_seq,
                    delivery = attempt,
                    "handler failed: {failure}; instance replaced, message retried"
                );
                nak(&message, retry.backoff_for(attempt), last_delivery).await
            }
        };
        if let Err(error) = settled {
            // The server redelivers after AckWait; outputs already stored are deduplicated.
            tracing::warn!(stream_seq, "failed to settle the message: {error:#}");
        }
    }

    /// Runs the handler, telling the server the message is in progress while it runs long.
    async fn call_with_progress(
        &mut self,
        message: &jetstream::Message,
        input: &Message,
    ) -> Result<Handled, HandlerFailure> {
        let period = self.deployment.spec.retry.ack_wait / 3;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let call = call_handler(&mut self.instance, &self.deployment, input);
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
    let reason: String = reason.replace(['\r', '\n'], " ");
    let mut end = reason.len().min(MAX_TERM_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    js.client()
        .request(reply, format!("+TERM {}", &reason[..end]).into())
        .await
        .context("the server did not confirm the termination")?;
    Ok(())
}

/// Starts an instance if there is none, then hands it the message.
async fn call_handler(
    slot: &mut Option<HandlerInstance>,
    deployment: &Deployment,
    input: &Message,
) -> Result<Handled, HandlerFailure> {
    let instance = match slot {
        Some(instance) => instance,
        None => slot
            .insert(HandlerInstance::start(&deployment.version, deployment.context.clone()).await?),
    };
    instance.handle(input).await
}

/// Creates the partition's durable consumer, or updates it to the deployment's settings.
pub(crate) async fn ensure_consumer(
    js: &jetstream::Context,
    deployment: &Deployment,
    partition: u32,
) -> anyhow::Result<PullConsumer> {
    let spec = &deployment.spec;
    let name = deployment.id.consumer_name(partition);
    let stream = js
        .get_stream(&spec.stream)
        .await
        .with_context(|| format!("failed to open stream {} for consumer {name}", spec.stream))?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("weir: {} partition {partition}", deployment.id)),
            filter_subject: partition::filter_subject(partition),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.retry.ack_wait,
            max_deliver: i64::from(spec.retry.max_deliver),
            max_ack_pending: 1,
            ..Default::default()
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
