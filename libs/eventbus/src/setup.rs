//! Start-up retries for JetStream set-up (streams and KV buckets).
//!
//! A service often starts while its JetStream cannot yet answer: a cluster is
//! still electing its meta leader, a replicated stream's Raft group is still
//! forming, or a loaded server takes longer than the request timeout to
//! place three replicas. Those answers are *transient* and a restart would
//! only repeat them, so set-up retries them with backoff for
//! [`SETUP_BUDGET`]. Answers that no retry can change (a subject overlapping
//! another stream, more replicas than a single server supports) fail at once
//! with JetStream's own message.
//!
//! Every set-up step is idempotent — it reads the current configuration
//! first — so retrying after a timed-out create that did take effect is safe.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;

/// How long start-up keeps retrying transient JetStream answers before it
/// gives up and the process exits with the last error.
pub const SETUP_BUDGET: Duration = Duration::from_secs(60);

/// First pause between two attempts; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Whether a JetStream API error code describes a cluster that is not ready
/// yet, rather than a request that can never succeed.
pub(crate) fn is_transient_code(code: ErrorCode) -> bool {
    [
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::CLUSTER_NOT_ACTIVE,
        ErrorCode::CLUSTER_NOT_ASSIGNED,
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::RAFT_GENERAL,
    ]
    .contains(&code)
}

/// An error that knows whether retrying may help.
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
}

/// Runs `attempt` until it succeeds, fails for good, or `deadline` passes;
/// each transient failure is logged with what is being set up. Callers that
/// set up several things share one deadline, so start-up as a whole waits
/// at most [`SETUP_BUDGET`].
pub(crate) async fn retry_transient<T, E, F, Fut>(
    what: &str,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && Instant::now() + pause < deadline => {
                tracing::warn!(%error, setup = what, retry_in_ms = pause.as_millis() as u64,
                    "JetStream is not ready yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_formation_codes_are_transient_and_config_errors_are_not() {
        assert!(is_transient_code(ErrorCode::CLUSTER_NOT_AVAILABLE));
        assert!(is_transient_code(ErrorCode::CLUSTER_NO_PEERS));
        assert!(!is_transient_code(ErrorCode::STREAM_SUBJECT_OVERLAP));
        assert!(!is_transient_code(ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED));
    }
}
