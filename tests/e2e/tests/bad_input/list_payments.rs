//! ListPayments rows of the table: page sizes, page tokens and filters.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    let long = |n: usize| "x".repeat(n);
    vec![
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
    ]
}
