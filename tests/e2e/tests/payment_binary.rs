//! The `payment-service` binary: its command line, its configuration errors,
//! and SIGTERM while payments are in flight.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{process::Command, time::Duration};

use orderflow_e2e::services::{
    order_client, order_request, simulated_gateway, spawn_order_service, spawn_payment_service,
    wait_for_status,
};
use orderflow_proto::{
    Name,
    order::v1::OrderStatus,
    payment::v1::{PaymentAuthorized, PaymentDeclined},
};
use orderflow_testkit::{
    NatsServer,
    process::ServiceProcess,
    streams::{jetstream, read_all},
    wait_until,
};

/// Built by `cargo build --workspace --bins`, as `scripts/test.sh` does first.
static BINARY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| orderflow_testkit::process::workspace_binary("payment-service"));

#[test]
fn help_lists_the_simulator_and_gateway_settings() {
    let output = Command::new(&*BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for name in [
        "NATS_URL",
        "GRPC_ADDR",
        "SIM_DECLINE_ABOVE_UNITS",
        "SIM_LATENCY_MS",
        "SIM_FAILURE_RATE",
        "GATEWAY_TIMEOUT_MS",
        "GATEWAY_URL",
    ] {
        assert!(
            text.contains(name),
            "--help does not mention {name}:\n{text}"
        );
    }
    assert!(text.contains("[default: 0.0.0.0:50052]"));
    assert!(text.contains("[default: 10000]"));
}

#[test]
fn bad_simulator_settings_exit_2() {
    let output = Command::new(&*BINARY)
        .env("SIM_FAILURE_RATE", "2")
        .env("SIM_LATENCY_MS", "soon")
        .env("GATEWAY_URL", "https://gateway.example")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    assert!(
        text.contains("SIM_FAILURE_RATE")
            && text.contains("SIM_LATENCY_MS")
            && text.contains("GATEWAY_URL: expected an http:// URL"),
        "{text}"
    );
}

async fn decided(js: &async_nats::jetstream::Context) -> usize {
    read_all(js, "PAYMENTS", ">")
        .await
        .iter()
        .filter(|m| {
            let t = m.header("ce-type");
            t.as_deref() == Some(PaymentAuthorized::full_name().as_str())
                || t.as_deref() == Some(PaymentDeclined::full_name().as_str())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_work_exits_0_and_leaves_no_charge_unrecorded() {
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let mut service =
        ServiceProcess::start(&BINARY, &nats.url(), &[("SIM_LATENCY_MS", "25")]).await;
    let mut client = order_client(&orders).await;

    let total = 60;
    let mut ids = Vec::new();
    for i in 0..total {
        let order = client
            .create_order(order_request(
                "c-pay-term",
                1,
                2,
                &format!("r-pay-term-{i}"),
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        ids.push(order.order_id);
    }
    let js = jetstream(&nats.url()).await;
    wait_until(
        "the binary to decide some payments",
        Duration::from_secs(20),
        || async { decided(&js).await >= 5 },
    )
    .await;

    service.terminate();
    let status = service.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    let by_binary = decided(&js).await;

    // A new replica (with a new gateway ledger) finishes the rest. If the
    // binary had charged anything without recording it, the new replica would
    // charge it again: its charge count would exceed what was left.
    let gateway = simulated_gateway();
    let payments = spawn_payment_service(&nats.url(), gateway.clone(), &[]).await;
    for id in &ids {
        wait_for_status(&client, id, OrderStatus::Confirmed).await;
    }
    assert_eq!(
        decided(&js).await,
        total,
        "exactly one payment event per order"
    );
    assert_eq!(gateway.stats().charges as usize, total - by_binary);

    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
