//! What every test of this binary shares: the panic hook that catches a
//! service's panics, calls to every RPC (typed, or raw bytes through
//! [`RawCodec`]), clients of both services, request builders, and the check
//! that both services still serve.

use super::*;

/// A well-formed id that names nothing.
pub(crate) const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------
// Panics inside the services
// ---------------------------------------------------------------------------

/// Panics seen on tokio worker threads (where the services' handlers,
/// connections and consumers run), with their messages.
pub(crate) static SERVICE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic on a tokio worker thread, then lets the default hook
/// print it as usual. Test bodies run on the test's own thread, so a failing
/// assertion is not counted.
pub(crate) fn record_service_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name() == Some("tokio-runtime-worker")
                && let Ok(mut panics) = SERVICE_PANICS.lock()
            {
                panics.push(info.to_string());
            }
            default(info);
        }));
    });
}

pub(crate) fn assert_no_service_panicked() {
    let panics = SERVICE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "a service panicked: {panics:#?}");
}

// ---------------------------------------------------------------------------
// Calls to every RPC, typed or as raw bytes
// ---------------------------------------------------------------------------

/// Which service a raw call goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Service {
    Orders,
    Payments,
}

/// One call to one RPC.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    CreateOrder(CreateOrderRequest),
    GetOrder(GetOrderRequest),
    ListOrders(ListOrdersRequest),
    CancelOrder(CancelOrderRequest),
    WatchOrder(WatchOrderRequest),
    GetPayment(GetPaymentRequest),
    ListPayments(ListPaymentsRequest),
    RefundPayment(RefundPaymentRequest),
    /// `body` sent as the request message as it is, protobuf or not.
    Raw {
        service: Service,
        method: &'static str,
        body: Vec<u8>,
    },
}

impl Call {
    pub(crate) fn rpc(&self) -> &'static str {
        match self {
            Self::CreateOrder(_) => "CreateOrder",
            Self::GetOrder(_) => "GetOrder",
            Self::ListOrders(_) => "ListOrders",
            Self::CancelOrder(_) => "CancelOrder",
            Self::WatchOrder(_) => "WatchOrder",
            Self::GetPayment(_) => "GetPayment",
            Self::ListPayments(_) => "ListPayments",
            Self::RefundPayment(_) => "RefundPayment",
            Self::Raw { method, .. } => method,
        }
    }
}

/// Every method of the two API services: (service, method, server-streaming).
pub(crate) const METHODS: &[(Service, &str, bool)] = &[
    (Service::Orders, "CreateOrder", false),
    (Service::Orders, "GetOrder", false),
    (Service::Orders, "ListOrders", false),
    (Service::Orders, "CancelOrder", false),
    (Service::Orders, "WatchOrder", true),
    (Service::Payments, "GetPayment", false),
    (Service::Payments, "ListPayments", false),
    (Service::Payments, "RefundPayment", false),
];

/// Clients of both services.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) orders: OrderServiceClient<Channel>,
    pub(crate) payments: PaymentServiceClient<Channel>,
    pub(crate) order_channel: Channel,
    pub(crate) payment_channel: Channel,
}

pub(crate) async fn channel(service: &RunningService) -> Channel {
    Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Clients {
    pub(crate) async fn connect(orders: &RunningService, payments: &RunningService) -> Self {
        Self {
            orders: order_client(orders).await,
            payments: payment_client(payments).await,
            order_channel: channel(orders).await,
            payment_channel: channel(payments).await,
        }
    }

    /// Makes the call; the order a successful CreateOrder returns.
    pub(crate) async fn send(&self, call: Call) -> Result<Option<Order>, Status> {
        let (mut orders, mut payments) = (self.orders.clone(), self.payments.clone());
        match call {
            Call::CreateOrder(r) => orders.create_order(r).await.map(|r| r.into_inner().order),
            Call::GetOrder(r) => orders.get_order(r).await.map(|_| None),
            Call::ListOrders(r) => orders.list_orders(r).await.map(|_| None),
            Call::CancelOrder(r) => orders.cancel_order(r).await.map(|_| None),
            Call::WatchOrder(r) => orders.watch_order(r).await.map(|_| None),
            Call::GetPayment(r) => payments.get_payment(r).await.map(|_| None),
            Call::ListPayments(r) => payments.list_payments(r).await.map(|_| None),
            Call::RefundPayment(r) => payments.refund_payment(r).await.map(|_| None),
            Call::Raw {
                service,
                method,
                body,
            } => self.send_raw(service, method, body).await.map(|()| None),
        }
    }

    pub(crate) async fn send_raw(
        &self,
        service: Service,
        method: &'static str,
        body: Vec<u8>,
    ) -> Result<(), Status> {
        let (channel, name) = match service {
            Service::Orders => (
                self.order_channel.clone(),
                "orderflow.order.v1.OrderService",
            ),
            Service::Payments => (
                self.payment_channel.clone(),
                "orderflow.payment.v1.PaymentService",
            ),
        };
        let streaming = METHODS.iter().any(|(_, m, s)| *m == method && *s);
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!("/{name}/{method}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let request = tonic::Request::new(body);
        if streaming {
            grpc.server_streaming(request, path, RawCodec)
                .await
                .map(|_| ())
        } else {
            grpc.unary(request, path, RawCodec).await.map(|_| ())
        }
    }
}

/// Sends and receives message bodies as they are, so a test can send bytes
/// that no generated client would.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

pub(crate) struct RawEncoder;

pub(crate) struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

// ---------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------

pub(crate) fn money(currency: &str, units: i64, nanos: i32) -> Money {
    Money {
        currency_code: currency.to_owned(),
        units,
        nanos,
    }
}

pub(crate) fn item(sku: &str, quantity: i32, price: Option<(&str, i64, i32)>) -> OrderItem {
    OrderItem {
        sku: sku.to_owned(),
        quantity,
        unit_price: price.map(|(c, u, n)| money(c, u, n)),
    }
}

pub(crate) fn ok_item() -> OrderItem {
    item("SKU-1", 1, Some(("EUR", 1, 0)))
}

pub(crate) fn create(customer: &str, items: Vec<OrderItem>) -> Call {
    Call::CreateOrder(CreateOrderRequest {
        customer_id: customer.to_owned(),
        items,
        request_id: String::new(),
    })
}

pub(crate) fn create_with_request_id(request_id: &str, items: Vec<OrderItem>) -> Call {
    Call::CreateOrder(CreateOrderRequest {
        customer_id: String::from("c-1"),
        items,
        request_id: request_id.to_owned(),
    })
}

pub(crate) fn one_item(item: OrderItem) -> Call {
    create("c-1", vec![item])
}

pub(crate) fn get_order(id: &str) -> Call {
    Call::GetOrder(GetOrderRequest {
        order_id: id.to_owned(),
    })
}

pub(crate) fn cancel_order(id: &str) -> Call {
    Call::CancelOrder(CancelOrderRequest {
        order_id: id.to_owned(),
    })
}

pub(crate) fn watch_order(id: &str) -> Call {
    Call::WatchOrder(WatchOrderRequest {
        order_id: id.to_owned(),
    })
}

pub(crate) fn get_payment(id: &str) -> Call {
    Call::GetPayment(GetPaymentRequest {
        payment_id: id.to_owned(),
    })
}

pub(crate) fn refund_payment(id: &str) -> Call {
    Call::RefundPayment(RefundPaymentRequest {
        payment_id: id.to_owned(),
    })
}

pub(crate) fn list_orders(request: ListOrdersRequest) -> Call {
    Call::ListOrders(request)
}

pub(crate) fn list_payments(request: ListPaymentsRequest) -> Call {
    Call::ListPayments(request)
}

/// The page-token filters of a ListOrders request (`grpc.rs`'s
/// `filter_key`), to build tokens bound to other filters.
pub(crate) fn order_filters(customer_id: &str, status: i32) -> String {
    format!("{customer_id}\u{1f}{status}")
}

/// A field the request messages do not have (number 99, a string), as a
/// newer client would send.
pub(crate) fn unknown_field() -> Vec<u8> {
    // The key (99 << 3 | 2 = 794) as a varint, the length, the bytes.
    vec![0x9a, 0x06, 3, b'n', b'e', b'w']
}

pub(crate) fn uuid_text(n: u128, upper: bool) -> String {
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        n >> 96,
        (n >> 80) & 0xffff,
        (n >> 64) & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    );
    if upper { s.to_uppercase() } else { s }
}

/// Both services report SERVING, and an order is placed and paid.
pub(crate) async fn still_serving(
    clients: &Clients,
    orders: &RunningService,
    payments: &RunningService,
) {
    for service in [orders, payments] {
        let status = health_client(service)
            .await
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    let request_id = format!("r-still-serving-{}", std::process::id());
    let order = clients
        .orders
        .clone()
        .create_order(order_request("c-still-serving", 2, 3, &request_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    wait_for_status(&clients.orders, &order.order_id, OrderStatus::Confirmed).await;
    clients
        .payments
        .clone()
        .list_payments(ListPaymentsRequest::default())
        .await
        .unwrap();
}
