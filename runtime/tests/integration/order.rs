//! Order: within a key, outputs arrive in publish order, judged from the output stream read
//! back per key; with no failures each message is handled exactly once, and with failures
//! scattered among them, each failure holds its partition until it is handled.

use std::collections::BTreeMap;
use std::time::Duration;

use weir::deploy::DeployRequest;
use weir::spec::{LimitsSpec, RetrySpec};
use weir::traffic::{Payload, Traffic};

use crate::support::{Env, INPUT, OUTPUT, header, scripted, seqs_per_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_256_keys_keep_per_key_order_and_are_handled_once()
-> anyhow::Result<()> {
    const MESSAGES: u64 = 10_000;
    const KEYS: u64 = 256;
    let env = Env::with_streams(8).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("order")).await?;

    let traffic = Traffic {
        subject: "in.{key}.ev".into(),
        payload: Payload::Template("echo {key} {seq}".into()),
        count: MESSAGES,
        keys: KEYS,
        headers: vec![],
    };
    traffic.publish(&env.js, |_| {}).await?;

    let outputs = env.wait_messages(OUTPUT, MESSAGES as usize).await;
    for output in &outputs {
        assert_eq!(
            header(output, "delivery-attempt"),
            Some("1"),
            "{:?} was handled more than once",
            output.payload
        );
    }
    let per_key = seqs_per_key(&outputs);
    assert_eq!(per_key.len(), KEYS as usize);
    for (key, seqs) in &per_key {
        let expected: Vec<u64> =
            (1..=MESSAGES / KEYS + u64::from(key_index(key) < MESSAGES % KEYS)).collect();
        assert_eq!(
            seqs, &expected,
            "outputs of {key} out of order or incomplete"
        );
    }

    let counts = node.counters().snapshot();
    assert_eq!(
        (counts.acked, counts.retried, counts.rejected, counts.failed),
        (MESSAGES, 0, 0, 0)
    );
    assert_eq!(outputs.len() as u64, MESSAGES);
    node.shutdown().await
}

fn key_index(key: &str) -> u64 {
    key.trim_start_matches('k').parse().unwrap_or(u64::MAX)
}

/// What the scripted guest is asked to do with message `n`: mostly echo, and scattered among
/// the echoes (by a fixed pseudo-random pick, so every run is the same) retries with and
/// without a delay, traps and deadline overruns that succeed on a later attempt, and
/// rejections. Returns the command and whether the message has an output.
fn command(n: u64) -> (&'static str, bool) {
    let pick = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 1000;
    match pick {
        0..10 => ("retry-until 3 30", true),
        10..20 => ("retry-until 2", true),
        20..30 => ("trap-until 3", true),
        30..34 => ("overrun-until 2 1000", true),
        34..44 => ("reject on purpose", false),
        _ => ("echo", true),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_window_in_flight_retries_rejections_traps_and_overruns_keep_per_key_order()
-> anyhow::Result<()> {
    const MESSAGES: u64 = 10_240;
    const KEYS: u64 = 256;
    const PARTITIONS: u32 = 16;
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    let request = DeployRequest {
        limits: LimitsSpec {
            handler_timeout: Duration::from_millis(300),
            ..LimitsSpec::default()
        },
        retry: RetrySpec {
            max_deliver: 5,
            backoff: vec![Duration::from_millis(20)],
            ..RetrySpec::default()
        },
        ..scripted("scatter")
    };
    let spec = env.deploy_on(&node, request).await?;
    assert!(spec.window > 1, "the default window is one message");

    // Publish everything first, so every partition's window fills.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (mut rejected, mut retried) = (0, 0);
    let mut acks = Vec::new();
    for n in 0..MESSAGES {
        let (key, seq) = (format!("k{}", n % KEYS), n / KEYS + 1);
        let (command, has_output) = command(n);
        if has_output {
            expected.entry(key.clone()).or_default().push(seq);
        } else {
            rejected += 1;
        }
        if command != "echo" && has_output {
            retried += 1;
        }
        let payload = format!("{command} {key} {seq}");
        acks.push(
            env.js
                .publish(format!("in.{key}.ev"), payload.into())
                .await?,
        );
        if acks.len() == 512 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    assert!(
        rejected > 50 && retried > 200,
        "{rejected} rejected, {retried} retried"
    );

    let outputs = env
        .wait_messages(OUTPUT, MESSAGES as usize - rejected)
        .await;
    assert_eq!(
        outputs.len(),
        MESSAGES as usize - rejected,
        "more outputs than messages"
    );
    assert_eq!(
        seqs_per_key(&outputs),
        expected,
        "some key's outputs are out of order, missing or repeated"
    );
    let letters = env.wait_dead_letters(rejected).await;
    assert_eq!(letters.len(), rejected, "{letters:?}");
    for letter in &letters {
        let reason = letter.term_reason.as_deref().unwrap_or("");
        assert!(reason.starts_with("on purpose"), "{letter:?}");
    }

    // The consumers did have a window of messages in flight.
    let stream = env.js.get_stream(INPUT).await?;
    let info = stream.consumer_info("weir_test_scatter_p000").await?;
    assert_eq!(info.config.max_ack_pending, i64::from(spec.window));
    node.shutdown().await
}
