//! Building the order service and running it until it is told to stop.
//!
//! `build` does everything that can fail at start-up (connect, streams,
//! bucket, bind) so `main` reports it before serving; `run_until_stopped`
//! runs the gRPC server, the two consumers and the health watch, and on
//! shutdown drains them in order: NOT_SERVING, no new calls or pulls,
//! in-flight work finished and acked, NATS drained.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use orderflow_eventbus::{Client, ConsumerSpec, DurableConsumer, JetStream, ensure_streams};
use orderflow_platform::server;
use orderflow_proto::{
    FILE_DESCRIPTOR_SET,
    contract::{ORDERS_STREAM, ORDERS_SUBJECTS, PAYMENTS_STREAM, PAYMENTS_SUBJECTS, STREAMS},
    order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    Config,
    events::OrderEvents,
    grpc::OrderApi,
    payments::{self, PaymentResultsHandler},
    projection::{self, OrderViews, ProjectionHandler},
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
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
    /// JetStream setup failed.
    #[error("cannot set up JetStream: {0}")]
    JetStream(String),
    /// The gRPC address cannot be bound.
    #[error("cannot listen on {addr}: {source}. Set GRPC_ADDR to a free address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// A built order service, ready to run.
pub struct App {
    config: Config,
    client: Client,
    js: JetStream,
    listener: TcpListener,
    events: OrderEvents,
    views: OrderViews,
}

/// Consumer settings shared by the service's consumers.
fn consumer_spec(stream: &str, durable: &str, subjects: &str) -> ConsumerSpec {
    ConsumerSpec {
        stream: stream.to_owned(),
        durable: durable.to_owned(),
        filter_subjects: vec![subjects.to_owned()],
        ack_wait: Duration::from_secs(30),
        max_deliver: 10,
        backoff: Vec::new(),
        concurrency: 64,
    }
}

impl App {
    /// Connects to NATS, ensures streams and the projection bucket, and binds
    /// the gRPC address.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let common = &config.common;
        let client = orderflow_eventbus::connect(&common.nats_url, "order-service")
            .await
            .map_err(|e| AppError::Nats {
                url: common.nats_url.clone(),
                message: e.to_string(),
            })?;
        let js = orderflow_eventbus::jetstream(client.clone());
        ensure_streams(&js, STREAMS, common.stream_replicas)
            .await
            .map_err(|e| AppError::JetStream(e.to_string()))?;
        let views = OrderViews::open(js.clone(), common.stream_replicas)
            .await
            .map_err(|e| AppError::JetStream(e.to_string()))?;
        let listener = TcpListener::bind(common.grpc_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: common.grpc_addr,
                source,
            })?;
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
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let Self {
            config,
            client,
            js,
            listener,
            events,
            views,
        } = self;
        let (health, health_server) = server::health(&[SERVICE_NAME]).await;
        let routes = server::with_platform_services(
            Routes::new(OrderServiceServer::new(OrderApi::new(
                events.clone(),
                views.clone(),
            ))),
            health_server,
            &[FILE_DESCRIPTOR_SET],
            &[SERVICE_NAME],
        )?;

        let workers = tokio_util::task::TaskTracker::new();
        let check = {
            let client = client.clone();
            let events = events.clone();
            move || {
                let client = client.clone();
                let events = events.clone();
                async move { orderflow_eventbus::is_connected(&client) && events.ping().await }
            }
        };
        workers.spawn(health.watch(Duration::from_secs(1), check, shutdown.clone()));
        workers.spawn(
            DurableConsumer::new(
                js.clone(),
                consumer_spec(PAYMENTS_STREAM, payments::DURABLE, PAYMENTS_SUBJECTS),
            )
            .run(
                Arc::new(PaymentResultsHandler::new(events.clone())),
                shutdown.clone(),
            ),
        );
        workers.spawn(
            DurableConsumer::new(
                js.clone(),
                consumer_spec(ORDERS_STREAM, projection::DURABLE, ORDERS_SUBJECTS),
            )
            .run(Arc::new(ProjectionHandler::new(views)), shutdown.clone()),
        );
        workers.close();

        tracing::info!(addr = ?listener.local_addr().ok(), "order-service serving");
        let served = server::serve(routes, listener, shutdown.clone()).await;
        // Whatever stopped the server, stop everything else too.
        shutdown.cancel();
        if tokio::time::timeout(config.common.shutdown_timeout, workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight messages did not finish within SHUTDOWN_TIMEOUT_SECS; they will be redelivered"
            );
        }
        if let Err(error) = client.drain().await {
            tracing::warn!(%error, "NATS drain failed");
        }
        tracing::info!("order-service stopped");
        served.map_err(AppError::from)
    }
}
