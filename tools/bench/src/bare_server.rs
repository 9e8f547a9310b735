//! `orderflow-bench bare-order-server`: the reference that says what
//! CreateOrder could reach on this machine.
//!
//! Issue 12's goal for CreateOrder alone is a ratio to raw acked publishes
//! (`--baseline`), and the bound it names is "what a bare tonic handler that
//! publishes and awaits the ack reaches". This server is that handler, so
//! `scripts/bench.sh --bare` measures the bound with the same bench, the same
//! load and the same baseline as the order service, in the same run.
//!
//! It does the least a real CreateOrder must: tonic decodes the request; the
//! handler builds an `Order` with a fresh random id and two timestamps,
//! encodes it as an `OrderCreated` (the event the order service appends),
//! publishes it with a `Nats-Msg-Id` header to a subject of its own on a
//! scratch stream configured like `ORDERS` (the baseline's
//! [`create_scratch_stream`]), awaits the acknowledgement and answers with
//! the order. Nothing else: no validation, no total, no idempotency, no
//! optimistic-concurrency check, no tracing or trace context, no
//! authentication or load shedding, no other header. The other RPCs answer
//! UNIMPLEMENTED. `grpc.health.v1` answers SERVING from the start (the
//! stream exists before the port is bound), so `bench.sh` waits for it the
//! way it waits for the services. Its accepted sockets have `TCP_NODELAY`
//! like the services' (without it small HTTP/2 frames stall for 40 ms), and
//! the binary has their allocator and runtime (mimalloc, tokio's
//! multi-threaded runtime), so what separates the two is the order service's
//! own work.
//!
//! It lives in the bench rather than in `services/` because it is a
//! measuring instrument, not a service: it depends on nothing of the
//! services (so their changes cannot move it), and it ships with the bench
//! that measures against it, like `otlp-sink`.

use std::{
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use async_nats::{HeaderMap, header::NATS_MESSAGE_ID, jetstream};
use bytes::Bytes;
use orderflow_proto::order::v1::{
    CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, Order, OrderCreated,
    OrderStatus, WatchOrderRequest, WatchOrderResponse,
    order_service_server::{OrderService, OrderServiceServer},
};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::{
    baseline::{create_scratch_stream, delete_scratch_stream},
    otlp_sink::stopped,
};

/// The scratch stream; created at start, deleted at exit.
pub const STREAM: &str = "BENCH_BARE";
/// Each order's subject is this, a dot and its id.
const SUBJECT_PREFIX: &str = "bench.bare";
/// The stream's subjects.
const SUBJECTS: &str = "bench.bare.>";

/// Fresh order ids: random-looking version-4 UUIDs from std's keyed SipHash
/// of a counter. The bench's dependencies have no random number generator,
/// and the order service's ids cost about as much (a SHA-1 per order).
#[derive(Debug)]
struct Ids {
    keys: RandomState,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Self {
        Self {
            keys: RandomState::new(),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let bits = (u128::from(self.keys.hash_one(n)) << 64) | u128::from(self.keys.hash_one(!n));
        // Version 4 (random), variant RFC 4122.
        let bits = (bits & !((0xf << 76) | (0x3 << 62))) | (0x4 << 76) | (0x2 << 62);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (bits >> 96) as u32,
            (bits >> 80) as u16,
            (bits >> 64) as u16,
            (bits >> 48) as u16,
            bits & 0xffff_ffff_ffff
        )
    }
}

/// The handler: JetStream and the id source.
#[derive(Clone, Debug)]
struct BareOrders {
    js: jetstream::Context,
    ids: Arc<Ids>,
}

/// The `OrderCreated` of a new order for `request`: what the order service
/// commits, without the total (the bench's own size estimate uses it too).
pub fn created_event(
    order_id: String,
    request: CreateOrderRequest,
    now: prost_types::Timestamp,
) -> OrderCreated {
    OrderCreated {
        order: Some(Order {
            order_id,
            customer_id: request.customer_id,
            items: request.items,
            status: OrderStatus::PendingPayment as i32,
            create_time: Some(now),
            update_time: Some(now),
            request_id: request.request_id,
            version: 1,
            ..Default::default()
        }),
    }
}

fn unimplemented<T>(method: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "bare-order-server implements CreateOrder only, not {method}"
    )))
}

#[tonic::async_trait]
impl OrderService for BareOrders {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let request = request.into_inner();
        let order_id = self.ids.next();
        let subject = format!("{SUBJECT_PREFIX}.{order_id}");
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, order_id.as_str());
        let now = prost_types::Timestamp::from(SystemTime::now());
        let event = created_event(order_id, request, now);
        let payload = Bytes::from(event.encode_to_vec());
        // The first await sends, the second waits for the ack.
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| Status::unavailable(format!("publish: {e}")))?
            .await
            .map_err(|e| Status::unavailable(format!("publish ack: {e}")))?;
        Ok(Response::new(CreateOrderResponse { order: event.order }))
    }

    async fn get_order(
        &self,
        _: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        unimplemented("GetOrder")
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        unimplemented("ListOrders")
    }

    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        unimplemented("CancelOrder")
    }

    type WatchOrderStream = futures_util::stream::Empty<Result<WatchOrderResponse, Status>>;

    async fn watch_order(
        &self,
        _: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        unimplemented("WatchOrder")
    }
}

/// Creates the scratch stream, serves on `listen` until SIGTERM or Ctrl-C,
/// then deletes the stream. The bound address goes to stderr as
/// `bare-order-server: listening on ADDR` (for `--listen 127.0.0.1:0`).
pub async fn run(nats_url: &str, listen: SocketAddr) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .name("orderflow-bench-bare-order-server")
        .connect(nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {nats_url}: {e}"))?;
    let js = jetstream::new(client.clone());
    create_scratch_stream(&js, STREAM, SUBJECTS).await?;
    let served = serve(js.clone(), listen).await;
    delete_scratch_stream(&js, STREAM).await;
    if let Err(e) = client.drain().await {
        eprintln!("warning: NATS drain failed: {e}");
    }
    served
}

async fn serve(js: jetstream::Context, listen: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_serving::<OrderServiceServer<BareOrders>>()
        .await;
    let api = OrderServiceServer::new(BareOrders {
        js,
        ids: Arc::new(Ids::new()),
    });
    eprintln!("bare-order-server: listening on {local}");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(api)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopped(),
        )
        .await
        .map_err(|e| format!("the gRPC server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids() {
        let ids = Ids::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        for id in [a, b] {
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
            assert!(groups[2].starts_with('4'), "version of {id}");
            assert!("89ab".contains(&groups[3][..1]), "variant of {id}");
        }
    }
}
