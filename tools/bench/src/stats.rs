//! Latency histograms and the figures read from them.
//!
//! Every latency goes into an HDR histogram in microseconds (1 µs to one hour,
//! three significant digits), so percentiles are exact to 0.1 % whatever the
//! distribution, and merging the histograms of many workers costs nothing.
//! Percentiles are reported in milliseconds.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram holds: one hour, in microseconds. Longer
/// values are recorded as one hour (they only happen when something hangs,
/// and the timeouts are far shorter).
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1,
        // high >= 2 * low, 3 significant figures); `empty_histogram_reads_zero`
        // runs this line.
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Self(histogram)
    }

    /// Records one latency, rounded to whole microseconds (at least 1).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so `add` cannot fail; were it
        // ever to, losing a worker's values would show as a lower count.
        let _ = self.0.add(&other.0);
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The percentiles, in milliseconds.
    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        let ms = |micros: u64| round3(micros as f64 / 1000.0);
        Summary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: round3(self.0.mean() / 1000.0),
        }
    }
}

/// The figures of one histogram, in milliseconds; all zero when it is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many latencies.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
    /// The mean.
    pub mean_ms: f64,
}

/// Rounds to three decimals, so reports show microsecond resolution and JSON
/// stays short.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `part / whole`, or `None` when `whole` is not positive (a ratio to a
/// baseline that measured nothing means nothing).
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0 && part.is_finite()).then(|| round3(part / whole))
}

/// Count of failed calls by their canonical gRPC code name
/// (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...), sorted for stable output.
pub type ErrorCounts = BTreeMap<String, u64>;

/// The canonical name of a gRPC status code, as grpcurl and the gRPC spec
/// spell it (tonic's `Debug` gives `Unavailable`, its `description` a
/// sentence).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_reads_zero() {
        let summary = Latencies::new().summary();
        assert_eq!(summary, Summary::default());
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds() {
        let mut latencies = Latencies::new();
        for ms in 1..=1000 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        // Three significant digits: each value is within 0.1 % of the exact one.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p90_ms, 900.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
    }

    #[test]
    fn merged_histograms_count_both_and_huge_values_saturate() {
        let mut a = Latencies::new();
        a.record(Duration::from_micros(250));
        let mut b = Latencies::new();
        b.record(Duration::from_secs(10_000));
        b.record(Duration::ZERO);
        a.merge(&b);
        let summary = a.summary();
        assert_eq!(summary.count, 3);
        assert!(summary.max_ms >= 3_599_000.0 && summary.max_ms <= 3_610_000.0);
    }

    #[test]
    fn ratios_need_a_positive_baseline() {
        assert_eq!(ratio(3.0, 10.0), Some(0.3));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
