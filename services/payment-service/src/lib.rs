//! The payment service of orderflow.
//!
//! It consumes order events from the `ORDERS` stream, charges (or refunds)
//! through the payment gateway behind a timeout, bounded retries and a
//! circuit breaker, and commits each payment change as an event on the
//! `PAYMENTS` stream, whose per-subject index also answers its lists. See
//! ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod breaker;
pub mod charging;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod gateway;
pub mod grpc;
pub mod http_gateway;
pub mod metrics;

pub use app::App;
pub use config::Config;
