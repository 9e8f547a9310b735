//! CreateOrder rows of the table: required fields, counts and sizes, the
//! items, a status that names as many bad fields as fit, and the boundaries
//! that are accepted.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    let eur = |u, n| Some(("EUR", u, n));
    let long = |n: usize| "x".repeat(n);
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
    table.push(invalid(
        "a CreateOrder just under the size limit",
        create(&long(MAX_REQUEST_BYTES - 1024), vec![ok_item()]),
        &["customer_id"],
    ));
    table
}
