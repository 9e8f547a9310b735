//! Order events on the `ORDERS` stream: how a decision is committed and how
//! an order's current state is read back.
//!
//! Every event carries the whole order after the change, so the last event on
//! `orders.<order_id>` is the order. Its stream sequence is what the next
//! append expects (optimistic concurrency), and every event id is
//! `<order_id>.<transition>`, which JetStream de-duplicates — each transition
//! happens at most once per order.

use orderflow_eventbus::{
    AppendError, Appended, EventEnvelope, EventStore, JetStream, StoredEvent,
};
use orderflow_proto::{
    Name,
    contract::{ORDERS_STREAM, order_subject},
    order::v1::{
        self as pb, OrderCancelled, OrderConfirmed, OrderCreated, OrderPaymentFailed, OrderRefunded,
    },
};
use std::sync::OnceLock;

use opentelemetry::{KeyValue, global, metrics::Counter};
use prost::Message;

use orderflow_platform::status::{check_token, is_canonical_uuid};

use crate::{
    domain::{MAX_ID_LEN, OrderStatus},
    error::OrderError,
};

/// `ce-source` of order events.
pub const SOURCE: &str = "/orderflow/order-service";

/// The order change an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// `OrderCreated`.
    Created,
    /// `OrderConfirmed`.
    Confirmed,
    /// `OrderPaymentFailed`.
    PaymentFailed,
    /// `OrderCancelled`.
    Cancelled,
    /// `OrderRefunded`.
    Refunded,
}

impl OrderEvent {
    /// The event that moves an order into `status`.
    pub fn into_status(status: OrderStatus) -> Self {
        match status {
            OrderStatus::PendingPayment => Self::Created,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::PaymentFailed => Self::PaymentFailed,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Refunded => Self::Refunded,
        }
    }

    fn id_suffix(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Confirmed => "confirmed",
            Self::PaymentFailed => "payment-failed",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// Frames `order` (the state after the change) as this event.
    pub fn envelope(self, order: &pb::Order) -> EventEnvelope {
        let subject = order_subject(&order.order_id);
        let id = format!("{}.{}", order.order_id, self.id_suffix());
        let aggregate = order.order_id.clone();
        let order = Some(order.clone());
        match self {
            Self::Created => EventEnvelope::new(subject, id, aggregate, &OrderCreated { order }),
            Self::Confirmed => {
                EventEnvelope::new(subject, id, aggregate, &OrderConfirmed { order })
            }
            Self::PaymentFailed => {
                EventEnvelope::new(subject, id, aggregate, &OrderPaymentFailed { order })
            }
            Self::Cancelled => {
                EventEnvelope::new(subject, id, aggregate, &OrderCancelled { order })
            }
            Self::Refunded => EventEnvelope::new(subject, id, aggregate, &OrderRefunded { order }),
        }
    }
}

/// `orderflow.orders.status_changes`: orders entering each status (created
/// orders enter `ORDER_STATUS_PENDING_PAYMENT`), so rates by final status
/// read straight off it.
fn status_changes() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        global::meter("orderflow")
            .u64_counter("orderflow.orders.status_changes")
            .with_unit("{order}")
            .with_description("Orders entering each status")
            .build()
    })
}

fn order_status_name(status: i32) -> &'static str {
    pb::OrderStatus::try_from(status)
        .unwrap_or(pb::OrderStatus::Unspecified)
        .as_str_name()
}

/// Reads the order snapshot from any order event, chosen by its `ce-type`.
pub fn snapshot(ce_type: Option<&str>, payload: &[u8]) -> Result<pb::Order, String> {
    let ce_type = ce_type.ok_or("the event has no ce-type header")?;
    let order = if ce_type == OrderCreated::full_name() {
        OrderCreated::decode(payload).map(|e| e.order)
    } else if ce_type == OrderConfirmed::full_name() {
        OrderConfirmed::decode(payload).map(|e| e.order)
    } else if ce_type == OrderPaymentFailed::full_name() {
        OrderPaymentFailed::decode(payload).map(|e| e.order)
    } else if ce_type == OrderCancelled::full_name() {
        OrderCancelled::decode(payload).map(|e| e.order)
    } else if ce_type == OrderRefunded::full_name() {
        OrderRefunded::decode(payload).map(|e| e.order)
    } else {
        return Err(format!("unknown order event type {ce_type:?}"));
    };
    let order = order
        .map_err(|e| format!("undecodable {ce_type}: {e}"))?
        .ok_or_else(|| format!("{ce_type} carries no order"))?;
    check_identity(&order).map_err(|reason| format!("{ce_type} carries {reason}"))?;
    Ok(order)
}

/// Why `order` cannot be one the order service wrote: every order it writes
/// has a canonical UUID and a valid customer id (see `NewOrder::parse`).
///
/// An event without them comes from a foreign or broken publisher. No retry
/// can apply it (its subject or projection key would be invalid), so it is
/// refused at once, as corrupt, instead of being retried as if NATS were
/// down.
pub fn check_identity(order: &pb::Order) -> Result<(), String> {
    if !is_canonical_uuid(&order.order_id) {
        return Err(format!(
            "an order id that is not a canonical UUID: {:?}",
            shown(&order.order_id)
        ));
    }
    let mut violations = Vec::new();
    check_token(
        "customer_id",
        &order.customer_id,
        MAX_ID_LEN,
        true,
        &mut violations,
    );
    match violations.first() {
        Some(violation) => Err(format!(
            "a customer id that {}: {:?}",
            violation.description,
            shown(&order.customer_id)
        )),
        None => Ok(()),
    }
}

/// The start of a value quoted in a reason (which ends up in a dead
/// letter's headers): at most 40 characters.
fn shown(value: &str) -> String {
    value.chars().take(40).collect()
}

/// The domain status of a stored order.
pub fn status_of(order: &pb::Order) -> Option<OrderStatus> {
    match pb::OrderStatus::try_from(order.status).ok()? {
        pb::OrderStatus::PendingPayment => Some(OrderStatus::PendingPayment),
        pb::OrderStatus::Confirmed => Some(OrderStatus::Confirmed),
        pb::OrderStatus::PaymentFailed => Some(OrderStatus::PaymentFailed),
        pb::OrderStatus::Cancelled => Some(OrderStatus::Cancelled),
        pb::OrderStatus::Refunded => Some(OrderStatus::Refunded),
        pb::OrderStatus::Unspecified => None,
    }
}

/// The proto status of a domain status.
pub fn status_to_proto(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::PendingPayment => pb::OrderStatus::PendingPayment,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::PaymentFailed => pb::OrderStatus::PaymentFailed,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Refunded => pb::OrderStatus::Refunded,
    }
}

/// An order as last committed, with the sequence the next append expects.
#[derive(Clone, Debug)]
pub struct Current {
    /// The order.
    pub order: pb::Order,
    /// The stream sequence of its last event.
    pub sequence: u64,
}

/// The `ORDERS` stream used as the order event store.
#[derive(Clone)]
pub struct OrderEvents {
    store: EventStore,
}

impl OrderEvents {
    /// The order event store on `js`.
    pub fn new(js: JetStream) -> Self {
        Self {
            store: EventStore::new(js, ORDERS_STREAM, SOURCE),
        }
    }

    /// Reads an order's current state, or `None` when it does not exist.
    pub async fn load(&self, order_id: &str) -> Result<Option<Current>, OrderError> {
        let Some(StoredEvent {
            sequence,
            headers,
            payload,
        }) = self.store.load_last(&order_subject(order_id)).await?
        else {
            return Ok(None);
        };
        let ce_type = headers
            .get(orderflow_eventbus::envelope::headers::CE_TYPE)
            .map(|v| v.as_str());
        let order = snapshot(ce_type, &payload).map_err(|reason| OrderError::Corrupt {
            order_id: order_id.to_owned(),
            reason,
        })?;
        Ok(Some(Current { order, sequence }))
    }

    /// The order as of every event from stream sequence `from` on, as events
    /// are committed.
    pub async fn watch(
        &self,
        order_id: &str,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<pb::Order, OrderError>> + use<>, OrderError>
    {
        use futures_util::StreamExt;
        let order_id = order_id.to_owned();
        let events = self.store.watch(&order_subject(&order_id), from).await?;
        Ok(events.map(move |event| {
            let event = event?;
            let ce_type = event
                .headers
                .get(orderflow_eventbus::envelope::headers::CE_TYPE)
                .map(|v| v.as_str());
            snapshot(ce_type, &event.payload).map_err(|reason| OrderError::Corrupt {
                order_id: order_id.clone(),
                reason,
            })
        }))
    }

    /// Commits `event` with `order` as the state after it, expecting the
    /// order's subject to end at `expected_sequence`.
    pub async fn append(
        &self,
        event: OrderEvent,
        order: &pb::Order,
        expected_sequence: u64,
    ) -> Result<Appended, AppendError> {
        let appended = self
            .store
            .append(&event.envelope(order), expected_sequence)
            .await?;
        if !appended.duplicate {
            status_changes().add(
                1,
                &[KeyValue::new(
                    "order.status",
                    order_status_name(order.status),
                )],
            );
        }
        Ok(appended)
    }

    /// Whether NATS is connected and the stream answers.
    pub async fn ready(&self) -> bool {
        self.store.ready().await
    }
}

/// How many times a change is re-decided after losing a race.
const MAX_ATTEMPTS: usize = 8;

/// The current time as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

/// `order` moved to `status`: version bumped, update time set.
pub fn advance(order: &pb::Order, status: OrderStatus) -> pb::Order {
    let mut next = order.clone();
    next.status = status_to_proto(status) as i32;
    next.version = order.version.saturating_add(1);
    next.update_time = Some(now());
    next
}

impl OrderEvents {
    /// Reads the order, lets `decide` choose the next event and state, and
    /// commits it; re-reads and re-decides when another writer got there
    /// first. Returns the order as committed (or unchanged).
    pub async fn change<F>(&self, order_id: &str, mut decide: F) -> Result<pb::Order, OrderError>
    where
        F: FnMut(&pb::Order) -> Result<Option<(OrderEvent, pb::Order)>, OrderError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .load(order_id)
                .await?
                .ok_or_else(|| OrderError::NotFound(order_id.to_owned()))?;
            let Some((event, next)) = decide(&current.order)? else {
                return Ok(current.order);
            };
            match self.append(event, &next, current.sequence).await {
                Ok(Appended {
                    duplicate: false, ..
                }) => return Ok(next),
                // Already committed by an earlier attempt or another replica:
                // read the stored truth and decide again (now unchanged).
                Ok(Appended {
                    duplicate: true, ..
                })
                | Err(AppendError::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(OrderError::Contended(order_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `ce-type` of every order event.
    fn known_types() -> Vec<String> {
        vec![
            OrderCreated::full_name(),
            OrderConfirmed::full_name(),
            OrderPaymentFailed::full_name(),
            OrderCancelled::full_name(),
            OrderRefunded::full_name(),
        ]
    }

    fn ce_type() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            6 => prop::sample::select(known_types()).prop_map(Some),
            1 => Just(Some(String::from("orderflow.payment.v1.PaymentAuthorized"))),
            1 => any::<String>().prop_map(Some),
            1 => Just(None),
        ]
    }

    /// A stored order with arbitrary fields, its ids of the right form or not.
    fn order() -> impl Strategy<Value = pb::Order> {
        (
            prop_oneof![
                any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
                any::<String>(),
            ],
            prop_oneof!["[A-Za-z0-9._-]{1,128}", any::<String>()],
            any::<i32>(),
            any::<u64>(),
            prop::option::of((any::<i64>(), any::<i32>())),
        )
            .prop_map(|(order_id, customer_id, status, version, time)| pb::Order {
                order_id,
                customer_id,
                status,
                version,
                create_time: time.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                ..Default::default()
            })
    }

    /// Event bodies: random bytes, a real event, or a real event cut short
    /// or with one byte changed.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let event = order()
            .prop_map(|order| OrderCreated { order: Some(order) }.encode_to_vec())
            .boxed();
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            event.clone(),
            (
                event,
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<bool>()
            )
                .prop_map(|(mut bytes, at, byte, cut)| {
                    if !bytes.is_empty() {
                        let at = at.index(bytes.len());
                        if cut {
                            bytes.truncate(at);
                        } else {
                            bytes[at] = byte;
                        }
                    }
                    bytes
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any body under any type is an order or a reason, never a panic;
        /// an order only under an order event type, decoded as prost decodes
        /// it, and with the ids of an order the service could have written.
        #[test]
        fn any_event_is_an_order_or_a_reason(ce_type in ce_type(), payload in payload()) {
            match snapshot(ce_type.as_deref(), &payload) {
                Ok(order) => {
                    prop_assert!(ce_type.as_ref().is_some_and(|t| known_types().contains(t)));
                    let decoded = OrderCreated::decode(payload.as_slice())
                        .ok()
                        .and_then(|e| e.order);
                    prop_assert_eq!(Some(&order), decoded.as_ref());
                    prop_assert!(check_identity(&order).is_ok());
                }
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }

    #[test]
    fn an_order_with_an_id_no_service_assigns_is_refused() {
        let order = |order_id: &str, customer_id: &str| pb::Order {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            ..Default::default()
        };
        let id = "0190c5a2-7b1e-7c3d-9f00-123456789abc";
        assert_eq!(check_identity(&order(id, "c-1")), Ok(()));
        for (order_id, customer_id) in [("", "c-1"), ("x", "c-1"), (id, ""), (id, "a b")] {
            let payload = OrderCreated {
                order: Some(order(order_id, customer_id)),
            }
            .encode_to_vec();
            let refused = snapshot(Some(&OrderCreated::full_name()), &payload);
            assert!(refused.is_err(), "{order_id:?} {customer_id:?}");
        }
    }
}
