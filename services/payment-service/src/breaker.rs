//! A circuit breaker as a tower layer.
//!
//! Written here rather than taken from `tower-resilience` (whose
//! circuit-breaker layer targets tower 0.5): that one opens on a failure
//! rate over a sliding window and takes an async mutex on every call, and it
//! reports its state through a handle and a transition callback, so the
//! consumer's wait for a closed breaker would still be ours to build around
//! it, for a policy the fault tests pin in its present form. Tower itself has
//! timeouts and retries, not breakers. This one counts
//! consecutive failed calls (errors the policy deems the gateway's fault, not
//! declines); at the threshold it opens and rejects calls at once for a
//! cool-down, then lets a single probe through (half-open): a success closes
//! it, a failure opens it again.
//!
//! The consumer asks [`Breaker::wait_closed`] before pulling messages, so an
//! open breaker leaves messages in the stream (delayed) instead of burning
//! their deliveries.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; `failures` consecutive failures so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Calls are rejected until `until`.
    Open {
        /// When one probe may go through.
        until: Instant,
    },
    /// One probe is in flight; other calls are rejected.
    HalfOpen,
}

impl BreakerState {
    /// The state as the gauge `orderflow.gateway.breaker.state` reports it:
    /// 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> u64 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open { .. } => 2,
        }
    }
}

/// An error the breaker returns instead of calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open: the gateway failed repeatedly; retry in {retry_after:?}")]
pub struct BreakerOpen {
    /// When trying again makes sense.
    pub retry_after: Duration,
}

/// A shared circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    state: Arc<Mutex<BreakerState>>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures and
    /// stays open for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(BreakerState::Closed { failures: 0 })),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // The state is a plain value: a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    /// Admits a call, or says how long to wait.
    fn admit(&self) -> Result<(), BreakerOpen> {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = BreakerState::HalfOpen;
                    tracing::info!("circuit breaker half-open: probing the gateway");
                    crate::metrics::metrics().breaker_transitions.add(
                        1,
                        &[opentelemetry::KeyValue::new(
                            "orderflow.breaker.state",
                            "half_open",
                        )],
                    );
                    Ok(())
                } else {
                    Err(BreakerOpen {
                        retry_after: until - now,
                    })
                }
            }
            BreakerState::HalfOpen => Err(BreakerOpen {
                retry_after: self.open_for.min(Duration::from_secs(1)),
            }),
        }
    }

    fn record(&self, failed: bool) {
        let mut state = self.lock();
        let next = match (*state, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, true) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => BreakerState::Open {
                until: Instant::now() + self.open_for,
            },
        };
        let transitions = &crate::metrics::metrics().breaker_transitions;
        match (*state, next) {
            (BreakerState::Closed { .. } | BreakerState::HalfOpen, BreakerState::Open { .. }) => {
                tracing::warn!(cooldown = ?self.open_for, "circuit breaker opened: the gateway keeps failing");
                transitions.add(
                    1,
                    &[opentelemetry::KeyValue::new(
                        "orderflow.breaker.state",
                        "open",
                    )],
                );
            }
            (BreakerState::HalfOpen | BreakerState::Open { .. }, BreakerState::Closed { .. }) => {
                tracing::info!("circuit breaker closed: the gateway answers again");
                transitions.add(
                    1,
                    &[opentelemetry::KeyValue::new(
                        "orderflow.breaker.state",
                        "closed",
                    )],
                );
            }
            _ => {}
        }
        *state = next;
    }

    /// Resolves once a call would be admitted (closed, or open long enough
    /// for a probe).
    pub async fn wait_closed(&self) {
        loop {
            let wait = match self.state() {
                BreakerState::Closed { .. } => return,
                BreakerState::Open { until } => until.saturating_duration_since(Instant::now()),
                BreakerState::HalfOpen => Duration::from_millis(50),
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Decides which errors count as gateway failures.
pub trait FailurePolicy<E>: Clone + Send + Sync + 'static {
    /// Whether `error` means the gateway is unhealthy.
    fn is_failure(&self, error: &E) -> bool;
}

/// Tower layer applying a [`Breaker`].
#[derive(Clone, Debug)]
pub struct BreakerLayer<P> {
    breaker: Breaker,
    policy: P,
}

impl<P> BreakerLayer<P> {
    /// A layer sharing `breaker`.
    pub fn new(breaker: Breaker, policy: P) -> Self {
        Self { breaker, policy }
    }
}

impl<S, P: Clone> tower::Layer<S> for BreakerLayer<P> {
    type Service = BreakerService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct BreakerService<S, P> {
    inner: S,
    breaker: Breaker,
    policy: P,
}

impl<S, P, R> tower::Service<R> for BreakerService<S, P>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
    S::Error: From<BreakerOpen>,
    P: FailurePolicy<S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        if let Err(open) = self.breaker.admit() {
            return Box::pin(async move { Err(open.into()) });
        }
        let future = self.inner.call(request);
        let breaker = self.breaker.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let result = future.await;
            breaker.record(matches!(&result, Err(e) if policy.is_failure(e)));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        assert!(breaker.admit().is_ok());
        breaker.record(true);
        assert!(matches!(
            breaker.state(),
            BreakerState::Closed { failures: 1 }
        ));
        breaker.record(true);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert!(breaker.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.admit().is_ok(),
            "a probe is admitted after the cool-down"
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.admit().is_err(), "only one probe at a time");
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_failed_probe_opens_again_and_success_resets_the_count() {
        let breaker = Breaker::new(3, Duration::ZERO);
        breaker.record(true);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        for _ in 0..3 {
            breaker.record(true);
        }
        assert!(breaker.admit().is_ok());
        breaker.record(true);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }
}
