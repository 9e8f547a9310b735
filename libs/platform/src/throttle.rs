//! Warnings said at most once per interval, with a count.
//!
//! Some failures hit every call while they last (the broker unreachable, a
//! stream without a leader): a warning per call would write the log at the
//! request rate, and the gRPC metrics count every call's status already. A
//! [`LogThrottle`] lets the first occurrence after a quiet interval be said
//! at once and counts the others into the next line. No tracing crate the
//! project uses rate-limits events, hence these few lines.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// The interval of the project's throttled warnings.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Counts occurrences and says when a line is due.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_said: Option<Instant>,
    unsaid: u64,
}

impl LogThrottle {
    /// At most one line per `interval` (a `static` can hold one).
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last_said: None,
                unsaid: 0,
            }),
        }
    }

    /// Counts an occurrence now; `Some(n)` when a line is due, `n` being the
    /// occurrences since the last line, this one included.
    pub fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, now: Instant) -> Option<u64> {
        // A poisoned count is still a count.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.unsaid += 1;
        let due = state
            .last_said
            .is_none_or(|said| now.saturating_duration_since(said) >= self.interval);
        if !due {
            return None;
        }
        state.last_said = Some(now);
        Some(std::mem::take(&mut state.unsaid))
    }
}

/// Says, at most once per [`INTERVAL`], that a call was answered
/// `UNAVAILABLE` because of `error` (a stream without a leader, a broker that
/// does not answer): such a failure lasts and hits every call meanwhile. The
/// line carries `answered`, the calls so answered since the last one.
pub fn warn_unavailable(error: &dyn std::fmt::Display) {
    static UNAVAILABLE: LogThrottle = LogThrottle::new(INTERVAL);
    if let Some(answered) = UNAVAILABLE.note() {
        tracing::warn!(
            %error,
            answered,
            "answering UNAVAILABLE ({answered} call(s) since the last such line)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_due_once_per_interval_with_the_count_since_the_last() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.note_at(t0), Some(1), "the first is said at once");
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.note_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            throttle.note_at(t0 + Duration::from_secs(10)),
            Some(4),
            "the next line counts every occurrence since the last one"
        );
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(11)), None);
        // After a quiet spell the next one is said at once again.
        assert_eq!(throttle.note_at(t0 + Duration::from_secs(60)), Some(2));
    }
}
