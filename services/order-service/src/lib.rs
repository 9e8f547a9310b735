//! The order service of orderflow.
//!
//! It accepts orders over gRPC and commits each change as an event on the
//! `ORDERS` stream (the event *is* the commit), follows payment results from
//! the `PAYMENTS` stream, fails orders whose payment deadline passed, and
//! answers lists from the stream's own per-subject
//! index. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod settlement;

pub use app::App;
pub use config::Config;
