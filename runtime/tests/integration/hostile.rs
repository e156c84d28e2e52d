//! Hostile guests: every attack the tenant quotas and the sandbox exist for, first against one
//! instance under a tenant budget, then all at once on a node that also serves a well-behaved
//! tenant, which must not notice.
//!
//! The attacker is the scripted guest: each attack is a command in a message's payload (see
//! tests/guests/scripted).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use weir::control::DeploymentId;
use weir::deploy::{self, DeployRequest};
use weir::host::{
    BudgetQuota, CallLimits, HandlerFailure, HandlerInstance, HandlerVersion, Host,
    InstanceContext, Message, Outcome, TenantBudget,
};
use weir::node::{self, NodeConfig};
use weir::outputs::OutputRules;
use weir::partition::{self, StreamRequest};
use weir::spec::{LimitsSpec, RetrySpec};
use weir::tenants::TenantsConfig;

use crate::support::{Env, INPUT, OUTPUT, get, guest, header, key_in, sample, scripted, wait_for};

/// The attacker's CPU time per message.
const CPU_TIME: Duration = Duration::from_secs(1);

fn budget(host: &Host, max_memory_total_bytes: u64) -> Arc<TenantBudget> {
    host.tenant_budget(
        "mallory",
        BudgetQuota {
            max_memory_total_bytes,
            cpu_time_per_message: CPU_TIME,
            log_lines_per_second: 20,
            cpu_weight: 1,
        },
    )
}

fn compile(host: &Host) -> HandlerVersion {
    host.compile(&guest("scripted")).expect("scripted compiles")
}

async fn start(
    version: &HandlerVersion,
    budget: &Arc<TenantBudget>,
    config: &[(&str, &str)],
) -> Result<HandlerInstance, HandlerFailure> {
    let context = InstanceContext {
        limits: CallLimits {
            max_memory_bytes: 16 << 20,
            handler_timeout: Duration::from_secs(30),
            max_outputs_per_call: 100,
            max_output_bytes_per_call: 1 << 20,
        },
        outputs: OutputRules {
            tenant: Some(vec!["hout.>".into()]),
            ..OutputRules::allowing(&["hout.>".into(), "out.>".into()])
        },
        config: [("output_prefix", "hout")]
            .iter()
            .chain(config)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        budget: budget.clone(),
        logs: None,
    };
    HandlerInstance::start(version, Arc::new(context)).await
}

fn message(payload: &str) -> Message {
    Message {
        subject: "hin.k1.ev".into(),
        payload: payload.as_bytes().to_vec(),
        headers: vec![],
        stream: "HIN".into(),
        stream_seq: 1,
        partition: 0,
        delivery_attempt: 1,
        published_at: 0,
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_tenants_cpu_time_per_message() {
    let host = Host::new().expect("host");
    let budget = budget(&host, 1 << 30);
    let mut instance = start(&compile(&host), &budget, &[]).await.expect("starts");
    let failure = instance
        .handle(&message("spin"))
        .await
        .expect_err("spin stops");
    assert_eq!(failure, HandlerFailure::CpuTime(CPU_TIME));
    assert_eq!(
        failure.to_string(),
        "CPU time limit of 1s per message exceeded"
    );
}

#[tokio::test]
async fn a_tenants_instances_share_its_memory_quota() {
    let host = Host::new().expect("host");
    let version = compile(&host);
    // Room for one instance grown to its own 16 MiB limit, and little more.
    let budget = budget(&host, 20 << 20);
    let mut greedy = start(&version, &budget, &[]).await.expect("starts");
    let first = greedy.handle(&message("hog")).await.expect_err("hog stops");
    assert!(
        matches!(first, HandlerFailure::MemoryLimit { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{first}"
    );
    // The failed instance still holds its memory: the next one runs into the tenant's quota.
    let mut second = start(&version, &budget, &[]).await.expect("starts");
    let failure = second.handle(&message("hog")).await.expect_err("hog stops");
    let HandlerFailure::TenantMemoryQuota { quota_bytes, .. } = failure else {
        panic!("expected the tenant's quota to stop the second hog, got {failure}");
    };
    assert_eq!(quota_bytes, 20 << 20);
    assert!(
        failure
            .to_string()
            .starts_with("tenant memory quota of 20971520 bytes on this node exceeded")
    );
    // Dropping the instances gives their memory back.
    drop((greedy, second));
    assert_eq!(budget.memory_in_use(), 0);
    start(&version, &budget, &[])
        .await
        .expect("a new instance fits again");
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack_into_a_trap() {
    let host = Host::new().expect("host");
    let mut instance = start(&compile(&host), &budget(&host, 1 << 30), &[])
        .await
        .expect("starts");
    let failure = instance
        .handle(&message("recurse"))
        .await
        .expect_err("traps");
    let HandlerFailure::Trap(detail) = failure else {
        panic!("expected a trap, got {failure}");
    };
    assert!(detail.contains("call stack exhausted"), "{detail}");
}

#[tokio::test]
async fn the_sandbox_has_no_files_environment_arguments_or_sockets() {
    let host = Host::new().expect("host");
    let mut instance = start(&compile(&host), &budget(&host, 1 << 30), &[])
        .await
        .expect("starts");
    let handled = instance
        .handle(&message("snoop"))
        .await
        .expect("snoop returns");
    assert!(matches!(handled.outcome, Outcome::Ack));
    assert_eq!(
        String::from_utf8_lossy(&handled.outputs[0].payload),
        "file: denied\nlisting: denied\nenv: denied\nargs: denied\nsocket: denied\nlistener: denied"
    );
}

#[tokio::test]
async fn a_log_flood_is_cut_to_the_tenants_rate_and_counted() {
    let host = Host::new().expect("host");
    // Time enough for 10,000 host calls in a debug build.
    let budget = host.tenant_budget(
        "mallory",
        BudgetQuota {
            max_memory_total_bytes: 1 << 30,
            cpu_time_per_message: Duration::from_secs(30),
            log_lines_per_second: 20,
            cpu_weight: 1,
        },
    );
    let mut instance = start(&compile(&host), &budget, &[]).await.expect("starts");
    let handled = instance
        .handle(&message("log-flood 5000"))
        .await
        .expect("the flood returns");
    assert!(matches!(handled.outcome, Outcome::Ack));
    // 5,000 log lines and 5,000 printed lines, of which stdout keeps what fits in 16 KiB; at 20
    // lines a second, all but about 20 (and what the call's duration earned) are dropped.
    let dropped = budget.log_lines_dropped();
    assert!(dropped >= 4_900, "only {dropped} lines dropped");
}

#[tokio::test]
async fn outputs_outside_the_tenants_subjects_are_refused_even_if_the_deployment_allows_them() {
    let host = Host::new().expect("host");
    let mut instance = start(&compile(&host), &budget(&host, 1 << 30), &[])
        .await
        .expect("starts");
    let failure = instance
        .handle(&message("publish-to out.victim"))
        .await
        .expect_err("refused");
    assert_eq!(
        failure.to_string(),
        r#"publish refused: subject "out.victim" is outside tenant mallory's allowed outputs ["hout.>"]"#
    );
}

#[tokio::test]
async fn a_trap_in_init_fails_the_start() {
    let host = Host::new().expect("host");
    let failure = start(
        &compile(&host),
        &budget(&host, 1 << 30),
        &[("trap_in_init", "yes")],
    )
    .await
    .expect_err("init traps");
    let HandlerFailure::Trap(detail) = failure else {
        panic!("expected a trap, got {failure}");
    };
    assert!(detail.contains("trap in init requested"), "{detail}");
}

/// Partitions of both tenants' input streams.
const PARTITIONS: u32 = 8;
/// Messages of the well-behaved tenant.
const CALM_MESSAGES: usize = 200;

/// How an endless loop ends: at its tenant's CPU time per message, or, if the spinning guests
/// could not compute that long first (they share the guest threads, below the node's other
/// work), at the deployment's deadline (10 s by default), which says how little CPU time it had.
const SPIN_ENDS: &[&str] = &[
    "CPU time limit of 1s per message exceeded",
    "deadline of 10s exceeded after",
];

/// Each attack, and what the dead letter's last error must say, one of (`None`: the message is
/// handled).
const ATTACKS: &[(&str, Option<&[&str]>)] = &[
    ("spin", Some(SPIN_ENDS)),
    ("recurse", Some(&["call stack exhausted"])),
    ("hog", Some(&["memory limit of 16777216 bytes exceeded"])),
    (
        "giant 2000000",
        Some(&["limit of 1048576 output bytes per call exceeded"]),
    ),
    (
        "emit 1000000",
        Some(&["limit of 100 outputs per call reached"]),
    ),
    (
        "publish-to out.calm",
        Some(&["outside tenant mallory's allowed outputs"]),
    ),
    ("snoop", None),
    ("log-flood 300", None),
];

const NODE_CONFIG: &str = r#"
    [defaults]
    input_streams = []

    [tenants.calm]
    input_streams = ["IN"]
    output_subjects = ["out.>"]

    [tenants.mallory]
    max_memory_per_instance = "16MiB"
    max_memory_total = "64MiB"
    # Far more than any attack but the endless loop needs, even on a loaded debug build.
    cpu_time_per_message = "1s"
    max_outputs_per_call = 100
    max_output_bytes_per_call = "1MiB"
    log_lines_per_second = 20
    input_streams = ["HIN"]
    output_subjects = ["hout.>"]
"#;

/// The hostile tenant's input stream, `HIN`, in `partitions` partitions.
async fn hostile_input(env: &Env, partitions: u32) -> anyhow::Result<()> {
    partition::create_stream(
        &env.js,
        &StreamRequest {
            name: "HIN".into(),
            subjects: "hin.*.>".into(),
            partitions,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    Ok(())
}

/// A node on `env` under [`NODE_CONFIG`].
async fn tenanted_node(env: &Env) -> anyhow::Result<node::NodeHandle> {
    let config = NodeConfig {
        tenants: TenantsConfig::parse(NODE_CONFIG)?,
        ..NodeConfig::default()
    };
    node::start(env.client.clone(), config).await
}

#[tokio::test]
async fn every_attack_ends_as_documented_while_a_neighbour_keeps_processing() -> anyhow::Result<()>
{
    let env = Env::with_streams(PARTITIONS).await?;
    hostile_input(&env, PARTITIONS).await?;
    env.js
        .create_stream(stream::Config {
            name: "HOUT".into(),
            subjects: vec!["hout.>".into()],
            ..Default::default()
        })
        .await?;
    let node = tenanted_node(&env).await?;

    let calm = DeployRequest {
        id: DeploymentId::new("calm", "echo")?,
        ..scripted("echo")
    };
    env.deploy_on(&node, calm).await?;
    let mallory = DeployRequest {
        id: DeploymentId::new("mallory", "attack")?,
        stream: "HIN".into(),
        // The deployment asks for more than the tenant's quotas give it.
        limits: LimitsSpec {
            max_memory_bytes: 1 << 30,
            ..LimitsSpec::default()
        },
        retry: RetrySpec {
            max_deliver: 2,
            backoff: vec![Duration::from_millis(100)],
            ..RetrySpec::default()
        },
        config: BTreeMap::from([("output_prefix".to_owned(), "hout".to_owned())]),
        outputs: vec!["hout.>".into(), "out.>".into()],
        from: None,
        deployed_by: None,
        reset_state: false,
        ..scripted("attack")
    };
    env.deploy_on(&node, mallory).await?;

    // An endless loop on every partition, then each attack on a key of its own, then the
    // neighbour's traffic.
    let mut expected_dead = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let key = key_in(partition, PARTITIONS, 0);
        let seq = env.publish(&format!("hin.{key}.spin"), "spin").await?;
        expected_dead.insert(seq, ("spin", SPIN_ENDS));
    }
    let mut handled_subjects = BTreeSet::new();
    for (n, (attack, error)) in ATTACKS.iter().enumerate() {
        let subject = format!("hin.attack{n}.ev");
        let seq = env.publish(&subject, attack).await?;
        match error {
            Some(error) => {
                expected_dead.insert(seq, (*attack, *error));
            }
            None => {
                handled_subjects.insert(format!("hout.{subject}"));
            }
        }
    }
    for n in 0..CALM_MESSAGES {
        env.publish(&format!("in.c{}.ev", n % 32), &format!("calm {n}"))
            .await?;
    }

    // The neighbour: every message handled on its first delivery.
    let outputs = env.wait_messages(OUTPUT, CALM_MESSAGES).await;
    assert_eq!(outputs.len(), CALM_MESSAGES, "nothing else reaches out.>");
    for output in &outputs {
        assert_eq!(
            header(output, "delivery-attempt"),
            Some("1"),
            "{} was delivered again",
            output.subject
        );
    }

    // The attacker: the two attacks that are allowed are handled, and every other one, like
    // each endless loop, is a dead letter whose last error names the limit.
    let handled = env.wait_messages("HOUT", handled_subjects.len()).await;
    let subjects: BTreeSet<String> = handled.iter().map(|m| m.subject.to_string()).collect();
    assert_eq!(subjects, handled_subjects);
    let snoop = handled
        .iter()
        .find(|m| m.payload.starts_with(b"file:"))
        .expect("the snoop report");
    assert!(
        String::from_utf8_lossy(&snoop.payload)
            .lines()
            .all(|line| line.ends_with(": denied")),
        "{:?}",
        snoop.payload
    );
    let dead = env.wait_dead_letters(expected_dead.len()).await;
    assert_eq!(dead.len(), expected_dead.len());
    for letter in &dead {
        assert_eq!(letter.tenant, "mallory", "{letter:?}");
        let Some((attack, errors)) = expected_dead.get(&letter.stream_seq) else {
            panic!(
                "message {} should not be a dead letter: {letter:?}",
                letter.stream_seq
            );
        };
        assert!(
            errors.iter().any(|error| letter.last_error.contains(error)),
            "{attack}: the last error does not name the limit: {}",
            letter.last_error
        );
    }
    node.shutdown().await
}

#[tokio::test]
async fn a_deployment_is_refused_where_its_tenant_may_not_read_the_stream() -> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let node = tenanted_node(&env).await?;
    let request = DeployRequest {
        id: DeploymentId::new("mallory", "sneaky")?,
        ..scripted("sneaky")
    };
    let deployed = deploy::deploy(&env.js, &Host::new()?, request).await?;
    let control = weir::control::ControlPlane::open(&env.js).await?;
    let key = DeploymentId::new("mallory", "sneaky")?.status_key(node.id());
    let error = wait_for("the node to report the refusal", || async {
        let value = control.status.get(&key).await.ok()??;
        let status: weir::spec::NodeStatus = serde_json::from_slice(&value).ok()?;
        (status.revision >= deployed.revision).then_some(status.error)?
    })
    .await;
    assert_eq!(
        error,
        format!(
            "tenant mallory may not read stream {INPUT} on this node (its input_streams are [\"HIN\"])"
        )
    );
    node.shutdown().await
}

#[tokio::test]
async fn a_configuration_that_traps_or_is_refused_in_init_is_refused_at_deploy()
-> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    for (key, expected) in [
        (
            "trap_in_init",
            "trap in init requested by the configuration",
        ),
        ("refuse", "refusing on purpose"),
    ] {
        let request = DeployRequest {
            config: BTreeMap::from([(key.to_owned(), "yes".to_owned())]),
            ..scripted("init")
        };
        let error = deploy::deploy(&env.js, &Host::new()?, request)
            .await
            .expect_err("refused");
        let error = format!("{error:#}");
        assert!(
            error.starts_with("the handler failed to start with this configuration")
                && error.contains(expected),
            "{key}: {error}"
        );
    }
    Ok(())
}

/// The fairness test's calm messages: enough that, were each to wait for the spinning guest to
/// reach its next epoch tick (10 ms), the spinner would pass its CPU time per message (a third
/// of 3,000 ticks) first.
const FAIR_CALM_MESSAGES: usize = 3_000;

/// See [`FAIR_CALM_MESSAGES`].
const FAIR_SPIN_CPU_TIME: &str = "10s";

#[tokio::test]
async fn a_calm_tenant_is_served_while_a_spinning_tenant_holds_every_guest_thread()
-> anyhow::Result<()> {
    // As many spinning partitions as the node has guest threads (every core but one), so that
    // each spinning call has a thread to itself whenever the calm tenant has nothing to run.
    let guest_threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1);
    let spinners = u32::try_from(guest_threads)?;
    let env = Env::with_streams(PARTITIONS).await?;
    hostile_input(&env, spinners).await?;
    let config = format!(
        r#"
        [tenants.calm]
        input_streams = ["{INPUT}"]
        output_subjects = ["out.>"]

        [tenants.spinner]
        input_streams = ["HIN"]
        cpu_time_per_message = "{FAIR_SPIN_CPU_TIME}"
        "#
    );
    let node = node::start(
        env.client.clone(),
        NodeConfig {
            tenants: TenantsConfig::parse(&config)?,
            http: Some(([127, 0, 0, 1], 0).into()),
            ..NodeConfig::default()
        },
    )
    .await?;
    let spinner = DeployRequest {
        id: DeploymentId::new("spinner", "spin")?,
        stream: "HIN".into(),
        retry: RetrySpec {
            max_deliver: 1,
            ..RetrySpec::default()
        },
        ..scripted("spin")
    };
    env.deploy_on(&node, spinner).await?;
    for partition in 0..spinners {
        let key = key_in(partition, spinners, 0);
        env.publish(&format!("hin.{key}.spin"), "spin").await?;
    }
    let spinner_cpu = "weir_tenant_cpu_seconds_total{tenant=\"spinner\"}";
    let scrape = || async { get(&node, "/metrics").await.map(|(_, body)| body) };
    wait_for("the spinning tenant to be spinning", || async {
        let spent = sample(&scrape().await?, spinner_cpu)?;
        (spent >= 0.2 * f64::from(spinners)).then_some(())
    })
    .await;

    let calm = DeployRequest {
        id: DeploymentId::new("calm", "echo")?,
        ..scripted("echo")
    };
    env.deploy_on(&node, calm).await?;
    let spent_before = sample(&scrape().await.unwrap_or_default(), spinner_cpu);
    for n in 0..FAIR_CALM_MESSAGES {
        env.publish(&format!("in.c{}.ev", n % 64), &format!("calm {n}"))
            .await?;
    }

    // Every calm message is handled, on its first delivery...
    let outputs = env.wait_messages(OUTPUT, FAIR_CALM_MESSAGES).await;
    assert_eq!(outputs.len(), FAIR_CALM_MESSAGES);
    for output in &outputs {
        assert_eq!(header(output, "delivery-attempt"), Some("1"));
    }
    // ...before any spinning call has had its CPU time per message: the spinner yields its
    // thread to each calm call at once, not at its next tick.
    let failed = node.counters().snapshot().failed;
    assert_eq!(
        failed, 0,
        "a spinning call reached its CPU limit of {FAIR_SPIN_CPU_TIME} before the calm tenant's \
         {FAIR_CALM_MESSAGES} messages were handled"
    );
    // And the spinner was slowed, not starved: it went on computing meanwhile.
    let spent_after = sample(&scrape().await.unwrap_or_default(), spinner_cpu);
    assert!(
        spent_after > spent_before,
        "the spinner's CPU time went from {spent_before:?} to {spent_after:?} s"
    );
    // The spinning calls would hold a draining node until their CPU limit: the test ends here.
    drop(node);
    Ok(())
}
