//! While the broker is known to be down, calls are answered at once with
//! the broker named and retry advice, and succeed again once it is back.

use orderflow_proto::order::v1::CancelOrderRequest;
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
