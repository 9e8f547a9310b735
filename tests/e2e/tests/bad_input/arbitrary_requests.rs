//! Arbitrary requests: proptest's requests (and raw bytes) to every RPC,
//! each answered with a code the RPC may give, never a crash.

use super::*;

/// Characters that validation must handle: whitespace, controls, separators
/// of subjects and page tokens, non-ASCII, a surrogate's neighbours.
pub(crate) const AWKWARD: &[char] = &[
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

pub(crate) fn text() -> BoxedStrategy<String> {
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

/// Ids: known ones, well-formed unknown ones, and anything.
pub(crate) fn id(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(known),
        2 => any::<u128>().prop_map(|n| uuid_text(n, false)),
        1 => any::<u128>().prop_map(|n| uuid_text(n, true)),
        3 => text(),
    ]
    .boxed()
}

pub(crate) fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![i32::MIN, -1, 0, 1, 10_000, 10_001, i32::MAX]),
        -5..=10_005i32,
        any::<i32>(),
    ]
}

pub(crate) fn units() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX / 10_000, i64::MAX]),
        0..100_000i64,
        any::<i64>(),
    ]
}

pub(crate) fn nanos() -> impl Strategy<Value = i32> {
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

pub(crate) fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::from("EUR")),
        1 => Just(String::from("USD")),
        1 => "[A-Z]{3}",
        2 => text(),
    ]
}

pub(crate) fn arb_money() -> BoxedStrategy<Money> {
    (currency(), units(), nanos())
        .prop_map(|(currency_code, units, nanos)| Money {
            currency_code,
            units,
            nanos,
        })
        .boxed()
}

pub(crate) fn arb_item() -> BoxedStrategy<OrderItem> {
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

pub(crate) fn arb_items() -> impl Strategy<Value = Vec<OrderItem>> {
    prop_oneof![
        8 => prop::collection::vec(arb_item(), 0..4),
        1 => prop::collection::vec(arb_item(), 99..=102),
    ]
}

/// A plausible line: what a real client sends, amounts up to a million.
pub(crate) fn plausible_item() -> impl Strategy<Value = OrderItem> {
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
pub(crate) fn arb_create() -> impl Strategy<Value = CreateOrderRequest> {
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

pub(crate) fn page_token() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => text(),
        // Well-formed tokens, for the request's own filters or others.
        1 => text().prop_map(|last| paging::encode(&order_filters("", 0), &last)),
        1 => (text(), text()).prop_map(|(filters, last)| paging::encode(&filters, &last)),
    ]
}

pub(crate) fn status_value() -> impl Strategy<Value = i32> {
    prop_oneof![3 => 0..=5i32, 1 => any::<i32>()]
}

pub(crate) fn arb_list_orders() -> impl Strategy<Value = ListOrdersRequest> {
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

pub(crate) fn arb_list_payments(orders: Vec<String>) -> impl Strategy<Value = ListPaymentsRequest> {
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
pub(crate) fn arb_body() -> impl Strategy<Value = Vec<u8>> {
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

pub(crate) fn arb_raw() -> impl Strategy<Value = Call> {
    (prop::sample::select(METHODS), arb_body()).prop_map(|((service, method, _), body)| Call::Raw {
        service,
        method,
        body,
    })
}

/// The codes an RPC may answer arbitrary input with. Anything else (UNKNOWN,
/// INTERNAL, UNAVAILABLE, CANCELLED: what a crashed handler or a reset
/// connection looks like) fails the property.
pub(crate) fn allowed(call: &Call) -> &'static [Code] {
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
pub(crate) fn exact_total(items: &[OrderItem]) -> i128 {
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
pub(crate) async fn judge(
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
pub(crate) fn cases() -> u32 {
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
pub(crate) async fn list_payment_of(
    client: &PaymentServiceClient<Channel>,
    order_id: &str,
) -> Payment {
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
