//! Building the payment service and running it until it is told to stop.
//!
//! `build` does everything that can fail at start-up; `run_until_stopped`
//! runs the gRPC server, the order-event consumer and the health watch, and
//! drains them in order on shutdown (see
//! `orderflow_platform::server::Started`). Both are the payment service's
//! part of `orderflow_platform::main_loop::Program`.

use std::net::SocketAddr;

use orderflow_platform::{
    main_loop::Program, server, service_config::ServiceConfig, shutdown::Shutdown,
};
use orderflow_proto::payment::v1::payment_service_server::PaymentServiceServer;

use crate::{
    Config,
    breaker::Breaker,
    charging::{self, ChargeOnOrderEvents, Payments},
    events::{PaymentAggregate, PaymentEvents},
    gateway::{SimulatedGateway, resilient},
    grpc::PaymentApi,
    http_gateway::HttpGateway,
};

/// Methods only callers with the `admin` role may call when API calls are
/// authenticated: refunds and the dead-letter admin API.
pub const ADMIN_ONLY: &[&str] = &[
    "/orderflow.payment.v1.PaymentService/RefundPayment",
    orderflow_platform::admin::ADMIN_PATHS,
];

/// A built payment service, ready to run.
pub struct App {
    started: server::Started,
    payments: Payments,
    breaker: Breaker,
    /// Reports the breaker's state while the service lives.
    _breaker_gauge: opentelemetry::metrics::ObservableGauge<u64>,
}

impl App {
    /// Builds the service with another gateway (a real one, or a simulator
    /// shared by several replicas in tests). Calls to it go through the
    /// breaker, retry and timeout stack configured by `config`.
    pub async fn with_gateway<G>(config: Config, gateway: G) -> Result<Self, server::ServeError>
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
        let started = server::Started::start(&config.common, Config::NAME, ADMIN_ONLY).await?;
        let js = started.jetstream().clone();
        let resilience = &config.resilience;
        let breaker = Breaker::new(resilience.breaker_failures, resilience.breaker_open);
        let client_stack = resilient(gateway, resilience, breaker.clone());
        let gauged = breaker.clone();
        Ok(Self {
            _breaker_gauge: crate::metrics::breaker_gauge(move || gauged.state().gauge_value()),
            payments: Payments::new(PaymentEvents::new(js.clone()), client_stack, js),
            breaker,
            started,
        })
    }

    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.started.local_addr()
    }

    /// The gateway client's circuit breaker.
    pub fn breaker(&self) -> Breaker {
        self.breaker.clone()
    }
}

impl Program for App {
    type Config = Config;
    type Aggregate = PaymentAggregate;

    /// Builds the service with the HTTP gateway at `GATEWAY_URL`, or the
    /// built-in simulator of `config` when it is unset.
    async fn build(config: Config) -> Result<Self, server::ServeError> {
        match &config.gateway_url {
            Some(url) => {
                tracing::info!(gateway = %url, "charging through the HTTP gateway");
                let gateway = HttpGateway::new(url);
                Self::with_gateway(config, gateway).await
            }
            None => {
                let gateway = SimulatedGateway::new(config.simulator.clone());
                Self::with_gateway(config, gateway).await
            }
        }
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), server::ServeError> {
        let Self {
            started,
            payments,
            breaker,
            _breaker_gauge,
        } = self;
        let api = PaymentServiceServer::new(PaymentApi::new(payments.clone()))
            .max_decoding_message_size(server::MAX_REQUEST_BYTES);
        let readiness = payments.events().store().clone();
        // A message that meets the open breaker waits for it, for half the
        // ack wait at most, instead of burning a delivery per cycle.
        let handler = ChargeOnOrderEvents::new(payments, breaker)
            .holding(started.ack_wait() / 2, shutdown.requested());
        let [consumer, cancellations, failures] = charging::consumers();
        started.spawn_consumer(cancellations, handler.clone(), &shutdown);
        started.spawn_consumer(failures, handler.clone(), &shutdown);
        started
            .serve(api, consumer, handler, readiness, shutdown)
            .await
    }
}
