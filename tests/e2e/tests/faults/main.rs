//! Faults under load: the broker killed and restarted, the payment binary
//! killed mid-work, a gateway failing half its calls (and one failing
//! altogether for many breaker cycles), a cluster losing the node that leads
//! `ORDERS`, and two replicas of each service sharing their consumers. In
//! every case each acknowledged order is confirmed, no order is charged or
//! paid twice, and nothing is dead-lettered.
//!
//! Most services here run with `CONSUMER_ACK_WAIT_SECS=2`, so a message held
//! by a process that died comes back after 2 s instead of 30 s. Nothing here
//! sleeps to order events: the tests wait on conditions, and the deadlines
//! are upper bounds that turn a hang into a failure, except one: a call made
//! while the broker is down must end by the caller's deadline.
//!
//! These tests kill brokers and read whole streams, so each starts its own
//! `nats-server` (or cluster), also when `ORDERFLOW_TEST_NATS_URL` is set:
//! none of them is ever skipped.
//!
//! One test binary (each end-to-end binary links both services): `broker.rs`,
//! `broker_down.rs`, `payment_binary.rs`, `gateway.rs` and `replicas.rs` hold
//! the tests, `common.rs` the load and the checks they share.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod broker;
mod broker_down;
mod common;
mod gateway;
mod payment_binary;
mod replicas;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use orderflow_e2e::services::{
    order_request, simulated_gateway, spawn_order_service_with, spawn_payment_service,
    spawn_payment_service_with_gateway,
};
use orderflow_eventbus::envelope::headers;
use orderflow_proto::{
    Name,
    order::v1::{
        GetOrderRequest, OrderConfirmed, OrderCreated, OrderStatus,
        order_service_client::OrderServiceClient,
    },
    payment::v1::{PaymentAuthorized, PaymentDeclined},
};
use orderflow_testkit::{
    NatsCluster, NatsServer,
    otlp::OtlpReceiver,
    process::{ServiceProcess, workspace_binary},
    streams::{StoredMessage, consumer_caught_up, jetstream, read_all},
    wait_until,
};
use payment_service::{
    config::SimulatorConfig,
    gateway::{GatewayError, GatewayRequest, GatewayResponse, SimulatedGateway},
};
use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use common::*;
