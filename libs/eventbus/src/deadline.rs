//! The caller's deadline, carried from the gRPC edge to the appends made for
//! the call.
//!
//! An append waits for JetStream's ack. Without a caller's deadline it waits
//! [`DEFAULT_ACK_WAIT`], as the JetStream context does for everything else;
//! within a call that has one (`grpc-timeout`, scoped by the platform's gRPC
//! layer with [`within`]) it waits until that deadline instead, up to
//! [`MAX_ACK_WAIT`], so a caller willing to wait longer than 5 s for a slow
//! broker is not answered `UNAVAILABLE` at 5 s, and one with a shorter
//! deadline is answered by then. Consumers and start-up have no caller and
//! keep the default.

use std::{future::Future, time::Duration};

use tokio::{task::futures::TaskLocalFuture, time::Instant};

/// How long an append waits for its ack when no caller's deadline applies.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);

/// The longest an append waits for its ack, whatever the caller's deadline:
/// a call holds a concurrency permit meanwhile.
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(60);

tokio::task_local! {
    static DEADLINE: Option<Instant>;
}

/// Runs `call` with `deadline` (the caller's, if it set one) as the deadline
/// of the appends it makes.
pub fn within<F: Future>(
    deadline: Option<Instant>,
    call: F,
) -> TaskLocalFuture<Option<Instant>, F> {
    DEADLINE.scope(deadline, call)
}

/// How long an append made now may wait for its ack.
pub(crate) fn ack_wait() -> Duration {
    let deadline = DEADLINE.try_with(|deadline| *deadline).ok().flatten();
    match deadline {
        Some(deadline) => deadline
            .saturating_duration_since(Instant::now())
            .min(MAX_ACK_WAIT),
        None => DEFAULT_ACK_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_waits_until_the_callers_deadline_or_the_default() {
        assert_eq!(ack_wait(), DEFAULT_ACK_WAIT, "outside any call");
        within(None, async { assert_eq!(ack_wait(), DEFAULT_ACK_WAIT) }).await;
        let later = Instant::now() + Duration::from_secs(20);
        within(Some(later), async {
            let wait = ack_wait();
            assert!(
                wait > DEFAULT_ACK_WAIT && wait <= Duration::from_secs(20),
                "{wait:?}"
            );
        })
        .await;
        let far = Instant::now() + Duration::from_secs(3600);
        within(Some(far), async { assert_eq!(ack_wait(), MAX_ACK_WAIT) }).await;
        let past = Instant::now();
        within(Some(past), async {
            assert!(ack_wait() <= Duration::from_millis(1))
        })
        .await;
    }
}
