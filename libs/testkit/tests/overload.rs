//! Overload and deadlines at the gRPC edge: beyond its concurrency limit a
//! replica refuses at once instead of queueing, health checks are never
//! refused, and a caller's deadline bounds the call even when NATS is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_testkit::{NatsServer, process::ServiceProcess, services::order_request, wait_until};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn order_binary() -> String {
    orderflow_testkit::process::workspace_binary("order-service")
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_limit_a_replica_sheds_calls_at_once_but_never_health_checks() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(
        &order_binary(),
        &nats.url(),
        &[("GRPC_MAX_CONCURRENT_CALLS", "1")],
    )
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for connection in 0..4 {
        let client = OrderServiceClient::new(channel(&service.endpoint()).await);
        for i in 0..75 {
            let mut client = client.clone();
            calls.spawn(async move {
                client
                    .create_order(order_request(
                        "c-load",
                        1,
                        1,
                        &format!("r-load-{connection}-{i}"),
                    ))
                    .await
                    .map(|_| ())
                    .map_err(|status| status.code())
            });
        }
    }
    let health = HealthClient::new(channel(&service.endpoint()).await);
    let (mut ok, mut shed) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => shed += 1,
            Err(other) => panic!("an overloaded replica answered {other:?}"),
        }
        // Probes are never shed, even while calls are.
        let status = health
            .clone()
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    assert!(
        shed > 0,
        "300 concurrent calls against a limit of 1 shed none"
    );
    assert!(ok > 0, "the replica still served calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_bounds_a_call_when_nats_is_gone() {
    let mut nats = NatsServer::start();
    if nats.is_external() {
        eprintln!("skipped: this test kills its own nats-server");
        return;
    }
    let service = ServiceProcess::start(&order_binary(), &nats.url(), &[]).await;
    let mut client = OrderServiceClient::new(channel(&service.endpoint()).await);
    nats.kill();

    let mut request = tonic::Request::new(order_request("c-deadline", 1, 1, "r-deadline"));
    request.set_timeout(Duration::from_millis(500));
    let status = client.create_order(request).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "got {status:?}"
    );

    // Without a deadline of its own the call still ends: UNAVAILABLE once
    // JetStream's ack does not come, never a hang.
    let status = client
        .create_order(order_request("c-deadline", 1, 1, "r-deadline-2"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // And the service comes back by itself with NATS.
    nats.restart();
    wait_until(
        "CreateOrder to succeed again",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                client
                    .create_order(order_request("c-deadline", 1, 1, "r-deadline-3"))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
}
