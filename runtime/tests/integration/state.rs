//! Per-partition state (`weir:handler/state`): what a call sees, what takes effect, the
//! tenant's quotas, and exactly-once effects through failures. Judged from the output stream
//! and the state bucket, as a user reads them.

use std::collections::BTreeMap;
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
    stateful_in(handler, guest("stateful"))
}

/// [`stateful`], with `component`: the stateful guest in another language.
fn stateful_in(handler: &str, component: Vec<u8>) -> DeployRequest {
    DeployRequest {
        component,
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
    reads_its_own_writes_and_only_acked_calls_change_its_state(guest("stateful")).await
}

/// `component`, the stateful guest in some language, reads its own writes, and only its acked
/// calls change its state.
pub(crate) async fn reads_its_own_writes_and_only_acked_calls_change_its_state(
    component: Vec<u8>,
) -> anyhow::Result<()> {
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
            ..stateful_in("sums", component)
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
    writes_over_the_quotas_are_refused_with_the_quota_that_refused_them(guest("stateful")).await
}

/// `component`, the stateful guest in some language, is told which of the tenant's quotas
/// refused each write it was refused, in the same words, and `weir status` counts them.
pub(crate) async fn writes_over_the_quotas_are_refused_with_the_quota_that_refused_them(
    component: Vec<u8>,
) -> anyhow::Result<()> {
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
    env.deploy_on(&node, stateful_in("quotas", component))
        .await?;
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

    // `weir status` counts them, by the quota that refused them, as the node reports them.
    let expected =
        serde_json::json!({"bytes": 1, "keys": 1, "value_bytes": 1, "writes_per_call": 1});
    crate::support::wait_for("the refused writes in `weir status`", || async {
        let json = crate::lifecycle::ok(&env, &["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_str(&json).ok()?;
        (status["deployments"][0]["state_refusals"] == expected).then_some(())
    })
    .await;
    let table = crate::lifecycle::ok(&env, &["status"]).await;
    assert!(
        table.contains(
            "state writes refused by the tenant's quotas: \
             1 by bytes, 1 by keys, 1 by value_bytes, 1 by writes_per_call"
        ),
        "{table}"
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
    // The new consumer delivered all three: the first two were acknowledged as applied.
    let info = crate::support::wait_for("the third message to be acked", || async {
        let info = stream.consumer_info(&consumer).await.ok()?;
        (info.ack_floor.stream_sequence == 3).then_some(info)
    })
    .await;
    assert!(info.delivered.consumer_sequence >= 3, "{info:?}");
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

/// Runs `messages` `add <key> <seq>` over `keys` keys through three `weir node` processes
/// (on `urls`) with two `kill -9`s, a graceful drain and a redeploy along the way, and
/// `midway` halfway through, then judges the state bucket and the output stream: every key's
/// total is the sum of its messages, and every threshold output appears exactly once, in order.
async fn totals_survive(
    js: &async_nats::jetstream::Context,
    urls: &str,
    partitions: u32,
    messages: u64,
    keys: u64,
    midway: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use weir::traffic::{Payload, Traffic};

    use crate::fleet::{NodeProcess, drained, settled, wait_stored};

    const THRESHOLD: u64 = 100;
    let mut a = NodeProcess::start("a", urls);
    let mut b = NodeProcess::start("b", urls);
    let mut c = NodeProcess::start("c", urls);
    let request = |tag: &str| DeployRequest {
        config: [
            ("threshold".to_owned(), THRESHOLD.to_string()),
            ("tag".to_owned(), tag.to_owned()),
        ]
        .into(),
        retry: RetrySpec {
            backoff: vec![Duration::from_millis(100)],
            ..RetrySpec::default()
        },
        ..stateful("totals")
    };
    weir::deploy::deploy(js, &weir::host::Host::new()?, request("v1")).await?;
    settled(js, &["a", "b", "c"], 1).await;
    Traffic {
        subject: "in.{key}.ev".into(),
        payload: Payload::Template("add {key} {seq}".into()),
        count: messages,
        keys,
        headers: vec![],
    }
    .publish(js, |_| {})
    .await?;

    // The outputs expected, from the input stream as stored: per key, a total each time it
    // crosses a multiple of the threshold.
    let inputs = crate::support::read(js, INPUT).await;
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for input in &inputs {
        let text = String::from_utf8_lossy(&input.payload).into_owned();
        let mut words = text.split_whitespace().skip(1);
        let (Some(key), Some(n)) = (words.next(), words.next()) else {
            panic!("input {text:?} is not `add <key> <n>`");
        };
        let total = totals.entry(key.to_owned()).or_default();
        let before = *total;
        *total += n.parse::<u64>()?;
        if before / THRESHOLD != *total / THRESHOLD {
            expected.entry(key.to_owned()).or_default().push(*total);
        }
    }
    let outputs: u64 = expected.values().map(|v| v.len() as u64).sum();

    wait_stored(js, OUTPUT, outputs / 5).await;
    a.kill9();
    wait_stored(js, OUTPUT, 2 * outputs / 5).await;
    b.terminate().await;
    let d = NodeProcess::start("d", urls);
    wait_stored(js, OUTPUT, outputs / 2).await;
    midway()?;
    wait_stored(js, OUTPUT, 3 * outputs / 5).await;
    // On a cluster that just lost a server, the stream's leader may be moving: the deploy is
    // tried again until the stream answers.
    let host = weir::host::Host::new()?;
    crate::support::wait_for("the redeploy to be stored", || async {
        weir::deploy::deploy(js, &host, request("v2")).await.ok()
    })
    .await;
    wait_stored(js, OUTPUT, 4 * outputs / 5).await;
    c.kill9();
    settled(js, &["d"], 1).await;
    drained(js, "totals").await;

    let stored = crate::support::read(js, OUTPUT).await;
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for output in &stored {
        let text = String::from_utf8_lossy(&output.payload).into_owned();
        let (key, total) = text.split_once('=').expect("`<key>=<total>`");
        seen.entry(key.to_owned()).or_default().push(total.parse()?);
    }
    for (key, expected) in &expected {
        assert_eq!(seen.get(key), Some(expected), "threshold outputs of {key}");
    }
    assert_eq!(stored.len() as u64, outputs, "outputs repeated or lost");

    let id = DeploymentId::new("test", "totals")?;
    let bucket = StateBucket::open(js, "test").await?;
    for (key, total) in &totals {
        let partition = weir::partition::partition_of(&[key], partitions);
        let stored = bucket.get(&id, partition, key).await?;
        assert_eq!(
            stored.as_deref(),
            Some(total.to_string().as_bytes()),
            "the total of {key} in state"
        );
    }
    drop(d);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_summed_exactly_once_through_kills_a_drain_and_a_redeploy()
-> anyhow::Result<()> {
    const FAULT_PARTITIONS: u32 = 16;
    let env = Env::with_streams(FAULT_PARTITIONS).await?;
    let url = env.server.url();
    totals_survive(&env.js, &url, FAULT_PARTITIONS, 20_000, 500, || Ok(())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_summed_exactly_once_on_a_nats_cluster_that_loses_a_server()
-> anyhow::Result<()> {
    const FAULT_PARTITIONS: u32 = 8;
    let mut servers = weir::embedded::start_cluster(3)?;
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let client = async_nats::ConnectOptions::new()
        .connect(urls.clone())
        .await?;
    let js = async_nats::jetstream::new(client);
    crate::support::wait_for("the NATS cluster to elect a JetStream leader", || async {
        crate::support::create_streams(&js, FAULT_PARTITIONS, 3)
            .await
            .ok()
    })
    .await;
    let midway = || {
        servers[0].stop();
        Ok(())
    };
    totals_survive(&js, &urls.join(","), FAULT_PARTITIONS, 6_000, 200, midway).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_state_lists_reads_and_repairs_a_paused_handlers_state() -> anyhow::Result<()> {
    use crate::cli::text;
    use crate::lifecycle::{ok, run};

    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, stateful("repaired")).await?;
    let subject = format!("in.{}.ev", key_in(1, PARTITIONS, 0));
    env.publish(&subject, "add total 5").await?;
    env.publish(&subject, "add other.key 1").await?;
    assert_eq!(replies(&env, 2).await, ["total=5", "other.key=1"]);

    let handler = ["--tenant", "test", "--name", "repaired"];
    let listed: serde_json::Value = serde_json::from_str(
        &ok(&env, &[&["state", "ls", "--json"][..], &handler].concat()).await,
    )?;
    let keys: Vec<(u64, &str, u64)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e["partition"].as_u64().unwrap(),
                e["key"].as_str().unwrap(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, [(1, "other.key", 1), (1, "total", 1)]);
    let table = ok(
        &env,
        &[&["state", "ls", "--prefix", "tot"][..], &handler].concat(),
    )
    .await;
    assert!(
        table.contains("total") && !table.contains("other.key"),
        "{table}"
    );
    assert_eq!(
        ok(&env, &[&["state", "get", "total"][..], &handler].concat()).await,
        "5\n"
    );
    let status = ok(&env, &["status"]).await;
    assert!(status.contains("state 2 key(s) 2 B"), "{status}");

    // A repair waits for a pause, so that no message is handled with the value it replaces.
    let put = [
        &["state", "put", "--partition", "1", "total", "40"][..],
        &handler,
    ]
    .concat();
    let refused = run(&env, &put).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("pause it first"),
        "{}",
        text(&refused.stderr)
    );
    ok(&env, &[&["pause"][..], &handler].concat()).await;
    ok(&env, &put).await;
    ok(
        &env,
        &[
            &["state", "delete", "--partition", "1", "other.key"][..],
            &handler,
        ]
        .concat(),
    )
    .await;
    ok(&env, &[&["resume"][..], &handler].concat()).await;
    env.publish(&subject, "add total 2").await?;
    env.publish(&subject, "read other.key").await?;
    assert_eq!(
        replies(&env, 4).await,
        ["total=5", "other.key=1", "total=42", "none"]
    );

    let missing = run(&env, &[&["state", "get", "nothing"][..], &handler].concat()).await;
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("has no key \"nothing\""),
        "{}",
        text(&missing.stderr)
    );
    node.shutdown().await
}

#[tokio::test]
async fn state_laid_out_over_other_partitions_is_refused_unless_reset_and_undeploy_can_delete_it()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    weir::partition::create_stream(
        &env.js,
        &weir::partition::StreamRequest {
            name: "WIDE".into(),
            subjects: "wide.*.>".into(),
            partitions: 4,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    let node = env.node().await?;
    env.deploy_on(&node, stateful("moved")).await?;
    env.publish("in.k1.ev", "add total 5").await?;
    assert_eq!(replies(&env, 1).await, ["total=5"]);

    let wide = || DeployRequest {
        stream: "WIDE".into(),
        ..stateful("moved")
    };
    let host = weir::host::Host::new()?;
    let refused = weir::deploy::deploy(&env.js, &host, wide())
        .await
        .expect_err("state over 2 partitions deployed onto 4");
    let message = format!("{refused:#}");
    assert!(
        message.contains("laid out over 2 partition(s), and stream WIDE has 4")
            && message.contains("--reset-state"),
        "{message}"
    );
    env.deploy_on(
        &node,
        DeployRequest {
            reset_state: true,
            ..wide()
        },
    )
    .await?;
    env.publish("wide.k1.ev", "add total 1").await?;
    assert_eq!(replies(&env, 2).await, ["total=5", "total=1"]);

    let id = DeploymentId::new("test", "moved")?;
    let undeployed = weir::lifecycle::undeploy(&env.js, &id, false, true, |_| {}).await?;
    assert_eq!(undeployed.state, Some((1, true)));
    let bucket = StateBucket::open(&env.js, "test").await?;
    assert!(bucket.entries(&id, None).await?.is_empty());
    node.shutdown().await
}

#[tokio::test]
async fn a_commit_refused_because_the_state_changed_underneath_makes_the_worker_read_it_again()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, stateful("fenced")).await?;
    let subject = format!("in.{}.ev", key_in(0, PARTITIONS, 2));
    env.publish(&subject, "add total 1").await?;
    assert_eq!(replies(&env, 1).await, ["total=1"]);

    // Written behind the running worker's back (what `weir state put` refuses to do, and what
    // a node that lost the partition would find): its next commit is refused, and it handles
    // the message again from the state as the bucket holds it. What it published from the old
    // state is out already; what it publishes from the new state is a new output.
    let id = DeploymentId::new("test", "fenced")?;
    let bucket = StateBucket::open(&env.js, "test").await?;
    bucket.repair(&id, 0, "total", Some("100".into())).await?;
    env.publish(&subject, "add total 1").await?;
    crate::support::wait_for("the total to be 101", || async {
        let total = bucket.get(&id, 0, "total").await.ok()??;
        (&total[..] == b"101").then_some(())
    })
    .await;
    let last = replies(&env, 3).await;
    assert_eq!(last, ["total=1", "total=2", "total=101"]);
    node.shutdown().await
}
