//! Test traffic: `weir publish` and the demo publish keyed messages from templates, and read a
//! stream back to check what a handler produced.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use bytes::Bytes;

/// Publish acknowledgements awaited at most this far behind the sends; sends stay in order.
const PUBLISH_WINDOW: usize = 512;

/// What to publish. Subject and payload templates may use `{key}` (the message's key, `k0` to
/// `k<keys-1>`, taken in turn), `{n}` (1, 2, … over all messages) and `{seq}` (1, 2, … per key).
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The subject template.
    pub subject: String,
    /// What each message carries.
    pub payload: Payload,
    /// How many messages.
    pub count: u64,
    /// How many distinct keys, used in turn.
    pub keys: u64,
    /// Headers set on every message.
    pub headers: Vec<(String, String)>,
}

/// Where payloads come from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The same bytes for every message (a file's contents).
    Fixed(Bytes),
    /// A text template, expanded per message.
    Template(String),
}

/// The message number `n` (0-based) of a run: its key and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The key (`k0`, `k1`, …).
    pub key: String,
    /// The message's number among its key's messages, from 1.
    pub seq: u64,
    /// The subject, filled in.
    pub subject: String,
    /// The payload, filled in.
    pub payload: Bytes,
}

impl Traffic {
    /// Renders message `n` (0-based).
    pub fn render(&self, n: u64) -> Rendered {
        let keys = self.keys.max(1);
        let key = format!("k{}", n % keys);
        let seq = n / keys + 1;
        let fill = |template: &str| {
            template
                .replace("{key}", &key)
                .replace("{n}", &(n + 1).to_string())
                .replace("{seq}", &seq.to_string())
        };
        let payload = match &self.payload {
            Payload::Fixed(bytes) => bytes.clone(),
            Payload::Template(template) => Bytes::from(fill(template)),
        };
        Rendered {
            subject: fill(&self.subject),
            payload,
            key,
            seq,
        }
    }

    /// Publishes every message in order, waiting for the stream to store each one;
    /// `progress` is called with the number stored so far.
    ///
    /// Each message carries a `Nats-Msg-Id` unique to this run, so when the stream cannot be
    /// reached (a server restarting, a leader moving) publishing starts again from the first
    /// message not yet confirmed, for up to [`RETRY_FOR`], and the stream drops what it had
    /// already stored. A message retried after later ones were stored lands after them.
    pub async fn publish(
        &self,
        js: &jetstream::Context,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let run = run_id();
        let mut confirmed = 0;
        let mut failing_since = None;
        loop {
            match self
                .publish_from(js, &run, &mut confirmed, &mut progress)
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if failing_since.is_none() {
                        self.check_captured(js).await?;
                    }
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > RETRY_FOR {
                        return Err(
                            error.context(format!("gave up after retrying for {RETRY_FOR:?}"))
                        );
                    }
                    tracing::warn!("{error:#}; publishing again from message {}", confirmed + 1);
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    /// Fails at once when no stream captures the subject, rather than retrying a typo.
    async fn check_captured(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        use async_nats::jetstream::context::GetStreamByNameErrorKind as Kind;
        let subject = self.render(0).subject;
        match js.stream_by_subject(subject.clone()).await {
            Err(error) if matches!(error.kind(), Kind::NotFound | Kind::InvalidSubject) => {
                anyhow::bail!("no stream captures {subject}: {error}")
            }
            // Found, or the server cannot say right now: worth retrying.
            _ => Ok(()),
        }
    }

    /// Publishes from message `confirmed` on, advancing `confirmed` as acks arrive.
    async fn publish_from(
        &self,
        js: &jetstream::Context,
        run: &str,
        confirmed: &mut u64,
        progress: &mut impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let mut in_flight = VecDeque::with_capacity(PUBLISH_WINDOW);
        for n in *confirmed..self.count {
            let message = self.render(n);
            let mut headers = HeaderMap::new();
            for (name, value) in &self.headers {
                headers.append(name.as_str(), value.as_str());
            }
            headers.insert("Nats-Msg-Id", format!("{run}:{n}"));
            let ack = js
                .publish_with_headers(message.subject.clone(), headers, message.payload)
                .await
                .with_context(|| format!("failed to publish to {}", message.subject))?;
            in_flight.push_back((message.subject, ack));
            if in_flight.len() >= PUBLISH_WINDOW {
                wait_stored(in_flight.pop_front()).await?;
                *confirmed += 1;
                progress(*confirmed);
            }
        }
        while let Some(pending) = in_flight.pop_front() {
            wait_stored(Some(pending)).await?;
            *confirmed += 1;
            progress(*confirmed);
        }
        Ok(())
    }
}

/// How long publishing keeps trying while the stream cannot be reached.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// A prefix for this run's message ids that no other run shares.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("weir-publish:{}:{nanos}", std::process::id())
}

async fn wait_stored(
    pending: Option<(String, jetstream::context::PublishAckFuture)>,
) -> anyhow::Result<()> {
    if let Some((subject, ack)) = pending {
        ack.await
            .with_context(|| format!("no stream stored the message published to {subject}"))?;
    }
    Ok(())
}

/// Every message currently in `stream`, in stream order.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<StreamMessage>> {
    let stream_handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("failed to open stream {stream}"))?;
    let state = stream_handle.cached_info().state.clone();
    let mut messages = Vec::with_capacity(usize::try_from(state.messages).unwrap_or(0));
    if state.messages == 0 {
        return Ok(messages);
    }
    for seq in state.first_sequence..=state.last_sequence {
        match stream_handle.get_raw_message(seq).await {
            Ok(message) => messages.push(message),
            Err(error)
                if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("failed to read {stream} sequence {seq}"));
            }
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_key_counter_and_per_key_sequence() {
        let traffic = Traffic {
            subject: "orders.{key}.created".into(),
            payload: Payload::Template(r#"{"n":{n},"customer":"{key}","seq":{seq}}"#.into()),
            count: 5,
            keys: 2,
            headers: vec![],
        };
        let third = traffic.render(2);
        assert_eq!(third.subject, "orders.k0.created");
        assert_eq!(
            third.payload,
            Bytes::from(r#"{"n":3,"customer":"k0","seq":2}"#)
        );
        assert_eq!((third.key.as_str(), third.seq), ("k0", 2));
    }
}
