//! A failing handler never takes anything else down: traps, endless loops and memory hogs are
//! contained to their partition, retried, and dead-lettered after MaxDeliver.

use std::time::Duration;

use weir::dlq::Reason;
use weir::spec::LimitsSpec;

use crate::support::{Env, OUTPUT, key_in, scripted_giving_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_an_endless_loop_and_a_memory_hog_are_contained_and_stop_after_max_deliver()
-> anyhow::Result<()> {
    const PARTITIONS: u32 = 4;
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    let mut request = scripted_giving_up("contain", 2, Duration::from_millis(100));
    request.limits = LimitsSpec {
        max_memory_bytes: 16 << 20,
        handler_timeout: Duration::from_millis(500),
        ..LimitsSpec::default()
    };
    env.deploy_on(&node, request).await?;

    let mut poisons = Vec::new();
    for (partition, command) in [(0, "trap"), (1, "spin"), (2, "hog")] {
        let key = key_in(partition, PARTITIONS, 0);
        poisons.push(env.publish(&format!("in.{key}.ev"), command).await?);
        env.publish(&format!("in.{key}.ev"), &format!("echo after {command}"))
            .await?;
    }
    for i in 0..20 {
        env.publish(
            &format!("in.{}.ev", key_in(3, PARTITIONS, i % 3)),
            &format!("echo other {i}"),
        )
        .await?;
    }

    let outputs = env.wait_messages(OUTPUT, 23).await;
    for command in ["trap", "spin", "hog"] {
        let after = format!("echo after {command}");
        assert!(
            outputs.iter().any(|m| m.payload == after.as_bytes()),
            "partition of {command} did not move on"
        );
    }
    let mut letters = env.wait_dead_letters(3).await;
    letters.sort_by_key(|letter| letter.stream_seq);
    let expected_errors = [
        "trap: ",
        "deadline of 500ms exceeded",
        "memory limit of 16777216 bytes exceeded",
    ];
    for (letter, (seq, error)) in letters.iter().zip(poisons.iter().zip(expected_errors)) {
        assert_eq!(letter.reason, Some(Reason::MaxDeliveries));
        assert_eq!(letter.stream_seq, *seq);
        assert_eq!(letter.deliveries, 2);
        assert!(
            letter.last_error.starts_with(error),
            "dead letter of {seq} says {:?}, expected {error:?}",
            letter.last_error
        );
    }
    assert_eq!(
        node.counters().snapshot().failed,
        6,
        "each poison message failed exactly MaxDeliver times"
    );

    // Fresh instances serve the poisoned partitions, and the dead messages never come back.
    for partition in 0..3 {
        env.publish(
            &format!("in.{}.ev", key_in(partition, PARTITIONS, 0)),
            "echo again",
        )
        .await?;
    }
    env.wait_messages(OUTPUT, 26).await;
    assert_eq!(node.counters().snapshot().failed, 6);
    node.shutdown().await
}
