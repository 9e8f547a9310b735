//! The whole saga and every read path with only each service's own
//! permissions, no violation logged but the one provoked on purpose.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_do_all_their_work_with_only_their_own_nats_permissions() {
    let nats = SecuredNats::start();
    let mut orders_process = nats.start_service("order-service").await;
    let mut payments_process = nats.start_service("payment-service").await;
    let mut orders = OrderServiceClient::connect(orders_process.endpoint())
        .await
        .unwrap();
    let mut payments = PaymentServiceClient::connect(payments_process.endpoint())
        .await
        .unwrap();
    let mut order_admin = DeadLetterServiceClient::connect(orders_process.endpoint())
        .await
        .unwrap();
    let mut payment_admin = DeadLetterServiceClient::connect(payments_process.endpoint())
        .await
        .unwrap();

    // The saga: created, charged, confirmed. Then every read path.
    let order = orders
        .create_order(order_request("c-perm", 2, 12, "r-perm"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut watch = orders
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("WatchOrder answers")
        .expect("WatchOrder streams")
        .unwrap();
    assert_eq!(first.order.unwrap().order_id, order.order_id);
    drop(watch);
    let confirmed = wait_for_status(&orders, &order.order_id, OrderStatus::Confirmed).await;
    let got = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(got.status, OrderStatus::Confirmed as i32);
    wait_until("the order in ListOrders", Duration::from_secs(20), || {
        let mut orders = orders.clone();
        let order_id = order.order_id.clone();
        async move {
            orders
                .list_orders(ListOrdersRequest {
                    customer_id: "c-perm".into(),
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| {
                    r.into_inner().orders.iter().any(|o| {
                        o.order_id == order_id && o.status == OrderStatus::Confirmed as i32
                    })
                })
        }
    })
    .await;
    let payment = payments
        .get_payment(GetPaymentRequest {
            payment_id: confirmed.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(payment.order_id, order.order_id);
    wait_until(
        "the payment in ListPayments",
        Duration::from_secs(20),
        || {
            let mut payments = payments.clone();
            let order_id = order.order_id.clone();
            async move {
                payments
                    .list_payments(ListPaymentsRequest {
                        order_id,
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().payments.len() == 1)
            }
        },
    )
    .await;

    // Cancelling a paid order: the payment service refunds it.
    orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap();
    wait_until("the refund", Duration::from_secs(20), || {
        let mut payments = payments.clone();
        let payment_id = confirmed.payment_id.clone();
        async move {
            payments
                .get_payment(GetPaymentRequest { payment_id })
                .await
                .is_ok_and(|r| {
                    r.into_inner()
                        .payment
                        .is_some_and(|p| p.status == PaymentStatus::Refunded as i32)
                })
        }
    })
    .await;

    // Dead letters: a payment result for an order that does not exist
    // (published by ops, who may) is dead-lettered by the order service,
    // once half a minute of retries has not found the order.
    let ops = nats.ops().await;
    let order_id = order_id_of(&order_request("c-dl", 1, 3, "r-dl"));
    let payment_id = "6f1c5a52-4a1c-5b2b-9d7e-0d1f2e3a4b5d";
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
    let subject = format!("payments.c-dl.{payment_id}.authorized");
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
    let letter = Arc::new(Mutex::new(None));
    wait_until("the dead letter", Duration::from_secs(90), || {
        let mut admin = order_admin.clone();
        let letter = letter.clone();
        async move {
            let found = admin
                .list_dead_letters(ListDeadLettersRequest {
                    consumer: "order-service-payments".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().dead_letters)
                .unwrap_or_default();
            let done = !found.is_empty();
            *letter.lock().unwrap() = found.into_iter().next();
            done
        }
    })
    .await;
    let letter = letter.lock().unwrap().take().unwrap();
    assert_eq!(letter.original_subject, subject);
    let listed_by_payments = payment_admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(
        listed_by_payments
            .iter()
            .any(|l| l.sequence == letter.sequence)
    );

    // The order service may not publish payment subjects, so it cannot
    // replay this one; the payment service, which writes PAYMENTS, can.
    let refused = order_admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("permission"),
        "the refusal says why: {}",
        refused.message()
    );
    let replayed = payment_admin
        .replay_dead_letter(ReplayDeadLetterRequest {
            sequence: letter.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replay_subject, format!("{subject}.replay"));
    // Delivered again to the order service, which still finds no such
    // order and, after its half minute of retries, dead-letters the
    // replay: the original is gone.
    wait_until(
        "the replay to be dead-lettered",
        Duration::from_secs(90),
        || {
            let mut admin = order_admin.clone();
            let replay_subject = replayed.replay_subject.clone();
            async move {
                admin
                    .list_dead_letters(ListDeadLettersRequest::default())
                    .await
                    .is_ok_and(|r| {
                        let letters = r.into_inner().dead_letters;
                        letters.iter().all(|l| l.sequence != letter.sequence)
                            && letters.iter().any(|l| l.original_subject == replay_subject)
                    })
            }
        },
    )
    .await;

    // Every durable consumer caught up: the acks were all permitted.
    for (stream, durable) in DURABLES {
        wait_until(
            &format!("{durable} to ack everything"),
            Duration::from_secs(20),
            || async {
                let Ok(stream) = ops.get_stream(stream).await else {
                    return false;
                };
                stream
                    .consumer_info(durable)
                    .await
                    .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
            },
        )
        .await;
    }

    // A clean stop drains through the same permissions.
    orders_process.terminate();
    payments_process.terminate();
    assert!(
        orders_process
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );
    assert!(
        payments_process
            .wait_exit(Duration::from_secs(30))
            .await
            .success()
    );

    let order_log = orders_process.log();
    let payment_log = payments_process.log();
    // The only refusal is the replay provoked above: the permissions lack
    // nothing the services do.
    let order_violations = violations(&order_log);
    assert!(
        !order_violations.is_empty()
            && order_violations
                .iter()
                .all(|l| l.contains(&format!("{subject}.replay"))),
        "unexpected permission violations of the order service:\n{}",
        order_violations.join("\n")
    );
    assert!(
        violations(&payment_log).is_empty(),
        "permission violations of the payment service:\n{}",
        violations(&payment_log).join("\n")
    );
    // And no password anywhere in what they logged, at debug level.
    assert!(order_log.lines().count() > 20 && payment_log.lines().count() > 20);
    for secret in nats.secrets() {
        for (name, log) in [
            ("order-service", &order_log),
            ("payment-service", &payment_log),
        ] {
            if let Some(line) = log.lines().find(|l| l.contains(secret)) {
                panic!("{name} logged a password: {line}");
            }
        }
    }
}
