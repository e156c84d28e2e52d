//! Per-partition state (`weir:handler/state`): what a call sees, what takes effect, the
//! tenant's quotas, and exactly-once effects through failures. Judged from the output stream
//! and the state bucket, as a user reads them.

use std::time::Duration;

use weir::control::DeploymentId;
use weir::deploy::DeployRequest;
use weir::node::{self, NodeConfig};
use weir::spec::{LimitsSpec, RetrySpec};
use weir::state::StateBucket;
use weir::tenants::TenantsConfig;

use crate::support::{Env, INPUT, OUTPUT, guest, key_in, scripted};

const PARTITIONS: u32 = 2;

/// The stateful guest on `IN`, publishing to `out.>`, giving a message up after two
/// deliveries 100ms apart.
fn stateful(handler: &str) -> DeployRequest {
    DeployRequest {
        component: guest("stateful"),
        retry: RetrySpec {
            max_deliver: 2,
            backoff: vec![Duration::from_millis(100)],
            ..RetrySpec::default()
        },
        ..scripted(handler)
    }
}

/// The replies of the outputs in the output stream, in its order.
async fn replies(env: &Env, count: usize) -> Vec<String> {
    env.wait_messages(OUTPUT, count)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn a_call_reads_its_own_writes_and_only_acked_calls_change_the_state() -> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(
        &node,
        DeployRequest {
            limits: LimitsSpec {
                handler_timeout: Duration::from_millis(500),
                max_memory_bytes: 32 << 20,
                ..LimitsSpec::default()
            },
            ..stateful("sums")
        },
    )
    .await?;
    let key = key_in(0, PARTITIONS, 0);
    let subject = format!("in.{key}.ev");
    for payload in [
        "read-own own",
        "add total 5",
        "add-then-retry total 100",
        "add-then-reject total 100",
        "add-then-trap total 100",
        "add-then-overrun total 100 2000",
        "add-then-hog total 100",
        "add total 7",
        "delete own",
        "read own",
    ] {
        env.publish(&subject, payload).await?;
    }
    // Each failing call is given up after its second delivery; the partition then moves on.
    assert_eq!(
        replies(&env, 5).await,
        ["first,second", "total=5", "total=12", "none", "none"],
        "a failed call's write took effect, or a call did not see its own"
    );
    let dead = env.wait_dead_letters(5).await;
    assert_eq!(dead.len(), 5);

    let id = DeploymentId::new("test", "sums")?;
    let bucket = StateBucket::open(&env.js, "test").await?;
    assert_eq!(
        bucket.get(&id, 0, "total").await?.as_deref(),
        Some(&b"12"[..])
    );
    assert_eq!(bucket.get(&id, 0, "own").await?, None);
    node.shutdown().await
}

#[tokio::test]
async fn writes_over_the_tenants_quotas_are_refused_with_the_quota_that_refused_them()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let tenants = TenantsConfig::parse(
        r#"
        [tenants.test]
        max_state_value_bytes = "1KiB"
        max_state_keys = 10
        max_state_bytes = 200
        max_state_writes_per_call = 5
        "#,
    )?;
    let node = node::start(
        env.client.clone(),
        NodeConfig {
            tenants,
            ..NodeConfig::default()
        },
    )
    .await?;
    env.deploy_on(&node, stateful("quotas")).await?;
    let subject = format!("in.{}.ev", key_in(1, PARTITIONS, 0));
    for payload in [
        "put-big big 2048",
        "put-many w 6",
        "put-many a 5",
        "put-many c 1",
        "put-big w0 300",
        "keys",
    ] {
        env.publish(&subject, payload).await?;
    }
    assert_eq!(
        replies(&env, 6).await,
        [
            "state value larger than the tenant's limit of 1024 bytes",
            "this call has already written 5 state keys, the most one may",
            "ok",
            "the partition would hold more than the tenant's 10 state keys",
            "the partition's state would take more than the tenant's 200 bytes",
            "a0,a1,a2,a3,a4,w0,w1,w2,w3,w4",
        ]
    );
    node.shutdown().await
}

#[tokio::test]
async fn state_outlives_the_node_and_a_redelivered_message_is_not_applied_twice()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let key = key_in(0, PARTITIONS, 1);
    let subject = format!("in.{key}.ev");
    let first = env.node().await?;
    env.deploy_on(&first, stateful("kept")).await?;
    env.publish(&subject, "add total 2").await?;
    assert_eq!(replies(&env, 1).await, ["total=2"]);
    first.shutdown().await?;

    // A new node (a new instance, a new worker) goes on from what the bucket holds.
    let second = env.node().await?;
    env.publish(&subject, "add total 3").await?;
    assert_eq!(replies(&env, 2).await, ["total=2", "total=5"]);

    // The consumer is reset to before both messages: they come again, are acknowledged as
    // applied, and change nothing.
    let consumer = DeploymentId::new("test", "kept")?.consumer_name(0);
    let stream = env.js.get_stream(INPUT).await?;
    stream.delete_consumer(&consumer).await?;
    env.publish(&subject, "add total 10").await?;
    assert_eq!(replies(&env, 3).await, ["total=2", "total=5", "total=15"]);
    // Acked: the second message, then all three again.
    assert_eq!(second.counters().snapshot().acked, 4);
    let bucket = StateBucket::open(&env.js, "test").await?;
    let id = DeploymentId::new("test", "kept")?;
    assert_eq!(
        bucket.get(&id, 0, "total").await?.as_deref(),
        Some(&b"15"[..])
    );
    second.shutdown().await
}

#[tokio::test]
async fn a_component_built_for_the_first_version_of_the_contract_still_runs() -> anyhow::Result<()>
{
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(
        &node,
        DeployRequest {
            component: guest("v0_1"),
            ..scripted("first")
        },
    )
    .await?;
    env.publish("in.k1.ev", "hello from 0.1.0").await?;
    assert_eq!(replies(&env, 1).await, ["hello from 0.1.0"]);
    node.shutdown().await
}
