//! A node's HTTP endpoints, scraped over HTTP as Prometheus and a process supervisor would:
//! `/metrics` counts what the worker did with each message, per partition, and `/readyz` says
//! whether the node can work.

use std::time::Duration;

use weir::node::{self, NodeConfig, NodeHandle};
use weir::spec::LimitsSpec;

use crate::support::{
    Env, OUTPUT, get, key_in, node_status, sample, scripted, scripted_giving_up, wait_for,
};

const PARTITIONS: u32 = 2;

/// A node `id` serving its endpoints on a free port, once `/readyz` says it is ready.
async fn ready_node(env: &Env, id: &str) -> anyhow::Result<NodeHandle> {
    let config = NodeConfig {
        node_id: id.into(),
        http: Some(([127, 0, 0, 1], 0).into()),
        ..NodeConfig::default()
    };
    let node = node::start(env.client.clone(), config).await?;
    wait_for("/readyz to answer 200", || async {
        (get(&node, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    Ok(node)
}

fn partition_series(name: &str, partition: u32, extra: &str) -> String {
    format!("{name}{{tenant=\"test\",handler=\"observed\",partition=\"{partition}\"{extra}}}")
}

#[tokio::test]
async fn metrics_count_every_outcome_per_partition_and_readyz_follows_the_nats_connection()
-> anyhow::Result<()> {
    let mut env = Env::with_streams(PARTITIONS).await?;
    let node = ready_node(&env, "observed").await?;
    let mut request = scripted_giving_up("observed", 3, Duration::from_millis(50));
    // Room enough for a call on a busy machine; the overrun sleeps well past it.
    request.limits = LimitsSpec {
        max_memory_bytes: 16 << 20,
        handler_timeout: Duration::from_secs(1),
        ..LimitsSpec::default()
    };
    env.deploy_on(&node, request).await?;

    // Partition 0: three acks and two rejections. Partition 1: a retry, a trap and an
    // overrun, each followed by an ack; then a memory hog and a forbidden publish, each
    // failing all three of its attempts and becoming a dead letter.
    let (first, second) = (key_in(0, PARTITIONS, 0), key_in(1, PARTITIONS, 0));
    for payload in ["echo a", "reject bad", "echo b", "reject worse", "echo c"] {
        env.publish(&format!("in.{first}.ev"), payload).await?;
    }
    for payload in [
        "retry-until 2 50",
        "trap-until 2",
        "overrun-until 2 3000",
        "hog",
        "forbidden",
    ] {
        env.publish(&format!("in.{second}.ev"), payload).await?;
    }
    env.wait_messages(OUTPUT, 6).await;

    let expected = [
        (partition_series("weir_messages_total", 0, ",outcome=\"ack\""), 3.0),
        (partition_series("weir_messages_total", 0, ",outcome=\"reject\""), 2.0),
        (partition_series("weir_messages_total", 1, ",outcome=\"ack\""), 3.0),
        (partition_series("weir_messages_total", 1, ",outcome=\"retry\""), 1.0),
        (partition_series("weir_messages_total", 1, ",outcome=\"failure\""), 8.0),
        (partition_series("weir_handler_failures_total", 1, ",kind=\"trap\""), 1.0),
        (partition_series("weir_handler_failures_total", 1, ",kind=\"deadline\""), 1.0),
        (partition_series("weir_handler_failures_total", 1, ",kind=\"memory\""), 3.0),
        (
            partition_series("weir_handler_failures_total", 1, ",kind=\"output_refused\""),
            3.0,
        ),
        (partition_series("weir_outputs_stored_total", 0, ""), 3.0),
        (partition_series("weir_outputs_stored_total", 1, ""), 3.0),
        (partition_series("weir_handler_call_duration_seconds_count", 0, ""), 5.0),
        (partition_series("weir_publish_to_ack_seconds_count", 1, ""), 3.0),
        (partition_series("weir_window_messages", 0, ""), 0.0),
        (partition_series("weir_consumer_lag_messages", 0, ""), 0.0),
        (
            "weir_dead_letters_moved_total{tenant=\"test\",handler=\"observed\",reason=\"terminated\"}"
                .to_owned(),
            2.0,
        ),
        (
            "weir_dead_letters_moved_total{tenant=\"test\",handler=\"observed\",reason=\"max_deliveries\"}"
                .to_owned(),
            2.0,
        ),
        (
            "weir_partitions{tenant=\"test\",handler=\"observed\",state=\"running\"}".to_owned(),
            2.0,
        ),
        ("weir_tenant_partitions{tenant=\"test\"}".to_owned(), 2.0),
        ("weir_member_active".to_owned(), 1.0),
        ("weir_nats_connected".to_owned(), 1.0),
    ];
    let scrape = wait_for("the metrics to count every message", || async {
        let (status, scrape) = get(&node, "/metrics").await?;
        assert_eq!(status, 200);
        expected
            .iter()
            .all(|(series, value)| sample(&scrape, series) == Some(*value))
            .then_some(scrape)
    })
    .await;
    // Nothing else was counted: no other outcome, no other failure.
    let counted = |prefix: &str| {
        scrape
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(counted("weir_messages_total{"), 17.0, "{scrape}");
    assert_eq!(counted("weir_handler_failures_total{"), 8.0, "{scrape}");
    let cpu = sample(&scrape, "weir_tenant_cpu_seconds_total{tenant=\"test\"}");
    assert!(cpu.is_some_and(|seconds| seconds > 0.0), "{scrape}");
    let (status, alive) = get(&node, "/healthz").await.expect("healthz answers");
    assert_eq!(
        (status, alive.as_str()),
        (200, r#"{"ok":true,"reasons":[]}"#)
    );

    // Without its server, the node is alive but not ready, and says why.
    env.server.stop();
    let reasons = wait_for("/readyz to answer 503", || async {
        let (status, body) = get(&node, "/readyz").await?;
        (status == 503).then_some(body)
    })
    .await;
    let reasons: serde_json::Value = serde_json::from_str(&reasons)?;
    assert_eq!(reasons["ok"], false);
    assert!(
        reasons["reasons"]
            .as_array()
            .is_some_and(|reasons| reasons.iter().any(|r| r == "not connected to NATS")),
        "{reasons}"
    );
    assert_eq!(
        get(&node, "/healthz").await.map(|(status, _)| status),
        Some(200)
    );
    drop(node);
    Ok(())
}

#[tokio::test]
async fn a_node_is_ready_only_once_it_has_acted_on_every_record_there_was() -> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let first = env.node().await?;
    let spec = env.deploy_on(&first, scripted("existing")).await?;
    first.shutdown().await?;

    let late = ready_node(&env, "late").await?;
    // Ready: so it has already run the record it found, and said so.
    let control = weir::control::ControlPlane::open(&env.js).await?;
    let id = weir::control::DeploymentId::new("test", "existing")?;
    let status = node_status(&control, "late", &id).await;
    assert!(
        status
            .as_ref()
            .is_some_and(|status| status.version == spec.version),
        "ready before running what it found: {status:?}"
    );
    late.shutdown().await
}
