//! Building the order service and running it until it is told to stop.
//!
//! `build` does everything that can fail at start-up (connect, streams,
//! bind) so `main` reports it before serving; `run_until_stopped` runs the
//! gRPC server, the payment-results and payment-deadline consumers and the
//! health watch, and drains
//! them in order on shutdown (see `orderflow_platform::server::Started`).
//! Both are the order service's part of
//! `orderflow_platform::main_loop::Program`.

use std::net::SocketAddr;

use orderflow_eventbus::ConsumerSpec;
use orderflow_platform::{
    main_loop::Program, server, service_config::ServiceConfig, shutdown::Shutdown,
};
use orderflow_proto::{
    contract::{ORDERS_STREAM, PAYMENTS_STREAM},
    order::v1::order_service_server::OrderServiceServer,
};

use crate::{
    Config,
    deadline::{self, FailAtDeadline},
    events::{OrderEvents, Orders},
    grpc::OrderApi,
    settlement::{self, SettleOnPaymentEvents},
};

/// Methods only callers with the `admin` role may call when API calls are
/// authenticated: the dead-letter admin API.
pub const ADMIN_ONLY: &[&str] = &[orderflow_platform::admin::ADMIN_PATHS];

/// A built order service, ready to run.
pub struct App {
    started: server::Started,
    events: OrderEvents,
    payment_deadline: Option<std::time::Duration>,
}

impl App {
    /// The address the gRPC server listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.started.local_addr()
    }
}

impl Program for App {
    type Config = Config;
    type Aggregate = Orders;

    async fn build(config: Config) -> Result<Self, server::ServeError> {
        let started = server::Started::start(&config.common, Config::NAME, ADMIN_ONLY).await?;
        Ok(Self {
            events: OrderEvents::new(started.jetstream().clone()),
            started,
            payment_deadline: config.payment_deadline,
        })
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), server::ServeError> {
        let Self {
            started,
            events,
            payment_deadline,
        } = self;
        let api = OrderServiceServer::new(OrderApi::new(
            events.clone(),
            payment_deadline,
            shutdown.requested(),
        ))
        .max_decoding_message_size(server::MAX_REQUEST_BYTES);
        // Runs whatever the deadline setting: deadlines scheduled before it
        // was turned off still fire, and are still honoured.
        started.spawn_consumer(
            ConsumerSpec::durable(ORDERS_STREAM, deadline::DURABLE, &deadline::subject()),
            FailAtDeadline::new(events.clone()),
            &shutdown,
        );
        let readiness = events.store().clone();
        let consumer =
            ConsumerSpec::durable(PAYMENTS_STREAM, settlement::DURABLE, settlement::SUBJECT);
        let handler = SettleOnPaymentEvents::new(events);
        started
            .serve(api, consumer, handler, readiness, shutdown)
            .await
    }
}
