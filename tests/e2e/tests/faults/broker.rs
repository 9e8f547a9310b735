//! The broker lost under load: the single `nats-server` killed and
//! restarted, and the cluster node that leads `ORDERS` killed.

use super::*;

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
