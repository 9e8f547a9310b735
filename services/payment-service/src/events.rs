//! Payment events on the `PAYMENTS` stream: how a payment decision is
//! committed and how a payment's current state is read back.
//!
//! As for orders, every event carries the whole payment after the change, the
//! last event on `payments.<payment_id>` is the payment, appends expect the
//! sequence they read, and event ids are `<payment_id>.<transition>`.

use opentelemetry::KeyValue;
use orderflow_eventbus::{
    AppendError, Appended, EventEnvelope, EventStore, JetStream, StoredEvent, envelope::headers,
};
use orderflow_proto::{
    Name,
    contract::{PAYMENTS_STREAM, payment_subject},
    payment::v1::{self as pb, PaymentAuthorized, PaymentDeclined, PaymentRefunded, PaymentVoided},
};
use prost::Message;

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

    /// Frames `payment` (the state after the change) as this event.
    pub fn envelope(self, payment: &pb::Payment) -> EventEnvelope {
        let subject = payment_subject(&payment.payment_id);
        let suffix = match self {
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
        };
        let id = format!("{}.{suffix}", payment.payment_id);
        let aggregate = payment.payment_id.clone();
        let payment = Some(payment.clone());
        match self {
            Self::Authorized => {
                EventEnvelope::new(subject, id, aggregate, &PaymentAuthorized { payment })
            }
            Self::Declined => {
                EventEnvelope::new(subject, id, aggregate, &PaymentDeclined { payment })
            }
            Self::Refunded => {
                EventEnvelope::new(subject, id, aggregate, &PaymentRefunded { payment })
            }
            Self::Voided => EventEnvelope::new(subject, id, aggregate, &PaymentVoided { payment }),
        }
    }
}

/// Reads the payment snapshot from any payment event, chosen by `ce-type`.
pub fn snapshot(ce_type: Option<&str>, payload: &[u8]) -> Result<pb::Payment, String> {
    let ce_type = ce_type.ok_or("the event has no ce-type header")?;
    let payment = if ce_type == PaymentAuthorized::full_name() {
        PaymentAuthorized::decode(payload).map(|e| e.payment)
    } else if ce_type == PaymentDeclined::full_name() {
        PaymentDeclined::decode(payload).map(|e| e.payment)
    } else if ce_type == PaymentRefunded::full_name() {
        PaymentRefunded::decode(payload).map(|e| e.payment)
    } else if ce_type == PaymentVoided::full_name() {
        PaymentVoided::decode(payload).map(|e| e.payment)
    } else {
        return Err(format!("unknown payment event type {ce_type:?}"));
    };
    payment
        .map_err(|e| format!("undecodable {ce_type}: {e}"))?
        .ok_or_else(|| format!("{ce_type} carries no payment"))
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
    store: EventStore,
}

impl PaymentEvents {
    /// The payment event store on `js`.
    pub fn new(js: JetStream) -> Self {
        Self {
            store: EventStore::new(js, PAYMENTS_STREAM, SOURCE),
        }
    }

    /// Reads a payment's current state, or `None` when it does not exist.
    pub async fn load(&self, payment_id: &str) -> Result<Option<Current>, PaymentError> {
        let Some(StoredEvent {
            sequence,
            headers: map,
            payload,
        }) = self.store.load_last(&payment_subject(payment_id)).await?
        else {
            return Ok(None);
        };
        let corrupt = |reason: String| PaymentError::Corrupt {
            payment_id: payment_id.to_owned(),
            reason,
        };
        let payment =
            snapshot(map.get(headers::CE_TYPE).map(|v| v.as_str()), &payload).map_err(corrupt)?;
        let status =
            status_of(&payment).ok_or_else(|| corrupt(String::from("status is unspecified")))?;
        Ok(Some(Current {
            payment,
            status,
            sequence,
        }))
    }

    /// Commits `event` with `payment` as the state after it, expecting the
    /// payment's subject to end at `expected_sequence`.
    pub async fn append(
        &self,
        event: PaymentEvent,
        payment: &pb::Payment,
        expected_sequence: u64,
    ) -> Result<Appended, AppendError> {
        let appended = self
            .store
            .append(&event.envelope(payment), expected_sequence)
            .await?;
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

    /// Whether NATS is connected and the stream answers.
    pub async fn ready(&self) -> bool {
        self.store.ready().await
    }
}
