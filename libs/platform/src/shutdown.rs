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
//!
//! Telemetry is flushed after all of them, by `main_loop`, once the exit
//! code is known and logged: it is flushed on every way out (a failed
//! start-up, `migrate-subjects`), not only after serving.

use std::{future::Future, time::Duration};

use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

/// A service's way from a stop request to a drained NATS connection.
///
/// Built when the service starts serving; what must react to a phase gets
/// it from here: the servers [`stop_accepting`](Self::stop_accepting), the
/// health watch and the consumers [`requested`](Self::requested) (and run
/// as workers, [`spawn`](Self::spawn)), and [`run`](Self::run) drives the
/// phases around the servers.
pub struct Shutdown {
    requested: CancellationToken,
    stop_accepting: CancellationToken,
    delay: Duration,
    grace: Duration,
    workers: TaskTracker,
    nats: orderflow_eventbus::Client,
}

impl Shutdown {
    /// The shutdown that starts when `requested` is cancelled: the servers
    /// keep answering for `delay`, the workers get `grace` to settle, and
    /// `nats` is drained last.
    pub fn new(
        requested: CancellationToken,
        delay: Duration,
        grace: Duration,
        nats: orderflow_eventbus::Client,
    ) -> Self {
        Self {
            requested,
            stop_accepting: CancellationToken::new(),
            delay,
            grace,
            workers: TaskTracker::new(),
            nats,
        }
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
    /// and, once it returned, the phases after it; returns what `serving`
    /// returned. A server that fails stops everything at once.
    pub async fn run<T>(self, serving: impl Future<Output = T>) -> T {
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
        if let Err(error) = self.nats.drain().await {
            tracing::warn!(%error, "NATS drain failed");
        }
        tracing::info!("stopped");
        served
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
