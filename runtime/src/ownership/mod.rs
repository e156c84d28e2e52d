//! Which node runs what: [`membership`] keeps the live nodes in a KV bucket under per-key TTLs
//! (and answers, while this node's connection is up, that it is), and [`placement`] gives every
//! partition of a deployment one owner among the nodes able to run it.

pub mod membership;
pub mod placement;
