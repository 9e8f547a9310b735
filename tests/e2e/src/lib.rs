//! orderflow's end-to-end tests: both services, in-process or as binaries,
//! against a real `nats-server`, over real gRPC. The test files are under
//! `tests/`; this library holds what they share that knows the services.
//!
//! - [`services`] spawns the order and payment services in this process on
//!   port 0, with gRPC clients and helpers that wait for an order's status.
//!
//! The harness that knows no service (nats-server, cluster, OTLP receiver,
//! PKI, child processes, waits) is `orderflow-testkit`. The services' binary
//! tests also take [`services`] from here (a dev-dependency), to run the
//! other service in-process for a saga. Nothing but `cargo test` builds this
//! crate: it is a workspace member, not a default member, so a release build
//! never compiles it. Its helpers panic on failure because a panic is how a
//! test fails.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod services;

#[cfg(test)]
mod event_table_checks;
