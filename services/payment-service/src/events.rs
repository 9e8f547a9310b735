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

use orderflow_platform::status::{check_token, is_canonical_uuid};

use crate::{domain::PaymentStatus, error::PaymentError, grpc::MAX_ID_LEN};

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
    let payment = payment
        .map_err(|e| format!("undecodable {ce_type}: {e}"))?
        .ok_or_else(|| format!("{ce_type} carries no payment"))?;
    check_identity(&payment).map_err(|reason| format!("{ce_type} carries {reason}"))?;
    Ok(payment)
}

/// Why `payment` cannot be one the payment service wrote: every payment it
/// writes has canonical UUIDs for itself and its order, and the order's
/// valid customer id.
///
/// An event without them comes from a foreign or broken publisher. No retry
/// can apply it (its subject or projection key would be invalid), so it is
/// refused at once, as corrupt, instead of being retried as if NATS were
/// down.
pub fn check_identity(payment: &pb::Payment) -> Result<(), String> {
    for (what, id) in [
        ("a payment id", &payment.payment_id),
        ("an order id", &payment.order_id),
    ] {
        if !is_canonical_uuid(id) {
            return Err(format!(
                "{what} that is not a canonical UUID: {:?}",
                shown(id)
            ));
        }
    }
    check_customer_id(&payment.customer_id)
}

/// Why `customer_id` is not one an order can have (the order service's
/// rule: 1 to 128 characters, no spaces or control characters).
pub fn check_customer_id(customer_id: &str) -> Result<(), String> {
    let mut violations = Vec::new();
    check_token(
        "customer_id",
        customer_id,
        MAX_ID_LEN,
        true,
        &mut violations,
    );
    match violations.first() {
        Some(violation) => Err(format!(
            "a customer id that {}: {:?}",
            violation.description,
            shown(customer_id)
        )),
        None => Ok(()),
    }
}

/// The start of a value quoted in a reason (which ends up in a dead
/// letter's headers): at most 40 characters.
pub fn shown(value: &str) -> String {
    value.chars().take(40).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `ce-type` of every payment event.
    fn known_types() -> Vec<String> {
        vec![
            PaymentAuthorized::full_name(),
            PaymentDeclined::full_name(),
            PaymentRefunded::full_name(),
            PaymentVoided::full_name(),
        ]
    }

    fn ce_type() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            6 => prop::sample::select(known_types()).prop_map(Some),
            1 => Just(Some(String::from("orderflow.order.v1.OrderCreated"))),
            1 => any::<String>().prop_map(Some),
            1 => Just(None),
        ]
    }

    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
            1 => any::<String>(),
        ]
    }

    /// A stored payment with arbitrary fields, its ids of the right form or
    /// not.
    fn payment() -> impl Strategy<Value = pb::Payment> {
        (
            id(),
            id(),
            prop_oneof!["[A-Za-z0-9._-]{1,128}", any::<String>()],
            any::<i32>(),
            any::<u64>(),
            prop::option::of((any::<String>(), any::<i64>(), any::<i32>())),
        )
            .prop_map(
                |(payment_id, order_id, customer_id, status, version, amount)| pb::Payment {
                    payment_id,
                    order_id,
                    customer_id,
                    status,
                    version,
                    amount: amount.map(|(currency_code, units, nanos)| {
                        orderflow_proto::money::v1::Money {
                            currency_code,
                            units,
                            nanos,
                        }
                    }),
                    ..Default::default()
                },
            )
    }

    /// Event bodies: random bytes, a real event, or a real event cut short
    /// or with one byte changed.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let event = payment()
            .prop_map(|payment| {
                PaymentAuthorized {
                    payment: Some(payment),
                }
                .encode_to_vec()
            })
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

        /// Any body under any type is a payment or a reason, never a panic;
        /// a payment only under a payment event type, decoded as prost
        /// decodes it, and with the ids of a payment the service could have
        /// written.
        #[test]
        fn any_event_is_a_payment_or_a_reason(ce_type in ce_type(), payload in payload()) {
            match snapshot(ce_type.as_deref(), &payload) {
                Ok(payment) => {
                    prop_assert!(ce_type.as_ref().is_some_and(|t| known_types().contains(t)));
                    let decoded = PaymentAuthorized::decode(payload.as_slice())
                        .ok()
                        .and_then(|e| e.payment);
                    prop_assert_eq!(Some(&payment), decoded.as_ref());
                    prop_assert!(check_identity(&payment).is_ok());
                    let _ = status_of(&payment);
                }
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }
}
