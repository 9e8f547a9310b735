//! The order events this service writes are the contract's: every event
//! message of `orderflow.order.v1`, each under its subject token.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use order_service::events::Orders;
use orderflow_proto::{contract::ORDER_EVENTS, order::v1::Order};
use orderflow_testkit::event_table::assert_event_table;

#[test]
fn the_table_lists_every_order_event_message() {
    let order = Order {
        order_id: String::from("0190c5a2-7b1e-7c3d-9f00-123456789abc"),
        customer_id: String::from("c.1"),
        version: 3,
        ..Default::default()
    };
    assert_event_table::<Orders>(
        "orderflow/order/v1/order_events.proto",
        ORDER_EVENTS,
        &order,
    );
}
