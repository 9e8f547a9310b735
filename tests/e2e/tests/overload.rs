//! Overload and deadlines at the gRPC edge: beyond its concurrency limit a
//! replica refuses at once instead of queueing, health checks are never
//! refused, and a caller's deadline bounds the call even when NATS is gone.
//!
//! Both tests stall or kill their broker, so each starts a `nats-server` of its own
//! even when `ORDERFLOW_TEST_NATS_URL` names a shared one: they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use orderflow_e2e::services::order_request;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use orderflow_testkit::{NatsServer, process::ServiceProcess, wait_until};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a shed call may take: "at once" on a loaded 2-core CI machine,
/// yet far below the 5 s a held call keeps its permit with NATS gone.
const SHED_WITHIN: Duration = Duration::from_secs(1);

/// With NATS stalled a CreateOrder holds its permit until JetStream's 5 s
/// ack timeout; a held call shorter than this did not hold the permit long
/// enough to tell shedding from waiting.
const HELD_AT_LEAST: Duration = Duration::from_secs(3);

/// The caller's deadline in the deadline test.
const DEADLINE: Duration = Duration::from_secs(1);

/// How late after its deadline a call may end: generous for a loaded CI
/// machine, and still well below the 5 s after which the service answers
/// UNAVAILABLE by itself, so a service ignoring the deadline fails.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

fn order_binary() -> String {
    orderflow_testkit::process::workspace_binary("order-service")
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("the endpoint is a URI")
        .connect()
        .await
        .expect("the service accepts a connection")
}

async fn liveness(health: &HealthClient<tonic::transport::Channel>) -> Result<i32, Code> {
    health
        .clone()
        .check(HealthCheckRequest {
            service: String::from("liveness"),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_limit_a_replica_sheds_calls_at_once_but_never_health_checks() {
    let mut nats = NatsServer::start_own();
    let service = ServiceProcess::start(
        &order_binary(),
        &nats.url(),
        &[("GRPC_MAX_CONCURRENT_CALLS", "1")],
    )
    .await;
    let client = OrderServiceClient::new(channel(&service.endpoint()).await);
    let health = HealthClient::new(channel(&service.endpoint()).await);

    // At once: with NATS stalled the one permit is held for seconds by
    // whichever call takes it, so a replica that waited for a free permit
    // instead of shedding would answer the others only seconds later.
    // Stalled, not killed: with the connection known down, calls are
    // answered at once (the broker gate) and hold no permit.
    nats.pause();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let mut client = client.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let result = client
                .create_order(order_request("c-held", 1, 1, &format!("r-held-{i}")))
                .await;
            (
                result.map(|_| ()).map_err(|s| s.code()),
                Instant::now(),
                started.elapsed(),
            )
        });
    }
    let (mut held, mut shed, mut probed) = (Vec::new(), Vec::new(), None);
    while let Some(joined) = calls.join_next().await {
        let (result, ended, took) = joined.expect("a call task panicked");
        match result {
            Err(Code::ResourceExhausted) => {
                shed.push((ended, took));
                if probed.is_none() {
                    // While the permit is held a probe is answered all the same.
                    assert_eq!(
                        liveness(&health).await,
                        Ok(ServingStatus::Serving as i32),
                        "a liveness probe while every permit is taken"
                    );
                    probed = Some(Instant::now());
                }
            }
            other => held.push((other, ended, took)),
        }
    }
    assert_eq!(
        held.len(),
        1,
        "one call holds the one permit, the other seven are shed: held {held:?}"
    );
    let (_, held_until, held_for) = held[0];
    assert!(
        held_for >= HELD_AT_LEAST,
        "the held call took only {held_for:?}; it must hold its permit for seconds \
         for this test to tell shedding from queueing"
    );
    let probed = probed.expect("some call was shed");
    assert!(
        probed < held_until,
        "the liveness probe was answered only after the permit was free again"
    );
    for (ended, took) in shed {
        assert!(
            took < SHED_WITHIN && ended < held_until,
            "a call was shed after {took:?}, not at once while the permit was held \
             ({held_for:?}): it waited for the permit"
        );
    }

    // Under real load with NATS back: calls are served or shed, nothing else,
    // and health is answered throughout.
    nats.resume();
    wait_until(
        "readiness and CreateOrder to be back with NATS",
        Duration::from_secs(30),
        || {
            let (mut client, mut health) = (client.clone(), health.clone());
            async move {
                health
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
                    && client
                        .create_order(order_request("c-load", 1, 1, "r-load-back"))
                        .await
                        .is_ok()
            }
        },
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
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "readiness under load"
        );
    }
    assert!(
        shed > 0,
        "300 concurrent calls against a limit of 1 shed none"
    );
    assert!(ok > 0, "the replica still served calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_bounds_a_call_when_nats_is_gone() {
    let mut nats = NatsServer::start_own();
    let service = ServiceProcess::start(&order_binary(), &nats.url(), &[]).await;
    let mut client = OrderServiceClient::new(channel(&service.endpoint()).await);
    nats.kill();

    let mut request = tonic::Request::new(order_request("c-deadline", 1, 1, "r-deadline"));
    request.set_timeout(DEADLINE);
    let started = Instant::now();
    let status = client.create_order(request).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "got {status:?}"
    );
    // Once the replica has seen its connection go, the call is refused at
    // once (UNAVAILABLE, the broker gate); before that, the append waits for
    // its ack until the caller's deadline. Either way it ends near the
    // deadline, which is what shows the deadline was kept.
    assert!(
        took <= DEADLINE + DEADLINE_MARGIN,
        "a call with a {DEADLINE:?} deadline ended after {took:?} ({status:?}): \
         the service did not keep the caller's deadline"
    );

    // Without a deadline of its own the call still ends: UNAVAILABLE, at
    // once or when JetStream's ack does not come within 5 s, never a hang.
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
