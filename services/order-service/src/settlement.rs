//! Settling orders by what happened to their payments.
//!
//! The durable consumer `order-service-payments` on `PAYMENTS` delivers each
//! payment event that changes an order; an authorization confirms the order,
//! a decline fails it, a refund marks a confirmed order refunded.
//! Both are idempotent: the state machine leaves an order that already moved
//! unchanged, and event ids de-duplicate a repeated commit.

use orderflow_eventbus::{
    EventHandler, Outcome, ReceivedEvent, aggregate::Start, envelope::names, identity,
};
use orderflow_proto::payment::v1::{
    Payment, PaymentAuthorized, PaymentDeclined, PaymentRefunded, PaymentVoided,
};

use crate::{
    domain::{PaymentResult, Transition},
    error::OrderError,
    events::{OrderEvent, OrderEvents, advance, status_of},
};

/// The durable consumer's name.
pub const DURABLE: &str = "order-service-payments";
/// The payment events it receives: all of them, replays included, so that
/// the consumer has one filter subject, and `>` at that, which nats-server
/// matches without its per-subject index (see `ConsumerSpec::durable`).
/// A voided payment (an order cancelled before it was charged) changes
/// nothing and is acked at once.
pub const SUBJECT: &str = "payments.>";

/// The consumer's handler: settles each order by its payment's outcome.
pub struct SettleOnPaymentEvents {
    events: OrderEvents,
}

impl SettleOnPaymentEvents {
    /// A handler committing to `events`.
    pub fn new(events: OrderEvents) -> Self {
        Self { events }
    }

    async fn apply(&self, payment: Payment, result: PaymentResult) -> Result<(), OrderError> {
        // From what this replica appended last, when it has the order: a
        // stale memory costs a conflict and a re-read, never a wrong write.
        self.events
            .change(&payment.order_id, Start::Recent, |order| {
                let status = status_of(order).ok_or_else(|| OrderError::Corrupt {
                    order_id: order.order_id.clone(),
                    reason: String::from("status is unspecified"),
                })?;
                Ok(match status.on_payment(&result) {
                    Transition::Unchanged => None,
                    Transition::To(next_status) => {
                        let mut next = advance(order, next_status);
                        match result {
                            PaymentResult::Authorized => {
                                next.payment_id = payment.payment_id.clone()
                            }
                            PaymentResult::Declined => {
                                next.failure_reason = payment.decline_reason.clone()
                            }
                            PaymentResult::Refunded => {}
                        }
                        Some((OrderEvent::into_status(next_status), next))
                    }
                })
            })
            .await
            .map(|_| ())
    }
}

impl EventHandler for SettleOnPaymentEvents {
    /// A voided payment (an order cancelled before it was charged) changes
    /// nothing.
    fn skips(&self, ce_type: &str) -> bool {
        names::<PaymentVoided>(ce_type)
    }

    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        let decoded = if event.is::<PaymentAuthorized>() {
            event
                .decode::<PaymentAuthorized>()
                .map(|e| (e.payment, Some(PaymentResult::Authorized)))
        } else if event.is::<PaymentDeclined>() {
            event
                .decode::<PaymentDeclined>()
                .map(|e| (e.payment, Some(PaymentResult::Declined)))
        } else if event.is::<PaymentRefunded>() {
            // A confirmed order becomes refunded; a cancelled one stays so.
            event
                .decode::<PaymentRefunded>()
                .map(|e| (e.payment, Some(PaymentResult::Refunded)))
        } else {
            // Voided payments never get here (`skips`).
            return Outcome::Reject {
                reason: format!(
                    "unknown payment event type {:?}",
                    event.ce_type().unwrap_or("(no ce-type header)")
                ),
            };
        };
        // Payments name orders by their canonical ids; any other "id" is no
        // order's, and no retry will make it one.
        if let Ok((Some(payment), _)) = &decoded
            && let Err(reason) =
                identity::require_uuid("the payment names an order id", &payment.order_id)
        {
            return Outcome::Reject { reason };
        }
        let (payment, result) = match decoded {
            Ok((Some(payment), Some(result))) => (payment, result),
            Ok(_) => {
                return Outcome::Reject {
                    reason: String::from("the payment event carries no payment"),
                };
            }
            Err(error) => {
                return Outcome::Reject {
                    reason: error.to_string(),
                };
            }
        };
        match self.apply(payment, result).await {
            Ok(()) => Outcome::Done,
            Err(error) => error.outcome(event.delivered),
        }
    }
}
