//! Order: within a key, outputs arrive in publish order; with no failures each message is
//! handled exactly once.

use std::collections::BTreeMap;

use weir::traffic::{Payload, Traffic};

use crate::support::{Env, OUTPUT, header, scripted};

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
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for output in &outputs {
        let text = std::str::from_utf8(&output.payload)?;
        let mut words = text.split_whitespace().skip(1);
        let (key, seq) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default().parse::<u64>()?,
        );
        per_key.entry(key.to_owned()).or_default().push(seq);
        assert_eq!(
            header(output, "delivery-attempt"),
            Some("1"),
            "{text} was delivered more than once"
        );
    }
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
