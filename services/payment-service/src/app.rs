//! Building the payment service and running it until it is told to stop.
//!
//! `build` does everything that can fail at start-up; `run_until_stopped`
//! runs the gRPC server, the order-event and projection consumers and the
//! health watch, and drains them in order on shutdown (see
//! `orderflow_platform::server::run`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use orderflow_eventbus::{Client, ConsumerSpec, DurableConsumer, JetStream, ensure_streams};
use orderflow_platform::server::{self, ServeError};
use orderflow_proto::{
    FILE_DESCRIPTOR_SET,
    contract::{ORDERS_STREAM, ORDERS_SUBJECTS, PAYMENTS_STREAM, PAYMENTS_SUBJECTS, STREAMS},
    payment::v1::payment_service_server::{PaymentServiceServer, SERVICE_NAME},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::Routes;

use crate::{
    Config,
    breaker::Breaker,
    events::PaymentEvents,
    gateway::{SimulatedGateway, resilient},
    grpc::PaymentApi,
    orders::{self, OrderEventsHandler, Payments},
    projection::{self, PaymentViews, ProjectionHandler},
};

/// Methods only callers with the `admin` role may call when API calls are
/// authenticated: refunds and the dead-letter admin API.
pub const ADMIN_ONLY: &[&str] = &[
    "/orderflow.payment.v1.PaymentService/RefundPayment",
    orderflow_platform::admin::ADMIN_PATHS,
];

/// A built payment service, ready to run.
pub struct App {
    config: Config,
    client: Client,
    js: JetStream,
    listener: TcpListener,
    payments: Payments,
    breaker: Breaker,
    views: PaymentViews,
    /// Reports the breaker's state while the service lives.
    _breaker_gauge: opentelemetry::metrics::ObservableGauge<u64>,
}

impl App {
    /// Builds the service with the simulated gateway of `config`.
    pub async fn build(config: Config) -> Result<Self, ServeError> {
        let gateway = SimulatedGateway::new(config.simulator.clone());
        Self::with_gateway(config, gateway).await
    }

    /// Builds the service with another gateway (a real one, or a simulator
    /// shared by several replicas in tests). Calls to it go through the
    /// breaker, retry and timeout stack configured by `config`.
    pub async fn with_gateway<G>(config: Config, gateway: G) -> Result<Self, ServeError>
    where
        G: tower::Service<
                crate::gateway::GatewayRequest,
                Response = crate::gateway::GatewayResponse,
                Error = crate::gateway::GatewayError,
            > + Clone
            + Send
            + Sync
            + 'static,
        G::Future: Send + 'static,
    {
        let common = &config.common;
        let client =
            server::connect_nats(&common.nats_url, &common.nats, "payment-service").await?;
        let js = orderflow_eventbus::jetstream(client.clone());
        ensure_streams(&js, STREAMS, common.stream_replicas)
            .await
            .map_err(|e| ServeError::JetStream(e.to_string()))?;
        let views = PaymentViews::open(js.clone(), common.stream_replicas)
            .await
            .map_err(|e| ServeError::JetStream(e.to_string()))?;
        let listener = server::bind(common.grpc_addr).await?;
        let resilience = &config.resilience;
        let breaker = Breaker::new(resilience.breaker_failures, resilience.breaker_open);
        let client_stack = resilient(gateway, resilience, breaker.clone());
        Ok(Self {
            _breaker_gauge: crate::metrics::breaker_gauge(breaker.clone()),
            payments: Payments::new(PaymentEvents::new(js.clone()), client_stack, js.clone()),
            breaker,
            config,
            client,
            js,
            listener,
            views,
        })
    }

    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The gateway client's circuit breaker.
    pub fn breaker(&self) -> Breaker {
        self.breaker.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Self {
            config,
            client,
            js,
            listener,
            payments,
            breaker,
            views,
            _breaker_gauge,
        } = self;
        let (health, health_server) = server::health(&[SERVICE_NAME]).await;
        let api = PaymentServiceServer::new(PaymentApi::new(payments.clone(), views.clone()))
            .max_decoding_message_size(server::MAX_REQUEST_BYTES);
        let routes = server::with_platform_services(
            Routes::new(api).add_service(orderflow_platform::admin::service(js.clone())),
            health_server,
            &[FILE_DESCRIPTOR_SET],
            &[SERVICE_NAME, orderflow_platform::admin::SERVICE_NAME],
            config.common.grpc.reflection,
        )?;

        let workers = TaskTracker::new();
        let check = {
            let events = payments.events().clone();
            move || {
                let events = events.clone();
                async move { events.ready().await }
            }
        };
        workers.spawn(health.watch(Duration::from_secs(1), check, shutdown.clone()));
        let ack_wait = config.common.consumer_ack_wait;
        let orders = ConsumerSpec::durable(ORDERS_STREAM, orders::DURABLE, ORDERS_SUBJECTS)
            .with_ack_wait(ack_wait);
        workers.spawn(DurableConsumer::new(js.clone(), orders).run(
            // A message that meets the open breaker waits for it, for half
            // the ack wait at most, instead of burning a delivery per cycle.
            Arc::new(
                OrderEventsHandler::new(payments, breaker).holding(ack_wait / 2, shutdown.clone()),
            ),
            shutdown.clone(),
        ));
        let projection =
            ConsumerSpec::durable(PAYMENTS_STREAM, projection::DURABLE, PAYMENTS_SUBJECTS)
                .with_ack_wait(ack_wait);
        workers.spawn(
            DurableConsumer::new(js, projection)
                .run(Arc::new(ProjectionHandler::new(views)), shutdown.clone()),
        );
        server::run(
            routes,
            listener,
            workers,
            client,
            shutdown,
            server::ServePolicy::from_config(&config.common, ADMIN_ONLY),
        )
        .await
    }
}
