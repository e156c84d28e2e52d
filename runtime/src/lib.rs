//! weir: a WebAssembly stream-processing runtime for NATS JetStream.
//!
//! A node follows the deployments stored in NATS and, for every partition it owns, runs one
//! worker that feeds the partition's messages, one at a time and in stream order, to a warm
//! instance of the deployment's handler component, with a window of messages in flight:
//!
//! ```text
//! weir_deployments (KV) ──► registry ──► one PartitionWorker per owned partition
//!                                          │  pull (MaxAckPending W) from weir_<t>_<h>_p<NNN>
//!                                          │  HandlerInstance::handle(message) -> outcome + outputs
//!                                          │  ack:    store outputs (Nats-Msg-Id) in input order,
//!                                          │          then +ACK; the next message is handled meanwhile
//!                                          │  retry:  hold the message (and all behind it), call again
//!                                          │  reject: +TERM <reason>
//!                                          └  failure (trap, deadline, memory): new instance, retry
//! ```
//!
//! Where things live, by lifecycle stage:
//! - per node: [`node`] (connection, engine, counters), [`host::Host`] (engine and linker);
//! - per deployment: [`spec`] (the stored spec and the one validation `weir deploy` and every
//!   node apply to it), [`deployment`] (a spec joined with its compiled version, or a
//!   [`builtin`] handler for `weir bench`), the registry;
//! - per partition: the worker, started again by its supervisor if it panics, and its
//!   [`host::HandlerInstance`].
//!
//! Nodes share the work through NATS alone: [`ownership`] keeps the live nodes in a KV bucket
//! under per-key TTLs and gives every partition one owner among those able to run it, and each
//! partition consumer's pinned-client priority group keeps delivery exclusive while nodes
//! disagree; [`node`] runs the partitions placed on this node under supervision, and [`status`]
//! reads it all back for `weir status`.
//!
//! The control plane is NATS itself ([`control`] names all of it), and no handler reaches it: [`outputs`]
//! decides where a handler may publish and with which headers. Partitioned streams are
//! described in [`partition`]; [`deploy`] validates and activates handler versions, and
//! [`lifecycle`] pauses, resumes, rolls back and removes them; [`logs`] carries the handlers' log
//! lines to `weir logs`. [`cli`] is the `weir` command line (the demo, the benchmark and the
//! dead-letter commands among it), which no other module uses; [`traffic`] publishes test
//! traffic for it, and [`terminal`] is what it prints with.

pub mod builtin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod control;
pub mod deploy;
pub mod deployment;
pub mod dlq;
pub mod embedded;
pub mod failures;
pub mod host;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod outputs;
pub mod ownership;
pub mod partition;
pub mod spec;
pub mod state;
pub mod status;
pub mod subject;
pub mod tenants;
pub mod terminal;
pub mod traffic;
mod worker;
