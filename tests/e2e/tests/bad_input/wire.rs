//! Rows of the table that no generated client would send: unknown fields,
//! bytes that are not protobuf, messages over the size limit, for any RPC.

use super::table::{Row, invalid, row};
use super::*;

pub(super) fn rows() -> Vec<Row> {
    use Code::*;
    let long = |n: usize| "x".repeat(n);
    let over_limit = MAX_REQUEST_BYTES + 1;
    let mut table = vec![
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
    table
}

pub(crate) fn get_order_bytes(id: &str) -> Vec<u8> {
    GetOrderRequest {
        order_id: id.to_owned(),
    }
    .encode_to_vec()
}
