//! Handlers built into the node in native code, for measuring weir without Wasm.
//!
//! A deployment whose artifact is named `builtin:<name>` runs the built-in handler of that
//! name instead of a component, on a node started with [`crate::node::NodeConfig::builtin_handlers`].
//! Nothing else differs: the same placement, consumers, partition workers, acks and counters.
//! Only `weir bench` starts such nodes; every other node refuses these deployments.

use crate::host::{Handled, Message, Outcome};

/// The prefix of an artifact name that names a built-in handler.
pub const ARTIFACT_PREFIX: &str = "builtin:";

/// A handler in native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Acknowledges every message and publishes nothing, like `examples/noop`.
    Noop,
}

impl Builtin {
    /// The built-in handler an artifact name stands for, if it names one.
    pub fn from_artifact(artifact: &str) -> Option<Self> {
        match artifact.strip_prefix(ARTIFACT_PREFIX)? {
            "noop" => Some(Self::Noop),
            _ => None,
        }
    }

    /// The artifact name that stands for this handler.
    pub fn artifact(self) -> String {
        match self {
            Self::Noop => format!("{ARTIFACT_PREFIX}noop"),
        }
    }

    /// Answers one message.
    pub fn handle(self, _message: &Message) -> Handled {
        match self {
            Self::Noop => Handled {
                outcome: Outcome::Ack,
                outputs: Vec::new(),
                writes: Default::default(),
                refused_writes: Default::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_builtin_artifact_names_stand_for_builtins() {
        assert_eq!(Builtin::from_artifact("builtin:noop"), Some(Builtin::Noop));
        assert_eq!(
            Builtin::from_artifact(&Builtin::Noop.artifact()),
            Some(Builtin::Noop)
        );
        assert_eq!(Builtin::from_artifact("builtin:orders"), None);
        assert_eq!(Builtin::from_artifact("acme/noop/abc"), None);
    }
}
