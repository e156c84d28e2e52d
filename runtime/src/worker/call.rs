//! The call: one message handed to the partition's handler instance, which goes with the call
//! onto the node's guest threads and comes back with its result.

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use tracing::Instrument as _;

use super::window::Delivery;
use crate::deployment::{HandlerCode, SharedDeployment};
use crate::failures;
use crate::host::{
    Claim, GuestThreads, Handled, HandlerFailure, HandlerInstance, Header, Message, Outcome, Turn,
};
use crate::partition;
use crate::state::PartitionState;

/// A call's end: the instance to keep (none after a failure), and what the call returned.
pub(crate) type CallResult = (Option<HandlerInstance>, Result<Handled, CallFailure>);

/// Why a call returned no outcome.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// No instance could start (the node's instance pool is full, or `init` failed): the
    /// message had no call at all.
    Start(HandlerFailure),
    /// The call failed.
    Handle(HandlerFailure),
}

impl CallFailure {
    /// Whether the failure is the node's lack of capacity rather than the message's fault: it
    /// waits, and spends no attempt.
    pub(crate) fn is_capacity(&self) -> bool {
        matches!(
            self,
            Self::Start(_) | Self::Handle(HandlerFailure::TenantMemoryQuota { .. })
        )
    }

    /// What failed.
    pub(crate) fn failure(&self) -> &HandlerFailure {
        match self {
            Self::Start(failure) | Self::Handle(failure) => failure,
        }
    }

    /// Whether the call was refused memory the tenant's other instances hold.
    pub(crate) fn is_memory_quota(&self) -> bool {
        matches!(self, Self::Handle(HandlerFailure::TenantMemoryQuota { .. }))
    }
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(failure) => write!(f, "no instance could start: {failure}"),
            Self::Handle(failure) => failure.fmt(f),
        }
    }
}

/// Starts an instance if there is none, then hands it the message: in place for the call's
/// first slice, then on the node's guest threads if it needs more ([`GuestThreads::run`]). When
/// no turn is free, the call waits for its turn in a task of its own, not in the partition's
/// (see `host::fairness`). A built-in handler answers in place.
///
/// A handler that keeps `state` is called once its partition's state is read; a message whose
/// changes the state holds already (a redelivery of one that was applied, but whose ack was
/// lost) is acknowledged without a call: its outputs were stored before its changes.
pub(crate) async fn call_handler(
    instance: Option<HandlerInstance>,
    deployment: SharedDeployment,
    guests: Arc<GuestThreads>,
    input: Message,
    state: Option<Arc<PartitionState>>,
) -> CallResult {
    if let Some(state) = &state {
        if let Err(error) = state.load().await {
            let failure = HandlerFailure::StateUnavailable(format!("{error:#}"));
            return (instance, Err(CallFailure::Start(failure)));
        }
        if state
            .applied()
            .is_some_and(|applied| applied >= input.stream_seq)
        {
            tracing::debug!(
                stream_seq = input.stream_seq,
                "its changes are in the state already; acknowledging it without a call"
            );
            let applied = Handled {
                outcome: Outcome::Ack,
                outputs: Vec::new(),
                writes: Default::default(),
                refused_writes: Default::default(),
            };
            return (instance, Ok(applied));
        }
    }
    // The warm instance, or the version to start one from.
    let warm = match (&deployment.code, instance) {
        (HandlerCode::Builtin(builtin), instance) => return (instance, Ok(builtin.handle(&input))),
        (HandlerCode::Wasm(_), Some(instance)) => Ok(instance),
        (HandlerCode::Wasm(version), None) => Err(version.clone()),
    };
    // The call's first turn is claimed here, before it runs: see `host::fairness`.
    let first = deployment.context.budget.claim();
    let context = deployment.context.clone();
    let call = move |first: Option<Turn>| {
        async move {
            let first = first.map(Claim::Turn);
            let (mut instance, first) = match warm {
                Ok(instance) => (instance, first),
                Err(version) => {
                    let partition = Some(input.partition);
                    match HandlerInstance::start_on(&version, context, first, partition).await {
                        Ok(instance) => (instance, None),
                        Err(failure) => return (None, Err(CallFailure::Start(failure))),
                    }
                }
            };
            let result = instance.handle_on(&input, first, state).await;
            (Some(instance), result.map_err(CallFailure::Handle))
        }
        .instrument(tracing::Span::current())
    };
    let call = match first {
        Claim::Turn(turn) => guests.run(call(Some(turn))).await,
        // The place was taken now, so that the guests holding the turns yield at once; the
        // call waits for its turn in a task of its own, which runs as soon as it is handed one.
        Claim::Place(place) => {
            let waiting = async move { guests.run(call(place.turn().await)).await };
            match tokio::spawn(waiting.in_current_span()).await {
                Ok(ran) => ran,
                Err(error) => Err(error),
            }
        }
    };
    match call {
        Ok((instance, Ok(handled))) => (instance, Ok(handled)),
        // A failed call's instance is not used again.
        Ok((_, Err(failure))) => (None, Err(failure)),
        Err(error) => (
            None,
            Err(CallFailure::Handle(HandlerFailure::Trap(format!(
                "the call's task did not finish: {error}"
            )))),
        ),
    }
}

/// The handler's view of a delivered message, on weir's `attempt` at it.
pub(crate) fn to_input(delivery: &Delivery, stream: &str, attempt: u32) -> anyhow::Result<Message> {
    let message = &delivery.message;
    let (partition, subject) = partition::split_subject(&message.subject).with_context(|| {
        format!(
            "subject {:?} does not start with a partition number",
            message.subject
        )
    })?;
    let headers = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .flat_map(|(name, values)| {
            values.iter().map(move |value| Header {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect();
    Ok(Message {
        subject: subject.to_owned(),
        payload: message.payload.to_vec(),
        headers,
        stream: stream.to_owned(),
        stream_seq: delivery.stream_seq,
        partition,
        delivery_attempt: attempt,
        published_at: delivery.published_at,
    })
}

/// The attempts weir has already made at a message, by its failure record: a previous holder's
/// count, continued across restarts, reclaims and handoffs. Only a message that has been
/// delivered before, or that this worker takes over (its first since it was pinned), can have
/// any; the others start at none without asking.
pub(crate) async fn attempts_made(
    failures: &kv::Store,
    deployment: &SharedDeployment,
    delivery: &Delivery,
    taken_over: bool,
) -> u32 {
    if delivery.delivered <= 1 && !taken_over {
        return 0;
    }
    let spec = &deployment.spec;
    match failures::last(failures, &deployment.id, &spec.stream, delivery.stream_seq).await {
        Ok(Some(failure)) => u32::try_from(failure.delivery).unwrap_or(u32::MAX),
        Ok(None) => 0,
        Err(error) => {
            // Counting from the server's deliveries errs towards fewer attempts, never more.
            tracing::warn!(
                stream_seq = delivery.stream_seq,
                "{error:#}; counting attempts from the server's deliveries"
            );
            u32::try_from(delivery.delivered.saturating_sub(1)).unwrap_or(u32::MAX)
        }
    }
}
