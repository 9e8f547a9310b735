//! The gRPC server every service runs.
//!
//! One place assembles what all services serve besides their API: the
//! layers every API service is wrapped in (one SERVER span per call, child
//! of the caller's trace; authentication; load shedding), `grpc.health.v1.Health`
//! driven by a readiness check, server reflection in both `grpc.reflection.v1`
//! and `v1alpha` (grpcurl still asks v1alpha), and a graceful stop that
//! finishes in-flight calls. Health and reflection are served beside the
//! layered API services, never through those layers: probes and discovery
//! get no span of their own, need no token and are never shed. The last
//! layer answers at once while NATS is known to be unreachable
//! (`broker_gate`).

use std::{convert::Infallible, future::Future, time::Duration};

use orderflow_eventbus::propagation::TraceContextLayer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{LayerExt, Routes},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::shutdown::Shutdown;

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
        "cannot connect to NATS at {url}: {source}. Is nats-server running with JetStream (-js)? scripts/run-local.sh starts one"
    )]
    Nats {
        /// The configured URLs.
        url: String,
        /// What failed.
        source: orderflow_eventbus::ConnectError,
    },
    /// NATS refused the service's credentials.
    #[error(
        "NATS at {url} refused this service's credentials ({method}): {source}. Check NATS_USER with NATS_PASSWORD or NATS_PASSWORD_FILE (or NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS_FILE) against the server's users, e.g. deploy/nats/auth.conf"
    )]
    NatsRefused {
        /// The configured URLs.
        url: String,
        /// How the service authenticated (never the secret).
        method: &'static str,
        /// What the server or client said.
        source: orderflow_eventbus::ConnectError,
    },
    /// The server is older than orderflow needs.
    #[error("cannot set up JetStream: {0}")]
    ServerTooOld(#[from] orderflow_eventbus::ServerTooOld),
    /// A stream could not be set up.
    #[error("cannot set up JetStream: {0}")]
    JetStream(#[from] orderflow_eventbus::EnsureStreamError),
    /// Copying events to this version's subjects failed
    /// (`migrate-subjects`).
    #[error("cannot migrate the events to the new subjects: {0}")]
    Migration(#[from] orderflow_eventbus::aggregate::StoreError),
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

/// What a server serves: the API port's routes, and the health-only routes
/// of the plaintext health listener (`GRPC_HEALTH_ADDR`).
pub struct PlatformRoutes {
    /// The API, health, and reflection when enabled.
    pub api: Routes,
    /// `grpc.health.v1.Health` alone.
    pub health_only: Routes,
}

/// Adds health and (unless `reflection` is off) reflection to `routes`.
///
/// Reflection knows every type in `descriptor_sets` (plus health's) but lists
/// only `api_services`, health and itself, so `grpcurl list` shows what this
/// server actually serves.
pub fn with_platform_services<H>(
    routes: Routes,
    health: tonic_health::pb::health_server::HealthServer<H>,
    descriptor_sets: &[&'static [u8]],
    api_services: &[&str],
    reflection: bool,
) -> Result<PlatformRoutes, ServeError>
where
    H: tonic_health::pb::health_server::Health,
{
    let health_only = Routes::new(health.clone());
    let routes = routes.add_service(health);
    if !reflection {
        return Ok(PlatformRoutes {
            api: routes,
            health_only,
        });
    }
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
    Ok(PlatformRoutes {
        api: routes
            .add_service(configure().build_v1()?)
            .add_service(configure().build_v1alpha()?),
        health_only,
    })
}

/// Connects to NATS for service `name` at the URLs and with the credentials
/// and TLS of `nats`, with a start-up error that says what to do.
pub async fn connect_nats(
    nats: &crate::nats_config::NatsConnectConfig,
    name: &str,
) -> Result<orderflow_eventbus::Client, ServeError> {
    let url = nats.url.as_str();
    orderflow_eventbus::connect(url, name, &nats.auth, &nats.tls)
        .await
        .map_err(|source| {
            if orderflow_eventbus::security::is_refusal(&source) {
                ServeError::NatsRefused {
                    url: url.to_owned(),
                    method: nats.auth.method(),
                    source,
                }
            } else {
                ServeError::Nats {
                    url: url.to_owned(),
                    source,
                }
            }
        })
}

/// Connects to NATS as service `name` and ensures every stream of the
/// contract: what a service does first, to serve or to migrate.
///
/// Every service ensures every stream (not only its own), so whichever
/// starts first finds the streams it consumes, not only those it writes.
pub async fn connect_jetstream(
    common: &crate::service_config::CommonConfig,
    name: &str,
) -> Result<(orderflow_eventbus::Client, orderflow_eventbus::JetStream), ServeError> {
    let client = connect_nats(&common.nats, name).await?;
    orderflow_eventbus::check_server_version(&client)?;
    let js = orderflow_eventbus::jetstream(client.clone());
    orderflow_eventbus::ensure_streams(
        &js,
        orderflow_proto::contract::STREAMS,
        common.stream_replicas,
    )
    .await?;
    Ok((client, js))
}

/// A service started: connected to NATS with every stream of the contract,
/// its gRPC address bound, its serving policy read. Everything that can
/// fail at start-up is behind it, so `main` reports a failure before the
/// service serves anything.
pub struct Started {
    client: orderflow_eventbus::Client,
    js: orderflow_eventbus::JetStream,
    listener: TcpListener,
    policy: ServePolicy,
    ack_wait: Duration,
}

impl Started {
    /// Connects to NATS as service `name` (see [`connect_jetstream`]) and
    /// binds the gRPC address of `common`; `admin_only` are the service's
    /// methods only callers with the `admin` role may call.
    pub async fn start(
        common: &crate::service_config::CommonConfig,
        name: &str,
        admin_only: &'static [&'static str],
    ) -> Result<Self, ServeError> {
        let (client, js) = connect_jetstream(common, name).await?;
        let listener = bind(common.grpc_addr).await?;
        Ok(Self {
            client,
            js,
            listener,
            policy: ServePolicy::from_config(common, admin_only),
            ack_wait: common.consumer_ack_wait,
        })
    }

    /// JetStream, its streams ensured.
    pub fn jetstream(&self) -> &orderflow_eventbus::JetStream {
        &self.js
    }

    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The ack wait of the service's durable consumer
    /// (`CONSUMER_ACK_WAIT_SECS`).
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// Runs a durable consumer beside the one [`Started::serve`] runs (with
    /// the same ack wait), as a worker of `shutdown`: it stops fetching when
    /// the shutdown is requested and finishes what it holds before exit.
    pub fn spawn_consumer<H: orderflow_eventbus::EventHandler>(
        &self,
        consumer: orderflow_eventbus::ConsumerSpec,
        handler: H,
        shutdown: &Shutdown,
    ) {
        let consumer = consumer.with_ack_wait(self.ack_wait);
        shutdown.spawn(
            orderflow_eventbus::DurableConsumer::new(self.js.clone(), consumer)
                .run(std::sync::Arc::new(handler), shutdown.requested()),
        );
    }

    /// Serves `api` until `shutdown` is requested, then stops in the order
    /// [`Shutdown`] keeps, up to draining NATS (see [`run`]).
    ///
    /// Beside the API it serves what every service does: the dead-letter
    /// admin API, health (following whether `readiness`'s stream answers)
    /// and, unless turned off, reflection. Meanwhile it runs the durable
    /// consumer `consumer` (with the configured ack wait), delivering to
    /// `handler`.
    pub async fn serve<S, H>(
        self,
        api: S,
        consumer: orderflow_eventbus::ConsumerSpec,
        handler: H,
        readiness: orderflow_eventbus::EventStore,
        shutdown: Shutdown,
    ) -> Result<(), ServeError>
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        H: orderflow_eventbus::EventHandler,
    {
        let Self {
            client,
            js,
            listener,
            policy,
            ack_wait,
        } = self;
        let (health, health_server) = health(&[S::NAME]).await;
        let layers = ApiLayers::new(&policy, client.clone());
        let routes = with_platform_services(
            Routes::new(layers.wrap(api))
                .add_service(layers.wrap(crate::admin::service(js.clone()))),
            health_server,
            &[orderflow_proto::FILE_DESCRIPTOR_SET],
            &[S::NAME, crate::admin::SERVICE_NAME],
            policy.transport.reflection,
        )?;
        let check = move || {
            let readiness = readiness.clone();
            async move { readiness.ready().await }
        };
        shutdown.spawn(health.watch(Duration::from_secs(1), check, shutdown.requested()));
        let consumer = consumer.with_ack_wait(ack_wait);
        shutdown.spawn(
            orderflow_eventbus::DurableConsumer::new(js, consumer)
                .run(std::sync::Arc::new(handler), shutdown.requested()),
        );
        shutdown
            .clone()
            .run(run(routes, listener, &policy, &shutdown), client)
            .await
    }
}

/// The layers every API service is wrapped in, and health and reflection
/// are not.
///
/// One instance wraps every API service of the server, so they share one
/// concurrency limit.
struct ApiLayers {
    auth: crate::auth::AuthLayer,
    shed: crate::overload::LoadShedLayer,
    broker: crate::broker_gate::BrokerGateLayer,
}

impl ApiLayers {
    fn new(policy: &ServePolicy, client: orderflow_eventbus::Client) -> Self {
        Self {
            auth: crate::auth::AuthLayer::new(policy.access.clone()),
            shed: crate::overload::LoadShedLayer::new(policy.max_concurrent_calls),
            broker: crate::broker_gate::BrokerGateLayer::new(client),
        }
    }

    /// `api` inside the layers, still named after it.
    fn wrap<S>(
        &self,
        api: S,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        tower::ServiceBuilder::new()
            // Why first: every API call gets its SERVER span and the
            // caller's trace context before anything else, so a refused or
            // shed call is visible in its trace.
            .layer(TraceContextLayer)
            // Then who is calling: an unauthenticated call is refused
            // without reaching the API (whatever the load, it is answered
            // UNAUTHENTICATED, not shed).
            .layer(self.auth.clone())
            // Then the shared limit: beyond it calls are refused at once
            // (RESOURCE_EXHAUSTED) rather than queued. The caller's
            // grpc-timeout is enforced by tonic itself: when it expires the
            // handler future is dropped, so no work continues for a caller
            // that gave up.
            .layer(self.shed.clone())
            // Last, next to the API: with NATS known to be unreachable
            // nothing the API does can succeed, so the call is answered
            // UNAVAILABLE at once rather than after JetStream's timeout.
            .layer(self.broker.clone())
            .named_layer(api)
    }
}

/// Binds the gRPC address, with a start-up error that says what to do.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// How a service serves and stops.
#[derive(Clone, Debug)]
pub struct ServePolicy {
    /// API calls worked on at once before new ones are shed.
    pub max_concurrent_calls: usize,
    /// TLS and the plaintext health listener.
    pub transport: crate::grpc_tls::GrpcTransport,
    /// Who may call what.
    pub access: crate::auth::AccessPolicy,
}

impl ServePolicy {
    /// The policy `common` configures, with the service's admin-only
    /// methods (see [`AccessPolicy::admin_only`](crate::auth::AccessPolicy)).
    pub fn from_config(
        common: &crate::service_config::CommonConfig,
        admin_only: &'static [&'static str],
    ) -> Self {
        Self {
            max_concurrent_calls: common.max_concurrent_calls,
            transport: common.grpc.clone(),
            access: crate::auth::AccessPolicy {
                authenticator: common.auth.clone(),
                admin_only,
            },
        }
    }
}

/// Serves `routes` until `shutdown` says to stop accepting, and returns
/// once the calls in flight are answered; [`Shutdown::run`] drives it and
/// the phases after it.
///
/// The API is served on `listener` with `policy`'s transport security, and
/// health alone on the plaintext health listener when there is one.
pub async fn run(
    routes: PlatformRoutes,
    listener: TcpListener,
    policy: &ServePolicy,
    shutdown: &Shutdown,
) -> Result<(), ServeError> {
    let health_listener = match policy.transport.health_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    if policy.access.authenticator.is_none() {
        tracing::warn!("API calls are not authenticated (AUTH_JWT_ISSUER is not set)");
    }
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        tls = policy.transport.tls.is_some(),
        mutual_tls = policy.transport.mutual_tls,
        health_addr = ?health_listener.as_ref().and_then(|l| l.local_addr().ok()),
        "serving"
    );
    let (api_stop, health_stop) = (shutdown.stop_accepting(), shutdown.stop_accepting());
    let health_only = async {
        match health_listener {
            // Plaintext, no layers: probes are never shed or authenticated.
            Some(listener) => tonic::transport::Server::builder()
                .add_routes(routes.health_only)
                .serve_with_incoming_shutdown(incoming(listener), health_stop)
                .await
                .map_err(ServeError::from),
            None => Ok(()),
        }
    };
    let (served, health_served) =
        tokio::join!(serve(routes.api, listener, api_stop, policy), health_only);
    served.and(health_served)
}

/// The connections accepted on `listener`, with Nagle's algorithm off.
///
/// With it on, a small HTTP/2 frame (a health answer, a unary response's
/// trailers) waits up to 40 ms behind an earlier unacknowledged one: seen
/// as 50 ms start-up probes and a 45-60 ms p99.9 at light load before this.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `routes` on `listener` until `stop_accepting`, then stops
/// accepting and waits for in-flight calls to finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    stop_accepting: impl Future<Output = ()>,
    policy: &ServePolicy,
) -> Result<(), ServeError> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &policy.transport.tls {
        builder = builder.tls_config(tls.clone())?;
    }
    // No server-wide layer: the API services carry theirs (see
    // `ApiLayers`), and health and reflection are served bare.
    builder
        // Answer a stuck client instead of holding its stream forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), stop_accepting)
        .await?;
    Ok(())
}
