//! Bad input, over real gRPC and a real `nats-server`: every RPC answers a
//! malformed request with a precise status (`INVALID_ARGUMENT` naming every
//! bad field in `google.rpc.BadRequest`, `NOT_FOUND`, `ALREADY_EXISTS`,
//! `OUT_OF_RANGE` for a message over the size limit, `INTERNAL` for bytes
//! that are not protobuf), never a panic; arbitrary requests and arbitrary
//! event payloads never take a service down.
//!
//! - `every_malformed_request_gets_its_precise_status` is the table: one row
//!   per case, with the code and the exact violated fields it expects.
//! - `arbitrary_requests_are_answered_never_crash_a_service` sends proptest's
//!   requests (and raw bytes) to every RPC.
//! - `garbage_events_are_dead_lettered_and_both_services_keep_serving`
//!   publishes random payloads under the event types the services know, and
//!   checks, consumer by consumer, that each one no consumer can apply left
//!   exactly one dead letter naming that consumer and the reason, and that
//!   each one a consumer applies or ignores left none.
//!
//! A panic inside a service shows up to a client as a reset connection (a
//! status that none of these tests accepts), and is also caught directly: a
//! panic hook records every panic on a tokio worker thread, where the
//! services' tasks run, and each test asserts there was none.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::BTreeMap,
    sync::{Mutex, Once},
    time::Duration,
};

use orderflow_e2e::services::{
    RunningService, health_client, order_client, order_request, payment_client, simulated_gateway,
    spawn_order_service, spawn_payment_service, violated_fields, wait_for_status,
};
use orderflow_eventbus::{aggregate::Kind, envelope::headers, subject::DEAD_LETTER_STREAM};
use orderflow_platform::{paging, server::MAX_REQUEST_BYTES};
use orderflow_proto::{
    Name,
    money::v1::Money,
    order::v1::{
        CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order,
        OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, OrderPaymentFailed, OrderRefunded,
        OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, Payment, PaymentAuthorized, PaymentDeclined,
        PaymentRefunded, PaymentStatus, PaymentVoided, RefundPaymentRequest,
        payment_service_client::PaymentServiceClient,
    },
};
use orderflow_testkit::{
    NatsServer,
    streams::{StoredMessage, consumer_caught_up, jetstream, read_all},
    wait_until,
};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use prost::{
    Message,
    bytes::{Buf, BufMut},
};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A well-formed id that names nothing.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------
// Panics inside the services
// ---------------------------------------------------------------------------

/// Panics seen on tokio worker threads (where the services' handlers,
/// connections and consumers run), with their messages.
static SERVICE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic on a tokio worker thread, then lets the default hook
/// print it as usual. Test bodies run on the test's own thread, so a failing
/// assertion is not counted.
fn record_service_panics() {
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

fn assert_no_service_panicked() {
    let panics = SERVICE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "a service panicked: {panics:#?}");
}

// ---------------------------------------------------------------------------
// Calls to every RPC, typed or as raw bytes
// ---------------------------------------------------------------------------

/// Which service a raw call goes to.
#[derive(Clone, Copy, Debug)]
enum Service {
    Orders,
    Payments,
}

/// One call to one RPC.
#[derive(Clone, Debug)]
enum Call {
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
    fn rpc(&self) -> &'static str {
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
const METHODS: &[(Service, &str, bool)] = &[
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
struct Clients {
    orders: OrderServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    order_channel: Channel,
    payment_channel: Channel,
}

async fn channel(service: &RunningService) -> Channel {
    Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

impl Clients {
    async fn connect(orders: &RunningService, payments: &RunningService) -> Self {
        Self {
            orders: order_client(orders).await,
            payments: payment_client(payments).await,
            order_channel: channel(orders).await,
            payment_channel: channel(payments).await,
        }
    }

    /// Makes the call; the order a successful CreateOrder returns.
    async fn send(&self, call: Call) -> Result<Option<Order>, Status> {
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

    async fn send_raw(
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
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

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

fn money(currency: &str, units: i64, nanos: i32) -> Money {
    Money {
        currency_code: currency.to_owned(),
        units,
        nanos,
    }
}

fn item(sku: &str, quantity: i32, price: Option<(&str, i64, i32)>) -> OrderItem {
    OrderItem {
        sku: sku.to_owned(),
        quantity,
        unit_price: price.map(|(c, u, n)| money(c, u, n)),
    }
}

fn ok_item() -> OrderItem {
    item("SKU-1", 1, Some(("EUR", 1, 0)))
}

fn create(customer: &str, items: Vec<OrderItem>) -> Call {
    Call::CreateOrder(CreateOrderRequest {
        customer_id: customer.to_owned(),
        items,
        request_id: String::new(),
    })
}

fn create_with_request_id(request_id: &str, items: Vec<OrderItem>) -> Call {
    Call::CreateOrder(CreateOrderRequest {
        customer_id: String::from("c-1"),
        items,
        request_id: request_id.to_owned(),
    })
}

fn one_item(item: OrderItem) -> Call {
    create("c-1", vec![item])
}

fn get_order(id: &str) -> Call {
    Call::GetOrder(GetOrderRequest {
        order_id: id.to_owned(),
    })
}

fn cancel_order(id: &str) -> Call {
    Call::CancelOrder(CancelOrderRequest {
        order_id: id.to_owned(),
    })
}

fn watch_order(id: &str) -> Call {
    Call::WatchOrder(WatchOrderRequest {
        order_id: id.to_owned(),
    })
}

fn get_payment(id: &str) -> Call {
    Call::GetPayment(GetPaymentRequest {
        payment_id: id.to_owned(),
    })
}

fn refund_payment(id: &str) -> Call {
    Call::RefundPayment(RefundPaymentRequest {
        payment_id: id.to_owned(),
    })
}

fn list_orders(request: ListOrdersRequest) -> Call {
    Call::ListOrders(request)
}

fn list_payments(request: ListPaymentsRequest) -> Call {
    Call::ListPayments(request)
}

/// The page-token filters of a ListOrders request (`grpc.rs`'s
/// `filter_key`), to build tokens bound to other filters.
fn order_filters(customer_id: &str, status: i32) -> String {
    format!("{customer_id}\u{1f}{status}")
}

/// A field the request messages do not have (number 99, a string), as a
/// newer client would send.
fn unknown_field() -> Vec<u8> {
    // The key (99 << 3 | 2 = 794) as a varint, the length, the bytes.
    vec![0x9a, 0x06, 3, b'n', b'e', b'w']
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// One malformed (or boundary) request and the answer it must get.
struct Row {
    what: &'static str,
    call: Call,
    code: Code,
    /// For INVALID_ARGUMENT: the BadRequest field violations, in order.
    fields: Vec<String>,
    /// Whether `fields` are only the first ones named (a status names as
    /// many as fit in the trailers; see `status::MAX_VIOLATION_BYTES`).
    prefix: bool,
    /// A piece of the status message that must be there (empty: none).
    message: &'static str,
}

fn row(what: &'static str, call: Call, code: Code, fields: &[&str]) -> Row {
    Row {
        what,
        call,
        code,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        prefix: false,
        message: "",
    }
}

fn invalid(what: &'static str, call: Call, fields: &[&str]) -> Row {
    row(what, call, Code::InvalidArgument, fields)
}

fn rows() -> Vec<Row> {
    use Code::*;
    let eur = |u, n| Some(("EUR", u, n));
    let long = |n: usize| "x".repeat(n);
    let over_limit = MAX_REQUEST_BYTES + 1;
    let mut table = vec![
        // ---- CreateOrder: required fields, counts and sizes
        invalid(
            "an empty CreateOrder",
            Call::CreateOrder(CreateOrderRequest::default()),
            &["customer_id", "items"],
        ),
        invalid("no items", create("c-1", vec![]), &["items"]),
        invalid(
            "101 items, one over the limit",
            create("c-1", (0..101).map(|_| ok_item()).collect()),
            &["items"],
        ),
        invalid(
            "a customer_id with a space",
            create("has space", vec![ok_item()]),
            &["customer_id"],
        ),
        invalid(
            "a customer_id with a control character",
            create("c\u{0}1", vec![ok_item()]),
            &["customer_id"],
        ),
        invalid(
            "a customer_id with a line break",
            create("c-1\n", vec![ok_item()]),
            &["customer_id"],
        ),
        invalid(
            "a 10 KB customer_id",
            create(&long(10 * 1024), vec![ok_item()]),
            &["customer_id"],
        ),
        invalid(
            "a customer_id of 129 characters",
            create(&"é".repeat(129), vec![ok_item()]),
            &["customer_id"],
        ),
        invalid(
            "a request_id of 129 characters",
            create_with_request_id(&long(129), vec![ok_item()]),
            &["request_id"],
        ),
        invalid(
            "a request_id with a tab",
            create_with_request_id("r\t1", vec![ok_item()]),
            &["request_id"],
        ),
        // ---- CreateOrder: items
        invalid(
            "an empty sku",
            one_item(item("", 1, eur(1, 0))),
            &["items[0].sku"],
        ),
        invalid(
            "a sku with a space",
            one_item(item("SKU 1", 1, eur(1, 0))),
            &["items[0].sku"],
        ),
        invalid(
            "a sku of 200 characters",
            one_item(item(&"S".repeat(200), 1, eur(1, 0))),
            &["items[0].sku"],
        ),
        invalid(
            "a sku of 65 characters",
            one_item(item(&"S".repeat(65), 1, eur(1, 0))),
            &["items[0].sku"],
        ),
        invalid(
            "a sku with a non-ASCII letter",
            one_item(item("SKU-é", 1, eur(1, 0))),
            &["items[0].sku"],
        ),
        invalid(
            "quantity zero",
            one_item(item("SKU-1", 0, eur(1, 0))),
            &["items[0].quantity"],
        ),
        invalid(
            "a negative quantity",
            one_item(item("SKU-1", -3, eur(1, 0))),
            &["items[0].quantity"],
        ),
        invalid(
            "quantity i32::MIN",
            one_item(item("SKU-1", i32::MIN, eur(1, 0))),
            &["items[0].quantity"],
        ),
        invalid(
            "quantity one over the limit",
            one_item(item("SKU-1", 10_001, eur(1, 0))),
            &["items[0].quantity"],
        ),
        invalid(
            "quantity i32::MAX",
            one_item(item("SKU-1", i32::MAX, eur(1, 0))),
            &["items[0].quantity"],
        ),
        invalid(
            "no unit_price",
            one_item(item("SKU-1", 1, None)),
            &["items[0].unit_price"],
        ),
        invalid(
            "a zero price",
            one_item(item("SKU-1", 1, eur(0, 0))),
            &["items[0].unit_price"],
        ),
        invalid(
            "a negative price",
            one_item(item("SKU-1", 1, eur(-1, 0))),
            &["items[0].unit_price"],
        ),
        invalid(
            "a price of i64::MIN units",
            one_item(item("SKU-1", 1, eur(i64::MIN, -999_999_999))),
            &["items[0].unit_price"],
        ),
        invalid(
            "a lower-case currency",
            one_item(item("SKU-1", 1, Some(("euro", 1, 0)))),
            &["items[0].unit_price.currency_code"],
        ),
        invalid(
            "an empty currency",
            one_item(item("SKU-1", 1, Some(("", 1, 0)))),
            &["items[0].unit_price.currency_code"],
        ),
        invalid(
            "a four-letter currency",
            one_item(item("SKU-1", 1, Some(("EURO", 1, 0)))),
            &["items[0].unit_price.currency_code"],
        ),
        invalid(
            "a currency of three non-ASCII letters",
            one_item(item("SKU-1", 1, Some(("ÉÜR", 1, 0)))),
            &["items[0].unit_price.currency_code"],
        ),
        invalid(
            "nanos of one whole unit",
            one_item(item("SKU-1", 1, eur(1, 1_000_000_000))),
            &["items[0].unit_price.nanos"],
        ),
        invalid(
            "nanos i32::MIN",
            one_item(item("SKU-1", 1, eur(0, i32::MIN))),
            &["items[0].unit_price.nanos"],
        ),
        invalid(
            "positive units with negative nanos",
            one_item(item("SKU-1", 1, eur(1, -1))),
            &["items[0].unit_price.nanos"],
        ),
        invalid(
            "negative units with positive nanos",
            one_item(item("SKU-1", 1, eur(-1, 1))),
            &["items[0].unit_price.nanos"],
        ),
        invalid(
            "mixed currencies",
            create(
                "c-1",
                vec![ok_item(), item("SKU-2", 1, Some(("USD", 1, 0)))],
            ),
            &["items[1].unit_price.currency_code"],
        ),
        invalid(
            "a line total that overflows",
            one_item(item("SKU-1", 10_000, eur(i64::MAX, 0))),
            &["items"],
        ),
        invalid(
            "an order total that overflows though every line fits",
            create(
                "c-1",
                vec![
                    item("SKU-1", 1, eur(i64::MAX, 0)),
                    item("SKU-2", 1, eur(1, 0)),
                ],
            ),
            &["items"],
        ),
        invalid(
            "every bad field of a request, each named",
            Call::CreateOrder(CreateOrderRequest {
                customer_id: String::new(),
                items: vec![
                    item("", 0, Some(("usd", 1, 0))),
                    item("SKU-2", 1, None),
                    item("SKU-3", 2, eur(1, -5)),
                ],
                request_id: String::from("has space"),
            }),
            &[
                "customer_id",
                "request_id",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price.currency_code",
                "items[1].unit_price",
                "items[2].unit_price.nanos",
            ],
        ),
        // ---- CreateOrder: boundaries that are accepted
        row(
            "the largest valid order (100 items, every field at its longest)",
            Call::CreateOrder(CreateOrderRequest {
                customer_id: long(128),
                items: (0..100)
                    .map(|_| item(&"S".repeat(64), 10_000, eur(1_000_000, 999_999_999)))
                    .collect(),
                request_id: "r".repeat(128),
            }),
            Ok,
            &[],
        ),
        row(
            "a customer_id of 128 non-ASCII characters",
            create(&"é".repeat(128), vec![ok_item()]),
            Ok,
            &[],
        ),
        row(
            "a price of one nano",
            one_item(item("SKU-1", 1, eur(0, 1))),
            Ok,
            &[],
        ),
        row(
            "a repeated request_id with the same content (an idempotent retry)",
            create_with_request_id("r-reused", vec![ok_item()]),
            Ok,
            &[],
        ),
        row(
            "a repeated request_id with other content",
            create_with_request_id("r-reused", vec![item("SKU-1", 2, eur(1, 0))]),
            AlreadyExists,
            &[],
        ),
        // ---- Order ids
        invalid("GetOrder without an id", get_order(""), &["order_id"]),
        invalid(
            "GetOrder with a malformed id",
            get_order("not-a-uuid"),
            &["order_id"],
        ),
        invalid(
            "GetOrder with an upper-case UUID",
            get_order("0190C5A2-7B1E-7C3D-9F00-123456789ABC"),
            &["order_id"],
        ),
        invalid(
            "GetOrder with a subject wildcard",
            get_order(">"),
            &["order_id"],
        ),
        invalid(
            "GetOrder with 36 bytes of non-ASCII",
            get_order(&"é".repeat(18)),
            &["order_id"],
        ),
        row(
            "GetOrder of an unknown order",
            get_order(UNKNOWN_ID),
            NotFound,
            &[],
        ),
        invalid("CancelOrder without an id", cancel_order(""), &["order_id"]),
        invalid(
            "CancelOrder with a UUID in braces",
            cancel_order(&format!("{{{UNKNOWN_ID}}}")),
            &["order_id"],
        ),
        row(
            "CancelOrder of an unknown order",
            cancel_order(UNKNOWN_ID),
            NotFound,
            &[],
        ),
        invalid("WatchOrder without an id", watch_order(""), &["order_id"]),
        invalid(
            "WatchOrder with a 10 KB id",
            watch_order(&long(10 * 1024)),
            &["order_id"],
        ),
        row(
            "WatchOrder of an unknown order",
            watch_order(UNKNOWN_ID),
            NotFound,
            &[],
        ),
        // ---- ListOrders
        invalid(
            "a negative page_size",
            list_orders(ListOrdersRequest {
                page_size: -1,
                ..Default::default()
            }),
            &["page_size"],
        ),
        invalid(
            "page_size i32::MIN",
            list_orders(ListOrdersRequest {
                page_size: i32::MIN,
                ..Default::default()
            }),
            &["page_size"],
        ),
        row(
            "page_size i32::MAX (served the largest page)",
            list_orders(ListOrdersRequest {
                page_size: i32::MAX,
                ..Default::default()
            }),
            Ok,
            &[],
        ),
        invalid(
            "a page_token that is not base64",
            list_orders(ListOrdersRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            }),
            &["page_token"],
        ),
        invalid(
            "a page_token of another version",
            list_orders(ListOrdersRequest {
                // "v2\n\u{1f}0\nx": the default filters, a format "v2" that
                // was never issued ("v1\n\u{1f}0\nx" is "djEKHzAKeA").
                page_token: "djIKHzAKeA".into(),
                ..Default::default()
            }),
            &["page_token"],
        ),
        invalid(
            "a page_token issued for other filters",
            list_orders(ListOrdersRequest {
                page_token: paging::encode(&order_filters("c-1", 0), UNKNOWN_ID),
                customer_id: "c-2".into(),
                ..Default::default()
            }),
            &["page_token"],
        ),
        invalid(
            "an unknown status",
            list_orders(ListOrdersRequest {
                status: 42,
                ..Default::default()
            }),
            &["status"],
        ),
        invalid(
            "a negative status",
            list_orders(ListOrdersRequest {
                status: -1,
                ..Default::default()
            }),
            &["status"],
        ),
        invalid(
            "a 10 KB customer filter",
            list_orders(ListOrdersRequest {
                customer_id: long(10 * 1024),
                ..Default::default()
            }),
            &["customer_id"],
        ),
        invalid(
            "every bad field of a ListOrders, each named",
            list_orders(ListOrdersRequest {
                page_size: -7,
                page_token: "%%".into(),
                customer_id: "a b".into(),
                status: 99,
            }),
            &["page_size", "customer_id", "status", "page_token"],
        ),
        // ---- Payment ids
        invalid("GetPayment without an id", get_payment(""), &["payment_id"]),
        invalid(
            "GetPayment with a malformed id",
            get_payment("123"),
            &["payment_id"],
        ),
        row(
            "GetPayment of an unknown payment",
            get_payment(UNKNOWN_ID),
            NotFound,
            &[],
        ),
        invalid(
            "RefundPayment without an id",
            refund_payment(""),
            &["payment_id"],
        ),
        invalid(
            "RefundPayment with an id one character short",
            refund_payment(&UNKNOWN_ID[1..]),
            &["payment_id"],
        ),
        row(
            "RefundPayment of an unknown payment",
            refund_payment(UNKNOWN_ID),
            NotFound,
            &[],
        ),
        // ---- ListPayments
        invalid(
            "a negative page_size and a malformed order filter",
            list_payments(ListPaymentsRequest {
                order_id: "nope".into(),
                page_size: -5,
                ..Default::default()
            }),
            &["page_size", "order_id"],
        ),
        invalid(
            "a customer filter with a control character",
            list_payments(ListPaymentsRequest {
                customer_id: "c\u{7f}".into(),
                ..Default::default()
            }),
            &["customer_id"],
        ),
        invalid(
            "a customer filter of 200 characters",
            list_payments(ListPaymentsRequest {
                customer_id: long(200),
                ..Default::default()
            }),
            &["customer_id"],
        ),
        invalid(
            "a ListOrders page_token replayed on ListPayments",
            list_payments(ListPaymentsRequest {
                page_token: paging::encode(&order_filters("", 0), UNKNOWN_ID),
                ..Default::default()
            }),
            &["page_token"],
        ),
        row(
            "a filter by an order that has no payment",
            list_payments(ListPaymentsRequest {
                order_id: UNKNOWN_ID.into(),
                ..Default::default()
            }),
            Ok,
            &[],
        ),
        // ---- Bytes that no generated client would send
        row(
            "a request with a field this server does not know",
            Call::Raw {
                service: Service::Orders,
                method: "GetOrder",
                body: [get_order_bytes(UNKNOWN_ID), unknown_field()].concat(),
            },
            NotFound,
            &[],
        ),
        invalid(
            "an empty message (every field at its default)",
            Call::Raw {
                service: Service::Payments,
                method: "RefundPayment",
                body: Vec::new(),
            },
            &["payment_id"],
        ),
    ];
    // Many bad items: the count is named, then each item in order, as many
    // as fit in the trailers, and the message says how many more.
    let mut fields = vec![String::from("items")];
    fields.extend((0..10).map(|i| format!("items[{i}].quantity")));
    table.push(Row {
        what: "150 items, every one bad",
        call: create(
            "c-1",
            (0..150).map(|_| item("SKU-1", 0, eur(1, 0))).collect(),
        ),
        code: InvalidArgument,
        fields,
        prefix: true,
        message: "more invalid field(s): fix these and send again",
    });
    // A description that quotes the bad value is cut, so it fits too.
    table.push(invalid(
        "a 100 KB currency code",
        one_item(item("SKU-1", 1, Some((&"A".repeat(100 * 1024), 1, 0)))),
        &["items[0].unit_price.currency_code"],
    ));
    for (what, call) in [
        (
            "a string that is not UTF-8",
            Call::Raw {
                service: Service::Orders,
                method: "CreateOrder",
                body: vec![0x0a, 2, 0xc3, 0x28],
            },
        ),
        (
            "a truncated message",
            Call::Raw {
                service: Service::Orders,
                method: "ListOrders",
                body: vec![0x12, 10, b'a'],
            },
        ),
        (
            "a field of the wrong wire type",
            Call::Raw {
                service: Service::Payments,
                method: "GetPayment",
                body: vec![0x08, 1],
            },
        ),
        (
            "a varint that never ends",
            Call::Raw {
                service: Service::Orders,
                method: "WatchOrder",
                body: vec![0x08; 16],
            },
        ),
    ] {
        table.push(Row {
            what,
            call,
            code: Internal,
            fields: Vec::new(),
            prefix: false,
            message: "failed to decode Protobuf message",
        });
    }
    // Over the size limit: refused before the message is read. 2 MiB is under
    // tonic's default of 4 MiB, so this is the services' own limit.
    for (what, call) in [
        (
            "a CreateOrder one byte over the limit",
            create(&long(over_limit), vec![ok_item()]),
        ),
        ("a 2 MiB GetPayment", get_payment(&long(2 * 1024 * 1024))),
        (
            "a 2 MiB ListOrders",
            list_orders(ListOrdersRequest {
                page_token: long(2 * 1024 * 1024),
                ..Default::default()
            }),
        ),
    ] {
        table.push(Row {
            what,
            call,
            code: OutOfRange,
            fields: Vec::new(),
            prefix: false,
            message: "decoded message length too large",
        });
    }
    table.push(invalid(
        "a CreateOrder just under the size limit",
        create(&long(MAX_REQUEST_BYTES - 1024), vec![ok_item()]),
        &["customer_id"],
    ));
    table
}

fn get_order_bytes(id: &str) -> Vec<u8> {
    GetOrderRequest {
        order_id: id.to_owned(),
    }
    .encode_to_vec()
}

/// Whether `answer` is what `row` expects; the mismatch otherwise.
fn check_row(row: &Row, answer: &Result<Option<Order>, Status>) -> Result<(), String> {
    let (code, fields, message) = match answer {
        Result::Ok(_) => (Code::Ok, Vec::new(), String::new()),
        Err(status) => (
            status.code(),
            violated_fields(status),
            status.message().to_owned(),
        ),
    };
    let fields_match = if row.prefix {
        fields.starts_with(&row.fields)
    } else {
        fields == row.fields
    };
    if code != row.code || !fields_match || !message.contains(row.message) {
        return Err(format!(
            "{} ({}): expected {:?} {:?}, got {code:?} {fields:?} {:?}",
            row.what,
            row.call.rpc(),
            row.code,
            row.fields,
            message.chars().take(300).collect::<String>()
        ));
    }
    if code == Code::InvalidArgument && message.is_empty() {
        return Err(format!("{}: INVALID_ARGUMENT without a message", row.what));
    }
    Result::Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_precise_status() {
    record_service_panics();
    let nats = NatsServer::start();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let clients = Clients::connect(&orders, &payments).await;

    let table = rows();
    assert!(table.len() >= 20);
    for rpc in METHODS.iter().map(|(_, m, _)| *m) {
        assert!(
            table.iter().any(|r| r.call.rpc() == rpc),
            "the table has no row for {rpc}"
        );
    }
    let mut failures = Vec::new();
    for row in &table {
        let answer = clients.send(row.call.clone()).await;
        if let Err(failure) = check_row(row, &answer) {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows got another answer:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    // The services still serve, the saga included.
    still_serving(&clients, &orders, &payments).await;
    assert_no_service_panicked();
    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}

/// Both services report SERVING, and an order is placed and paid.
async fn still_serving(clients: &Clients, orders: &RunningService, payments: &RunningService) {
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

// ---------------------------------------------------------------------------
// Arbitrary requests
// ---------------------------------------------------------------------------

/// Characters that validation must handle: whitespace, controls, separators
/// of subjects and page tokens, non-ASCII, a surrogate's neighbours.
const AWKWARD: &[char] = &[
    ' ',
    '\t',
    '\n',
    '\r',
    '\0',
    '\u{1f}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{2028}',
    '\u{feff}',
    '.',
    '*',
    '>',
    '/',
    '%',
    '\\',
    '"',
    'é',
    'ß',
    '日',
    '\u{d7ff}',
    '\u{e000}',
    '\u{10ffff}',
    '😀',
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[A-Za-z0-9._-]{1,12}",
        2 => any::<String>(),
        1 => "\\PC{0,160}",
        1 => Just(String::new()),
        1 => prop::collection::vec(prop::sample::select(AWKWARD), 1..6)
            .prop_map(String::from_iter),
        1 => (100usize..2000).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

fn uuid_text(n: u128, upper: bool) -> String {
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

/// Ids: known ones, well-formed unknown ones, and anything.
fn id(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(known),
        2 => any::<u128>().prop_map(|n| uuid_text(n, false)),
        1 => any::<u128>().prop_map(|n| uuid_text(n, true)),
        3 => text(),
    ]
    .boxed()
}

fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![i32::MIN, -1, 0, 1, 10_000, 10_001, i32::MAX]),
        -5..=10_005i32,
        any::<i32>(),
    ]
}

fn units() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX / 10_000, i64::MAX]),
        0..100_000i64,
        any::<i64>(),
    ]
}

fn nanos() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![
            i32::MIN,
            -1_000_000_000,
            -999_999_999,
            -1,
            0,
            1,
            999_999_999,
            1_000_000_000,
            i32::MAX
        ]),
        0..1_000_000_000i32,
        any::<i32>(),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::from("EUR")),
        1 => Just(String::from("USD")),
        1 => "[A-Z]{3}",
        2 => text(),
    ]
}

fn arb_money() -> BoxedStrategy<Money> {
    (currency(), units(), nanos())
        .prop_map(|(currency_code, units, nanos)| Money {
            currency_code,
            units,
            nanos,
        })
        .boxed()
}

fn arb_item() -> BoxedStrategy<OrderItem> {
    (
        prop_oneof![3 => "[A-Za-z0-9._-]{1,64}", 1 => text()],
        int32(),
        prop::option::weighted(0.9, arb_money()),
    )
        .prop_map(|(sku, quantity, unit_price)| OrderItem {
            sku,
            quantity,
            unit_price,
        })
        .boxed()
}

fn arb_items() -> impl Strategy<Value = Vec<OrderItem>> {
    prop_oneof![
        8 => prop::collection::vec(arb_item(), 0..4),
        1 => prop::collection::vec(arb_item(), 99..=102),
    ]
}

/// A plausible line: what a real client sends, amounts up to a million.
fn plausible_item() -> impl Strategy<Value = OrderItem> {
    (
        "[A-Za-z0-9._-]{1,64}",
        1..=10_000i32,
        0..1_000_000i64,
        0..1_000_000_000i32,
    )
        .prop_map(|(sku, quantity, units, nanos)| OrderItem {
            sku,
            quantity,
            unit_price: Some(money("EUR", units, nanos.max(i32::from(units == 0)))),
        })
}

/// CreateOrder requests: half plausible (mostly accepted, so the write path
/// runs), half with every field arbitrary.
fn arb_create() -> impl Strategy<Value = CreateOrderRequest> {
    let plausible = (
        "[A-Za-z0-9._-]{1,128}",
        prop::collection::vec(plausible_item(), 1..=100),
        prop_oneof![Just(String::new()), "[A-Za-z0-9._-]{1,128}"],
    );
    let arbitrary = (
        prop_oneof![3 => "[A-Za-z0-9._-]{1,12}", 1 => text()],
        arb_items(),
        prop_oneof![Just(String::new()), text()],
    );
    prop_oneof![plausible, arbitrary].prop_map(|(customer_id, items, request_id)| {
        CreateOrderRequest {
            customer_id,
            items,
            request_id,
        }
    })
}

fn page_token() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => text(),
        // Well-formed tokens, for the request's own filters or others.
        1 => text().prop_map(|last| paging::encode(&order_filters("", 0), &last)),
        1 => (text(), text()).prop_map(|(filters, last)| paging::encode(&filters, &last)),
    ]
}

fn status_value() -> impl Strategy<Value = i32> {
    prop_oneof![3 => 0..=5i32, 1 => any::<i32>()]
}

fn arb_list_orders() -> impl Strategy<Value = ListOrdersRequest> {
    (
        int32(),
        page_token(),
        prop_oneof![Just(String::new()), text()],
        status_value(),
    )
        .prop_map(
            |(page_size, page_token, customer_id, status)| ListOrdersRequest {
                page_size,
                page_token,
                customer_id,
                status,
            },
        )
}

fn arb_list_payments(orders: Vec<String>) -> impl Strategy<Value = ListPaymentsRequest> {
    (
        prop_oneof![Just(String::new()), id(orders)],
        prop_oneof![Just(String::new()), text()],
        int32(),
        page_token(),
    )
        .prop_map(
            |(order_id, customer_id, page_size, page_token)| ListPaymentsRequest {
                order_id,
                customer_id,
                page_size,
                page_token,
            },
        )
}

/// Request bytes: random, or a real request's encoding cut short or with one
/// byte changed.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            arb_create(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(request, at, byte, cut)| {
                let mut bytes = request.encode_to_vec();
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    if cut {
                        bytes.truncate(at);
                    } else {
                        bytes[at] = byte;
                    }
                }
                bytes
            }),
    ]
}

fn arb_raw() -> impl Strategy<Value = Call> {
    (prop::sample::select(METHODS), arb_body()).prop_map(|((service, method, _), body)| Call::Raw {
        service,
        method,
        body,
    })
}

/// The codes an RPC may answer arbitrary input with. Anything else (UNKNOWN,
/// INTERNAL, UNAVAILABLE, CANCELLED: what a crashed handler or a reset
/// connection looks like) fails the property.
fn allowed(call: &Call) -> &'static [Code] {
    use Code::*;
    match call {
        Call::CreateOrder(_) => &[Ok, InvalidArgument, AlreadyExists],
        Call::GetOrder(_) | Call::WatchOrder(_) | Call::GetPayment(_) => {
            &[Ok, InvalidArgument, NotFound]
        }
        Call::CancelOrder(_) | Call::RefundPayment(_) => {
            &[Ok, InvalidArgument, NotFound, FailedPrecondition]
        }
        Call::ListOrders(_) | Call::ListPayments(_) => &[Ok, InvalidArgument],
        // Bytes that are not the request message are INTERNAL, as in every
        // gRPC implementation; checked by message below.
        Call::Raw { .. } => &[
            Ok,
            InvalidArgument,
            NotFound,
            AlreadyExists,
            FailedPrecondition,
            Internal,
        ],
    }
}

/// The exact total of the lines of a request, in nano-units.
fn exact_total(items: &[OrderItem]) -> i128 {
    items
        .iter()
        .map(|item| {
            let price = item.unit_price.as_ref().map_or(0, |m| {
                i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)
            });
            price * i128::from(item.quantity)
        })
        .sum()
}

/// Makes the call and checks the answer; counts the codes seen in `seen`.
async fn judge(
    clients: &Clients,
    call: Call,
    seen: &Mutex<BTreeMap<String, usize>>,
) -> Result<(), TestCaseError> {
    let rpc = call.rpc();
    let codes = allowed(&call);
    let request = match &call {
        Call::CreateOrder(request) => Some(request.clone()),
        _ => None,
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), clients.send(call))
        .await
        .map_err(|_| TestCaseError::fail(format!("{rpc} did not answer within 10 s")))?;
    let code = answer.as_ref().map_or_else(Status::code, |_| Code::Ok);
    if let Ok(mut seen) = seen.lock() {
        *seen.entry(format!("{code:?}")).or_default() += 1;
    }
    match answer {
        Ok(order) => {
            prop_assert!(codes.contains(&Code::Ok), "{rpc} answered OK");
            if let (Some(request), Some(order)) = (request, order) {
                let total = order.total.clone().unwrap_or_default();
                let got = i128::from(total.units) * 1_000_000_000 + i128::from(total.nanos);
                prop_assert_eq!(got, exact_total(&request.items), "total of {:?}", order);
                prop_assert_eq!(order.status, OrderStatus::PendingPayment as i32);
            }
        }
        Err(status) => {
            let code = status.code();
            prop_assert!(
                codes.contains(&code),
                "{rpc} answered {:?}: {}",
                code,
                status.message()
            );
            if code == Code::InvalidArgument {
                prop_assert!(
                    !violated_fields(&status).is_empty(),
                    "{rpc}: INVALID_ARGUMENT names no field: {}",
                    status.message()
                );
            }
            if code == Code::Internal {
                prop_assert!(
                    status
                        .message()
                        .contains("failed to decode Protobuf message"),
                    "{rpc} answered INTERNAL: {}",
                    status.message()
                );
            }
        }
    }
    Ok(())
}

/// Cases per RPC: 64, or `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn arbitrary_requests_are_answered_never_crash_a_service() {
    record_service_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nats = NatsServer::start();
    let (orders, payments, clients, order_ids, payment_ids) = runtime.block_on(async {
        let orders = spawn_order_service(&nats.url()).await;
        let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
        let clients = Clients::connect(&orders, &payments).await;
        // One paid order and one declined one, so ids that exist are drawn
        // too and the OK, FAILED_PRECONDITION paths are taken.
        let mut order_ids = Vec::new();
        let mut payment_ids = Vec::new();
        for (units, status) in [
            (5, OrderStatus::Confirmed),
            (20_000, OrderStatus::PaymentFailed),
        ] {
            let order = clients
                .orders
                .clone()
                .create_order(order_request("c-prop", 1, units, &format!("r-{units}")))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            wait_for_status(&clients.orders, &order.order_id, status).await;
            let payment = list_payment_of(&clients.payments, &order.order_id).await;
            order_ids.push(order.order_id);
            payment_ids.push(payment.payment_id);
        }
        (orders, payments, clients, order_ids, payment_ids)
    });

    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let run = |name: &str, strategy: BoxedStrategy<Call>| {
        let mut runner = TestRunner::new(config.clone());
        let seen = Mutex::new(BTreeMap::new());
        let started = std::time::Instant::now();
        let result = runner.run(&strategy, |call| {
            runtime.block_on(judge(&clients, call, &seen))
        });
        if let Err(failure) = result {
            panic!("{name}: {failure}");
        }
        eprintln!(
            "{name}: {} cases in {:?}, answered {:?}",
            config.cases,
            started.elapsed(),
            seen.lock().map(|s| s.clone()).unwrap_or_default()
        );
    };
    run(
        "CreateOrder",
        arb_create().prop_map(Call::CreateOrder).boxed(),
    );
    run(
        "GetOrder",
        id(order_ids.clone())
            .prop_map(|order_id| Call::GetOrder(GetOrderRequest { order_id }))
            .boxed(),
    );
    run(
        "ListOrders",
        arb_list_orders().prop_map(Call::ListOrders).boxed(),
    );
    run(
        "CancelOrder",
        id(order_ids.clone())
            .prop_map(|order_id| Call::CancelOrder(CancelOrderRequest { order_id }))
            .boxed(),
    );
    run(
        "WatchOrder",
        id(order_ids.clone())
            .prop_map(|order_id| Call::WatchOrder(WatchOrderRequest { order_id }))
            .boxed(),
    );
    run(
        "GetPayment",
        id(payment_ids.clone())
            .prop_map(|payment_id| Call::GetPayment(GetPaymentRequest { payment_id }))
            .boxed(),
    );
    run(
        "ListPayments",
        arb_list_payments(order_ids.clone())
            .prop_map(Call::ListPayments)
            .boxed(),
    );
    run(
        "RefundPayment",
        id(payment_ids.clone())
            .prop_map(|payment_id| Call::RefundPayment(RefundPaymentRequest { payment_id }))
            .boxed(),
    );
    run("raw bytes to every RPC", arb_raw().boxed());

    runtime.block_on(async {
        still_serving(&clients, &orders, &payments).await;
        assert_no_service_panicked();
        payments.stop().await.unwrap();
        orders.stop().await.unwrap();
    });
}

/// The payment of an order, once the projection lists it.
async fn list_payment_of(client: &PaymentServiceClient<Channel>, order_id: &str) -> Payment {
    let found = Mutex::new(None);
    wait_until(
        &format!("the payment of order {order_id} to be listed"),
        Duration::from_secs(20),
        || async {
            let listed = client
                .clone()
                .list_payments(ListPaymentsRequest {
                    order_id: order_id.to_owned(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().payments)
                .unwrap_or_default();
            let done = !listed.is_empty();
            *found.lock().unwrap() = listed.into_iter().next();
            done
        },
    )
    .await;
    found.into_inner().unwrap().unwrap()
}

// ---------------------------------------------------------------------------
// Arbitrary events
// ---------------------------------------------------------------------------

/// Every event type either service knows, with the stream it belongs on.
fn known_event_types() -> Vec<(&'static str, String)> {
    vec![
        ("ORDERS", OrderCreated::full_name()),
        ("ORDERS", OrderConfirmed::full_name()),
        ("ORDERS", OrderPaymentFailed::full_name()),
        ("ORDERS", OrderCancelled::full_name()),
        ("ORDERS", OrderRefunded::full_name()),
        ("PAYMENTS", PaymentAuthorized::full_name()),
        ("PAYMENTS", PaymentDeclined::full_name()),
        ("PAYMENTS", PaymentRefunded::full_name()),
        ("PAYMENTS", PaymentVoided::full_name()),
    ]
}

/// An event as a foreign or broken publisher might append it.
#[derive(Clone, Debug)]
struct Garbage {
    stream: &'static str,
    ce_type: Option<String>,
    payload: Vec<u8>,
    /// Appended as the services append: expecting the subject to be new
    /// (`Nats-Expected-Last-Subject-Sequence: 0`, kept in the stored message).
    expects_new_subject: bool,
}

/// Garbage that every run publishes besides the random events.
fn fixed_garbage() -> Vec<Garbage> {
    let order = Order {
        order_id: uuid_text(0xfeed_0001, false),
        customer_id: String::from("c-negative"),
        total: Some(money("EUR", -5, 0)),
        status: OrderStatus::PendingPayment as i32,
        ..Default::default()
    };
    let mut fixed = vec![
        // A well-formed order whose total would pay money out if charged.
        Garbage {
            stream: "ORDERS",
            ce_type: Some(OrderCreated::full_name()),
            payload: OrderCreated { order: Some(order) }.encode_to_vec(),
            expects_new_subject: true,
        },
    ];
    // Payments of orders that do not exist, appended as the payment service
    // appends: each is dead-lettered by the order service, and each dead
    // letter after the first used to be refused (the copy carried the
    // original's expected-sequence header).
    for n in 0..3 {
        let payment = Payment {
            payment_id: uuid_text(0xfeed_0100 + n, false),
            order_id: uuid_text(0xfeed_0200 + n, false),
            customer_id: String::from("c-orphan"),
            amount: Some(money("EUR", 1, 0)),
            status: PaymentStatus::Authorized as i32,
            ..Default::default()
        };
        fixed.push(Garbage {
            stream: "PAYMENTS",
            ce_type: Some(PaymentAuthorized::full_name()),
            payload: PaymentAuthorized {
                payment: Some(payment),
            }
            .encode_to_vec(),
            expects_new_subject: true,
        });
    }
    fixed
}

fn arb_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

/// An order snapshot with every field arbitrary.
fn arb_order() -> BoxedStrategy<Order> {
    (
        (id(vec![UNKNOWN_ID.to_owned()]), text()),
        prop::collection::vec(arb_item(), 0..3),
        prop::option::of(arb_money()),
        status_value(),
        (text(), text(), text()),
        (arb_timestamp(), arb_timestamp()),
        any::<u64>(),
    )
        .prop_map(
            |(
                (order_id, customer_id),
                items,
                total,
                status,
                (payment_id, failure_reason, request_id),
                (create_time, update_time),
                version,
            )| Order {
                order_id,
                customer_id,
                items,
                total,
                status,
                payment_id,
                failure_reason,
                create_time,
                update_time,
                request_id,
                version,
            },
        )
        .boxed()
}

/// A payment snapshot with every field arbitrary.
fn arb_payment() -> BoxedStrategy<Payment> {
    (
        (
            id(vec![UNKNOWN_ID.to_owned()]),
            id(vec![UNKNOWN_ID.to_owned()]),
            text(),
        ),
        prop::option::of(arb_money()),
        status_value(),
        (text(), text(), text()),
        (arb_timestamp(), arb_timestamp()),
        any::<u64>(),
    )
        .prop_map(
            |(
                (payment_id, order_id, customer_id),
                amount,
                status,
                (gateway_reference, decline_reason, refund_reference),
                (create_time, update_time),
                version,
            )| Payment {
                payment_id,
                order_id,
                customer_id,
                amount,
                status,
                gateway_reference,
                decline_reason,
                create_time,
                update_time,
                version,
                refund_reference,
            },
        )
        .boxed()
}

/// An order as a foreign publisher might write it: ids of the right form,
/// every other field arbitrary (a zero or negative total, say).
fn plausible_order() -> BoxedStrategy<Order> {
    (any::<u128>(), "[A-Za-z0-9._-]{1,16}", arb_order())
        .prop_map(|(n, customer_id, order)| Order {
            order_id: uuid_text(n, false),
            customer_id,
            ..order
        })
        .boxed()
}

/// A payment as a foreign publisher might write it.
fn plausible_payment() -> BoxedStrategy<Payment> {
    (
        any::<u128>(),
        any::<u128>(),
        "[A-Za-z0-9._-]{1,16}",
        arb_payment(),
    )
        .prop_map(|(p, o, customer_id, payment)| Payment {
            payment_id: uuid_text(p, false),
            order_id: uuid_text(o, false),
            customer_id,
            ..payment
        })
        .boxed()
}

/// Event bodies for `stream`: random bytes; a well-formed event of that
/// stream (every order event is `{ Order order = 1; }`, every payment event
/// `{ Payment payment = 1; }`) with arbitrary fields; or such an event cut
/// short or with one byte changed.
fn arb_event_payload(stream: &'static str) -> BoxedStrategy<Vec<u8>> {
    let well_formed = if stream == "ORDERS" {
        prop_oneof![arb_order(), plausible_order()]
            .prop_map(|order| OrderCreated { order: Some(order) }.encode_to_vec())
            .boxed()
    } else {
        prop_oneof![arb_payment(), plausible_payment()]
            .prop_map(|payment| {
                PaymentAuthorized {
                    payment: Some(payment),
                }
                .encode_to_vec()
            })
            .boxed()
    };
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        4 => well_formed.clone(),
        1 => (well_formed, any::<prop::sample::Index>(), any::<u8>(), any::<bool>())
            .prop_map(|(mut bytes, at, byte, cut)| {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    if cut {
                        bytes.truncate(at);
                    } else {
                        bytes[at] = byte;
                    }
                }
                bytes
            }),
    ]
    .boxed()
}

/// Garbage for `stream`: mostly under the event types of that stream, some
/// under the other stream's types, unknown types or none.
fn arb_garbage_on(stream: &'static str) -> BoxedStrategy<Garbage> {
    let (own, other): (Vec<String>, Vec<String>) = {
        let (own, other): (Vec<_>, Vec<_>) = known_event_types()
            .into_iter()
            .partition(|(s, _)| *s == stream);
        (
            own.into_iter().map(|(_, t)| t).collect(),
            other.into_iter().map(|(_, t)| t).collect(),
        )
    };
    (
        prop_oneof![
            6 => prop::sample::select(own).prop_map(Some),
            1 => prop::sample::select(other).prop_map(Some),
            1 => text().prop_map(Some),
            1 => Just(None),
        ],
        arb_event_payload(stream),
    )
        .prop_map(move |(ce_type, payload)| Garbage {
            stream,
            ce_type,
            payload,
            expects_new_subject: false,
        })
        .boxed()
}

fn arb_garbage() -> BoxedStrategy<Garbage> {
    prop_oneof![arb_garbage_on("ORDERS"), arb_garbage_on("PAYMENTS")].boxed()
}

/// The durable consumers of both services, by stream.
fn durables() -> [(&'static str, &'static str); 2] {
    [
        ("ORDERS", payment_service::charging::DURABLE),
        ("PAYMENTS", order_service::settlement::DURABLE),
    ]
}

/// The event token of the subject garbage event `i` goes to: one that the
/// stream's consumer receives (its filter subjects), so every garbage event
/// reaches a handler; what the handler does is judged by the event's
/// `ce-type` and body, never by its subject.
fn received_token(stream: &str, i: usize) -> &'static str {
    const ORDER_TOKENS: [&str; 2] = ["created", "cancelled"];
    const PAYMENT_TOKENS: [&str; 3] = ["authorized", "declined", "refunded"];
    if stream == "ORDERS" {
        ORDER_TOKENS[i % ORDER_TOKENS.len()]
    } else {
        PAYMENT_TOKENS[i % PAYMENT_TOKENS.len()]
    }
}

/// The last sequence of `stream`.
async fn stream_length(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// `n` garbage events, drawn by proptest.
fn garbage_events(n: usize) -> Vec<Garbage> {
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = arb_garbage().boxed();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// A garbage event as stored in its stream.
#[derive(Debug)]
struct Published {
    subject: String,
    sequence: u64,
    garbage: Garbage,
}

/// What one consumer must do with one garbage event.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Refuse it: exactly one dead letter, whose reason contains one of
    /// these.
    DeadLetter(&'static [&'static str]),
    /// Apply or ignore it: no dead letter.
    Handled,
    /// Either, on details this test does not model (the money rules of a
    /// total, an earlier payment of the same order); a dead letter's reason
    /// then contains one of these (any reason when there are none).
    Either(&'static [&'static str]),
}

const UNKNOWN_ORDER_TYPE: &[&str] = &["unknown order event type", "no ce-type header"];
const UNKNOWN_PAYMENT_TYPE: &[&str] = &["unknown payment event type", "no ce-type header"];
/// The projections' and the handlers' wording of a body that does not decode.
const UNDECODABLE: &[&str] = &["undecodable", "is not a valid"];
const NO_ORDER: &[&str] = &["carries no order"];
const NO_PAYMENT: &[&str] = &["carries no payment"];
const NOT_A_UUID: &[&str] = &["not a canonical UUID"];
const BAD_CUSTOMER: &[&str] = &["customer id"];
const NO_SUCH_ORDER: &[&str] = &["not found"];
const BAD_TOTAL: &[&str] = &["total"];

/// A garbage event's body read as the event its `ce-type` names.
enum Body<T> {
    /// The type is none of this stream's events (or missing).
    UnknownType,
    Undecodable,
    /// It decodes, without the order or payment every event carries.
    Empty,
    Carries(T),
}

/// Every order event is `{ Order order = 1; }`, so one decoder reads them all.
fn order_body(ce_type: Option<&str>, payload: &[u8]) -> Body<Order> {
    let known = [
        OrderCreated::full_name(),
        OrderConfirmed::full_name(),
        OrderPaymentFailed::full_name(),
        OrderCancelled::full_name(),
        OrderRefunded::full_name(),
    ];
    if !ce_type.is_some_and(|t| known.iter().any(|k| k == t)) {
        return Body::UnknownType;
    }
    match OrderCreated::decode(payload) {
        Err(_) => Body::Undecodable,
        Ok(OrderCreated { order: None }) => Body::Empty,
        Ok(OrderCreated { order: Some(order) }) => Body::Carries(order),
    }
}

/// Every payment event is `{ Payment payment = 1; }`.
fn payment_body(ce_type: Option<&str>, payload: &[u8]) -> Body<Payment> {
    let known = [
        PaymentAuthorized::full_name(),
        PaymentDeclined::full_name(),
        PaymentRefunded::full_name(),
        PaymentVoided::full_name(),
    ];
    if !ce_type.is_some_and(|t| known.iter().any(|k| k == t)) {
        return Body::UnknownType;
    }
    match PaymentAuthorized::decode(payload) {
        Err(_) => Body::Undecodable,
        Ok(PaymentAuthorized { payment: None }) => Body::Empty,
        Ok(PaymentAuthorized {
            payment: Some(payment),
        }) => Body::Carries(payment),
    }
}

/// The ids orderflow assigns: lower-case, hyphenated UUIDs.
fn canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A customer id an order can have: 1 to 128 characters, no whitespace or
/// control characters.
fn valid_customer(id: &str) -> bool {
    (1..=128).contains(&id.chars().count())
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Why no service can have written `order`, in the order the services check.
fn order_identity(order: &Order) -> Option<&'static [&'static str]> {
    if !canonical_uuid(&order.order_id) {
        Some(NOT_A_UUID)
    } else if !valid_customer(&order.customer_id) {
        Some(BAD_CUSTOMER)
    } else {
        None
    }
}

/// Order ids whose payment an event other than the one being judged may have
/// decided: the well-known id (an earlier run on the same external server
/// may have paid it) and every id carried by more than one garbage event.
fn shared_order_ids(published: &[Published]) -> Vec<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    for event in published.iter().filter(|e| e.garbage.stream == "ORDERS") {
        if let Body::Carries(order) =
            order_body(event.garbage.ce_type.as_deref(), &event.garbage.payload)
        {
            *seen.entry(order.order_id).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(id, n)| *n > 1 || id == UNKNOWN_ID)
        .map(|(id, _)| id)
        .collect()
}

/// What consumer `durable` must do with `garbage`, from the event contract
/// alone: what the body says, never what a service did with it.
fn fate(durable: &str, garbage: &Garbage, shared: &[String]) -> Fate {
    let ce_type = garbage.ce_type.as_deref();
    let is = |name: String| ce_type == Some(name.as_str());
    match durable {
        payment_service::charging::DURABLE => {
            // Confirmations, failures and refunds follow from the payment
            // service's own events: it ignores them, whatever they carry.
            if is(OrderConfirmed::full_name())
                || is(OrderPaymentFailed::full_name())
                || is(OrderRefunded::full_name())
            {
                return Fate::Handled;
            }
            if !is(OrderCreated::full_name()) && !is(OrderCancelled::full_name()) {
                return Fate::DeadLetter(UNKNOWN_ORDER_TYPE);
            }
            let order = match order_body(ce_type, &garbage.payload) {
                Body::UnknownType => unreachable!("the type is OrderCreated or OrderCancelled"),
                Body::Undecodable => return Fate::DeadLetter(UNDECODABLE),
                Body::Empty => return Fate::DeadLetter(NO_ORDER),
                Body::Carries(order) => order,
            };
            if let Some(reason) = order_identity(&order) {
                return Fate::DeadLetter(reason);
            }
            let first_of_its_order = !shared.contains(&order.order_id);
            if is(OrderCancelled::full_name()) {
                // An order never charged is voided.
                return if first_of_its_order {
                    Fate::Handled
                } else {
                    Fate::Either(&[])
                };
            }
            let not_positive = order
                .total
                .as_ref()
                .is_none_or(|t| t.units < 0 || (t.units == 0 && t.nanos <= 0));
            if not_positive && first_of_its_order {
                // Charging it would pay money out, or charge nothing.
                Fate::DeadLetter(BAD_TOTAL)
            } else {
                Fate::Either(BAD_TOTAL)
            }
        }
        order_service::settlement::DURABLE => {
            if is(PaymentVoided::full_name()) {
                // A voided payment changes no order: ignored.
                return Fate::Handled;
            }
            match payment_body(ce_type, &garbage.payload) {
                Body::UnknownType => Fate::DeadLetter(UNKNOWN_PAYMENT_TYPE),
                Body::Undecodable => Fate::DeadLetter(UNDECODABLE),
                Body::Empty => Fate::DeadLetter(NO_PAYMENT),
                Body::Carries(payment) if !canonical_uuid(&payment.order_id) => {
                    Fate::DeadLetter(NOT_A_UUID)
                }
                // No garbage payment names an order that exists.
                Body::Carries(_) => Fate::DeadLetter(NO_SUCH_ORDER),
            }
        }
        other => panic!("no fate for consumer {other}"),
    }
}

/// Whether `letters` (the dead letters `durable` left for `event`) are what
/// `fate` demands: as many as it says, each a copy of the event naming its
/// stream, sequence and consumer, with a reason it allows.
fn check_dead_letters(
    event: &Published,
    stream: &str,
    durable: &str,
    fate: Fate,
    letters: &[&StoredMessage],
) -> Result<(), String> {
    let reasons: Vec<_> = letters
        .iter()
        .map(|l| l.header(headers::DEAD_LETTER_REASON))
        .collect();
    let allowed = match (fate, letters) {
        (Fate::Handled, []) | (Fate::Either(_), []) => return Ok(()),
        (Fate::DeadLetter(_), []) => return Err(String::from("no dead letter")),
        (Fate::DeadLetter(allowed) | Fate::Either(allowed), [_]) => allowed,
        (Fate::Handled, _) => return Err(format!("dead-lettered: {reasons:?}")),
        (_, _) => return Err(format!("{} dead letters: {reasons:?}", letters.len())),
    };
    let letter = letters[0];
    let expected_subject = format!("deadletter.{stream}.{durable}");
    if letter.subject != expected_subject {
        return Err(format!(
            "the dead letter is on {}, not {expected_subject}",
            letter.subject
        ));
    }
    let sequence = event.sequence.to_string();
    for (name, want) in [
        (headers::ORIGINAL_STREAM, stream),
        (headers::ORIGINAL_SEQUENCE, sequence.as_str()),
    ] {
        if letter.header(name).as_deref() != Some(want) {
            return Err(format!(
                "the dead letter's {name} is {:?}, not {want}",
                letter.header(name)
            ));
        }
    }
    if letter.payload != event.garbage.payload {
        return Err(String::from("the dead letter's body is not the event's"));
    }
    let reason = letter
        .header(headers::DEAD_LETTER_REASON)
        .unwrap_or_default();
    let explained = if allowed.is_empty() {
        !reason.trim().is_empty()
    } else {
        allowed.iter().any(|a| reason.contains(a))
    };
    if !explained {
        return Err(format!(
            "the dead letter's reason {reason:?} is not one of {allowed:?}"
        ));
    }
    Ok(())
}

/// How many garbage events are published.
const GARBAGE_EVENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_events_are_dead_lettered_and_both_services_keep_serving() {
    record_service_panics();
    // A server of its own: the test reads whole streams.
    let nats = NatsServer::start_own();
    let orders = spawn_order_service(&nats.url()).await;
    let payments = spawn_payment_service(&nats.url(), simulated_gateway(), &[]).await;
    let clients = Clients::connect(&orders, &payments).await;
    let js = jetstream(&nats.url()).await;

    let mut published = Vec::new();
    let garbage = fixed_garbage()
        .into_iter()
        .chain(garbage_events(GARBAGE_EVENTS));
    for (i, mut garbage) in garbage.enumerate() {
        let subject = format!(
            "{}.garbage.{}.{}",
            garbage.stream.to_lowercase(),
            uuid_text(u128::from(std::process::id()) << 64 | i as u128, false),
            received_token(garbage.stream, i)
        );
        let mut headers = async_nats::HeaderMap::new();
        // The process id keeps a second run against the same external server
        // from being de-duplicated into storing nothing.
        let msg_id = format!("garbage-{}-{i}", std::process::id());
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        if garbage.expects_new_subject {
            headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        }
        // A header value cannot carry a line break; NATS would split it.
        // What the consumers judge is the value sent.
        garbage.ce_type = garbage
            .ce_type
            .map(|t| t.chars().filter(|c| !c.is_control()).collect());
        if let Some(ce_type) = &garbage.ce_type {
            headers.insert("ce-type", ce_type.as_str());
        }
        let ack = js
            .publish_with_headers(subject.clone(), headers, garbage.payload.clone().into())
            .await
            .unwrap()
            .await
            .expect("JetStream stores the garbage event");
        assert!(!ack.duplicate, "{msg_id} was taken for a duplicate");
        published.push(Published {
            subject,
            sequence: ack.sequence,
            garbage,
        });
    }

    // Settled: every consumer has handled everything, and the streams have
    // stopped growing (the services' own reactions, a voided payment say,
    // are appended and handled too).
    let started = std::time::Instant::now();
    let caught_up = tokio::time::timeout(Duration::from_secs(30), async {
        let mut last = None;
        loop {
            let mut all = true;
            for (stream, durable) in durables() {
                all &= consumer_caught_up(&js, stream, durable).await;
            }
            let lengths = (
                stream_length(&js, "ORDERS").await,
                stream_length(&js, "PAYMENTS").await,
            );
            if all && last == Some(lengths) {
                break;
            }
            last = all.then_some(lengths);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    if caught_up.is_err() {
        let mut state = Vec::new();
        for (stream, durable) in durables() {
            let info = js
                .get_stream(stream)
                .await
                .unwrap()
                .consumer_info(durable)
                .await
                .unwrap();
            state.push(format!(
                "{durable}: pending {}, ack pending {}, redelivered {}",
                info.num_pending, info.num_ack_pending, info.num_redelivered
            ));
        }
        panic!(
            "the consumers did not catch up within 30 s:\n{}\npublished:\n{published:#?}",
            state.join("\n")
        );
    }
    eprintln!(
        "{} garbage events settled by every consumer in {:?}",
        published.len(),
        started.elapsed()
    );

    // Settled means every dead letter is stored: a consumer stores the copy
    // before it terminates the original.
    let letters = read_all(&js, DEAD_LETTER_STREAM, ">").await;
    let shared = shared_order_ids(&published);
    let mut wrong = Vec::new();
    let mut dead_lettered = 0;
    for event in &published {
        for (stream, durable) in durables() {
            if stream != event.garbage.stream {
                continue;
            }
            let fate = fate(durable, &event.garbage, &shared);
            let mine: Vec<_> = letters
                .iter()
                .filter(|l| {
                    l.header(headers::ORIGINAL_SUBJECT).as_deref() == Some(event.subject.as_str())
                        && l.header(headers::ORIGINAL_CONSUMER).as_deref() == Some(durable)
                })
                .collect();
            dead_lettered += mine.len();
            if let Err(why) = check_dead_letters(event, stream, durable, fate, &mine) {
                wrong.push(format!(
                    "{durable} on {} (sequence {}): {why}\n    expected {fate:?} for {:?}",
                    event.subject, event.sequence, event.garbage
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} consumers did the wrong thing with a garbage event; the first ones:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(8)].join("\n")
    );
    // The fixed garbage alone leaves four: a charge of a negative total, and
    // three payments of orders that do not exist.
    assert!(
        dead_lettered >= 4,
        "only {dead_lettered} dead letters for the garbage"
    );
    eprintln!(
        "{dead_lettered} dead letters for {} garbage events",
        published.len()
    );

    // Whatever the garbage said, the payment service charged only positive
    // amounts (a negative "charge" would pay money out).
    for event in read_all(&js, "PAYMENTS", ">").await {
        if event.header("ce-source").as_deref() != Some(payment_service::events::SOURCE) {
            continue;
        }
        let payment = <payment_service::events::PaymentAggregate as Kind>::decode(
            event.header("ce-type").as_deref(),
            &event.payload,
        )
        .unwrap();
        if payment.status != PaymentStatus::Authorized as i32 {
            continue;
        }
        let amount = payment.amount.clone().unwrap_or_default();
        assert!(
            amount.units > 0 || (amount.units == 0 && amount.nanos > 0),
            "the payment service charged {payment:?}"
        );
    }

    still_serving(&clients, &orders, &payments).await;
    clients
        .orders
        .clone()
        .list_orders(ListOrdersRequest::default())
        .await
        .unwrap();
    assert_no_service_panicked();
    payments.stop().await.unwrap();
    orders.stop().await.unwrap();
}
