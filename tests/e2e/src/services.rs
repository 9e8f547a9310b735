//! Both services, spawned in the test process on port 0 against a real
//! `nats-server`, with real gRPC clients on loopback.
//!
//! In-process services make a test fast and let it share one simulated
//! gateway between payment-service replicas (as replicas share one real
//! gateway), so "charged once" is counted at the gateway itself. Tests of the
//! binaries themselves (signals, exit codes, `--help`) spawn the binaries.

use std::{collections::HashMap, net::SocketAddr, sync::Once, time::Duration};

use orderflow_platform::{
    main_loop::Program,
    server::ServeError,
    service_config::ServiceConfig,
    shutdown::Shutdown,
    telemetry::{LogFormat, LogsExporter, OtlpProtocol, SamplerChoice, TelemetryConfig},
};
use orderflow_proto::{
    money::v1::Money,
    order::v1::{
        CreateOrderRequest, GetOrderRequest, Order, OrderItem, OrderStatus,
        order_service_client::OrderServiceClient,
    },
    payment::v1::payment_service_client::PaymentServiceClient,
};
use payment_service::gateway::{GatewayError, GatewayRequest, GatewayResponse, SimulatedGateway};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use orderflow_testkit::wait_until;

/// Installs logging (warnings, to the test's captured output) and the trace
/// SDK without export, once per test binary, so spans have ids and
/// `traceparent` headers are written as in production.
pub fn init_telemetry() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let config = TelemetryConfig {
            service_name: String::from("orderflow-tests"),
            service_version: env!("CARGO_PKG_VERSION"),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            sampler: SamplerChoice::ParentBasedAlwaysOn,
            logs_exporter: LogsExporter::None,
            sdk_disabled: false,
            log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| String::from("warn")),
            log_format: LogFormat::Text,
        };
        // The flush guard is deliberately leaked: nothing is exported.
        if let Ok(telemetry) = orderflow_platform::telemetry::init(&config) {
            std::mem::forget(telemetry);
        }
    });
}

/// A service running in this process.
pub struct RunningService {
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningService {
    /// `http://addr` for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it as SIGTERM would, and returns how its run ended.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(join) => panic!("service task panicked: {join}"),
        }
    }
}

/// Environment for a service on `nats_url`, listening on a free port, plus
/// `extra` variables.
pub fn env(nats_url: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("NATS_URL", nats_url),
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_TIMEOUT_SECS", "10"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.retain(|_, v| !v.is_empty());
    env
}

/// Starts the order service on `nats_url`.
pub async fn spawn_order_service(nats_url: &str) -> RunningService {
    spawn_order_service_with(nats_url, &[]).await
}

/// Starts the order service on `nats_url` with `extra` environment
/// variables (`STREAM_REPLICAS`, `CONSUMER_ACK_WAIT_SECS`, say).
#[allow(clippy::expect_used)] // a failed start is the test's failure
pub async fn spawn_order_service_with(nats_url: &str, extra: &[(&str, &str)]) -> RunningService {
    init_telemetry();
    let config = order_service::Config::from_lookup(&env(nats_url, extra))
        .expect("test configuration of the order service");
    let shutdown = CancellationToken::new();
    let phases = Shutdown::configured(&config.common, shutdown.clone());
    let app = order_service::App::build(config)
        .await
        .expect("order service starts");
    let addr = app.local_addr().expect("order service has an address");
    let task = tokio::spawn(app.run_until_stopped(phases));
    RunningService {
        addr,
        shutdown,
        task,
    }
}

/// The simulated gateway tests share: decline above 10 000 units, no
/// latency, no failures.
pub fn simulated_gateway() -> SimulatedGateway {
    SimulatedGateway::new(payment_service::config::SimulatorConfig {
        decline_above_units: 10_000,
        latency: Duration::ZERO,
        failure_rate: 0.0,
    })
}

/// Starts a payment service on `nats_url` calling `gateway`, with `extra`
/// environment variables (resilience settings, say).
pub async fn spawn_payment_service(
    nats_url: &str,
    gateway: SimulatedGateway,
    extra: &[(&str, &str)],
) -> RunningService {
    spawn_payment_service_with_gateway(nats_url, gateway, extra).await
}

/// Starts a payment service on `nats_url` calling any gateway — a wrapper
/// around a shared [`SimulatedGateway`] that counts what this replica sends,
/// say — with `extra` environment variables.
#[allow(clippy::expect_used)] // a failed start is the test's failure
pub async fn spawn_payment_service_with_gateway<G>(
    nats_url: &str,
    gateway: G,
    extra: &[(&str, &str)],
) -> RunningService
where
    G: tower::Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    G::Future: Send + 'static,
{
    init_telemetry();
    let config = payment_service::Config::from_lookup(&env(nats_url, extra))
        .expect("test configuration of the payment service");
    let shutdown = CancellationToken::new();
    let phases = Shutdown::configured(&config.common, shutdown.clone());
    let app = payment_service::App::with_gateway(config, gateway)
        .await
        .expect("payment service starts");
    let addr = app.local_addr().expect("payment service has an address");
    let task = tokio::spawn(app.run_until_stopped(phases));
    RunningService {
        addr,
        shutdown,
        task,
    }
}

/// Starts a payment service on `nats_url` as its binary builds it, from
/// `extra` environment variables alone: with `GATEWAY_URL` set, it charges
/// through that HTTP gateway (a gateway-sim on loopback, say).
#[allow(clippy::expect_used)] // a failed start is the test's failure
pub async fn spawn_payment_service_from_env(
    nats_url: &str,
    extra: &[(&str, &str)],
) -> RunningService {
    init_telemetry();
    let config = payment_service::Config::from_lookup(&env(nats_url, extra))
        .expect("test configuration of the payment service");
    let shutdown = CancellationToken::new();
    let phases = Shutdown::configured(&config.common, shutdown.clone());
    let app = <payment_service::App as Program>::build(config)
        .await
        .expect("payment service starts");
    let addr = app.local_addr().expect("payment service has an address");
    let task = tokio::spawn(app.run_until_stopped(phases));
    RunningService {
        addr,
        shutdown,
        task,
    }
}

/// A connected order client.
#[allow(clippy::expect_used)]
pub async fn order_client(service: &RunningService) -> OrderServiceClient<Channel> {
    order_client_at(service.endpoint()).await
}

/// An order client connected to `endpoint` (a service binary's, say).
#[allow(clippy::expect_used)]
pub async fn order_client_at(endpoint: String) -> OrderServiceClient<Channel> {
    OrderServiceClient::connect(endpoint)
        .await
        .expect("connect to the order service")
}

/// Creates an order, which must succeed, and returns it.
#[allow(clippy::expect_used)]
pub async fn create_order(
    client: &mut OrderServiceClient<Channel>,
    request: impl tonic::IntoRequest<CreateOrderRequest>,
) -> Order {
    client
        .create_order(request)
        .await
        .expect("CreateOrder succeeds")
        .into_inner()
        .order
        .expect("CreateOrder answers with the order")
}

/// `message` sent as the caller's span `parent_span_id` of trace
/// `trace_id`, sampled: a W3C `traceparent` the service must continue.
#[allow(clippy::expect_used)]
pub fn traced<T>(message: T, trace_id: &str, parent_span_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span_id}-01")
            .parse()
            .expect("a traceparent is valid metadata"),
    );
    request
}

/// A connected payment client.
#[allow(clippy::expect_used)]
pub async fn payment_client(service: &RunningService) -> PaymentServiceClient<Channel> {
    PaymentServiceClient::connect(service.endpoint())
        .await
        .expect("connect to the payment service")
}

/// A connected health client.
#[allow(clippy::expect_used)]
pub async fn health_client(
    service: &RunningService,
) -> tonic_health::pb::health_client::HealthClient<Channel> {
    let channel = Channel::from_shared(service.endpoint())
        .expect("a valid endpoint")
        .connect()
        .await
        .expect("connect to the health service");
    tonic_health::pb::health_client::HealthClient::new(channel)
}

/// A one-item order of `quantity` × `units` EUR.
pub fn order_request(
    customer: &str,
    quantity: i32,
    units: i64,
    request_id: &str,
) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer.to_owned(),
        items: vec![OrderItem {
            sku: String::from("SKU-1"),
            quantity,
            unit_price: Some(Money {
                currency_code: String::from("EUR"),
                units,
                nanos: 0,
            }),
        }],
        request_id: request_id.to_owned(),
    }
}

/// The id CreateOrder gives the order `request` asks for (it is derived
/// from the request), so a test can name an order before it exists.
#[allow(clippy::expect_used)]
pub fn order_id_of(request: &CreateOrderRequest) -> String {
    let lines: Vec<_> = request
        .items
        .iter()
        .map(|item| order_service::domain::RawLine {
            sku: &item.sku,
            quantity: item.quantity,
            unit_price: item
                .unit_price
                .as_ref()
                .map(|p| (p.currency_code.as_str(), p.units, p.nanos)),
        })
        .collect();
    order_service::domain::NewOrder::parse(&request.customer_id, &lines, &request.request_id)
        .expect("a valid order request")
        .order_id()
        .to_string()
}

/// Waits until the order has `status` and returns it.
#[allow(clippy::expect_used)]
pub async fn wait_for_status(
    client: &OrderServiceClient<Channel>,
    order_id: &str,
    status: OrderStatus,
) -> Order {
    let found = std::sync::Mutex::new(None);
    wait_until(
        &format!("order {order_id} to reach {status:?}"),
        Duration::from_secs(20),
        || async {
            let mut client = client.clone();
            let request = GetOrderRequest {
                order_id: order_id.to_owned(),
            };
            match client.get_order(request).await {
                Ok(response) => match response.into_inner().order {
                    Some(order) if order.status == status as i32 => {
                        if let Ok(mut slot) = found.lock() {
                            *slot = Some(order);
                        }
                        true
                    }
                    _ => false,
                },
                Err(_) => false,
            }
        },
    )
    .await;
    found
        .into_inner()
        .ok()
        .flatten()
        .expect("the order was found")
}

/// The fields named by a status's `google.rpc.BadRequest` details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
