//! Order events on the `ORDERS` stream: what an order event is, and the
//! order store built on the shared aggregate mechanism
//! (`orderflow_eventbus::aggregate`).
//!
//! Every event carries the whole order after the change, on
//! `orders.<customer>.<order_id>.<event>`, so the last event on
//! `orders.<customer>.<order_id>.*` is the order. Its stream sequence is what
//! the next append expects (optimistic concurrency), and every event id is
//! `<order_id>.<transition>`, which JetStream de-duplicates — each transition
//! happens at most once per order.

use orderflow_eventbus::{
    AppendError, Appended, EventStore, JetStream,
    aggregate::{self, AggregateStore, ChangeError, EventType, Kind, Page, Start},
    event_type, subject,
};
use orderflow_proto::{
    contract::{ORDER_PAYMENT_DEADLINE, ORDERS_PREFIX, ORDERS_STREAM},
    order::v1::{
        self as pb, OrderCancelled, OrderConfirmed, OrderCreated, OrderPaymentFailed, OrderRefunded,
    },
};
use std::sync::OnceLock;

use opentelemetry::{KeyValue, global, metrics::Counter};

use crate::{domain::OrderStatus, error::OrderError};

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
}

/// Orders as an aggregate kind of the shared event-sourcing mechanism.
pub struct Orders;

impl Kind for Orders {
    type State = pb::Order;
    type Event = OrderEvent;
    const STREAM: &'static str = ORDERS_STREAM;
    const PREFIX: &'static str = ORDERS_PREFIX;
    const SOURCE: &'static str = SOURCE;
    const OPENING: Option<&'static str> = Some("created");
    const NOUN: &'static str = "order";
    const OWNER_NOUN: &'static str = "a customer id";
    const EVENTS: &'static [OrderEvent] = &[
        OrderEvent::Created,
        OrderEvent::Confirmed,
        OrderEvent::PaymentFailed,
        OrderEvent::Cancelled,
        OrderEvent::Refunded,
    ];

    fn id(order: &pb::Order) -> &str {
        &order.order_id
    }
    fn owner(order: &pb::Order) -> &str {
        &order.customer_id
    }
    fn version(order: &pb::Order) -> u64 {
        order.version
    }
    // Every order the service writes has a canonical UUID (see
    // `NewOrder::order_id`).
    fn uuids(order: &pb::Order) -> impl IntoIterator<Item = (&'static str, &str)> {
        [("an order id", order.order_id.as_str())]
    }
    // The events that move an order out of PENDING_PAYMENT end its payment
    // deadline. A cancellation of a confirmed order removes nothing (the
    // confirmation did), which JetStream allows.
    fn ends_timer(event: OrderEvent) -> Option<&'static str> {
        match event {
            OrderEvent::Confirmed | OrderEvent::PaymentFailed | OrderEvent::Cancelled => {
                Some(ORDER_PAYMENT_DEADLINE)
            }
            OrderEvent::Created | OrderEvent::Refunded => None,
        }
    }
    fn event_type(event: OrderEvent) -> EventType<pb::Order> {
        match event {
            OrderEvent::Created => event_type!(OrderCreated.order, "created"),
            OrderEvent::Confirmed => event_type!(OrderConfirmed.order, "confirmed"),
            OrderEvent::PaymentFailed => event_type!(OrderPaymentFailed.order, "payment-failed"),
            OrderEvent::Cancelled => event_type!(OrderCancelled.order, "cancelled"),
            OrderEvent::Refunded => event_type!(OrderRefunded.order, "refunded"),
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
pub type Current = aggregate::Versioned<pb::Order>;

/// The `ORDERS` stream used as the order event store.
#[derive(Clone)]
pub struct OrderEvents {
    store: AggregateStore<Orders>,
}

impl OrderEvents {
    /// The order event store on `js`.
    pub fn new(js: JetStream) -> Self {
        Self {
            store: AggregateStore::new(js),
        }
    }

    /// Reads an order's current state, or `None` when it does not exist.
    pub async fn load(&self, order_id: &str) -> Result<Option<Current>, OrderError> {
        Ok(self.store.load(order_id).await?)
    }

    /// The order as of every event from stream sequence `from` on, as events
    /// are committed.
    pub async fn watch(
        &self,
        order: &pb::Order,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<pb::Order, OrderError>> + use<>, OrderError>
    {
        use futures_util::StreamExt;
        let order_id = order.order_id.clone();
        let filter = subject::aggregate_filter(ORDERS_PREFIX, &order.customer_id, &order_id);
        let events = self.store.events().watch(&filter, from).await?;
        Ok(events.map(move |event| {
            let event = event?;
            let ce_type = event
                .headers
                .get(orderflow_eventbus::envelope::headers::CE_TYPE)
                .map(|v| v.as_str());
            Orders::decode(ce_type, &event.payload).map_err(|reason| {
                OrderError::Store(aggregate::StoreError::Corrupt {
                    id: order_id.clone(),
                    reason,
                })
            })
        }))
    }

    /// Commits `event` with `order` as the state after it, expecting the
    /// order's subjects to end at `expected_sequence`.
    pub async fn append(
        &self,
        event: OrderEvent,
        order: &pb::Order,
        expected_sequence: u64,
    ) -> Result<Appended, AppendError> {
        let appended = self.store.append(event, order, expected_sequence).await?;
        if !appended.duplicate {
            counted(order);
        }
        Ok(appended)
    }

    /// [`OrderEvents::append`], with `order`'s payment deadline at `at`
    /// sent in the same round trip: unless an event that decides its
    /// payment commits first, the deadline fires then on
    /// `orders.~payment-deadline.<customer>.<order_id>.fired`
    /// ([`crate::deadline`]). Answered once both are stored.
    pub async fn append_with_deadline(
        &self,
        event: OrderEvent,
        order: &pb::Order,
        expected_sequence: u64,
        at: std::time::SystemTime,
    ) -> Result<Appended, AppendError> {
        let body = pb::OrderPaymentDeadline {
            order_id: order.order_id.clone(),
            customer_id: order.customer_id.clone(),
            deadline_time: Some(prost_types::Timestamp::from(at)),
        };
        let appended = self
            .store
            .append_scheduling(
                event,
                order,
                expected_sequence,
                ORDER_PAYMENT_DEADLINE,
                at,
                &body,
            )
            .await?;
        if !appended.duplicate {
            counted(order);
        }
        Ok(appended)
    }

    /// Lets `decide` choose the next event and state from the order's
    /// current one and commits it, deciding again when another writer got
    /// there first. Returns the order as committed (or unchanged).
    pub async fn change<F>(
        &self,
        order_id: &str,
        start: Start,
        decide: F,
    ) -> Result<pb::Order, OrderError>
    where
        F: FnMut(&pb::Order) -> Result<Option<(OrderEvent, pb::Order)>, OrderError>,
    {
        match self.store.change(order_id, start, decide).await {
            Ok((order, changed)) => {
                if changed {
                    counted(&order);
                }
                Ok(order)
            }
            Err(ChangeError::Refused(error)) => Err(error),
            Err(ChangeError::NotFound(id)) => Err(OrderError::NotFound(id)),
            Err(ChangeError::Contended(id)) => Err(OrderError::Contended(id)),
            Err(ChangeError::Store(error)) => Err(error.into()),
        }
    }

    /// One page of orders of `customer_id` (all customers when `None`) in
    /// `status` (any when `None`), oldest first, from stream sequence `from`.
    pub async fn list(
        &self,
        customer_id: Option<&str>,
        status: Option<pb::OrderStatus>,
        from: u64,
        size: usize,
    ) -> Result<Page<pb::Order>, OrderError> {
        Ok(self
            .store
            .page(
                customer_id,
                from,
                size,
                aggregate::LIST_SCAN_LIMIT,
                |order| status.is_none_or(|s| order.status == s as i32),
            )
            .await?)
    }

    /// The event store underneath, whose stream readiness is judged by.
    pub fn store(&self) -> &EventStore {
        self.store.events()
    }
}

/// Counts an order entering its status.
fn counted(order: &pb::Order) {
    status_changes().add(
        1,
        &[KeyValue::new(
            "order.status",
            order_status_name(order.status),
        )],
    );
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_proto::Name;
    use prost::Message;

    #[test]
    fn an_order_with_an_id_no_service_assigns_is_refused() {
        let order = |order_id: &str, customer_id: &str| pb::Order {
            order_id: order_id.to_owned(),
            customer_id: customer_id.to_owned(),
            ..Default::default()
        };
        let id = "0190c5a2-7b1e-7c3d-9f00-123456789abc";
        assert_eq!(Orders::check_identity(&order(id, "c-1")), Ok(()));
        for (order_id, customer_id) in [("", "c-1"), ("x", "c-1"), (id, ""), (id, "a b")] {
            let payload = OrderCreated {
                order: Some(order(order_id, customer_id)),
            }
            .encode_to_vec();
            let refused = Orders::decode(Some(&OrderCreated::full_name()), &payload);
            assert!(refused.is_err(), "{order_id:?} {customer_id:?}");
        }
    }
}
