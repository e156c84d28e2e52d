//! weir's integration suite: one test binary, a module per topic, every NATS test against a
//! real `nats-server` started by [`support::Env`].

// A failed expectation is a failed test here: panicking with a message is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capacity;
mod cli;
mod cluster;
mod conformance;
mod console;
mod containment;
mod control_plane;
mod dlq;
mod faults;
mod fleet;
mod go_guests;
mod host;
mod hostile;
mod js_guests;
mod lifecycle;
mod observe;
mod order;
mod outcomes;
mod outputs;
mod proxy;
mod py_guests;
mod redeploy;
mod state;
mod support;
mod templates;
mod tenant_rights;
