//! The payment service of orderflow.
//!
//! It consumes order events from the `ORDERS` stream, charges (or refunds)
//! through the payment gateway behind a timeout, bounded retries and a
//! circuit breaker, and commits each payment change as an event on the
//! `PAYMENTS` stream. A list projection lives in the `PAYMENT_VIEWS` KV
//! bucket. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod breaker;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod gateway;
pub mod grpc;
pub mod metrics;
pub mod orders;
pub mod projection;

pub use app::App;
pub use config::Config;
