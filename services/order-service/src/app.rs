//! Building the order service and running it until it is told to stop.
//!
//! `build` does everything that can fail at start-up (connect, streams,
//! bucket, bind) so `main` reports it before serving; `run_until_stopped`
//! runs the gRPC server, the two consumers and the health watch, and drains
//! them in order on shutdown (see `orderflow_platform::server::run`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use orderflow_eventbus::{Client, ConsumerSpec, DurableConsumer, JetStream, ensure_streams};
use orderflow_platform::server::{self, ServeError};
use orderflow_proto::{
    FILE_DESCRIPTOR_SET,
    contract::{ORDERS_STREAM, ORDERS_SUBJECTS, PAYMENTS_STREAM, PAYMENTS_SUBJECTS, STREAMS},
    order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME},
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::Routes;

use crate::{
    Config,
    events::OrderEvents,
    grpc::OrderApi,
    payments::{self, PaymentResultsHandler},
    projection::{self, OrderViews, ProjectionHandler},
};

/// Methods only callers with the `admin` role may call when API calls are
/// authenticated: the dead-letter admin API.
pub const ADMIN_ONLY: &[&str] = &[orderflow_platform::admin::ADMIN_PATHS];

/// A built order service, ready to run.
pub struct App {
    config: Config,
    client: Client,
    js: JetStream,
    listener: TcpListener,
    events: OrderEvents,
    views: OrderViews,
}

impl App {
    /// Connects to NATS, ensures streams and the projection bucket, and binds
    /// the gRPC address.
    pub async fn build(config: Config) -> Result<Self, ServeError> {
        let common = &config.common;
        let client = server::connect_nats(&common.nats_url, &common.nats, "order-service").await?;
        let js = orderflow_eventbus::jetstream(client.clone());
        ensure_streams(&js, STREAMS, common.stream_replicas)
            .await
            .map_err(|e| ServeError::JetStream(e.to_string()))?;
        let views = OrderViews::open(js.clone(), common.stream_replicas)
            .await
            .map_err(|e| ServeError::JetStream(e.to_string()))?;
        let listener = server::bind(common.grpc_addr).await?;
        Ok(Self {
            events: OrderEvents::new(js.clone()),
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

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Self {
            config,
            client,
            js,
            listener,
            events,
            views,
        } = self;
        let (health, health_server) = server::health(&[SERVICE_NAME]).await;
        let api = OrderServiceServer::new(OrderApi::new(
            events.clone(),
            views.clone(),
            shutdown.clone(),
        ))
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
            let events = events.clone();
            move || {
                let events = events.clone();
                async move { events.ready().await }
            }
        };
        workers.spawn(health.watch(Duration::from_secs(1), check, shutdown.clone()));
        let ack_wait = config.common.consumer_ack_wait;
        let payments = ConsumerSpec::durable(PAYMENTS_STREAM, payments::DURABLE, PAYMENTS_SUBJECTS)
            .with_ack_wait(ack_wait);
        workers.spawn(DurableConsumer::new(js.clone(), payments).run(
            Arc::new(PaymentResultsHandler::new(events)),
            shutdown.clone(),
        ));
        let projection = ConsumerSpec::durable(ORDERS_STREAM, projection::DURABLE, ORDERS_SUBJECTS)
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
