//! The history checker: after the faults stop and the run settles, it reads
//! everything that was recorded — the ORDERS, PAYMENTS and DEADLETTERS
//! streams, the gateway's ledger, the clients' history — and holds it to
//! the invariants orderflow promises.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use orderflow_gateway_sim::ledger::{Entry, Operation, Outcome};
use orderflow_proto::{
    admin::v1::{ListDeadLettersRequest, dead_letter_service_client::DeadLetterServiceClient},
    order::v1::{
        GetOrderRequest, ListOrdersRequest, Order, OrderCreated, OrderStatus,
        order_service_client::OrderServiceClient,
    },
    payment::v1::{Payment, PaymentAuthorized},
};
use prost::Message;
use serde::Serialize;
use tonic::transport::Channel;

use crate::load::History;

/// How long a stream read may go without a message before it gives up.
const READ_IDLE: Duration = Duration::from_secs(10);
/// The payment service charges an order under the idempotency key
/// `charge:<order_id>` (docs/gateway-sim.md).
const CHARGE_KEY_PREFIX: &str = "charge:";
/// Examples kept per invariant.
const EXAMPLES: usize = 10;

/// Why the checker could not read what it checks (not a violation: the
/// run cannot be judged).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A stream could not be read.
    #[error("cannot read stream {stream}: {detail}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        detail: String,
    },
    /// The gateway's ledger could not be read.
    #[error("cannot read the gateway ledger: {0}")]
    Ledger(String),
    /// A gRPC read failed.
    #[error("{call}: {status}")]
    Grpc {
        /// Which call.
        call: String,
        /// Its status.
        status: tonic::Status,
    },
}

/// One invariant and what broke it.
#[derive(Clone, Debug, Serialize)]
pub struct Invariant {
    /// What must hold.
    pub name: &'static str,
    /// How many cases were checked.
    pub checked: usize,
    /// How many broke it.
    pub violations: usize,
    /// Up to ten of them.
    pub examples: Vec<String>,
}

impl Invariant {
    /// An invariant not checked yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        }
    }

    /// Counts one case, and keeps `example` when it does not hold.
    pub fn check(&mut self, holds: bool, example: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            self.violations += 1;
            if self.examples.len() < EXAMPLES {
                self.examples.push(example());
            }
        }
    }
}

/// What the checker counted and found.
#[derive(Clone, Debug, Serialize)]
pub struct Findings {
    /// Orders by final status (every order in ORDERS).
    pub orders_by_status: BTreeMap<String, usize>,
    /// CreateOrder calls answered OK.
    pub creates_acked: usize,
    /// CreateOrder calls never answered OK (retries included in one).
    pub creates_unacked: usize,
    /// CancelOrder calls answered OK.
    pub cancels_acked: usize,
    /// CancelOrder calls refused because the order was final.
    pub cancels_refused: usize,
    /// CancelOrder calls never answered.
    pub cancels_unacked: usize,
    /// Charges in the ledger that moved money.
    pub charges: usize,
    /// Declined charges in the ledger.
    pub declines: usize,
    /// Refunds in the ledger.
    pub refunds: usize,
    /// Events in ORDERS and PAYMENTS.
    pub events: usize,
    /// Messages in DEADLETTERS.
    pub dead_letters: usize,
    /// Each invariant.
    pub invariants: Vec<Invariant>,
}

impl Findings {
    /// Violations of every invariant together.
    pub fn violations(&self) -> usize {
        self.invariants.iter().map(|i| i.violations).sum()
    }
}

/// The addresses the checker reads from.
pub struct Sources<'a> {
    /// JetStream, on any healthy node.
    pub js: &'a jetstream::Context,
    /// An order-service replica.
    pub orders: OrderServiceClient<Channel>,
    /// Its dead-letter admin API.
    pub admin: DeadLetterServiceClient<Channel>,
    /// The gateway simulator's base URL.
    pub gateway: &'a str,
}

/// One stored event: its stream sequence, subject and body.
struct Stored {
    sequence: u64,
    subject: String,
    payload: bytes::Bytes,
}

/// Reads every message of `stream` under `filter`.
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<Vec<Stored>, ReadError> {
    let failed = |detail: String| ReadError::Stream {
        stream: stream.to_owned(),
        detail,
    };
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let consumer = handle
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
    let expected = consumer.cached_info().num_pending;
    let mut out = Vec::new();
    if expected == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| failed(e.to_string()))?;
    while (out.len() as u64) < expected {
        let message = match tokio::time::timeout(READ_IDLE, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(failed(e.to_string())),
            Ok(None) => return Err(failed(String::from("the consumer ended"))),
            Err(_) => {
                return Err(failed(format!(
                    "{} of {expected} messages within {READ_IDLE:?} of silence",
                    out.len()
                )));
            }
        };
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .map_err(|e| failed(e.to_string()))?;
        out.push(Stored {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
        });
    }
    Ok(out)
}

/// The gateway's ledger, from its endpoint.
pub async fn read_ledger(gateway: &str) -> Result<Vec<Entry>, ReadError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        operations: Vec<Entry>,
    }
    let url = format!("{gateway}/v1/ledger");
    match crate::http::get(&url).await {
        Ok((200, body)) => serde_json::from_slice::<Answer>(&body)
            .map(|a| a.operations)
            .map_err(|e| ReadError::Ledger(e.to_string())),
        Ok((status, _)) => Err(ReadError::Ledger(format!("{url} answered {status}"))),
        Err(e) => Err(ReadError::Ledger(e.to_string())),
    }
}

/// Whether an order's status is final (no further event without a call).
pub fn is_final(status: i32) -> bool {
    [
        OrderStatus::Confirmed,
        OrderStatus::PaymentFailed,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

fn status_name(status: i32) -> String {
    OrderStatus::try_from(status)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("status {status}"))
}

/// Checks the whole history.
pub async fn check(sources: Sources<'_>, history: &History) -> Result<Findings, ReadError> {
    let mut undecodable = Invariant::new("every stored event decodes");
    let mut versions = Invariant::new("each aggregate's versions are 1..n, no gap or repeat");

    // Every event of an order and of a payment carries the aggregate's
    // whole state as field 1 (the event contract), so one message type
    // reads them all.
    let order_events = read_stream(sources.js, "ORDERS", "orders.*.*.*").await?;
    let mut orders: HashMap<String, Vec<(u64, Order)>> = HashMap::new();
    for event in &order_events {
        match OrderCreated::decode(event.payload.clone()).map(|e| e.order) {
            Ok(Some(order)) => orders
                .entry(order.order_id.clone())
                .or_default()
                .push((event.sequence, order)),
            _ => undecodable.check(false, || format!("{} #{}", event.subject, event.sequence)),
        }
    }
    let payment_events = read_stream(sources.js, "PAYMENTS", "payments.*.*.*").await?;
    let mut payments: HashMap<String, Vec<(u64, Payment)>> = HashMap::new();
    for event in &payment_events {
        match PaymentAuthorized::decode(event.payload.clone()).map(|e| e.payment) {
            Ok(Some(payment)) => payments
                .entry(payment.payment_id.clone())
                .or_default()
                .push((event.sequence, payment)),
            _ => undecodable.check(false, || format!("{} #{}", event.subject, event.sequence)),
        }
    }
    for (id, events) in orders.iter_mut() {
        events.sort_by_key(|(seq, _)| *seq);
        let got: Vec<u64> = events.iter().map(|(_, o)| o.version).collect();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        versions.check(got == want, || format!("order {id}: versions {got:?}"));
    }
    for (id, events) in payments.iter_mut() {
        events.sort_by_key(|(seq, _)| *seq);
        let got: Vec<u64> = events.iter().map(|(_, p)| p.version).collect();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        versions.check(got == want, || format!("payment {id}: versions {got:?}"));
    }
    let last: HashMap<&str, &Order> = orders
        .iter()
        .filter_map(|(id, events)| events.last().map(|(_, o)| (id.as_str(), o)))
        .collect();
    let by_request: HashMap<(&str, &str), &Order> = last
        .values()
        .map(|o| ((o.customer_id.as_str(), o.request_id.as_str()), *o))
        .collect();

    // The clients' history against the stored orders.
    let mut exists = Invariant::new("every acknowledged CreateOrder exists");
    let mut settled = Invariant::new("every acknowledged CreateOrder reaches a final state");
    let mut cancelled = Invariant::new("every acknowledged CancelOrder is reflected (CANCELLED)");
    for create in history.creates.iter().filter(|c| c.acked) {
        let order = by_request.get(&(create.customer_id.as_str(), create.request_id.as_str()));
        exists.check(order.is_some(), || {
            format!("request {} of {}", create.request_id, create.customer_id)
        });
        if let Some(order) = order {
            settled.check(is_final(order.status), || {
                format!("order {} is {}", order.order_id, status_name(order.status))
            });
        }
    }
    for cancel in history.cancels.iter().filter(|c| c.acked) {
        let status = last.get(cancel.order_id.as_str()).map(|o| o.status);
        cancelled.check(status == Some(OrderStatus::Cancelled as i32), || {
            format!(
                "order {} is {}",
                cancel.order_id,
                status.map_or_else(|| String::from("missing"), status_name)
            )
        });
    }

    // The ledger against the orders.
    let ledger = read_ledger(sources.gateway).await?;
    let mut net = Invariant::new(
        "net charged = total for CONFIRMED, 0 for PAYMENT_FAILED, CANCELLED and REFUNDED",
    );
    let mut once = Invariant::new("no idempotency key charged twice");
    let mut owned = Invariant::new("every ledger charge belongs to an order that exists");
    let mut charges_by_key: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut refunded: HashMap<&str, u64> = HashMap::new();
    let (mut charges, mut declines, mut refunds) = (0, 0, 0);
    for entry in &ledger {
        match (entry.operation, entry.outcome) {
            (Operation::Charge, Outcome::Succeeded) => {
                charges += 1;
                charges_by_key
                    .entry(entry.idempotency_key.as_str())
                    .or_default()
                    .push(entry);
            }
            (Operation::Charge, Outcome::Declined) => declines += 1,
            (Operation::Refund, Outcome::Succeeded) => {
                refunds += 1;
                if let Some(charge) = entry.charge.as_deref() {
                    *refunded.entry(charge).or_default() += entry.amount_minor;
                }
            }
            (Operation::Refund, Outcome::Declined) => {}
        }
    }
    for (key, entries) in &charges_by_key {
        once.check(entries.len() <= 1, || {
            format!("key {key}: {} charges", entries.len())
        });
        let order = key.strip_prefix(CHARGE_KEY_PREFIX).unwrap_or(key);
        owned.check(last.contains_key(order), || {
            format!("charge {key} of no order")
        });
    }
    for order in last.values() {
        let key = format!("{CHARGE_KEY_PREFIX}{}", order.order_id);
        let charged: u64 = charges_by_key
            .get(key.as_str())
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        e.amount_minor.saturating_sub(
                            refunded.get(e.reference.as_str()).copied().unwrap_or(0),
                        )
                    })
                    .sum()
            })
            .unwrap_or(0);
        let expected = if order.status == OrderStatus::Confirmed as i32 {
            order
                .total
                .as_ref()
                .and_then(|t| orderflow_money::Money::new(&t.currency_code, t.units, t.nanos).ok())
                .and_then(|t| orderflow_money::minor_units(&t).ok())
        } else {
            Some(0)
        };
        net.check(expected == Some(charged), || {
            format!(
                "order {} {}: charged {charged} minor units net, expected {expected:?}",
                order.order_id,
                status_name(order.status)
            )
        });
    }

    // The read side against the last events.
    let mut reads = Invariant::new("GetOrder and ListOrders answer each order's last event");
    let mut orders_client = sources.orders;
    for order in last.values() {
        let got = orders_client
            .get_order(GetOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .map_err(|status| ReadError::Grpc {
                call: format!("GetOrder {}", order.order_id),
                status,
            })?
            .into_inner()
            .order;
        reads.check(got.as_ref() == Some(*order), || {
            format!("GetOrder {} differs from its last event", order.order_id)
        });
    }
    let mut customers: BTreeMap<&str, Vec<&Order>> = BTreeMap::new();
    for order in last.values() {
        customers
            .entry(order.customer_id.as_str())
            .or_default()
            .push(order);
    }
    for (customer, stored) in customers {
        let mut listed: HashMap<String, Order> = HashMap::new();
        let mut page_token = String::new();
        loop {
            let page = orders_client
                .list_orders(ListOrdersRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    customer_id: customer.to_owned(),
                    ..Default::default()
                })
                .await
                .map_err(|status| ReadError::Grpc {
                    call: format!("ListOrders {customer}"),
                    status,
                })?
                .into_inner();
            listed.extend(page.orders.into_iter().map(|o| (o.order_id.clone(), o)));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        for order in stored {
            reads.check(listed.get(&order.order_id) == Some(order), || {
                format!(
                    "ListOrders of {customer}: order {} missing or stale",
                    order.order_id
                )
            });
        }
    }

    // Dead letters: each one listed by the admin API with its reason.
    let dead = read_stream(sources.js, "DEADLETTERS", "deadletter.>").await?;
    let mut listed_dead = Invariant::new("every dead letter is listed with its reason");
    let mut admin = sources.admin;
    let mut listed: HashMap<u64, String> = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_dead_letters(ListDeadLettersRequest {
                consumer: String::new(),
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|status| ReadError::Grpc {
                call: String::from("ListDeadLetters"),
                status,
            })?
            .into_inner();
        listed.extend(
            page.dead_letters
                .into_iter()
                .map(|d| (d.sequence, d.reason)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for letter in &dead {
        let reason = listed.get(&letter.sequence);
        listed_dead.check(reason.is_some_and(|r| !r.trim().is_empty()), || {
            format!(
                "dead letter #{} ({}) not listed with a reason",
                letter.sequence, letter.subject
            )
        });
    }

    let mut orders_by_status: BTreeMap<String, usize> = BTreeMap::new();
    for order in last.values() {
        *orders_by_status
            .entry(status_name(order.status))
            .or_default() += 1;
    }
    Ok(Findings {
        orders_by_status,
        creates_acked: history.creates.iter().filter(|c| c.acked).count(),
        creates_unacked: history.creates.iter().filter(|c| !c.acked).count(),
        cancels_acked: history.cancels.iter().filter(|c| c.acked).count(),
        cancels_refused: history.cancels.iter().filter(|c| c.refused).count(),
        cancels_unacked: history
            .cancels
            .iter()
            .filter(|c| !c.acked && !c.refused)
            .count(),
        charges,
        declines,
        refunds,
        events: order_events.len() + payment_events.len(),
        dead_letters: dead.len(),
        invariants: vec![
            exists,
            settled,
            cancelled,
            net,
            once,
            owned,
            versions,
            reads,
            listed_dead,
            undecodable,
        ],
    })
}
