//! The baseline: raw JetStream acked publishes on the same server.
//!
//! Absolute figures on a shared two-core machine drift from run to run, so
//! every figure is also given as a ratio to what the broker alone does in the
//! same run: `in_flight` publishers, each publishing a payload of the size of
//! the run's `OrderCreated` events and awaiting the acknowledgement before
//! the next publish, exactly as the order service awaits each append. The
//! scratch stream mirrors `ORDERS` (file storage, one replica, a 10-minute
//! de-duplication window, direct get), and each message goes to a subject of
//! its own, as each order has one. Nothing else (no headers, no
//! optimistic-concurrency check) is added: this is the ceiling.
//!
//! [`create_scratch_stream`] is also the stream of `bare-order-server`
//! ([`crate::bare_server`]), so the two references write to the same kind of
//! stream as the order service does.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::stats::{ErrorCounts, Latencies, Summary, round3};

/// The scratch stream; deleted before and after use.
pub const STREAM: &str = "BENCH_BASELINE";
/// Its subjects.
const SUBJECTS: &str = "bench.baseline.>";

/// What the baseline measured.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineReport {
    /// Acknowledged publishes per second.
    pub publish_rps: f64,
    /// Publish-to-ack latency.
    pub latency: Summary,
    /// Failed publishes by error kind.
    pub errors: ErrorCounts,
    /// The payload size, bytes.
    pub payload_bytes: usize,
    /// Publishes in flight.
    pub in_flight: usize,
    /// Measured seconds.
    pub duration_s: f64,
}

/// Runs `in_flight` publishers for `warmup + duration` and reports the
/// measured part. The stream is created first and deleted afterwards, also
/// when publishing failed.
pub async fn run(
    client: async_nats::Client,
    in_flight: usize,
    payload_bytes: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<BaselineReport, String> {
    let js = jetstream::new(client);
    create_scratch_stream(&js, STREAM, SUBJECTS).await?;
    let result = publish(&js, in_flight, payload_bytes, warmup, duration).await;
    delete_scratch_stream(&js, STREAM).await;
    Ok(result)
}

/// Creates the scratch stream `name` on `subjects`, configured like `ORDERS`
/// (file storage, one replica, a 10-minute de-duplication window, direct
/// get), after deleting any stream of that name: one left by an interrupted
/// run would hold old messages.
pub async fn create_scratch_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> Result<(), String> {
    let _ = js.delete_stream(name).await;
    js.create_stream(Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        storage: StorageType::File,
        num_replicas: 1,
        duplicate_window: Duration::from_secs(600),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map(drop)
    .map_err(|e| format!("cannot create the scratch stream {name}: {e}"))
}

/// Deletes the scratch stream `name`; a failure is only warned about, as
/// the next [`create_scratch_stream`] deletes it anyway.
pub async fn delete_scratch_stream(js: &jetstream::Context, name: &str) {
    if let Err(e) = js.delete_stream(name).await {
        eprintln!("warning: could not delete the scratch stream {name}: {e}");
    }
}

async fn publish(
    js: &jetstream::Context,
    in_flight: usize,
    payload_bytes: usize,
    warmup: Duration,
    duration: Duration,
) -> BaselineReport {
    let payload = Bytes::from(vec![0x5a; payload_bytes]);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let next = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new((Latencies::new(), ErrorCounts::new(), 0u64)));
    let mut workers = JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (js, payload, next, shared) =
            (js.clone(), payload.clone(), next.clone(), shared.clone());
        workers.spawn(async move {
            let mut latencies = Latencies::new();
            let mut errors = ErrorCounts::new();
            let mut in_window = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let subject = format!("bench.baseline.{}", next.fetch_add(1, Ordering::Relaxed));
                // The first await sends, the second waits for the ack.
                let acked = match js.publish(subject, payload.clone()).await {
                    Ok(ack) => ack.await.map_err(|e| format!("ack: {:?}", e.kind())),
                    Err(e) => Err(format!("publish: {:?}", e.kind())),
                };
                let answered = Instant::now();
                match acked {
                    Ok(_) => {
                        if sent >= measure_from {
                            latencies.record(answered - sent);
                        }
                        if answered >= measure_from && answered <= end {
                            in_window += 1;
                        }
                    }
                    Err(kind) => {
                        *errors.entry(kind).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.0.merge(&latencies);
            for (kind, n) in errors {
                *shared.1.entry(kind).or_default() += n;
            }
            shared.2 += in_window;
        });
    }
    while workers.join_next().await.is_some() {}
    let (latencies, errors, in_window) =
        std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    BaselineReport {
        publish_rps: round3(in_window as f64 / duration.as_secs_f64().max(1e-9)),
        latency: latencies.summary(),
        errors,
        payload_bytes,
        in_flight,
        duration_s: duration.as_secs_f64(),
    }
}
