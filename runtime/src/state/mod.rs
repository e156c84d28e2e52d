//! Per-partition handler state: what a handler keeps with `weir:handler/state` (from `0.2.0`),
//! and how its changes take effect exactly once.
//!
//! ```text
//! KV bucket weir_state_<tenant> (one stream, KV_weir_state_<tenant>, atomic batches allowed)
//!   <handler>.p<NNN>            the partition's marker: the stream sequence of the last message
//!                               whose changes are applied, and the writes of the commit that
//!                               applied them (see `marker`)
//!   <handler>.p<NNN>.<key>      one key of the partition's state, encoded (see `key`)
//! ```
//!
//! A call's writes are buffered by the host and, if the call acks, handed to the partition's
//! [`PartitionState`], where the next calls read them while they wait to be committed. Once the
//! message's outputs are stored, its changes are committed: **the marker is the commit**. It is
//! stored as one message holding the changes, and only if the marker's last revision is the one
//! the worker last wrote or read: a commit from anyone else in between (another node that took
//! the partition, `weir state put`) refuses it, and the worker takes the partition's messages
//! back and reads the state again. A message at or below the marker is acknowledged without
//! calling the handler again: its changes are in, and its outputs were stored before them.
//! Acked messages without outputs that wait one behind the other are committed together, in
//! one marker (which then names the last of them): a commit costs about the same for one message
//! as for many.
//!
//! A marker's writes are carried into the next marker while they are few (a key written by
//! many messages in a row then costs nothing more); past that, they are copied to their keys
//! before the next marker, each write expecting the key's last revision and saying which
//! commit it holds (`Weir-Commit`). Until they are copied the marker's writes are newer than
//! their keys: every reader (the worker loading the
//! partition, `weir state get` and `ls`, `weir status`) applies the marker's writes to the keys
//! that do not hold that commit yet. A copy never stores an older value over a newer one: a key
//! already holding that commit or a later one is left as it is, and an owner that lost the
//! partition finds its keys written and its next marker refused. A commit too large for one
//! message is one atomic batch of the keys and the marker instead, as a repair is.
//!
//! A single message rather than an atomic batch for every commit because nats-server 2.15
//! stages each atomic batch on a single server in a file store of its own and commits a
//! stream's batches one at a time: a batch per commit held the counter benchmark to 0.29 of the
//! same handler without state.
//!
//! One bucket per tenant rather than per deployment: NATS permissions match whole subject
//! tokens, so only a bucket named for the tenant alone can be fenced to it by the server.

mod bucket;
pub(crate) mod key;
mod marker;
mod partition;

pub(crate) use bucket::CommitError;
pub use bucket::{StateBucket, StateEntry, StateLayout, state_bucket};
pub use partition::Refusals;
pub(crate) use partition::{Changes, PENDING_BYTES, PartitionState, Refused, Writes};

/// What a tenant's handlers may keep in state, per partition (the owner of a partition is the
/// only writer of its state, so it can enforce these exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuotas {
    /// Bytes of one value.
    pub max_value_bytes: u64,
    /// Keys of one partition.
    pub max_keys: u64,
    /// Bytes of one partition's keys and values together.
    pub max_bytes: u64,
    /// Keys one call may set or delete (a commit too large for one message is an atomic batch,
    /// which holds at most 1000 messages).
    pub max_writes_per_call: u32,
}

/// The most writes one call (and one commit) may make: a commit too large for one message is
/// one atomic batch of the writes and the marker, and the server takes at most 1000 messages
/// in a batch.
pub const MAX_WRITES_PER_CALL: u32 = 999;

impl Default for StateQuotas {
    fn default() -> Self {
        Self {
            max_value_bytes: 256 << 10,
            max_keys: 100_000,
            max_bytes: 256 << 20,
            max_writes_per_call: 100,
        }
    }
}
