//! The order → payment saga, end to end: real nats-server, both services on
//! loopback gRPC, the simulated gateway counting what it really charged.
//!
//! One test binary (each end-to-end binary links both services):
//! `lifecycle.rs`, `listing.rs`, `watching.rs`, `deadline.rs` (the payment
//! deadline), `unreadable.rs` (events naming an order that cannot be read
//! yet) and `external_gateway.rs` (the payment service charging through a
//! gateway-sim over HTTP).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod deadline;
mod external_gateway;
mod lifecycle;
mod listing;
mod unreadable;
mod watching;

use std::time::Duration;

use orderflow_e2e::services::{
    order_client, order_request, payment_client, simulated_gateway, spawn_order_service,
    spawn_order_service_with, spawn_payment_service, wait_for_status,
};
use orderflow_eventbus::subject::aggregate_filter;
use orderflow_proto::{
    Name,
    order::v1::{
        CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderCreated, OrderStatus,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, PaymentAuthorized, PaymentStatus,
        RefundPaymentRequest,
    },
};
use orderflow_testkit::{
    NatsServer,
    streams::{consumer_caught_up, jetstream, read_all},
    wait_until,
};
