//! GetOrder, CancelOrder and WatchOrder rows of the table: the order id they
//! all take, malformed or naming nothing.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    let long = |n: usize| "x".repeat(n);
    vec![
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
    ]
}
