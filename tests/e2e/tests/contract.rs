//! The public contract around the saga: event headers, one trace across both
//! services, health, dead letters, bad input naming its field, and
//! FAILED_PRECONDITION for what an order's or a payment's state forbids (the
//! whole table of malformed input is in `bad_input/table.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use orderflow_eventbus::subject::aggregate_filter;

use orderflow_e2e::services::{
    health_client, order_client, order_request, payment_client, simulated_gateway,
    spawn_order_service, spawn_payment_service, wait_for_status,
};
use orderflow_proto::{
    Name,
    order::v1::{CancelOrderRequest, OrderConfirmed, OrderCreated, OrderStatus},
    payment::v1::{ListPaymentsRequest, PaymentAuthorized, RefundPaymentRequest},
};
use orderflow_testkit::{
    NatsServer,
    streams::{jetstream, read_all},
    wait_until,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_types::StatusExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_contract_headers_and_the_callers_trace() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let mut client = order_client(&orders).await;

    let mut request = tonic::Request::new(order_request("c-trace", 1, 42, "r-trace"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let order = client
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;

    let js = jetstream(&nats.url()).await;
    let order_events = read_all(
        &js,
        "ORDERS",
        &aggregate_filter("orders", &order.customer_id, &order.order_id),
    )
    .await;
    let payment_events = read_all(&js, "PAYMENTS", ">").await;
    let created = &order_events[0];
    let authorized = &payment_events[0];
    let confirmed = &order_events[1];
    assert_eq!(
        created.header("ce-type").unwrap(),
        OrderCreated::full_name()
    );
    assert_eq!(
        authorized.header("ce-type").unwrap(),
        PaymentAuthorized::full_name()
    );
    assert_eq!(
        confirmed.header("ce-type").unwrap(),
        OrderConfirmed::full_name()
    );

    for event in [created, authorized, confirmed] {
        for name in [
            "Nats-Msg-Id",
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
            "content-type",
            "traceparent",
        ] {
            assert!(
                event.header(name).is_some(),
                "{name} missing on {}",
                event.subject
            );
        }
        assert_eq!(event.header("ce-specversion").unwrap(), "1.0");
        assert_eq!(
            event.header("content-type").unwrap(),
            "application/protobuf"
        );
        assert_eq!(event.header("ce-id"), event.header("Nats-Msg-Id"));
        assert!(event.header("tracestate").is_none_or(|v| !v.is_empty()));
        // One trace: the caller's, through the order service, NATS, the
        // payment service, NATS again and back into the order service.
        let traceparent = event.header("traceparent").unwrap();
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(TRACE_ID),
            "{} has traceparent {traceparent}",
            event.subject
        );
    }
    assert_eq!(
        created.header("ce-source").unwrap(),
        "/orderflow/order-service"
    );
    assert_eq!(
        authorized.header("ce-source").unwrap(),
        "/orderflow/payment-service"
    );
    // The body is the protobuf payload, decodable from proto/ alone.
    let decoded = <OrderCreated as prost::Message>::decode(created.payload.as_slice()).unwrap();
    assert_eq!(decoded.order.unwrap().order_id, order.order_id);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

async fn health(
    client: &tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, Code> {
    client
        .clone()
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_nats_while_liveness_stays_serving() {
    let mut nats = NatsServer::start_own();
    let orders = spawn_order_service(&nats.url()).await;
    let probe = health_client(&orders).await;
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;

    for service in ["", "orderflow.order.v1.OrderService", "liveness"] {
        wait_until(
            &format!("{service:?} to be SERVING"),
            Duration::from_secs(10),
            || async { health(&probe, service).await == Ok(serving) },
        )
        .await;
    }
    assert_eq!(health(&probe, "no.such.Service").await, Err(Code::NotFound));

    nats.kill();
    wait_until(
        "readiness to turn NOT_SERVING",
        Duration::from_secs(15),
        || async { health(&probe, "").await == Ok(not_serving) },
    )
    .await;
    assert_eq!(
        health(&probe, "orderflow.order.v1.OrderService").await,
        Ok(not_serving)
    );
    assert_eq!(
        health(&probe, "liveness").await,
        Ok(serving),
        "liveness ignores the broker"
    );

    nats.restart();
    wait_until("readiness to recover", Duration::from_secs(30), || async {
        health(&probe, "").await == Ok(serving)
    })
    .await;
    // And it works again.
    let mut client = order_client(&orders).await;
    client
        .create_order(order_request("c-health", 1, 1, "r-after-outage"))
        .await
        .unwrap();

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_consumer_goes_on() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let js = jetstream(&nats.url()).await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("ce-type", "orderflow.order.v1.OrderTeleported");
    headers.insert("Nats-Msg-Id", "poison-1");
    // On a subject the payment service receives: what it receives it
    // handles or dead-letters, whatever the subject says.
    js.publish_with_headers("orders.poison.x.created", headers, "not protobuf".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let letters = std::sync::Mutex::new(Vec::new());
    wait_until(
        "a dead letter from the payment service",
        Duration::from_secs(20),
        || async {
            let found = read_all(
                &js,
                "DEADLETTERS",
                "deadletter.ORDERS.payment-service-orders",
            )
            .await;
            let done = !found.is_empty();
            *letters.lock().unwrap() = found;
            done
        },
    )
    .await;
    let letter = letters.into_inner().unwrap().remove(0);
    assert_eq!(
        letter.header("Orderflow-Original-Subject").unwrap(),
        "orders.poison.x.created"
    );
    assert_eq!(
        letter.header("Orderflow-Original-Stream").unwrap(),
        "ORDERS"
    );
    assert_eq!(letter.header("Orderflow-Delivery-Count").unwrap(), "1");
    assert!(
        letter
            .header("Orderflow-Dead-Letter-Reason")
            .unwrap()
            .contains("unknown order event type"),
    );
    assert_eq!(letter.payload, b"not protobuf");
    // The consumer goes on with the next order.
    let mut client = order_client(&orders).await;
    let order = client
        .create_order(order_request("c-poison", 1, 3, "r-after-poison"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_for_status(&client, &order.order_id, OrderStatus::Confirmed).await;

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

/// The `google.rpc.BadRequest` field violations of an `INVALID_ARGUMENT`,
/// as `(field, description)`, decoded from the status details a client sees.
fn field_violations(status: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no google.rpc.BadRequest details in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

/// Asserts that `status` names exactly `fields` in its BadRequest details,
/// each with a description of what is wrong.
fn assert_names_fields(status: &tonic::Status, fields: &[&str]) {
    let violations = field_violations(status);
    let named: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(named, fields, "the fields named by {status:?}");
    for (field, description) in &violations {
        assert!(
            !description.trim().is_empty(),
            "{field} is named without saying what is wrong with it"
        );
    }
}

// One malformed request per service is enough here: the whole table of bad
// input to every RPC, with its exact fields, is in `bad_input/table.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_the_field_named() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let mut order = order_client(&orders).await;
    let mut payment = payment_client(&payments).await;

    let bad_id = order
        .cancel_order(CancelOrderRequest {
            order_id: String::from("not-a-uuid"),
        })
        .await
        .unwrap_err();
    assert_names_fields(&bad_id, &["order_id"]);

    let bad_item = order
        .create_order(order_request("c-bad", 0, 1, "r-bad-quantity"))
        .await
        .unwrap_err();
    assert_names_fields(&bad_item, &["items[0].quantity"]);

    let bad_payment = payment
        .refund_payment(RefundPaymentRequest {
            payment_id: String::from("not-a-uuid"),
        })
        .await
        .unwrap_err();
    assert_names_fields(&bad_payment, &["payment_id"]);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

// What is refused here is well-formed but not allowed in the order's or
// payment's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_state_forbids_is_answered_failed_precondition() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let mut order = order_client(&orders).await;
    let mut payment = payment_client(&payments).await;

    // A declined payment cannot be refunded; a failed order cannot be cancelled.
    let declined = order
        .create_order(order_request("c-bad", 1, 20_000, "r-declined"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_for_status(&order, &declined.order_id, OrderStatus::PaymentFailed).await;
    let refused = order
        .cancel_order(CancelOrderRequest {
            order_id: declined.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let mut listed = Vec::new();
    wait_until(
        "the declined payment to be listed",
        Duration::from_secs(20),
        || {
            let (payment, order_id) = (payment.clone(), declined.order_id.clone());
            payment_listed(payment, order_id)
        },
    )
    .await;
    listed.extend(
        payment
            .list_payments(ListPaymentsRequest {
                order_id: declined.order_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .payments,
    );
    let not_refundable = payment
        .refund_payment(RefundPaymentRequest {
            payment_id: listed[0].payment_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_refundable.code(), Code::FailedPrecondition);

    // The services still serve after all of that.
    order
        .create_order(order_request("c-bad", 1, 1, "r-still-fine"))
        .await
        .unwrap();

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

async fn payment_listed(
    mut client: orderflow_proto::payment::v1::payment_service_client::PaymentServiceClient<
        tonic::transport::Channel,
    >,
    order_id: String,
) -> bool {
    client
        .list_payments(ListPaymentsRequest {
            order_id,
            ..Default::default()
        })
        .await
        .map(|r| !r.into_inner().payments.is_empty())
        .unwrap_or(false)
}
