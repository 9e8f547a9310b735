//! The clients of a run: CreateOrder at a steady rate over both order
//! replicas, a share of them cancelled soon after, and the record of what
//! each call was answered, which the checker holds the history to.
//!
//! A client retries a failed call as a real one does: the same
//! `request_id` (so the same order) on the other replica. What was answered
//! OK is acknowledged; what never was may exist or not, and is checked only
//! if it does.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// The 99th percentile of `latencies` (milliseconds), `None` when empty.
pub fn p99(latencies: &mut [f64]) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_by(f64::total_cmp);
    let rank = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies.get(rank).copied()
}

use orderflow_gateway_sim::knobs::Rng;
use orderflow_proto::{
    money::v1::Money,
    order::v1::{
        CancelOrderRequest, CreateOrderRequest, OrderItem, order_service_client::OrderServiceClient,
    },
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

/// Attempts per call, alternating replicas.
const ATTEMPTS: usize = 4;
/// The deadline of one attempt.
const DEADLINE: Duration = Duration::from_secs(5);

/// The pause after failed attempt `attempt` (from 0): doubling from 250 ms,
/// as a client that backs off does, so four attempts span about 2 s of
/// pauses besides their own time.
fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(250 << attempt.min(4))
}

/// One CreateOrder as the client saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Create {
    /// The idempotency key: one order per customer and request id.
    pub request_id: String,
    /// The customer.
    pub customer_id: String,
    /// Answered OK (on some attempt).
    pub acked: bool,
    /// The order id the answer named.
    pub order_id: Option<String>,
    /// The last error, when no attempt was answered OK.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: usize,
    /// When the first attempt was sent, in seconds from the start of the load.
    pub sent_at: f64,
    /// How long the answered attempt took, in milliseconds.
    pub latency_ms: Option<f64>,
}

/// One CancelOrder as the client saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Cancel {
    /// The order.
    pub order_id: String,
    /// Answered OK.
    pub acked: bool,
    /// Refused because the order was already final (`FAILED_PRECONDITION`).
    pub refused: bool,
    /// The last error otherwise.
    pub error: Option<String>,
}

/// Everything the clients were answered.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Every CreateOrder.
    pub creates: Vec<Create>,
    /// Every CancelOrder.
    pub cancels: Vec<Cancel>,
}

/// The clients' knobs.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Orders per second.
    pub rate: f64,
    /// Fraction of acknowledged orders cancelled soon after.
    pub cancel_share: f64,
    /// Fraction of orders above the gateway's decline threshold.
    pub decline_share: f64,
}

/// Sends orders until `stop` fires, then waits for the calls in flight.
pub async fn run(
    endpoints: Vec<String>,
    seed: u64,
    shape: Shape,
    stop: CancellationToken,
) -> Result<History, tonic::transport::Error> {
    let mut clients = Vec::new();
    for endpoint in endpoints {
        // Lazy: a replica that is down now is dialled again on the next call.
        let channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect_lazy();
        clients.push(OrderServiceClient::new(channel));
    }
    let history = Arc::new(Mutex::new(History::default()));
    let mut rng = Rng::new(seed ^ 0x6c6f_6164);
    let mut tasks = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / shape.rate.max(0.1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let request = order(seed, n, &mut rng, shape.decline_share);
        let cancel_after = rng
            .chance(shape.cancel_share)
            .then(|| Duration::from_millis(rng.next_u64() % 1_500));
        let first = usize::try_from(n).unwrap_or(0) % clients.len().max(1);
        let (clients, history) = (clients.clone(), history.clone());
        let sent_at = started.elapsed().as_secs_f64();
        tasks.spawn(async move {
            let mut create = create(&clients, first, request).await;
            create.sent_at = sent_at;
            let order_id = create.order_id.clone();
            lock(&history).creates.push(create);
            if let (Some(order_id), Some(after)) = (order_id, cancel_after) {
                tokio::time::sleep(after).await;
                let cancel = cancel(&clients, first + 1, order_id).await;
                lock(&history).cancels.push(cancel);
            }
        });
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
    let history = lock(&history).clone();
    Ok(history)
}

fn lock(history: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Order `n` of the run: one of 40 customers, one to three items in USD,
/// some above the decline threshold (10 000.00).
fn order(seed: u64, n: u64, rng: &mut Rng, decline_share: f64) -> CreateOrderRequest {
    let units = if rng.chance(decline_share) {
        20_000
    } else {
        1 + i64::try_from(rng.next_u64() % 500).unwrap_or(1)
    };
    let nanos = if rng.chance(0.5) { 500_000_000 } else { 0 };
    CreateOrderRequest {
        customer_id: format!("nem-c{}", n % 40),
        items: vec![OrderItem {
            sku: format!("sku-{}", n % 7),
            quantity: 1 + i32::try_from(rng.next_u64() % 3).unwrap_or(0),
            unit_price: Some(Money {
                currency_code: String::from("USD"),
                units,
                nanos,
            }),
        }],
        request_id: format!("nem-{seed}-{n}"),
    }
}

async fn create(
    clients: &[OrderServiceClient<Channel>],
    first: usize,
    request: CreateOrderRequest,
) -> Create {
    let mut record = Create {
        request_id: request.request_id.clone(),
        customer_id: request.customer_id.clone(),
        acked: false,
        order_id: None,
        error: None,
        attempts: 0,
        sent_at: 0.0,
        latency_ms: None,
    };
    for attempt in 0..ATTEMPTS {
        let mut client = clients[(first + attempt) % clients.len()].clone();
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(DEADLINE);
        record.attempts += 1;
        let sent = std::time::Instant::now();
        match client.create_order(call).await {
            Ok(response) => {
                record.latency_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
                record.acked = true;
                record.order_id = response.into_inner().order.map(|o| o.order_id);
                record.error = None;
                return record;
            }
            Err(status) => {
                record.error = Some(format!("{:?}: {}", status.code(), status.message()));
                if status.code() == Code::InvalidArgument {
                    return record;
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    record
}

async fn cancel(clients: &[OrderServiceClient<Channel>], first: usize, order_id: String) -> Cancel {
    let mut record = Cancel {
        order_id: order_id.clone(),
        acked: false,
        refused: false,
        error: None,
    };
    for attempt in 0..ATTEMPTS {
        let mut client = clients[(first + attempt) % clients.len()].clone();
        let mut call = tonic::Request::new(CancelOrderRequest {
            order_id: order_id.clone(),
        });
        call.set_timeout(DEADLINE);
        match client.cancel_order(call).await {
            Ok(_) => {
                record.acked = true;
                record.error = None;
                return record;
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                record.refused = true;
                record.error = Some(status.message().to_owned());
                return record;
            }
            Err(status) => {
                record.error = Some(format!("{:?}: {}", status.code(), status.message()));
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    record
}
