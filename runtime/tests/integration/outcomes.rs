//! What each outcome does to the message and to its partition.

use std::time::Duration;

use weir::dlq::Reason;

use crate::support::{Env, INPUT, OUTPUT, header, key_in, read, scripted};

const PARTITIONS: u32 = 4;

/// Publishes one echo per partition and waits for them, so every instance is warm.
async fn warm_up(env: &Env) -> anyhow::Result<()> {
    for p in 0..PARTITIONS {
        env.publish(
            &format!("in.{}.warm", key_in(p, PARTITIONS, 9)),
            "echo warm",
        )
        .await?;
    }
    env.wait_messages(OUTPUT, PARTITIONS as usize).await;
    Ok(())
}

#[tokio::test]
async fn a_retry_comes_back_after_its_delay_with_the_next_attempt_ahead_of_later_messages()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("retry")).await?;
    warm_up(&env).await?;

    let key = key_in(0, PARTITIONS, 0);
    let held = env
        .publish(&format!("in.{key}.ev"), "retry-until 2 300")
        .await?;
    for i in 0..3 {
        env.publish(&format!("in.{key}.ev"), &format!("echo later {i}"))
            .await?;
    }

    let outputs = env.wait_messages(OUTPUT, PARTITIONS as usize + 4).await;
    let retried = outputs
        .iter()
        .find(|m| &m.payload[..] == b"retry-until 2 300")
        .expect("retried output");
    assert_eq!(header(retried, "delivery-attempt"), Some("2"));
    let input = env
        .js
        .get_stream(INPUT)
        .await?
        .get_raw_message(held)
        .await?;
    let waited = retried.time - input.time;
    assert!(
        waited >= Duration::from_millis(300),
        "came back after {waited}, before the 300ms delay"
    );
    let later: Vec<_> = outputs
        .iter()
        .filter(|m| m.payload.starts_with(b"echo later"))
        .collect();
    assert_eq!(later.len(), 3);
    assert!(
        later.iter().all(|m| m.sequence > retried.sequence),
        "a later message overtook the retry"
    );
    assert_eq!(node.counters().snapshot().retried, 1);
    node.shutdown().await
}

#[tokio::test]
async fn other_partitions_keep_flowing_while_one_waits_for_a_retry() -> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("flow")).await?;
    warm_up(&env).await?;

    env.publish(
        &format!("in.{}.ev", key_in(0, PARTITIONS, 0)),
        "retry-until 2 3000",
    )
    .await?;
    for i in 0..12 {
        let partition = 1 + i % (PARTITIONS - 1);
        env.publish(
            &format!("in.{}.ev", key_in(partition, PARTITIONS, 0)),
            &format!("echo other {i}"),
        )
        .await?;
    }

    let outputs = env.wait_messages(OUTPUT, PARTITIONS as usize + 13).await;
    let held = outputs
        .iter()
        .find(|m| m.payload.starts_with(b"retry-until"))
        .expect("held output");
    let others: Vec<_> = outputs
        .iter()
        .filter(|m| m.payload.starts_with(b"echo other"))
        .collect();
    assert_eq!(others.len(), 12);
    assert!(
        others.iter().all(|m| m.sequence < held.sequence),
        "messages of other partitions waited for partition 0's retry"
    );
    node.shutdown().await
}

#[tokio::test]
async fn a_rejected_message_is_terminated_with_the_handlers_reason_and_its_partition_moves_on()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("reject")).await?;

    let key = key_in(2, PARTITIONS, 0);
    let rejected = env
        .publish(&format!("in.{key}.ev"), "reject bad payload: not json")
        .await?;
    env.publish(&format!("in.{key}.ev"), "echo after the reject")
        .await?;

    let outputs = env.wait_messages(OUTPUT, 1).await;
    assert_eq!(&outputs[0].payload[..], b"echo after the reject");
    let letters = env.wait_dead_letters(1).await;
    let letter = &letters[0];
    assert_eq!(letter.reason, Some(Reason::Terminated));
    assert_eq!(letter.term_reason.as_deref(), Some("bad payload: not json"));
    assert_eq!(letter.last_error, "rejected: bad payload: not json");
    assert_eq!(
        (letter.stream.as_str(), letter.stream_seq),
        (INPUT, rejected)
    );
    assert_eq!(&letter.payload[..], b"reject bad payload: not json");
    assert_eq!(node.counters().snapshot().rejected, 1);
    assert_eq!(read(&env.js, OUTPUT).await.len(), 1);
    node.shutdown().await
}

#[tokio::test]
async fn a_call_longer_than_ack_wait_keeps_its_message_by_reporting_progress() -> anyhow::Result<()>
{
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    let mut request = scripted("progress");
    request.retry.ack_wait = Duration::from_secs(1);
    env.deploy_on(&node, request).await?;

    let key = key_in(1, PARTITIONS, 0);
    env.publish(&format!("in.{key}.ev"), "sleep 3500").await?;
    env.publish(&format!("in.{key}.ev"), "echo next").await?;

    let outputs = env.wait_messages(OUTPUT, 2).await;
    assert_eq!(&outputs[0].payload[..], b"sleep 3500");
    assert_eq!(header(&outputs[0], "delivery-attempt"), Some("1"));
    // Had AckWait expired under the call, the server would have redelivered the slow message
    // ahead of "echo next", and it would have been handled twice.
    assert_eq!(&outputs[1].payload[..], b"echo next");
    let counts = node.counters().snapshot();
    assert_eq!((counts.acked, counts.failed), (2, 0));
    node.shutdown().await
}
