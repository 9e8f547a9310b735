//! Bad input, over real gRPC and a real `nats-server`: every RPC answers a
//! malformed request with a precise status (`INVALID_ARGUMENT` naming every
//! bad field in `google.rpc.BadRequest`, `NOT_FOUND`, `ALREADY_EXISTS`,
//! `OUT_OF_RANGE` for a message over the size limit, `INTERNAL` for bytes
//! that are not protobuf), never a panic; arbitrary requests and arbitrary
//! event payloads never take a service down.
//!
//! - `every_malformed_request_gets_its_precise_status` (`table.rs`) is the
//!   table: one row per case, with the code and the exact violated fields it
//!   expects, its rows kept per RPC (`create_order.rs`, `order_ids.rs`,
//!   `list_orders.rs`, `payment_ids.rs`, `list_payments.rs`, and `wire.rs`
//!   for bytes no generated client would send).
//! - `arbitrary_requests_are_answered_never_crash_a_service`
//!   (`arbitrary_requests.rs`) sends proptest's requests (and raw bytes) to
//!   every RPC.
//! - `garbage_events_are_dead_lettered_and_both_services_keep_serving`
//!   (`garbage_events.rs`) publishes random payloads under the event types
//!   the services know, and checks, consumer by consumer, that each one no
//!   consumer can apply left exactly one dead letter naming that consumer and
//!   the reason, and that each one a consumer applies or ignores left none.
//!
//! A panic inside a service shows up to a client as a reset connection (a
//! status that none of these tests accepts), and is also caught directly: a
//! panic hook records every panic on a tokio worker thread, where the
//! services' tasks run, and each test asserts there was none.
//!
//! One test binary, its modules sharing `common.rs`: each end-to-end binary
//! links both services, so more binaries would cost link time, not coverage.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod arbitrary_requests;
mod common;
mod create_order;
mod garbage_events;
mod list_orders;
mod list_payments;
mod order_ids;
mod payment_ids;
mod table;
mod wire;

use std::{
    collections::BTreeMap,
    sync::{Mutex, Once},
    time::Duration,
};

use orderflow_e2e::services::{
    RunningService, health_client, order_client, order_request, payment_client, simulated_gateway,
    spawn_order_service, spawn_payment_service, violated_fields, wait_for_status,
};
use orderflow_eventbus::{aggregate::Kind, envelope::headers, subject::DEAD_LETTER_STREAM};
use orderflow_platform::{paging, server::MAX_REQUEST_BYTES};
use orderflow_proto::{
    Name,
    money::v1::Money,
    order::v1::{
        CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order,
        OrderCancelled, OrderConfirmed, OrderCreated, OrderItem, OrderPaymentFailed, OrderRefunded,
        OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, Payment, PaymentAuthorized, PaymentDeclined,
        PaymentRefunded, PaymentStatus, PaymentVoided, RefundPaymentRequest,
        payment_service_client::PaymentServiceClient,
    },
};
use orderflow_testkit::{
    NatsServer,
    streams::{StoredMessage, consumer_caught_up, jetstream, read_all},
    wait_until,
};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use prost::{
    Message,
    bytes::{Buf, BufMut},
};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use common::*;
