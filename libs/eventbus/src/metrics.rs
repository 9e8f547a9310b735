//! The metrics of the event plumbing and the gRPC edge.
//!
//! Instruments are created once, from the global meter provider that
//! telemetry installs before anything runs; without an OTLP endpoint the
//! provider is the no-op one and recording costs next to nothing. Names and
//! units follow the OpenTelemetry semantic conventions where they exist
//! (`rpc.server.call.duration`, `messaging.client.operation.duration`,
//! `messaging.process.duration`) and carry an `orderflow.` prefix where they
//! do not. Attributes never carry ids (subjects name aggregates), only
//! streams, consumers, event types, methods and outcomes, so cardinality
//! stays bounded.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram, ObservableGauge},
};

/// Every instrument of this crate.
pub struct Metrics {
    /// `rpc.server.call.duration`, seconds, by method and status.
    pub rpc_duration: Histogram<f64>,
    /// `messaging.client.operation.duration`, seconds, for publishes.
    pub publish_duration: Histogram<f64>,
    /// `messaging.process.duration`, seconds, for handled messages.
    pub process_duration: Histogram<f64>,
    /// `orderflow.messaging.redeliveries`: deliveries after the first.
    pub redeliveries: Counter<u64>,
    /// `orderflow.messaging.dead_letters`: messages dead-lettered.
    pub dead_letters: Counter<u64>,
    _backlog: [ObservableGauge<u64>; 2],
}

/// Consumer backlog last read from JetStream, by (stream, consumer):
/// (pending, ack pending).
type Backlog = HashMap<(String, String), (u64, u64)>;

static BACKLOG: Mutex<Option<Backlog>> = Mutex::new(None);

/// Records the backlog of a consumer, read from its consumer info.
pub fn record_backlog(stream: &str, consumer: &str, pending: u64, ack_pending: u64) {
    let mut backlog = BACKLOG.lock().unwrap_or_else(|p| p.into_inner());
    backlog.get_or_insert_with(HashMap::new).insert(
        (stream.to_owned(), consumer.to_owned()),
        (pending, ack_pending),
    );
}

fn observe_backlog(pick: fn(&(u64, u64)) -> u64) -> Vec<(u64, [KeyValue; 3])> {
    let backlog = BACKLOG.lock().unwrap_or_else(|p| p.into_inner());
    backlog
        .iter()
        .flatten()
        .map(|((stream, consumer), value)| {
            (
                pick(value),
                [
                    KeyValue::new("messaging.system", "nats"),
                    KeyValue::new("messaging.destination.name", stream.clone()),
                    KeyValue::new("messaging.consumer.group.name", consumer.clone()),
                ],
            )
        })
        .collect()
}

/// The instruments, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("orderflow");
        // Boundaries in seconds, from 0.5 ms to 10 s: where RPCs, publishes
        // and handlers of this system actually fall.
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Metrics {
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of gRPC calls served")
                .with_boundaries(buckets.clone())
                .build(),
            publish_duration: meter
                .f64_histogram("messaging.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of acknowledged JetStream publishes")
                .with_boundaries(buckets.clone())
                .build(),
            process_duration: meter
                .f64_histogram("messaging.process.duration")
                .with_unit("s")
                .with_description("Duration of handling one consumed message")
                .with_boundaries(buckets)
                .build(),
            redeliveries: meter
                .u64_counter("orderflow.messaging.redeliveries")
                .with_unit("{message}")
                .with_description("Messages delivered again after a failure or an expired ack wait")
                .build(),
            dead_letters: meter
                .u64_counter("orderflow.messaging.dead_letters")
                .with_unit("{message}")
                .with_description("Messages moved to the DEADLETTERS stream")
                .build(),
            _backlog: [
                meter
                    .u64_observable_gauge("orderflow.consumer.pending")
                    .with_unit("{message}")
                    .with_description("Messages of the stream not yet delivered to the consumer")
                    .with_callback(|observer| {
                        for (value, attributes) in observe_backlog(|b| b.0) {
                            observer.observe(value, &attributes);
                        }
                    })
                    .build(),
                meter
                    .u64_observable_gauge("orderflow.consumer.ack_pending")
                    .with_unit("{message}")
                    .with_description("Messages delivered to the consumer and not yet acknowledged")
                    .with_callback(|observer| {
                        for (value, attributes) in observe_backlog(|b| b.1) {
                            observer.observe(value, &attributes);
                        }
                    })
                    .build(),
            ],
        }
    })
}

/// Seconds of a duration, as histograms record them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
