//! Failing orders whose payment was not decided by their deadline.
//!
//! Creating an order schedules its payment deadline as a JetStream message
//! schedule, sent with `OrderCreated` (`OrderEvents::append_with_deadline`);
//! the event that decides the payment or cancels the order removes it
//! (`Orders::ends_timer`). A deadline that fires is delivered by the durable
//! consumer `order-service-deadlines` to one replica, where [`FailAtDeadline`] fails
//! the order if it is still waiting. No timer lives in a process: the
//! schedule is kept, replicated, by the stream, so the deadline holds across
//! restarts and with any number of replicas, and the fired message waits in
//! the stream for a replica that is up.

use orderflow_eventbus::{
    EventHandler, Outcome, ReceivedEvent, aggregate::Start, identity, subject::fired_filter,
};
use orderflow_proto::{
    contract::{ORDER_PAYMENT_DEADLINE, ORDERS_PREFIX},
    order::v1::OrderPaymentDeadline,
};

use crate::{
    domain::Transition,
    error::{MISSING_ORDER_BELIEVED_AT, OrderError},
    events::{OrderEvent, OrderEvents, advance, status_of},
};

/// The durable consumer's name.
pub const DURABLE: &str = "order-service-deadlines";

/// What the consumer receives: every order's fired payment deadline,
/// `orders.~payment-deadline.>` (one filter subject, which takes the
/// replays too; nothing else of ORDERS).
pub fn subject() -> String {
    fired_filter(ORDERS_PREFIX, ORDER_PAYMENT_DEADLINE)
}

/// The reason an order failed by its deadline carries (`failure_reason`).
pub fn failure_reason(deadline: &OrderPaymentDeadline) -> String {
    match deadline
        .deadline_time
        .and_then(|at| std::time::SystemTime::try_from(at).ok())
    {
        Some(at) => format!(
            "payment deadline passed: the payment was not decided by {}",
            orderflow_eventbus::envelope::rfc3339(at)
        ),
        None => String::from("payment deadline passed: the payment was not decided in time"),
    }
}

/// The consumer's handler: fails each order still waiting for its payment.
pub struct FailAtDeadline {
    events: OrderEvents,
}

impl FailAtDeadline {
    /// A handler committing to `events`.
    pub fn new(events: OrderEvents) -> Self {
        Self { events }
    }

    async fn apply(&self, deadline: &OrderPaymentDeadline) -> Result<(), OrderError> {
        // From the stream, not this replica's memory: a deadline fires long
        // after anything this replica appended, and it is rare.
        self.events
            .change(&deadline.order_id, Start::Stream, |order| {
                let status = status_of(order).ok_or_else(|| OrderError::Corrupt {
                    order_id: order.order_id.clone(),
                    reason: String::from("status is unspecified"),
                })?;
                Ok(match status.on_deadline() {
                    Transition::Unchanged => None,
                    Transition::To(next_status) => {
                        let mut next = advance(order, next_status);
                        next.failure_reason = failure_reason(deadline);
                        Some((OrderEvent::into_status(next_status), next))
                    }
                })
            })
            .await?;
        Ok(())
    }
}

impl EventHandler for FailAtDeadline {
    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        // `decode` refuses another ce-type, or none, saying which it found.
        let deadline = match event.decode::<OrderPaymentDeadline>() {
            Ok(deadline) => deadline,
            Err(error) => {
                return Outcome::Reject {
                    reason: error.to_string(),
                };
            }
        };
        if let Err(reason) =
            identity::require_uuid("the payment deadline names an order id", &deadline.order_id)
        {
            return Outcome::Reject { reason };
        }
        match self.apply(&deadline).await {
            Ok(()) => Outcome::Done,
            // A deadline stored while its order's creation failed (see
            // `OrderApi::create`) belongs to no order: nothing to fail,
            // once the order's absence is believed (before, it is retried:
            // it may be a replica's or a replaced leader's view).
            Err(OrderError::NotFound(_)) if event.delivered >= MISSING_ORDER_BELIEVED_AT => {
                Outcome::Done
            }
            Err(error) => error.outcome(event.delivered),
        }
    }
}
