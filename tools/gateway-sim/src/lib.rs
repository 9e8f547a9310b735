//! `orderflow-gateway-sim`: a card gateway simulator that payment-service
//! calls over HTTP when `GATEWAY_URL` is set.
//!
//! Shaped like a real gateway: `POST /v1/charges` and `POST /v1/refunds`
//! with an `Idempotency-Key` header (a repeated key answers the first answer
//! and moves no money), amounts in minor units with an ISO 4217 currency,
//! and a ledger of every operation it accepted, fsynced to
//! `<data dir>/ledger.jsonl` before the answer leaves, so it outlives both
//! payment-service and itself; `GET /v1/ledger` reads it whole. Faults
//! (latency and jitter, transient 503s, lost answers, a decline threshold,
//! outages) come from flags or the environment and change at runtime through
//! `POST /control`. docs/gateway-sim.md is the reference.
//!
//! It knows nothing of orderflow's crates: it is the outside world, and a
//! checker reads its ledger to judge payment-service from outside.
#![forbid(unsafe_code)]

mod api;
pub mod knobs;
pub mod ledger;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

pub use api::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, MAX_KEY_LEN, StartError};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    knobs::{Knobs, Rng},
    ledger::{Entry, Ledger, TornTail},
};

/// What a gateway starts with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the ledger lives.
    pub data_dir: PathBuf,
    /// The fault knobs at start.
    pub knobs: Knobs,
    /// Seed of the fault draws (latency jitter, failures, lost answers).
    pub seed: u64,
}

/// A gateway listening on a socket.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    torn: Option<TornTail>,
    shared: Arc<api::Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Opens the ledger in `settings.data_dir`, binds `addr` (port 0 picks
    /// one) and serves until [`Running::stop`].
    pub async fn start(settings: Settings, addr: SocketAddr) -> Result<Self, StartError> {
        let (ledger, torn) = Ledger::open(&settings.data_dir)?;
        if let Some(torn) = &torn {
            tracing::warn!(
                line = torn.line,
                bytes = torn.bytes,
                "the ledger's last line was torn (a crash mid-append); it is ignored and cut off"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let shared = Arc::new(api::Shared {
            ledger: Mutex::new(ledger),
            knobs: Mutex::new(settings.knobs),
            rng: Mutex::new(Rng::new(settings.seed)),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = api::router(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            torn,
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`, what `GATEWAY_URL` is set to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The torn last line replay cut off at start, if there was one.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// The ledger as it stands (what `GET /v1/ledger` answers).
    pub fn entries(&self) -> Vec<Entry> {
        self.shared
            .ledger
            .lock()
            .map(|l| l.entries().to_vec())
            .unwrap_or_default()
    }

    /// Changes the knobs, as `POST /control` does, for a gateway embedded in
    /// a test.
    pub fn set_knobs(&self, change: impl FnOnce(&mut Knobs)) {
        if let Ok(mut knobs) = self.shared.knobs.lock() {
            change(&mut knobs);
        }
    }

    /// Serves until `signal` completes, then stops as [`Running::stop`]
    /// does; returns early if the server fails.
    pub async fn stop_when(mut self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        tokio::select! {
            ended = &mut self.task => return ended.map_err(std::io::Error::other)?,
            () = signal => {}
        }
        self.stop().await
    }

    /// Stops accepting, finishes the calls in flight, and returns.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}
