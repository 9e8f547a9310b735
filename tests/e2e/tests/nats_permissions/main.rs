//! Least privilege on NATS: a real `nats-server` runs the users and
//! permissions of `deploy/nats/auth.conf` as they are shipped, and the real
//! service binaries connect with their own users.
//!
//! Shown here: the whole saga and every read path work with those
//! permissions and no other (no permission violation is logged except the
//! one provoked on purpose); a payment event published with the order
//! service's credentials is refused and never stored, and the reverse; a
//! wrong password stops start-up with a message naming the variables; a
//! service logs in over mutual TLS, and is refused without its client
//! certificate; a message never settled at its last delivery is
//! dead-lettered with the service's own permissions; the read-only
//! events-reader reads both event streams through consumers of its own and
//! may do nothing else; and no password ever appears in a log line.
//!
//! One test binary (each end-to-end binary links both services):
//! `own_permissions.rs`, `cross_publishing.rs`, `events_reader.rs`,
//! `login.rs`, `unsettled.rs` and `configuration.rs` hold the tests, `common.rs` what they share.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod configuration;
mod cross_publishing;
mod events_reader;
mod login;
mod own_permissions;
mod unsettled;

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use futures_util::StreamExt;
use orderflow_e2e::services::{order_id_of, order_request, wait_for_status};
use orderflow_proto::{
    Name,
    admin::v1::{
        ListDeadLettersRequest, ReplayDeadLetterRequest,
        dead_letter_service_client::DeadLetterServiceClient,
    },
    contract::STREAMS,
    order::v1::{
        CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderCreated, OrderStatus,
        WatchOrderRequest, order_service_client::OrderServiceClient,
    },
    payment::v1::{
        GetPaymentRequest, ListPaymentsRequest, Payment, PaymentAuthorized, PaymentStatus,
        payment_service_client::PaymentServiceClient,
    },
};
use orderflow_testkit::{
    NatsServer,
    process::{ServiceProcess, workspace_binary},
    wait_until,
};
use prost::Message;
use tempfile::TempDir;

use common::*;
