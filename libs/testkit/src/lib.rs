//! Dev-only helpers for orderflow's tests: real parts, no mocks.
//!
//! - [`NatsServer`] starts a real `nats-server` with JetStream on a free
//!   loopback port with its own temporary store (or uses the server named by
//!   `ORDERFLOW_TEST_NATS_URL`), or one with a given configuration (users and
//!   permissions), can kill and restart it for fault tests, and cleans up on
//!   drop.
//! - [`NatsCluster`] starts three routed `nats-server` nodes with JetStream
//!   on loopback, each with its own store, and kills and restarts single
//!   nodes, for tests that lose a stream's leader.
//! - [`event_table`] checks a service's table of event messages against
//!   the proto contract.
//! - [`otlp`] is a real OTLP receiver (gRPC and HTTP) that keeps what the
//!   services export.
//! - [`pki`] generates a throwaway CA with server and client certificates
//!   for TLS and mutual-TLS tests.
//! - [`process`] runs a service binary as a child, for signal and exit-code
//!   tests.
//! - [`streams`] reads what was committed to JetStream, headers included.
//! - [`wait_until`] polls a condition with a deadline, so tests never sleep
//!   for a fixed time.
//!
//! It knows no service: the services' own tests use it, and the end-to-end
//! tests that spawn both services live in `orderflow-e2e` (`tests/e2e`).
//! Only test code depends on this crate (as a `[dev-dependencies]` entry);
//! its helpers panic on failure because a panic is how a test fails.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cluster;
pub mod event_table;
pub mod nats;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod streams;
pub mod wait;

pub use cluster::NatsCluster;
pub use nats::NatsServer;
pub use wait::wait_until;
