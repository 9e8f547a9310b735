//! How a service stops: SIGTERM and SIGINT turned into one cancellation
//! token, and [`Shutdown`], the one object that runs the phases after it.
//!
//! The phases, in order:
//!
//! 1. **Requested** (the token is cancelled): health reports NOT_SERVING
//!    and consumers stop pulling; both watch [`Shutdown::requested`].
//! 2. **Drain delay** (`SHUTDOWN_DELAY_SECS`): the servers still answer
//!    calls, so load balancers stop routing to the replica first.
//! 3. **Stop accepting**: [`Shutdown::stop_accepting`] resolves; the servers
//!    accept no new call and finish the ones in flight.
//! 4. **Settle**: the workers ([`Shutdown::spawn`]: consumers, the health
//!    watch) finish what they hold, for at most `SHUTDOWN_TIMEOUT_SECS`;
//!    JetStream redelivers what they did not.
//! 5. **Drain NATS**: every ack and publish reaches the server before the
//!    process exits.
//! 6. **Flush telemetry** ([`Shutdown::finish`]): queued spans, a last
//!    metrics collection and the queued log records reach the collector.
//!
//! Phases 1 to 5 run when the service served ([`Shutdown::run`]); phase 6
//! runs on every way out of `main` once telemetry is up — after a failed
//! start-up and after `migrate-subjects` too — and after the line that says
//! how the process ends, so that line is exported with the rest.
use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crate::{service_config::CommonConfig, telemetry::Telemetry};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

/// A service's way from a stop request to flushed telemetry.
///
/// Built by `main` before the service starts, and passed to it; what must
/// react to a phase gets it from here: the servers
/// [`stop_accepting`](Self::stop_accepting), the health watch, the
/// consumers and the order watches [`requested`](Self::requested) (the
/// first two run as workers, [`spawn`](Self::spawn)), [`run`](Self::run)
/// drives phases 1 to 5 around the servers, and [`finish`](Self::finish)
/// is the last thing `main` does.
///
/// Clones share the phases: the one `main` keeps flushes what the one the
/// service was given exported.
#[derive(Clone)]
pub struct Shutdown {
    requested: CancellationToken,
    stop_accepting: CancellationToken,
    delay: Duration,
    grace: Duration,
    workers: TaskTracker,
    /// Taken by the first [`finish`](Self::finish); a mutex only so that
    /// clones can be sent to other tasks (it is never contended).
    telemetry: Arc<Mutex<Option<Telemetry>>>,
}

impl Shutdown {
    /// The shutdown that starts when `requested` is cancelled: the servers
    /// keep answering for `delay`, and the workers get `grace` to settle.
    pub fn new(requested: CancellationToken, delay: Duration, grace: Duration) -> Self {
        Self {
            requested,
            stop_accepting: CancellationToken::new(),
            delay,
            grace,
            workers: TaskTracker::new(),
            telemetry: Arc::default(),
        }
    }

    /// The shutdown `common` configures (`SHUTDOWN_DELAY_SECS`,
    /// `SHUTDOWN_TIMEOUT_SECS`), starting when `requested` is cancelled.
    pub fn configured(common: &CommonConfig, requested: CancellationToken) -> Self {
        Self::new(requested, common.shutdown_delay, common.shutdown_timeout)
    }

    /// This shutdown, flushing `telemetry` in its last phase.
    pub fn flushing(self, telemetry: Telemetry) -> Self {
        *self
            .telemetry
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(telemetry);
        self
    }

    /// Cancelled when the stop is requested (phase 1), or when a server
    /// failed.
    pub fn requested(&self) -> CancellationToken {
        self.requested.clone()
    }

    /// Runs `worker`, which must return soon after [`requested`](Self::requested)
    /// is cancelled; phase 4 waits for it.
    pub fn spawn<F>(&self, worker: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.workers.spawn(worker);
    }

    /// Resolves when the servers must stop accepting calls (phase 3).
    pub fn stop_accepting(&self) -> WaitForCancellationFutureOwned {
        self.stop_accepting.clone().cancelled_owned()
    }

    /// Runs `serving` (servers that stop at [`stop_accepting`](Self::stop_accepting))
    /// and, once it returned, phases 4 and 5, draining `nats`; returns what
    /// `serving` returned. A server that fails stops everything at once.
    pub async fn run<T>(
        self,
        serving: impl Future<Output = T>,
        nats: orderflow_eventbus::Client,
    ) -> T {
        self.workers.close();
        let delayed = {
            let (requested, stop_accepting) = (self.requested.clone(), self.stop_accepting.clone());
            let delay = self.delay;
            tokio::spawn(async move {
                requested.cancelled().await;
                if !delay.is_zero() {
                    tracing::info!(
                        ?delay,
                        "NOT_SERVING; still answering calls while load balancers catch up"
                    );
                    tokio::time::sleep(delay).await;
                }
                stop_accepting.cancel();
            })
        };
        let served = serving.await;
        delayed.abort();
        self.requested.cancel();
        let grace = self.grace;
        if tokio::time::timeout(grace, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "in-flight messages did not finish within SHUTDOWN_TIMEOUT_SECS; JetStream will redeliver them"
            );
        }
        if let Err(error) = nats.drain().await {
            tracing::warn!(%error, "NATS drain failed");
        }
        tracing::info!("stopped");
        served
    }

    /// Phase 6: exports what telemetry holds and stops the exporters. The
    /// first call flushes; later ones (and a shutdown without telemetry)
    /// do nothing. Call it on a multi-thread tokio runtime.
    pub fn finish(&self) {
        let telemetry = self
            .telemetry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(telemetry) = telemetry {
            // Flushing blocks until the exporters answer; let the runtime's
            // other workers run the export requests meanwhile (the binaries
            // run on the multi-thread runtime).
            tokio::task::block_in_place(|| telemetry.shutdown());
        }
    }
}

/// A token cancelled on the first SIGTERM or SIGINT (Ctrl-C).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
