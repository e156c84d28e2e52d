//! Outputs: stored only after `ack`, never from a call that retried or failed, and never twice.

use std::time::Duration;

use weir::dlq::Reason;

use crate::support::{
    Env, INPUT, OUTPUT, header, key_in, read, scripted, scripted_giving_up, wait_for,
};

#[tokio::test]
async fn outputs_of_calls_that_retried_or_failed_are_never_seen() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    let request = scripted_giving_up("unseen", 2, Duration::from_millis(50));
    env.deploy_on(&node, request).await?;

    let key = key_in(0, 2, 0);
    env.publish(&format!("in.{key}.ev"), "echo-then-retry")
        .await?;
    env.publish(&format!("in.{key}.ev"), "echo-then-trap")
        .await?;
    env.publish(&format!("in.{key}.ev"), "echo the only output")
        .await?;

    let letters = env.wait_dead_letters(2).await;
    assert!(
        letters
            .iter()
            .all(|letter| letter.reason == Some(Reason::MaxDeliveries))
    );
    let outputs = env.wait_messages(OUTPUT, 1).await;
    let payloads: Vec<&[u8]> = outputs.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [b"echo the only output".as_slice()]);
    let counts = node.counters().snapshot();
    assert_eq!((counts.retried, counts.failed, counts.acked), (2, 2, 1));
    node.shutdown().await
}

#[tokio::test]
async fn a_redelivery_after_outputs_were_stored_produces_no_duplicates() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("dedupe")).await?;

    let key = key_in(0, 2, 0);
    let mut sequences = Vec::new();
    for i in 0..5 {
        sequences.push(
            env.publish(&format!("in.{key}.ev"), &format!("emit 2 {i}"))
                .await?,
        );
    }
    let outputs = env.wait_messages(OUTPUT, 10).await;
    assert_eq!(
        header(&outputs[0], "Nats-Msg-Id"),
        Some(format!("weir:test:dedupe:{INPUT}:{}:0", sequences[0]).as_str())
    );

    // Rewind the partition's consumer so the five messages are delivered again, as they would
    // be if their acks had been lost: the worker that settled them settles them again without
    // calling the handler.
    let stream = env.js.get_stream(INPUT).await?;
    let consumer = "weir_test_dedupe_p000";
    let last = *sequences.last().expect("five sequences");
    let settled_again = || async {
        let info = env
            .js
            .get_stream(INPUT)
            .await
            .ok()?
            .consumer_info(consumer)
            .await
            .ok()?;
        (info.delivered.stream_sequence == last
            && info.ack_floor.stream_sequence == last
            && info.num_ack_pending == 0)
            .then_some(())
    };
    stream.reset_consumer(consumer, Some(sequences[0])).await?;
    wait_for("the five messages to be acked again", settled_again).await;
    let counts = node.counters().snapshot();
    assert_eq!(
        (counts.acked, counts.outputs),
        (5, 10),
        "the handler was called again"
    );

    // As if the node had died after storing their outputs and before acking them: another node
    // handles them again, and the output stream drops what it already has.
    node.shutdown().await?;
    stream.reset_consumer(consumer, Some(sequences[0])).await?;
    let node = env.node().await?;
    let counters = node.counters();
    wait_for("the five messages to be handled again", || async {
        (counters.snapshot().acked >= 5).then_some(())
    })
    .await;
    let outputs = read(&env.js, OUTPUT).await;
    assert_eq!(outputs.len(), 10, "redelivered outputs were stored twice");
    assert_eq!(
        counters.snapshot().outputs,
        10,
        "the handler did publish every output again"
    );
    node.shutdown().await
}
