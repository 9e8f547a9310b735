//! The read-only `events-reader` of `deploy/nats/auth.conf`, as the event
//! readers of `examples/` use it: it reads ORDERS and PAYMENTS through
//! consumers it names itself, and may publish no event, touch no service's
//! durable consumer or inbox, and change or delete no stream or message.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_reader_reads_both_streams_through_its_own_consumers_and_nothing_else() {
    let nats = SecuredNats::start();
    let ops = nats.ops().await;
    orderflow_eventbus::ensure_streams(&ops, STREAMS, 1)
        .await
        .unwrap();
    // One event in each stream, written by its own service.
    let (as_orders, _) = nats.connect_as("order-service", &nats.order_password).await;
    let (as_payments, _) = nats
        .connect_as("payment-service", &nats.payment_password)
        .await;
    let order_subject = "orders.c-read.0d2a6f3c-1b5e-4c7d-8e9f-00000000a001.created";
    let payment_subject = "payments.c-read.0d2a6f3c-1b5e-4c7d-8e9f-00000000b001.authorized";
    assert!(
        publish_acked(
            &as_orders,
            order_subject,
            event_headers(&OrderCreated::full_name(), "read-order"),
            Vec::new()
        )
        .await
    );
    assert!(
        publish_acked(
            &as_payments,
            payment_subject,
            event_headers(&PaymentAuthorized::full_name(), "read-payment"),
            Vec::new()
        )
        .await
    );

    let (reader, errors) = nats
        .connect_as("events-reader", &nats.reader_password)
        .await;
    for (stream_name, subject) in [("ORDERS", order_subject), ("PAYMENTS", payment_subject)] {
        let mut stream = reader
            .get_stream(stream_name)
            .await
            .unwrap_or_else(|e| panic!("events-reader cannot look up {stream_name}: {e}"));
        let last = stream.info().await.unwrap().state.last_sequence;
        assert!(last >= 1, "{stream_name} is empty");
        let name = format!("events-reader-test-{}", stream_name.to_lowercase());
        let consumer = stream
            .create_consumer(pull::Config {
                name: Some(name.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| {
                panic!("events-reader cannot create a consumer of {stream_name}: {e}")
            });
        let mut messages = consumer
            .fetch()
            .max_messages(10)
            .messages()
            .await
            .unwrap_or_else(|e| panic!("events-reader cannot pull from {stream_name}: {e}"));
        let mut subjects = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.unwrap_or_else(|e| panic!("pulling {stream_name}: {e}"));
            subjects.push(message.subject.to_string());
        }
        assert_eq!(
            subjects,
            [subject],
            "what events-reader read from {stream_name}"
        );
        stream.delete_consumer(&name).await.unwrap_or_else(|e| {
            panic!("events-reader cannot delete its consumer of {stream_name}: {e}")
        });
    }
    assert!(
        errors.0.lock().unwrap().is_empty(),
        "reading was refused: {:?}",
        errors.0.lock().unwrap()
    );

    // No event of either service, whatever its headers: refused, never stored.
    for (subject, ce_type) in [
        (
            "orders.c-read.0d2a6f3c-1b5e-4c7d-8e9f-00000000a002.created",
            OrderCreated::full_name(),
        ),
        (
            "payments.c-read.0d2a6f3c-1b5e-4c7d-8e9f-00000000b002.authorized",
            PaymentAuthorized::full_name(),
        ),
    ] {
        assert!(
            !publish_acked(
                &reader,
                subject,
                event_headers(&ce_type, subject),
                Vec::new()
            )
            .await,
            "JetStream acknowledged an event from events-reader"
        );
        errors.wait_for_violation(subject).await;
        let stream = if subject.starts_with("orders.") {
            "ORDERS"
        } else {
            "PAYMENTS"
        };
        assert!(!stored(&ops, stream, subject).await);
    }

    // Not the services' durable consumers (by name, or through the unnamed
    // creation subject whose request may name any), not their acks, not
    // the other streams, and no change to a stream or its messages.
    let hijack = r#"{"stream_name":"ORDERS","config":{"name":"payment-service-orders","ack_policy":"explicit","filter_subjects":["orders.none"]}}"#;
    for subject in [
        "$JS.API.CONSUMER.CREATE.ORDERS",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.DELETE.ORDERS.payment-service-orders",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.DELETE.ORDERS.payment-service-orders-replays",
        "$JS.API.CONSUMER.CREATE.ORDERS.payment-service-cancellations",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-payment-failures",
        "$JS.API.CONSUMER.DELETE.ORDERS.payment-service-cancellations",
        "$JS.API.CONSUMER.CREATE.ORDERS.order-service-deadlines",
        "$JS.API.CONSUMER.MSG.NEXT.ORDERS.order-service-deadlines",
        "$JS.API.CONSUMER.DELETE.ORDERS.order-service-deadlines",
        "$JS.API.CONSUMER.CREATE.PAYMENTS.order-service-payments",
        "$JS.API.CONSUMER.MSG.NEXT.PAYMENTS.order-service-payments",
        "$JS.API.CONSUMER.DELETE.PAYMENTS.order-service-payments",
        "$JS.ACK.ORDERS.payment-service-orders.1.1.1.0.0",
        "$JS.API.STREAM.INFO.DEADLETTERS",
        "$JS.API.STREAM.INFO.ADVISORIES",
        "$JS.API.STREAM.UPDATE.ORDERS",
        "$JS.API.STREAM.PURGE.PAYMENTS",
        "$JS.API.STREAM.MSG.DELETE.ORDERS",
        "$JS.API.STREAM.DELETE.PAYMENTS",
    ] {
        let _ = reader.client().publish(subject, hijack.into()).await;
        errors.wait_for_violation(subject).await;
    }
    assert!(reader.delete_stream("ORDERS").await.is_err());
    errors
        .wait_for_violation("$JS.API.STREAM.DELETE.ORDERS")
        .await;
    // Nor the services' replies, nor the events by core subscription.
    for subject in [
        "_INBOX.order-service.>",
        "_INBOX.payment-service.>",
        "orders.>",
    ] {
        let _ = reader.client().subscribe(subject).await;
        errors.wait_for_violation(subject).await;
    }
    for (stream, subject) in [("ORDERS", order_subject), ("PAYMENTS", payment_subject)] {
        assert!(stored(&ops, stream, subject).await, "{subject} is gone");
    }
}
