//! The payment events this service writes are the contract's: every event
//! message of `orderflow.payment.v1`, each under its subject token, and
//! read back only with the ids a payment can have.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use orderflow_eventbus::aggregate::Kind;
use orderflow_proto::{
    Name,
    contract::PAYMENT_EVENTS,
    payment::v1::{Payment, PaymentDeclined},
};
use orderflow_testkit::event_table::assert_event_table;
use payment_service::{domain::payment_id_for, events::PaymentAggregate};
use prost::Message;

const ORDER_ID: &str = "0190c5a2-7b1e-7c3d-9f00-123456789abc";

fn payment() -> Payment {
    Payment {
        payment_id: payment_id_for(ORDER_ID).to_string(),
        order_id: ORDER_ID.to_owned(),
        customer_id: String::from("c.1"),
        version: 2,
        ..Default::default()
    }
}

#[test]
fn the_table_lists_every_payment_event_message() {
    let file = "orderflow/payment/v1/payment_events.proto";
    assert_event_table::<PaymentAggregate>(file, PAYMENT_EVENTS, &payment());
}

#[test]
fn a_payment_naming_an_order_id_no_service_assigns_is_refused() {
    let body = |payment: Payment| {
        PaymentDeclined {
            payment: Some(payment),
        }
        .encode_to_vec()
    };
    let ce_type = PaymentDeclined::full_name();
    let decode = |payment| PaymentAggregate::decode(Some(&ce_type), &body(payment));
    assert_eq!(decode(payment()), Ok(payment()));
    let foreign = Payment {
        order_id: String::from("order-1"),
        ..payment()
    };
    assert_eq!(
        decode(foreign).map_err(|reason| reason.to_string()),
        Err(String::from(
            "orderflow.payment.v1.PaymentDeclined carries an order id that is not a canonical UUID: \"order-1\""
        ))
    );
}
