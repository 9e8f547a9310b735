//! `assert_event_table` fails on a table that is not the contract's. Its
//! self-tests live here, not in `orderflow-testkit`, because they need a real
//! table (order-service's), and the testkit knows no service.

use order_service::events::Orders;
use orderflow_proto::{contract::ORDER_EVENTS, order::v1::Order};
use orderflow_testkit::event_table::assert_event_table;

fn order() -> Order {
    Order {
        order_id: String::from("0190c5a2-7b1e-7c3d-9f00-123456789abc"),
        customer_id: String::from("c-1"),
        ..Default::default()
    }
}

#[test]
#[should_panic(expected = "lists exactly the messages of")]
fn a_table_of_other_messages_fails() {
    assert_event_table::<Orders>(
        "orderflow/payment/v1/payment_events.proto",
        ORDER_EVENTS,
        &order(),
    );
}

#[test]
#[should_panic(expected = "the subject tokens are the contract's")]
fn other_tokens_fail() {
    let mut tokens = ORDER_EVENTS.to_vec();
    tokens[0] = "opened";
    assert_eq!(tokens.len(), 5);
    assert_event_table::<Orders>("orderflow/order/v1/order_events.proto", &tokens, &order());
}

#[test]
#[should_panic(expected = "carries the aggregate it framed")]
fn a_sample_no_service_could_write_fails() {
    let sample = Order {
        customer_id: String::new(),
        ..order()
    };
    assert_event_table::<Orders>(
        "orderflow/order/v1/order_events.proto",
        ORDER_EVENTS,
        &sample,
    );
}
