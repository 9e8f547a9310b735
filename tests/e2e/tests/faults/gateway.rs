//! A failing gateway: one failing half its calls, a breaker that trips and
//! closes, and an outage of many breaker cycles.

use super::*;

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
