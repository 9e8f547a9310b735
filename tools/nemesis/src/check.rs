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
/// `charge:<order_id>` and refunds it under `refund:<order_id>`
/// (docs/gateway-sim.md).
const CHARGE_KEY_PREFIX: &str = "charge:";
const REFUND_KEY_PREFIX: &str = "refund:";
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
    /// Each dead letter: its sequence, the subject of its original and the
    /// reason listed, so that a run's output says what was given up on.
    pub dead_letter_reasons: Vec<String>,
    /// Each invariant.
    pub invariants: Vec<Invariant>,
    /// What the check saw.
    pub fingerprint: Fingerprint,
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
    /// Every order-service replica: each one's read side is compared.
    pub orders: Vec<OrderServiceClient<Channel>>,
    /// The dead-letter admin API of one of them.
    pub admin: DeadLetterServiceClient<Channel>,
    /// The gateway simulator's base URL.
    pub gateway: &'a str,
}

/// What a check saw, to tell a quiet system from one still moving: two
/// checks in a row with no violation and the same fingerprint, and no
/// durable consumer holding work, make the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Messages in ORDERS, PAYMENTS and DEADLETTERS, and in the ledger.
    pub counts: [usize; 4],
    /// Messages the services' durable consumers still hold or have not
    /// delivered.
    pub outstanding: u64,
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

fn payment_status_name(status: i32) -> String {
    orderflow_proto::payment::v1::PaymentStatus::try_from(status)
        .map(|s| format!("payment {}", s.as_str_name()))
        .unwrap_or_else(|_| format!("payment status {status}"))
}

/// How the reason of an order failed by its payment deadline begins.
const DEADLINE_PASSED: &str = "payment deadline passed";

/// The services' durable consumers, whose outstanding work must be zero
/// before a verdict.
const DURABLES: [(&str, &str); 5] = [
    ("ORDERS", "payment-service-orders"),
    ("ORDERS", "payment-service-cancellations"),
    ("ORDERS", "payment-service-payment-failures"),
    ("ORDERS", "order-service-deadlines"),
    ("PAYMENTS", "order-service-payments"),
];

/// Most pages one listing may take: a token that repeats cannot hang the
/// check.
const MAX_PAGES: usize = 10_000;

/// Pending plus unacknowledged messages of the services' durable consumers.
async fn outstanding(js: &jetstream::Context) -> Result<u64, ReadError> {
    let mut total = 0;
    for (stream, durable) in DURABLES {
        let failed = |detail: String| ReadError::Stream {
            stream: stream.to_owned(),
            detail,
        };
        let info = js
            .get_stream(stream)
            .await
            .map_err(|e| failed(e.to_string()))?
            .consumer_info(durable)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // A message NAKed with a delay is neither pending nor, between its
        // deliveries, always counted as waiting for its ack; it does hold the
        // ack floor below what was delivered, until it is settled.
        let unsettled = info
            .delivered
            .consumer_sequence
            .saturating_sub(info.ack_floor.consumer_sequence);
        total +=
            info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX) + unsettled;
    }
    Ok(total)
}

/// The payment status an order's final status requires, by the saga's
/// rules: confirmed means charged, a failed payment means declined (or,
/// past its payment deadline, voided, refunded or declined like a
/// cancellation: a charge still on its way may be declined after it), a
/// cancellation means voided, refunded or declined.
fn payment_matches(order: &Order, payment: Option<i32>) -> bool {
    use orderflow_proto::payment::v1::PaymentStatus as P;
    let is = |s: P| payment == Some(s as i32);
    match OrderStatus::try_from(order.status) {
        Ok(OrderStatus::Confirmed) => is(P::Authorized),
        Ok(OrderStatus::PaymentFailed) if order.failure_reason.starts_with(DEADLINE_PASSED) => {
            is(P::Voided) || is(P::Refunded) || is(P::Declined)
        }
        Ok(OrderStatus::PaymentFailed) => is(P::Declined),
        // Cancelled while its charge was being declined: nothing to give back.
        Ok(OrderStatus::Cancelled) => is(P::Voided) || is(P::Refunded) || is(P::Declined),
        Ok(OrderStatus::Refunded) => is(P::Refunded),
        _ => true,
    }
}

/// The event kinds (the subject's last token) each order status is written
/// with.
fn kind_of(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::PendingPayment) => "created",
        Ok(OrderStatus::Confirmed) => "confirmed",
        Ok(OrderStatus::PaymentFailed) => "payment-failed",
        Ok(OrderStatus::Cancelled) => "cancelled",
        Ok(OrderStatus::Refunded) => "refunded",
        _ => "?",
    }
}

/// Checks the whole history.
pub async fn check(sources: Sources<'_>, history: &History) -> Result<Findings, ReadError> {
    let mut undecodable = Invariant::new("every stored event decodes, on its order's subject");
    let mut versions = Invariant::new("each aggregate's versions are 1..n, no gap or repeat");

    // Every event of an order and of a payment carries the aggregate's
    // whole state as field 1 (the event contract), so one message type
    // reads them all.
    let order_events = read_stream(sources.js, "ORDERS", "orders.*.*.*").await?;
    let mut orders: HashMap<String, Vec<(u64, Order)>> = HashMap::new();
    for event in &order_events {
        match OrderCreated::decode(event.payload.clone()).map(|e| e.order) {
            Ok(Some(order)) => {
                // orders.<customer>.<order_id>.<kind>: the body must be the
                // subject's order, in the subject's kind of event.
                let tokens: Vec<&str> = event.subject.split('.').collect();
                let fits = tokens.get(2) == Some(&order.order_id.as_str())
                    && tokens.get(3) == Some(&kind_of(order.status));
                undecodable.check(fits, || {
                    format!(
                        "{} #{} carries order {} {}",
                        event.subject,
                        event.sequence,
                        order.order_id,
                        status_name(order.status)
                    )
                });
                orders
                    .entry(order.order_id.clone())
                    .or_default()
                    .push((event.sequence, order));
            }
            _ => undecodable.check(false, || format!("{} #{}", event.subject, event.sequence)),
        }
    }
    let payment_events = read_stream(sources.js, "PAYMENTS", "payments.*.*.*").await?;
    let mut payments: HashMap<String, Vec<(u64, Payment)>> = HashMap::new();
    for event in &payment_events {
        match PaymentAuthorized::decode(event.payload.clone()).map(|e| e.payment) {
            Ok(Some(payment)) => {
                let fits = event.subject.split('.').nth(2) == Some(payment.payment_id.as_str());
                undecodable.check(fits, || {
                    format!(
                        "{} #{} carries payment {}",
                        event.subject, event.sequence, payment.payment_id
                    )
                });
                payments
                    .entry(payment.payment_id.clone())
                    .or_default()
                    .push((event.sequence, payment));
            }
            _ => undecodable.check(false, || format!("{} #{}", event.subject, event.sequence)),
        }
    }
    for (id, events) in orders.iter_mut() {
        events.sort_by_key(|(seq, _)| *seq);
        let got: Vec<u64> = events.iter().map(|(_, o)| o.version).collect();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        let opens = events
            .first()
            .is_some_and(|(_, o)| o.status == OrderStatus::PendingPayment as i32);
        versions.check(got == want && opens, || {
            format!("order {id}: versions {got:?}")
        });
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
    let last_payment: HashMap<&str, &Payment> = payments
        .values()
        .filter_map(|events| events.last().map(|(_, p)| (p.order_id.as_str(), p)))
        .collect();
    let mut by_request: HashMap<(&str, &str), Vec<&Order>> = HashMap::new();
    for order in last.values() {
        by_request
            .entry((order.customer_id.as_str(), order.request_id.as_str()))
            .or_default()
            .push(order);
    }

    // The clients' history against the stored orders.
    let mut one_per_request = Invariant::new("one order per customer and request_id");
    for ((customer, request), found) in &by_request {
        one_per_request.check(found.len() == 1, || {
            format!("request {request} of {customer}: {} orders", found.len())
        });
    }
    let mut exists = Invariant::new("every acknowledged CreateOrder exists, as answered");
    let mut settled = Invariant::new("every order reaches a final state");
    let mut cancelled = Invariant::new("every acknowledged CancelOrder is reflected (CANCELLED)");
    for create in history.creates.iter().filter(|c| c.acked) {
        let found = by_request.get(&(create.customer_id.as_str(), create.request_id.as_str()));
        let answered = create.order_id.as_deref();
        exists.check(
            found.is_some_and(|f| f.iter().any(|o| Some(o.order_id.as_str()) == answered)),
            || {
                format!(
                    "request {} of {} (answered {answered:?})",
                    create.request_id, create.customer_id
                )
            },
        );
    }
    for order in last.values() {
        settled.check(is_final(order.status), || {
            // Which side stopped: no payment is the payment service's
            // (its event never handled), a payment the order service's.
            let payment = last_payment.get(order.order_id.as_str()).map_or_else(
                || String::from("no payment"),
                |p| payment_status_name(p.status),
            );
            format!(
                "order {} is {} ({payment})",
                order.order_id,
                status_name(order.status)
            )
        });
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
    let mut paid_as_decided = Invariant::new(
        "each order's payment matches its final state, amount and gateway reference",
    );
    for order in last.values() {
        let payment = last_payment.get(order.order_id.as_str());
        let status_fits = payment_matches(order, payment.map(|p| p.status));
        let amount_fits = payment.is_none_or(|p| p.amount == order.total);
        paid_as_decided.check(status_fits && amount_fits, || {
            format!(
                "order {} {}: payment {:?}",
                order.order_id,
                status_name(order.status),
                payment.map(|p| (p.status, p.amount.clone()))
            )
        });
    }

    // The ledger against the orders.
    let ledger = read_ledger(sources.gateway).await?;
    let mut net = Invariant::new(
        "net charged = total (same currency) for CONFIRMED, 0 for the other final states",
    );
    let mut once =
        Invariant::new("at most one charge per order, every refund of one charge of its order");
    let mut owned = Invariant::new("every ledger operation belongs to an order that exists");
    let mut charges_of: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut refunds_of: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let by_reference: HashMap<&str, &Entry> =
        ledger.iter().map(|e| (e.reference.as_str(), e)).collect();
    let (mut charges, mut declines, mut refunds) = (0, 0, 0);
    for entry in &ledger {
        let prefix = match entry.operation {
            Operation::Charge => CHARGE_KEY_PREFIX,
            Operation::Refund => REFUND_KEY_PREFIX,
        };
        let order = entry.idempotency_key.strip_prefix(prefix);
        owned.check(order.is_some_and(|o| last.contains_key(o)), || {
            format!(
                "{:?} {} of no order",
                entry.operation, entry.idempotency_key
            )
        });
        let Some(order) = order else { continue };
        match (entry.operation, entry.outcome) {
            (Operation::Charge, Outcome::Succeeded) => {
                charges += 1;
                charges_of.entry(order).or_default().push(entry);
            }
            (Operation::Charge, Outcome::Declined) => declines += 1,
            (Operation::Refund, Outcome::Succeeded) => {
                refunds += 1;
                let charge = entry.charge.as_deref().and_then(|r| by_reference.get(r));
                let fits = charge.is_some_and(|c| {
                    c.operation == Operation::Charge
                        && c.idempotency_key.strip_prefix(CHARGE_KEY_PREFIX) == Some(order)
                        && c.amount_minor == entry.amount_minor
                        && c.currency == entry.currency
                });
                once.check(fits, || {
                    format!(
                        "refund {} does not refund its order's charge",
                        entry.reference
                    )
                });
                refunds_of.entry(order).or_default().push(entry);
            }
            (Operation::Refund, Outcome::Declined) => {}
        }
    }
    for order in last.values() {
        let id = order.order_id.as_str();
        let charged = charges_of.get(id).map_or(&[][..], Vec::as_slice);
        let refunded = refunds_of.get(id).map_or(&[][..], Vec::as_slice);
        once.check(charged.len() <= 1 && refunded.len() <= 1, || {
            format!(
                "order {id}: {} charges, {} refunds",
                charged.len(),
                refunded.len()
            )
        });
        let total = order
            .total
            .as_ref()
            .and_then(|t| orderflow_money::Money::new(&t.currency_code, t.units, t.nanos).ok());
        let currency = total.as_ref().map(|t| t.currency_code().to_owned());
        let minor = |entries: &[&Entry]| -> i128 {
            entries.iter().map(|e| i128::from(e.amount_minor)).sum()
        };
        let same_currency = charged
            .iter()
            .chain(refunded)
            .all(|e| Some(&e.currency) == currency.as_ref());
        let net_minor = minor(charged) - minor(refunded);
        let expected = if order.status == OrderStatus::Confirmed as i32 {
            total
                .as_ref()
                .and_then(|t| orderflow_money::minor_units(t).ok())
                .map(i128::from)
        } else {
            Some(0)
        };
        net.check(same_currency && expected == Some(net_minor), || {
            format!(
                "order {id} {}: charged {net_minor} minor units net, expected {expected:?} {currency:?}",
                status_name(order.status)
            )
        });
        if let (Some(payment), [charge]) = (last_payment.get(id), charged) {
            paid_as_decided.check(payment.gateway_reference == charge.reference, || {
                format!(
                    "order {id}: payment references {:?}, the ledger {}",
                    payment.gateway_reference, charge.reference
                )
            });
        }
    }

    // The read side of every replica against the last events.
    let mut reads = Invariant::new(
        "GetOrder and ListOrders of every replica answer each order's last event, once",
    );
    let mut customers: BTreeMap<&str, Vec<&Order>> = BTreeMap::new();
    for order in last.values() {
        customers
            .entry(order.customer_id.as_str())
            .or_default()
            .push(order);
    }
    for (replica, client) in sources.orders.iter().enumerate() {
        let mut client = client.clone();
        for order in last.values() {
            let got = client
                .get_order(GetOrderRequest {
                    order_id: order.order_id.clone(),
                })
                .await
                .map_err(|status| ReadError::Grpc {
                    call: format!("GetOrder {} on order-{replica}", order.order_id),
                    status,
                })?
                .into_inner()
                .order;
            reads.check(got.as_ref() == Some(*order), || {
                format!(
                    "order-{replica}: GetOrder {} differs from its last event",
                    order.order_id
                )
            });
        }
        for (customer, stored) in &customers {
            let mut listed: Vec<Order> = Vec::new();
            let mut page_token = String::new();
            for _ in 0..MAX_PAGES {
                let page = client
                    .list_orders(ListOrdersRequest {
                        page_size: 100,
                        page_token: page_token.clone(),
                        customer_id: (*customer).to_owned(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| ReadError::Grpc {
                        call: format!("ListOrders {customer} on order-{replica}"),
                        status,
                    })?
                    .into_inner();
                listed.extend(page.orders);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let by_id: HashMap<&str, &Order> =
                listed.iter().map(|o| (o.order_id.as_str(), o)).collect();
            reads.check(by_id.len() == listed.len() && listed.len() == stored.len(), || {
                format!(
                    "order-{replica}: ListOrders of {customer} lists {} ({} distinct) of {} orders",
                    listed.len(),
                    by_id.len(),
                    stored.len()
                )
            });
            for order in stored {
                reads.check(by_id.get(order.order_id.as_str()) == Some(order), || {
                    format!(
                        "order-{replica}: ListOrders of {customer}: order {} missing or stale",
                        order.order_id
                    )
                });
            }
        }
    }

    // Dead letters: each one listed by the admin API with its reason.
    let dead = read_stream(sources.js, "DEADLETTERS", "deadletter.>").await?;
    let mut listed_dead = Invariant::new("the admin API lists every dead letter, with its reason");
    let mut admin = sources.admin;
    let mut listed: HashMap<u64, String> = HashMap::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
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
    listed_dead.check(listed.len() == dead.len(), || {
        format!("{} listed, {} stored", listed.len(), dead.len())
    });
    for letter in &dead {
        let reason = listed.get(&letter.sequence);
        listed_dead.check(reason.is_some_and(|r| !r.trim().is_empty()), || {
            format!(
                "dead letter #{} ({}) not listed with a reason",
                letter.sequence, letter.subject
            )
        });
    }

    let dead_letter_reasons = dead
        .iter()
        .map(|letter| {
            let reason = listed
                .get(&letter.sequence)
                .map_or("(not listed)", String::as_str);
            format!("#{} {}: {reason}", letter.sequence, letter.subject)
        })
        .collect();

    let mut orders_by_status: BTreeMap<String, usize> = BTreeMap::new();
    for order in last.values() {
        *orders_by_status
            .entry(status_name(order.status))
            .or_default() += 1;
    }
    let fingerprint = Fingerprint {
        counts: [
            order_events.len(),
            payment_events.len(),
            dead.len(),
            ledger.len(),
        ],
        outstanding: outstanding(sources.js).await?,
    };
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
        dead_letter_reasons,
        invariants: vec![
            exists,
            one_per_request,
            settled,
            cancelled,
            paid_as_decided,
            net,
            once,
            owned,
            versions,
            reads,
            listed_dead,
            undecodable,
        ],
        fingerprint,
    })
}
