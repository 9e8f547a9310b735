//! The dead-letter admin API: a message that can never succeed is listed with
//! its reason, and once its cause is fixed a replay delivers it again; a
//! message whose last delivery is never settled is dead-lettered too, once,
//! even when no replica of its owner was up when JetStream gave up on it;
//! the listing pages by the size asked, for one consumer or all.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::StreamExt;
use order_service::error::MISSING_ORDER_BELIEVED_AT;
use orderflow_e2e::services::{
    create_order, order_client, order_id_of, order_request, spawn_order_service,
    spawn_order_service_with, wait_for_status,
};
use orderflow_eventbus::subject::{
    ADVISORY_STREAM, DEAD_LETTER_STREAM, max_deliveries_durable, max_deliveries_subject,
};
use orderflow_proto::{
    Name,
    admin::v1::{
        ListDeadLettersRequest, ReplayDeadLetterRequest,
        dead_letter_service_client::DeadLetterServiceClient,
    },
    order::v1::OrderStatus,
    payment::v1::{Payment, PaymentAuthorized, PaymentStatus},
};
use orderflow_testkit::{
    NatsServer,
    streams::{consumer_caught_up, jetstream, read_all},
    wait_until,
};
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
    // service retries it for half a minute (a replica may not have stored
    // the order yet), then believes it and dead-letters it.
    let request = order_request("c-dl", 1, 3, "r-dl");
    let order_id = order_id_of(&request);
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
        "the dead letter to be listed, after half a minute of retries",
        Duration::from_secs(90),
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
    assert_eq!(letter.delivery_count, MISSING_ORDER_BELIEVED_AT);

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

/// The payment event the order service's consumer receives for `order`, as
/// the payment service would append it.
fn authorized(
    order: &orderflow_proto::order::v1::Order,
) -> (String, async_nats::HeaderMap, Vec<u8>) {
    let payment_id = "0b6f3c1e-7d7a-5e6f-8a9b-1c2d3e4f5a6b";
    let event = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-type", PaymentAuthorized::full_name().as_str());
    headers.insert("ce-id", format!("{payment_id}.authorized").as_str());
    headers.insert("Nats-Msg-Id", format!("{payment_id}.authorized").as_str());
    let subject = format!("payments.{}.{payment_id}.authorized", order.customer_id);
    (subject, headers, event.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_settled_at_its_last_delivery_is_dead_lettered_once_after_its_owner_was_down()
 {
    // Whole streams are read: a broker of its own.
    let nats = NatsServer::start_own();
    let js = jetstream(&nats.url()).await;
    let durable = "order-service-payments";
    let watch = max_deliveries_durable(durable);
    // A 1 s ack wait, so that ten unsettled deliveries take seconds.
    let first = spawn_order_service_with(&nats.url(), &[("CONSUMER_ACK_WAIT_SECS", "1")]).await;
    let mut client = order_client(&first).await;
    let order = create_order(
        &mut client,
        order_request("c-unsettled", 1, 3, "r-unsettled"),
    )
    .await;
    wait_until(
        "the max-deliveries watch to exist",
        Duration::from_secs(20),
        || async {
            let Ok(stream) = js.get_stream(ADVISORY_STREAM).await else {
                return false;
            };
            stream.consumer_info(&watch).await.is_ok()
        },
    )
    .await;
    // From here on no replica of the order service runs.
    first.stop().await.unwrap();

    let (subject, headers, payload) = authorized(&order);
    let sequence = js
        .publish_with_headers(subject.clone(), headers, payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    // A replica in a crash loop: it takes each delivery and dies before
    // settling it, then starts again and pulls again. After the tenth
    // delivery's ack wait ran out, JetStream gives up at that next pull
    // (nats-server 2.15.1 decides it when it looks for a message to deliver)
    // and publishes its advisory while no replica of the owner is up; the
    // advisory stream keeps it.
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("PAYMENTS")
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    let deliveries = std::sync::atomic::AtomicI64::new(0);
    wait_until(
        "ten unsettled deliveries and the max-deliveries advisory kept",
        Duration::from_secs(120),
        || async {
            let Ok(mut batch) = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
            else {
                return false;
            };
            while let Some(Ok(message)) = batch.next().await {
                let info = message.info().unwrap();
                assert_eq!(info.stream_sequence, sequence);
                assert!(info.delivered <= 10, "delivered {} times", info.delivered);
                deliveries.store(info.delivered, std::sync::atomic::Ordering::Relaxed);
                // Dropped unsettled, as a killed process leaves it.
            }
            let Ok(mut advisories) = js.get_stream(ADVISORY_STREAM).await else {
                return false;
            };
            advisories
                .info()
                .await
                .is_ok_and(|info| info.state.messages > 0)
        },
    )
    .await;
    assert_eq!(deliveries.into_inner(), 10);
    let mut advisories = read_all(
        &js,
        ADVISORY_STREAM,
        &max_deliveries_subject("PAYMENTS", durable),
    )
    .await;
    assert_eq!(advisories.len(), 1);
    let advisory = advisories.remove(0);
    let body: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap();
    assert_eq!(body["stream_seq"], sequence);
    assert!(
        read_all(&js, DEAD_LETTER_STREAM, ">").await.is_empty(),
        "nothing dead-lettered it while the owner was down"
    );

    // The owner comes back, as two replicas: one of them dead-letters it.
    let a = spawn_order_service(&nats.url()).await;
    let b = spawn_order_service(&nats.url()).await;
    let mut admin = DeadLetterServiceClient::connect(a.endpoint())
        .await
        .unwrap();
    let list = |admin: DeadLetterServiceClient<tonic::transport::Channel>| async move {
        admin
            .clone()
            .list_dead_letters(ListDeadLettersRequest {
                consumer: durable.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .dead_letters
    };
    // Polled on the stream: each listing makes a short-lived consumer.
    wait_until(
        "the dead letter to be stored",
        Duration::from_secs(30),
        || async {
            let Ok(mut letters) = js.get_stream(DEAD_LETTER_STREAM).await else {
                return false;
            };
            letters
                .info()
                .await
                .is_ok_and(|info| info.state.messages > 0)
        },
    )
    .await;
    // The same advisory once more, as a redelivery would bring it to either
    // replica: still one dead letter.
    js.publish(advisory.subject.clone(), advisory.payload.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_until(
        "the repeated advisory to be handled",
        Duration::from_secs(30),
        || consumer_caught_up(&js, ADVISORY_STREAM, &watch),
    )
    .await;
    let mut letters = list(admin.clone()).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters.remove(0);
    assert!(
        letter.reason.contains("max deliveries (10) reached")
            && letter.reason.contains("never settled")
            && letter.reason.contains("ack wait ran out"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.original_stream, "PAYMENTS");
    assert_eq!(letter.original_subject, subject);
    assert_eq!(letter.original_sequence, sequence);
    assert_eq!(letter.consumer, durable);
    assert_eq!(letter.delivery_count, 10);
    assert_eq!(letter.ce_type, PaymentAuthorized::full_name());
    assert_eq!(letter.payload, payload);

    // Replayable like any dead letter: the order is confirmed by it.
    let replayed = admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replay_subject, format!("{subject}.replay"));
    let client = order_client(&b).await;
    wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;
    assert!(list(admin).await.is_empty());

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Every page of `ListDeadLetters` for `consumer` (all when empty), `size`
/// at a time: the sequences of each page, and the time of each letter.
async fn pages(
    admin: &DeadLetterServiceClient<tonic::transport::Channel>,
    consumer: &str,
    size: i32,
) -> (Vec<Vec<u64>>, Vec<i64>) {
    let (mut pages, mut times, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = admin
            .clone()
            .list_dead_letters(ListDeadLettersRequest {
                consumer: consumer.into(),
                page_size: size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.dead_letters.iter().map(|d| d.sequence).collect());
        times.extend(
            page.dead_letters
                .iter()
                .map(|d| d.dead_letter_time.as_ref().map_or(0, |t| t.seconds)),
        );
        if page.next_page_token.is_empty() {
            return (pages, times);
        }
        token = page.next_page_token;
        assert!(pages.len() < 10, "the pages never end: {pages:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_in_pages_of_the_size_asked_and_by_consumer() {
    use orderflow_eventbus::envelope::headers;
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let admin = DeadLetterServiceClient::connect(orders.endpoint())
        .await
        .unwrap();
    let js = jetstream(&nats.url()).await;
    // Five dead letters as the consumers store them, of two consumers in
    // turn: sequences 1 to 5, the order service's at 1, 3 and 5.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 1..=5 {
        let (stream, consumer) = if i % 2 == 1 {
            ("PAYMENTS", "order-service-payments")
        } else {
            ("ORDERS", "payment-service-orders")
        };
        let mut letter = async_nats::HeaderMap::new();
        letter.insert(headers::DEAD_LETTER_REASON, format!("reason {i}").as_str());
        letter.insert(headers::ORIGINAL_CONSUMER, consumer);
        js.publish_with_headers(
            format!("deadletter.{stream}.{consumer}"),
            letter,
            vec![u8::try_from(i).unwrap()].into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let (all, times) = pages(&admin, "", 2).await;
    assert_eq!(all, [vec![1, 2], vec![3, 4], vec![5]]);
    // The time each was stored, read back from the stream.
    assert!(
        times.iter().all(|t| u64::try_from(*t).unwrap() >= before),
        "{times:?} (stored after {before})"
    );
    let (own, _) = pages(&admin, "order-service-payments", 2).await;
    assert_eq!(own, [vec![1, 3], vec![5]]);
    // A page exactly as long as what is left ends the listing.
    let (whole, _) = pages(&admin, "payment-service-orders", 2).await;
    assert_eq!(whole, [vec![2, 4]]);
}
