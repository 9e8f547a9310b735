//! Moving a deployment of orderflow 0.1 over: events stored under the old
//! subjects (`orders.<order_id>`, `payments.<payment_id>`) are copied by the
//! binaries' `migrate-subjects`, after which the services read, list and
//! finish those orders as if they had been written by this version, and
//! charge nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{process::Stdio, time::Duration};

use orderflow_e2e::services::{
    order_client, simulated_gateway, spawn_order_service, spawn_payment_service, wait_for_status,
};
use orderflow_proto::{
    Name,
    contract::STREAMS,
    money::v1::Money,
    order::v1::{
        GetOrderRequest, ListOrdersRequest, Order, OrderCancelled, OrderConfirmed, OrderCreated,
        OrderStatus,
    },
    payment::v1::{Payment, PaymentAuthorized, PaymentStatus, PaymentVoided},
};
use orderflow_testkit::{
    NatsServer,
    process::workspace_binary,
    streams::{consumer_caught_up, jetstream, read_all},
    wait_until,
};
use prost::Message;

/// How long one `migrate-subjects` run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn order(id: &str, status: OrderStatus, version: u64) -> Order {
    Order {
        order_id: id.to_owned(),
        customer_id: String::from("c-old.one"),
        total: Some(Money {
            currency_code: String::from("EUR"),
            units: 25,
            nanos: 0,
        }),
        status: status as i32,
        version,
        ..Default::default()
    }
}

/// Publishes `body` (of type `M`) on `subject` as orderflow 0.1 did.
async fn publish_old<M: Message + Name>(
    js: &async_nats::jetstream::Context,
    subject: &str,
    ce_id: &str,
    body: M,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", ce_id);
    headers.insert("ce-id", ce_id);
    headers.insert("ce-type", M::full_name().as_str());
    headers.insert("ce-specversion", "1.0");
    headers.insert("content-type", "application/protobuf");
    js.publish_with_headers(subject.to_owned(), headers, body.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("JetStream stores the old event");
}

/// Runs `<binary> migrate-subjects` and returns what it printed.
async fn migrate(binary: &str, nats_url: &str) -> String {
    let child = tokio::process::Command::new(workspace_binary(binary))
        .arg("migrate-subjects")
        .env("NATS_URL", nats_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{binary} migrate-subjects did not end within {RUN_TIMEOUT:?}"))
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{binary} migrate-subjects failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_subjects_are_migrated_once_and_the_services_finish_what_was_open() {
    // A server of its own: the test reads whole streams.
    let nats = NatsServer::start_own();
    let js = jetstream(&nats.url()).await;
    orderflow_eventbus::ensure_streams(&js, STREAMS, 1)
        .await
        .unwrap();

    // What orderflow 0.1 left: an order cancelled before it was charged, an
    // order still waiting for its payment (the saga was cut by the upgrade),
    // and a paid order, created last: the payment service receives the copy
    // of its creation with nothing pending behind it, so only the copy's
    // mark keeps it from being charged again.
    let paid = "0d2a6f3c-1b5e-4c7d-8e9f-00000000000a";
    let open = "0d2a6f3c-1b5e-4c7d-8e9f-00000000000b";
    let cancelled = "0d2a6f3c-1b5e-4c7d-8e9f-00000000000c";
    for id in [cancelled, open, paid] {
        publish_old(
            &js,
            &format!("orders.{id}"),
            &format!("{id}.created"),
            OrderCreated {
                order: Some(order(id, OrderStatus::PendingPayment, 1)),
            },
        )
        .await;
    }
    let paid_payment = payment_service::domain::payment_id_for(paid).to_string();
    let cancelled_payment = payment_service::domain::payment_id_for(cancelled).to_string();
    let payment = |payment_id: &str, order_id: &str, status: PaymentStatus| Payment {
        payment_id: payment_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: String::from("c-old.one"),
        amount: order(order_id, OrderStatus::PendingPayment, 1).total,
        status: status as i32,
        version: 1,
        ..Default::default()
    };
    publish_old(
        &js,
        &format!("payments.{paid_payment}"),
        &format!("{paid_payment}.authorized"),
        PaymentAuthorized {
            payment: Some(payment(&paid_payment, paid, PaymentStatus::Authorized)),
        },
    )
    .await;
    let mut confirmed = order(paid, OrderStatus::Confirmed, 2);
    confirmed.payment_id = paid_payment.clone();
    publish_old(
        &js,
        &format!("orders.{paid}"),
        &format!("{paid}.confirmed"),
        OrderConfirmed {
            order: Some(confirmed),
        },
    )
    .await;
    publish_old(
        &js,
        &format!("orders.{cancelled}"),
        &format!("{cancelled}.cancelled"),
        OrderCancelled {
            order: Some(order(cancelled, OrderStatus::Cancelled, 2)),
        },
    )
    .await;
    publish_old(
        &js,
        &format!("payments.{cancelled_payment}"),
        &format!("{cancelled_payment}.voided"),
        PaymentVoided {
            payment: Some(payment(
                &cancelled_payment,
                cancelled,
                PaymentStatus::Voided,
            )),
        },
    )
    .await;

    // A run that stopped after the paid order's first copy, before its
    // last: the next run must still copy its state.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "interrupted-copy");
    headers.insert("ce-id", format!("{paid}.created").as_str());
    headers.insert("ce-type", OrderCreated::full_name().as_str());
    headers.insert("Orderflow-Migrated-From", "orders.interrupted#1");
    headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence-Subject",
        format!("orders.c-old~2Eone.{paid}.*").as_str(),
    );
    js.publish_with_headers(
        format!("orders.c-old~2Eone.{paid}.created"),
        headers,
        OrderCreated {
            order: Some(order(paid, OrderStatus::PendingPayment, 1)),
        }
        .encode_to_vec()
        .into(),
    )
    .await
    .unwrap()
    .await
    .expect("the interrupted run's copy is stored");

    // Payments first, then orders; a second run changes nothing.
    let moved = migrate("payment-service", &nats.url()).await;
    assert!(
        moved.contains(
            "payments: 2 found under the old subjects, 2 copied, 0 already moved, 0 not readable"
        ),
        "{moved}"
    );
    let moved = migrate("order-service", &nats.url()).await;
    assert!(
        moved.contains(
            "orders: 3 found under the old subjects, 3 copied, 0 already moved, 0 not readable"
        ),
        "{moved}"
    );
    let again = migrate("order-service", &nats.url()).await;
    assert!(
        again.contains("orders: 3 found under the old subjects, 0 copied, 3 already moved"),
        "{again}"
    );
    // Each order's first event and, when it has more, its last: 2 + 1 + 2.
    let copies = read_all(&js, "ORDERS", "orders.c-old~2Eone.*.*").await;
    assert_eq!(
        copies.len(),
        5,
        "{:?}",
        copies.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert!(
        copies
            .iter()
            .all(|m| m.header("Orderflow-Migrated-From").is_some())
    );

    // The new services finish what was open and charge nothing twice: the
    // gateway is new, so a repeated charge of the paid order would count.
    let gateway = simulated_gateway();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    let mut client = order_client(&orders).await;
    let finished = wait_for_status(&client, open, OrderStatus::Confirmed).await;
    assert_eq!(finished.customer_id, "c-old.one");
    wait_until(
        "the payment service to handle every copied order event",
        Duration::from_secs(20),
        || consumer_caught_up(&js, "ORDERS", payment_service::charging::DURABLE),
    )
    .await;
    assert_eq!(
        gateway.stats().charges,
        1,
        "only the order whose payment was still open is charged"
    );
    let paid_now = client
        .get_order(GetOrderRequest {
            order_id: paid.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(paid_now.status, OrderStatus::Confirmed as i32);
    assert_eq!(paid_now.payment_id, paid_payment);
    let listed: Vec<(String, i32)> = client
        .list_orders(ListOrdersRequest {
            customer_id: String::from("c-old.one"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders
        .into_iter()
        .map(|o| (o.order_id, o.status))
        .collect();
    assert_eq!(
        listed,
        [
            // Its first copy was stored before this run's copies.
            (paid.to_owned(), OrderStatus::Confirmed as i32),
            (cancelled.to_owned(), OrderStatus::Cancelled as i32),
            (open.to_owned(), OrderStatus::Confirmed as i32),
        ],
        "every migrated order is listed, in the order of its first copy, in its current state"
    );

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
