//! What becomes of a message, given how its call ended: the pipeline's one decision, without
//! I/O, so that every case is a line in the tests below. The stages only carry it out.

use std::time::Duration;

use crate::host::Outcome;
use crate::spec::{MAX_DURATION, RetrySpec};

/// What to do with the message in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Store the call's outputs, then ack.
    Ack,
    /// Call the handler again, after `delay`; `error` is what its failure record says.
    Retry { delay: Duration, error: String },
    /// The last attempt failed: terminate the message, a `max_deliveries` dead letter.
    GiveUp { error: String },
    /// The handler rejected the message: terminate it with `reason`, a `terminated` dead
    /// letter.
    Reject { reason: String, error: String },
    /// The node lacks the capacity to call the handler (no instance could start, or the
    /// tenant's memory is all in use): call it again after `delay`, without spending an
    /// attempt.
    Wait { delay: Duration, reason: String },
}

/// How long a message waits for capacity before it is tried again.
pub(crate) const CAPACITY_WAIT: Duration = Duration::from_secs(1);

/// How a call ended: the handler's outcome, or what went wrong (a trap, a limit, a refused
/// output, outputs that cannot be stored), as the failure record will say it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended<'a> {
    /// The handler answered.
    Answered(&'a Outcome),
    /// The call failed.
    Failed(&'a str),
    /// The call could not be made: no instance could start, or the tenant's memory is all in
    /// use on this node. No fault of the message's.
    NoCapacity(&'a str),
}

/// The verdict on attempt `attempt` (1-based) of a message under `retry`.
pub(crate) fn decide(ended: Ended<'_>, attempt: u32, retry: &RetrySpec) -> Verdict {
    let (delay, error) = match ended {
        Ended::Answered(Outcome::Ack) => return Verdict::Ack,
        Ended::Answered(Outcome::Reject(reason)) => {
            return Verdict::Reject {
                reason: reason.clone(),
                error: format!("rejected: {reason}"),
            };
        }
        Ended::Answered(Outcome::Retry(Some(nanos))) => {
            // A guest's delay is its own to choose, within what a spec may hold.
            let delay = Duration::from_nanos(*nanos).min(MAX_DURATION);
            let error = format!(
                "the handler asked for a retry after {}",
                humantime::format_duration(delay)
            );
            (delay, error)
        }
        Ended::Answered(Outcome::Retry(None)) => (
            retry.backoff_for(attempt),
            "the handler asked for a retry".to_owned(),
        ),
        Ended::Failed(error) => (retry.backoff_for(attempt), error.to_owned()),
        Ended::NoCapacity(reason) => {
            return Verdict::Wait {
                delay: CAPACITY_WAIT,
                reason: reason.to_owned(),
            };
        }
    };
    if attempt >= retry.max_deliver {
        Verdict::GiveUp { error }
    } else {
        Verdict::Retry { delay, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> RetrySpec {
        RetrySpec {
            max_deliver: 3,
            ack_wait: Duration::from_secs(30),
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
        }
    }

    fn waiting(reason: &str) -> Verdict {
        Verdict::Wait {
            delay: CAPACITY_WAIT,
            reason: reason.to_owned(),
        }
    }

    fn retrying(secs: u64, error: &str) -> Verdict {
        Verdict::Retry {
            delay: Duration::from_secs(secs),
            error: error.to_owned(),
        }
    }

    #[test]
    fn every_ending_on_every_attempt() {
        let ack = Outcome::Ack;
        let reject = Outcome::Reject("not json".into());
        let retry_after = Outcome::Retry(Some(2_000_000_000));
        let retry_backoff = Outcome::Retry(None);
        let asked = "the handler asked for a retry";
        let asked_after = "the handler asked for a retry after 2s";
        let rejected = Verdict::Reject {
            reason: "not json".into(),
            error: "rejected: not json".into(),
        };
        let gave_up = |error: &str| Verdict::GiveUp {
            error: error.to_owned(),
        };
        let cases: Vec<(Ended<'_>, u32, Verdict)> = vec![
            (Ended::Answered(&ack), 1, Verdict::Ack),
            (Ended::Answered(&ack), 3, Verdict::Ack),
            (Ended::Answered(&reject), 1, rejected.clone()),
            (Ended::Answered(&reject), 3, rejected),
            (Ended::Answered(&retry_after), 1, retrying(2, asked_after)),
            (Ended::Answered(&retry_after), 3, gave_up(asked_after)),
            (Ended::Answered(&retry_backoff), 1, retrying(1, asked)),
            (Ended::Answered(&retry_backoff), 2, retrying(5, asked)),
            (Ended::Answered(&retry_backoff), 3, gave_up(asked)),
            (
                Ended::Failed("trap: unreachable"),
                1,
                retrying(1, "trap: unreachable"),
            ),
            (
                Ended::Failed("trap: unreachable"),
                2,
                retrying(5, "trap: unreachable"),
            ),
            (
                Ended::Failed("trap: unreachable"),
                3,
                gave_up("trap: unreachable"),
            ),
            (
                Ended::Failed("trap: unreachable"),
                9,
                gave_up("trap: unreachable"),
            ),
            (Ended::NoCapacity("pool full"), 1, waiting("pool full")),
            (Ended::NoCapacity("pool full"), 3, waiting("pool full")),
            (Ended::NoCapacity("pool full"), 9, waiting("pool full")),
        ];
        for (ended, attempt, expected) in cases {
            assert_eq!(
                decide(ended, attempt, &retry()),
                expected,
                "{ended:?} on attempt {attempt}"
            );
        }
    }

    #[test]
    fn a_guests_delay_is_capped_at_what_a_spec_may_hold() {
        let forever = Outcome::Retry(Some(u64::MAX));
        let verdict = decide(Ended::Answered(&forever), 1, &retry());
        assert!(
            matches!(verdict, Verdict::Retry { delay, .. } if delay == MAX_DURATION),
            "{verdict:?}"
        );
    }

    #[test]
    fn one_allowed_attempt_gives_up_on_the_first_failure() {
        let once = RetrySpec {
            max_deliver: 1,
            ..retry()
        };
        assert_eq!(
            decide(Ended::Failed("deadline of 1s exceeded"), 1, &once),
            Verdict::GiveUp {
                error: "deadline of 1s exceeded".into()
            }
        );
    }
}
