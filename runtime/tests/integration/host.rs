//! The host on its own: each limit obeyed and violated, and the exact failure reported.

use std::sync::Arc;
use std::time::Duration;

use weir::host::{
    CallLimits, HandlerFailure, HandlerInstance, Host, InstanceContext, Message, Outcome,
};
use weir::outputs::OutputRules;

use crate::support::{default_budget, guest};

fn limits() -> CallLimits {
    CallLimits {
        max_memory_bytes: 16 << 20,
        handler_timeout: Duration::from_secs(2),
        max_outputs_per_call: 3,
        max_output_bytes_per_call: 1024,
    }
}

fn context(limits: CallLimits, config: &[(&str, &str)]) -> Arc<InstanceContext> {
    Arc::new(InstanceContext {
        limits,
        outputs: OutputRules::allowing(&["out.>".into()]),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        budget: default_budget(),
        logs: None,
    })
}

fn message(payload: &str) -> Message {
    Message {
        subject: "in.k1.ev".into(),
        payload: payload.as_bytes().to_vec(),
        headers: vec![],
        stream: "IN".into(),
        stream_seq: 7,
        partition: 0,
        delivery_attempt: 1,
        published_at: 0,
    }
}

async fn instance(limits: CallLimits) -> HandlerInstance {
    let version = Host::new()
        .expect("host")
        .compile(&guest("scripted"))
        .expect("scripted compiles");
    HandlerInstance::start(&version, context(limits, &[]))
        .await
        .expect("scripted starts")
}

#[tokio::test]
async fn an_acked_call_returns_its_outputs_with_headers() {
    let mut instance = instance(limits()).await;
    let handled = instance
        .handle(&message("echo hello"))
        .await
        .expect("echo succeeds");
    assert!(matches!(handled.outcome, Outcome::Ack));
    assert_eq!(handled.outputs.len(), 1);
    assert_eq!(handled.outputs[0].subject, "out.in.k1.ev");
    assert_eq!(&handled.outputs[0].payload[..], b"echo hello");
    assert_eq!(handled.outputs[0].headers[0].name, "delivery-attempt");
}

#[tokio::test]
async fn outcomes_carry_the_handlers_delay_and_reason() {
    let mut instance = instance(limits()).await;
    let retry = instance
        .handle(&message("retry-until 2 300"))
        .await
        .expect("call returns");
    assert!(matches!(retry.outcome, Outcome::Retry(Some(ns)) if ns == 300_000_000));
    let reject = instance
        .handle(&message("reject bad payload"))
        .await
        .expect("call returns");
    assert!(matches!(reject.outcome, Outcome::Reject(reason) if reason == "bad payload"));
}

#[tokio::test]
async fn a_trap_is_reported_with_the_guests_panic_message() {
    let mut instance = instance(limits()).await;
    let failure = instance
        .handle(&message("trap"))
        .await
        .expect_err("trap fails the call");
    let HandlerFailure::Trap(detail) = failure else {
        panic!("expected a trap, got {failure:?}")
    };
    assert!(detail.contains("trap requested by the message"), "{detail}");
}

#[tokio::test]
async fn a_call_within_its_deadline_completes_and_one_past_it_is_stopped() {
    let mut instance = instance(limits()).await;
    instance
        .handle(&message("sleep 100"))
        .await
        .expect("a short sleep is within the deadline");
    let failure = instance
        .handle(&message("sleep 5000"))
        .await
        .expect_err("a long sleep is stopped");
    let HandlerFailure::Deadline { timeout, cpu } = failure else {
        panic!("expected the deadline, got {failure:?}")
    };
    assert_eq!(timeout, Duration::from_secs(2));
    assert!(
        cpu < Duration::from_secs(1),
        "a sleeping guest computed for {cpu:?}"
    );
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    let mut instance = instance(CallLimits {
        handler_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let failure = instance
        .handle(&message("spin"))
        .await
        .expect_err("spin is stopped");
    let HandlerFailure::Deadline { timeout, cpu } = failure else {
        panic!("expected the deadline, got {failure:?}")
    };
    assert_eq!(timeout, Duration::from_millis(300));
    assert!(
        cpu > Duration::ZERO,
        "a spinning guest computed for {cpu:?}"
    );
}

#[tokio::test]
async fn memory_growth_past_the_limit_is_stopped_and_named() {
    let mut instance = instance(limits()).await;
    instance
        .handle(&message("echo small"))
        .await
        .expect("a small call fits in 16 MiB");
    let failure = instance
        .handle(&message("hog"))
        .await
        .expect_err("hog is stopped");
    let HandlerFailure::MemoryLimit {
        limit_bytes,
        requested_bytes,
    } = failure
    else {
        panic!("expected a memory-limit failure, got {failure:?}")
    };
    assert_eq!(limit_bytes, 16 << 20);
    assert!(requested_bytes > limit_bytes);
}

#[tokio::test]
async fn outputs_up_to_the_per_call_limit_pass_and_one_more_fails_the_call() {
    let mut instance = instance(limits()).await;
    let handled = instance
        .handle(&message("emit 3"))
        .await
        .expect("three outputs are allowed");
    assert_eq!(handled.outputs.len(), 3);
    let failure = instance
        .handle(&message("emit 4"))
        .await
        .expect_err("a fourth output is refused");
    assert!(
        matches!(&failure, HandlerFailure::OutputRefused(reason) if reason.contains("limit of 3 outputs per call")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn output_bytes_past_the_per_call_limit_fail_the_call() {
    let mut instance = instance(limits()).await;
    let big = format!("echo {}", "x".repeat(2000));
    let failure = instance
        .handle(&message(&big))
        .await
        .expect_err("2 KB of output exceeds 1 KB");
    assert!(
        matches!(&failure, HandlerFailure::OutputRefused(reason) if reason.contains("limit of 1024 output bytes")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn publishing_outside_the_allowed_subjects_fails_the_call() {
    let mut instance = instance(limits()).await;
    let failure = instance
        .handle(&message("forbidden"))
        .await
        .expect_err("forbidden.subject is refused");
    assert!(
        matches!(&failure, HandlerFailure::OutputRefused(reason) if reason.contains("forbidden.subject")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn init_can_refuse_its_configuration() {
    let version = Host::new()
        .expect("host")
        .compile(&guest("scripted"))
        .expect("scripted compiles");
    let failure = HandlerInstance::start(&version, context(limits(), &[("refuse", "no thanks")]))
        .await
        .expect_err("init refuses");
    assert_eq!(
        failure,
        HandlerFailure::InitRefused("refusing on purpose: no thanks".into())
    );
}

#[test]
fn a_component_compiled_once_is_loaded_from_the_cache_by_the_next_host() -> anyhow::Result<()> {
    use weir::host::CompileCache;

    let dir = tempfile::tempdir()?;
    let cache = CompileCache::At(dir.path().join("compiled"));
    let component = guest("scripted");
    let first = Host::with_cache(&cache)?;
    let compiled = first.compile(&component)?;
    assert_eq!(first.compiles_cached(), 0, "nothing was compiled before");

    // A node that starts again, or `weir deploy` run twice, is a new host on the same cache.
    let next = Host::with_cache(&cache)?;
    let loaded = next.compile(&component)?;
    assert_eq!(
        next.compiles_cached(),
        1,
        "the second compile was not loaded"
    );
    assert_eq!(loaded.digest(), compiled.digest());

    // Without a cache, every host compiles.
    let uncached = Host::with_cache(&CompileCache::Off)?;
    uncached.compile(&component)?;
    assert_eq!(uncached.compiles_cached(), 0);
    Ok(())
}

#[tokio::test]
async fn a_component_loaded_from_the_cache_handles_messages() -> anyhow::Result<()> {
    use weir::host::CompileCache;

    let dir = tempfile::tempdir()?;
    let cache = CompileCache::At(dir.path().to_owned());
    Host::with_cache(&cache)?.compile(&guest("scripted"))?;
    let host = Host::with_cache(&cache)?;
    let version = host.compile(&guest("scripted"))?;
    assert_eq!(host.compiles_cached(), 1);
    let mut instance = HandlerInstance::start(&version, context(limits(), &[])).await?;
    let handled = instance.handle(&message("echo cached")).await?;
    assert!(matches!(handled.outcome, Outcome::Ack));
    assert_eq!(&handled.outputs[0].payload[..], b"echo cached");
    Ok(())
}
