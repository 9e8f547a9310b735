//! When open-loop requests are due, and how durations are spelled on the
//! command line.
//!
//! An open-loop generator sends request `i` at `start + i / rate`, whether or
//! not earlier requests have been answered. Latency is measured from that
//! intended time, not from when the request actually left: a stall that
//! delays sending then shows in the latencies instead of silently lowering
//! the rate ("coordinated omission").

use std::time::Duration;

/// Evenly spaced send times at a fixed rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second.
    rate: f64,
}

impl Schedule {
    /// A schedule of `rate` requests per second; `None` unless the rate is a
    /// positive, finite number.
    pub fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { rate })
    }

    /// The rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `index` is due, counted from the start of the schedule.
    pub fn offset(&self, index: u64) -> Duration {
        // f64 is exact for every index a run can reach (below 2^53), and the
        // division keeps the spacing exact on average (no drift from rounding
        // an interval once).
        Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// How many requests are due strictly before `elapsed`.
    pub fn due_before(&self, elapsed: Duration) -> u64 {
        let exact = elapsed.as_secs_f64() * self.rate;
        let count = exact.ceil();
        // Guard against `offset(count)` landing just before `elapsed` through
        // rounding, which would make the request at exactly `elapsed` count.
        let count = count as u64;
        if count > 0 && self.offset(count - 1) >= elapsed {
            count - 1
        } else {
            count
        }
    }
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1.5s`, or a bare number
/// of seconds (`10`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

/// Parses a comma-separated list of fractions of the peak rate, each above 0
/// and at most 2 (`0.1,0.5,1`).
pub fn parse_fractions(text: &str) -> Result<Vec<f64>, String> {
    let mut fractions = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let value: f64 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a number (in {text:?})"))?;
        if !(value > 0.0 && value <= 2.0) {
            return Err(format!(
                "{part:?} is not a fraction of the peak above 0 and at most 2"
            ));
        }
        fractions.push(value);
    }
    if fractions.is_empty() {
        return Err("give at least one fraction, e.g. 0.25,0.5,1".into());
    }
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    Ok(fractions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_without_drift() {
        let schedule = Schedule::new(3000.0).unwrap();
        assert_eq!(schedule.offset(0), Duration::ZERO);
        let step = schedule.offset(1);
        assert!(step.as_nanos().abs_diff(333_333) <= 1, "{step:?}");
        // After 30 000 requests the schedule is at exactly 10 s.
        let late = schedule.offset(30_000);
        assert!(late.as_nanos().abs_diff(10_000_000_000) <= 1, "{late:?}");
    }

    #[test]
    fn due_before_counts_the_requests_in_a_window() {
        let schedule = Schedule::new(100.0).unwrap();
        // 0 ms, 10 ms, ..., 990 ms: 100 requests start before 1 s.
        assert_eq!(schedule.due_before(Duration::from_secs(1)), 100);
        assert_eq!(schedule.due_before(Duration::ZERO), 0);
        assert_eq!(schedule.due_before(Duration::from_millis(5)), 1);
        assert_eq!(schedule.due_before(Duration::from_millis(10)), 1);
        assert_eq!(schedule.due_before(Duration::from_millis(11)), 2);
        let odd = Schedule::new(7.0).unwrap();
        assert_eq!(odd.due_before(Duration::from_secs(3)), 21);
    }

    #[test]
    fn rates_must_be_positive() {
        assert!(Schedule::new(0.0).is_none());
        assert!(Schedule::new(-5.0).is_none());
        assert!(Schedule::new(f64::INFINITY).is_none());
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn fractions_are_sorted_and_checked() {
        assert_eq!(parse_fractions("1,0.5, 0.25"), Ok(vec![0.25, 0.5, 1.0]));
        assert!(parse_fractions("0").is_err());
        assert!(parse_fractions("3").is_err());
        assert!(parse_fractions("").is_err());
        assert!(parse_fractions("x").is_err());
    }
}
