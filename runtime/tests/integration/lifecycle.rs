//! A handler's lifecycle through the `weir` binary, under traffic: pause and resume, versions
//! and rollback, undeploy, where a deployment starts on its stream, and placement only among
//! the nodes able to run a deployment. What happened is read back from the output stream, per
//! key.

use std::collections::BTreeMap;

use async_nats::jetstream::message::StreamMessage;
use futures::TryStreamExt as _;
use weir::control::{ControlPlane, DeploymentId};
use weir::node::{self, NodeConfig, NodeHandle};
use weir::status::PartitionState;
use weir::tenants::TenantsConfig;

use crate::cli::{text, weir};
use crate::support::{
    Env, INPUT, OUTPUT, header, node_status, partitions, read, scripted, seqs_per_key, wait_for,
};

const PARTITIONS: u32 = 4;
const KEYS: u64 = 16;

/// Runs `weir ARGS --nats-url URL` off the test's runtime, which runs the nodes.
pub async fn run(env: &Env, args: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    args.extend(["--nats-url".to_owned(), env.server.url()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        weir(&args)
    })
    .await
    .expect("weir ran")
}

/// Runs `weir ARGS --nats-url URL`, which must succeed; returns what it printed.
pub async fn ok(env: &Env, args: &[&str]) -> String {
    let output = run(env, args).await;
    assert!(
        output.status.success(),
        "weir {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Deploys the file `component` with `weir deploy` as acme's handler `name` on the input stream,
/// allowed to publish to `out.>`, with `options` besides; the binary must say it deployed it.
pub async fn deploy_file(env: &Env, component: &std::path::Path, name: &str, options: &[&str]) {
    let component = component.to_string_lossy();
    let args = [
        "deploy", &component, "--tenant", "acme", "--name", name, "--stream", INPUT, "--output",
        "out.>",
    ];
    let deployed = ok(env, &[&args[..], options].concat()).await;
    assert!(
        deployed.contains(&format!("deployed acme/{name} version")),
        "{deployed}"
    );
}

/// Runs `weir ARGS --nats-url URL`, which must fail saying `expected`.
async fn refused(env: &Env, args: &[&str], expected: &str) {
    let output = run(env, args).await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "weir {args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "weir {args:?} said {stderr:?}, not {expected:?}"
    );
}

/// Publishes `echo <batch> k<i> <seq>` for every key and every seq in `seqs`.
async fn publish(env: &Env, batch: &str, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        for key in 0..KEYS {
            env.publish(
                &format!("in.k{key}.ev"),
                &format!("echo {batch} k{key} {seq}"),
            )
            .await
            .expect("published");
        }
    }
}

/// Every key's sequence numbers 1..=`last`, as the outputs must hold them.
fn every_key_up_to(last: u64) -> BTreeMap<String, Vec<u64>> {
    (0..KEYS)
        .map(|key| (format!("k{key}"), (1..=last).collect()))
        .collect()
}

/// The partition consumers of `id` on `IN`: (undelivered, delivered and unsettled) summed.
async fn backlog(env: &Env, id: &DeploymentId) -> (u64, u64) {
    let stream = env.js.get_stream(INPUT).await.expect("stream");
    let mut backlog = (0, 0);
    for partition in 0..PARTITIONS {
        let info = stream
            .consumer_info(id.consumer_name(partition))
            .await
            .expect("consumer");
        backlog.0 += info.num_pending;
        backlog.1 += info.num_ack_pending as u64;
    }
    backlog
}

/// Waits until every message of `IN` is settled by `id`'s consumers.
async fn drained(env: &Env, id: &DeploymentId) {
    wait_for(&format!("{id} to settle every message"), || async {
        (backlog(env, id).await == (0, 0)).then_some(())
    })
    .await;
}

/// The outputs whose `tag` header is `tag` (`None`: untagged).
fn tagged<'a>(outputs: &'a [StreamMessage], tag: Option<&str>) -> Vec<&'a StreamMessage> {
    outputs
        .iter()
        .filter(|output| header(output, "tag") == tag)
        .collect()
}

async fn partition_states(env: &Env) -> Vec<(PartitionState, Vec<String>)> {
    partitions(env)
        .await
        .into_iter()
        .map(|p| (p.state, p.owners))
        .collect()
}

#[tokio::test]
async fn a_paused_handler_handles_nothing_until_resumed_then_everything_in_order()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("pausing")).await?;
    let id = DeploymentId::new("test", "pausing")?;
    let handler = ["--tenant", "test", "--name", "pausing"];

    // Paused while the first messages are being handled.
    publish(&env, "first", 1..=10).await;
    let paused = ok(&env, &[&["pause"][..], &handler].concat()).await;
    assert!(paused.contains("paused test/pausing"), "{paused}");
    let handled = read(&env.js, OUTPUT).await.len();

    // The messages published now reach the paused partitions, which hold them.
    publish(&env, "second", 11..=20).await;
    wait_for(
        "every message to be delivered to the paused partitions",
        || async { (backlog(&env, &id).await.0 == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        read(&env.js, OUTPUT).await.len(),
        handled,
        "a paused handler handled messages"
    );
    for (state, owners) in partition_states(&env).await {
        assert_eq!(state, PartitionState::Paused, "owned by {owners:?}");
    }
    assert!(ok(&env, &["ls"]).await.contains("paused"));
    let again = ok(&env, &[&["pause"][..], &handler].concat()).await;
    assert!(again.contains("paused already; nothing changed"), "{again}");

    let resumed = ok(&env, &[&["resume"][..], &handler].concat()).await;
    assert!(resumed.contains("resumed test/pausing"), "{resumed}");
    let outputs = env.wait_messages(OUTPUT, (20 * KEYS) as usize).await;
    assert_eq!(outputs.len(), (20 * KEYS) as usize, "lost or duplicated");
    assert_eq!(seqs_per_key(&outputs), every_key_up_to(20));

    refused(
        &env,
        &["pause", "--tenant", "test", "--name", "nobody"],
        "there is no deployment test/nobody",
    )
    .await;
    node.shutdown().await
}

#[tokio::test]
async fn a_rollback_switches_the_outputs_to_the_earlier_version_at_a_message_boundary()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    let tagged_request = |tag: &str| {
        let mut request = scripted("versions");
        request.config.insert("tag".into(), tag.into());
        request
    };
    env.deploy_on(&node, tagged_request("one")).await?;
    env.deploy_on(&node, tagged_request("two")).await?;
    let handler = ["--tenant", "test", "--name", "versions"];
    // Pauses are not versions.
    ok(&env, &[&["pause"][..], &handler].concat()).await;
    ok(&env, &[&["resume"][..], &handler].concat()).await;
    let versions = ok(&env, &[&["versions"][..], &handler].concat()).await;
    let rows: Vec<&str> = versions.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{versions}");
    assert!(
        rows[0].contains("tag=one") && !rows[0].starts_with('*'),
        "{versions}"
    );
    assert!(
        rows[1].contains("tag=two") && rows[1].starts_with('*'),
        "{versions}"
    );

    // Rolled back while messages are being handled.
    publish(&env, "before", 1..=20).await;
    let rolled = ok(&env, &[&["rollback"][..], &handler].concat()).await;
    assert!(rolled.contains("rolled test/versions back"), "{rolled}");
    let control = ControlPlane::open(&env.js).await?;
    let current = control
        .deployments
        .entry("test.versions")
        .await?
        .expect("a record")
        .revision;
    let id = DeploymentId::new("test", "versions")?;
    wait_for("the node to run the version rolled back to", || async {
        let status = node_status(&control, node.id(), &id).await?;
        (status.revision >= current).then_some(())
    })
    .await;
    publish(&env, "after", 21..=30).await;

    let outputs = env.wait_messages(OUTPUT, (30 * KEYS) as usize).await;
    assert_eq!(outputs.len(), (30 * KEYS) as usize, "lost or duplicated");
    assert_eq!(seqs_per_key(&outputs), every_key_up_to(30));
    // Per key, version two's outputs, then version one's: one switch, at a message boundary.
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for output in &outputs {
        let payload = String::from_utf8_lossy(&output.payload).into_owned();
        let key = payload.split_whitespace().nth(2).unwrap_or("").to_owned();
        let tag = header(output, "tag").unwrap_or("").to_owned();
        per_key.entry(key).or_default().push(tag);
    }
    for (key, tags) in &per_key {
        let switch = tags.iter().position(|t| t == "one").unwrap_or(tags.len());
        assert!(tags[..switch].iter().all(|t| t == "two"), "{key}: {tags:?}");
        assert!(tags[switch..].iter().all(|t| t == "one"), "{key}: {tags:?}");
        assert!(
            switch <= 20,
            "{key}: a message published after the switch ran version two"
        );
    }

    let versions = ok(&env, &[&["versions"][..], &handler].concat()).await;
    let current_row = versions.lines().find(|l| l.starts_with('*')).unwrap_or("");
    assert!(current_row.contains("tag=one"), "{versions}");
    refused(
        &env,
        &[&["rollback"][..], &handler, &["--to", "999"]].concat(),
        "has no version \"999\"",
    )
    .await;
    node.shutdown().await
}

#[tokio::test]
async fn an_undeployed_handler_is_gone_everywhere_and_its_dead_letters_are_kept()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("leaving")).await?;
    env.publish("in.k0.ev", "reject on purpose").await?;
    env.wait_dead_letters(1).await;

    // Undeployed while messages are being handled.
    publish(&env, "first", 1..=10).await;
    let undeployed = ok(&env, &["undeploy", "--tenant", "test", "--name", "leaving"]).await;
    assert!(
        undeployed.contains("undeployed test/leaving"),
        "{undeployed}"
    );
    assert!(
        undeployed.contains("4 partition consumer(s) deleted"),
        "{undeployed}"
    );
    assert!(undeployed.contains("1 dead letter(s) kept"), "{undeployed}");
    let handled = read(&env.js, OUTPUT).await.len();

    assert!(!ok(&env, &["ls"]).await.contains("leaving"));
    let stream = env.js.get_stream(INPUT).await?;
    let consumers: Vec<String> = stream.consumer_names().try_collect().await?;
    assert!(consumers.is_empty(), "left behind: {consumers:?}");
    let artifacts = env.js.get_object_store("weir_artifacts_test").await?;
    let stored: Vec<_> = artifacts.list().await?.try_collect().await?;
    assert!(stored.is_empty(), "components left: {stored:?}");
    refused(
        &env,
        &["versions", "--tenant", "test", "--name", "leaving"],
        "there is no deployment test/leaving",
    )
    .await;
    assert_eq!(env.wait_dead_letters(1).await.len(), 1);

    // Another handler on the same stream handles every message; the undeployed one none.
    let mut after = scripted("after");
    after.config.insert("tag".into(), "after".into());
    env.deploy_on(&node, after).await?;
    drained(&env, &DeploymentId::new("test", "after")?).await;
    let outputs = read(&env.js, OUTPUT).await;
    assert_eq!(tagged(&outputs, Some("after")).len(), (10 * KEYS) as usize);
    assert_eq!(
        tagged(&outputs, None).len(),
        handled,
        "the undeployed handler went on"
    );
    refused(
        &env,
        &["undeploy", "--tenant", "test", "--name", "leaving"],
        "there is no deployment test/leaving",
    )
    .await;
    node.shutdown().await
}

#[tokio::test]
async fn a_deployment_from_new_skips_what_was_stored_and_a_redeploy_keeps_its_place()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    publish(&env, "old", 1..=4).await;
    let dir = tempfile::tempdir()?;
    let component = dir.path().join("scripted.wasm");
    std::fs::write(&component, crate::support::guest("scripted"))?;
    let component = component.to_string_lossy().into_owned();
    let deploy = async |from: &str| {
        let handler = ["--tenant", "test", "--name", "fresh", "--stream", INPUT];
        let args = [
            &["deploy", &component][..],
            &handler,
            &["--output", "out.>", "--from", from],
        ];
        ok(&env, &args.concat()).await
    };
    let deployed = deploy("new").await;
    let next = 4 * KEYS + 1;
    assert!(
        deployed.contains(&format!("start at stream sequence {next}")),
        "{deployed}"
    );
    let id = DeploymentId::new("test", "fresh")?;
    let control = ControlPlane::open(&env.js).await?;
    wait_for("the node to run test/fresh", || async {
        let status = node_status(&control, node.id(), &id).await?;
        (status.partitions.len() == PARTITIONS as usize).then_some(())
    })
    .await;
    publish(&env, "new", 5..=8).await;
    drained(&env, &id).await;
    let outputs = read(&env.js, OUTPUT).await;
    let expected: BTreeMap<String, Vec<u64>> = (0..KEYS)
        .map(|key| (format!("k{key}"), (5..=8).collect()))
        .collect();
    assert_eq!(
        seqs_per_key(&outputs),
        expected,
        "only what came after the deploy"
    );

    // A redeploy, even one that says `--from all`, keeps each partition's place.
    deploy("all").await;
    publish(&env, "more", 9..=12).await;
    env.wait_messages(OUTPUT, (8 * KEYS) as usize).await;
    drained(&env, &id).await;
    let outputs = read(&env.js, OUTPUT).await;
    let expected: BTreeMap<String, Vec<u64>> = (0..KEYS)
        .map(|key| (format!("k{key}"), (5..=12).collect()))
        .collect();
    assert_eq!(seqs_per_key(&outputs), expected);

    for (from, expected) in [
        ("0", "stream sequences start at 1"),
        ("yesterday", "expected all, new, a stream sequence"),
    ] {
        refused(
            &env,
            &[
                "deploy", &component, "--tenant", "test", "--name", "x", "--stream", INPUT,
                "--from", from,
            ],
            expected,
        )
        .await;
    }
    node.shutdown().await
}

async fn node_with(env: &Env, id: &str, tenants: &str) -> anyhow::Result<NodeHandle> {
    let config = NodeConfig {
        node_id: id.to_owned(),
        tenants: TenantsConfig::parse(tenants)?,
        ..NodeConfig::default()
    };
    node::start(env.client.clone(), config).await
}

#[tokio::test]
async fn a_node_that_may_not_read_the_stream_gets_none_of_its_partitions() -> anyhow::Result<()> {
    const MANY: u32 = 8;
    let env = Env::with_streams(MANY).await?;
    let barred = node_with(
        &env,
        "barred",
        "[tenants.test]\ninput_streams = [\"ELSEWHERE\"]",
    )
    .await?;
    let able = node_with(&env, "able", "").await?;
    env.deploy_on(&able, scripted("placed")).await?;
    publish(&env, "all", 1..=5).await;

    let outputs = env.wait_messages(OUTPUT, (5 * KEYS) as usize).await;
    assert_eq!(seqs_per_key(&outputs), every_key_up_to(5));
    let states = wait_for("every partition to run on the able node", || async {
        let states = partition_states(&env).await;
        states
            .iter()
            .all(|(state, owners)| *state == PartitionState::Running && owners == &["able"])
            .then_some(states)
    })
    .await;
    assert_eq!(states.len(), MANY as usize);
    let status = ok(&env, &["status"]).await;
    assert!(
        status.contains("error on barred: tenant test may not read stream IN"),
        "{status}"
    );
    barred.shutdown().await?;
    able.shutdown().await
}

#[tokio::test]
async fn a_handlers_log_lines_reach_weir_logs_from_every_partition_and_live() -> anyhow::Result<()>
{
    use std::io::BufRead as _;
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("chatty")).await?;
    let handler = ["--tenant", "test", "--name", "chatty"];

    // Following partition 1 only, from before anything was written.
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([&["logs", "-f", "--partition", "1"][..], &handler].concat())
        .args(["--nats-url", &env.server.url()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = follower.stdout.take().expect("piped");
    let (lines, followed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    let keys = [
        crate::support::key_in(0, PARTITIONS, 0),
        crate::support::key_in(1, PARTITIONS, 0),
    ];
    for key in &keys {
        env.publish(&format!("in.{key}.ev"), &format!("log-flood 2 {key} 1"))
            .await?;
    }
    env.wait_messages(OUTPUT, 2).await;
    let mut seen = Vec::new();
    let seen = wait_for("the follower to print partition 1's four lines", || {
        seen.extend(followed.try_iter());
        let done = seen.len() >= 4;
        let lines = seen.clone();
        async move { done.then_some(lines) }
    })
    .await;
    let _ = follower.kill();
    let _ = follower.wait();
    for line in &seen {
        assert!(line.contains(" p1 "), "another partition's line: {line}");
    }
    for expected in [
        "flood line 0",
        "flood line 1",
        "flood print 0",
        "flood print 1",
    ] {
        assert!(
            seen.iter().any(|l| l.ends_with(expected)),
            "{expected} not in {seen:?}"
        );
    }

    // Without --follow: what is stored, from both partitions, then the command ends.
    let stored = ok(&env, &[&["logs"][..], &handler].concat()).await;
    assert_eq!(stored.lines().count(), 8, "{stored}");
    assert_eq!(
        stored.lines().filter(|l| l.contains(" p0 ")).count(),
        4,
        "{stored}"
    );
    refused(
        &env,
        &["logs", "--tenant", "test", "--name", "Nope"],
        "invalid handler name",
    )
    .await;
    node.shutdown().await
}

#[tokio::test]
async fn reading_commands_create_nothing_in_nats() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let handler = ["--tenant", "test", "--name", "nobody"];
    assert!(ok(&env, &["ls"]).await.contains("no deployments"));
    assert!(ok(&env, &["status"]).await.contains("no live nodes"));
    assert!(ok(&env, &["dlq", "ls"]).await.contains("no dead letters"));
    refused(&env, &["dlq", "show", "1"], "there are no dead letters").await;
    refused(
        &env,
        &[&["versions"][..], &handler].concat(),
        "there is no deployment test/nobody",
    )
    .await;
    refused(
        &env,
        &[&["logs"][..], &handler].concat(),
        "no node has run a handler here yet",
    )
    .await;
    let streams: Vec<String> = env.js.stream_names().try_collect().await?;
    assert!(streams.is_empty(), "created {streams:?}");
    Ok(())
}

#[tokio::test]
async fn a_worker_that_fails_is_restarted_says_so_and_loses_nothing() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let env = Env::with_streams(PARTITIONS).await?;
    // Partition 1's worker panics the first two times it starts.
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    let fault = weir::node::WorkerFault(Arc::new(move |_, partition| {
        partition == 1 && counted.fetch_add(1, Ordering::SeqCst) < 2
    }));
    let config = NodeConfig {
        worker_fault: Some(fault),
        ..NodeConfig::default()
    };
    let node = node::start(env.client.clone(), config).await?;
    env.deploy_on(&node, scripted("phoenix")).await?;
    publish(&env, "all", 1..=10).await;

    let outputs = env.wait_messages(OUTPUT, (10 * KEYS) as usize).await;
    assert_eq!(outputs.len(), (10 * KEYS) as usize, "lost or duplicated");
    assert_eq!(seqs_per_key(&outputs), every_key_up_to(10));
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "two failed starts, then one that ran"
    );
    // Reported until the restarted worker has run for a minute.
    let status = ok(&env, &["status"]).await;
    let line = status
        .lines()
        .find(|line| line.trim_start().starts_with("1 "))
        .unwrap_or_default();
    assert!(
        line.contains("failing: the worker panicked: a fault injected"),
        "{status}"
    );
    assert!(line.contains("starting it again in 2s"), "{status}");
    node.shutdown().await
}

#[tokio::test]
async fn a_partition_whose_consumer_cannot_be_read_says_so() -> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    env.deploy_on(&node, scripted("orphan")).await?;
    env.js.delete_stream(INPUT).await?;
    // `weir status` cannot read the stream either; the node's report says what each worker does.
    let control = ControlPlane::open(&env.js).await?;
    let id = DeploymentId::new("test", "orphan")?;
    let waiting = wait_for(
        "every partition to say it cannot read its consumer",
        || async {
            let status = node_status(&control, node.id(), &id).await?;
            (status.waiting.len() == PARTITIONS as usize).then_some(status.waiting)
        },
    )
    .await;
    for (partition, why) in waiting {
        assert!(
            why.starts_with("cannot read its consumer"),
            "{partition}: {why}"
        );
    }
    let status = ok(&env, &["status"]).await;
    assert!(status.contains("cannot read stream IN"), "{status}");
    node.shutdown().await
}
