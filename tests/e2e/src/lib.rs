//! orderflow's end-to-end tests: both services, in-process or as binaries,
//! against a real `nats-server`, over real gRPC. The test files are under
//! `tests/`; this library holds what they share that knows the services.
//!
//! - [`services`] spawns the order and payment services in this process on
//!   port 0, with gRPC clients and helpers that wait for an order's status.
//!
//! The harness that knows no service (nats-server, cluster, OTLP receiver,
//! PKI, child processes, waits) is `orderflow-testkit`. The tests of the built
//! binaries live here too (`order_binary.rs`, `payment_binary.rs`,
//! `observability.rs`), so no service depends on this crate, not even for its
//! tests. Nothing but `cargo test` builds this
//! crate: it is a workspace member, not a default member, so a release build
//! never compiles it. Its helpers panic on failure because a panic is how a
//! test fails.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod services;

#[cfg(test)]
mod event_table_checks;
