//! A message its consumer gave up on without a settle is dead-lettered by
//! the order service with only its own permissions: the max-deliveries
//! watch on `ADVISORIES`, the read of the original from `PAYMENTS`, the
//! dead letter.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_settled_is_dead_lettered_with_only_the_services_own_permissions() {
    let nats = SecuredNats::start();
    let ops = nats.ops().await;
    let durable = "order-service-payments";
    let watch = format!("{durable}-max-deliveries");
    // A 1 s ack wait, so that ten unsettled deliveries take seconds.
    let mut first = nats
        .start_service_with("order-service", &[("CONSUMER_ACK_WAIT_SECS", "1")])
        .await;
    let mut orders = OrderServiceClient::connect(first.endpoint()).await.unwrap();
    let order = orders
        .create_order(order_request("c-unsettled", 1, 3, "r-unsettled"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_until(
        "the max-deliveries watch to exist",
        Duration::from_secs(20),
        || async {
            let Ok(stream) = ops.get_stream("ADVISORIES").await else {
                return false;
            };
            stream.consumer_info(&watch).await.is_ok()
        },
    )
    .await;
    first.terminate();
    assert!(first.wait_exit(Duration::from_secs(30)).await.success());

    // A payment result for the order (published by ops, who may), taken
    // ten times by a replica that dies before settling it, and once more.
    let payment_id = "3c1d2e4f-5a6b-5c7d-8e9f-0a1b2c3d4e5f";
    let event = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: order.order_id.clone(),
            customer_id: "c-unsettled".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let subject = format!("payments.c-unsettled.{payment_id}.authorized");
    assert!(
        publish_acked(
            &ops,
            &subject,
            event_headers(
                &PaymentAuthorized::full_name(),
                &format!("{payment_id}.authorized")
            ),
            event.encode_to_vec(),
        )
        .await
    );
    let consumer: jetstream::consumer::PullConsumer = ops
        .get_stream("PAYMENTS")
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    wait_until(
        "ten unsettled deliveries and the advisory kept",
        Duration::from_secs(120),
        || async {
            if let Ok(mut batch) = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
            {
                // Dropped unsettled, as a killed process leaves them.
                while let Some(Ok(_)) = batch.next().await {}
            }
            let Ok(mut advisories) = ops.get_stream("ADVISORIES").await else {
                return false;
            };
            advisories
                .info()
                .await
                .is_ok_and(|info| info.state.messages > 0)
        },
    )
    .await;

    // The owner back: it dead-letters the message, needing nothing it may
    // not do.
    let mut second = nats.start_service("order-service").await;
    wait_until(
        "the dead letter to be stored",
        Duration::from_secs(30),
        || async {
            let Ok(mut letters) = ops.get_stream("DEADLETTERS").await else {
                return false;
            };
            letters
                .info()
                .await
                .is_ok_and(|info| info.state.messages > 0)
        },
    )
    .await;
    let mut admin = DeadLetterServiceClient::connect(second.endpoint())
        .await
        .unwrap();
    let letters = admin
        .list_dead_letters(ListDeadLettersRequest {
            consumer: durable.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original_subject, subject);
    assert!(
        letters[0].reason.contains("never settled"),
        "{}",
        letters[0].reason
    );
    wait_until(
        "the advisory to be acked",
        Duration::from_secs(20),
        || async {
            let Ok(stream) = ops.get_stream("ADVISORIES").await else {
                return false;
            };
            stream
                .consumer_info(&watch)
                .await
                .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
        },
    )
    .await;

    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(30)).await.success());
    for (run, process) in [("first", &first), ("second", &second)] {
        let log = process.log();
        assert!(
            violations(&log).is_empty(),
            "permission violations of the order service ({run} run):\n{}",
            violations(&log).join("\n")
        );
    }
}
