//! The payment deadline (`ORDER_PAYMENT_DEADLINE_SECS`): an order whose
//! payment is not decided in time fails, whatever restarts in between; a
//! charge that lands after it is refunded; a paid order's deadline is gone
//! with its confirmation, so it can never fire.

use super::*;
use orderflow_e2e::services::create_order;
use orderflow_proto::{contract::ORDER_PAYMENT_DEADLINE, order::v1::OrderPaymentDeadline};

/// The subject an order's deadline is scheduled on.
fn schedule_subject(customer: &str, order_id: &str) -> String {
    orderflow_eventbus::subject::schedule_subject(
        "orders",
        customer,
        order_id,
        ORDER_PAYMENT_DEADLINE,
    )
}

/// The last message on `subject` in ORDERS, if any.
async fn last_on(
    js: &async_nats::jetstream::Context,
    subject: &str,
) -> Option<async_nats::jetstream::message::StreamMessage> {
    let stream = js.get_stream("ORDERS").await.unwrap();
    stream.get_last_raw_message_by_subject(subject).await.ok()
}

/// Order `order_id` as GetOrder answers it now.
async fn current(
    client: &orderflow_proto::order::v1::order_service_client::OrderServiceClient<
        tonic::transport::Channel,
    >,
    order_id: &str,
) -> orderflow_proto::order::v1::Order {
    client
        .clone()
        .get_order(GetOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// The payments ListPayments answers for `order_id` now.
async fn payments_of(
    payments: &orderflow_e2e::services::RunningService,
    order_id: &str,
) -> Vec<orderflow_proto::payment::v1::Payment> {
    payment_client(payments)
        .await
        .list_payments(ListPaymentsRequest {
            order_id: order_id.to_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().payments)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_fails_at_its_deadline_across_restarts_and_is_never_charged() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let deadline = [("ORDER_PAYMENT_DEADLINE_SECS", "2")];
    // No payment service: nothing decides the payment.
    let orders = spawn_order_service_with(&nats.url(), &deadline).await;
    let created = order_client(&orders)
        .await
        .create_order(order_request("c-deadline", 1, 10, "r-deadline"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    // Acknowledged with its deadline already stored, to fire on its own
    // subject in the same stream.
    let schedule = last_on(&js, &schedule_subject("c-deadline", &created.order_id))
        .await
        .expect("the deadline is scheduled before CreateOrder answers");
    let header = |name: &str| schedule.headers.get(name).map(|v| v.as_str().to_owned());
    assert!(header("Nats-Schedule").is_some_and(|at| at.starts_with("@at ")));
    assert_eq!(
        header("Nats-Schedule-Target").as_deref(),
        Some(
            orderflow_eventbus::subject::fired_subject(
                "orders",
                "c-deadline",
                &created.order_id,
                ORDER_PAYMENT_DEADLINE
            )
            .as_str()
        )
    );
    assert_eq!(header("ce-type"), Some(OrderPaymentDeadline::full_name()));
    // Sent with OrderCreated in one traced send: both carry the context of
    // that send's one PRODUCER span.
    let order_created = last_on(
        &js,
        &format!("orders.c-deadline.{}.created", created.order_id),
    )
    .await
    .expect("the order is stored");
    let traceparent = header("traceparent");
    assert!(traceparent.is_some(), "the schedule carries a traceparent");
    assert_eq!(
        traceparent.as_deref(),
        order_created.headers.get("traceparent").map(|v| v.as_str()),
        "the schedule and its order are traced by one span"
    );

    // A restart of the order service in between changes nothing: the
    // deadline lives in the stream, not in the process.
    orders.stop().await.unwrap();
    let orders = spawn_order_service_with(&nats.url(), &deadline).await;
    let client = order_client(&orders).await;
    let failed = wait_for_status(&client, &created.order_id, OrderStatus::PaymentFailed).await;
    assert!(
        failed.failure_reason.starts_with("payment deadline passed"),
        "{}",
        failed.failure_reason
    );
    assert_eq!(failed.version, 2);
    assert!(failed.payment_id.is_empty());
    assert!(
        last_on(&js, &schedule_subject("c-deadline", &created.order_id))
            .await
            .is_none(),
        "a fired deadline removes its schedule"
    );

    // The payment service comes back to the order's creation and failure:
    // it charges nothing.
    let gateway = simulated_gateway();
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    wait_until(
        "the payment service to handle the order's events",
        Duration::from_secs(20),
        || async {
            consumer_caught_up(&js, "ORDERS", "payment-service-orders").await
                && consumer_caught_up(&js, "ORDERS", "payment-service-payment-failures").await
        },
    )
    .await;
    let payment = payments_of(&payments, &created.order_id).await;
    assert_eq!(payment.len(), 1, "{payment:?}");
    assert_eq!(payment[0].status, PaymentStatus::Voided as i32);
    assert_eq!(gateway.stats().charges, 0);
    assert_eq!(
        current(&client, &created.order_id).await,
        failed,
        "the failed order stays as it failed"
    );

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_landing_after_the_deadline_is_refunded() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let orders =
        spawn_order_service_with(&nats.url(), &[("ORDER_PAYMENT_DEADLINE_SECS", "1")]).await;
    // The gateway answers a charge only after the deadline passed.
    let gateway =
        payment_service::gateway::SimulatedGateway::new(payment_service::config::SimulatorConfig {
            decline_above_units: 10_000,
            latency: Duration::from_secs(3),
            failure_rate: 0.0,
        });
    let payments = spawn_payment_service(
        &nats.url(),
        gateway.clone(),
        &[("GATEWAY_TIMEOUT_MS", "20000")],
    )
    .await;
    let client = order_client(&orders).await;
    let created = client
        .clone()
        .create_order(order_request("c-late", 1, 10, "r-late"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let failed = wait_for_status(&client, &created.order_id, OrderStatus::PaymentFailed).await;
    assert!(failed.failure_reason.starts_with("payment deadline passed"));
    wait_until(
        "the late charge to be refunded",
        Duration::from_secs(30),
        || async {
            payments_of(&payments, &created.order_id)
                .await
                .first()
                .is_some_and(|p| p.status == PaymentStatus::Refunded as i32)
        },
    )
    .await;
    let stats = gateway.stats();
    assert_eq!((stats.charges, stats.refunds), (1, 1), "{stats:?}");
    wait_until(
        "the order service to handle the payment's events",
        Duration::from_secs(20),
        || consumer_caught_up(&js, "PAYMENTS", "order-service-payments"),
    )
    .await;
    assert_eq!(
        current(&client, &created.order_id).await.status,
        OrderStatus::PaymentFailed as i32,
        "a late payment does not revive a failed order"
    );

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_never_fails_by_its_deadline() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let orders =
        spawn_order_service_with(&nats.url(), &[("ORDER_PAYMENT_DEADLINE_SECS", "1")]).await;
    let gateway = simulated_gateway();
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let client = order_client(&orders).await;
    let created = client
        .clone()
        .create_order(order_request("c-paid", 1, 10, "r-paid"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let confirmed = wait_for_status(&client, &created.order_id, OrderStatus::Confirmed).await;

    // The confirmation removed the schedule as it was stored (no fired
    // deadline can exist without it).
    assert!(
        last_on(&js, &schedule_subject("c-paid", &created.order_id))
            .await
            .is_none(),
        "the confirmation removes the deadline"
    );
    // And long past the deadline, nothing has fired and nothing changed.
    let past = std::time::SystemTime::now() + Duration::from_secs(2);
    wait_until(
        "the deadline to be long past",
        Duration::from_secs(10),
        || async { std::time::SystemTime::now() > past },
    )
    .await;
    assert!(
        last_on(
            &js,
            &orderflow_eventbus::subject::fired_subject(
                "orders",
                "c-paid",
                &created.order_id,
                ORDER_PAYMENT_DEADLINE
            )
        )
        .await
        .is_none(),
        "no deadline fired"
    );
    assert_eq!(current(&client, &created.order_id).await, confirmed);
    assert_eq!(gateway.stats().charges, 1);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_order_retried_after_the_deduplication_window_keeps_the_first_deadline() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    // No payment service: the order stays pending, its deadline far off.
    let orders =
        spawn_order_service_with(&nats.url(), &[("ORDER_PAYMENT_DEADLINE_SECS", "600")]).await;
    // A one-second de-duplication window stands for the ten minutes after
    // which a retry is no longer recognised by its id.
    let mut config = js
        .get_stream("ORDERS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(config).await.unwrap();

    let mut client = order_client(&orders).await;
    let request = order_request("c-retry", 1, 10, "r-retry");
    let created = create_order(&mut client, request.clone()).await;
    let subject = schedule_subject("c-retry", &created.order_id);
    let first = last_on(&js, &subject)
        .await
        .expect("the deadline is scheduled");

    // Once a publish with a used id is stored again, the order's ids are
    // forgotten too: they are older.
    let probe = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", "retry-window-probe");
        let ack = js
            .publish_with_headers("orders.~probe.window.x.y", headers, "probe".into())
            .await
            .unwrap()
            .await
            .unwrap();
        !ack.duplicate
    };
    assert!(probe().await, "the first probe is new");
    wait_until(
        "the de-duplication window to pass",
        Duration::from_secs(20),
        probe,
    )
    .await;

    let retried = create_order(&mut client, request).await;
    assert_eq!(retried, created, "the retry answers the order as created");
    let kept = last_on(&js, &subject)
        .await
        .expect("the deadline is still scheduled");
    assert_eq!(
        kept.sequence, first.sequence,
        "the retry stored no second schedule"
    );
    assert_eq!(
        kept.headers
            .get("Nats-Schedule")
            .map(|v| v.as_str().to_owned()),
        first
            .headers
            .get("Nats-Schedule")
            .map(|v| v.as_str().to_owned()),
        "the deadline did not move"
    );
    orders.stop().await.unwrap();
}
