//! Partition workers are supervised: a worker that panics is started again, after a pause that
//! doubles with each failure in a row, and the failure shows in `weir_status` (and the log)
//! until the restarted worker has run for a while. A worker that returns has finished: it was
//! told to stop, or its deployment was withdrawn.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::control::DeploymentId;

/// Pause before the first restart; it doubles with each failure in a row, up to the maximum.
const RESTART_DELAY_MIN: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);
/// How long a restarted worker runs before its failure is no longer reported, and the next one
/// is restarted at once again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A partition's worker failed (`Some`, with why and what happens next) or has been healthy
/// since (`None`), as the supervisor tells the registry, which reports it in `weir_status`.
#[derive(Debug)]
pub(crate) struct Failing {
    pub(crate) id: DeploymentId,
    pub(crate) partition: u32,
    pub(crate) error: Option<String>,
}

/// Runs the worker that `start` makes until it returns or `stop` is cancelled and it returns,
/// starting a new one whenever it panics.
pub(crate) async fn supervise<F, W>(
    id: DeploymentId,
    partition: u32,
    mut start: F,
    stop: CancellationToken,
    failures: mpsc::UnboundedSender<Failing>,
) where
    F: FnMut() -> W,
    W: Future<Output = ()> + Send + 'static,
{
    let report = |error: Option<String>| {
        let failing = Failing {
            id: id.clone(),
            partition,
            error,
        };
        // The registry is gone only when the node stops.
        let _ = failures.send(failing);
    };
    let mut delay = RESTART_DELAY_MIN;
    let mut failed = false;
    loop {
        let mut worker = tokio::spawn(start().in_current_span());
        let ended = loop {
            tokio::select! {
                ended = &mut worker => break ended,
                () = tokio::time::sleep(HEALTHY_AFTER), if failed => {
                    failed = false;
                    delay = RESTART_DELAY_MIN;
                    tracing::info!("the restarted worker has run for {HEALTHY_AFTER:?}");
                    report(None);
                }
            }
        };
        let panic = match ended {
            Ok(()) => return,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => panic_message(panic.as_ref()),
                Err(_) => return,
            },
        };
        if stop.is_cancelled() {
            tracing::error!("the partition's worker panicked while stopping: {panic}");
            return;
        }
        let error = format!("the worker panicked: {panic}; starting it again in {delay:?}");
        tracing::error!("{error}");
        report(Some(error));
        failed = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESTART_DELAY_MAX);
    }
}

/// What a panic said, when it said it as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    crate::failures::clip(text, crate::failures::MAX_ERROR_BYTES)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // A failed expectation is a failed test here.
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn id() -> DeploymentId {
        DeploymentId::new("acme", "orders").expect("valid names")
    }

    /// A worker that panics on its first `panics` runs, then returns.
    fn worker_panicking(
        panics: u32,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> futures::future::BoxFuture<'static, ()>,
    ) {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let start = move || -> futures::future::BoxFuture<'static, ()> {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                assert!(run >= panics, "run {run} fails");
            })
        };
        (runs, start)
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_is_started_again_and_its_failure_reported() {
        let (runs, start) = worker_panicking(2);
        let (failures, mut reported) = mpsc::unbounded_channel();
        supervise(id(), 3, start, CancellationToken::new(), failures).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two failed runs, then one that returned"
        );
        let first = reported.recv().await.expect("the first failure");
        assert_eq!(first.partition, 3);
        let error = first.error.expect("a failure");
        assert!(error.contains("run 0 fails"), "{error}");
        assert!(error.contains("again in 1s"), "{error}");
        let second = reported
            .recv()
            .await
            .and_then(|f| f.error)
            .expect("the second failure");
        assert!(
            second.contains("again in 2s"),
            "the pause doubles: {second}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_returns_is_not_started_again() {
        let (runs, start) = worker_panicking(0);
        let (failures, mut reported) = mpsc::unbounded_channel();
        supervise(id(), 0, start, CancellationToken::new(), failures).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(reported.try_recv().is_err(), "nothing to report");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_partition_is_not_started_again_after_a_panic() {
        let (runs, start) = worker_panicking(u32::MAX);
        let (failures, _reported) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        stop.cancel();
        supervise(id(), 0, start, stop, failures).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_worker_that_runs_a_while_is_reported_healthy() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let start = move || -> futures::future::BoxFuture<'static, ()> {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                assert!(run > 0, "the first run fails");
                tokio::time::sleep(HEALTHY_AFTER * 2).await;
            })
        };
        let (failures, mut reported) = mpsc::unbounded_channel();
        supervise(id(), 0, start, CancellationToken::new(), failures).await;
        assert!(reported.recv().await.and_then(|f| f.error).is_some());
        let healthy = reported.recv().await.expect("a second report");
        assert_eq!(healthy.error, None, "healthy again");
    }
}
