//! The payment domain: when to charge, refund or void, and how a payment's
//! status may change. No I/O, no proto, no NATS.
//!
//! There is at most one payment per order, and its id is derived from the
//! order id, so every replica, every redelivery and every retry talk about
//! the same payment — the basis of "never charged twice".

use uuid::Uuid;

/// Namespace of payment ids (UUIDv5 of the order id).
const PAYMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7700_0000_0000_0002);

/// The payment id of an order.
pub fn payment_id_for(order_id: &str) -> Uuid {
    Uuid::new_v5(&PAYMENT_ID_NAMESPACE, order_id.as_bytes())
}

/// The gateway idempotency key of an order's charge.
pub fn charge_key(order_id: &str) -> String {
    format!("charge:{order_id}")
}

/// The gateway idempotency key of an order's refund.
pub fn refund_key(order_id: &str) -> String {
    format!("refund:{order_id}")
}

/// The lifecycle of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Charged.
    Authorized,
    /// Declined by the gateway. Final.
    Declined,
    /// Charged, then refunded. Final.
    Refunded,
    /// The order was cancelled before any charge. Final.
    Voided,
}

/// What to do with a created order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCreated {
    /// No payment yet: charge.
    Charge,
    /// Already decided by a charge (a redelivery after it was recorded).
    Nothing,
    /// Voided: the cancellation came first. An earlier delivery of this
    /// creation may still have charged and died before recording it (a
    /// crash, an append the broker never confirmed), so the gateway is
    /// asked what the charge's idempotency key did, without charging, and
    /// whatever it answers as charged is refunded.
    RefundAnyUnrecordedCharge,
}

/// Decides about a created order given its payment, if any.
pub fn on_order_created(existing: Option<PaymentStatus>) -> OnCreated {
    match existing {
        None => OnCreated::Charge,
        Some(PaymentStatus::Voided) => OnCreated::RefundAnyUnrecordedCharge,
        Some(PaymentStatus::Authorized | PaymentStatus::Declined | PaymentStatus::Refunded) => {
            OnCreated::Nothing
        }
    }
}

/// What to do with a cancelled order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCancelled {
    /// Nothing charged yet: void, so a later charge attempt stands down.
    Void,
    /// Charged: refund.
    Refund,
    /// Nothing to give back.
    Nothing,
}

/// Decides about a cancelled order given its payment, if any.
pub fn on_order_cancelled(existing: Option<PaymentStatus>) -> OnCancelled {
    match existing {
        None => OnCancelled::Void,
        Some(PaymentStatus::Authorized) => OnCancelled::Refund,
        Some(PaymentStatus::Declined | PaymentStatus::Refunded | PaymentStatus::Voided) => {
            OnCancelled::Nothing
        }
    }
}

/// A refund that is not possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a payment in status {0:?} cannot be refunded: nothing was charged")]
pub struct RefundRefused(pub PaymentStatus);

/// Whether a refund request must reach the gateway (`true`), is already
/// done (`false`), or is refused.
pub fn refund(status: PaymentStatus) -> Result<bool, RefundRefused> {
    match status {
        PaymentStatus::Authorized => Ok(true),
        PaymentStatus::Refunded => Ok(false),
        PaymentStatus::Declined | PaymentStatus::Voided => Err(RefundRefused(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_payment_id_per_order() {
        assert_eq!(payment_id_for("o-1"), payment_id_for("o-1"));
        assert_ne!(payment_id_for("o-1"), payment_id_for("o-2"));
        assert_ne!(charge_key("o-1"), refund_key("o-1"));
    }

    #[test]
    fn a_created_order_is_charged_only_without_a_payment() {
        assert_eq!(on_order_created(None), OnCreated::Charge);
        for status in [
            PaymentStatus::Authorized,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
        ] {
            assert_eq!(on_order_created(Some(status)), OnCreated::Nothing);
        }
        assert_eq!(
            on_order_created(Some(PaymentStatus::Voided)),
            OnCreated::RefundAnyUnrecordedCharge
        );
    }

    #[test]
    fn a_cancelled_order_is_voided_refunded_or_left() {
        assert_eq!(on_order_cancelled(None), OnCancelled::Void);
        assert_eq!(
            on_order_cancelled(Some(PaymentStatus::Authorized)),
            OnCancelled::Refund
        );
        assert_eq!(
            on_order_cancelled(Some(PaymentStatus::Declined)),
            OnCancelled::Nothing
        );
        assert_eq!(
            on_order_cancelled(Some(PaymentStatus::Refunded)),
            OnCancelled::Nothing
        );
    }

    #[test]
    fn only_charged_payments_refund() {
        assert_eq!(refund(PaymentStatus::Authorized), Ok(true));
        assert_eq!(refund(PaymentStatus::Refunded), Ok(false));
        assert!(refund(PaymentStatus::Declined).is_err());
        assert!(refund(PaymentStatus::Voided).is_err());
    }
}
