//! A payment event published with the order service's credentials is
//! refused and never stored, and the reverse.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_event_sent_with_the_order_services_credentials_is_refused_and_the_reverse() {
    let nats = SecuredNats::start();
    let ops = nats.ops().await;
    orderflow_eventbus::ensure_streams(&ops, STREAMS, 1)
        .await
        .unwrap();
    let (as_orders, order_errors) = nats.connect_as("order-service", &nats.order_password).await;
    let (as_payments, payment_errors) = nats
        .connect_as("payment-service", &nats.payment_password)
        .await;

    // A forged PaymentAuthorized, well-formed in every header, from the
    // order service: refused by the server, never stored.
    let payment_id = "0d2a6f3c-1b5e-4c7d-8e9f-a0b1c2d3e4f5";
    let forged = PaymentAuthorized {
        payment: Some(Payment {
            payment_id: payment_id.into(),
            order_id: "7e57-order".into(),
            status: PaymentStatus::Authorized as i32,
            version: 1,
            ..Default::default()
        }),
    };
    let subject = format!("payments.c-forged.{payment_id}.authorized");
    let headers = event_headers(
        &PaymentAuthorized::full_name(),
        &format!("{payment_id}.authorized"),
    );
    assert!(
        !publish_acked(
            &as_orders,
            &subject,
            headers.clone(),
            forged.encode_to_vec()
        )
        .await,
        "JetStream acknowledged a payment event from the order service"
    );
    order_errors.wait_for_violation(&subject).await;
    assert!(!stored(&ops, "PAYMENTS", &subject).await);
    // Its own events are accepted: the refusal is about the subject.
    let own = "orders.c-own.0d2a6f3c-1b5e-4c7d-8e9f-000000000001.created";
    assert!(
        publish_acked(
            &as_orders,
            own,
            event_headers(&OrderCreated::full_name(), "own-order"),
            Vec::new()
        )
        .await
    );
    assert!(stored(&ops, "ORDERS", own).await);

    // The reverse: an order event from the payment service.
    let forged_order = "orders.c-forged.0d2a6f3c-1b5e-4c7d-8e9f-000000000002.created";
    assert!(
        !publish_acked(
            &as_payments,
            forged_order,
            event_headers(&OrderCreated::full_name(), "forged-order"),
            Vec::new()
        )
        .await,
        "JetStream acknowledged an order event from the payment service"
    );
    payment_errors.wait_for_violation(forged_order).await;
    assert!(!stored(&ops, "ORDERS", forged_order).await);
    assert!(publish_acked(&as_payments, &subject, headers, forged.encode_to_vec()).await);
    assert!(stored(&ops, "PAYMENTS", &subject).await);

    // Nor may a service change the other's durable consumer (by name, or
    // through the unnamed creation subject whose request names it), take
    // its messages, read its replies, or delete a stream.
    let hijack = r#"{"stream_name":"ORDERS","config":{"name":"payment-service-orders","ack_policy":"explicit","filter_subjects":["orders.none"]}}"#;
    for subject in [
        "$JS.API.CONSUMER.CREATE.ORDERS",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.DELETE.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-cancellations",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-cancellations",
        "$JS.API.CONSUMER.DELETE.ORDERS.payment-service-payment-failures",
    ] {
        let _ = as_orders.client().publish(subject, hijack.into()).await;
        order_errors.wait_for_violation(subject).await;
    }
    // Dead letters are listed with direct gets: neither service may create
    // a consumer on DEADLETTERS, ordered or not.
    let reader =
        r#"{"stream_name":"DEADLETTERS","config":{"name":"ordered-x","ack_policy":"none"}}"#;
    let subject = "$JS.API.CONSUMER.CREATE.DEADLETTERS.ordered-x";
    let _ = as_orders.client().publish(subject, reader.into()).await;
    order_errors.wait_for_violation(subject).await;
    let _ = as_payments.client().publish(subject, reader.into()).await;
    payment_errors.wait_for_violation(subject).await;
    let _ = as_orders
        .client()
        .subscribe("_INBOX.payment-service.>")
        .await;
    order_errors
        .wait_for_violation("_INBOX.payment-service.>")
        .await;
    assert!(as_payments.delete_stream("ORDERS").await.is_err());
    payment_errors
        .wait_for_violation("$JS.API.STREAM.DELETE.ORDERS")
        .await;
    assert!(ops.get_stream("ORDERS").await.is_ok());
}
