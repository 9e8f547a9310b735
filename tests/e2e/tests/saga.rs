//! The order → payment saga, end to end: real nats-server, both services on
//! loopback gRPC, the simulated gateway counting what it really charged.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use orderflow_eventbus::subject::aggregate_filter;

use orderflow_e2e::services::{
    order_client, order_request, payment_client, simulated_gateway, spawn_order_service,
    spawn_payment_service, wait_for_status,
};
use orderflow_proto::{
    Name,
    order::v1::{
        CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderCreated, OrderStatus,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, PaymentAuthorized, PaymentStatus,
        RefundPaymentRequest,
    },
};
use orderflow_testkit::{
    NatsServer,
    streams::{consumer_caught_up, jetstream, read_all},
    wait_until,
};

/// How long a test waits for the next message of a server stream: as long as
/// `wait_for_status` waits for a change, since the next message is one.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// The next message of a server stream, or a test failure naming `what` when
/// none (not even the stream's end) arrives within [`STREAM_TIMEOUT`], so a
/// stream that stalls fails the test instead of hanging it.
async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    what: &str,
) -> Result<Option<T>, tonic::Status> {
    match tokio::time::timeout(STREAM_TIMEOUT, stream.message()).await {
        Ok(message) => message,
        Err(_) => panic!("timed out after {STREAM_TIMEOUT:?} waiting for {what}"),
    }
}

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
        || consumer_caught_up(&js, "ORDERS", "payment-service-orders"),
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
    js.publish_with_headers(
        format!("{}.replay", original.subject),
        headers,
        original.payload.clone().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until("the copy to be handled", Duration::from_secs(20), || {
        consumer_caught_up(&js, "ORDERS", "payment-service-orders")
    })
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

/// Every page of ListOrders for `request`'s filters, followed token by
/// token to the end.
async fn list_all_pages(
    client: &orderflow_proto::order::v1::order_service_client::OrderServiceClient<
        tonic::transport::Channel,
    >,
    request: ListOrdersRequest,
) -> Vec<orderflow_proto::order::v1::Order> {
    let mut client = client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_orders(ListOrdersRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("ListOrders answers")
            .into_inner();
        assert!(
            page.orders.len() <= usize::try_from(request.page_size).unwrap_or(0).max(1),
            "a page holds at most page_size orders"
        );
        seen.extend(page.orders);
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_pages_and_filters_in_creation_order() {
    // A server of its own: the test reads whole streams or counts every order.
    let nats = NatsServer::start_own();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let order = client
            .create_order(order_request("pager.one", 1, 1, &format!("r-page-{i}")))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        created.push(order.order_id);
        // Another customer's order between each of them: a customer filter
        // must skip it, not stop at it.
        client
            .create_order(order_request("someone-else", 1, 1, &format!("r-page-x{i}")))
            .await
            .unwrap();
    }
    // One of the customer's orders leaves PENDING_PAYMENT: the status filter
    // must leave it out, and every other filter must show its new state.
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            order_id: created[1].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);

    let all = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 10, "every order of every customer, once");

    let mine = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 2,
            customer_id: String::from("pager.one"),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = mine.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(
        ids, created,
        "the customer's orders, oldest first, each once"
    );
    assert_eq!(
        mine[1].status,
        OrderStatus::Cancelled as i32,
        "a listed order is in its current state: {:?}",
        mine[1]
    );
    assert_eq!(mine[1].version, 2);

    let pending = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 2,
            customer_id: String::from("pager.one"),
            status: OrderStatus::PendingPayment as i32,
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = pending.iter().map(|o| o.order_id.clone()).collect();
    let expected: Vec<_> = created
        .iter()
        .filter(|id| **id != created[1])
        .cloned()
        .collect();
    assert_eq!(ids, expected, "the status filter drops the cancelled order");

    let none = client
        .list_orders(ListOrdersRequest {
            customer_id: String::from("pager.one"),
            status: OrderStatus::Confirmed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.orders.is_empty());
    assert!(none.next_page_token.is_empty());

    // A token is bound to its filters.
    let first = client
        .list_orders(ListOrdersRequest {
            page_size: 1,
            customer_id: String::from("pager.one"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_orders(ListOrdersRequest {
            page_size: 1,
            page_token: first.next_page_token,
            customer_id: String::from("someone-else"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    orders.stop().await.unwrap();
}

/// More orders than one multi-last direct get may match (1,024 subjects):
/// lists page through the creation events, so a big customer is listed
/// whole, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_with_more_orders_than_one_index_read_allows_is_listed_whole() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let client = order_client(&orders).await;
    let count = 1_100;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .create_order(order_request("big", 1, 1, &format!("r-big-{i}")))
                .await
                .expect("CreateOrder answers")
                .into_inner()
                .order
                .expect("an order")
                .order_id
        });
        // At most 32 calls in flight.
        while calls.len() >= 32 {
            calls.join_next().await;
        }
    }
    while calls.join_next().await.is_some() {}

    let listed = list_all_pages(
        &client,
        ListOrdersRequest {
            page_size: 1000,
            customer_id: String::from("big"),
            ..Default::default()
        },
    )
    .await;
    let mut ids: Vec<_> = listed.iter().map(|o| o.order_id.clone()).collect();
    assert_eq!(ids.len(), count, "every order of the customer");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "and each once");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_streams_every_change_until_the_order_settles() {
    use orderflow_proto::order::v1::WatchOrderRequest;
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;

    let order = client
        .create_order(order_request("c-watch", 1, 5, "r-watch"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut stream = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_message(
        &mut stream,
        "the watch's first message (the order as created)",
    )
    .await
    .expect("the watch's first message")
    .expect("the watch answers the order before it changes")
    .order
    .expect("the first message carries the order");
    assert_eq!(first.status, OrderStatus::PendingPayment as i32);

    // The payment service starts only now: the next message is a real change.
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let next = next_message(&mut stream, "the watch's second message (the confirmation)")
        .await
        .expect("the watch's second message")
        .expect("the watch sends the confirmation before it ends")
        .order
        .expect("the second message carries the order");
    assert_eq!(next.status, OrderStatus::Confirmed as i32);
    assert_eq!(next.version, 2);
    assert!(
        next_message(&mut stream, "the watch to end once the order settled")
            .await
            .expect("the watch ends cleanly")
            .is_none(),
        "the stream ends once settled"
    );

    // Watching a settled order answers its state and ends.
    let mut again = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let settled = next_message(&mut again, "the settled order's watch to answer its state")
        .await
        .expect("the settled order's watch answers")
        .expect("the settled order's watch sends its state before it ends")
        .order
        .expect("the message carries the order");
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(settled.version, 2);
    assert!(
        next_message(&mut again, "the settled order's watch to end")
            .await
            .expect("the settled order's watch ends cleanly")
            .is_none(),
        "a settled order's watch ends after its one message"
    );

    let missing = client
        .watch_order(WatchOrderRequest {
            order_id: String::from("00000000-0000-4000-8000-000000000000"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = client
        .watch_order(WatchOrderRequest {
            order_id: String::from("nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watches_instead_of_waiting_for_them() {
    use orderflow_proto::order::v1::WatchOrderRequest;
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;
    // No payment service: the order stays pending and the watch stays open.
    let order = client
        .create_order(order_request("c-watch-stop", 1, 5, "r-watch-stop"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut stream = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    next_message(&mut stream, "the watch's first message (the pending order)")
        .await
        .expect("the watch's first message")
        .expect("the watch answers the pending order");

    // A shutdown that waited for the watch would never return (the watch
    // has no end of its own); the bound is well above SHUTDOWN_TIMEOUT_SECS
    // (10 s here), so it fails only a stop that waits for the watch.
    tokio::time::timeout(Duration::from_secs(30), orders.stop())
        .await
        .expect("the order service stops although a watch is open")
        .unwrap();
    let ended = next_message(&mut stream, "shutdown to end the open watch")
        .await
        .expect_err("shutdown ends the watch with an error, not a clean end");
    assert_eq!(ended.code(), tonic::Code::Unavailable);
}
