//! WatchOrder: every change streamed until the order settles, and open
//! watches ended by shutdown.

use super::*;

/// How long a test waits for the next message of a server stream: as long as
/// `wait_for_status` waits for a change, since the next message is one.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// The next message of a server stream, or a test failure naming `what` when
/// none (not even the stream's end) arrives within [`STREAM_TIMEOUT`], so a
/// stream that stalls fails the test instead of hanging it.
async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    what: &str,
) -> Result<Option<T>, tonic::Status> {
    match tokio::time::timeout(STREAM_TIMEOUT, stream.message()).await {
        Ok(message) => message,
        Err(_) => panic!("timed out after {STREAM_TIMEOUT:?} waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_streams_every_change_until_the_order_settles() {
    use orderflow_proto::order::v1::WatchOrderRequest;
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;

    let order = client
        .create_order(order_request("c-watch", 1, 5, "r-watch"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut stream = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_message(
        &mut stream,
        "the watch's first message (the order as created)",
    )
    .await
    .expect("the watch's first message")
    .expect("the watch answers the order before it changes")
    .order
    .expect("the first message carries the order");
    assert_eq!(first.status, OrderStatus::PendingPayment as i32);

    // The payment service starts only now: the next message is a real change.
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let next = next_message(&mut stream, "the watch's second message (the confirmation)")
        .await
        .expect("the watch's second message")
        .expect("the watch sends the confirmation before it ends")
        .order
        .expect("the second message carries the order");
    assert_eq!(next.status, OrderStatus::Confirmed as i32);
    assert_eq!(next.version, 2);
    assert!(
        next_message(&mut stream, "the watch to end once the order settled")
            .await
            .expect("the watch ends cleanly")
            .is_none(),
        "the stream ends once settled"
    );

    // Watching a settled order answers its state and ends.
    let mut again = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let settled = next_message(&mut again, "the settled order's watch to answer its state")
        .await
        .expect("the settled order's watch answers")
        .expect("the settled order's watch sends its state before it ends")
        .order
        .expect("the message carries the order");
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(settled.version, 2);
    assert!(
        next_message(&mut again, "the settled order's watch to end")
            .await
            .expect("the settled order's watch ends cleanly")
            .is_none(),
        "a settled order's watch ends after its one message"
    );

    let missing = client
        .watch_order(WatchOrderRequest {
            order_id: String::from("00000000-0000-4000-8000-000000000000"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = client
        .watch_order(WatchOrderRequest {
            order_id: String::from("nope"),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watches_instead_of_waiting_for_them() {
    use orderflow_proto::order::v1::WatchOrderRequest;
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut client = order_client(&orders).await;
    // No payment service: the order stays pending and the watch stays open.
    let order = client
        .create_order(order_request("c-watch-stop", 1, 5, "r-watch-stop"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let mut stream = client
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    next_message(&mut stream, "the watch's first message (the pending order)")
        .await
        .expect("the watch's first message")
        .expect("the watch answers the pending order");

    // A shutdown that waited for the watch would never return (the watch
    // has no end of its own); the bound is well above SHUTDOWN_TIMEOUT_SECS
    // (10 s here), so it fails only a stop that waits for the watch.
    tokio::time::timeout(Duration::from_secs(30), orders.stop())
        .await
        .expect("the order service stops although a watch is open")
        .unwrap();
    let ended = next_message(&mut stream, "shutdown to end the open watch")
        .await
        .expect_err("shutdown ends the watch with an error, not a clean end");
    assert_eq!(ended.code(), tonic::Code::Unavailable);
}
