//! The dead-letter admin API: a message that can never succeed is listed with
//! its reason, and once its cause is fixed a replay delivers it again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use order_service::domain::{NewOrder, RawLine};
use orderflow_e2e::services::{order_client, order_request, spawn_order_service, wait_for_status};
use orderflow_proto::{
    Name,
    admin::v1::{
        ListDeadLettersRequest, ReplayDeadLetterRequest,
        dead_letter_service_client::DeadLetterServiceClient,
    },
    order::v1::OrderStatus,
    payment::v1::{Payment, PaymentAuthorized, PaymentStatus},
};
use orderflow_testkit::{NatsServer, streams::jetstream, wait_until};
use prost::Message;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_once_its_cause_is_fixed() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut admin = DeadLetterServiceClient::connect(orders.endpoint())
        .await
        .unwrap();

    // A payment result for an order that does not exist yet: the order
    // service cannot apply it and dead-letters it.
    let request = order_request("c-dl", 1, 3, "r-dl");
    let price = request.items[0].unit_price.clone().unwrap();
    let order_id = NewOrder::parse(
        "c-dl",
        &[RawLine {
            sku: "SKU-1",
            quantity: 1,
            unit_price: Some((&price.currency_code, price.units, price.nanos)),
        }],
        "r-dl",
    )
    .unwrap()
    .order_id()
    .to_string();
    let payment_id = "6f1c5a52-4a1c-5b2b-9d7e-0d1f2e3a4b5c";
    let event = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: order_id.clone(),
            customer_id: "c-dl".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-type", PaymentAuthorized::full_name().as_str());
    headers.insert("ce-id", format!("{payment_id}.authorized").as_str());
    headers.insert("Nats-Msg-Id", format!("{payment_id}.authorized").as_str());
    let js = jetstream(&nats.url()).await;
    let subject = format!("payments.c-dl.{payment_id}.authorized");
    js.publish_with_headers(subject.clone(), headers, event.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let listed = std::sync::Mutex::new(Vec::new());
    wait_until(
        "the dead letter to be listed",
        Duration::from_secs(20),
        || async {
            let found = admin
                .clone()
                .list_dead_letters(ListDeadLettersRequest {
                    consumer: "order-service-payments".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            let done = !found.is_empty();
            *listed.lock().unwrap() = found;
            done
        },
    )
    .await;
    let letter = listed.into_inner().unwrap().remove(0);
    assert!(letter.reason.contains("not found"), "{}", letter.reason);
    assert_eq!(letter.original_subject, subject);
    assert_eq!(letter.original_stream, "PAYMENTS");
    assert_eq!(letter.consumer, "order-service-payments");
    assert_eq!(letter.ce_type, PaymentAuthorized::full_name());
    assert_eq!(letter.delivery_count, 1);

    // Fix the cause: the order now exists. Replay: it is confirmed.
    let mut client = order_client(&orders).await;
    let created = client
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(created.order_id, order_id);
    let replayed = admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replay_subject, format!("{subject}.replay"));
    let confirmed = wait_for_status(&client, &order_id, OrderStatus::Confirmed).await;
    assert_eq!(confirmed.payment_id, payment_id);

    // Replayed once: it is gone from the list, and a second replay is refused.
    let left = admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(left.iter().all(|l| l.sequence != letter.sequence));
    let again = admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let bad = admin
        .list_dead_letters(ListDeadLettersRequest {
            consumer: "a.b".into(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        orderflow_e2e::services::violated_fields(&bad),
        ["page_size", "consumer"]
    );

    orders.stop().await.unwrap();
}
