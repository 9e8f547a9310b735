//! Two replicas of each service sharing their consumers, never doubling an
//! effect.

use super::*;

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
