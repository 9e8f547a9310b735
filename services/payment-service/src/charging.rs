//! Charging for orders: a created order is charged, a cancelled one (or one
//! failed by its payment deadline) refunded or voided.
//!
//! Three durable consumers on `ORDERS`, one per kind of order event the
//! payment service acts on ([`consumers`]), deliver each order's creation,
//! cancellation and failure to one replica, where [`ChargeOnOrderEvents`]
//! handles it. A created order is
//! charged once: its payment id and gateway idempotency key are derived
//! from the order id, the first payment event must be the first on its
//! subject (expected sequence 0), and the gateway returns the first result
//! for a repeated key. A cancelled order
//! is refunded when charged, or voided when not charged yet, so a charge that
//! is still on its way stands down (or is refunded at once when it lost the
//! race).

use std::time::Duration;

use orderflow_eventbus::{
    AppendError, ConsumerSpec, EventHandler, JetStream, Outcome, ReceivedEvent,
    aggregate::StoreError, envelope::names, gather::GatheredReads, identity,
    subject::event_subject,
};
use orderflow_money::Money;
use orderflow_proto::{
    contract::{ORDERS_PREFIX, ORDERS_STREAM},
    order::v1::{
        self as order_pb, OrderCancelled, OrderConfirmed, OrderCreated, OrderPaymentFailed,
        OrderRefunded,
    },
    payment::v1 as pb,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{
    breaker::Breaker,
    domain::{
        OnCancelled, OnCreated, PaymentStatus, charge_key, on_order_cancelled, on_order_created,
        payment_id_for, refund, refund_key,
    },
    error::PaymentError,
    events::{Current, PaymentEvent, PaymentEvents, now, status_to_proto},
    gateway::{GatewayClient, GatewayError, GatewayRequest, GatewayResponse},
};

/// The durable consumer of order creations, the one that charges.
pub const DURABLE: &str = "payment-service-orders";
/// The durable consumer of cancellations.
pub const CANCELLATIONS_DURABLE: &str = "payment-service-cancellations";
/// The durable consumer of payment failures.
pub const FAILURES_DURABLE: &str = "payment-service-payment-failures";
/// Where the admin API republishes dead letters of order events; received
/// by `payment-service-orders-replays` for all three consumers.
pub const REPLAYS_SUBJECT: &str = "orders.*.*.*.replay";

/// The durable consumers of `ORDERS`, one filter subject each, on exactly
/// the kinds it acts on: creations, cancellations, and failures (declined,
/// which is its own decision and changes nothing, or past the payment
/// deadline, whose charge, if one still lands, is refunded as a cancelled
/// order's is). Confirmations and refunds of orders follow from payment
/// events and reach none of them.
///
/// One durable per kind, not one for `orders.*.*.*` that skips the rest:
/// that one received every `OrderConfirmed` only to ack it, 2 of a saga's
/// broker messages; and not one durable with three filter subjects, which
/// nats-server 2.15 matches by walking the stream's whole per-subject index
/// under the lock appends wait for (`ConsumerSpec::durable`). What it costs:
/// the charge no longer sees a cancellation queued behind the creation on
/// its own consumer, so every charge reads whether the order was cancelled
/// ([`Look::Cancellation`], gathered with the reads of the charges of the
/// moment); and two mostly idle durables (a pull a second each, with their
/// max-deliveries watches). Their replays all go to one durable,
/// `payment-service-orders-replays` ([`REPLAYS_SUBJECT`]).
pub fn consumers() -> [ConsumerSpec; 3] {
    let kind = |durable, event| {
        ConsumerSpec::durable(
            ORDERS_STREAM,
            durable,
            &format!("{ORDERS_PREFIX}.*.*.{event}"),
        )
    };
    [
        kind(DURABLE, "created").with_replays(REPLAYS_SUBJECT),
        kind(CANCELLATIONS_DURABLE, "cancelled").without_replays(),
        kind(FAILURES_DURABLE, "payment-failed").without_replays(),
    ]
}

/// How many times a payment change is re-decided after losing a race.
const MAX_ATTEMPTS: usize = 8;

/// The payment operations shared by the consumer and the gRPC API.
#[derive(Clone)]
pub struct Payments {
    events: PaymentEvents,
    gateway: GatewayClient,
    /// Cancellation subjects of ORDERS, read (never written) before
    /// charging, the reads of concurrent charges gathered into one request.
    cancellations: GatheredReads,
}

/// What a charge reads before calling the gateway (see
/// [`Payments::charge_order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Whether the order was cancelled or failed: a first delivery, whose
    /// cancellation, if any, another consumer receives.
    Cancellation,
    /// The payment and the cancellation: a redelivery or a copy, whose
    /// order may have been handled already.
    PaymentAndCancellation,
}

fn new_payment(order: &order_pb::Order, status: PaymentStatus) -> pb::Payment {
    let created = now();
    pb::Payment {
        payment_id: payment_id_for(&order.order_id).to_string(),
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        amount: order.total.clone(),
        status: status_to_proto(status) as i32,
        create_time: Some(created),
        update_time: Some(created),
        version: 1,
        ..Default::default()
    }
}

fn advance(payment: &pb::Payment, event: PaymentEvent) -> pb::Payment {
    let mut next = payment.clone();
    next.status = status_to_proto(event.status()) as i32;
    next.version = payment.version.saturating_add(1);
    next.update_time = Some(now());
    next
}

impl Payments {
    /// Payment operations over `events`, calling `gateway`.
    pub fn new(events: PaymentEvents, gateway: GatewayClient, js: JetStream) -> Self {
        Self {
            events,
            gateway,
            cancellations: GatheredReads::new(js, ORDERS_STREAM),
        }
    }

    /// Whether the order has been cancelled: a read of its cancellation
    /// subject (an order is cancelled at most once), gathered with those of
    /// the other charges of the moment.
    ///
    /// A cancellation already stored when the `OrderCreated` is handled
    /// would have the charge refunded moments later (its own consumer
    /// handles it at the same time); looking first avoids charging at
    /// all. That is also why the read need not ask the stream's
    /// leader: a replica that has not stored the cancellation yet costs a
    /// charge and its refund, never a payment kept for a cancelled order.
    ///
    /// An order that failed before it was charged (its payment deadline
    /// passed while the payment service was away) is read the same way:
    /// it will never be paid either.
    async fn already_cancelled(&self, order: &order_pb::Order) -> Result<bool, PaymentError> {
        let subject =
            |event| event_subject(ORDERS_PREFIX, &order.customer_id, &order.order_id, event);
        let (cancelled, failed) = (subject("cancelled"), subject("payment-failed"));
        let (cancelled, failed) = tokio::try_join!(
            self.cancellations.last(&cancelled),
            self.cancellations.last(&failed)
        )?;
        Ok(cancelled.is_some() || failed.is_some())
    }

    /// The event store.
    pub fn events(&self) -> &PaymentEvents {
        &self.events
    }

    /// Calls the gateway under a CLIENT span, recording duration and outcome.
    async fn call(&self, request: GatewayRequest) -> Result<GatewayResponse, GatewayError> {
        let (operation, key) = match &request {
            GatewayRequest::Charge {
                idempotency_key, ..
            } => ("charge", idempotency_key.clone()),
            GatewayRequest::Refund {
                idempotency_key, ..
            } => ("refund", idempotency_key.clone()),
            GatewayRequest::Lookup { idempotency_key } => ("lookup", idempotency_key.clone()),
        };
        let span = tracing::info_span!(
            "gateway.call",
            otel.name = %format!("gateway {operation}"),
            otel.kind = "client",
            orderflow.gateway.operation = operation,
            orderflow.gateway.idempotency_key = %key,
            orderflow.gateway.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .gateway
            .clone()
            .oneshot(request)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(GatewayResponse::Charged { .. }) => "charged",
            Ok(GatewayResponse::Declined { .. }) => "declined",
            Ok(GatewayResponse::Refunded { .. }) => "refunded",
            Ok(GatewayResponse::NotCharged) => "not_charged",
            Err(GatewayError::Transient(_)) => "transient",
            Err(GatewayError::Timeout(_)) => "timeout",
            Err(GatewayError::CircuitOpen(_)) => "circuit_open",
            Err(GatewayError::Rejected(_)) => "rejected",
        };
        span.record("orderflow.gateway.outcome", outcome);
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", outcome);
        }
        crate::metrics::metrics().gateway_duration.record(
            started.elapsed().as_secs_f64(),
            &[
                opentelemetry::KeyValue::new("orderflow.gateway.operation", operation),
                opentelemetry::KeyValue::new("orderflow.gateway.outcome", outcome),
            ],
        );
        result
    }

    /// Charges a created order once and records the result.
    ///
    /// `look` says what is read first. The payment is read only for a
    /// delivery whose order may have been handled before (a redelivery or a
    /// copy); on a first delivery a payment can exist only when a creation
    /// was published twice outside the de-duplication window, and then the
    /// gateway answers the repeated idempotency key with the first charge
    /// and the append loses to the stored payment: nothing is charged twice.
    pub async fn charge_order(
        &self,
        order: &order_pb::Order,
        look: Look,
    ) -> Result<(), PaymentError> {
        let payment_id = payment_id_for(&order.order_id).to_string();
        let cancelled = match look {
            Look::Cancellation => {
                tracing::debug!(order_id = %order.order_id, "looking at the cancellation before charging");
                self.already_cancelled(order).await?
            }
            Look::PaymentAndCancellation => {
                tracing::debug!(order_id = %order.order_id, "looking at the payment and the cancellation before charging");
                // Two streams, two independent reads: at once.
                let (existing, cancelled) = tokio::try_join!(
                    self.events.load_owned(&order.customer_id, &payment_id),
                    self.already_cancelled(order),
                )?;
                match on_order_created(existing.map(|c| c.status)) {
                    OnCreated::Charge => cancelled,
                    OnCreated::Nothing => return Ok(()),
                    OnCreated::RefundAnyUnrecordedCharge => {
                        return self.refund_any_unrecorded_charge(order).await;
                    }
                }
            }
        };
        if cancelled {
            let payment = new_payment(order, PaymentStatus::Voided);
            match self.events.append(PaymentEvent::Voided, &payment, 0).await {
                Ok(_) | Err(AppendError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            // A first delivery knows nothing was charged for this order. A
            // redelivery does not: an earlier delivery may have charged and
            // died before recording it, then the cancellation was stored
            // before its own handling voided the payment (found by the
            // nemesis with a paused gateway answering queued charges late).
            return match look {
                Look::PaymentAndCancellation => self.refund_any_unrecorded_charge(order).await,
                Look::Cancellation => Ok(()),
            };
        }
        let amount = amount_of(order, &payment_id)?;
        let answer = self
            .call(GatewayRequest::Charge {
                idempotency_key: charge_key(&order.order_id),
                amount,
            })
            .await?;
        let (event, payment) = match &answer {
            GatewayResponse::Charged { reference } => {
                let mut payment = new_payment(order, PaymentStatus::Authorized);
                payment.gateway_reference = reference.clone();
                (PaymentEvent::Authorized, payment)
            }
            GatewayResponse::Declined { reason } => {
                let mut payment = new_payment(order, PaymentStatus::Declined);
                payment.decline_reason = reason.clone();
                (PaymentEvent::Declined, payment)
            }
            GatewayResponse::Refunded { .. } | GatewayResponse::NotCharged => {
                return Err(GatewayError::Rejected(format!(
                    "the gateway answered a charge with {answer:?}"
                ))
                .into());
            }
        };
        match self.events.append(event, &payment, 0).await {
            Ok(_) => {
                // Per payment, so at DEBUG: traces and the status-change
                // counter carry it; a line per payment cost measurable CPU.
                tracing::debug!(order_id = %order.order_id, %payment_id, ?event, "payment decided");
                Ok(())
            }
            Err(AppendError::Conflict { .. }) => self.after_lost_race(&payment, &answer).await,
            Err(error) => Err(error.into()),
        }
    }

    /// The payment was voided (the cancellation came first), but an earlier
    /// delivery of the creation may have charged and died before recording
    /// it. The gateway is asked what the charge's idempotency key did,
    /// without charging; a charge it answers is refunded.
    async fn refund_any_unrecorded_charge(
        &self,
        order: &order_pb::Order,
    ) -> Result<(), PaymentError> {
        let payment = new_payment(order, PaymentStatus::Voided);
        let answer = self
            .call(GatewayRequest::Lookup {
                idempotency_key: charge_key(&order.order_id),
            })
            .await?;
        self.after_lost_race(&payment, &answer).await
    }

    /// Another writer decided the payment while we charged. When that was a
    /// cancellation (voided) and we did charge, the charge is refunded now.
    async fn after_lost_race(
        &self,
        ours: &pb::Payment,
        answer: &GatewayResponse,
    ) -> Result<(), PaymentError> {
        let current = self
            .events
            .load_owned(&ours.customer_id, &ours.payment_id)
            .await?
            .ok_or_else(|| PaymentError::Vanished(ours.payment_id.clone()))?;
        if let (PaymentStatus::Voided, GatewayResponse::Charged { reference }) =
            (current.status, answer)
        {
            tracing::warn!(payment_id = %ours.payment_id, "a charge raced the order's cancellation; refunding it");
            let mut charged = current.clone();
            charged.payment.gateway_reference = reference.clone();
            charged.status = PaymentStatus::Authorized;
            self.refund_current(charged).await?;
        }
        Ok(())
    }

    /// Gives back what a cancelled order paid, or voids its payment.
    pub async fn cancel_order(&self, order: &order_pb::Order) -> Result<(), PaymentError> {
        let payment_id = payment_id_for(&order.order_id).to_string();
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .events
                .load_owned(&order.customer_id, &payment_id)
                .await?;
            let status = current.as_ref().map(|c| c.status);
            let result = match (on_order_cancelled(status), current) {
                (OnCancelled::Nothing, _) => return Ok(()),
                (OnCancelled::Void, _) => {
                    let payment = new_payment(order, PaymentStatus::Voided);
                    self.events
                        .append(PaymentEvent::Voided, &payment, 0)
                        .await
                        .map(|_| ())
                }
                (OnCancelled::Refund, Some(current)) => match self.refund_current(current).await {
                    Err(PaymentError::Contended(_)) => continue,
                    other => return other.map(|_| ()),
                },
                (OnCancelled::Refund, None) => return Ok(()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(AppendError::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(PaymentError::Contended(payment_id))
    }

    /// Refunds a payment by id (the RefundPayment RPC).
    pub async fn refund_payment(&self, payment_id: &str) -> Result<pb::Payment, PaymentError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .events
                .load(payment_id)
                .await?
                .ok_or_else(|| PaymentError::NotFound(payment_id.to_owned()))?;
            match self.refund_current(current).await {
                Err(PaymentError::Contended(_)) => continue,
                other => return other,
            }
        }
        Err(PaymentError::Contended(payment_id.to_owned()))
    }

    /// Refunds `current` at the gateway and records it; `Contended` when the
    /// payment changed meanwhile (the caller re-reads).
    async fn refund_current(&self, current: Current) -> Result<pb::Payment, PaymentError> {
        let payment = current.payment;
        match refund(current.status) {
            Ok(false) => return Ok(payment),
            Ok(true) => {}
            Err(refused) => {
                return Err(PaymentError::FailedPrecondition(format!(
                    "payment {}: {refused}",
                    payment.payment_id
                )));
            }
        }
        let answer = self
            .call(GatewayRequest::Refund {
                idempotency_key: refund_key(&payment.order_id),
                charge_reference: payment.gateway_reference.clone(),
            })
            .await?;
        let GatewayResponse::Refunded { reference } = answer else {
            return Err(GatewayError::Rejected(String::from(
                "the gateway did not answer a refund with a refund",
            ))
            .into());
        };
        let mut next = advance(&payment, PaymentEvent::Refunded);
        next.refund_reference = reference;
        match self
            .events
            .append(PaymentEvent::Refunded, &next, current.sequence)
            .await
        {
            Ok(_) => {
                tracing::info!(payment_id = %payment.payment_id, "payment refunded");
                Ok(next)
            }
            Err(AppendError::Conflict { .. }) => {
                Err(PaymentError::Contended(payment.payment_id.clone()))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// What `order` costs, checked: a corrupt total is never charged.
fn amount_of(order: &order_pb::Order, payment_id: &str) -> Result<Money, PaymentError> {
    let corrupt = |reason: String| PaymentError::Corrupt {
        payment_id: payment_id.to_owned(),
        reason,
    };
    let total = order
        .total
        .as_ref()
        .ok_or_else(|| corrupt(format!("order {} has no total", order.order_id)))?;
    let amount = Money::new(&total.currency_code, total.units, total.nanos).map_err(|e| {
        corrupt(format!(
            "order {} has an invalid total: {e}",
            order.order_id
        ))
    })?;
    // Orders are never free or negative (`NewOrder::parse`); charging such
    // a "total" would pay money out.
    if !amount.is_positive() {
        return Err(corrupt(format!(
            "order {} has a total of {amount}",
            order.order_id
        )));
    }
    Ok(amount)
}

/// The consumer's handler: charges each created order and refunds or voids
/// each cancelled one, through [`Payments`]. Each of its consumers
/// ([`consumers`]) has a copy; they share the payments and the breaker.
#[derive(Clone)]
pub struct ChargeOnOrderEvents {
    payments: Payments,
    breaker: Breaker,
    /// How long one delivery may wait for an open breaker before it is
    /// handed back to JetStream (see [`ChargeOnOrderEvents::through_breaker`]).
    hold: Duration,
    /// Ends such waits at once when the service shuts down.
    shutdown: CancellationToken,
}

impl ChargeOnOrderEvents {
    /// A handler using `payments`; it pulls nothing while `breaker` is open.
    pub fn new(payments: Payments, breaker: Breaker) -> Self {
        Self {
            payments,
            breaker,
            hold: Duration::ZERO,
            shutdown: CancellationToken::new(),
        }
    }

    /// Lets a message whose gateway call met an open breaker wait for the
    /// breaker for up to `hold` (keep it well below the consumer's ack wait)
    /// instead of going back to JetStream at once, and no longer than
    /// `shutdown`.
    pub fn holding(mut self, hold: Duration, shutdown: CancellationToken) -> Self {
        self.hold = hold;
        self.shutdown = shutdown;
        self
    }

    /// Runs `attempt` (a charge or a cancellation) and runs it again while it
    /// fails only because the breaker is open, waiting for the breaker in
    /// between, for at most `hold` in all or until shutdown. Any other result,
    /// and the last `CircuitOpen`, is returned as it is.
    ///
    /// Without this, every message that met the open breaker was NAKed for
    /// the breaker's cool-down, and each of those redeliveries counts towards
    /// `max_deliver`: messages pulled in one batch (up to 128) came back
    /// within the same pull and burned a delivery on every breaker cycle, so
    /// a gateway failing for ten cycles (two seconds with a 200 ms cool-down)
    /// dead-lettered orders that only had to wait. Held here, a message
    /// loses no delivery while the breaker is open; the breaker's half-open
    /// probe still lets one call through at a time.
    async fn through_breaker<F, Fut>(&self, mut attempt: F) -> Result<(), PaymentError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), PaymentError>>,
    {
        let deadline = tokio::time::Instant::now() + self.hold;
        loop {
            let result = attempt().await;
            if !matches!(
                result,
                Err(PaymentError::Gateway(GatewayError::CircuitOpen(_)))
            ) {
                return result;
            }
            let breaker_admits = tokio::select! {
                _ = self.shutdown.cancelled() => false,
                _ = tokio::time::sleep_until(deadline) => false,
                _ = self.breaker.wait_closed() => true,
            };
            if !breaker_admits || tokio::time::Instant::now() >= deadline {
                return result;
            }
        }
    }
}

fn outcome(result: Result<(), PaymentError>, delivered: i64) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(PaymentError::Gateway(GatewayError::CircuitOpen(open))) => Outcome::Retry {
            after: open.retry_after.max(Duration::from_millis(100)),
            reason: open.to_string(),
        },
        Err(
            error @ (PaymentError::Gateway(GatewayError::Transient(_) | GatewayError::Timeout(_))
            | PaymentError::Store(
                StoreError::Load(_) | StoreError::Index(_) | StoreError::Append(_),
            )
            | PaymentError::Vanished(_)
            | PaymentError::Contended(_)),
        ) => Outcome::backing_off(delivered, error.to_string()),
        Err(error) => Outcome::Reject {
            reason: error.to_string(),
        },
    }
}

/// Why `order` cannot be one the order service wrote.
fn check_order_identity(order: &order_pb::Order) -> Result<(), String> {
    identity::require_uuid("an order id", &order.order_id)
        .and_then(|()| identity::require_owner("a customer id", &order.customer_id))
        .map_err(|reason| format!("the order event carries {reason}"))
}

impl EventHandler for ChargeOnOrderEvents {
    /// Confirmations and refunds of orders follow from our own payment
    /// events: nothing to do.
    fn skips(&self, ce_type: &str) -> bool {
        names::<OrderConfirmed>(ce_type) || names::<OrderRefunded>(ce_type)
    }

    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        let delivered = event.delivered;
        // A replayed dead letter is a repeat by definition, and so is a copy
        // of an event of orderflow 0.1 (`migrate-subjects`): the payment and
        // a cancellation are looked at before charging (see `charge_order`).
        let repeat = event.is_copy();
        let order = if event.is::<OrderCreated>() {
            event.decode::<OrderCreated>().map(|e| (e.order, true))
        } else if event.is::<OrderCancelled>() {
            event.decode::<OrderCancelled>().map(|e| (e.order, false))
        } else if event.is::<OrderPaymentFailed>() {
            // Declined (the payment says so, and nothing changes) or past
            // its deadline: voided when not charged yet, refunded when a
            // charge landed, exactly as a cancellation.
            event
                .decode::<OrderPaymentFailed>()
                .map(|e| (e.order, false))
        } else {
            // Confirmations and refunds never get here (`skips`).
            return Outcome::Reject {
                reason: format!(
                    "unknown order event type {:?}",
                    event.ce_type().unwrap_or("(no ce-type header)")
                ),
            };
        };
        // Orders have canonical ids and valid customer ids; an event with
        // others is no order's, and no retry will make it one.
        if let Ok((Some(order), _)) = &order
            && let Err(reason) = check_order_identity(order)
        {
            return Outcome::Reject { reason };
        }
        match order {
            Ok((Some(order), true)) => {
                let look = if repeat || delivered > 1 {
                    Look::PaymentAndCancellation
                } else {
                    Look::Cancellation
                };
                outcome(
                    self.through_breaker(|| self.payments.charge_order(&order, look))
                        .await,
                    delivered,
                )
            }
            Ok((Some(order), false)) => outcome(
                self.through_breaker(|| self.payments.cancel_order(&order))
                    .await,
                delivered,
            ),
            Ok((None, _)) => Outcome::Reject {
                reason: String::from("the order event carries no order"),
            },
            Err(error) => Outcome::Reject {
                reason: error.to_string(),
            },
        }
    }

    async fn ready(&self) {
        self.breaker.wait_closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_consumer_receives_one_kind_it_acts_on_and_no_confirmation() {
        let specs = consumers();
        let filters: Vec<&[String]> = specs.iter().map(|s| s.filter_subjects.as_slice()).collect();
        assert_eq!(
            filters,
            [
                ["orders.*.*.created"],
                ["orders.*.*.cancelled"],
                ["orders.*.*.payment-failed"]
            ]
        );
        let names: Vec<&str> = specs.iter().map(|s| s.durable.as_str()).collect();
        assert_eq!(names, [DURABLE, CANCELLATIONS_DURABLE, FAILURES_DURABLE]);
        // One durable takes the replays of all three; the others have none.
        let replays: Vec<Option<ConsumerSpec>> = specs.iter().map(ConsumerSpec::replays).collect();
        let Some(all) = &replays[0] else {
            panic!("the creations' consumer has the replays' durable");
        };
        assert_eq!(all.durable, "payment-service-orders-replays");
        assert_eq!(all.filter_subjects, [REPLAYS_SUBJECT]);
        assert!(replays[1].is_none() && replays[2].is_none());
    }
}
