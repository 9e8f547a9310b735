//! GetPayment and RefundPayment rows of the table: the payment id they both
//! take, malformed or naming nothing.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    vec![
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
    ]
}
