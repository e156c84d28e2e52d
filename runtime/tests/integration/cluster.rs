//! Many nodes, one cluster: placement over the live membership, graceful handoff on join and
//! drain, crash failover, and exclusive delivery while nodes disagree. (Faults of NATS itself,
//! and nodes paused or cut off, are in [`crate::faults`].)

use std::time::Duration;

use async_nats::jetstream;
use weir::control::DeploymentId;
use weir::deploy::{self, DeployRequest};
use weir::host::Host;
use weir::node::{self, NodeConfig};
use weir::ownership::placement;

use crate::fleet::{
    NodeProcess, drained, history, judge, owners, resumption, settled, wait_stored,
};
use crate::support::{Env, OUTPUT, assert_outputs_follow_inputs, echoes, scripted, wait_for};

const PARTITIONS: u32 = 16;

async fn deploy(js: &jetstream::Context, request: DeployRequest) -> anyhow::Result<()> {
    deploy::deploy(js, &Host::new()?, request).await?;
    Ok(())
}

fn members(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

fn test_id(handler: &str) -> DeploymentId {
    DeploymentId::new("test", handler).expect("valid name")
}

fn moved(before: &[String], after: &[String]) -> usize {
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_own_every_partition_of_two_deployments_once_within_the_bound()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let url = env.server.url();
    let _nodes = ["a", "b", "c"].map(|id| NodeProcess::start(id, &url));
    deploy(&env.js, scripted("one")).await?;
    deploy(&env.js, scripted("two")).await?;

    let status = settled(&env.js, &["a", "b", "c"], 2).await;
    let all = members(&["a", "b", "c"]);
    let bound = placement::capacity(PARTITIONS, all.len()) as usize;
    for handler in ["one", "two"] {
        let owners = owners(&status, handler);
        assert_eq!(
            owners,
            placement::owners(&test_id(handler), PARTITIONS, &all),
            "{handler} is not placed as every node computes it"
        );
        for node in &all {
            let held = owners.iter().filter(|o| *o == node).count();
            assert!(
                held <= bound,
                "{node} holds {held} partitions of {handler}, over {bound}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_drain_move_only_placed_partitions_and_lose_or_repeat_nothing()
-> anyhow::Result<()> {
    const BATCH: u64 = 3_000;
    let env = Env::with_streams(PARTITIONS).await?;
    let url = env.server.url();
    let mut a = NodeProcess::start("a", &url);
    let mut b = NodeProcess::start_with("b", &url, &["--shutdown-timeout", "60s"]);
    let c = NodeProcess::start("c", &url);
    deploy(&env.js, scripted("flow")).await?;
    let three = owners(&settled(&env.js, &["a", "b", "c"], 1).await, "flow");

    // A fourth node joins while the first batch is being handled.
    echoes(&env.js, "echo", BATCH, 64).await;
    wait_stored(&env.js, OUTPUT, BATCH / 3).await;
    let d = NodeProcess::start("d", &url);
    let four = owners(&settled(&env.js, &["a", "b", "c", "d"], 1).await, "flow");
    assert_eq!(
        four,
        placement::owners(
            &test_id("flow"),
            PARTITIONS,
            &members(&["a", "b", "c", "d"])
        )
    );
    let moved_on_join = moved(&three, &four);
    assert!(four.iter().any(|o| o == "d"), "the new node got nothing");

    // A node drains while the second batch is being handled.
    wait_stored(&env.js, OUTPUT, BATCH).await;
    echoes(&env.js, "echo", BATCH, 64).await;
    wait_stored(&env.js, OUTPUT, BATCH + BATCH / 3).await;
    let (exit, drain_time) = b.terminate().await;
    assert!(
        exit.success(),
        "node b did not drain cleanly:\n{}",
        b.log_text()
    );
    let after = owners(&settled(&env.js, &["a", "c", "d"], 1).await, "flow");
    assert_eq!(
        after,
        placement::owners(&test_id("flow"), PARTITIONS, &members(&["a", "c", "d"]))
    );
    let moved_on_drain = moved(&four, &after);
    assert!(after.iter().all(|o| o != "b"));

    wait_stored(&env.js, OUTPUT, 2 * BATCH).await;
    drained(&env.js, "flow").await;
    assert_outputs_follow_inputs(&env.js).await;
    // Graceful handoffs repeat nothing: no message reaches a handler twice.
    let calls = history(&[&a, &b, &c, &d]);
    let verdict = judge(&calls, "flow");
    assert!(
        verdict.duplicates.is_empty(),
        "handled twice: {:?}",
        verdict.duplicates
    );
    assert!(
        verdict.shared_pins.is_empty(),
        "pins shared: {:?}",
        verdict.shared_pins
    );
    assert_eq!(calls.len() as u64, 2 * BATCH, "every message handled once");

    // Reported, not asserted: how long partitions waited for their new owner.
    let drained_at = b.logged_at("draining").expect("b logged its drain");
    let (_, handoff) = resumption(&calls, drained_at, |p| four[p as usize] == "b");
    eprintln!(
        "placement: join moved {moved_on_join} of {PARTITIONS} partitions (d gained {}), drain \
         moved {moved_on_drain} (b held {}); drain took {drain_time:?}; b's partitions resumed elsewhere within \
         {:?} of the drain starting",
        four.iter().filter(|o| *o == "d").count(),
        four.iter().filter(|o| *o == "b").count(),
        handoff
    );
    a.kill9();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_joins_during_fifty_thousand_messages_lose_nothing_and_keep_order()
-> anyhow::Result<()> {
    const MESSAGES: u64 = 50_000;
    let env = Env::with_streams(PARTITIONS).await?;
    let url = env.server.url();
    let mut a = NodeProcess::start("a", &url);
    let b = NodeProcess::start("b", &url);
    let mut c = NodeProcess::start("c", &url);
    deploy(&env.js, scripted("chaos")).await?;
    let before = owners(&settled(&env.js, &["a", "b", "c"], 1).await, "chaos");
    echoes(&env.js, "echo", MESSAGES, 500).await;

    wait_stored(&env.js, OUTPUT, MESSAGES / 5).await;
    a.kill9();
    let killed_a_at = now_nanos();
    let after_a = owners(&settled(&env.js, &["b", "c"], 1).await, "chaos");

    wait_stored(&env.js, OUTPUT, 2 * MESSAGES / 5).await;
    let d = NodeProcess::start("d", &url);
    settled(&env.js, &["b", "c", "d"], 1).await;

    wait_stored(&env.js, OUTPUT, 3 * MESSAGES / 5).await;
    c.kill9();
    settled(&env.js, &["b", "d"], 1).await;

    wait_stored(&env.js, OUTPUT, MESSAGES).await;
    drained(&env.js, "chaos").await;

    // What users see: every key's outputs exactly once and in order. (A killed node's
    // messages in flight are handled again by their next holder; their outputs carry the same
    // ids, and the output stream keeps only the first.)
    assert_outputs_follow_inputs(&env.js).await;
    let calls = history(&[&a, &b, &c, &d]);
    let verdict = judge(&calls, "chaos");
    assert!(
        verdict.shared_pins.is_empty(),
        "pins shared: {:?}",
        verdict.shared_pins
    );
    let handled: std::collections::BTreeSet<u64> = calls.iter().map(|c| c.stream_seq).collect();
    assert_eq!(handled.len() as u64, MESSAGES, "every message handled");

    // Reported, not asserted: how long a's partitions waited after the kill.
    let (resumed, failover) = resumption(&calls, killed_a_at, |p| before[p as usize] == "a");
    eprintln!(
        "chaos: {} duplicate(s) from kills; a's {} partitions resumed on survivors within {:?} \
         of kill -9 (the membership TTL, 2s, then its pins released at once); {} moved when a died",
        verdict.duplicates.len(),
        resumed,
        failover,
        moved(&before, &after_a)
    );
    Ok(())
}

fn now_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_both_claim_a_partition_never_both_deliver_it() -> anyhow::Result<()> {
    const MESSAGES: u64 = 300;
    let env = Env::with_streams(1).await?;
    // Both nodes ignore placement and pull the one partition; only the pin decides. The pin
    // timeout is long so that nothing but a drain moves it during the test.
    let config = |id: &str| NodeConfig {
        node_id: id.to_owned(),
        claim_all_partitions: true,
        pin_timeout: Duration::from_secs(60),
        ..NodeConfig::default()
    };
    let first = node::start(env.client.clone(), config("first")).await?;
    let second = node::start(
        async_nats::connect(env.server.url()).await?,
        config("second"),
    )
    .await?;
    deploy(&env.js, scripted("fenced")).await?;

    echoes(&env.js, "echo", MESSAGES, 8).await;
    wait_stored(&env.js, OUTPUT, MESSAGES).await;
    let (one, two) = (first.counters().snapshot(), second.counters().snapshot());
    assert_eq!(one.acked + two.acked, MESSAGES, "each message handled once");
    assert!(
        one.acked == 0 || two.acked == 0,
        "both nodes delivered the partition: {} and {}",
        one.acked,
        two.acked
    );
    let (pinned, standby) = if one.acked > 0 {
        (first, second)
    } else {
        (second, first)
    };

    // The pinned node drains: the standby one takes every later message.
    pinned.shutdown().await?;
    echoes(&env.js, "echo", MESSAGES, 8).await;
    wait_stored(&env.js, OUTPUT, 2 * MESSAGES).await;
    wait_for("the standby node to take over", || {
        let acked = standby.counters().snapshot().acked;
        async move { (acked == MESSAGES).then_some(()) }
    })
    .await;
    standby.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_gets_max_deliver_attempts_in_all_across_a_kill_and_a_handoff()
-> anyhow::Result<()> {
    const MAX_DELIVER: u32 = 6;
    let env = Env::with_streams(1).await?;
    let url = env.server.url();
    let control = weir::control::ControlPlane::open(&env.js).await?;
    // Long waits after the attempts at which the message changes hands, short ones otherwise:
    // the node holding it is killed, or drains, while it waits.
    let long = Duration::from_secs(120);
    let short = Duration::from_millis(100);
    let request = DeployRequest {
        retry: weir::spec::RetrySpec {
            max_deliver: MAX_DELIVER,
            backoff: vec![long, short, long, short, short],
            ..weir::spec::RetrySpec::default()
        },
        ..scripted("poison")
    };
    let id = request.id.clone();
    let mut a = NodeProcess::start("a", &url);
    deploy(&env.js, request).await?;
    settled(&env.js, &["a"], 1).await;
    let seq = crate::support::Env::publish(&env, "in.k1.ev", "trap").await?;
    let attempts = |at_least: u64| {
        let (control, id) = (&control, &id);
        async move {
            let key = weir::failures::failure_key(id, crate::support::INPUT, seq);
            wait_for(&format!("attempt {at_least} to be recorded"), || async {
                let value = control.failures.get(&key).await.ok()??;
                let failure: weir::failures::Failure = serde_json::from_slice(&value).ok()?;
                (failure.delivery >= at_least).then_some(())
            })
            .await;
        }
    };

    // a fails attempt 1 and dies while it waits; b takes over after the membership TTL and
    // the pin timeout, with attempts 2 and 3.
    attempts(1).await;
    a.kill9();
    let mut b = NodeProcess::start("b", &url);
    attempts(3).await;
    // b drains while it waits; c continues with attempts 4 to 6, then gives up.
    let c = NodeProcess::start("c", &url);
    let (exit, _) = b.terminate().await;
    assert!(
        exit.success(),
        "node b did not drain cleanly:\n{}",
        b.log_text()
    );

    let letters = env.wait_dead_letters(1).await;
    assert_eq!(letters[0].reason, Some(weir::dlq::Reason::MaxDeliveries));
    assert_eq!(letters[0].deliveries, u64::from(MAX_DELIVER));
    let calls: Vec<_> = history(&[&a, &b, &c])
        .into_iter()
        .filter(|call| call.stream_seq == seq)
        .map(|call| call.node)
        .collect();
    assert_eq!(
        calls.len(),
        MAX_DELIVER as usize,
        "the message was handled {} times in all: {calls:?}",
        calls.len()
    );
    assert_eq!(calls.first().map(String::as_str), Some("a"));
    assert_eq!(calls.last().map(String::as_str), Some("c"));
    Ok(())
}
