//! While the broker is known to be down, calls are answered at once with
//! the broker named and retry advice, and succeed again once it is back;
//! while it is only stalled, a call waits for it until its own deadline.

use orderflow_eventbus::subject;
use orderflow_proto::{
    contract::{ORDERS_STREAM, PAYMENTS_STREAM},
    order::v1::CancelOrderRequest,
};
use tonic_types::StatusExt;

use super::*;

/// The status is the broker gate's (`libs/platform/src/broker_gate.rs`):
/// `UNAVAILABLE`, the broker named, `RetryInfo` in the details. A call that
/// waited for JetStream instead ends with the store's own `UNAVAILABLE`,
/// which carries no `RetryInfo`, so this tells the two paths apart without
/// timing anything.
fn assert_refused_at_the_gate(status: &tonic::Status, call: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{call}: {status:?}");
    assert!(
        status
            .message()
            .contains("the event broker (NATS) is unreachable"),
        "{call}: {status:?}"
    );
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    assert!(
        retry.is_some_and(|delay| delay > Duration::ZERO),
        "{call}: no RetryInfo delay in {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_known_down_calls_are_refused_with_retry_advice_and_succeed_once_it_is_back()
 {
    let mut nats = NatsServer::start_own();
    let orders = spawn_order_service_with(&nats.url(), &[]).await;
    let mut client = OrderServiceClient::new(channel(&orders.endpoint()));
    let placed = client
        .create_order(order_request("c-gate", 1, 2, "r-gate-1"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    nats.kill();
    // NOT_SERVING: the replica has seen its connection go.
    let not_serving = Ok(ServingStatus::NotServing as i32);
    wait_until(
        "the order service to report NOT_SERVING without NATS",
        Duration::from_secs(10),
        || async { health(&orders.endpoint(), "").await == not_serving },
    )
    .await;

    let created = client
        .create_order(order_request("c-gate", 1, 2, "r-gate-2"))
        .await
        .expect_err("CreateOrder cannot succeed without NATS");
    assert_refused_at_the_gate(&created, "CreateOrder");
    let cancelled = client
        .cancel_order(CancelOrderRequest {
            order_id: placed.order_id.clone(),
        })
        .await
        .expect_err("CancelOrder cannot succeed without NATS");
    assert_refused_at_the_gate(&cancelled, "CancelOrder");
    let read = client
        .get_order(GetOrderRequest {
            order_id: placed.order_id.clone(),
        })
        .await
        .expect_err("GetOrder cannot succeed without NATS");
    assert_refused_at_the_gate(&read, "GetOrder");

    nats.restart();
    let serving = Ok(ServingStatus::Serving as i32);
    wait_until(
        "the order service to report SERVING again",
        Duration::from_secs(30),
        || async { health(&orders.endpoint(), "").await == serving },
    )
    .await;
    let again = client
        .create_order(order_request("c-gate", 1, 2, "r-gate-2"))
        .await
        .expect("CreateOrder succeeds once NATS is back")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(again.customer_id, "c-gate");

    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_keeps_a_create_waiting_until_the_callers_deadline_not_5_s() {
    let mut nats = NatsServer::start_own();
    let orders = spawn_order_service_with(&nats.url(), &[]).await;
    // The service binds its durable consumers after it starts serving; once
    // they exist, the stall below meets the test's calls and the service's
    // periodic readiness and backlog reads, not start-up requests still in
    // flight.
    let js = jetstream(&nats.url()).await;
    let durables = [
        (ORDERS_STREAM, order_service::deadline::DURABLE.to_owned()),
        (
            PAYMENTS_STREAM,
            order_service::settlement::DURABLE.to_owned(),
        ),
        (
            subject::ADVISORY_STREAM,
            subject::max_deliveries_durable(order_service::deadline::DURABLE),
        ),
        (
            subject::ADVISORY_STREAM,
            subject::max_deliveries_durable(order_service::settlement::DURABLE),
        ),
    ];
    wait_until(
        "the order service to bind its durable consumers",
        Duration::from_secs(30),
        || async {
            for (stream, durable) in &durables {
                if !consumer_caught_up(&js, stream, durable).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let client = OrderServiceClient::new(channel(&orders.endpoint()));
    client
        .clone()
        .create_order(order_request("c-stall", 1, 2, "r-stall-0"))
        .await
        .expect("CreateOrder before the stall");

    // Stalled, not gone: the connection stays up, so nothing is refused at
    // the gate and each append waits for an ack that does not come.
    nats.pause();
    let patient = tokio::spawn({
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(order_request("c-stall", 1, 2, "r-stall-1"));
            request.set_timeout(Duration::from_secs(60));
            client.create_order(request).await
        }
    });
    // A call without a deadline, made after the patient one: it waits the
    // default 5 s and gets the store's UNAVAILABLE, not the gate's. When it
    // is answered, the patient call has waited longer than that.
    let impatient = client
        .clone()
        .create_order(order_request("c-stall", 1, 2, "r-stall-2"))
        .await
        .expect_err("CreateOrder cannot succeed while the broker is stalled");
    assert_eq!(impatient.code(), Code::Unavailable, "{impatient:?}");
    assert!(
        impatient.get_details_retry_info().is_none()
            && !impatient
                .message()
                .contains("event broker (NATS) is unreachable"),
        "a stalled broker is not a broker known down: {impatient:?}"
    );

    // The broker answers again: the patient call, still waiting within its
    // deadline, is committed. With a fixed 5 s wait it would have failed
    // before the impatient one did.
    nats.resume();
    let order = patient
        .await
        .unwrap()
        .expect("a call with a 60 s deadline waits past 5 s for the broker")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.request_id, "r-stall-1");

    orders.stop().await.unwrap();
}
