//! No tenant reaches weir's control plane, the JetStream or system API, or another tenant:
//! not through `weir deploy`, not through a handler's outputs or their headers, and not through
//! a record written straight into `weir_deployments`, which a tenant's own user may do.
//!
//! What a handler tried is judged by where it aimed (the record, stream or inbox is untouched)
//! and by its dead letter, whose last error names the refusal.

use std::collections::BTreeMap;

use async_nats::jetstream::stream;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::json;
use weir::control::{ControlPlane, DeploymentId};
use weir::deploy::DeployRequest;
use weir::node::{self, NodeConfig};
use weir::partition::{self, StreamRequest};
use weir::spec::{DeploymentSpec, NodeStatus};
use weir::tenants::TenantsConfig;

use crate::cli::{text, weir};
use crate::support::{Env, INPUT, OUTPUT, guest_path, header, read, scripted, wait_for};

/// Writes `value` as the record of `key`, as a tenant's user may, and returns its revision.
async fn put_record(
    control: &ControlPlane,
    key: &str,
    value: impl Into<bytes::Bytes>,
) -> anyhow::Result<u64> {
    Ok(control.deployments.put(key, value.into()).await?)
}

/// What `node` reports about `id` once it has seen `revision`.
async fn status_after(
    control: &ControlPlane,
    id: &DeploymentId,
    node: &str,
    revision: u64,
) -> NodeStatus {
    let key = id.status_key(node);
    wait_for(
        &format!("node {node} to report revision {revision} of {id}"),
        || async {
            let value = control.status.get(&key).await.ok()??;
            let status: NodeStatus = serde_json::from_slice(&value).ok()?;
            (status.revision >= revision).then_some(status)
        },
    )
    .await
}

#[tokio::test]
async fn deploy_refuses_outputs_in_reserved_namespaces_and_narrows_wider_patterns()
-> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let url = env.server.url();
    let component = guest_path("scripted");
    let deploy = |output: &str| {
        weir(&[
            "deploy",
            &component.to_string_lossy(),
            "--tenant",
            "mallory",
            "--name",
            "relay",
            "--stream",
            INPUT,
            "--output",
            output,
            "--nats-url",
            &url,
        ])
    };
    let system = "is refused: subjects starting with `$` belong to the NATS server";
    let replies = "is refused: `_INBOX` subjects carry replies to requests";
    let weirs = "is refused: `weir.` subjects are weir's own";
    for (pattern, why) in [
        ("$KV.weir_deployments.>", system),
        ("$KV.>", system),
        ("$O.>", system),
        ("$JS.API.>", system),
        ("$JS.EVENT.ADVISORY.>", system),
        ("$SYS.>", system),
        ("_INBOX.>", replies),
        ("_INBOX_acme.>", replies),
        ("weir.>", weirs),
        ("weir.dlq.>", weirs),
    ] {
        let output = deploy(pattern);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "--output {pattern} was accepted");
        assert!(
            stderr.contains(&format!("--output {pattern:?} {why}")),
            "--output {pattern}: {stderr}"
        );
    }
    assert!(
        env.js.get_key_value("weir_deployments").await.is_err(),
        "a refused deploy created weir_deployments"
    );

    // `>` covers reserved subjects and others: accepted, narrowed, and said so.
    let output = deploy(">");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("note: --output \">\" also matches reserved subjects"),
        "{stdout}"
    );
    Ok(())
}

/// The attacks of [`a_handler_reaches_no_reserved_subject_and_sets_none_of_weirs_headers`]:
/// each message's payload (a scripted-guest command) and what its dead letter must say.
const REFUSED: &[(&str, &str)] = &[
    (
        "publish-to $KV.weir_deployments.globex.payments",
        "subject \"$KV.weir_deployments.globex.payments\" is reserved: subjects starting with `$`",
    ),
    (
        "publish-to $KV.weir_failures.globex.payments.PAY.1",
        "is reserved: subjects starting with `$`",
    ),
    (
        "publish-to $O.weir_artifacts_globex.M.abc",
        "is reserved: subjects starting with `$`",
    ),
    (
        "publish-to $JS.API.STREAM.DELETE.OUT",
        "subject \"$JS.API.STREAM.DELETE.OUT\" is reserved",
    ),
    (
        "publish-to $JS.API.STREAM.PURGE.OUT",
        "is reserved: subjects starting with `$`",
    ),
    (
        "publish-to $SYS.REQ.SERVER.PING",
        "is reserved: subjects starting with `$`",
    ),
    (
        "publish-to _INBOX.attack.reply",
        "is reserved: `_INBOX` subjects carry replies to requests",
    ),
    (
        "publish-to globex.replies.forged",
        "is reserved: `globex.replies` is the reply prefix of a connection the node uses",
    ),
    (
        "publish-to weir.dlq.globex.payments.PAY.1",
        "is reserved: `weir.` subjects are weir's own",
    ),
    (
        "publish-to weir.logs.globex.payments.0",
        "is reserved: `weir.` subjects are weir's own",
    ),
    (
        "publish-header out.h.rollup Nats-Rollup all",
        "header \"Nats-Rollup\" is refused: Nats-* headers",
    ),
    (
        "publish-header out.h.ttl Nats-TTL 1s",
        "header \"Nats-TTL\" is refused",
    ),
    (
        "publish-header out.h.expected Nats-Expected-Last-Sequence 0",
        "header \"Nats-Expected-Last-Sequence\" is refused",
    ),
    (
        "publish-header out.h.msgid nats-msg-id forged",
        "header \"nats-msg-id\" is refused",
    ),
    (
        "publish-header out.h.schedule Nats-Schedule @every%201s",
        "header \"Nats-Schedule\" is refused",
    ),
    (
        "publish-header out.h.batch Nats-Batch-Id b1",
        "header \"Nats-Batch-Id\" is refused",
    ),
    (
        "publish-header out.h.kv KV-Operation PURGE",
        "header \"KV-Operation\" is refused: it deletes or purges key-value entries",
    ),
    (
        "publish-header out.h.name bad%20name x",
        "header name \"bad name\" is not a NATS header name",
    ),
    (
        "publish-header out.h.crlf X-Note a%0D%0ANats-Rollup:%20all",
        "the value of header \"X-Note\" contains a control character",
    ),
];

#[tokio::test]
async fn a_handler_reaches_no_reserved_subject_and_sets_none_of_weirs_headers() -> anyhow::Result<()>
{
    let env = Env::with_streams(2).await?;
    let control = ControlPlane::open(&env.js).await?;
    // The victim's connection has replies of its own, which look like any subject.
    let tenants = TenantsConfig::parse(
        r#"[tenants.globex]
           nats = { inbox_prefix = "globex.replies" }"#,
    )?;
    let config = NodeConfig {
        tenants,
        nats_urls: Some(env.server.url()),
        ..NodeConfig::default()
    };
    let node = node::start(env.client.clone(), config).await?;
    // The victim: another tenant's deployment, on a stream of its own.
    partition::create_stream(
        &env.js,
        &StreamRequest {
            name: "PAY".into(),
            subjects: "pay.*.>".into(),
            partitions: 2,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    let victim = DeployRequest {
        id: DeploymentId::new("globex", "payments")?,
        stream: "PAY".into(),
        ..scripted("payments")
    };
    env.deploy_on(&node, victim).await?;
    let victim_revision = control
        .deployments
        .entry("globex.payments")
        .await?
        .expect("the victim's record")
        .revision;
    // The attacker deploys like anybody, then writes its own record: any output at all, and
    // every message given up after one delivery.
    let attacker = DeploymentId::new("mallory", "relay")?;
    let spec = env
        .deploy_on(
            &node,
            DeployRequest {
                id: attacker.clone(),
                ..scripted("relay")
            },
        )
        .await?;
    let mut record = serde_json::to_value(&spec)?;
    record["outputs"] = json!([">"]);
    record["retry"]["max_deliver"] = json!(1);
    let revision = put_record(&control, &attacker.key(), serde_json::to_vec(&record)?).await?;
    let status = status_after(&control, &attacker, node.id(), revision).await;
    assert_eq!(status.error, None, "the node refused a valid record");

    let mut inbox = env.client.subscribe("_INBOX.attack.>").await?;
    let mut logs = env.client.subscribe("weir.logs.>").await?;
    env.client.flush().await?;
    let mut expected = BTreeMap::new();
    for (n, (command, error)) in REFUSED.iter().enumerate() {
        let seq = env.publish(&format!("in.a{n}.ev"), command).await?;
        expected.insert(seq, *error);
    }
    let long = format!("publish-to out.{}", "x".repeat(2000));
    let seq = env.publish("in.long.ev", &long).await?;
    expected.insert(seq, "a subject can have at most 1024 bytes");
    // An allowed header on an allowed subject goes through, with weir's message id.
    env.publish("in.fine.ev", "publish-header out.fine X-Trace t-1")
        .await?;

    let letters = env.wait_dead_letters(expected.len()).await;
    assert_eq!(letters.len(), expected.len());
    for letter in &letters {
        let error = expected
            .get(&letter.stream_seq)
            .unwrap_or_else(|| panic!("{} is not an attack: {letter:?}", letter.stream_seq));
        assert!(
            letter.last_error.starts_with("publish refused: ") && letter.last_error.contains(error),
            "message {} died of {:?}, which does not say {error:?}",
            letter.stream_seq,
            letter.last_error
        );
    }

    // Nothing reached where the attacks aimed.
    let outputs = env.wait_messages(OUTPUT, 1).await;
    assert_eq!(outputs.len(), 1, "{:?}", outputs.iter().map(|m| &m.subject));
    assert_eq!(outputs[0].subject.as_str(), "out.fine");
    assert_eq!(header(&outputs[0], "X-Trace"), Some("t-1"));
    assert_eq!(
        header(&outputs[0], "Nats-Msg-Id"),
        Some(format!("weir:mallory:relay:{INPUT}:{}:0", seq + 1).as_str())
    );
    let entry = control
        .deployments
        .entry("globex.payments")
        .await?
        .expect("the victim's record");
    assert_eq!(
        entry.revision, victim_revision,
        "the victim's record was rewritten"
    );
    assert!(
        control
            .failures
            .get("globex.payments.PAY.1")
            .await?
            .is_none(),
        "a failure record was forged"
    );
    let dlq = env.js.get_stream("WEIR_DLQ").await?;
    let forged = dlq
        .info_with_subjects("weir.dlq.globex.>")
        .await?
        .next()
        .await
        .transpose()?;
    assert!(forged.is_none(), "a dead letter was forged: {forged:?}");
    env.js
        .get_stream(OUTPUT)
        .await
        .expect("the output stream was deleted");
    env.client.flush().await?;
    assert!(inbox.next().now_or_never().is_none(), "a reply was forged");
    assert!(
        logs.next().now_or_never().is_none(),
        "a log line was forged"
    );
    node.shutdown().await
}

/// One way a hand-written record can be wrong: the change to a valid record, and what every
/// node must say about it.
struct Invalid {
    what: &'static str,
    change: fn(&mut serde_json::Value),
    error: &'static str,
}

const INVALID: &[Invalid] = &[
    Invalid {
        what: "the ack wait that made a worker panic",
        change: |r| r["retry"]["ack_wait"] = json!("0s"),
        error: "--ack-wait (retry.ack_wait) must be between 1s and 24h, not 0s",
    },
    Invalid {
        what: "no deliveries",
        change: |r| r["retry"]["max_deliver"] = json!(0),
        error: "--max-deliver (retry.max_deliver) must be at least 1",
    },
    Invalid {
        what: "no backoff",
        change: |r| r["retry"]["backoff"] = json!([]),
        error: "--backoff (retry.backoff) must have 1 to 32 steps, not 0",
    },
    Invalid {
        what: "a backoff of years",
        change: |r| r["retry"]["backoff"] = json!(["100000h"]),
        error: "a --backoff (retry.backoff) step must be between 0s and 24h",
    },
    Invalid {
        what: "no memory",
        change: |r| r["limits"]["max_memory_bytes"] = json!(0),
        error: "--max-memory (limits.max_memory_bytes) must be between 64KiB and 4GiB",
    },
    Invalid {
        what: "no time",
        change: |r| r["limits"]["handler_timeout"] = json!("0s"),
        error: "--handler-timeout (limits.handler_timeout) must be between 1ms and 24h",
    },
    Invalid {
        what: "a reserved output",
        change: |r| r["outputs"] = json!(["out.>", "$KV.weir_deployments.>"]),
        error: "--output \"$KV.weir_deployments.>\" is refused: subjects starting with `$`",
    },
    Invalid {
        what: "weir's own subjects",
        change: |r| r["outputs"] = json!(["weir.dlq.>"]),
        error: "--output \"weir.dlq.>\" is refused: `weir.` subjects are weir's own",
    },
    Invalid {
        what: "an invalid output",
        change: |r| r["outputs"] = json!(["out.>.x"]),
        error: "invalid --output \"out.>.x\"",
    },
    Invalid {
        what: "fewer partitions than the stream",
        change: |r| r["partitions"] = json!(3),
        error: "the deployment says stream IN has 3 partitions, but it has 4",
    },
    Invalid {
        what: "billions of partitions",
        change: |r| r["partitions"] = json!(u32::MAX),
        error: "the partition count must be between 1 and 1024",
    },
    Invalid {
        what: "a stream that does not exist",
        change: |r| r["stream"] = json!("NOPE"),
        error: "stream NOPE does not exist",
    },
    Invalid {
        what: "a stream that is not partitioned",
        change: |r| r["stream"] = json!("PLAIN"),
        error: "stream PLAIN is not partitioned",
    },
    Invalid {
        what: "weir's deployments as input",
        change: |r| r["stream"] = json!("KV_weir_deployments"),
        error: "stream KV_weir_deployments is not partitioned",
    },
    Invalid {
        what: "an invalid stream name",
        change: |r| r["stream"] = json!("IN.>"),
        error: "invalid stream name \"IN.>\"",
    },
    Invalid {
        what: "another tenant's record",
        change: |r| r["tenant"] = json!("globex"),
        error: "the record stored under test.records is for globex/records",
    },
    Invalid {
        what: "another tenant's component",
        change: |r| {
            let version = r["version"].as_str().unwrap_or_default().to_owned();
            r["artifact"] = json!(format!("globex/payments/{version}"));
        },
        error: "is not test/records's component",
    },
    Invalid {
        what: "a version that is no digest",
        change: |r| r["version"] = json!("é".repeat(40)),
        error: "is not a SHA-256 digest",
    },
    Invalid {
        what: "a built-in handler",
        change: |r| {
            r["version"] = json!("builtin:noop");
            r["artifact"] = json!("builtin:noop");
        },
        error: "builtin:noop names a built-in handler, which only `weir bench` nodes run",
    },
    Invalid {
        what: "no limits",
        change: |r| {
            if let Some(record) = r.as_object_mut() {
                record.remove("limits");
            }
        },
        error: "unreadable deployment record: missing field `limits`",
    },
    Invalid {
        what: "an empty configuration key",
        change: |r| r["config"] = json!({"": "x"}),
        error: "a --config (config) key cannot be empty",
    },
];

#[tokio::test]
async fn invalid_records_are_refused_and_reported_while_the_last_valid_version_runs()
-> anyhow::Result<()> {
    let env = Env::with_streams(4).await?;
    env.js
        .create_stream(stream::Config {
            name: "PLAIN".into(),
            subjects: vec!["plain.>".into()],
            ..Default::default()
        })
        .await?;
    let control = ControlPlane::open(&env.js).await?;
    let node = env.node().await?;
    let id = DeploymentId::new("test", "records")?;
    let valid: DeploymentSpec = env.deploy_on(&node, scripted("records")).await?;
    let valid_json = serde_json::to_value(&valid)?;

    let mut handled = 0;
    let mut handle_one = async || -> anyhow::Result<()> {
        env.publish(&format!("in.k{handled}.ev"), &format!("echo {handled}"))
            .await?;
        handled += 1;
        env.wait_messages(OUTPUT, handled).await;
        Ok(())
    };
    handle_one().await?;

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![(
        "a record that is not JSON",
        b"{\"tenant\": \"test\", \"handler\"".to_vec(),
        "unreadable deployment record",
    )];
    for Invalid {
        what,
        change,
        error,
    } in INVALID
    {
        let mut record = valid_json.clone();
        change(&mut record);
        cases.push((what, serde_json::to_vec(&record)?, error));
    }
    for (what, record, error) in cases {
        let revision = put_record(&control, &id.key(), record).await?;
        let status = status_after(&control, &id, node.id(), revision).await;
        let reported = status.error.unwrap_or_default();
        assert!(
            reported.contains(error),
            "{what}: the node said {reported:?}, not {error:?}"
        );
        assert!(
            reported.ends_with(&format!(
                "(still running version {})",
                valid.short_version()
            )),
            "{what}: {reported}"
        );
        assert_eq!(status.partitions, vec![0, 1, 2, 3], "{what}");
        handle_one().await?;
    }

    // A first record that is wrong runs nothing, and says so.
    let zero = DeploymentId::new("test", "zero")?;
    let mut record = valid_json.clone();
    record["handler"] = json!("zero");
    record["artifact"] = json!(zero.artifact_name(&valid.version));
    record["retry"]["ack_wait"] = json!("0s");
    let revision = put_record(&control, &zero.key(), serde_json::to_vec(&record)?).await?;
    let status = status_after(&control, &zero, node.id(), revision).await;
    assert!(status.partitions.is_empty());
    assert_eq!(
        status.error.as_deref(),
        Some(
            "invalid deployment record: --ack-wait (retry.ack_wait) must be between 1s and 24h, \
             not 0s"
        )
    );
    // A key that is no deployment's.
    put_record(&control, "test.Bad", "whatever").await?;
    // A valid record whose stream is deleted afterwards.
    partition::create_stream(
        &env.js,
        &StreamRequest {
            name: "GONE".into(),
            subjects: "gone.*.>".into(),
            partitions: 4,
            key_tokens: vec![],
            replicas: 1,
        },
    )
    .await?;
    let gone = DeployRequest {
        stream: "GONE".into(),
        ..scripted("gone")
    };
    env.deploy_on(&node, gone).await?;
    env.js.delete_stream("GONE").await?;

    // What users see: every record listed, what is wrong with each said.
    let url = env.server.url();
    let ls = weir(&["ls", "--nats-url", &url]);
    let ls_text = text(&ls.stdout);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let still_running = format!(
        "error: invalid deployment record: a --config (config) key cannot be empty (still \
         running version {})",
        valid.short_version()
    );
    assert!(ls_text.contains(&still_running), "{ls_text}");
    let ls_json = weir(&["ls", "--json", "--nats-url", &url]);
    assert!(ls_json.status.success(), "{}", text(&ls_json.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ls_json.stdout)?;
    let by_key = |key: &str| {
        rows.iter()
            .find(|row| row["key"] == key || row["deployment"]["handler"] == key)
            .unwrap_or_else(|| panic!("weir ls --json does not list {key}: {rows:?}"))
            .clone()
    };
    assert_eq!(
        by_key("test.Bad")["invalid"],
        "invalid handler name \"Bad\": use 1 to 32 characters of a-z, 0-9 and '-', not starting \
         with '-'"
    );
    assert!(
        by_key("test.zero")["invalid"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("--ack-wait"))
    );
    let status = weir(&["status", "--nats-url", &url]);
    let status_text = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        status_text.contains("test/zero\n  invalid deployment record: --ack-wait"),
        "{status_text}"
    );
    assert!(
        status_text.contains("test/gone version ")
            && status_text.contains("  cannot read stream GONE"),
        "{status_text}"
    );

    // The valid record again: the node runs it, and has lost nothing.
    let revision = put_record(&control, &id.key(), serde_json::to_vec(&valid_json)?).await?;
    let status = status_after(&control, &id, node.id(), revision).await;
    assert_eq!(status.error, None);
    handle_one().await?;
    let outputs = read(&env.js, OUTPUT).await;
    let payloads: Vec<String> = outputs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..handled).map(|n| format!("echo {n}")).collect();
    assert_eq!(payloads, expected);
    node.shutdown().await
}
