//! The `order-service` binary: its command line, its configuration errors,
//! and SIGTERM under load.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use orderflow_e2e::services::{
    create_order, order_client, order_client_at, order_request, simulated_gateway,
    spawn_order_service, spawn_payment_service, traced, wait_for_status,
};
use orderflow_platform::service_config::ServiceConfig;
use orderflow_proto::order::v1::{GetOrderRequest, OrderStatus};
use orderflow_testkit::{
    NatsServer,
    process::ServiceProcess,
    streams::{jetstream, read_all},
    wait_until,
};

/// Built by `cargo build --workspace --bins`, as `scripts/test.sh` does first.
static BINARY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| orderflow_testkit::process::workspace_binary("order-service"));

/// The defaults docs/configuration.md promises for the order
/// service, pinned here so that a default dropped from the definitions (and
/// so from `--help`) fails too, not only one dropped on the way to the text.
const DOCUMENTED_DEFAULTS: &[(&str, &str)] = &[
    ("NATS_URL", "nats://127.0.0.1:4222"),
    ("GRPC_ADDR", "0.0.0.0:50051"),
    ("GRPC_MAX_CONCURRENT_CALLS", "1024"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "2048"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
    ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.0"),
    ("OTEL_SDK_DISABLED", "false"),
    ("RUST_LOG", "info"),
    ("LOG_FORMAT", "text"),
    ("SHUTDOWN_TIMEOUT_SECS", "20"),
    ("SHUTDOWN_DELAY_SECS", "0"),
    ("STREAM_REPLICAS", "1"),
    ("CONSUMER_ACK_WAIT_SECS", "30"),
    ("GRPC_REFLECTION", "true"),
    ("NATS_TLS_REQUIRED", "false"),
];

/// Whether `word` looks like an environment variable's name.
fn is_variable_name(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let output = Command::new(&*BINARY)
        .arg("--help")
        .output()
        .expect("order-service --help runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("--help prints UTF-8");
    // One line per variable: "  NAME  what it means [default: value]".
    let listed: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            (line.starts_with("  ") && is_variable_name(name)).then_some((name, line))
        })
        .collect();
    let line_of = |name: &str| -> &str {
        let lines: Vec<&str> = listed
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, line)| *line)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "--help should have one line for {name}:\n{text}"
        );
        lines[0]
    };

    // Every variable the service declares, each with its default or none.
    let declared = order_service::Config::vars();
    for var in &declared {
        let line = line_of(var.name);
        match var.default {
            Some(default) => assert!(
                line.ends_with(&format!(" [default: {default}]")),
                "--help shows {} without its default {default:?}: {line:?}",
                var.name
            ),
            None => assert!(
                !line.contains("[default:"),
                "--help shows a default for {}, which has none: {line:?}",
                var.name
            ),
        }
    }
    // And nothing the service does not read.
    let declared_names: Vec<&str> = declared.iter().map(|v| v.name).collect();
    let listed_names: Vec<&str> = listed.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        listed_names, declared_names,
        "--help lists exactly the declared variables, in order"
    );

    for (name, default) in DOCUMENTED_DEFAULTS {
        let line = line_of(name);
        assert!(
            line.ends_with(&format!(" [default: {default}]")),
            "--help shows {name} without its documented default {default:?}: {line:?}"
        );
    }
}

#[test]
fn bad_configuration_names_every_bad_variable_and_exits_2() {
    let output = Command::new(&*BINARY)
        .env("NATS_URL", "http://wrong:4222")
        .env("GRPC_ADDR", "not-an-address")
        .env("LOG_FORMAT", "xml")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        // tokio itself would panic on it.
        .env("TOKIO_WORKER_THREADS", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8(output.stderr).unwrap();
    for name in [
        "NATS_URL",
        "GRPC_ADDR",
        "LOG_FORMAT",
        "OTEL_TRACES_SAMPLER",
        "TOKIO_WORKER_THREADS",
    ] {
        assert!(
            text.contains(name),
            "the error does not name {name}:\n{text}"
        );
    }
    assert_eq!(
        Command::new(&*BINARY)
            .arg("--bogus")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

/// The threads of process `pid` that run tokio's workers (tokio names them
/// `tokio-rt-worker`).
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "tokio-rt-worker")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_worker_threads_sets_how_many_workers_the_runtime_starts() {
    let nats = NatsServer::start();
    for workers in [1, 3] {
        let service = ServiceProcess::start(
            &BINARY,
            &nats.url(),
            &[("TOKIO_WORKER_THREADS", &workers.to_string())],
        )
        .await;
        // A worker thread exists from the runtime's start, before SERVING.
        assert_eq!(
            runtime_workers(service.pid()),
            workers,
            "TOKIO_WORKER_THREADS={workers}"
        );
        let mut client = order_client_at(service.endpoint()).await;
        create_order(
            &mut client,
            order_request("c-workers", 1, 1, &format!("r-{workers}")),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sdk_disabled_events_still_carry_the_callers_trace() {
    let nats = NatsServer::start();
    let service =
        ServiceProcess::start(&BINARY, &nats.url(), &[("OTEL_SDK_DISABLED", "true")]).await;
    let mut client = order_client_at(service.endpoint()).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let request = traced(
        order_request("c-off", 1, 1, "r-off"),
        trace_id,
        "b7ad6b7169203331",
    );
    let order = create_order(&mut client, request).await;
    let js = jetstream(&nats.url()).await;
    let events = read_all(&js, "ORDERS", &format!("orders.*.{}.*", order.order_id)).await;
    let traceparent = events[0]
        .header("traceparent")
        .expect("traceparent is written");
    assert_eq!(traceparent.split('-').nth(1), Some(trace_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_and_span_ids() {
    let nats = NatsServer::start();
    let service = ServiceProcess::start(
        &BINARY,
        &nats.url(),
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,order_service=debug"),
        ],
    )
    .await;
    let mut client = order_client_at(service.endpoint()).await;
    let trace_id = "1af7651916cd43dd8448eb211c80319c";
    let request = traced(
        order_request("c-json", 1, 1, "r-json"),
        trace_id,
        "c7ad6b7169203331",
    );
    create_order(&mut client, request).await;
    let created = std::sync::Mutex::new(serde_json::Value::Null);
    wait_until(
        "the \"order created\" log line",
        Duration::from_secs(10),
        || async {
            let line = service
                .log()
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON")
                })
                .find(|v| v["message"] == "order created");
            let found = line.is_some();
            if let Some(line) = line {
                *created.lock().unwrap() = line;
            }
            found
        },
    )
    .await;
    let line = created.into_inner().unwrap();
    assert_eq!(line["trace_id"], trace_id);
    assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["span"], "grpc.server");
}

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(&*BINARY)
        .arg("probe")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_probe_follows_readiness_and_liveness() {
    let mut nats = NatsServer::start_own();
    let service = ServiceProcess::start(&BINARY, &nats.url(), &[]).await;
    let addr = service.addr.to_string();
    assert_eq!(probe(&["--addr", &addr]), (Some(0), "SERVING".into()));
    assert_eq!(
        probe(&[
            "--addr",
            &addr,
            "--service",
            "orderflow.order.v1.OrderService"
        ]),
        (Some(0), "SERVING".into())
    );

    nats.kill();
    wait_until(
        "the probe to see NOT_SERVING",
        Duration::from_secs(15),
        || async { probe(&["--addr", &addr]) == (Some(1), "NOT_SERVING".into()) },
    )
    .await;
    assert_eq!(
        probe(&["--addr", &addr, "--service", "liveness"]),
        (Some(0), "SERVING".into()),
        "liveness stays SERVING through a broker outage"
    );

    let unreachable = orderflow_testkit::process::free_addr().to_string();
    assert_eq!(probe(&["--addr", &unreachable]).0, Some(1));
    assert_eq!(probe(&["--service"]).0, Some(2), "a flag without its value");
    assert_eq!(probe(&["--addr", "nowhere"]).0, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_health_turns_first_and_calls_are_still_answered_during_the_delay() {
    let nats = NatsServer::start();
    let mut service =
        ServiceProcess::start(&BINARY, &nats.url(), &[("SHUTDOWN_DELAY_SECS", "5")]).await;
    let addr = service.addr.to_string();
    let mut client = order_client_at(service.endpoint()).await;

    service.terminate();
    wait_until(
        "readiness to turn NOT_SERVING",
        Duration::from_secs(4),
        || async { probe(&["--addr", &addr]) == (Some(1), "NOT_SERVING".into()) },
    )
    .await;
    // Load balancers are still catching up: the call is answered, not refused.
    client
        .create_order(order_request("c-delay", 1, 1, "r-delay"))
        .await
        .expect("calls are still answered during SHUTDOWN_DELAY_SECS");
    let status = service.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_no_acknowledged_order() {
    let nats = NatsServer::start();
    let mut service = ServiceProcess::start(&BINARY, &nats.url(), &[]).await;
    let client = order_client_at(service.endpoint()).await;

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut callers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut client = client.clone();
        let acknowledged = acknowledged.clone();
        callers.spawn(async move {
            for i in 0.. {
                let request = order_request("c-term", 1, 1, &format!("r-term-{worker}-{i}"));
                match client.create_order(request).await {
                    Ok(response) => acknowledged
                        .lock()
                        .unwrap()
                        .push(response.into_inner().order.unwrap().order_id),
                    Err(_) => break,
                }
            }
        });
    }
    wait_until(
        "some orders to be acknowledged",
        Duration::from_secs(20),
        || async { acknowledged.lock().unwrap().len() >= 100 },
    )
    .await;

    service.terminate();
    let status = service.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    while callers.join_next().await.is_some() {}

    // Every acknowledged order is committed, and completes once the services run.
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let mut client = order_client(&orders).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 100);
    for order_id in &acknowledged {
        client
            .get_order(GetOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged order {order_id} was lost: {e}"));
    }
    for order_id in &acknowledged {
        wait_for_status(&client, order_id, OrderStatus::Confirmed).await;
    }
    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
