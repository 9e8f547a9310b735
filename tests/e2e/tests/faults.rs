//! Faults under load: the broker killed and restarted, the payment binary
//! killed mid-work, a gateway failing half its calls (and one failing
//! altogether for many breaker cycles), a cluster losing the node that leads
//! `ORDERS`, and two replicas of each service sharing their consumers. In
//! every case each acknowledged order is confirmed, no order is charged or
//! paid twice, and nothing is dead-lettered.
//!
//! Most services here run with `CONSUMER_ACK_WAIT_SECS=2`, so a message held
//! by a process that died comes back after 2 s instead of 30 s. Nothing here
//! sleeps to order events: the tests wait on conditions, and the deadlines
//! are upper bounds that turn a hang into a failure, except one: a call made
//! while the broker is down must end by the caller's deadline.
//!
//! These tests kill brokers and read whole streams, so each starts its own
//! `nats-server` (or cluster), also when `ORDERFLOW_TEST_NATS_URL` is set:
//! none of them is ever skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use orderflow_e2e::services::{
    order_request, simulated_gateway, spawn_order_service_with, spawn_payment_service,
    spawn_payment_service_with_gateway,
};
use orderflow_eventbus::envelope::headers;
use orderflow_proto::{
    Name,
    order::v1::{
        GetOrderRequest, OrderConfirmed, OrderCreated, OrderStatus,
        order_service_client::OrderServiceClient,
    },
    payment::v1::{PaymentAuthorized, PaymentDeclined},
};
use orderflow_testkit::{
    NatsCluster, NatsServer,
    otlp::OtlpReceiver,
    process::{ServiceProcess, workspace_binary},
    streams::{StoredMessage, consumer_caught_up, jetstream, read_all},
    wait_until,
};
use payment_service::{
    config::SimulatorConfig,
    gateway::{GatewayError, GatewayRequest, GatewayResponse, SimulatedGateway},
};
use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Messages held by a process that died come back after 2 s, not 30 s.
const FAST_ACK_WAIT: (&str, &str) = ("CONSUMER_ACK_WAIT_SECS", "2");

/// The deadline every caller of the load sets on CreateOrder.
const CALL_DEADLINE: Duration = Duration::from_secs(3);

/// How long every order may take to settle once the fault is over.
const SETTLE: Duration = Duration::from_secs(60);

/// The deadline of the calls made while the broker is down: well below the
/// service's own 5 s bound on waiting for JetStream, so a call that ends in
/// time was ended by the caller's deadline.
const DOWN_DEADLINE: Duration = Duration::from_secs(1);

/// How late after [`DOWN_DEADLINE`] such a call may end: generous for a
/// loaded 2-core machine, and still 2 s short of the service's own 5 s.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// A lazily connected channel to `endpoint`.
fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect_lazy()
}

/// Concurrent CreateOrder callers, each with a deadline of [`CALL_DEADLINE`],
/// keeping the ids of the orders whose creation was acknowledged.
struct Load {
    stop: CancellationToken,
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<AtomicU64>,
    callers: JoinSet<()>,
}

impl Load {
    /// Starts `callers` loops, spread over the order service `endpoints`.
    fn start(tag: &str, endpoints: &[String], callers: usize) -> Load {
        let stop = CancellationToken::new();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for caller in 0..callers {
            let mut client = OrderServiceClient::new(channel(&endpoints[caller % endpoints.len()]));
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            let customer = format!("c-{tag}-{caller}");
            let tag = tag.to_owned();
            tasks.spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    i += 1;
                    let mut request = tonic::Request::new(order_request(
                        &customer,
                        1,
                        3,
                        &format!("r-{tag}-{caller}-{i}"),
                    ));
                    request.set_timeout(CALL_DEADLINE);
                    match client.create_order(request).await {
                        Ok(response) => acked
                            .lock()
                            .unwrap()
                            .push(response.into_inner().order.unwrap().order_id),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            // Pace a caller whose calls fail at once (the
                            // broker is down), instead of spinning.
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                            }
                        }
                    }
                }
            });
        }
        Load {
            stop,
            acked,
            failed,
            callers: tasks,
        }
    }

    /// How many creations were acknowledged so far.
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `count` creations in all were acknowledged.
    async fn until_acked(&self, count: usize, why: &str) {
        wait_until(
            &format!("{count} acknowledged orders ({why})"),
            Duration::from_secs(30),
            || async { self.acked() >= count },
        )
        .await;
    }

    /// Stops the callers (letting calls in flight finish) and returns the
    /// acknowledged order ids.
    async fn stop(mut self) -> Vec<String> {
        self.stop.cancel();
        while let Some(done) = self.callers.join_next().await {
            done.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        eprintln!(
            "load: {} orders acknowledged, {} calls failed",
            acked.len(),
            self.failed.load(Ordering::Relaxed)
        );
        acked
    }
}

/// The status a health service reports, or the call's error code.
async fn health(endpoint: &str, service: &str) -> Result<i32, Code> {
    HealthClient::new(channel(endpoint))
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// Waits until every order in `ids` is CONFIRMED, asking `endpoint`.
async fn wait_all_confirmed(endpoint: &str, ids: &[String]) {
    let client = OrderServiceClient::new(channel(endpoint));
    // Orders not seen CONFIRMED yet; each check asks only about those.
    let left = Mutex::new(ids.to_vec());
    wait_until(
        &format!("all {} acknowledged orders to be CONFIRMED", ids.len()),
        SETTLE,
        || async {
            let pending = left.lock().unwrap().clone();
            let mut still = Vec::new();
            for order_id in pending {
                let confirmed = client
                    .clone()
                    .get_order(GetOrderRequest {
                        order_id: order_id.clone(),
                    })
                    .await
                    .is_ok_and(|r| {
                        r.into_inner()
                            .order
                            .is_some_and(|o| o.status == OrderStatus::Confirmed as i32)
                    });
                if !confirmed {
                    still.push(order_id);
                }
            }
            let done = still.is_empty();
            *left.lock().unwrap() = still;
            done
        },
    )
    .await;
}

/// The messages of `stream` whose `ce-type` is `T`.
async fn events_of<T: Name>(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<StoredMessage> {
    read_all(js, stream, ">")
        .await
        .into_iter()
        .filter(|m| m.header("ce-type").as_deref() == Some(T::full_name().as_str()))
        .collect()
}

/// How many `PaymentAuthorized` events each order has in `PAYMENTS`.
async fn authorizations(js: &async_nats::jetstream::Context) -> HashMap<String, usize> {
    let mut per_order = HashMap::new();
    for event in events_of::<PaymentAuthorized>(js, "PAYMENTS").await {
        let order_id = PaymentAuthorized::decode(event.payload.as_slice())
            .unwrap()
            .payment
            .unwrap()
            .order_id;
        *per_order.entry(order_id).or_insert(0) += 1;
    }
    per_order
}

/// Asserts that every order in `ids` has exactly one `PaymentAuthorized`,
/// and that no order at all has more than one.
async fn assert_each_paid_exactly_once(js: &async_nats::jetstream::Context, ids: &[String]) {
    let per_order = authorizations(js).await;
    for order_id in ids {
        assert_eq!(
            per_order.get(order_id).copied().unwrap_or(0),
            1,
            "exactly one PaymentAuthorized for acknowledged order {order_id}"
        );
    }
    let doubled: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "orders paid twice: {doubled:?}");
    assert!(
        events_of::<PaymentDeclined>(js, "PAYMENTS")
            .await
            .is_empty(),
        "no payment was declined"
    );
}

/// Asserts that nothing was dead-lettered: every message was handled.
async fn assert_no_dead_letters(js: &async_nats::jetstream::Context) {
    let dead = read_all(js, "DEADLETTERS", ">").await;
    let reasons: Vec<_> = dead
        .iter()
        .map(|m| {
            (
                m.header(headers::ORIGINAL_SUBJECT),
                m.header(headers::DEAD_LETTER_REASON),
            )
        })
        .collect();
    assert!(dead.is_empty(), "messages were dead-lettered: {reasons:?}");
}

/// Messages of durable `durable` delivered and not yet acknowledged
/// (0 while the consumer does not exist yet).
async fn ack_pending(js: &async_nats::jetstream::Context, stream: &str, durable: &str) -> usize {
    match js.get_stream(stream).await {
        Ok(stream) => stream
            .consumer_info(durable)
            .await
            .map_or(0, |info| info.num_ack_pending),
        Err(_) => 0,
    }
}

/// A payment gateway that counts the calls of one replica and hands them to
/// a gateway all replicas share, so idempotency keys are honoured across
/// replicas as a real gateway would.
#[derive(Clone)]
struct CountingGateway {
    shared: SimulatedGateway,
    calls: Arc<AtomicU64>,
}

impl tower::Service<GatewayRequest> for CountingGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = <SimulatedGateway as tower::Service<GatewayRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.shared.poll_ready(cx)
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.shared.call(request)
    }
}

/// A gateway in front of a shared simulator that can be taken down: while
/// down, every call fails at once with a transient error (and is counted).
#[derive(Clone)]
struct SwitchableGateway {
    shared: SimulatedGateway,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl tower::Service<GatewayRequest> for SwitchableGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = <SimulatedGateway as tower::Service<GatewayRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.shared.poll_ready(cx)
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Err(GatewayError::Transient(String::from("gateway outage")))
            });
        }
        self.shared.call(request)
    }
}

/// A simulated gateway that fails half its calls and answers in 20 ms.
fn flaky_gateway() -> SimulatedGateway {
    SimulatedGateway::new(SimulatorConfig {
        decline_above_units: 10_000,
        latency: Duration::from_millis(20),
        failure_rate: 0.5,
    })
}

/// Resilience settings that trip the breaker on a gateway failing half its
/// calls: it opens on the first call whose three attempts all failed (one
/// call in eight) and lets a probe through after 200 ms.
///
/// Three attempts, not one: with one attempt per delivery, one order in
/// 1024 fails all ten of its deliveries at a failure rate of one half, and
/// is dead-lettered as designed (`max_deliver`). With three, that is one in
/// 10^9, so "every order completes" holds for the test's few dozen orders.
const TRIPPING_BREAKER: [(&str, &str); 3] = [
    ("GATEWAY_MAX_ATTEMPTS", "3"),
    ("GATEWAY_BREAKER_FAILURES", "1"),
    ("GATEWAY_BREAKER_OPEN_MS", "200"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_under_load_loses_no_acknowledged_order_and_both_services_recover() {
    let mut nats = NatsServer::start_own();
    let gateway = simulated_gateway();
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[FAST_ACK_WAIT]).await;
    let services = [orders.endpoint(), payments.endpoint()];
    let load = Load::start("nats-kill", &[orders.endpoint()], 4);
    load.until_acked(20, "before the crash").await;

    nats.kill();
    let serving = Ok(ServingStatus::Serving as i32);
    let not_serving = Ok(ServingStatus::NotServing as i32);
    for endpoint in &services {
        wait_until(
            &format!("{endpoint} to report NOT_SERVING without NATS"),
            Duration::from_secs(10),
            || async { health(endpoint, "").await == not_serving },
        )
        .await;
        assert_eq!(
            health(endpoint, "liveness").await,
            serving,
            "liveness stays SERVING through a broker outage"
        );
    }
    // A call ends with an error by its deadline, and one whose deadline is
    // longer than the service's own bound on waiting for JetStream (5 s) is
    // answered UNAVAILABLE by the service. The outer bound only turns a hang
    // into a failure.
    let client = OrderServiceClient::new(channel(&orders.endpoint()));
    let call = |request_id: &'static str, deadline: Duration| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(order_request("c-down", 1, 1, request_id));
            request.set_timeout(deadline);
            let started = Instant::now();
            let status = tokio::time::timeout(
                deadline + Duration::from_secs(10),
                client.create_order(request),
            )
            .await
            .unwrap_or_else(|_| panic!("CreateOrder hung without NATS ({deadline:?} deadline)"))
            .expect_err("CreateOrder cannot succeed without NATS");
            (status, started.elapsed())
        }
    };
    let ((short, short_took), (long, _)) = tokio::join!(
        call("r-down-short", DOWN_DEADLINE),
        call("r-down-long", Duration::from_secs(15)),
    );
    // tonic reports an expired deadline as CANCELLED ("Timeout expired").
    assert!(
        matches!(
            short.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "CreateOrder without NATS, {DOWN_DEADLINE:?} deadline: {short:?}"
    );
    eprintln!(
        "without NATS, the call with a {DOWN_DEADLINE:?} deadline ended after {short_took:?}: {:?}",
        short.code()
    );
    // Ending only at the service's own 5 s limit would mean the caller's
    // deadline was ignored.
    assert!(
        short_took <= DOWN_DEADLINE + DEADLINE_MARGIN,
        "CreateOrder without NATS with a {DOWN_DEADLINE:?} deadline ended after \
         {short_took:?}, not within {:?}: {short:?}",
        DOWN_DEADLINE + DEADLINE_MARGIN
    );
    assert_eq!(
        long.code(),
        Code::Unavailable,
        "CreateOrder without NATS, 15 s deadline: {long:?}"
    );

    nats.restart();
    for endpoint in &services {
        wait_until(
            &format!("{endpoint} to report SERVING again"),
            Duration::from_secs(30),
            || async { health(endpoint, "").await == serving },
        )
        .await;
    }
    let after_restart = load.acked();
    load.until_acked(after_restart + 20, "after the restart")
        .await;
    let acked = load.stop().await;

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    let js = jetstream(&nats.url()).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;
    for order_id in &acked {
        assert!(gateway.charged(&format!("charge:{order_id}")));
    }

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

/// The variables of one lifetime of the payment binary: its spans go to
/// `receiver` (one receiver per lifetime, so each lifetime's gateway calls
/// are counted apart), every span is sampled whatever the caller's trace
/// flags, and the export queue holds all of them.
fn payment_binary_env(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        FAST_ACK_WAIT,
        ("SIM_LATENCY_MS", "50"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16384"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .chain([("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())])
    .collect()
}

/// `env` as `ServiceProcess::start` takes it.
fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The idempotency keys of the gateway charges a payment binary exported to
/// `receiver`: its `gateway charge` spans whose outcome is `charged`. Each
/// lifetime of the binary has a simulator of its own, so a key repeated
/// within one lifetime is answered from that ledger and charges nothing
/// more: the distinct keys are the charges that lifetime made.
fn charge_keys(receiver: &OtlpReceiver) -> HashSet<String> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.service == "payment-service" && s.name == "gateway charge")
        .filter(|s| {
            s.attributes
                .get("orderflow.gateway.outcome")
                .is_some_and(|o| o == "charged")
        })
        .map(|s| {
            s.attributes
                .get("orderflow.gateway.idempotency_key")
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The order each key in `keys` charges, when it is `charge:<order_id>` of
/// an order in `paid`; the keys that are not go to the error.
fn charged_orders(
    keys: &HashSet<String>,
    paid: &HashSet<String>,
) -> Result<HashSet<String>, Vec<String>> {
    let (good, bad): (Vec<_>, Vec<_>) = keys.iter().partition(|key| {
        key.strip_prefix("charge:")
            .is_some_and(|order_id| paid.contains(order_id))
    });
    if bad.is_empty() {
        Ok(good
            .into_iter()
            .map(|key| key["charge:".len()..].to_owned())
            .collect())
    } else {
        Err(bad.into_iter().cloned().collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_binary_killed_mid_work_and_restarted_pays_every_order_exactly_once() {
    let nats = NatsServer::start_own();
    let binary = workspace_binary("payment-service");
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    let (killed_spans, restarted_spans) = (
        OtlpReceiver::start_grpc().await,
        OtlpReceiver::start_grpc().await,
    );
    let killed_env = payment_binary_env(&killed_spans);
    let mut payments = ServiceProcess::start(&binary, &nats.url(), &borrowed(&killed_env)).await;
    let js = jetstream(&nats.url()).await;
    let load = Load::start("pay-kill", &[orders.endpoint()], 4);
    wait_until(
        "the binary to have payments in flight and 20 charges exported",
        Duration::from_secs(20),
        || async {
            !authorizations(&js).await.is_empty()
                && charge_keys(&killed_spans).len() >= 20
                && ack_pending(&js, "ORDERS", "payment-service-orders").await > 0
        },
    )
    .await;

    payments.kill();
    let held = ack_pending(&js, "ORDERS", "payment-service-orders").await;
    assert!(held > 0, "the binary was killed holding work");
    load.until_acked(load.acked() + 20, "while the payment service is down")
        .await;

    // Only the payment service writes PAYMENTS, and it is down: what is
    // there now is what the killed binary recorded.
    let paid_before_restart: HashSet<String> = authorizations(&js).await.into_keys().collect();
    // A kill also loses the acks of work finished just before it, so
    // JetStream hands orders that are already paid to the restarted binary.
    // Whether this kill caught one between its payment event and its ack is
    // down to timing; copies of a few paid orders' OrderCreated, byte for
    // byte with their ce-id, make it certain. They go to the replay subject
    // of the original, where a repeat reaches the payment service without
    // becoming the order's latest event (a new Nats-Msg-Id only so the
    // stream stores them; the optimistic-concurrency headers stay behind, as
    // a redelivery is not checked again).
    let redelivered: Vec<String> = paid_before_restart.iter().take(5).cloned().collect();
    for order_id in &redelivered {
        let original = read_all(&js, "ORDERS", &format!("orders.*.{order_id}.*"))
            .await
            .into_iter()
            .find(|m| m.header("ce-type").as_deref() == Some(OrderCreated::full_name().as_str()))
            .expect("a paid order has its OrderCreated");
        let mut headers = original.redelivery_headers();
        headers.insert("Nats-Msg-Id", format!("lost-ack-{order_id}").as_str());
        js.publish_with_headers(
            format!("{}.replay", original.subject),
            headers,
            original.payload.clone().into(),
        )
        .await
        .expect("the copy is published")
        .await
        .expect("JetStream stores the copy");
    }

    let restarted_env = payment_binary_env(&restarted_spans);
    let mut payments = ServiceProcess::start(&binary, &nats.url(), &borrowed(&restarted_env)).await;
    load.until_acked(load.acked() + 20, "after the restart")
        .await;
    let acked = load.stop().await;

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    wait_until(
        "the restarted binary to handle every order event, the copies too",
        SETTLE,
        || consumer_caught_up(&js, "ORDERS", "payment-service-orders"),
    )
    .await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;
    // SIGTERM exports every span the restarted binary still holds.
    payments.terminate();
    let status = payments.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the restarted binary exits 0 on SIGTERM"
    );

    // The charges of each lifetime, by order. A SIGKILL loses the spans the
    // killed binary had not exported yet; each payment it recorded is a
    // charge it made, so those count as its charges too.
    let paid: HashSet<String> = authorizations(&js).await.into_keys().collect();
    let paid_after_restart: HashSet<String> =
        paid.difference(&paid_before_restart).cloned().collect();
    let by_restarted = charged_orders(&charge_keys(&restarted_spans), &paid).unwrap_or_else(|bad| {
        panic!("the restarted binary charged under keys that are no paid order's charge:<order_id>: {bad:?}")
    });
    let by_killed = charged_orders(&charge_keys(&killed_spans), &paid).unwrap_or_else(|bad| {
        panic!("the killed binary charged under keys that are no paid order's charge:<order_id>: {bad:?}")
    });
    let exported_by_killed = by_killed.len();
    let by_killed: HashSet<String> = by_killed.union(&paid_before_restart).cloned().collect();

    // The restarted binary charged what it recorded and nothing else: no
    // order the killed one had paid, the copies included.
    let charged_again: Vec<_> = by_restarted.intersection(&paid_before_restart).collect();
    assert!(
        charged_again.is_empty(),
        "the restarted binary charged orders paid before it started \
         (copies of {redelivered:?} were delivered to it): {charged_again:?}"
    );
    assert_eq!(
        by_restarted, paid_after_restart,
        "the restarted binary charged exactly the orders whose payment it recorded"
    );
    // An order charged in both lifetimes was charged by the killed binary,
    // which died before recording it; the restarted one charged it again
    // under the same key, charge:<order_id>, which a real gateway answers
    // with the first charge. Any other order was charged once.
    let recharged: Vec<_> = by_killed.intersection(&by_restarted).collect();
    eprintln!(
        "charges: {} by the killed binary ({exported_by_killed} seen in its spans), {} by the \
         restarted one, {} of them again under the same key (charged, not recorded, before \
         the kill), {} orders paid",
        by_killed.len(),
        by_restarted.len(),
        recharged.len(),
        paid.len()
    );
    assert_eq!(
        by_killed.len() + by_restarted.len(),
        paid.len() + recharged.len(),
        "one charge per paid order across both lifetimes, plus the charges the kill \
         left unrecorded, repeated under the same key: {recharged:?}"
    );

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_failing_half_its_calls_still_charges_every_order_exactly_once() {
    let nats = NatsServer::start_own();
    let gateway = flaky_gateway();
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    let mut env = TRIPPING_BREAKER.to_vec();
    env.push(FAST_ACK_WAIT);
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &env).await;
    let load = Load::start("flaky", &[orders.endpoint()], 2);
    load.until_acked(30, "against a flaky gateway").await;
    let acked = load.stop().await;

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    let js = jetstream(&nats.url()).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;
    assert_eq!(
        gateway.stats().charges,
        acked.len() as u64,
        "one charge per order, however often the gateway failed"
    );
    assert!(
        gateway.stats().calls > acked.len() as u64,
        "the gateway failed some calls, which were retried"
    );

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripping_breaker_opens_and_closes_and_counts_it_in_its_metrics() {
    let receiver = OtlpReceiver::start_grpc().await;
    let nats = NatsServer::start_own();
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    let endpoint = receiver.endpoint();
    let mut env = TRIPPING_BREAKER.to_vec();
    env.extend([
        FAST_ACK_WAIT,
        ("SIM_FAILURE_RATE", "0.5"),
        ("SIM_LATENCY_MS", "20"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ]);
    let payments =
        ServiceProcess::start(&workspace_binary("payment-service"), &nats.url(), &env).await;
    let load = Load::start("breaker", &[orders.endpoint()], 2);
    // Sixty calls: the breaker stays closed through all of them once in
    // 3000 runs, (7/8)^60.
    load.until_acked(60, "against a flaky gateway").await;
    let acked = load.stop().await;

    let transitions = |state: &'static str| {
        receiver.max_value(
            "payment-service",
            "orderflow.gateway.breaker.transitions",
            "orderflow.breaker.state",
            state,
        )
    };
    wait_until(
        "the breaker's transitions to open and to closed in the metrics",
        SETTLE,
        || async { transitions("open").is_some() && transitions("closed").is_some() },
    )
    .await;
    assert!(transitions("open").unwrap() >= 1.0);
    assert!(transitions("closed").unwrap() >= 1.0);

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    let js = jetstream(&nats.url()).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;

    drop(payments);
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_node_that_leads_orders_loses_no_acknowledged_order() {
    let mut cluster = NatsCluster::start();
    let gateway = simulated_gateway();
    let env = [FAST_ACK_WAIT, ("STREAM_REPLICAS", "3")];
    let orders = spawn_order_service_with(&cluster.url(), &env).await;
    let payments = spawn_payment_service(&cluster.url(), gateway.clone(), &env).await;
    let load = Load::start("leader", &[orders.endpoint()], 4);
    load.until_acked(20, "before the node goes").await;

    // The node to lose is the order service's own server, made the leader
    // of ORDERS: its appends lose the stream's leader and their connection
    // at once, and the service has to follow the cluster through its URL
    // list to another node.
    let found = Mutex::new(None);
    wait_until(
        "the order service to be connected to a node",
        Duration::from_secs(10),
        || async {
            *found.lock().unwrap() = cluster.client_node("order-service");
            found.lock().unwrap().is_some()
        },
    )
    .await;
    let doomed = found.into_inner().unwrap().unwrap();
    cluster.move_stream_leader("ORDERS", doomed).await;
    cluster.kill(doomed);
    wait_until(
        "ORDERS to elect a leader among the two nodes left",
        Duration::from_secs(30),
        || async {
            cluster
                .stream_leader("ORDERS")
                .await
                .is_some_and(|l| l != doomed)
        },
    )
    .await;
    let after_kill = load.acked();
    load.until_acked(after_kill + 20, "after the node went")
        .await;
    let acked = load.stop().await;
    let now_on = cluster.client_node("order-service");
    assert!(
        now_on.is_some_and(|n| n != doomed),
        "the order service reconnected to a node left (it is on {now_on:?})"
    );

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    let js = jetstream(&cluster.running_url()).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_no_dead_letters(&js).await;
    for order_id in &acked {
        assert!(gateway.charged(&format!("charge:{order_id}")));
    }

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_service_share_the_work_and_never_double_an_effect() {
    let nats = NatsServer::start_own();
    let shared = SimulatedGateway::new(SimulatorConfig {
        decline_above_units: 10_000,
        latency: Duration::from_millis(5),
        failure_rate: 0.0,
    });
    let first_calls = Arc::new(AtomicU64::new(0));
    let second_calls = Arc::new(AtomicU64::new(0));
    let gateway = |calls: &Arc<AtomicU64>| CountingGateway {
        shared: shared.clone(),
        calls: calls.clone(),
    };
    let orders_a = spawn_order_service_with(&nats.url(), &[]).await;
    let orders_b = spawn_order_service_with(&nats.url(), &[]).await;
    let payments_a =
        spawn_payment_service_with_gateway(&nats.url(), gateway(&first_calls), &[]).await;
    let payments_b =
        spawn_payment_service_with_gateway(&nats.url(), gateway(&second_calls), &[]).await;
    let load = Load::start("replicas", &[orders_a.endpoint(), orders_b.endpoint()], 4);
    load.until_acked(80, "across two order replicas").await;
    let acked = load.stop().await;

    wait_all_confirmed(&orders_a.endpoint(), &acked).await;
    let js = jetstream(&nats.url()).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_eq!(
        shared.stats().charges,
        acked.len() as u64,
        "one charge per order at the shared gateway"
    );
    let mut confirmed: HashMap<String, usize> = HashMap::new();
    for event in events_of::<OrderConfirmed>(&js, "ORDERS").await {
        // orders.<customer>.<order_id>.confirmed
        let order_id = event
            .subject
            .split('.')
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        *confirmed.entry(order_id).or_insert(0) += 1;
    }
    for order_id in &acked {
        assert_eq!(
            confirmed.get(order_id).copied(),
            Some(1),
            "exactly one OrderConfirmed for {order_id}"
        );
    }
    let (first, second) = (
        first_calls.load(Ordering::Relaxed),
        second_calls.load(Ordering::Relaxed),
    );
    eprintln!("gateway calls: first replica {first}, second replica {second}");
    assert!(
        first > 0 && second > 0,
        "both payment replicas took work: {first} and {second} gateway calls"
    );
    assert_eq!(first + second, acked.len() as u64, "no call was repeated");

    payments_b.stop().await.unwrap();
    payments_a.stop().await.unwrap();
    orders_b.stop().await.unwrap();
    orders_a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_outage_of_many_breaker_cycles_delays_orders_but_dead_letters_none() {
    let nats = NatsServer::start_own();
    let shared = simulated_gateway();
    let gateway = SwitchableGateway {
        shared: shared.clone(),
        down: Arc::new(AtomicBool::new(true)),
        refused: Arc::new(AtomicU64::new(0)),
    };
    let orders = spawn_order_service_with(&nats.url(), &[FAST_ACK_WAIT]).await;
    // Deliveries are what an outage must not use up: a message may wait for
    // the breaker for half the ack wait, here 5 s, before it costs one.
    let env = [
        ("CONSUMER_ACK_WAIT_SECS", "10"),
        ("GATEWAY_MAX_ATTEMPTS", "1"),
        ("GATEWAY_BREAKER_FAILURES", "1"),
        ("GATEWAY_BREAKER_OPEN_MS", "100"),
    ];
    let payments = spawn_payment_service_with_gateway(&nats.url(), gateway.clone(), &env).await;
    let load = Load::start("outage", &[orders.endpoint()], 2);
    load.until_acked(20, "while the gateway is down").await;
    let acked = load.stop().await;

    // Each refused call is one breaker cycle: open, half-open, a failed
    // probe, open again. Twice as many cycles as a message has deliveries.
    wait_until(
        "twenty breaker cycles against the dead gateway",
        Duration::from_secs(30),
        || async { gateway.refused.load(Ordering::SeqCst) >= 20 },
    )
    .await;
    gateway.down.store(false, Ordering::SeqCst);

    wait_all_confirmed(&orders.endpoint(), &acked).await;
    let js = jetstream(&nats.url()).await;
    assert_no_dead_letters(&js).await;
    assert_each_paid_exactly_once(&js, &acked).await;
    assert_eq!(shared.stats().charges, acked.len() as u64);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
