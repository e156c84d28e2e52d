//! Dead letters: every way a message dies ends in exactly one record in `WEIR_DLQ`, with the
//! original message and the reason, whether or not a mover was running; nothing else makes a
//! record; a dead message never holds back its partition; and a dead letter can be replayed
//! through a fixed handler from the command line.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream;
use tokio_util::sync::CancellationToken;
use weir::control::{ControlPlane, DeploymentId};
use weir::deploy::{self, DeployRequest};
use weir::dlq::{ADVISORIES_STREAM, DLQ_STREAM, Moved, Mover, Reason};
use weir::failures::failure_key;
use weir::host::Host;
use weir::node::{self, NodeConfig};

use crate::cli::{text, weir};
use crate::support::{
    Env, INPUT, OUTPUT, header, key_in, read, scripted, scripted_giving_up, wait_for,
};

const PARTITIONS: u32 = 4;

/// The scripted guest, giving a message up after two deliveries.
fn dying(handler: &str) -> DeployRequest {
    scripted_giving_up(handler, 2, Duration::from_millis(50))
}

/// A node that handles messages but moves no dead letters.
async fn node_without_mover(env: &Env) -> anyhow::Result<node::NodeHandle> {
    node::start(
        env.client.clone(),
        NodeConfig {
            dlq_mover: false,
            ..NodeConfig::default()
        },
    )
    .await
}

/// Publishes `payload` to `subject` with a `trace-id` header; returns its stream sequence.
async fn publish_traced(env: &Env, subject: &str, payload: &str) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("trace-id", format!("trace-{payload}"));
    let ack = env
        .js
        .publish_with_headers(subject.to_owned(), headers, payload.to_owned().into())
        .await?
        .await?;
    Ok(ack.sequence)
}

/// The `Weir-*` headers of a stored dead letter.
fn weir_headers(message: &StreamMessage) -> BTreeMap<String, String> {
    message
        .headers
        .iter()
        .filter(|(name, _)| name.to_string().starts_with("Weir-"))
        .map(|(name, values)| (name.to_string(), values[0].to_string()))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// The advisory stream's last sequence and the advisories it still holds.
async fn advisories(env: &Env) -> (u64, u64) {
    let mut stream = env.js.get_stream(ADVISORIES_STREAM).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    (state.last_sequence, state.messages)
}

#[tokio::test]
async fn each_way_to_die_lands_in_the_dlq_with_the_original_and_every_weir_header()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = env.node().await?;
    let spec = env.deploy_on(&node, dying("dead")).await?;
    let id = DeploymentId::new("test", "dead")?;

    let subject = |partition| format!("in.{}.ev", key_in(partition, PARTITIONS, 0));
    let rejected = publish_traced(&env, &subject(0), "reject not json").await?;
    let trapped = publish_traced(&env, &subject(1), "trap").await?;
    let retried = publish_traced(&env, &subject(2), "retry").await?;
    // Asks to come back in ten minutes, and is removed from the stream meanwhile.
    let removed = publish_traced(&env, &subject(3), "retry-until 99 600000").await?;
    for partition in 0..PARTITIONS {
        env.publish(&subject(partition), "echo after").await?;
    }
    let control = ControlPlane::open(&env.js).await?;
    wait_for("the removed message's first failure", || async {
        control
            .failures
            .get(failure_key(&id, INPUT, removed))
            .await
            .ok()?
    })
    .await;
    env.js
        .get_stream(INPUT)
        .await?
        .delete_message(removed)
        .await?;

    // No partition waits behind its dead message.
    let outputs = env.wait_messages(OUTPUT, PARTITIONS as usize).await;
    assert!(outputs.iter().all(|m| &m.payload[..] == b"echo after"));

    env.wait_dead_letters(4).await;
    let mut stored = read(&env.js, DLQ_STREAM).await;
    stored.sort_by_key(|m| header(m, "Weir-Stream-Seq").map(|s| s.parse::<u64>().unwrap()));
    let [reject, trap, retry, removal] = &stored[..] else {
        panic!("expected 4 dead letters, found {}", stored.len());
    };
    let common = |seq: u64, subject: &str, deliveries: &str| {
        let mut headers = expected(&[
            ("Weir-Stream", INPUT),
            ("Weir-Subject", subject),
            ("Weir-Deliveries", deliveries),
            ("Weir-Tenant", "test"),
            ("Weir-Handler", "dead"),
            ("Weir-Handler-Version", &spec.version),
        ]);
        headers.insert("Weir-Stream-Seq".into(), seq.to_string());
        headers
    };

    let mut want = common(rejected, &subject(0), "1");
    want.extend(expected(&[
        ("Weir-Dlq-Reason", "terminated"),
        ("Weir-Term-Reason", "not json"),
        ("Weir-Last-Error", "rejected: not json"),
    ]));
    assert_eq!(weir_headers(reject), want);
    assert_eq!(&reject.payload[..], b"reject not json");
    assert_eq!(header(reject, "trace-id"), Some("trace-reject not json"));
    assert_eq!(
        header(reject, "Nats-Msg-Id"),
        Some(format!("dlq:test.dead:{INPUT}:{rejected}").as_str())
    );
    assert_eq!(
        reject.subject.as_str(),
        format!("weir.dlq.test.dead.{INPUT}.{rejected}")
    );

    let mut got = weir_headers(trap);
    let last_error = got.remove("Weir-Last-Error").unwrap_or_default();
    assert!(last_error.starts_with("trap: "), "{last_error}");
    let mut want = common(trapped, &subject(1), "2");
    want.insert("Weir-Dlq-Reason".into(), "max_deliveries".into());
    assert_eq!(got, want);
    assert_eq!(&trap.payload[..], b"trap");

    let mut want = common(retried, &subject(2), "2");
    want.extend(expected(&[
        ("Weir-Dlq-Reason", "max_deliveries"),
        ("Weir-Last-Error", "the handler asked for a retry"),
    ]));
    assert_eq!(weir_headers(retry), want);

    let mut want = common(removed, &subject(3), "1");
    want.extend(expected(&[
        ("Weir-Dlq-Reason", "deleted_before_processing"),
        ("Weir-Term-Reason", "Unacknowledged message was deleted"),
        ("Weir-Last-Error", "the handler asked for a retry after 10m"),
        (
            "Weir-Original-Missing",
            "stream IN removed it before it was handled",
        ),
    ]));
    assert_eq!(weir_headers(removal), want);
    assert!(removal.payload.is_empty(), "recorded without payload");
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_die_while_no_mover_runs_get_one_dead_letter_each_once_movers_start()
-> anyhow::Result<()> {
    let env = Env::with_streams(PARTITIONS).await?;
    let node = node_without_mover(&env).await?;
    env.deploy_on(&node, dying("late")).await?;

    let mut dead = Vec::new();
    for n in 0..6 {
        let key = key_in(n as u32 % PARTITIONS, PARTITIONS, n / 4);
        dead.push(
            env.publish(&format!("in.{key}.ev"), &format!("reject no {n}"))
                .await?,
        );
    }
    wait_for("6 captured advisories", || async {
        (advisories(&env).await.1 == 6).then_some(())
    })
    .await;
    assert!(read(&env.js, DLQ_STREAM).await.is_empty());
    // One original goes before any mover could copy it.
    env.js
        .get_stream(INPUT)
        .await?
        .delete_message(dead[0])
        .await?;

    // Two movers at once, as on two nodes: they share the one durable consumer, so each
    // advisory is with one of them at a time, and is redelivered if that one fails.
    let control = ControlPlane::open(&env.js).await?;
    let stop = CancellationToken::new();
    let movers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(Mover::new(env.js.clone(), &control).run(stop.clone())))
        .collect();
    let letters = env.wait_dead_letters(6).await;
    wait_for("the movers to finish every advisory", || async {
        (advisories(&env).await.1 == 0).then_some(())
    })
    .await;
    stop.cancel();
    for mover in movers {
        mover.await?;
    }

    let letters_now = read(&env.js, DLQ_STREAM).await;
    assert_eq!(letters_now.len(), 6, "one dead letter per dead message");
    let mut seqs: Vec<u64> = letters.iter().map(|letter| letter.stream_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, dead);
    let gone = letters
        .iter()
        .find(|letter| letter.stream_seq == dead[0])
        .expect("a dead letter for the deleted original");
    assert_eq!(gone.reason, Some(Reason::Terminated));
    assert!(
        gone.original_missing
            .as_deref()
            .is_some_and(|why| why.contains("no longer holds sequence")),
        "{:?}",
        gone.original_missing
    );
    assert_eq!(
        gone.subject.as_deref(),
        Some(format!("in.{}.ev", key_in(0, PARTITIONS, 0)).as_str()),
        "the subject comes from the failure record"
    );
    assert!(gone.payload.is_empty());
    node.shutdown().await
}

#[tokio::test]
async fn a_duplicate_advisory_and_a_late_term_of_an_acked_message_make_no_record()
-> anyhow::Result<()> {
    let env = Env::with_streams(1).await?;
    let node = env.node().await?;
    env.deploy_on(&node, dying("dup")).await?;
    let consumer = DeploymentId::new("test", "dup")?.consumer_name(0);

    let rejected = env.publish("in.k.ev", "reject once").await?;
    let acked = env.publish("in.k.ev", "echo fine").await?;
    env.wait_messages(OUTPUT, 1).await;
    env.wait_dead_letters(1).await;
    wait_for("the mover to finish", || async {
        (advisories(&env).await.1 == 0).then_some(())
    })
    .await;
    let (before, _) = advisories(&env).await;

    // The rejection's advisory again, word for word as the server sends it.
    let duplicate = serde_json::json!({
        "type": "io.nats.jetstream.advisory.v1.terminated",
        "id": "duplicate",
        "timestamp": "2026-11-22T12:00:00Z",
        "stream": INPUT,
        "consumer": consumer,
        "consumer_seq": 1,
        "stream_seq": rejected,
        "deliveries": 1,
        "reason": "once",
    });
    env.client
        .publish(
            format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{INPUT}.{consumer}"),
            serde_json::to_vec(&duplicate)?.into(),
        )
        .await?;
    // A +TERM of the message that was acked, as a late client would send it: the server
    // emits a real termination advisory for it.
    env.client
        .request(
            format!("$JS.ACK.{INPUT}.{consumer}.1.{acked}.2.0.0"),
            "+TERM late".into(),
        )
        .await?;

    wait_for("both advisories captured and handled", || async {
        let (last, held) = advisories(&env).await;
        (last >= before + 2 && held == 0).then_some(())
    })
    .await;
    let stored = read(&env.js, DLQ_STREAM).await;
    assert_eq!(stored.len(), 1, "no second record and no bogus one");
    assert_eq!(
        header(&stored[0], "Weir-Stream-Seq"),
        Some(rejected.to_string().as_str())
    );
    node.shutdown().await
}

#[tokio::test]
async fn a_message_whose_record_is_already_there_is_not_recorded_again() -> anyhow::Result<()> {
    let env = Env::with_streams(1).await?;
    let node = node_without_mover(&env).await?;
    env.deploy_on(&node, dying("again")).await?;
    let id = DeploymentId::new("test", "again")?;
    let rejected = env.publish("in.k.ev", "reject once").await?;
    wait_for("the rejection's advisory", || async {
        (advisories(&env).await.1 == 1).then_some(())
    })
    .await;
    // A record written long ago, out of reach of the Msg-Id deduplication window.
    let mut earlier = HeaderMap::new();
    earlier.insert("Nats-Msg-Id", "an-earlier-mover");
    env.js
        .publish_with_headers(
            weir::control::dead_letter_subject(&id, INPUT, rejected),
            earlier,
            "the first record".into(),
        )
        .await?
        .await?;

    let advisory = env
        .js
        .get_stream(ADVISORIES_STREAM)
        .await?
        .get_raw_message(advisories(&env).await.0)
        .await?;
    let control = ControlPlane::open(&env.js).await?;
    let mover = Mover::new(env.js.clone(), &control);
    assert_eq!(
        mover.move_advisory(&advisory.payload).await?,
        Moved::AlreadyRecorded
    );
    let stored = read(&env.js, DLQ_STREAM).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].payload[..], b"the first record");
    node.shutdown().await
}

#[tokio::test]
async fn a_message_too_large_to_copy_is_recorded_without_its_original() -> anyhow::Result<()> {
    let env = Env::with_streams(1).await?;
    let node = env.node().await?;
    env.deploy_on(&node, dying("large")).await?;
    let max_payload = env.client.server_info().max_payload;
    // Fills max_payload: no room is left for weir's headers beside it.
    let payload = format!("reject {}", "x".repeat(max_payload - 100));
    let large = env.publish("in.k.ev", &payload).await?;
    env.publish("in.k.ev", "echo after").await?;

    let outputs = env.wait_messages(OUTPUT, 1).await;
    assert_eq!(&outputs[0].payload[..], b"echo after");
    let letters = env.wait_dead_letters(1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.stream_seq, large);
    assert_eq!(letter.reason, Some(Reason::Terminated));
    assert!(letter.payload.is_empty());
    let missing = letter.original_missing.as_deref().unwrap_or_default();
    assert_eq!(
        missing,
        format!("too large to copy with weir's headers; it is {INPUT} sequence {large}")
    );
    // The failure record and the headers keep the first KiB of a long error.
    assert!(
        letter.last_error.starts_with("rejected: xxx"),
        "{:.40}",
        letter.last_error
    );
    assert_eq!(letter.last_error.len(), weir::failures::MAX_ERROR_BYTES);
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_does_not_hold_back_the_thousand_behind_it() -> anyhow::Result<()> {
    const BEHIND: usize = 1_000;
    let env = Env::with_streams(1).await?;
    let node = env.node().await?;
    let request = scripted_giving_up("poison", 3, Duration::from_millis(10));
    env.deploy_on(&node, request).await?;

    let poison = env.publish("in.k.ev", "trap").await?;
    let mut acks = Vec::with_capacity(BEHIND);
    for n in 0..BEHIND {
        acks.push(
            env.js
                .publish("in.k.ev", format!("echo {n}").into())
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }

    let outputs = env.wait_messages(OUTPUT, BEHIND).await;
    let payloads: Vec<String> = outputs.iter().map(|m| text(&m.payload)).collect();
    let expected: Vec<String> = (0..BEHIND).map(|n| format!("echo {n}")).collect();
    assert_eq!(payloads, expected, "all handled, in order");
    let letters = env.wait_dead_letters(1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stream_seq, poison);
    assert_eq!(letters[0].reason, Some(Reason::MaxDeliveries));
    assert_eq!(letters[0].deliveries, 3);
    node.shutdown().await
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_through_the_fixed_handler_and_purged_from_the_cli()
-> anyhow::Result<()> {
    let env = Env::with_streams(2).await?;
    let url = env.server.url();
    let node = env.node().await?;
    env.deploy_on(&node, scripted("fixable")).await?;
    let cli = |args: &[&str]| weir(&[args, &["--nats-url", &url]].concat());
    let ok = |args: &[&str]| {
        let output = cli(args);
        assert!(
            output.status.success(),
            "weir {args:?} failed: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    };

    let mut dead = Vec::new();
    for n in 0..3 {
        dead.push(publish_traced(&env, &format!("in.k{n}.ev"), "reject-unless-fixed").await?);
    }
    env.wait_dead_letters(3).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(&["dlq", "ls", "--json"]))?;
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|l| l["reason"] == "terminated"
        && l["term_reason"] == "not fixed yet"
        && l["replays"].as_array().is_some_and(Vec::is_empty)));
    let table = ok(&["dlq", "ls", "--tenant", "test"]);
    assert!(
        table.contains("test/fixable") && table.contains("not fixed yet"),
        "{table}"
    );
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "--json"]))?;
    assert_eq!(status["deployments"][0]["dead_letters"], 3);
    let first = listed[0]["id"].as_u64().expect("an id");
    let shown = ok(&["dlq", "show", &first.to_string()]);
    assert!(
        shown.contains("terminated") && shown.contains("trace-id: trace-reject-unless-fixed"),
        "{shown}"
    );

    // The fix: the same handler, redeployed with the setting it lacked.
    let mut fixed = scripted("fixable");
    fixed.config.insert("fixed".into(), "yes".into());
    env.deploy_on(&node, fixed).await?;
    let replayed = ok(&["dlq", "replay", "--all"]);
    assert!(replayed.contains("replayed 3 dead letter(s)"), "{replayed}");

    let outputs = env.wait_messages(OUTPUT, 3).await;
    assert!(
        outputs
            .iter()
            .all(|m| &m.payload[..] == b"reject-unless-fixed")
    );
    let input = read(&env.js, INPUT).await;
    let again: Vec<_> = input
        .iter()
        .filter(|m| header(m, "Weir-Replayed-From").is_some())
        .collect();
    assert_eq!(again.len(), 3);
    assert!(
        again
            .iter()
            .all(|m| header(m, "trace-id") == Some("trace-reject-unless-fixed"))
    );

    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(&["dlq", "ls", "--json"]))?;
    for letter in &listed {
        let stored_as = letter["replays"][0]["stored_as"].as_str().unwrap_or("");
        assert!(stored_as.starts_with("IN:"), "{letter}");
    }
    assert!(ok(&["dlq", "show", &first.to_string()]).contains("replayed"));
    assert!(ok(&["dlq", "replay", "--all"]).contains("nothing to replay"));
    let missing = cli(&["dlq", "replay", "999"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("there is no dead letter 999"));

    assert!(ok(&["dlq", "purge", "--replayed"]).contains("purged 3 dead letter(s)"));
    assert!(ok(&["dlq", "ls"]).contains("no dead letters"));
    node.shutdown().await
}

#[tokio::test]
async fn an_input_stream_that_would_delete_dead_messages_is_refused_at_deploy() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    env.js
        .create_stream(stream::Config {
            name: "JOBS".into(),
            subjects: vec!["jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let mut request = scripted("jobs");
    request.stream = "JOBS".into();
    let error = deploy::deploy(&env.js, &Host::new()?, request)
        .await
        .expect_err("a work-queue input stream is refused");
    assert!(
        format!("{error:#}").contains("stream JOBS has WorkQueue retention; weir needs Limits"),
        "{error:#}"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_that_already_captures_the_advisories_is_named_in_the_refusal()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    env.js
        .create_stream(stream::Config {
            name: "MINE".into(),
            subjects: vec![format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{INPUT}.>"
            )],
            ..Default::default()
        })
        .await?;
    // Reading creates nothing; the first command that makes weir's streams is refused.
    let url = env.server.url();
    assert!(weir(&["status", "--nats-url", &url]).status.success());
    let output = weir(&["dlq", "purge", "--all", "--nats-url", &url]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("stream MINE already stores subjects that overlap"),
        "{stderr}"
    );
    Ok(())
}
