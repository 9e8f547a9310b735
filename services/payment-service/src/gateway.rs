//! The payment gateway: what the payment service asks of it, the built-in
//! simulated gateway, and the resilient client every call goes through.
//!
//! The gateway is a `tower::Service<GatewayRequest>`, so a real gateway plugs
//! in by implementing that one trait. Whatever the gateway, calls pass through
//! the same stack (outermost first):
//!
//! 1. the circuit breaker — outermost, so one logical call counts once, and an
//!    open breaker short-circuits the retries below it;
//! 2. bounded retries of transient errors and timeouts, with doubling delays;
//! 3. a per-attempt timeout, so one hung attempt cannot eat the ack wait.
//!
//! Every request carries an idempotency key (the order id), so a retried or
//! redelivered charge is the same charge at the gateway.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use orderflow_money::Money;
use tower::{BoxError, ServiceBuilder, retry::Policy, util::BoxCloneSyncService};

use crate::{
    breaker::{Breaker, BreakerLayer, BreakerOpen, FailurePolicy},
    config::{ResilienceConfig, SimulatorConfig},
};

/// A call to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayRequest {
    /// Charge `amount`; a repeated key returns the first result.
    Charge {
        /// The idempotency key (the order id).
        idempotency_key: String,
        /// The amount to charge.
        amount: Money,
    },
    /// Refund a charge; a repeated key returns the first result.
    Refund {
        /// The idempotency key.
        idempotency_key: String,
        /// The gateway's reference of the charge.
        charge_reference: String,
    },
    /// What the charge under a key answered, without charging: for a
    /// caller that cannot tell whether an earlier call of its own charged.
    Lookup {
        /// The charge's idempotency key.
        idempotency_key: String,
    },
}

/// The gateway's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayResponse {
    /// The charge was authorized.
    Charged {
        /// The gateway's reference of the charge.
        reference: String,
    },
    /// The charge was declined; it will not pass on retry.
    Declined {
        /// Why.
        reason: String,
    },
    /// The charge was refunded.
    Refunded {
        /// The gateway's reference of the refund.
        reference: String,
    },
    /// A lookup found no charge under its key.
    NotCharged,
}

/// Why a gateway call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A failure that may pass (network, gateway overload).
    #[error("gateway transient failure: {0}")]
    Transient(String),
    /// An attempt took longer than the timeout.
    #[error("gateway call timed out after {0:?}")]
    Timeout(Duration),
    /// The breaker is open; the gateway was not called.
    #[error(transparent)]
    CircuitOpen(#[from] BreakerOpen),
    /// The gateway refused the request for good (e.g. unknown charge).
    #[error("gateway rejected the request: {0}")]
    Rejected(String),
}

/// The resilient gateway client the service uses.
pub type GatewayClient = BoxCloneSyncService<GatewayRequest, GatewayResponse, GatewayError>;

/// Transient errors and timeouts open the breaker; declines and rejections
/// are the gateway working as intended.
#[derive(Clone, Copy, Debug)]
struct GatewayFailures;

impl FailurePolicy<GatewayError> for GatewayFailures {
    fn is_failure(&self, error: &GatewayError) -> bool {
        matches!(error, GatewayError::Transient(_) | GatewayError::Timeout(_))
    }
}

/// Retries transient errors and timeouts, `remaining` attempts in all.
#[derive(Clone, Debug)]
struct RetryTransient {
    remaining: u32,
    delay: Duration,
}

impl Policy<GatewayRequest, GatewayResponse, GatewayError> for RetryTransient {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut GatewayRequest,
        result: &mut Result<GatewayResponse, GatewayError>,
    ) -> Option<Self::Future> {
        match result {
            Err(GatewayError::Transient(_) | GatewayError::Timeout(_)) if self.remaining > 1 => {
                self.remaining -= 1;
                let delay = self.delay;
                self.delay = self.delay.saturating_mul(2);
                Some(tokio::time::sleep(delay))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &GatewayRequest) -> Option<GatewayRequest> {
        Some(request.clone())
    }
}

/// Wraps `gateway` in the breaker, retry and timeout stack.
pub fn resilient<S>(gateway: S, config: &ResilienceConfig, breaker: Breaker) -> GatewayClient
where
    S: tower::Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let timeout = config.timeout;
    let stack = ServiceBuilder::new()
        .layer(BreakerLayer::new(breaker, GatewayFailures))
        .layer(tower::retry::RetryLayer::new(RetryTransient {
            remaining: config.max_attempts,
            delay: Duration::from_millis(50),
        }))
        // tower's timeout boxes errors; give them their type back.
        .map_err(
            move |error: BoxError| match error.downcast::<GatewayError>() {
                Ok(error) => *error,
                Err(_) => GatewayError::Timeout(timeout),
            },
        )
        .timeout(timeout)
        .service(gateway);
    BoxCloneSyncService::new(stack)
}

/// Counters of the simulated gateway, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// Calls received (including failed and repeated ones).
    pub calls: u64,
    /// Distinct charges made (a repeated idempotency key makes none).
    pub charges: u64,
    /// Distinct refunds made.
    pub refunds: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    charges: HashMap<String, GatewayResponse>,
    refunds: HashMap<String, GatewayResponse>,
}

#[derive(Debug)]
struct Simulator {
    config: SimulatorConfig,
    ledger: Mutex<Ledger>,
    calls: AtomicU64,
    charges: AtomicU64,
    refunds: AtomicU64,
}

/// The built-in simulated gateway.
///
/// It declines charges above `SIM_DECLINE_ABOVE_UNITS`, waits
/// `SIM_LATENCY_MS`, fails `SIM_FAILURE_RATE` of calls transiently, and
/// honours idempotency keys as real gateways do: a repeated key returns the
/// first result and charges nothing more. Clones share one ledger, as two
/// service replicas share one real gateway.
#[derive(Clone, Debug)]
pub struct SimulatedGateway {
    inner: Arc<Simulator>,
}

impl SimulatedGateway {
    /// A simulator with `config`.
    pub fn new(config: SimulatorConfig) -> Self {
        Self {
            inner: Arc::new(Simulator {
                config,
                ledger: Mutex::new(Ledger::default()),
                calls: AtomicU64::new(0),
                charges: AtomicU64::new(0),
                refunds: AtomicU64::new(0),
            }),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> SimulatorStats {
        SimulatorStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            charges: self.inner.charges.load(Ordering::Relaxed),
            refunds: self.inner.refunds.load(Ordering::Relaxed),
        }
    }

    /// Whether a charge was made under `idempotency_key`.
    pub fn charged(&self, idempotency_key: &str) -> bool {
        self.inner
            .ledger
            .lock()
            .map(|l| {
                matches!(
                    l.charges.get(idempotency_key),
                    Some(GatewayResponse::Charged { .. })
                )
            })
            .unwrap_or(false)
    }
}

/// A uniform random number in [0, 1), from the OS generator behind UUIDv4
/// (no extra dependency for a fault simulator).
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

impl Simulator {
    fn answer(&self, request: GatewayRequest) -> Result<GatewayResponse, GatewayError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.config.failure_rate > 0.0 && unit_random() < self.config.failure_rate {
            return Err(GatewayError::Transient(String::from(
                "simulated transient failure (SIM_FAILURE_RATE)",
            )));
        }
        let mut ledger = self
            .ledger
            .lock()
            .map_err(|_| GatewayError::Transient(String::from("simulator ledger unavailable")))?;
        match request {
            GatewayRequest::Charge {
                idempotency_key,
                amount,
            } => {
                if let Some(first) = ledger.charges.get(&idempotency_key) {
                    return Ok(first.clone());
                }
                let response = if amount.exceeds_units(self.config.decline_above_units) {
                    GatewayResponse::Declined {
                        reason: format!(
                            "amount {amount} is above the limit of {} units",
                            self.config.decline_above_units
                        ),
                    }
                } else {
                    self.charges.fetch_add(1, Ordering::Relaxed);
                    GatewayResponse::Charged {
                        reference: format!("sim_ch_{}", uuid::Uuid::new_v4().simple()),
                    }
                };
                ledger.charges.insert(idempotency_key, response.clone());
                Ok(response)
            }
            GatewayRequest::Refund {
                idempotency_key,
                charge_reference,
            } => {
                if let Some(first) = ledger.refunds.get(&idempotency_key) {
                    return Ok(first.clone());
                }
                let known = ledger.charges.values().any(
                    |c| matches!(c, GatewayResponse::Charged { reference } if *reference == charge_reference),
                );
                if !known {
                    return Err(GatewayError::Rejected(format!(
                        "no charge {charge_reference} to refund"
                    )));
                }
                self.refunds.fetch_add(1, Ordering::Relaxed);
                let response = GatewayResponse::Refunded {
                    reference: format!("sim_re_{}", uuid::Uuid::new_v4().simple()),
                };
                ledger.refunds.insert(idempotency_key, response.clone());
                Ok(response)
            }
            GatewayRequest::Lookup { idempotency_key } => Ok(ledger
                .charges
                .get(&idempotency_key)
                .cloned()
                .unwrap_or(GatewayResponse::NotCharged)),
        }
    }
}

impl tower::Service<GatewayRequest> for SimulatedGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if !inner.config.latency.is_zero() {
                tokio::time::sleep(inner.config.latency).await;
            }
            inner.answer(request)
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    fn sim(failure_rate: f64, latency_ms: u64) -> SimulatedGateway {
        SimulatedGateway::new(SimulatorConfig {
            decline_above_units: 100,
            latency: Duration::from_millis(latency_ms),
            failure_rate,
        })
    }

    fn resilience(attempts: u32, timeout_ms: u64) -> ResilienceConfig {
        ResilienceConfig {
            timeout: Duration::from_millis(timeout_ms),
            max_attempts: attempts,
            breaker_failures: 2,
            breaker_open: Duration::from_secs(60),
        }
    }

    fn charge(key: &str, units: i64) -> Result<GatewayRequest, orderflow_money::MoneyError> {
        Ok(GatewayRequest::Charge {
            idempotency_key: key.into(),
            amount: Money::new("EUR", units, 0)?,
        })
    }

    #[tokio::test]
    async fn the_same_key_charges_once() -> Result<(), Box<dyn std::error::Error>> {
        let gateway = sim(0.0, 0);
        let first = gateway.clone().oneshot(charge("o-1", 10)?).await?;
        let again = gateway.clone().oneshot(charge("o-1", 10)?).await?;
        assert_eq!(first, again);
        assert_eq!(gateway.stats().charges, 1);
        assert!(gateway.charged("o-1"));
        Ok(())
    }

    #[tokio::test]
    async fn charges_above_the_limit_are_declined() -> Result<(), Box<dyn std::error::Error>> {
        let gateway = sim(0.0, 0);
        let answer = gateway.clone().oneshot(charge("o-2", 101)?).await?;
        assert!(matches!(answer, GatewayResponse::Declined { .. }));
        assert_eq!(gateway.stats().charges, 0);
        Ok(())
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_open_the_breaker()
    -> Result<(), Box<dyn std::error::Error>> {
        let gateway = sim(1.0, 0);
        let breaker = Breaker::new(2, Duration::from_secs(60));
        let client = resilient(gateway.clone(), &resilience(3, 1000), breaker.clone());
        for _ in 0..2 {
            let result = client.clone().oneshot(charge("o-3", 1)?).await;
            assert!(matches!(result, Err(GatewayError::Transient(_))));
        }
        assert_eq!(gateway.stats().calls, 6, "three attempts per call");
        let result = client.clone().oneshot(charge("o-3", 1)?).await;
        assert!(matches!(result, Err(GatewayError::CircuitOpen(_))));
        assert_eq!(gateway.stats().calls, 6, "an open breaker does not call");
        Ok(())
    }

    #[tokio::test]
    async fn slow_attempts_time_out() -> Result<(), Box<dyn std::error::Error>> {
        let client = resilient(
            sim(0.0, 200),
            &resilience(2, 20),
            Breaker::new(10, Duration::from_secs(1)),
        );
        let result = client.oneshot(charge("o-4", 1)?).await;
        assert_eq!(
            result,
            Err(GatewayError::Timeout(Duration::from_millis(20)))
        );
        Ok(())
    }

    #[tokio::test]
    async fn refunds_need_a_known_charge() -> Result<(), Box<dyn std::error::Error>> {
        let gateway = sim(0.0, 0);
        let GatewayResponse::Charged { reference } =
            gateway.clone().oneshot(charge("o-5", 1)?).await?
        else {
            panic!("not charged")
        };
        let refund = |key: &str, reference: &str| GatewayRequest::Refund {
            idempotency_key: key.into(),
            charge_reference: reference.into(),
        };
        let first = gateway.clone().oneshot(refund("r-5", &reference)).await?;
        let again = gateway.clone().oneshot(refund("r-5", &reference)).await?;
        assert_eq!(first, again);
        assert_eq!(gateway.stats().refunds, 1);
        let unknown = gateway.clone().oneshot(refund("r-6", "nope")).await;
        assert!(matches!(unknown, Err(GatewayError::Rejected(_))));
        Ok(())
    }
}
