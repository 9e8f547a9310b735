//! An order's life through the saga: paid and confirmed, declined,
//! created once per request id, cancelled before or after payment, refunded,
//! charged once however often its creation is delivered or however many
//! payment replicas run.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_order_is_paid_and_confirmed() {
    let nats = NatsServer::start();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;

    let created = client
        .create_order(order_request("c-1", 2, 12, "r-happy"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(created.status, OrderStatus::PendingPayment as i32);
    assert_eq!(created.total.as_ref().unwrap().units, 24);

    let confirmed = wait_for_status(&client, &created.order_id, OrderStatus::Confirmed).await;
    assert!(!confirmed.payment_id.is_empty());
    assert_eq!(confirmed.version, 2);
    let payment = payment_client(&payments)
        .await
        .get_payment(GetPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
    assert_eq!(payment.order_id, created.order_id);
    assert_eq!(payment.amount, created.total);
    assert_eq!(gateway.stats().charges, 1);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_above_the_decline_limit_fails_the_order() {
    let nats = NatsServer::start();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;

    // 2 × 5000.5 EUR = 10001 EUR, above the 10000 limit.
    let mut request = order_request("c-2", 2, 5000, "r-decline");
    request.items[0].unit_price.as_mut().unwrap().nanos = 500_000_000;
    let order = client
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let failed = wait_for_status(&client, &order.order_id, OrderStatus::PaymentFailed).await;
    assert!(
        failed.failure_reason.contains("above the limit"),
        "{}",
        failed.failure_reason
    );
    assert!(failed.payment_id.is_empty());
    let listed = payment_client(&payments).await;
    let page = wait_for_payments(&listed, &order.order_id, 1).await;
    assert_eq!(page[0].status, PaymentStatus::Declined as i32);
    assert_eq!(gateway.stats().charges, 0);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

async fn wait_for_payments(
    client: &orderflow_proto::payment::v1::payment_service_client::PaymentServiceClient<
        tonic::transport::Channel,
    >,
    order_id: &str,
    count: usize,
) -> Vec<orderflow_proto::payment::v1::Payment> {
    let found = std::sync::Mutex::new(Vec::new());
    wait_until(
        "ListPayments to answer the order's payments",
        Duration::from_secs(20),
        || async {
            let mut client = client.clone();
            let page = client
                .list_payments(ListPaymentsRequest {
                    order_id: order_id.to_owned(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().payments)
                .unwrap_or_default();
            let done = page.len() == count;
            *found.lock().unwrap() = page;
            done
        },
    )
    .await;
    found.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_make_creation_idempotent() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;

    let first = client
        .create_order(order_request("c-3", 1, 10, "r-same"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let replay = client
        .create_order(order_request("c-3", 1, 10, "r-same"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        replay, first,
        "a replay answers the same order, timestamps included"
    );

    let conflict = client
        .create_order(order_request("c-3", 2, 10, "r-same"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
    assert!(conflict.message().contains("r-same"));

    let other = client
        .create_order(order_request("c-3", 1, 10, "r-other"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_ne!(other.order_id, first.order_id);

    let js = jetstream(&nats.url()).await;
    let created = read_all(
        &js,
        "ORDERS",
        &aggregate_filter("orders", &first.customer_id, &first.order_id),
    )
    .await;
    assert_eq!(
        created.len(),
        1,
        "one OrderCreated for three calls with r-same"
    );

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_before_payment_is_never_charged() {
    let nats = NatsServer::start();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;

    // No payment service yet: the order is certainly unpaid when cancelled.
    let order = client
        .create_order(order_request("c-4", 1, 30, "r-cancel-early"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    let again = client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        again.version, cancelled.version,
        "cancelling twice changes nothing"
    );

    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let js = jetstream(&nats.url()).await;
    wait_until(
        "the payment service to see both order events",
        Duration::from_secs(20),
        || async {
            consumer_caught_up(&js, "ORDERS", "payment-service-orders").await
                && consumer_caught_up(&js, "ORDERS", "payment-service-cancellations").await
        },
    )
    .await;
    let listed = wait_for_payments(&payment_client(&payments).await, &order.order_id, 1).await;
    assert_eq!(listed[0].status, PaymentStatus::Voided as i32);
    assert_eq!(
        gateway.stats().charges,
        0,
        "a cancelled order is never charged"
    );
    let still = client
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(still.status, OrderStatus::Cancelled as i32);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_cancelled_after_payment_is_refunded() {
    let nats = NatsServer::start();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;
    let mut pay = payment_client(&payments).await;

    let order = client
        .create_order(order_request("c-5", 3, 7, "r-cancel-late"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let confirmed = wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    assert_eq!(cancelled.payment_id, confirmed.payment_id);

    wait_until("the refund", Duration::from_secs(20), || {
        let mut pay = pay.clone();
        let payment_id = confirmed.payment_id.clone();
        async move {
            pay.get_payment(GetPaymentRequest { payment_id })
                .await
                .map(|r| r.into_inner().payment.unwrap().status == PaymentStatus::Refunded as i32)
                .unwrap_or(false)
        }
    })
    .await;
    assert_eq!(gateway.stats().charges, 1);
    assert_eq!(gateway.stats().refunds, 1);

    // Refunding again is idempotent; a declined or unknown payment is not refundable.
    let again = pay
        .refund_payment(RefundPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(again.status, PaymentStatus::Refunded as i32);
    assert_eq!(gateway.stats().refunds, 1);
    let missing = pay
        .refund_payment(RefundPaymentRequest {
            payment_id: String::from("00000000-0000-4000-8000-000000000000"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_order_created_event_charges_once() {
    // A server of its own: the test reads whole streams or counts every order.
    let nats = NatsServer::start_own();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;

    let order = client
        .create_order(order_request("c-6", 1, 99, "r-redeliver"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;
    assert_eq!(gateway.stats().charges, 1);
    let calls_before = gateway.stats().calls;

    // Deliver the same OrderCreated again, byte for byte and with its ce-id,
    // as JetStream does after a lost ack. The copy goes where a repeat
    // reaches the payment service without becoming the order's latest
    // event: the replay subject of the original (a new Nats-Msg-Id only so
    // the stream stores it).
    let js = jetstream(&nats.url()).await;
    let original = read_all(
        &js,
        "ORDERS",
        &aggregate_filter("orders", &order.customer_id, &order.order_id),
    )
    .await
    .into_iter()
    .find(|m| m.header("ce-type").as_deref() == Some(OrderCreated::full_name().as_str()))
    .unwrap();
    // The stored optimistic-concurrency headers stay behind: a redelivery
    // is not checked again.
    let mut headers = original.redelivery_headers();
    headers.insert("Nats-Msg-Id", "redelivery-copy");
    let copy = js
        .publish_with_headers(
            format!("{}.replay", original.subject),
            headers,
            original.payload.clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Handled, and by the replays' durable: it acked the copy, and holds
    // nothing else.
    wait_until(
        "the copy to be handled",
        Duration::from_secs(20),
        || async {
            let Ok(stream) = js.get_stream("ORDERS").await else {
                return false;
            };
            stream
                .consumer_info("payment-service-orders-replays")
                .await
                .is_ok_and(|info| {
                    info.ack_floor.stream_sequence >= copy.sequence
                        && info.num_pending == 0
                        && info.num_ack_pending == 0
                })
        },
    )
    .await;

    assert_eq!(gateway.stats().charges, 1, "the redelivery charged nothing");
    assert_eq!(
        gateway.stats().calls,
        calls_before,
        "the redelivery did not even call the gateway"
    );
    let authorized = read_all(&js, "PAYMENTS", ">")
        .await
        .into_iter()
        .filter(|m| m.header("ce-type").as_deref() == Some(PaymentAuthorized::full_name().as_str()))
        .count();
    assert_eq!(authorized, 1);
    // The list ignored the stale copy: it answers the order confirmed at
    // version 2, not rolled back to the copy's pending version 1. Lists read
    // the stream itself, so once the copy is stored (acked above) and
    // handled, a list that could see it would.
    let listed_confirmed = || {
        let mut client = client.clone();
        async move {
            client
                .list_orders(ListOrdersRequest {
                    customer_id: String::from("c-6"),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .orders
                        .iter()
                        .any(|o| o.status == OrderStatus::Confirmed as i32)
                })
                .unwrap_or(false)
        }
    };
    wait_until(
        "ListOrders to answer the order confirmed",
        Duration::from_secs(20),
        listed_confirmed,
    )
    .await;
    let listed = client
        .list_orders(ListOrdersRequest {
            customer_id: String::from("c-6"),
            ..Default::default()
        })
        .await
        .expect("ListOrders answers")
        .into_inner()
        .orders;
    let [only] = listed.as_slice() else {
        panic!("ListOrders for c-6 answers exactly its one order: {listed:?}");
    };
    assert_eq!(only.order_id, order.order_id);
    assert_eq!(
        only.status,
        OrderStatus::Confirmed as i32,
        "the stale copy did not roll the listed order back: {only:?}"
    );
    assert_eq!(only.version, 2, "the listed order is at its last version");

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_payment_replicas_never_charge_an_order_twice() {
    let nats = NatsServer::start();
    // Each replica gets a gateway ledger of its own. Replicas sharing one
    // ledger would hide a second replica's charge behind the idempotency key
    // the first one used; with two ledgers, an order charged by both replicas
    // is a charge in each, and every call a replica makes is counted as its
    // own.
    let first_gateway = simulated_gateway();
    let second_gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let first = spawn_payment_service(&nats.url(), first_gateway.clone(), &[]).await;
    let second = spawn_payment_service(&nats.url(), second_gateway.clone(), &[]).await;
    let client = order_client(&orders).await;

    let count = 60;
    let mut created = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .create_order(order_request(
                    &format!("c-{}", i % 7),
                    1,
                    5 + i,
                    &format!("r-two-{i}"),
                ))
                .await
                .expect("CreateOrder answers")
                .into_inner()
                .order
                .expect("CreateOrder answers the order")
        });
    }
    while let Some(order) = calls.join_next().await {
        created.push(order.expect("the CreateOrder task"));
    }
    for order in &created {
        wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;
    }
    // Stopped first, so the counts cover each replica's whole run.
    second.stop().await.unwrap();
    first.stop().await.unwrap();

    let (first_stats, second_stats) = (first_gateway.stats(), second_gateway.stats());
    eprintln!(
        "gateway calls: first replica {}, second replica {}",
        first_stats.calls, second_stats.calls
    );
    // No order total is above the decline limit and the gateway never fails,
    // so every call is a charge and nothing is retried.
    assert_eq!(
        first_stats.calls + second_stats.calls,
        count as u64,
        "the two replicas called the gateway once per order in all \
         (first {first_stats:?}, second {second_stats:?})"
    );
    assert_eq!(
        first_stats.charges + second_stats.charges,
        count as u64,
        "the two replicas charged once per order in all \
         (first {first_stats:?}, second {second_stats:?})"
    );
    for order in &created {
        let key = payment_service::domain::charge_key(&order.order_id);
        let by_first = first_gateway.charged(&key);
        let by_second = second_gateway.charged(&key);
        assert!(
            by_first != by_second,
            "order {} is charged by exactly one replica (first: {by_first}, second: {by_second})",
            order.order_id
        );
    }

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_without_cancellation_marks_the_order_refunded() {
    let nats = NatsServer::start();
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;

    let order = client
        .create_order(order_request("c-refund", 1, 15, "r-refund"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let confirmed = wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;
    let refunded = payment_client(&payments)
        .await
        .refund_payment(RefundPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded as i32);
    assert!(!refunded.refund_reference.is_empty());

    let order = wait_for_status(&client, &order.order_id, OrderStatus::Refunded).await;
    assert_eq!(gateway.stats().refunds, 1);
    let refused = client
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("refunded"),
        "{}",
        refused.message()
    );

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
