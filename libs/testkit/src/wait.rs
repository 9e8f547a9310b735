//! Waiting for a condition instead of sleeping.
//!
//! A test that sleeps for a fixed time is either slow or flaky; one that polls
//! a condition with a deadline is neither, and when it fails it says what it
//! was waiting for.

use std::time::Duration;

/// Pause between two checks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` every 20 ms until it returns `true`.
///
/// The deadline also bounds a `check` that never completes, so a hung call
/// fails the test instead of hanging it.
///
/// # Panics
///
/// Panics with "timed out after {timeout:?} waiting for {what}" when `check`
/// has not returned `true` within `timeout`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// let start = tokio::time::Instant::now();
/// orderflow_testkit::wait_until("50 ms to pass", Duration::from_secs(5), || async {
///     start.elapsed() >= Duration::from_millis(50)
/// })
/// .await;
/// # }
/// ```
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polling = async {
        while !check().await {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    if tokio::time::timeout(timeout, polling).await.is_err() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_until("the third call", Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for something that never happens")]
    async fn panics_naming_what_it_waited_for() {
        wait_until(
            "something that never happens",
            Duration::from_millis(100),
            || async { false },
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for a hung check")]
    async fn a_check_that_never_finishes_still_times_out() {
        wait_until("a hung check", Duration::from_millis(100), || {
            std::future::pending::<bool>()
        })
        .await;
    }
}
