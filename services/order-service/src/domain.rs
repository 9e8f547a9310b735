//! The order domain: what a valid new order is and how an order's status may
//! change. No I/O, no proto, no NATS: the gRPC edge (`grpc.rs`) parses
//! requests into these types, and the event edge (`events.rs`) records the
//! decisions taken here.

use orderflow_money::{Money, MoneyError};
use orderflow_validation::{FieldViolation, check_token};
use uuid::Uuid;

/// Most items one order may have.
pub const MAX_ITEMS: usize = 100;
/// Most units of one item.
pub const MAX_QUANTITY: i32 = 10_000;
/// Longest customer id and request id: a customer id is an owner id, so
/// the events' rule is the one it enters by.
pub const MAX_ID_LEN: usize = orderflow_eventbus::identity::MAX_OWNER_LEN;
/// Longest SKU.
pub const MAX_SKU_LEN: usize = 64;

/// Namespace of order ids derived from request ids (UUIDv5), so the same
/// request id always names the same order, on every replica, forever.
const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7700_0000_0000_0001);

/// One line of an order, as the caller gave it.
#[derive(Clone, Debug)]
pub struct RawLine<'a> {
    /// SKU.
    pub sku: &'a str,
    /// Quantity.
    pub quantity: i32,
    /// Unit price: (currency, units, nanos), or `None` when missing.
    pub unit_price: Option<(&'a str, i64, i32)>,
}

/// A validated line.
#[derive(Clone, Debug)]
pub struct Line {
    /// SKU.
    pub sku: String,
    /// Units ordered.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
}

/// A validated order request.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// The customer.
    pub customer_id: String,
    /// The lines, in the caller's order.
    pub lines: Vec<Line>,
    /// The idempotency key, when given.
    pub request_id: Option<String>,
    /// Sum of quantity × unit price.
    pub total: Money,
}

impl NewOrder {
    /// Validates every field, collecting every violation.
    pub fn parse(
        customer_id: &str,
        lines: &[RawLine<'_>],
        request_id: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        check_token(
            "customer_id",
            customer_id,
            MAX_ID_LEN,
            true,
            &mut violations,
        );
        check_token("request_id", request_id, MAX_ID_LEN, false, &mut violations);
        if lines.is_empty() {
            violations.push(FieldViolation::new(
                "items",
                "must contain at least one item",
            ));
        } else if lines.len() > MAX_ITEMS {
            violations.push(FieldViolation::new(
                "items",
                format!(
                    "must contain at most {MAX_ITEMS} items, got {}",
                    lines.len()
                ),
            ));
        }
        let mut parsed = Vec::with_capacity(lines.len().min(MAX_ITEMS));
        for (i, raw) in lines.iter().enumerate().take(MAX_ITEMS) {
            if let Some(line) = parse_line(i, raw, &mut violations) {
                parsed.push(line);
            }
        }
        let total = if violations.is_empty() {
            total(&parsed, &mut violations)
        } else {
            None
        };
        match total {
            Some(total) if violations.is_empty() => Ok(Self {
                customer_id: customer_id.to_owned(),
                lines: parsed,
                request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
                total,
            }),
            _ => Err(violations),
        }
    }

    /// The order id: derived from the customer and the request id (so a
    /// repeated request names the same order, and one customer's request ids
    /// never collide with another's), or a fresh time-ordered UUID without a
    /// request id.
    pub fn order_id(&self) -> Uuid {
        match &self.request_id {
            // The separator cannot occur in either id (no control characters).
            Some(request_id) => Uuid::new_v5(
                &ORDER_ID_NAMESPACE,
                format!("{}\n{request_id}", self.customer_id).as_bytes(),
            ),
            None => Uuid::now_v7(),
        }
    }
}

fn parse_line(i: usize, raw: &RawLine<'_>, violations: &mut Vec<FieldViolation>) -> Option<Line> {
    let field = |name: &str| format!("items[{i}].{name}");
    let before = violations.len();
    if raw.sku.is_empty() {
        violations.push(FieldViolation::new(field("sku"), "is required"));
    } else if raw.sku.len() > MAX_SKU_LEN
        || !raw
            .sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        violations.push(FieldViolation::new(
            field("sku"),
            format!("must be 1 to {MAX_SKU_LEN} characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&raw.quantity) {
        violations.push(FieldViolation::new(
            field("quantity"),
            format!("must be from 1 to {MAX_QUANTITY}, got {}", raw.quantity),
        ));
    }
    let price = match raw.unit_price {
        None => {
            violations.push(FieldViolation::new(field("unit_price"), "is required"));
            None
        }
        Some((currency, units, nanos)) => match Money::new(currency, units, nanos) {
            Ok(money) if money.is_positive() => Some(money),
            Ok(_) => {
                violations.push(FieldViolation::new(
                    field("unit_price"),
                    "must be greater than zero",
                ));
                None
            }
            Err(error) => {
                let sub = match error {
                    MoneyError::Currency(_) => "unit_price.currency_code",
                    MoneyError::NanosRange(_) | MoneyError::SignMismatch { .. } => {
                        "unit_price.nanos"
                    }
                    _ => "unit_price",
                };
                violations.push(FieldViolation::new(field(sub), error.to_string()));
                None
            }
        },
    };
    let quantity = u32::try_from(raw.quantity).ok()?;
    match price {
        Some(unit_price) if violations.len() == before => Some(Line {
            sku: raw.sku.to_owned(),
            quantity,
            unit_price,
        }),
        _ => None,
    }
}

fn total(lines: &[Line], violations: &mut Vec<FieldViolation>) -> Option<Money> {
    let first = lines.first()?;
    let mut sum = Money::zero_of(&first.unit_price);
    for (i, line) in lines.iter().enumerate() {
        if line.unit_price.currency_code() != first.unit_price.currency_code() {
            violations.push(FieldViolation::new(
                format!("items[{i}].unit_price.currency_code"),
                format!(
                    "every item must be priced in one currency: items[0] is {}, this is {}",
                    first.unit_price.currency_code(),
                    line.unit_price.currency_code()
                ),
            ));
            return None;
        }
        let amount = line.unit_price.checked_mul(line.quantity);
        match amount.and_then(|a| sum.checked_add(&a)) {
            Ok(next) => sum = next,
            Err(_) => {
                violations.push(FieldViolation::new(
                    "items",
                    "the order total is too large to represent",
                ));
                return None;
            }
        }
    }
    Some(sum)
}

/// The lifecycle of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// Committed; waiting for the payment service.
    PendingPayment,
    /// Paid.
    Confirmed,
    /// Payment declined. Final.
    PaymentFailed,
    /// Cancelled by the customer. Final.
    Cancelled,
    /// Paid, then refunded without a cancellation. Final.
    Refunded,
}

/// What the payment service decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentResult {
    /// Charged.
    Authorized,
    /// Not charged.
    Declined,
    /// Charged, then refunded.
    Refunded,
}

/// The decision about a requested change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Move to this status (append an event).
    To(OrderStatus),
    /// Nothing to do: already applied, or overtaken by another change.
    Unchanged,
}

/// A cancellation that is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .0 {
    OrderStatus::PaymentFailed => "its payment failed, so nothing was charged and the order is already final",
    OrderStatus::Refunded => "its payment was refunded and the order is already final",
    _ => "the order cannot be cancelled in its status",
})]
pub struct CancelRefused(pub OrderStatus);

impl OrderStatus {
    /// Applies a payment result. Idempotent: a result seen twice, or one
    /// arriving after a cancellation, changes nothing (a cancelled order's
    /// payment is refunded by the payment service from the cancellation).
    pub fn on_payment(self, result: &PaymentResult) -> Transition {
        match (self, result) {
            (Self::PendingPayment, PaymentResult::Authorized) => Transition::To(Self::Confirmed),
            (Self::PendingPayment, PaymentResult::Declined) => Transition::To(Self::PaymentFailed),
            (Self::Confirmed, PaymentResult::Refunded) => Transition::To(Self::Refunded),
            _ => Transition::Unchanged,
        }
    }

    /// Applies the payment deadline: an order still waiting for its payment
    /// fails; any other has its payment decided (or was cancelled) and
    /// stays as it is, so a deadline firing late, or twice, changes nothing.
    pub fn on_deadline(self) -> Transition {
        match self {
            Self::PendingPayment => Transition::To(Self::PaymentFailed),
            Self::Confirmed | Self::PaymentFailed | Self::Cancelled | Self::Refunded => {
                Transition::Unchanged
            }
        }
    }

    /// Whether the saga is over for this order: payment decided, or the order
    /// ended. (A confirmed order may still be cancelled or refunded later.)
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::PendingPayment)
    }

    /// Cancels. Idempotent on a cancelled order; refused once the payment
    /// failed or was refunded (there is nothing left to cancel).
    pub fn cancel(self) -> Result<Transition, CancelRefused> {
        match self {
            Self::PendingPayment | Self::Confirmed => Ok(Transition::To(Self::Cancelled)),
            Self::Cancelled => Ok(Transition::Unchanged),
            Self::PaymentFailed | Self::Refunded => Err(CancelRefused(self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_order_waiting_for_payment_fails_at_its_deadline() {
        use OrderStatus::*;
        assert_eq!(PendingPayment.on_deadline(), Transition::To(PaymentFailed));
        for decided in [Confirmed, PaymentFailed, Cancelled, Refunded] {
            assert_eq!(decided.on_deadline(), Transition::Unchanged, "{decided:?}");
        }
    }

    fn line(sku: &'static str, quantity: i32, price: (&'static str, i64, i32)) -> RawLine<'static> {
        RawLine {
            sku,
            quantity,
            unit_price: Some(price),
        }
    }

    fn fields(result: Result<NewOrder, Vec<FieldViolation>>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(v) => v.into_iter().map(|v| v.field).collect(),
        }
    }

    #[test]
    fn a_valid_order_gets_its_exact_total() {
        let order = NewOrder::parse(
            "c-1",
            &[
                line("SKU-1", 2, ("EUR", 12, 500_000_000)),
                line("SKU-2", 1, ("EUR", 0, 10)),
            ],
            "r-1",
        );
        let Ok(order) = order else {
            panic!("rejected a valid order")
        };
        assert_eq!(order.total.parts(), ("EUR".into(), 25, 10));
        assert_eq!(order.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let got = fields(NewOrder::parse(
            "",
            &[
                line("", 0, ("eur", 1, 0)),
                RawLine {
                    sku: "ok",
                    quantity: 1,
                    unit_price: None,
                },
                line("A", 1, ("EUR", 1, -5)),
                line("B", 1, ("EUR", 0, 0)),
            ],
            "has space",
        ));
        assert_eq!(
            got,
            [
                "customer_id",
                "request_id",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price.currency_code",
                "items[1].unit_price",
                "items[2].unit_price.nanos",
                "items[3].unit_price",
            ]
        );
    }

    #[test]
    fn mixed_currencies_and_overflow_are_rejected() {
        let got = fields(NewOrder::parse(
            "c",
            &[line("A", 1, ("EUR", 1, 0)), line("B", 1, ("USD", 1, 0))],
            "",
        ));
        assert_eq!(got, ["items[1].unit_price.currency_code"]);
        let got = fields(NewOrder::parse(
            "c",
            &[line("A", MAX_QUANTITY, ("EUR", i64::MAX / 2, 0))],
            "",
        ));
        assert_eq!(got, ["items"]);
    }

    #[test]
    fn item_count_is_bounded() {
        let many: Vec<RawLine<'_>> = (0..=MAX_ITEMS)
            .map(|_| line("A", 1, ("EUR", 1, 0)))
            .collect();
        assert_eq!(fields(NewOrder::parse("c", &many, "")), ["items"]);
        assert_eq!(fields(NewOrder::parse("c", &[], "")), ["items"]);
    }

    #[test]
    fn the_same_request_id_names_the_same_order() {
        let parse = |c: &str, r: &str| NewOrder::parse(c, &[line("A", 1, ("EUR", 1, 0))], r);
        let (Ok(a), Ok(b), Ok(c), Ok(d)) = (
            parse("c", "r-1"),
            parse("c", "r-1"),
            parse("c", "r-2"),
            parse("other", "r-1"),
        ) else {
            panic!("rejected a valid order")
        };
        assert_eq!(a.order_id(), b.order_id());
        assert_ne!(a.order_id(), c.order_id());
        assert_ne!(a.order_id(), d.order_id(), "request ids are per customer");
        let (Ok(x), Ok(y)) = (parse("c", ""), parse("c", "")) else {
            panic!()
        };
        assert_ne!(x.order_id(), y.order_id());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A line as the caller sent it, owned (a `RawLine` borrows).
        type OwnedLine = (String, i32, Option<(String, i64, i32)>);

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => "[A-Za-z0-9._-]{1,12}",
                2 => any::<String>(),
                1 => Just(String::new()),
                1 => "[ \t\n\x00-\x1f\u{85}\u{a0}\u{2028}é日😀.*>]{1,6}",
                1 => (60usize..200).prop_map(|n| "x".repeat(n)),
            ]
        }

        fn line() -> impl Strategy<Value = OwnedLine> {
            let currency = prop_oneof![
                6 => Just(String::from("EUR")),
                1 => Just(String::from("USD")),
                1 => text(),
            ];
            let units = prop_oneof![
                prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX / 10_000, i64::MAX]),
                0..1_000_000i64,
                any::<i64>(),
            ];
            let nanos = prop_oneof![
                prop::sample::select(vec![
                    i32::MIN,
                    -1,
                    0,
                    1,
                    999_999_999,
                    1_000_000_000,
                    i32::MAX
                ]),
                0..1_000_000_000i32,
                any::<i32>(),
            ];
            let quantity = prop_oneof![
                prop::sample::select(vec![
                    i32::MIN,
                    -1,
                    0,
                    1,
                    MAX_QUANTITY,
                    MAX_QUANTITY + 1,
                    i32::MAX
                ]),
                1..=MAX_QUANTITY,
                any::<i32>(),
            ];
            (
                prop_oneof![3 => "[A-Za-z0-9._-]{1,64}", 1 => text()],
                quantity,
                prop::option::weighted(0.9, (currency, units, nanos)),
            )
        }

        fn lines() -> impl Strategy<Value = Vec<OwnedLine>> {
            prop_oneof![
                8 => prop::collection::vec(line(), 0..5),
                1 => prop::collection::vec(line(), MAX_ITEMS - 1..=MAX_ITEMS + 2),
            ]
        }

        fn raw(lines: &[OwnedLine]) -> Vec<RawLine<'_>> {
            lines
                .iter()
                .map(|(sku, quantity, price)| RawLine {
                    sku,
                    quantity: *quantity,
                    unit_price: price.as_ref().map(|(c, u, n)| (c.as_str(), *u, *n)),
                })
                .collect()
        }

        /// Whether `field` is a name `parse` may report for `count` lines.
        fn is_known_field(field: &str, count: usize) -> bool {
            if matches!(field, "customer_id" | "request_id" | "items") {
                return true;
            }
            let Some(rest) = field.strip_prefix("items[") else {
                return false;
            };
            let Some((index, name)) = rest.split_once("].") else {
                return false;
            };
            index
                .parse::<usize>()
                .is_ok_and(|i| i < count.min(MAX_ITEMS))
                && matches!(
                    name,
                    "sku"
                        | "quantity"
                        | "unit_price"
                        | "unit_price.currency_code"
                        | "unit_price.nanos"
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Whatever the input, `parse` answers: an order whose total is
            /// the exact sum of its lines, or at least one named violation.
            #[test]
            fn parse_yields_an_exact_total_or_named_violations(
                customer in prop_oneof![3 => "[A-Za-z0-9._-]{1,128}", 1 => text()],
                lines in lines(),
                request_id in prop_oneof![Just(String::new()), text()],
            ) {
                let raw = raw(&lines);
                match NewOrder::parse(&customer, &raw, &request_id) {
                    Ok(order) => {
                        prop_assert_eq!(order.lines.len(), lines.len());
                        prop_assert!(!lines.is_empty() && lines.len() <= MAX_ITEMS);
                        let mut exact = 0i128;
                        for (sku, quantity, price) in &lines {
                            let Some((currency, units, nanos)) = price else {
                                return Err(TestCaseError::fail("accepted a line without a price"));
                            };
                            prop_assert_eq!(currency, order.total.currency_code());
                            prop_assert!((1..=MAX_QUANTITY).contains(quantity), "{}", sku);
                            exact += i128::from(*quantity)
                                * (i128::from(*units) * 1_000_000_000 + i128::from(*nanos));
                        }
                        prop_assert_eq!(order.total.total_nanos(), exact);
                        prop_assert!(order.total.is_positive());
                        prop_assert_eq!(&order.customer_id, &customer);
                        let _ = order.order_id();
                    }
                    Err(violations) => {
                        prop_assert!(!violations.is_empty());
                        for violation in &violations {
                            prop_assert!(
                                is_known_field(&violation.field, lines.len()),
                                "unknown field {:?}",
                                violation.field
                            );
                            prop_assert!(!violation.description.is_empty());
                        }
                    }
                }
            }

            /// Orders a real client sends are accepted, with their exact total.
            #[test]
            fn plausible_orders_are_accepted(
                customer in "[A-Za-z0-9._-]{1,128}",
                lines in prop::collection::vec(
                    (
                        "[A-Za-z0-9._-]{1,64}",
                        1..=MAX_QUANTITY,
                        0..1_000_000i64,
                        1..1_000_000_000i32,
                    ),
                    1..=MAX_ITEMS,
                ),
            ) {
                let owned: Vec<OwnedLine> = lines
                    .into_iter()
                    .map(|(sku, quantity, units, nanos)| {
                        (sku, quantity, Some((String::from("EUR"), units, nanos)))
                    })
                    .collect();
                let raw = raw(&owned);
                let parsed = NewOrder::parse(&customer, &raw, "");
                prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
            }
        }
    }

    #[test]
    fn payment_results_apply_once() {
        use OrderStatus::*;
        assert_eq!(
            PendingPayment.on_payment(&PaymentResult::Authorized),
            Transition::To(Confirmed)
        );
        assert_eq!(
            PendingPayment.on_payment(&PaymentResult::Declined),
            Transition::To(PaymentFailed)
        );
        assert_eq!(
            Confirmed.on_payment(&PaymentResult::Authorized),
            Transition::Unchanged
        );
        assert_eq!(
            Cancelled.on_payment(&PaymentResult::Authorized),
            Transition::Unchanged
        );
        assert_eq!(
            PaymentFailed.on_payment(&PaymentResult::Authorized),
            Transition::Unchanged
        );
        assert_eq!(
            Confirmed.on_payment(&PaymentResult::Refunded),
            Transition::To(Refunded)
        );
        assert_eq!(
            Cancelled.on_payment(&PaymentResult::Refunded),
            Transition::Unchanged
        );
        assert_eq!(
            Refunded.on_payment(&PaymentResult::Refunded),
            Transition::Unchanged
        );
    }

    #[test]
    fn cancellation_rules() {
        use OrderStatus::*;
        assert_eq!(PendingPayment.cancel(), Ok(Transition::To(Cancelled)));
        assert_eq!(Confirmed.cancel(), Ok(Transition::To(Cancelled)));
        assert_eq!(Cancelled.cancel(), Ok(Transition::Unchanged));
        assert_eq!(PaymentFailed.cancel(), Err(CancelRefused(PaymentFailed)));
        assert_eq!(Refunded.cancel(), Err(CancelRefused(Refunded)));
    }
}
