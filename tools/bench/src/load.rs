//! Sending CreateOrder: closed loop (a fixed number of requests in flight)
//! and open loop (a fixed arrival rate), and what one such phase measured.
//!
//! Closed loop answers "how fast can it go with N in flight"; it cannot show
//! latency under a given load, because a slow answer also slows the next
//! request. Open loop sends on a schedule whatever happens, and measures each
//! latency from the time the request was due ([`crate::schedule`]), so the
//! sweep's latency-versus-throughput curve is honest up to saturation.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use orderflow_proto::{
    money::v1::Money,
    order::v1::{CreateOrderRequest, OrderItem, order_service_client::OrderServiceClient},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    cost::{Sampler, WindowCost},
    saga::{SagaResults, SagaTracker, Window},
    schedule::Schedule,
    secure::{Bearer, Security},
    stats::{ErrorCounts, Latencies, code_name},
};

/// A CreateOrder that has not been answered after this long counts as
/// `DEADLINE_EXCEEDED`; far above any healthy latency, so it only ends calls
/// that hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An open-loop request sent more than this after it was due counts as late
/// (tokio's timer has a 1 ms resolution, and the bench shares two cores with
/// the services).
const LATE_AFTER: Duration = Duration::from_millis(5);

/// A client of the order service, every call carrying the run's bearer
/// token (if any).
pub type Client = OrderServiceClient<InterceptedService<Channel, Bearer>>;

/// Opens `connections` separate HTTP/2 connections to the order service,
/// with the TLS of `security` (if any).
///
/// One tonic `Channel` is one connection; several spread the load over the
/// server's connection tasks the way several clients would. With TLS each
/// makes its own handshake, as separate clients would.
pub async fn connect(
    addr: &str,
    connections: usize,
    security: &Security,
) -> Result<Vec<Client>, String> {
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("--target {addr:?} is not a URL like http://127.0.0.1:50051: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = &security.grpc_tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("the TLS settings (--tls-*) cannot be used: {e}"))?;
    }
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = endpoint.connect().await.map_err(|e| {
            let tls = if security.grpc_tls.is_some() {
                " and the TLS files (--tls-ca-file, --tls-cert-file, --tls-key-file, --tls-domain) right"
            } else {
                " running, and does it serve plaintext (for TLS, an https:// --target and --tls-ca-file)"
            };
            format!("cannot connect to the order service at {addr}: {}; is it{tls}?", error_chain(&e))
        })?;
        clients.push(OrderServiceClient::with_interceptor(
            channel,
            security.bearer.clone(),
        ));
    }
    Ok(clients)
}

/// An error and its sources, e.g. tonic's "transport error" and the TLS
/// alert below it, which alone says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The orders of this run: unique customers and request ids, so a repeated
/// run never hits CreateOrder's idempotency (which would answer without
/// committing anything).
#[derive(Debug)]
pub struct Orders {
    /// `bench-<run>-`; the customer id adds `seq % CUSTOMERS`.
    customer_prefix: String,
    /// The next sequence number; the `request_id` is its decimal form.
    next: AtomicU64,
}

/// Orders are spread over this many customers, as real traffic would be.
const CUSTOMERS: u64 = 16;

impl Orders {
    /// Orders of a run named `run` (any string of `[a-z0-9]`).
    pub fn new(run: &str) -> Self {
        Self {
            customer_prefix: format!("bench-{run}-"),
            next: AtomicU64::new(1),
        }
    }

    /// The prefix every customer id of this run starts with.
    pub fn customer_prefix(&self) -> &str {
        &self.customer_prefix
    }

    /// The next request and its sequence number. One item of 2 × 12.50 EUR:
    /// far below the simulated gateway's decline threshold, so every payment
    /// is authorised.
    pub fn next(&self) -> (u64, CreateOrderRequest) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        (seq, self.request(seq))
    }

    /// The request with sequence number `seq`.
    pub fn request(&self, seq: u64) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_id: format!("{}{}", self.customer_prefix, seq % CUSTOMERS),
            items: vec![OrderItem {
                sku: "BENCH-1".into(),
                quantity: 2,
                unit_price: Some(Money {
                    currency_code: "EUR".into(),
                    units: 12,
                    nanos: 500_000_000,
                }),
            }],
            request_id: seq.to_string(),
        }
    }
}

/// What a phase sends, and for how long.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `concurrency` workers, each sending its next request when the last is
    /// answered.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// Requests due at a fixed rate, at most `max_in_flight` at once.
    Open {
        /// Requests per second.
        schedule: Schedule,
        /// The in-flight cap that bounds memory when the server falls behind.
        max_in_flight: usize,
    },
}

/// How long a phase measures, after its warm-up.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// For this long.
    Time(Duration),
    /// This many requests.
    Count(u64),
}

/// CreateOrder results of one phase, shared by its workers.
#[derive(Debug, Default)]
pub struct CreateStats {
    inner: Mutex<CreateInner>,
    /// Answered calls, warm-up included, for the progress line.
    ok_total: AtomicU64,
    /// Failed calls, warm-up included, for the progress line.
    errors_total: AtomicU64,
}

#[derive(Debug, Default)]
struct CreateInner {
    latencies: Latencies,
    errors: ErrorCounts,
    ok_measured: u64,
    ok_in_window: u64,
    last_measured_answer: Option<Instant>,
}

impl CreateStats {
    fn inner(&self) -> MutexGuard<'_, CreateInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answered calls so far.
    pub fn ok_total(&self) -> u64 {
        self.ok_total.load(Ordering::Relaxed)
    }

    /// Failed calls so far.
    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    fn record(
        &self,
        window: &Window,
        started: Instant,
        answered: Instant,
        measured: bool,
        result: Result<(), tonic::Code>,
    ) {
        let mut inner = self.inner();
        match result {
            Ok(()) => {
                self.ok_total.fetch_add(1, Ordering::Relaxed);
                if measured {
                    inner
                        .latencies
                        .record(answered.saturating_duration_since(started));
                    inner.ok_measured += 1;
                    inner.last_measured_answer = Some(
                        inner
                            .last_measured_answer
                            .map_or(answered, |t| t.max(answered)),
                    );
                }
                if answered >= window.measure_from
                    && window.measure_until.is_none_or(|end| answered <= end)
                {
                    inner.ok_in_window += 1;
                }
            }
            Err(code) => {
                self.errors_total.fetch_add(1, Ordering::Relaxed);
                *inner.errors.entry(code_name(code).to_owned()).or_default() += 1;
            }
        }
    }
}

/// Everything one phase sends with.
pub struct Driver {
    /// One client per connection, used round-robin.
    pub clients: Vec<Client>,
    /// The requests.
    pub orders: Arc<Orders>,
    /// Where answered requests wait for their sagas.
    pub tracker: Arc<SagaTracker>,
    /// Whether answered requests wait for their sagas at all; `false` for
    /// `--create-only`, where nothing completes them and a phase must not
    /// wait for them.
    pub follow_sagas: bool,
    /// Whether the clients use TLS, for the hint of a failed first call.
    pub tls: bool,
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseResult {
    /// The measured window's length, in seconds (see [`PhaseResult::create_rps`]).
    pub window_s: f64,
    /// CreateOrder latencies of measured requests.
    pub create: Latencies,
    /// CreateOrder answers inside the window (duration runs) or all measured
    /// answers (count runs).
    pub create_ok: u64,
    /// CreateOrder throughput, answered calls per second.
    pub create_rps: f64,
    /// Failed calls by gRPC code, warm-up included.
    pub errors: ErrorCounts,
    /// The sagas.
    pub saga: SagaResults,
    /// Completed sagas per second.
    pub saga_rps: f64,
    /// How long the sagas took to finish after the load stopped.
    pub drain_s: f64,
    /// Open loop: requests sent more than 5 ms after they were due.
    pub late: u64,
    /// Open loop: requests due inside the window that were never sent,
    /// because the in-flight cap held the schedule back.
    pub unsent: u64,
    /// Open loop: how often the in-flight cap made the schedule wait.
    pub cap_hits: u64,
    /// What the measured window cost (broker traffic, CPU), when a sampler
    /// was given.
    pub cost: Option<WindowCost>,
}

/// A request's outcome, with the gRPC code of a failure.
async fn create(client: &mut Client, request: CreateOrderRequest) -> Result<(), tonic::Code> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(REQUEST_TIMEOUT);
    client
        .create_order(request)
        .await
        .map(drop)
        .map_err(|status| status.code())
}

impl Driver {
    /// Runs one phase: warm-up, then the measured part, then waits up to
    /// `saga_timeout` for the sagas. `stats` is shared with the progress
    /// line. With a `sampler`, the counters it reads are sampled at the
    /// start and the end of the measured window (for a run of fixed count,
    /// whose end is not known in advance, after its last saga).
    pub async fn run(
        &self,
        mode: Mode,
        warmup: Duration,
        length: Length,
        saga_timeout: Duration,
        stats: Arc<CreateStats>,
        sampler: Option<Arc<Sampler>>,
    ) -> Result<PhaseResult, String> {
        let start = Instant::now();
        let measure_from = start + warmup;
        let window = Window {
            measure_from,
            measure_until: match length {
                Length::Time(d) => Some(measure_from + d),
                Length::Count(_) => None,
            },
        };
        self.tracker.begin_phase(window);
        // Its own task, so that the readings are taken on time whatever the
        // load is doing.
        let sampling = sampler.clone().map(|sampler| {
            tokio::spawn(async move {
                tokio::time::sleep_until(window.measure_from.into()).await;
                let before = sampler.sample().await;
                let after = match window.measure_until {
                    Some(end) => {
                        tokio::time::sleep_until(end.into()).await;
                        Some(sampler.sample().await)
                    }
                    None => None,
                };
                (before, after)
            })
        });
        let open = match mode {
            Mode::Closed { concurrency } => {
                self.closed_loop(concurrency, window, length, &stats).await;
                OpenLoopCounts::default()
            }
            Mode::Open {
                schedule,
                max_in_flight,
            } => {
                self.open_loop(schedule, max_in_flight, start, window, length, &stats)
                    .await?
            }
        };
        // Every request has been answered: from here on only sagas finish.
        let drained = self.tracker.drain(saga_timeout).await;
        let samples = match sampling {
            Some(task) => {
                let (before, after) = task
                    .await
                    .map_err(|e| format!("the sampling task failed: {e}"))?;
                let after = match (after, &sampler) {
                    (Some(after), _) => Some(after),
                    (None, Some(sampler)) => Some(sampler.sample().await),
                    (None, None) => None,
                };
                after.map(|after| (before, after))
            }
            None => None,
        };
        let saga = self.tracker.end_phase();
        let inner = std::mem::take(&mut *stats.inner());
        // Both counts cover the same window as the samples: answers and
        // final events from `measure_from` on, up to `measure_until` (or to
        // the end of a run of fixed count).
        let cost = samples.map(|(before, after)| {
            WindowCost::new(&before, &after, saga.in_window, inner.ok_in_window)
        });

        let (window_s, create_ok, saga_window_s, saga_done) = match length {
            Length::Time(d) => (
                d.as_secs_f64(),
                inner.ok_in_window,
                d.as_secs_f64(),
                saga.in_window,
            ),
            Length::Count(_) => {
                let since = |t: Option<Instant>| {
                    t.map_or(0.0, |t| {
                        t.saturating_duration_since(measure_from).as_secs_f64()
                    })
                };
                (
                    since(inner.last_measured_answer),
                    inner.ok_measured,
                    since(saga.last_measured_end),
                    saga.latencies.len(),
                )
            }
        };
        let per_second = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        Ok(PhaseResult {
            window_s,
            create_rps: per_second(create_ok, window_s),
            create: inner.latencies,
            create_ok,
            errors: inner.errors,
            saga_rps: per_second(saga_done, saga_window_s),
            saga,
            drain_s: drained.as_secs_f64(),
            late: open.late,
            unsent: open.unsent,
            cap_hits: open.cap_hits,
            cost,
        })
    }

    async fn closed_loop(
        &self,
        concurrency: usize,
        window: Window,
        length: Length,
        stats: &Arc<CreateStats>,
    ) {
        let measured_sent = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for worker in 0..concurrency.max(1) {
            let mut client = self.clients[worker % self.clients.len()].clone();
            let (orders, tracker, stats) =
                (self.orders.clone(), self.tracker.clone(), stats.clone());
            let follow_sagas = self.follow_sagas;
            let measured_sent = measured_sent.clone();
            workers.spawn(async move {
                loop {
                    let started = Instant::now();
                    let measured = started >= window.measure_from;
                    match length {
                        Length::Time(_) => {
                            if window.measure_until.is_some_and(|end| started >= end) {
                                break;
                            }
                        }
                        Length::Count(count) => {
                            if measured && measured_sent.fetch_add(1, Ordering::Relaxed) >= count {
                                break;
                            }
                        }
                    }
                    let (seq, request) = orders.next();
                    let result = create(&mut client, request).await;
                    let answered = Instant::now();
                    stats.record(&window, started, answered, measured, result);
                    if result.is_ok() {
                        if follow_sagas {
                            tracker.created(seq, started, measured);
                        }
                    } else {
                        // A server that refuses at once must not turn the
                        // workers into a busy loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn open_loop(
        &self,
        schedule: Schedule,
        max_in_flight: usize,
        start: Instant,
        window: Window,
        length: Length,
        stats: &Arc<CreateStats>,
    ) -> Result<OpenLoopCounts, String> {
        let warmup = window.measure_from - start;
        let last = match length {
            Length::Count(count) => Some(schedule.due_before(warmup) + count),
            Length::Time(_) => None,
        };
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS.min(1 << 30));
        let slots = Arc::new(Semaphore::new(max_in_flight));
        let mut counts = OpenLoopCounts::default();
        let mut index: u64 = 0;
        loop {
            if last.is_some_and(|last| index >= last) {
                break;
            }
            let due = start + schedule.offset(index);
            if window.measure_until.is_some_and(|end| due >= end) {
                break;
            }
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    counts.cap_hits += 1;
                    slots
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|e| format!("in-flight limiter closed: {e}"))?
                }
            };
            let now = Instant::now();
            // Past the end, a request held back (by the cap, or a stalled
            // bench) is not sent any more; one merely woken late by the
            // timer still is.
            if let Some(end) = window.measure_until
                && now >= end
                && now.saturating_duration_since(due) > LATE_AFTER
            {
                counts.unsent = schedule.due_before(end - start).saturating_sub(index);
                break;
            }
            if now.saturating_duration_since(due) > LATE_AFTER {
                counts.late += 1;
            }
            let measured = due >= window.measure_from;
            let mut client = self.clients[(index as usize) % self.clients.len()].clone();
            let (orders, tracker, stats) =
                (self.orders.clone(), self.tracker.clone(), stats.clone());
            let follow_sagas = self.follow_sagas;
            tokio::spawn(async move {
                let (seq, request) = orders.next();
                let result = create(&mut client, request).await;
                // Latency counts from when the request was due, not sent.
                stats.record(&window, due, Instant::now(), measured, result);
                if result.is_ok() && follow_sagas {
                    tracker.created(seq, due, measured);
                }
                drop(permit);
            });
            index += 1;
        }
        // Every request is answered once all the slots are free again.
        let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        drop(
            slots
                .acquire_many(all)
                .await
                .map_err(|e| format!("in-flight limiter closed: {e}"))?,
        );
        Ok(counts)
    }

    /// Sends one order and waits for its saga, to check that both services
    /// and the observation work before anything is measured. Without
    /// `follow_sagas` it only checks that CreateOrder works.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        self.tracker.begin_phase(Window {
            measure_from: start,
            measure_until: None,
        });
        let (seq, request) = self.orders.next();
        let mut client = self.clients[0].clone();
        let mut call = tonic::Request::new(request);
        call.set_timeout(timeout);
        client.create_order(call).await.map_err(|status| {
            let hint = match status.code() {
                tonic::Code::Unauthenticated => {
                    "; the order service authenticates calls: give --token-file, a valid token \
                     of its issuer and audience"
                }
                tonic::Code::PermissionDenied => "; the token's roles do not allow CreateOrder",
                // A TLS 1.3 server checks the client's certificate after
                // the client thinks the handshake is done, so a refused
                // certificate shows here, as a broken connection.
                tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown
                    if self.tls =>
                {
                    "; the order service may have refused the TLS connection: are --tls-ca-file, \
                     --tls-cert-file and --tls-key-file right? (a service with mutual TLS refuses \
                     a client without a certificate of its CA)"
                }
                // Plaintext HTTP/2 to a TLS port ends in a protocol error.
                tonic::Code::Cancelled
                | tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal => {
                    "; does the order service serve plaintext? (for TLS, give an https:// \
                     --target and --tls-ca-file)"
                }
                _ => "",
            };
            format!(
                "the first CreateOrder failed with {}: {}{hint}",
                code_name(status.code()),
                status.message()
            )
        })?;
        if !self.follow_sagas {
            // Nothing completes the saga; the observer may still see the
            // OrderCreated, whose size the baseline publishes.
            self.tracker.end_phase();
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.tracker.created_event_bytes().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            return Ok(());
        }
        self.tracker.created(seq, start, true);
        let waited = self.tracker.drain(timeout).await;
        let results = self.tracker.end_phase();
        if results.unfinished > 0 {
            return Err(format!(
                "the first order's saga did not finish within {:.0} s: is payment-service \
                 running on the same NATS server as order-service and the bench (--nats-url)?",
                waited.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// Open-loop schedule keeping.
#[derive(Clone, Copy, Debug, Default)]
struct OpenLoopCounts {
    late: u64,
    unsent: u64,
    cap_hits: u64,
}
