//! The payment service's own metrics: gateway calls, the circuit breaker
//! and payments by status. (RPC and messaging metrics come from the shared
//! crates.)
//!
//! A leaf: the modules that record here pass plain values, so the breaker's
//! state reaches its gauge as a number (`BreakerState::gauge_value`) and this
//! module knows no breaker.

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, ObservableGauge},
};

/// The instruments, created on first use.
pub struct Metrics {
    /// `orderflow.gateway.call.duration`, seconds, by operation and outcome.
    pub gateway_duration: Histogram<f64>,
    /// `orderflow.gateway.breaker.transitions`, by the state entered.
    pub breaker_transitions: Counter<u64>,
    /// `orderflow.payments.status_changes`, payments entering each status.
    pub status_changes: Counter<u64>,
}

/// The service's instruments.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("orderflow");
        Metrics {
            gateway_duration: meter
                .f64_histogram("orderflow.gateway.call.duration")
                .with_unit("s")
                .with_description("Duration of payment gateway calls, retries included")
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            breaker_transitions: meter
                .u64_counter("orderflow.gateway.breaker.transitions")
                .with_unit("{transition}")
                .with_description("Circuit breaker state changes, by the state entered")
                .build(),
            status_changes: meter
                .u64_counter("orderflow.payments.status_changes")
                .with_unit("{payment}")
                .with_description("Payments entering each status")
                .build(),
        }
    })
}

/// `orderflow.gateway.breaker.state`: 0 closed, 1 half-open, 2 open.
///
/// The gauge calls `state` whenever metrics are collected; keep the
/// returned handle for as long as the breaker it reads lives.
pub fn breaker_gauge(state: impl Fn() -> u64 + Send + Sync + 'static) -> ObservableGauge<u64> {
    global::meter("orderflow")
        .u64_observable_gauge("orderflow.gateway.breaker.state")
        .with_description("Circuit breaker state: 0 closed, 1 half-open, 2 open")
        .with_callback(move |observer| {
            observer.observe(state(), &[KeyValue::new("orderflow.gateway", "payment")]);
        })
        .build()
}
