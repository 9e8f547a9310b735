//! One trace, metrics, log records and export, seen by a real OTLP receiver:
//! both service binaries export to it as they would to a collector.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use orderflow_e2e::services::{create_order, order_client_at, order_request, traced};
use orderflow_proto::order::v1::{
    GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient,
};
use orderflow_testkit::{
    NatsServer,
    otlp::{OtlpReceiver, ReceivedLog, ReceivedSpan},
    process::ServiceProcess,
    wait_until,
};

/// Built by `cargo build --workspace --bins`, as `scripts/test.sh` does first.
static PAYMENT_BINARY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| orderflow_testkit::process::workspace_binary("payment-service"));

fn order_binary() -> String {
    orderflow_testkit::process::workspace_binary("order-service")
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn telemetry_env(receiver: &OtlpReceiver, protocol: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
    ]
}

/// `telemetry_env` with log records exported every 100 ms, filtered by
/// `rust_log`.
fn logs_env(
    receiver: &OtlpReceiver,
    protocol: &str,
    rust_log: &str,
) -> Vec<(&'static str, String)> {
    let mut env = telemetry_env(receiver, protocol);
    env.push(("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()));
    env.push(("RUST_LOG", rust_log.to_owned()));
    env
}

/// The first record from `service` whose body is `body`, in `trace_id`.
fn find_log(
    logs: &[ReceivedLog],
    service: &str,
    body: &str,
    trace_id: &str,
) -> Option<ReceivedLog> {
    logs.iter()
        .find(|l| l.service == service && l.body == body && l.trace_id == trace_id)
        .cloned()
}

/// A record's span id names a real span: one `service` exported in the
/// record's trace.
fn assert_in_a_span(record: &ReceivedLog, spans: &[ReceivedSpan], service: &str) {
    assert_eq!(record.span_id.len(), 16, "{record:?} has no span id");
    assert!(
        spans.iter().any(|s| s.service == service
            && s.trace_id == record.trace_id
            && s.span_id == record.span_id),
        "{record:?} names no span of {service} in its trace"
    );
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn wait_confirmed(client: &OrderServiceClient<tonic::transport::Channel>, order_id: &str) {
    wait_until("the order to be confirmed", Duration::from_secs(20), || {
        let mut client = client.clone();
        let order_id = order_id.to_owned();
        async move {
            client
                .get_order(GetOrderRequest { order_id })
                .await
                .is_ok_and(|r| {
                    r.into_inner().order.unwrap().status == OrderStatus::Confirmed as i32
                })
        }
    })
    .await;
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: i32,
    name_part: &str,
) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.kind == kind && s.name.contains(name_part))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_both_services_and_metrics_arrive() {
    let receiver = OtlpReceiver::start_grpc().await;
    let nats = NatsServer::start();
    // RUST_LOG at its default (the harness's is `warn`), to count the log
    // records a saga exports.
    let env = logs_env(&receiver, "grpc", "info");
    let mut orders = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let mut payments = ServiceProcess::start(&PAYMENT_BINARY, &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(orders.endpoint()).await;

    let trace_id = "5b8efff798038103d269b633813fc60c";
    let request = traced(
        order_request("c-otel", 1, 9, "r-otel"),
        trace_id,
        "eee19b7ec3c1b174",
    );
    let order = create_order(&mut client, request).await;
    wait_confirmed(&client, &order.order_id).await;

    // The whole saga, in the caller's trace.
    wait_until("the saga's spans", Duration::from_secs(20), || async {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        find(&spans, "order-service", SERVER, "CreateOrder").is_some()
            && find(&spans, "order-service", CONSUMER, "order-service-payments").is_some()
            && spans
                .iter()
                .filter(|s| s.service == "order-service" && s.kind == PRODUCER)
                .count()
                >= 2
            && find(
                &spans,
                "payment-service",
                CONSUMER,
                "payment-service-orders",
            )
            .is_some()
            && find(&spans, "payment-service", CLIENT, "gateway charge").is_some()
            && find(&spans, "payment-service", PRODUCER, "PAYMENTS").is_some()
    })
    .await;
    let spans: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();

    let server = find(&spans, "order-service", SERVER, "CreateOrder").unwrap();
    assert_eq!(
        server.parent_span_id, "eee19b7ec3c1b174",
        "the caller's span is the parent"
    );
    assert_eq!(server.attributes["rpc.system"], "grpc");
    assert_eq!(
        server.attributes["rpc.service"],
        "orderflow.order.v1.OrderService"
    );
    assert_eq!(server.attributes["rpc.method"], "CreateOrder");
    assert_eq!(server.attributes["rpc.grpc.status_code"], "0");

    let created = spans
        .iter()
        .find(|s| {
            s.kind == PRODUCER
                && s.attributes
                    .get("cloudevents.event_type")
                    .is_some_and(|t| t.ends_with("OrderCreated"))
        })
        .unwrap();
    assert_eq!(created.service, "order-service");
    assert_eq!(created.attributes["messaging.system"], "nats");
    assert_eq!(created.attributes["messaging.operation.type"], "send");
    assert_eq!(
        created.attributes["messaging.destination.name"],
        format!("orders.{}.{}.created", order.customer_id, order.order_id)
    );
    assert_eq!(
        created.attributes["messaging.message.id"],
        format!("{}.created", order.order_id)
    );
    // The payment deadline's schedule goes out in the same send, traced by
    // this span: the order service's PRODUCER spans are OrderCreated's and
    // OrderConfirmed's, and no third one for the schedule.
    assert_eq!(created.attributes["messaging.batch.message_count"], "2");
    let producers: Vec<&str> = spans
        .iter()
        .filter(|s| s.service == "order-service" && s.kind == PRODUCER)
        .map(|s| s.attributes["cloudevents.event_type"].as_str())
        .collect();
    assert_eq!(
        producers.len(),
        2,
        "one PRODUCER span per send: {producers:?}"
    );

    let consumed = find(
        &spans,
        "payment-service",
        CONSUMER,
        "payment-service-orders",
    )
    .unwrap();
    assert_eq!(
        consumed.parent_span_id, created.span_id,
        "the consumer continues the producer"
    );
    assert_eq!(consumed.links, 1, "and links to it");
    assert_eq!(
        consumed.attributes["messaging.consumer.group.name"],
        "payment-service-orders"
    );
    let gateway = find(&spans, "payment-service", CLIENT, "gateway charge").unwrap();
    assert_eq!(gateway.parent_span_id, consumed.span_id);
    assert_eq!(gateway.attributes["orderflow.gateway.outcome"], "charged");
    let authorized = find(&spans, "payment-service", PRODUCER, "PAYMENTS").unwrap();
    let applied = find(&spans, "order-service", CONSUMER, "order-service-payments").unwrap();
    assert_eq!(applied.parent_span_id, authorized.span_id);

    // A failed call marks its SERVER span as an error, with the gRPC code.
    client
        .get_order(GetOrderRequest {
            order_id: String::from("not-a-uuid"),
        })
        .await
        .unwrap_err();
    wait_until(
        "the failed call's span",
        Duration::from_secs(20),
        || async {
            receiver.spans().iter().any(|s| {
                s.kind == SERVER
                    && s.name.ends_with("/GetOrder")
                    && s.status_code == 2
                    && s.attributes.get("rpc.grpc.status_code").map(String::as_str) == Some("3")
            })
        },
    )
    .await;

    // The harness probed both services' health until they were ready, long
    // before these spans were exported: health (and reflection) are served
    // outside the API's layers, so those calls have no span.
    let infrastructure: Vec<String> = receiver
        .spans()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("grpc.health.") || n.starts_with("grpc.reflection."))
        .collect();
    assert!(infrastructure.is_empty(), "spans of {infrastructure:?}");

    // Metrics from both services.
    wait_until(
        "metrics from both services",
        Duration::from_secs(20),
        || async {
            let metrics = receiver.metrics();
            let has =
                |service: &str, name: &str| metrics.iter().any(|(s, n)| s == service && n == name);
            has("order-service", "rpc.server.call.duration")
                && has("order-service", "messaging.client.operation.duration")
                && has("order-service", "messaging.process.duration")
                && has("order-service", "orderflow.orders.status_changes")
                && has("payment-service", "orderflow.gateway.call.duration")
                && has("payment-service", "orderflow.gateway.breaker.state")
                && has("payment-service", "orderflow.payments.status_changes")
                && has("payment-service", "orderflow.consumer.pending")
                && has("payment-service", "orderflow.consumer.ack_pending")
        },
    )
    .await;

    // At the default level a saga logs nothing: no INFO line per order on
    // the hot path. Both exit first, so every record they queued has been
    // flushed, and the start-up lines show that records were exported.
    orders.terminate();
    payments.terminate();
    for service in [&mut orders, &mut payments] {
        assert_eq!(
            service.wait_exit(Duration::from_secs(30)).await.code(),
            Some(0)
        );
    }
    let logs = receiver.logs();
    for service in ["order-service", "payment-service"] {
        assert!(
            logs.iter()
                .any(|l| l.service == service && l.body == "ready: reporting SERVING"),
            "no start-up record from {service}: {logs:?}"
        );
    }
    let per_saga: Vec<&ReceivedLog> = logs.iter().filter(|l| l.trace_id == trace_id).collect();
    assert!(
        per_saga.is_empty(),
        "the saga logged at INFO or above: {per_saga:?}"
    );
}

/// One order's DEBUG lines, from both services, arrive as log records in
/// the order's trace, each naming the span it was logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_log_records_arrive_in_its_trace_over_grpc() {
    let receiver = OtlpReceiver::start_grpc().await;
    let nats = NatsServer::start();
    let env = logs_env(
        &receiver,
        "grpc",
        "info,order_service=debug,payment_service=debug",
    );
    let orders = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let payments = ServiceProcess::start(&PAYMENT_BINARY, &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(orders.endpoint()).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let order = create_order(
        &mut client,
        traced(
            order_request("c-logs", 1, 9, "r-logs"),
            trace_id,
            "00f067aa0ba902b7",
        ),
    )
    .await;
    wait_confirmed(&client, &order.order_id).await;

    wait_until(
        "the order's log records and their spans",
        Duration::from_secs(20),
        || async {
            let logs = receiver.logs();
            let spans = receiver.spans();
            [
                ("order-service", "order created"),
                ("payment-service", "payment decided"),
            ]
            .iter()
            .all(|(service, body)| {
                find_log(&logs, service, body, trace_id)
                    .is_some_and(|record| spans.iter().any(|s| s.span_id == record.span_id))
            })
        },
    )
    .await;
    let (logs, spans) = (receiver.logs(), receiver.spans());
    let created = find_log(&logs, "order-service", "order created", trace_id).unwrap();
    assert_in_a_span(&created, &spans, "order-service");
    assert_eq!(created.severity, "DEBUG");
    assert_eq!(created.scope, "order_service::grpc");
    assert_eq!(created.attributes["order_id"], order.order_id);
    let decided = find_log(&logs, "payment-service", "payment decided", trace_id).unwrap();
    assert_in_a_span(&decided, &spans, "payment-service");
    assert_eq!(decided.attributes["order_id"], order.order_id);
    for record in [&created, &decided] {
        assert_eq!(record.resource["service.name"], record.service);
        assert!(
            record.resource.contains_key("service.version")
                && record.resource.contains_key("service.instance.id"),
            "{record:?} lacks the resource of the traces"
        );
    }
    // stdout keeps its lines: the same event, as text.
    assert!(orders.log().contains("order created"), "{}", orders.log());
    drop((orders, payments));
}

/// Over OTLP/HTTP too, with every crate at DEBUG: the order's record
/// arrives in its trace, and none of the exporter's own (hyper, the SDK)
/// do, though they log to stdout, so an export never feeds the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_go_over_http_protobuf_and_never_the_exporters_own() {
    let receiver = OtlpReceiver::start_http().await;
    let nats = NatsServer::start();
    let env = logs_env(&receiver, "http/protobuf", "debug");
    let mut orders = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(orders.endpoint()).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    create_order(
        &mut client,
        traced(
            order_request("c-logs-http", 1, 1, "r-logs-http"),
            trace_id,
            "b7ad6b7169203331",
        ),
    )
    .await;
    wait_until(
        "the order's log record over HTTP",
        Duration::from_secs(20),
        || async {
            find_log(&receiver.logs(), "order-service", "order created", trace_id).is_some()
                && find(&receiver.spans(), "order-service", SERVER, "CreateOrder").is_some()
        },
    )
    .await;
    let record = find_log(&receiver.logs(), "order-service", "order created", trace_id).unwrap();
    assert_in_a_span(&record, &receiver.spans(), "order-service");
    assert_eq!(record.resource["service.name"], "order-service");

    orders.terminate();
    assert_eq!(
        orders.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    let stdout = orders.log();
    assert!(
        stdout.contains("hyper_util"),
        "the exporter's HTTP client logged nothing at DEBUG; the check below proves nothing"
    );
    let own: Vec<String> = receiver
        .logs()
        .into_iter()
        .map(|l| l.scope)
        .filter(|scope| {
            ["opentelemetry", "hyper", "h2", "tonic", "tower"]
                .iter()
                .any(|c| scope.starts_with(c))
        })
        .collect();
    assert!(
        own.is_empty(),
        "the exporter's own events were exported: {own:?}"
    );
}

/// `OTEL_LOGS_EXPORTER=none`: spans still go, and even the shutdown's
/// flush delivers no log record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_logs_exporter_none_exports_no_record_while_traces_go() {
    let receiver = OtlpReceiver::start_grpc().await;
    let nats = NatsServer::start();
    let mut env = logs_env(&receiver, "grpc", "info,order_service=debug");
    env.push(("OTEL_LOGS_EXPORTER", "none".to_owned()));
    let mut orders = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(orders.endpoint()).await;
    client
        .create_order(order_request("c-nologs", 1, 1, "r-nologs"))
        .await
        .unwrap();
    wait_until("the CreateOrder span", Duration::from_secs(20), || async {
        find(&receiver.spans(), "order-service", SERVER, "CreateOrder").is_some()
    })
    .await;
    orders.terminate();
    assert_eq!(
        orders.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    assert!(
        orders.log().contains("order created"),
        "stdout lost its lines"
    );
    let logs = receiver.logs();
    assert!(logs.is_empty(), "log records were exported: {logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_http_protobuf_too() {
    let receiver = OtlpReceiver::start_http().await;
    let nats = NatsServer::start();
    let env = telemetry_env(&receiver, "http/protobuf");
    let orders = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(orders.endpoint()).await;
    client
        .create_order(order_request("c-http", 1, 1, "r-http"))
        .await
        .unwrap();
    wait_until(
        "spans and metrics over HTTP",
        Duration::from_secs(20),
        || async {
            find(&receiver.spans(), "order-service", SERVER, "CreateOrder").is_some()
                && receiver
                    .metrics()
                    .iter()
                    .any(|(_, n)| n == "rpc.server.call.duration")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_fails_a_request() {
    let nats = NatsServer::start();
    // Nothing listens there: every export fails.
    let dead = format!("http://{}", orderflow_testkit::process::free_addr());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
    ];
    let mut service = ServiceProcess::start(&order_binary(), &nats.url(), &env).await;
    let mut client = order_client_at(service.endpoint()).await;
    for i in 0..200 {
        client
            .create_order(order_request("c-dead", 1, 1, &format!("r-dead-{i}")))
            .await
            .unwrap();
    }
    // And shutdown does not hang on the unreachable collector.
    service.terminate();
    assert_eq!(
        service.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// Export timers far beyond the test: only the shutdown's last phase can
/// deliver what the call left queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_queued_at_sigterm_is_flushed_before_exit() {
    let receiver = OtlpReceiver::start_grpc().await;
    let nats = NatsServer::start();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "600000".to_owned()),
        // The exit line is at INFO (the harness's default is `warn`).
        ("RUST_LOG", "info".to_owned()),
    ];
    let mut service = ServiceProcess::start(&order_binary(), &nats.url(), &borrowed(&env)).await;
    let mut client = order_client_at(service.endpoint()).await;
    client
        .create_order(order_request("c-flush", 1, 1, "r-flush"))
        .await
        .expect("CreateOrder succeeds");
    assert!(
        find(&receiver.spans(), "order-service", SERVER, "CreateOrder").is_none(),
        "the span was exported before shutdown; the test proves nothing"
    );
    assert!(
        receiver.logs().is_empty(),
        "log records were exported before shutdown; the test proves nothing"
    );
    service.terminate();
    assert_eq!(
        service.wait_exit(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    assert!(
        find(&receiver.spans(), "order-service", SERVER, "CreateOrder").is_some(),
        "the CreateOrder span was not flushed at exit"
    );
    assert!(
        receiver
            .metrics()
            .iter()
            .any(|(s, n)| s == "order-service" && n == "rpc.server.call.duration"),
        "the last metrics collection was not flushed at exit"
    );
    // The line that says how the process ended, logged after NATS drained.
    assert!(
        receiver
            .logs()
            .iter()
            .any(|l| l.service == "order-service" && l.body == "stopped"),
        "the exit line was not flushed at exit: {:?}",
        receiver.logs()
    );
}
