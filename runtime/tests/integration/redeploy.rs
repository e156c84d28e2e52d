//! Deploying a new version while messages flow: each partition switches at a message boundary,
//! nothing is lost, duplicated or reordered.

use std::collections::BTreeMap;

use weir::control::ControlPlane;
use weir::spec::{DeploymentSpec, NodeStatus};
use weir::traffic::{Payload, Traffic};

use crate::support::{Env, INPUT, OUTPUT, header, scripted, seqs_per_key, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_takes_over_at_a_message_boundary_with_nothing_lost_or_reordered()
-> anyhow::Result<()> {
    const KEYS: u64 = 40;
    let env = Env::with_streams(4).await?;
    let node = env.node().await?;
    let version = |tag: &str| {
        let mut request = scripted("swap");
        request.config.insert("tag".into(), tag.into());
        request
    };
    env.deploy_on(&node, version("v1")).await?;

    let batch = |first: u64| Traffic {
        subject: "in.{key}.ev".into(),
        payload: Payload::Template(format!("echo {{key}} {{n}} from-{first}")),
        count: 1_000,
        keys: KEYS,
        headers: vec![],
    };
    batch(0).publish(&env.js, |_| {}).await?;
    env.wait_messages(OUTPUT, 300).await;
    env.deploy_on(&node, version("v2")).await?;
    batch(1_000).publish(&env.js, |_| {}).await?;

    let outputs = env.wait_messages(OUTPUT, 2_000).await;
    assert_eq!(outputs.len(), 2_000, "messages were lost or duplicated");
    let mut per_key: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for output in &outputs {
        let text = std::str::from_utf8(&output.payload)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let tag = header(output, "tag").unwrap_or_default().to_owned();
        let n: u64 = words[2].parse()?;
        let n = if words[3] == "from-1000" {
            n + 1_000
        } else {
            n
        };
        per_key
            .entry(words[1].to_owned())
            .or_default()
            .push((n, tag));
    }
    for (key, handled) in &per_key {
        assert!(
            handled.windows(2).all(|w| w[0].0 < w[1].0),
            "outputs of {key} out of order"
        );
        let first_v2 = handled
            .iter()
            .position(|(_, tag)| tag == "v2")
            .unwrap_or(handled.len());
        assert!(
            handled[..first_v2].iter().all(|(_, tag)| tag == "v1"),
            "{key}: unknown tag"
        );
        assert!(
            handled[first_v2..].iter().all(|(_, tag)| tag == "v2"),
            "{key}: v1 handled a message after v2"
        );
        assert!(
            handled
                .iter()
                .filter(|(n, _)| *n > 1_000)
                .all(|(_, tag)| tag == "v2"),
            "{key}: published after the swap but handled by v1"
        );
    }
    assert!(per_key.values().flatten().any(|(_, tag)| tag == "v1"));
    node.shutdown().await
}

#[tokio::test]
async fn a_version_the_node_cannot_load_leaves_the_running_one_in_place() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = env.node().await?;
    let spec = env.deploy_on(&node, scripted("keep")).await?;

    // A valid spec whose component was never uploaded, as after a damaged or hand-written
    // record; and one naming a built-in handler, which only `weir bench` nodes run.
    let control = ControlPlane::open(&env.js).await?;
    let missing = "0".repeat(64);
    let broken = [
        (
            missing.clone(),
            format!("test/keep/{missing}"),
            format!("failed to fetch artifact test/keep/{missing}"),
        ),
        (
            "builtin:noop".to_owned(),
            "builtin:noop".to_owned(),
            "names a built-in handler, which only `weir bench` nodes run".to_owned(),
        ),
    ];
    for (version, artifact, expected) in broken {
        let broken = DeploymentSpec {
            artifact,
            version,
            ..spec.clone()
        };
        let revision = control
            .deployments
            .put("test.keep", serde_json::to_vec(&broken)?.into())
            .await?;
        let status: NodeStatus = wait_for("the node to report the broken version", || async {
            let value = control
                .status
                .get(format!("test.keep.{}", node.id()))
                .await
                .ok()??;
            let status: NodeStatus = serde_json::from_slice(&value).ok()?;
            (status.revision == revision).then_some(status)
        })
        .await;
        let error = status.error.unwrap_or_default();
        assert!(
            error.contains(&expected) && error.contains("still running version"),
            "{error}"
        );
        assert_eq!(status.partitions, [0, 1]);
    }

    env.publish("in.k1.ev", "echo still served").await?;
    let outputs = env.wait_messages(OUTPUT, 1).await;
    assert_eq!(&outputs[0].payload[..], b"echo still served");
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_with_another_window_stream_or_partition_count_moves_every_partition_to_it()
-> anyhow::Result<()> {
    const KEYS: u64 = 48;
    let env = Env::with_streams(4).await?;
    weir::partition::create_stream(
        &env.js,
        &weir::partition::StreamRequest {
            name: "MOVED".into(),
            subjects: "moved.*.>".into(),
            partitions: 6,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("mover")).await?;
    let batch = |subject: &str| Traffic {
        subject: format!("{subject}.{{key}}.ev"),
        payload: Payload::Template("echo {key} {seq}".into()),
        count: 1_200,
        keys: KEYS,
        headers: vec![],
    };

    // Another window, under traffic: the partitions move to their updated consumers at a
    // message boundary.
    batch("in").publish(&env.js, |_| {}).await?;
    env.wait_messages(OUTPUT, 300).await;
    let narrow = weir::deploy::DeployRequest {
        window: 8,
        ..scripted("mover")
    };
    env.deploy_on(&node, narrow).await?;
    let outputs = env.wait_messages(OUTPUT, 1_200).await;
    let expected: BTreeMap<String, Vec<u64>> = (0..KEYS)
        .map(|k| (format!("k{k}"), (1..=1_200 / KEYS).collect()))
        .collect();
    assert_eq!(outputs.len(), 1_200, "messages were lost or duplicated");
    assert_eq!(seqs_per_key(&outputs), expected);
    let input = env.js.get_stream(INPUT).await?;
    for partition in 0..4 {
        let name = format!("weir_test_mover_p{partition:03}");
        wait_for(&format!("{name} to take the new window"), || async {
            let consumer = input.consumer_info(&name).await.ok()?;
            (consumer.config.max_ack_pending == 8).then_some(())
        })
        .await;
    }

    // Another stream, with another partition count: its messages are handled, all of them.
    let moved = weir::deploy::DeployRequest {
        stream: "MOVED".into(),
        window: 32,
        ..scripted("mover")
    };
    let spec = env.deploy_on(&node, moved).await?;
    assert_eq!(spec.partitions, 6);
    batch("moved").publish(&env.js, |_| {}).await?;
    let outputs = env.wait_messages(OUTPUT, 2_400).await;
    assert_eq!(outputs.len(), 2_400, "messages were lost or duplicated");
    let on_moved: Vec<_> = outputs
        .iter()
        .filter(|m| m.subject.starts_with("out.moved."))
        .cloned()
        .collect();
    assert_eq!(seqs_per_key(&on_moved), expected);
    let stream = env.js.get_stream("MOVED").await?;
    for partition in 0..6 {
        let name = format!("weir_test_mover_p{partition:03}");
        let consumer = stream.consumer_info(&name).await?;
        assert_eq!(consumer.config.max_ack_pending, 32);
        wait_for(&format!("{name} to settle everything"), || async {
            let consumer = stream.consumer_info(&name).await.ok()?;
            (consumer.num_pending == 0 && consumer.num_ack_pending == 0).then_some(())
        })
        .await;
    }
    node.shutdown().await
}
