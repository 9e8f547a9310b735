//! The gRPC server every service runs.
//!
//! One place assembles what all services serve besides their API: the
//! trace-context layer (one SERVER span per call, child of the caller's
//! trace), `grpc.health.v1.Health` driven by a readiness check, server
//! reflection in both `grpc.reflection.v1` and `v1alpha` (grpcurl still asks
//! v1alpha), and a graceful stop that finishes in-flight calls.

use std::{future::Future, time::Duration};

use orderflow_eventbus::propagation::TraceContextLayer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The largest request message an API service decodes: 1 MiB.
///
/// tonic's default is 4 MiB. The largest valid request (a CreateOrder of 100
/// items with every field at its longest) is about 20 KiB, so 1 MiB leaves
/// room for growth while bounding what one call can make a replica buffer
/// (times `GRPC_MAX_CONCURRENT_CALLS`). A larger message is refused before
/// it is read, with tonic's status for it: `OUT_OF_RANGE` ("decoded message
/// length too large").
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The health service name that reports whether the process is alive, for
/// liveness probes: it stays SERVING through broker outages, so Kubernetes
/// never restarts a pod because NATS is down.
pub const LIVENESS: &str = "liveness";

/// Health of a service: the overall `""` and each API name follow readiness;
/// `liveness` follows the process.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<String>,
}

impl Health {
    /// Health for the given API service names (`orderflow.order.v1.OrderService`).
    pub fn new(reporter: HealthReporter, services: &[&str]) -> Self {
        Self {
            reporter,
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Sets `""` and every API service to SERVING or NOT_SERVING.
    pub async fn set_ready(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Polls `check` every `interval` and reports its answer, until
    /// `shutdown`; then reports NOT_SERVING for good (liveness stays SERVING
    /// until the process exits).
    pub async fn watch<F, Fut>(self, interval: Duration, check: F, shutdown: CancellationToken)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let mut last = None;
        loop {
            let ready = tokio::select! {
                _ = shutdown.cancelled() => break,
                ready = check() => ready,
            };
            if last != Some(ready) {
                if ready {
                    tracing::info!("ready: reporting SERVING");
                } else {
                    tracing::warn!(
                        "not ready (NATS or its streams unreachable): reporting NOT_SERVING"
                    );
                }
                self.set_ready(ready).await;
                last = Some(ready);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        self.set_ready(false).await;
    }
}

/// Creates the health service and its reporter; everything starts NOT_SERVING
/// until the first readiness check passes.
pub async fn health(
    services: &[&str],
) -> (
    Health,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    let health = Health::new(reporter, services);
    health.set_ready(false).await;
    (health, server)
}

/// Why a service could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// NATS is unreachable.
    #[error(
        "cannot connect to NATS at {url}: {message}. Is nats-server running with JetStream (-js)? scripts/run-local.sh starts one"
    )]
    Nats {
        /// The configured URLs.
        url: String,
        /// What failed.
        message: String,
    },
    /// JetStream setup (streams, buckets) failed.
    #[error("cannot set up JetStream: {0}")]
    JetStream(String),
    /// The gRPC address cannot be bound.
    #[error("cannot listen on {addr}: {source}. Set GRPC_ADDR to a free address")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A descriptor set could not be registered for reflection.
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Adds health and reflection to `routes`.
///
/// Reflection knows every type in `descriptor_sets` (plus health's) but lists
/// only `api_services`, health and itself, so `grpcurl list` shows what this
/// server actually serves.
pub fn with_platform_services(
    routes: Routes,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    descriptor_sets: &[&'static [u8]],
    api_services: &[&str],
) -> Result<Routes, ServeError> {
    let configure = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in api_services {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    Ok(routes
        .add_service(health)
        .add_service(configure().build_v1()?)
        .add_service(configure().build_v1alpha()?))
}

/// Connects to NATS for service `name`, with a start-up error that says
/// what to do.
pub async fn connect_nats(url: &str, name: &str) -> Result<orderflow_eventbus::Client, ServeError> {
    orderflow_eventbus::connect(url, name)
        .await
        .map_err(|e| ServeError::Nats {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

/// Binds the gRPC address, with a start-up error that says what to do.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// How a service serves and stops.
#[derive(Clone, Copy, Debug)]
pub struct ServePolicy {
    /// API calls worked on at once before new ones are shed.
    pub max_concurrent_calls: usize,
    /// After the signal, calls are still served this long while health
    /// already reports NOT_SERVING (so load balancers stop routing first).
    pub delay: Duration,
    /// The longest the workers may take to finish what they hold.
    pub grace: Duration,
}

/// Runs a service until `shutdown`, then stops it in order.
///
/// Serves `routes` while `workers` (consumers, the health watch) run. When
/// `shutdown` is cancelled, health turns NOT_SERVING and consumers stop
/// pulling at once; the server keeps answering for `stop.delay`, then stops
/// accepting and finishes in-flight calls; the workers finish what they hold
/// (for at most `stop.grace`); and the NATS connection is drained so every ack
/// and publish reaches the server before the process exits. A failing server
/// stops everything at once.
pub async fn run(
    routes: Routes,
    listener: TcpListener,
    workers: tokio_util::task::TaskTracker,
    client: orderflow_eventbus::Client,
    shutdown: CancellationToken,
    stop: ServePolicy,
) -> Result<(), ServeError> {
    workers.close();
    tracing::info!(addr = ?listener.local_addr().ok(), "serving");
    let stop_serving = CancellationToken::new();
    let delayed = {
        let (shutdown, stop_serving) = (shutdown.clone(), stop_serving.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if !stop.delay.is_zero() {
                tracing::info!(delay = ?stop.delay, "NOT_SERVING; still answering calls while load balancers catch up");
                tokio::time::sleep(stop.delay).await;
            }
            stop_serving.cancel();
        })
    };
    let served = serve(routes, listener, stop_serving, stop.max_concurrent_calls).await;
    delayed.abort();
    let grace = stop.grace;
    shutdown.cancel();
    if tokio::time::timeout(grace, workers.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight messages did not finish within SHUTDOWN_TIMEOUT_SECS; JetStream will redeliver them"
        );
    }
    if let Err(error) = client.drain().await {
        tracing::warn!(%error, "NATS drain failed");
    }
    tracing::info!("stopped");
    served
}

/// Serves `routes` on `listener` until `shutdown`, then stops accepting and
/// waits for in-flight calls to finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    shutdown: CancellationToken,
    max_concurrent_calls: usize,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        // Why first: every call, including health and reflection, gets its
        // SERVER span and the caller's trace context before anything else,
        // and a shed call is visible in its trace.
        .layer(TraceContextLayer)
        // Then the shared limit: beyond it API calls are refused at once
        // (RESOURCE_EXHAUSTED) rather than queued. The caller's grpc-timeout
        // is enforced by tonic itself: when it expires the handler future is
        // dropped, so no work continues for a caller that gave up.
        .layer(crate::overload::LoadShedLayer::new(max_concurrent_calls))
        // Answer a stuck client instead of holding its stream forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}
