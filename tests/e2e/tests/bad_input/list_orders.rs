//! ListOrders rows of the table: page sizes, page tokens and filters.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    let long = |n: usize| "x".repeat(n);
    vec![
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
    ]
}
