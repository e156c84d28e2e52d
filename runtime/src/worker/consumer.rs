//! The partition's durable consumer, and one subscription to it: the pull stream that keeps the
//! window full, and the consumer's advisories (pins, and terminations).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{
    AckPolicy, DeliverPolicy, PriorityPolicy, PullConsumer, pull,
};
use async_nats::jetstream::{self};

use crate::control::PRIORITY_GROUP;
use crate::deployment::Deployment;
use crate::partition;
use crate::spec::StartAt;

/// How long before the pin timeout an idle pull request expires (and the next one, which
/// keeps the pin, is sent).
const PULL_MARGIN: Duration = Duration::from_secs(1);
/// Deliveries the server allows a message beyond weir's own attempts. weir counts attempts
/// itself and never asks the server for a redelivery to retry, so the server redelivers only
/// when a holder went quiet (its AckWait ran out): MaxDeliver is a backstop against a message
/// that takes every holder down, not the retry limit.
const SERVER_DELIVERIES_BEYOND_ATTEMPTS: u32 = 10;
/// Bytes the pull stream may buffer ahead, beyond the messages of the window: at least one
/// message of the largest size the server takes, so that no message is too large to pull.
const PULL_BYTES_MIN: usize = 2 << 20;

/// One subscription to the partition's consumer.
pub(crate) struct Pulling {
    pub(crate) consumer: PullConsumer,
    pub(crate) messages: pull::Stream,
    /// Every advisory about the consumer: pins, and terminations.
    pub(crate) advisories: async_nats::Subscriber,
}

/// Subscribes to the partition's consumer, created or brought up to the deployment's settings
/// first.
pub(crate) async fn subscribe(
    js: &jetstream::Context,
    deployment: &Deployment,
    partition: u32,
    pin_timeout: Duration,
) -> anyhow::Result<Pulling> {
    let consumer = ensure_consumer(js, deployment, partition, pin_timeout).await?;
    let name = deployment.id.consumer_name(partition);
    let advisories = js
        .client()
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.*.{}.{name}",
            deployment.spec.stream
        ))
        .await
        .with_context(|| format!("failed to follow the advisories of {name}"))?;
    let max_payload = js.client().server_info().max_payload;
    let messages = consumer
        .stream()
        .group(PRIORITY_GROUP)
        .max_messages_per_batch(deployment.spec.window as usize)
        .max_bytes_per_batch(
            deployment
                .tenant
                .quotas
                .max_window_bytes
                .max((2 * max_payload).max(PULL_BYTES_MIN) as u64) as usize,
        )
        .expires(pull_expires(pin_timeout))
        .messages()
        .await
        .with_context(|| format!("failed to pull from consumer {name}"))?;
    Ok(Pulling {
        consumer,
        messages,
        advisories,
    })
}

/// How long one pull request waits on the server: as long as the pin allows, since an idle
/// partition costs a request (and its expiry) per period. A pinned puller must ask again within
/// the pin timeout to keep the pin. There are no idle heartbeats: a pull request lost with a
/// connection is sent again when the client reconnects, or a few seconds after it expires.
fn pull_expires(pin_timeout: Duration) -> Duration {
    pin_timeout.saturating_sub(PULL_MARGIN).max(pin_timeout / 2)
}

/// The stream sequence of the message a consumer advisory says the server terminated: a
/// message removed from the stream while pending (its limits, a delete), or terminated by
/// another client. weir's own `+TERM`s are reported too, for messages it has settled.
pub(crate) fn terminated(advisory: &async_nats::Message) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Terminated {
        #[serde(rename = "type")]
        kind: String,
        stream_seq: u64,
    }
    let event: Terminated = serde_json::from_slice(&advisory.payload).ok()?;
    (event.kind == "io.nats.jetstream.advisory.v1.terminated").then_some(event.stream_seq)
}

/// The settings a deployment gives its partition consumers: any change to them moves the
/// partition to a new subscription.
pub(crate) fn settings_differ(a: &Deployment, b: &Deployment) -> bool {
    let (a, b) = (&a.spec, &b.spec);
    a.stream != b.stream
        || a.window != b.window
        || a.retry.max_deliver != b.retry.max_deliver
        || a.retry.ack_wait != b.retry.ack_wait
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
        deliver_policy: deliver_policy(spec.start),
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.retry.ack_wait,
        max_deliver: i64::from(spec.retry.max_deliver + SERVER_DELIVERIES_BEYOND_ATTEMPTS),
        max_ack_pending: i64::from(spec.window),
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
    // A consumer keeps its place: where a new one would start is for new ones only.
    if let Some(existing) = &existing
        && existing.config.deliver_policy != config.deliver_policy
    {
        let kept = pull::Config {
            deliver_policy: existing.config.deliver_policy,
            ..config.clone()
        };
        if let Ok(consumer) = stream.create_consumer(kept).await {
            return Ok(consumer);
        }
    }
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

/// Where a consumer created for a deployment starting at `start` begins.
fn deliver_policy(start: StartAt) -> DeliverPolicy {
    match start {
        StartAt::All => DeliverPolicy::All,
        StartAt::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        StartAt::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pull_is_renewed_within_the_pin_timeout() {
        let secs = Duration::from_secs;
        assert_eq!(pull_expires(secs(5)), secs(4));
        assert_eq!(pull_expires(secs(30)), secs(29));
        let short = Duration::from_millis(1500);
        assert_eq!(pull_expires(short), short / 2);
    }
}
