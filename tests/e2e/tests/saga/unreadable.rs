//! An event that names an order the order service cannot read yet is
//! retried, not refused: a replica that has not stored the order, or a
//! stream leader that was paused and has not learned it was replaced,
//! answers "no such order" for one that exists. Here the order does not
//! exist yet when its event arrives, and is created while the event is
//! being retried; the event then acts on it.

use super::*;
use orderflow_e2e::services::{create_order, order_id_of};
use orderflow_eventbus::subject::{DEAD_LETTER_STREAM, fired_subject};
use orderflow_proto::{contract::ORDER_PAYMENT_DEADLINE, order::v1::OrderPaymentDeadline};
use prost::Message;

/// Publishes an event of `ce_type` on `subject` as a service would.
async fn publish_event(
    js: &async_nats::jetstream::Context,
    subject: String,
    ce_type: &str,
    id: &str,
    body: Vec<u8>,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-type", ce_type);
    headers.insert("ce-id", id);
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subject, headers, body.into())
        .await
        .unwrap()
        .await
        .expect("JetStream stores the event");
}

/// Waits until durable `durable` of `stream` has delivered a message again:
/// its handler retried it rather than settling it.
async fn wait_for_a_redelivery(js: &async_nats::jetstream::Context, stream: &str, durable: &str) {
    wait_until(
        &format!("{durable} to deliver the event again"),
        Duration::from_secs(20),
        || async {
            let Ok(stream) = js.get_stream(stream).await else {
                return false;
            };
            stream
                .consumer_info(durable)
                .await
                .is_ok_and(|info| info.num_redelivered >= 1)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_result_for_an_order_not_readable_yet_confirms_it_once_it_is() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    // No payment service: the test publishes the payment result.
    let orders = spawn_order_service(&nats.url()).await;
    let request = order_request("c-unreadable", 1, 4, "r-unreadable");
    let order_id = order_id_of(&request);
    let payment_id = "0b7d6c1e-2f3a-5b4c-8d9e-1f2a3b4c5d6e";
    let authorized = PaymentAuthorized {
        payment: Some(orderflow_proto::payment::v1::Payment {
            payment_id: payment_id.into(),
            order_id: order_id.clone(),
            customer_id: "c-unreadable".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    publish_event(
        &js,
        format!("payments.c-unreadable.{payment_id}.authorized"),
        &PaymentAuthorized::full_name(),
        &format!("{payment_id}.authorized"),
        authorized.encode_to_vec(),
    )
    .await;
    wait_for_a_redelivery(&js, "PAYMENTS", order_service::settlement::DURABLE).await;

    let mut client = order_client(&orders).await;
    let created = create_order(&mut client, request).await;
    assert_eq!(created.order_id, order_id);
    let confirmed = wait_for_status(&client, &order_id, OrderStatus::Confirmed).await;
    assert_eq!(confirmed.payment_id, payment_id);
    assert!(
        read_all(&js, DEAD_LETTER_STREAM, ">").await.is_empty(),
        "nothing is dead-lettered"
    );

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_for_an_order_not_readable_yet_fails_it_once_it_is() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    // The order's own deadline is the default 900 s away: only the fired
    // deadline published here can fail it during the test.
    let orders = spawn_order_service(&nats.url()).await;
    let request = order_request("c-unreadable-deadline", 1, 4, "r-unreadable-deadline");
    let order_id = order_id_of(&request);
    let deadline = OrderPaymentDeadline {
        order_id: order_id.clone(),
        customer_id: "c-unreadable-deadline".into(),
        deadline_time: Some(std::time::SystemTime::now().into()),
    };
    publish_event(
        &js,
        fired_subject(
            "orders",
            "c-unreadable-deadline",
            &order_id,
            ORDER_PAYMENT_DEADLINE,
        ),
        &OrderPaymentDeadline::full_name(),
        &format!("{order_id}.deadline"),
        deadline.encode_to_vec(),
    )
    .await;
    wait_for_a_redelivery(&js, "ORDERS", order_service::deadline::DURABLE).await;

    let mut client = order_client(&orders).await;
    let created = create_order(&mut client, request).await;
    assert_eq!(created.order_id, order_id);
    let failed = wait_for_status(&client, &order_id, OrderStatus::PaymentFailed).await;
    assert!(
        failed.failure_reason.starts_with("payment deadline passed"),
        "{}",
        failed.failure_reason
    );

    orders.stop().await.unwrap();
}

/// The leader's answer that confirms a miss is taken for "none" only when it
/// says no message was found: the 404 of a stream that does not exist (or
/// not on that server, yet) is an error to retry, never "no such order".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leaders_no_message_found_is_taken_for_none() {
    use orderflow_eventbus::index::last_for_on_leader;
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let orders = spawn_order_service(&nats.url()).await;
    let missing = orderflow_eventbus::subject::any_owner_filter(
        "orders",
        "00000000-0000-4000-8000-000000000000",
    );
    assert!(
        last_for_on_leader(&js, "ORDERS", &missing)
            .await
            .unwrap()
            .is_none()
    );
    let error = last_for_on_leader(&js, "NO_SUCH_STREAM", &missing)
        .await
        .expect_err("a stream that does not exist is no answer about its messages");
    assert!(
        error
            .to_string()
            .contains("NO_SUCH_STREAM refused the read: 404"),
        "{error}"
    );

    orders.stop().await.unwrap();
}
