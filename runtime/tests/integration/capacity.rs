//! A node short of capacity for a tenant (its quota of partitions or of memory is all in use)
//! makes the tenant's messages wait, and says so: it spends none of their deliveries and sends
//! none of them to the dead-letter stream.

use std::time::Duration;

use weir::node::{self, NodeConfig, NodeHandle};
use weir::spec::LimitsSpec;
use weir::status::PartitionStatus;
use weir::tenants::TenantsConfig;

use crate::support::{
    Env, OUTPUT, header, key_in, node_status, partitions, scripted, scripted_giving_up,
    seqs_per_key, wait_for,
};

const PARTITIONS: u32 = 2;
const PER_PARTITION: usize = 6;

async fn node_with(env: &Env, id: &str, tenants: &str) -> anyhow::Result<NodeHandle> {
    let config = NodeConfig {
        node_id: id.to_owned(),
        tenants: TenantsConfig::parse(tenants)?,
        ..NodeConfig::default()
    };
    node::start(env.client.clone(), config).await
}

/// Publishes `command <key> <i>` to a key of each partition, alternately; returns the keys.
async fn publish_to_each_partition(env: &Env, command: &str) -> anyhow::Result<Vec<String>> {
    let keys: Vec<String> = (0..PARTITIONS).map(|p| key_in(p, PARTITIONS, 0)).collect();
    for i in 0..PER_PARTITION {
        for key in &keys {
            env.publish(&format!("in.{key}.ev"), &format!("{command} {key} {i}"))
                .await?;
        }
    }
    Ok(keys)
}

/// Every key's outputs are exactly its inputs, in order, each from the message's first
/// delivery attempt, and the dead-letter stream is empty.
async fn assert_every_message_handled_on_its_first_attempt(env: &Env, keys: &[String]) {
    let outputs = env.wait_messages(OUTPUT, keys.len() * PER_PARTITION).await;
    let expected: Vec<u64> = (0..PER_PARTITION as u64).collect();
    let per_key = seqs_per_key(&outputs);
    for key in keys {
        assert_eq!(per_key.get(key), Some(&expected), "outputs of key {key}");
    }
    for output in &outputs {
        assert_eq!(
            header(output, "delivery-attempt"),
            Some("1"),
            "waiting spends no attempt"
        );
    }
    let dead = weir::dlq::counts(&env.js, None)
        .await
        .expect("DLQ readable");
    assert!(dead.values().all(|n| *n == 0), "dead letters: {dead:?}");
}

#[tokio::test]
async fn memory_held_by_a_partitions_idle_instance_goes_to_the_partition_that_waits_for_it()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    // Room for one instance grown by 16 MiB beside one that is not, never for two grown ones.
    let node = node_with(&env, "node", "[tenants.test]\nmax_memory_total = \"24MiB\"").await?;
    // A handler failure would dead-letter a message on its second attempt.
    let mut request = scripted_giving_up("grow", 2, Duration::from_millis(100));
    request.limits = LimitsSpec {
        max_memory_bytes: 64 << 20,
        ..LimitsSpec::default()
    };
    env.deploy_on(&node, request).await?;

    // Each partition's instance keeps what it grew, so whichever grows first holds the memory
    // the other needs, until it is asked to give its idle instance back.
    let keys = publish_to_each_partition(&env, "grow 16").await?;
    assert_every_message_handled_on_its_first_attempt(&env, &keys).await;
    node.shutdown().await
}

#[tokio::test]
async fn a_partition_over_the_tenants_quota_waits_says_so_and_runs_on_another_node()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let small = node_with(&env, "small", "[tenants.test]\nmax_instances = 1").await?;
    env.deploy_on(
        &small,
        scripted_giving_up("quota", 2, Duration::from_millis(100)),
    )
    .await?;
    let keys = publish_to_each_partition(&env, "echo").await?;

    let waiting = wait_for("one partition to wait for the tenant's quota", || async {
        let partitions = partitions(&env).await;
        let waiting: Vec<&PartitionStatus> =
            partitions.iter().filter(|p| p.waiting.is_some()).collect();
        match waiting.as_slice() {
            [one] if one.lag == PER_PARTITION as u64 => Some((one.partition, one.waiting.clone())),
            _ => None,
        }
    })
    .await;
    let (partition, reason) = waiting;
    assert_eq!(
        reason.as_deref(),
        Some("tenant test already runs its quota of 1 partition(s) on this node"),
        "partition {partition}"
    );
    // The other partition is handled meanwhile.
    env.wait_messages(OUTPUT, PER_PARTITION).await;

    // A node with room takes a partition; the waiting one runs, on one node or the other.
    let roomy = node_with(&env, "roomy", "").await?;
    assert_every_message_handled_on_its_first_attempt(&env, &keys).await;
    wait_for("no partition to wait any more", || async {
        partitions(&env)
            .await
            .iter()
            .all(|p| p.waiting.is_none() && p.owners.len() == 1)
            .then_some(())
    })
    .await;
    roomy.shutdown().await?;
    small.shutdown().await
}

#[tokio::test]
async fn placement_gives_a_node_no_more_of_a_tenant_than_its_quota_over_all_its_deployments()
-> anyhow::Result<()> {
    const PARTITIONS: u32 = 4;
    let env = Env::with_streams(PARTITIONS).await?;
    let small = node_with(&env, "small", "[tenants.test]\nmax_instances = 2").await?;
    let roomy = node_with(&env, "roomy", "").await?;
    // Two deployments of one tenant on the same stream, 8 partitions in all: the small node
    // runs 2 of them, the roomy node the other 6; none waits.
    let handlers = ["first", "second"];
    for handler in handlers {
        let mut request = scripted(handler);
        request.config = [("output_prefix".to_owned(), format!("out.{handler}"))].into();
        env.deploy_on(&roomy, request).await?;
    }
    let keys: Vec<String> = (0..PARTITIONS).map(|p| key_in(p, PARTITIONS, 0)).collect();
    for i in 0..PER_PARTITION {
        for key in &keys {
            env.publish(&format!("in.{key}.ev"), &format!("echo {key} {i}"))
                .await?;
        }
    }

    // Every message reaches each deployment's outputs, in order per key.
    let outputs = env
        .wait_messages(OUTPUT, 2 * keys.len() * PER_PARTITION)
        .await;
    let expected: Vec<u64> = (0..PER_PARTITION as u64).collect();
    for handler in handlers {
        let prefix = format!("out.{handler}.");
        let theirs: Vec<_> = outputs
            .iter()
            .filter(|output| output.subject.starts_with(&prefix))
            .cloned()
            .collect();
        let per_key = seqs_per_key(&theirs);
        for key in &keys {
            assert_eq!(per_key.get(key), Some(&expected), "{handler}: key {key}");
        }
    }
    let control = weir::control::ControlPlane::open(&env.js).await?;
    let mut held = 0;
    for handler in handlers {
        let id = weir::control::DeploymentId::new("test", handler)?;
        let status = node_status(&control, "small", &id)
            .await
            .unwrap_or_default();
        assert!(status.waiting.is_empty(), "{handler} waits: {status:?}");
        held += status.partitions.len();
    }
    assert_eq!(
        held, 2,
        "the small node runs its quota of the tenant's partitions"
    );
    roomy.shutdown().await?;
    small.shutdown().await
}
