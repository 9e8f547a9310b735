//! The highest open-loop rate that meets the saga latency goal (saga p99 ≤
//! `--slo-p99-ms`), found by bisection between the sweep's points.
//!
//! The sweep's points are far apart (10 %, 25 %, 50 % ... of the peak), so
//! "p99 at half of peak" alone says little about where the goal stops being
//! met. After the sweep, the search starts from the highest passing point and
//! the lowest failing point above it, and halves that bracket a few times
//! with extra open-loop runs. Latency is noisy on a shared machine, so the
//! points need not be monotonic; taking the lowest failure *above* the
//! highest pass keeps the bracket consistent whatever lies below.

use serde::Serialize;

use crate::report::SweepPoint;

/// A bisection stops when its bracket is narrower than this fraction of the
/// failing rate: the noise between runs is larger than that.
const RESOLUTION: f64 = 0.01;

/// Rates below this many requests per second are not worth a run.
const MIN_RATE: f64 = 1.0;

/// Whether an open-loop run met the goal: saga p99 within `limit_ms`, every
/// measured saga finished, no call failed and no request was left unsent
/// (unfinished sagas or unsent requests would be missing from the p99, so a
/// run with any cannot count as a pass).
pub fn passes(point: &SweepPoint, limit_ms: f64) -> bool {
    point.saga_p99_ms <= limit_ms
        && point.sagas_unfinished == 0
        && point.errors_total == 0
        && point.unsent == 0
        && point.saga_rps > 0.0
}

/// The bracket of the search: the highest rate known to pass and the lowest
/// known to fail above it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bracket {
    /// The highest passing rate, if any passed.
    pub pass: Option<f64>,
    /// The lowest failing rate above `pass`, if any failed there.
    pub fail: Option<f64>,
}

impl Bracket {
    /// The bracket of the sweep's `(rate, passed)` points.
    pub fn from_points(points: impl IntoIterator<Item = (f64, bool)>) -> Self {
        let points: Vec<(f64, bool)> = points.into_iter().filter(|(r, _)| r.is_finite()).collect();
        let pass = points
            .iter()
            .filter(|(_, passed)| *passed)
            .map(|(rate, _)| *rate)
            .reduce(f64::max);
        let fail = points
            .iter()
            .filter(|(rate, passed)| !passed && pass.is_none_or(|p| *rate > p))
            .map(|(rate, _)| *rate)
            .reduce(f64::min);
        Self { pass, fail }
    }

    /// The rate to try next: the middle of the bracket, or half of the
    /// lowest failure when nothing passed; `None` when there is nothing to
    /// bisect (every point passed, so the goal's limit lies above the sweep)
    /// or the bracket is already narrow.
    pub fn next_rate(&self) -> Option<f64> {
        let fail = self.fail?;
        let pass = self.pass.unwrap_or(0.0);
        let next = (pass + fail) / 2.0;
        (fail - pass > fail * RESOLUTION && next >= MIN_RATE).then_some(next)
    }

    /// Narrows the bracket with the outcome of a run at `rate`.
    pub fn record(&mut self, rate: f64, passed: bool) {
        if passed {
            if self.pass.is_none_or(|p| rate > p) {
                self.pass = Some(rate);
            }
            if self.fail.is_some_and(|f| f <= rate) {
                // A failure below a pass is noise the bracket forgets.
                self.fail = None;
            }
        } else if self.fail.is_none_or(|f| rate < f) && self.pass.is_none_or(|p| rate > p) {
            self.fail = Some(rate);
        }
    }

    /// Whether a failing rate bounds the result from above; `false` means
    /// every rate tried passed, and the highest is only a lower bound.
    pub fn bounded(&self) -> bool {
        self.fail.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_between_the_highest_pass_and_the_next_failure_above() {
        // 200 fails (noise) below the pass at 400; 600 and 800 fail.
        let bracket = Bracket::from_points([
            (100.0, true),
            (200.0, false),
            (400.0, true),
            (800.0, false),
            (600.0, false),
        ]);
        assert_eq!(
            bracket,
            Bracket {
                pass: Some(400.0),
                fail: Some(600.0)
            }
        );
        assert_eq!(bracket.next_rate(), Some(500.0));
        assert!(bracket.bounded());
    }

    #[test]
    fn each_step_halves_the_bracket() {
        let mut bracket = Bracket::from_points([(400.0, true), (800.0, false)]);
        assert_eq!(bracket.next_rate(), Some(600.0));
        bracket.record(600.0, true);
        assert_eq!(bracket.next_rate(), Some(700.0));
        bracket.record(700.0, false);
        assert_eq!(bracket.next_rate(), Some(650.0));
        bracket.record(650.0, true);
        assert_eq!(
            bracket,
            Bracket {
                pass: Some(650.0),
                fail: Some(700.0)
            }
        );
    }

    #[test]
    fn all_passing_leaves_nothing_to_bisect() {
        let bracket = Bracket::from_points([(100.0, true), (300.0, true)]);
        assert_eq!(bracket.pass, Some(300.0));
        assert_eq!(bracket.next_rate(), None);
        assert!(!bracket.bounded());
    }

    #[test]
    fn none_passing_bisects_below_the_lowest() {
        let mut bracket = Bracket::from_points([(400.0, false), (200.0, false)]);
        assert_eq!(
            bracket,
            Bracket {
                pass: None,
                fail: Some(200.0)
            }
        );
        assert_eq!(bracket.next_rate(), Some(100.0));
        bracket.record(100.0, false);
        assert_eq!(bracket.next_rate(), Some(50.0));
        bracket.record(50.0, true);
        assert_eq!(bracket.next_rate(), Some(75.0));
        // Too low to be worth a run.
        assert_eq!(
            Bracket {
                pass: None,
                fail: Some(1.5)
            }
            .next_rate(),
            None
        );
    }

    #[test]
    fn a_narrow_bracket_stops() {
        let bracket = Bracket {
            pass: Some(1_000.0),
            fail: Some(1_005.0),
        };
        assert_eq!(bracket.next_rate(), None);
    }

    #[test]
    fn a_pass_above_a_failure_drops_the_failure() {
        let mut bracket = Bracket {
            pass: Some(100.0),
            fail: Some(200.0),
        };
        bracket.record(250.0, true);
        assert_eq!(
            bracket,
            Bracket {
                pass: Some(250.0),
                fail: None
            }
        );
        // A failure below the pass does not become the upper bound.
        bracket.record(150.0, false);
        assert_eq!(bracket.fail, None);
    }

    fn point(p99: f64) -> SweepPoint {
        SweepPoint {
            fraction: 0.5,
            target_rps: 100.0,
            create_rps: 100.0,
            create_p50_ms: 1.0,
            create_p99_ms: 2.0,
            saga_rps: 100.0,
            saga_p50_ms: 2.0,
            saga_p99_ms: p99,
            errors_total: 0,
            late: 3,
            unsent: 0,
            sagas_unfinished: 0,
            slo_pass: None,
        }
    }

    #[test]
    fn passing_needs_the_p99_and_a_complete_run() {
        assert!(passes(&point(25.0), 25.0));
        assert!(!passes(&point(25.001), 25.0));
        assert!(!passes(
            &SweepPoint {
                sagas_unfinished: 1,
                ..point(5.0)
            },
            25.0
        ));
        assert!(!passes(
            &SweepPoint {
                errors_total: 1,
                ..point(5.0)
            },
            25.0
        ));
        assert!(!passes(
            &SweepPoint {
                unsent: 1,
                ..point(5.0)
            },
            25.0
        ));
        assert!(!passes(
            &SweepPoint {
                saga_rps: 0.0,
                ..point(5.0)
            },
            25.0
        ));
    }
}
