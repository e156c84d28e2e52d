//! The conformance suite (tests/conformance): one table of vectors, kept in
//! `tests/conformance/vectors.json`, run through the real host against the conformance guest of
//! every guest language, each written with its language's SDK. Outcomes and outputs are the
//! calls' own; log lines are read back from the subject `weir logs` reads, as a user sees them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use weir::control::{DeploymentId, log_subject};
use weir::host::{
    CallLimits, Handled, HandlerFailure, HandlerInstance, HandlerVersion, Header, InstanceContext,
    Message, Outcome, TenantBudget,
};
use weir::logs::{LogLine, LogPublisher, LogSink};
use weir::outputs::OutputRules;

use crate::go_guests::{GO_CONFORMANCE, compile};
use crate::js_guests::js_guest;
use crate::py_guests::py_guest;
use crate::support::{Env, PATIENCE, default_budget, guest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    #[allow(dead_code)]
    about: String,
    init: Vec<InitVector>,
    handle: HandleTable,
}

/// A configuration and what `init` makes of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitVector {
    name: String,
    config: Vec<(String, String)>,
    expect: InitExpected,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitExpected {
    #[serde(default)]
    logs: Vec<(String, String)>,
    refused: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandleTable {
    config: Vec<(String, String)>,
    vectors: Vec<HandleVector>,
}

/// A message and what the call makes of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandleVector {
    name: String,
    message: VectorMessage,
    expect: Expected,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorMessage {
    subject: String,
    #[serde(flatten)]
    payload: Payload,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default = "input_stream")]
    stream: String,
    stream_seq: u64,
    #[serde(default)]
    partition: u32,
    #[serde(default = "first_delivery")]
    delivery_attempt: u32,
    #[serde(default = "published_at")]
    published_at: u64,
}

fn input_stream() -> String {
    "IN".into()
}
fn first_delivery() -> u32 {
    1
}
fn published_at() -> u64 {
    1_700_000_000_000_000_000
}

/// Bytes, as UTF-8 text (`payload`) or in hex (`payload_hex`); none at all is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    payload: Option<String>,
    payload_hex: Option<String>,
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect(),
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => panic!("a payload is given both as text and in hex"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    outcome: String,
    #[serde(default)]
    outputs: Vec<VectorOutput>,
    #[serde(default)]
    logs: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorOutput {
    subject: String,
    #[serde(flatten)]
    payload: Payload,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

/// An output or a log line as the suite compares them.
type Shown = Vec<String>;

fn vectors() -> Vectors {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The instance partition of the `handle` table; the `init` table's instances take 0, 1, ….
const HANDLE_PARTITION: u32 = 1_000_000;
/// The stream sequence of the line that ends the run: no vector's.
const LAST_SEQ: u64 = u64::MAX - 1;

/// What the suite's instances run under: outputs to `out.>`, at most 10 a call, lines to `logs`
/// if given.
pub(crate) fn context(
    config: &[(String, String)],
    budget: &Arc<TenantBudget>,
    logs: Option<&LogSink>,
) -> Arc<InstanceContext> {
    Arc::new(InstanceContext {
        limits: CallLimits {
            max_memory_bytes: 256 << 20,
            handler_timeout: Duration::from_secs(30),
            max_outputs_per_call: 10,
            max_output_bytes_per_call: 1 << 20,
        },
        outputs: OutputRules::allowing(&["out.>".into()]),
        budget: budget.clone(),
        logs: logs.cloned(),
        config: config.to_vec(),
    })
}

fn outcome(result: &Result<Handled, HandlerFailure>) -> String {
    match result {
        Ok(handled) => match &handled.outcome {
            Outcome::Ack => "ack".into(),
            Outcome::Retry(None) => "retry".into(),
            Outcome::Retry(Some(nanos)) if nanos % 1_000_000 == 0 => {
                format!("retry {}ms", nanos / 1_000_000)
            }
            Outcome::Retry(Some(nanos)) => format!("retry {nanos}ns"),
            Outcome::Reject(reason) => format!("reject {reason}"),
        },
        Err(HandlerFailure::Trap(_)) => "trap".into(),
        Err(HandlerFailure::OutputRefused(_)) => "output refused".into(),
        Err(other) => format!("failure {other}"),
    }
}

fn shown_output(subject: &str, payload: &[u8], headers: &[(String, String)]) -> String {
    let payload = match std::str::from_utf8(payload) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("hex {}", hex(payload)),
    };
    format!("{subject} {payload} {headers:?}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn shown_line(level: &str, message: &str) -> String {
    format!("{level} {message:?}")
}

/// Runs every vector through `version`, the conformance guest written in `language`, and fails
/// with every vector it does not meet.
async fn conforms(language: &str, version: &HandlerVersion) {
    let vectors = vectors();
    let env = Env::start().await.expect("a nats-server");
    let id = DeploymentId::new("conformance", language).expect("a valid name");
    let mut lines = env
        .client
        .subscribe(log_subject(&id, None))
        .await
        .expect("a subscription to the log lines");
    env.client.flush().await.expect("flush");
    let publisher = LogPublisher::start(env.client.clone(), "conformance");
    let sink = LogSink::new(&publisher, &id);
    let budget = default_budget();
    let mut mismatches = Vec::new();
    // The lines each vector must log, by the instance's partition and the stream sequence.
    let mut expected_lines: BTreeMap<(u32, u64), Shown> = BTreeMap::new();
    let mut names: BTreeMap<(u32, u64), String> = BTreeMap::new();

    for (partition, vector) in (0u32..).zip(&vectors.init) {
        let started = HandlerInstance::start_on(
            version,
            context(&vector.config, &budget, Some(&sink)),
            None,
            Some(partition),
        )
        .await;
        let refused = match started {
            Ok(_) => None,
            Err(HandlerFailure::InitRefused(reason)) => Some(reason),
            Err(other) => Some(format!("(not a refusal) {other}")),
        };
        if refused != vector.expect.refused {
            mismatches.push(format!(
                "init \"{}\": refused {refused:?}, expected {:?}",
                vector.name, vector.expect.refused
            ));
        }
        let logs = (vector.expect.logs.iter()).map(|(level, line)| shown_line(level, line));
        expected_lines.insert((partition, 0), logs.collect());
        names.insert((partition, 0), format!("init \"{}\"", vector.name));
    }

    let table = &vectors.handle;
    let start = || {
        HandlerInstance::start_on(
            version,
            context(&table.config, &budget, Some(&sink)),
            None,
            Some(HANDLE_PARTITION),
        )
    };
    let mut instance = start().await.expect("the conformance guest starts");
    for vector in &table.vectors {
        let m = &vector.message;
        let msg = Message {
            subject: m.subject.clone(),
            payload: m.payload.bytes(),
            headers: (m.headers.iter())
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            stream: m.stream.clone(),
            stream_seq: m.stream_seq,
            partition: m.partition,
            delivery_attempt: m.delivery_attempt,
            published_at: m.published_at,
        };
        let result = instance.handle(&msg).await;
        let got = outcome(&result);
        if got != vector.expect.outcome {
            mismatches.push(format!(
                "\"{}\": answered {got:?}, expected {:?} ({result:?})",
                vector.name, vector.expect.outcome
            ));
        }
        let outputs: Shown = match &result {
            Ok(handled) => (handled.outputs.iter())
                .map(|o| {
                    let headers: Vec<(String, String)> = (o.headers.iter())
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect();
                    shown_output(&o.subject, &o.payload, &headers)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let expected: Shown = (vector.expect.outputs.iter())
            .map(|o| shown_output(&o.subject, &o.payload.bytes(), &o.headers))
            .collect();
        if outputs != expected {
            mismatches.push(format!(
                "\"{}\": published {outputs:#?}, expected {expected:#?}",
                vector.name
            ));
        }
        let logs = (vector.expect.logs.iter()).map(|(level, line)| shown_line(level, line));
        let previous = expected_lines.insert((HANDLE_PARTITION, m.stream_seq), logs.collect());
        assert!(
            previous.is_none(),
            "two vectors have stream_seq {}",
            m.stream_seq
        );
        assert!(
            ![0, LAST_SEQ].contains(&m.stream_seq),
            "\"{}\": stream_seq {} is the suite's own",
            vector.name,
            m.stream_seq
        );
        names.insert(
            (HANDLE_PARTITION, m.stream_seq),
            format!("\"{}\"", vector.name),
        );
        if result.is_err() {
            // As a node does: a failed call discards the instance.
            instance = start().await.expect("the conformance guest starts again");
        }
    }

    // A last line: every line logged before it has been published before it.
    let last = Message {
        subject: "conformance.log".into(),
        payload: Vec::new(),
        headers: vec![Header {
            name: "info".into(),
            value: "last".into(),
        }],
        stream: input_stream(),
        stream_seq: LAST_SEQ,
        partition: 0,
        delivery_attempt: 1,
        published_at: published_at(),
    };
    instance.handle(&last).await.expect("the last line");
    let mut logged: BTreeMap<(u32, u64), Shown> = BTreeMap::new();
    loop {
        let message = tokio::time::timeout(PATIENCE, lines.next())
            .await
            .expect("the last log line arrives")
            .expect("the subscription stays open");
        let line: LogLine = serde_json::from_slice(&message.payload).expect("a log line");
        if line.stream_seq == LAST_SEQ {
            break;
        }
        // What a guest prints (a panic's message on stderr) is its language's own.
        let printed = line.source != "log";
        let restarted_init = line.partition == HANDLE_PARTITION && line.stream_seq == 0;
        if !printed && !restarted_init {
            (logged.entry((line.partition, line.stream_seq)).or_default())
                .push(shown_line(&line.level, &line.message));
        }
    }
    for (key, name) in &names {
        let got = logged.remove(key).unwrap_or_default();
        let expected = expected_lines.remove(key).unwrap_or_default();
        if got != expected {
            mismatches.push(format!("{name}: logged {got:#?}, expected {expected:#?}"));
        }
    }
    for ((partition, seq), lines) in logged {
        mismatches.push(format!(
            "lines of no vector (instance partition {partition}, stream sequence {seq}): \
             {lines:#?}"
        ));
    }
    assert_eq!(publisher.dropped(), 0, "the log publisher fell behind");
    assert_eq!(
        budget.log_lines_dropped(),
        0,
        "lines over the tenant's log rate"
    );
    assert!(
        mismatches.is_empty(),
        "the {language} conformance guest differs from tests/conformance/vectors.json:\n{}",
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn the_rust_conformance_guest_meets_every_vector() {
    conforms("rust", &compile(&guest("conformance"))).await;
}

#[tokio::test]
async fn the_go_conformance_guest_meets_every_vector() {
    conforms("go", GO_CONFORMANCE.version()).await;
}

#[tokio::test]
async fn the_python_conformance_guest_meets_every_vector() {
    let path = py_guest("tests/guests/py-conformance");
    conforms(
        "python",
        &compile(&std::fs::read(&path).expect("the component")),
    )
    .await;
}

/// Built as componentize-js builds by default, importing wasi:http (every request denied).
#[tokio::test]
async fn the_javascript_conformance_guest_meets_every_vector() {
    let path = js_guest("tests/guests/js-conformance", &["--with-http"]);
    let imports = wasm_imports(&path);
    assert!(
        imports
            .iter()
            .any(|name| name.starts_with("wasi:http/outgoing-handler@")),
        "{imports:?}"
    );
    conforms(
        "javascript",
        &compile(&std::fs::read(&path).expect("the component")),
    )
    .await;
}

/// The names a component imports.
fn wasm_imports(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("the component");
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ComponentImportSection(imports) = payload.expect("valid Wasm") {
            for import in imports {
                names.push(import.expect("an import").name.name.to_owned());
            }
        }
    }
    names
}
