//! Payment events on the `PAYMENTS` stream: what a payment event is, and the
//! payment store built on the shared aggregate mechanism
//! (`orderflow_eventbus::aggregate`).
//!
//! As for orders, every event carries the whole payment after the change, on
//! `payments.<customer>.<payment_id>.<event>`; the last event on
//! `payments.<customer>.<payment_id>.*` is the payment, appends expect the
//! sequence they read, and event ids are `<payment_id>.<transition>`.

use opentelemetry::KeyValue;
use orderflow_eventbus::{
    AppendError, Appended, EventStore, JetStream,
    aggregate::{AggregateStore, EventType, Kind, Page, Versioned},
    event_type,
};
use orderflow_proto::{
    contract::{PAYMENTS_PREFIX, PAYMENTS_STREAM},
    payment::v1::{self as pb, PaymentAuthorized, PaymentDeclined, PaymentRefunded, PaymentVoided},
};

use crate::{domain::PaymentStatus, error::PaymentError};

/// `ce-source` of payment events.
pub const SOURCE: &str = "/orderflow/payment-service";

/// The payment change an event records; each happens at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    /// `PaymentAuthorized`.
    Authorized,
    /// `PaymentDeclined`.
    Declined,
    /// `PaymentRefunded`.
    Refunded,
    /// `PaymentVoided`.
    Voided,
}

impl PaymentEvent {
    /// The status the payment has after this event.
    pub fn status(self) -> PaymentStatus {
        match self {
            Self::Authorized => PaymentStatus::Authorized,
            Self::Declined => PaymentStatus::Declined,
            Self::Refunded => PaymentStatus::Refunded,
            Self::Voided => PaymentStatus::Voided,
        }
    }
}

/// Payments as an aggregate kind of the shared event-sourcing mechanism.
pub struct PaymentAggregate;

impl Kind for PaymentAggregate {
    type State = pb::Payment;
    type Event = PaymentEvent;
    const STREAM: &'static str = PAYMENTS_STREAM;
    const PREFIX: &'static str = PAYMENTS_PREFIX;
    const SOURCE: &'static str = SOURCE;
    // A payment opens authorized, declined or voided.
    const OPENING: Option<&'static str> = None;
    const NOUN: &'static str = "payment";
    // The order's customer: the order service's rule for customer ids.
    const OWNER_NOUN: &'static str = "a customer id";
    const EVENTS: &'static [PaymentEvent] = &[
        PaymentEvent::Authorized,
        PaymentEvent::Declined,
        PaymentEvent::Refunded,
        PaymentEvent::Voided,
    ];

    fn id(payment: &pb::Payment) -> &str {
        &payment.payment_id
    }
    fn owner(payment: &pb::Payment) -> &str {
        &payment.customer_id
    }
    fn version(payment: &pb::Payment) -> u64 {
        payment.version
    }
    // A payment's id follows from its order's (`payment_id_for`), and both
    // are canonical UUIDs.
    fn uuids(payment: &pb::Payment) -> impl IntoIterator<Item = (&'static str, &str)> {
        [
            ("a payment id", payment.payment_id.as_str()),
            ("an order id", payment.order_id.as_str()),
        ]
    }
    fn event_type(event: PaymentEvent) -> EventType<pb::Payment> {
        match event {
            PaymentEvent::Authorized => event_type!(PaymentAuthorized.payment, "authorized"),
            PaymentEvent::Declined => event_type!(PaymentDeclined.payment, "declined"),
            PaymentEvent::Refunded => event_type!(PaymentRefunded.payment, "refunded"),
            PaymentEvent::Voided => event_type!(PaymentVoided.payment, "voided"),
        }
    }
}

/// The domain status of a stored payment.
pub fn status_of(payment: &pb::Payment) -> Option<PaymentStatus> {
    match pb::PaymentStatus::try_from(payment.status).ok()? {
        pb::PaymentStatus::Authorized => Some(PaymentStatus::Authorized),
        pb::PaymentStatus::Declined => Some(PaymentStatus::Declined),
        pb::PaymentStatus::Refunded => Some(PaymentStatus::Refunded),
        pb::PaymentStatus::Voided => Some(PaymentStatus::Voided),
        pb::PaymentStatus::Unspecified => None,
    }
}

/// The proto status of a domain status.
pub fn status_to_proto(status: PaymentStatus) -> pb::PaymentStatus {
    match status {
        PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
        PaymentStatus::Declined => pb::PaymentStatus::Declined,
        PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        PaymentStatus::Voided => pb::PaymentStatus::Voided,
    }
}

/// The current time as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}

/// A payment as last committed, with the sequence the next append expects.
#[derive(Clone, Debug)]
pub struct Current {
    /// The payment.
    pub payment: pb::Payment,
    /// Its status.
    pub status: PaymentStatus,
    /// The stream sequence of its last event.
    pub sequence: u64,
}

/// The `PAYMENTS` stream used as the payment event store.
#[derive(Clone)]
pub struct PaymentEvents {
    store: AggregateStore<PaymentAggregate>,
}

impl PaymentEvents {
    /// The payment event store on `js`.
    pub fn new(js: JetStream) -> Self {
        Self {
            store: AggregateStore::new(js),
        }
    }

    /// Reads a payment's current state, or `None` when it does not exist.
    pub async fn load(&self, payment_id: &str) -> Result<Option<Current>, PaymentError> {
        current(self.store.load(payment_id).await?)
    }

    /// Reads the current state of payment `payment_id` of `customer_id` (a
    /// read of that payment's subjects only).
    pub async fn load_owned(
        &self,
        customer_id: &str,
        payment_id: &str,
    ) -> Result<Option<Current>, PaymentError> {
        current(self.store.load_owned(customer_id, payment_id).await?)
    }

    /// Commits `event` with `payment` as the state after it, expecting the
    /// payment's subjects to end at `expected_sequence`.
    pub async fn append(
        &self,
        event: PaymentEvent,
        payment: &pb::Payment,
        expected_sequence: u64,
    ) -> Result<Appended, AppendError> {
        let appended = self.store.append(event, payment, expected_sequence).await?;
        if !appended.duplicate {
            crate::metrics::metrics().status_changes.add(
                1,
                &[KeyValue::new(
                    "payment.status",
                    status_to_proto(event.status()).as_str_name(),
                )],
            );
        }
        Ok(appended)
    }

    /// One page of payments of `customer_id` (every customer's when
    /// `None`), oldest first, from stream sequence `from`.
    pub async fn list(
        &self,
        customer_id: Option<&str>,
        from: u64,
        size: usize,
    ) -> Result<Page<pb::Payment>, PaymentError> {
        Ok(self
            .store
            .page(
                customer_id,
                from,
                size,
                orderflow_eventbus::aggregate::LIST_SCAN_LIMIT,
                |_| true,
            )
            .await?)
    }

    /// The event store underneath, whose stream readiness is judged by.
    pub fn store(&self) -> &EventStore {
        self.store.events()
    }
}

/// A stored payment with its domain status, or why it is corrupt.
fn current(stored: Option<Versioned<pb::Payment>>) -> Result<Option<Current>, PaymentError> {
    let Some(Versioned { state, sequence }) = stored else {
        return Ok(None);
    };
    let status = status_of(&state).ok_or_else(|| PaymentError::Corrupt {
        payment_id: state.payment_id.clone(),
        reason: String::from("status is unspecified"),
    })?;
    Ok(Some(Current {
        payment: state,
        status,
        sequence,
    }))
}
