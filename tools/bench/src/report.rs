//! The report: one JSON object (`--json`) or a table for people, with every
//! figure also given as a ratio to the raw-publish baseline of the same run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    baseline::BaselineReport,
    load::PhaseResult,
    saga::Outcomes,
    stats::{ErrorCounts, Summary, ratio, round3},
    svg::{Plot, Series},
};

/// The figures of one run. Field names are the JSON keys; the flat `create_*`,
/// `saga_*` and `baseline_*` keys are the ones scripts and the docs read.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// A free label (`--label`), e.g. `tracing-on`.
    pub label: Option<String>,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: requests in flight; open loop: the in-flight cap. The
    /// baseline uses the same number.
    pub concurrency: usize,
    /// Open loop: the target rate, requests per second.
    pub target_rps: Option<f64>,
    /// gRPC connections to the order service.
    pub connections: usize,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Warm-up before it, seconds.
    pub warmup_s: f64,

    /// Answered CreateOrders per second.
    pub create_rps: f64,
    /// Answered CreateOrders counted in `create_rps`.
    pub create_ok: u64,
    /// CreateOrder latency percentiles, ms.
    pub create_p50_ms: f64,
    /// 90th percentile.
    pub create_p90_ms: f64,
    /// 99th percentile.
    pub create_p99_ms: f64,
    /// 99.9th percentile.
    pub create_p999_ms: f64,
    /// Largest.
    pub create_max_ms: f64,
    /// Failed calls by gRPC code, warm-up included.
    pub errors: ErrorCounts,
    /// Sum of `errors`.
    pub errors_total: u64,

    /// Completed sagas per second.
    pub saga_rps: f64,
    /// Measured sagas that finished.
    pub sagas_completed: u64,
    /// Measured sagas that had not finished when the bench stopped waiting.
    pub sagas_unfinished: u64,
    /// How the measured sagas ended.
    pub saga_outcomes: Outcomes,
    /// Saga latency (CreateOrder sent or due → final event), ms.
    pub saga_p50_ms: f64,
    /// 90th percentile.
    pub saga_p90_ms: f64,
    /// 99th percentile.
    pub saga_p99_ms: f64,
    /// 99.9th percentile.
    pub saga_p999_ms: f64,
    /// Largest.
    pub saga_max_ms: f64,
    /// Seconds from the last answered request to the last finished saga.
    pub saga_drain_s: f64,
    /// Final events of this run's orders seen in all phases (probe, warm-up
    /// and sweep included), e.g. to count exported spans per saga.
    pub sagas_observed_total: u64,

    /// Open loop: requests sent more than 5 ms late.
    pub late: u64,
    /// Open loop: requests due in the window that were never sent.
    pub unsent: u64,
    /// Open loop: how often the in-flight cap held the schedule.
    pub in_flight_cap_hits: u64,
    /// Encoded size of this run's `OrderCreated` events, bytes.
    pub event_bytes: Option<usize>,
    /// Slow-consumer events on the observing connection (lost observations).
    pub observer_dropped: u64,
    /// CPU the bench itself used during the main phase, in percent of one
    /// core: the load generator shares the machine with what it measures.
    pub bench_cpu_percent: Option<f64>,

    /// Raw acked publishes per second (`--baseline`).
    pub baseline_publish_rps: Option<f64>,
    /// Raw publish-to-ack p50, ms.
    pub baseline_p50_ms: Option<f64>,
    /// Raw publish-to-ack p99, ms.
    pub baseline_p99_ms: Option<f64>,
    /// The whole baseline.
    pub baseline: Option<BaselineReport>,
    /// Every figure over the baseline's.
    pub ratios: Option<Ratios>,

    /// `--sweep`: open-loop runs at fractions of the peak.
    pub sweep: Vec<SweepPoint>,
    /// The sweep point at half the peak, if the sweep had one.
    pub saga_p99_at_half_peak_ms: Option<f64>,

    /// Where it ran.
    pub machine: Machine,
}

/// Figures as ratios to the baseline of the same run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    /// `create_rps / baseline_publish_rps` (goal ≥ 0.30 at 64 in flight).
    pub create_vs_baseline: Option<f64>,
    /// `saga_rps / baseline_publish_rps` (goal ≥ 0.10).
    pub saga_vs_baseline: Option<f64>,
    /// `create_p50_ms / baseline_p50_ms`.
    pub create_p50_vs_baseline_p50: Option<f64>,
    /// `create_p99_ms / baseline_p99_ms`.
    pub create_p99_vs_baseline_p99: Option<f64>,
    /// `saga_p50_ms / baseline_p50_ms`.
    pub saga_p50_vs_baseline_p50: Option<f64>,
    /// `saga_p99_ms / baseline_p99_ms`.
    pub saga_p99_vs_baseline_p99: Option<f64>,
}

/// One open-loop run of the sweep.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SweepPoint {
    /// The fraction of the peak.
    pub fraction: f64,
    /// The offered rate, requests per second.
    pub target_rps: f64,
    /// Achieved CreateOrder throughput.
    pub create_rps: f64,
    /// CreateOrder p50, ms.
    pub create_p50_ms: f64,
    /// CreateOrder p99, ms.
    pub create_p99_ms: f64,
    /// Completed sagas per second.
    pub saga_rps: f64,
    /// Saga p50, ms.
    pub saga_p50_ms: f64,
    /// Saga p99, ms.
    pub saga_p99_ms: f64,
    /// Failed calls.
    pub errors_total: u64,
    /// Requests sent late.
    pub late: u64,
    /// Requests never sent.
    pub unsent: u64,
    /// Sagas that did not finish.
    pub sagas_unfinished: u64,
}

/// The machine the figures come from.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
}

/// CPU time this process has used so far (user + system), from
/// `/proc/self/stat`; `None` where there is no procfs.
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; count from after it.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks
    // of USER_HZ, which Linux fixes at 100 for everything it reports in /proc.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}

impl Machine {
    /// Reads the CPU count and model.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self { cpus, cpu_model }
    }
}

/// How the run was set up, for the report.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `--label`.
    pub label: Option<String>,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// In flight / in-flight cap.
    pub concurrency: usize,
    /// Open-loop rate.
    pub target_rps: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Warm-up seconds.
    pub warmup_s: f64,
}

impl Report {
    /// Builds the report of the main phase.
    pub fn new(
        setup: Setup,
        phase: &PhaseResult,
        baseline: Option<BaselineReport>,
        event_bytes: Option<usize>,
        observer_dropped: u64,
    ) -> Self {
        let create = phase.create.summary();
        let saga = phase.saga.latencies.summary();
        let ratios = baseline.as_ref().map(|b| Ratios {
            create_vs_baseline: ratio(phase.create_rps, b.publish_rps),
            saga_vs_baseline: ratio(phase.saga_rps, b.publish_rps),
            create_p50_vs_baseline_p50: ratio(create.p50_ms, b.latency.p50_ms),
            create_p99_vs_baseline_p99: ratio(create.p99_ms, b.latency.p99_ms),
            saga_p50_vs_baseline_p50: ratio(saga.p50_ms, b.latency.p50_ms),
            saga_p99_vs_baseline_p99: ratio(saga.p99_ms, b.latency.p99_ms),
        });
        Self {
            label: setup.label,
            mode: setup.mode,
            concurrency: setup.concurrency,
            target_rps: setup.target_rps,
            connections: setup.connections,
            duration_s: round3(phase.window_s),
            warmup_s: setup.warmup_s,
            create_rps: round3(phase.create_rps),
            create_ok: phase.create_ok,
            create_p50_ms: create.p50_ms,
            create_p90_ms: create.p90_ms,
            create_p99_ms: create.p99_ms,
            create_p999_ms: create.p999_ms,
            create_max_ms: create.max_ms,
            errors_total: phase.errors.values().sum(),
            errors: phase.errors.clone(),
            saga_rps: round3(phase.saga_rps),
            sagas_completed: saga.count,
            sagas_unfinished: phase.saga.unfinished,
            saga_outcomes: phase.saga.outcomes,
            saga_p50_ms: saga.p50_ms,
            saga_p90_ms: saga.p90_ms,
            saga_p99_ms: saga.p99_ms,
            saga_p999_ms: saga.p999_ms,
            saga_max_ms: saga.max_ms,
            saga_drain_s: round3(phase.drain_s),
            sagas_observed_total: 0,
            late: phase.late,
            unsent: phase.unsent,
            in_flight_cap_hits: phase.cap_hits,
            event_bytes,
            observer_dropped,
            bench_cpu_percent: None,
            baseline_publish_rps: baseline.as_ref().map(|b| b.publish_rps),
            baseline_p50_ms: baseline.as_ref().map(|b| b.latency.p50_ms),
            baseline_p99_ms: baseline.as_ref().map(|b| b.latency.p99_ms),
            baseline,
            ratios,
            sweep: Vec::new(),
            saga_p99_at_half_peak_ms: None,
            machine: Machine::detect(),
        }
    }

    /// The peak the sweep scales: the lower of the CreateOrder and saga
    /// rates, since neither can be sustained above it.
    pub fn peak_rps(&self) -> f64 {
        self.create_rps.min(self.saga_rps)
    }

    /// The table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "orderflow-bench{}: {} loop, {} {}, {} connection(s), {:.1} s measured after {:.1} s warm-up",
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default(),
            self.mode,
            self.concurrency,
            if self.mode == "open" {
                format!(
                    "max in flight at {:.0}/s",
                    self.target_rps.unwrap_or_default()
                )
            } else {
                "in flight".into()
            },
            self.connections,
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(
            out,
            "machine: {} CPU(s), {}",
            self.machine.cpus, self.machine.cpu_model
        );
        let _ = writeln!(
            out,
            "{:<22}{:>11}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "per second", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let row = |out: &mut String, name: &str, rps: f64, s: &Summary| {
            let _ = writeln!(
                out,
                "{name:<22}{rps:>11.1}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
            );
        };
        let create = Summary {
            count: self.create_ok,
            p50_ms: self.create_p50_ms,
            p90_ms: self.create_p90_ms,
            p99_ms: self.create_p99_ms,
            p999_ms: self.create_p999_ms,
            max_ms: self.create_max_ms,
            mean_ms: 0.0,
        };
        let saga = Summary {
            count: self.sagas_completed,
            p50_ms: self.saga_p50_ms,
            p90_ms: self.saga_p90_ms,
            p99_ms: self.saga_p99_ms,
            p999_ms: self.saga_p999_ms,
            max_ms: self.saga_max_ms,
            mean_ms: 0.0,
        };
        row(&mut out, "CreateOrder", self.create_rps, &create);
        row(&mut out, "saga (to final event)", self.saga_rps, &saga);
        if let Some(baseline) = &self.baseline {
            row(
                &mut out,
                "raw JetStream publish",
                baseline.publish_rps,
                &baseline.latency,
            );
            let x = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.3}x"));
            let b = &baseline.latency;
            let _ = writeln!(
                out,
                "{:<22}{:>11}{:>10}{:>10}{:>10}{:>10}{:>10}",
                "CreateOrder / raw",
                x(ratio(self.create_rps, baseline.publish_rps)),
                x(ratio(self.create_p50_ms, b.p50_ms)),
                x(ratio(self.create_p90_ms, b.p90_ms)),
                x(ratio(self.create_p99_ms, b.p99_ms)),
                x(ratio(self.create_p999_ms, b.p999_ms)),
                x(ratio(self.create_max_ms, b.max_ms)),
            );
            let _ = writeln!(
                out,
                "{:<22}{:>11}{:>10}{:>10}{:>10}{:>10}{:>10}",
                "saga / raw",
                x(ratio(self.saga_rps, baseline.publish_rps)),
                x(ratio(self.saga_p50_ms, b.p50_ms)),
                x(ratio(self.saga_p90_ms, b.p90_ms)),
                x(ratio(self.saga_p99_ms, b.p99_ms)),
                x(ratio(self.saga_p999_ms, b.p999_ms)),
                x(ratio(self.saga_max_ms, b.max_ms)),
            );
            let _ = writeln!(
                out,
                "baseline: {} in flight, {} B payload, {} error(s)",
                baseline.in_flight,
                baseline.payload_bytes,
                baseline.errors.values().sum::<u64>()
            );
        }
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "errors: {errors}");
        if let Some(cpu) = self.bench_cpu_percent {
            let _ = writeln!(out, "the bench itself used {cpu:.0}% of one CPU");
        }
        let _ = writeln!(
            out,
            "sagas: {} finished (confirmed {}, payment failed {}, other {}), {} unfinished, drained {:.3} s after the load",
            self.sagas_completed,
            self.saga_outcomes.confirmed,
            self.saga_outcomes.payment_failed,
            self.saga_outcomes.other,
            self.sagas_unfinished,
            self.saga_drain_s
        );
        if self.mode == "open" {
            let _ = writeln!(
                out,
                "schedule: {} sent >5 ms late, {} never sent, in-flight cap hit {} time(s)",
                self.late, self.unsent, self.in_flight_cap_hits
            );
        }
        if self.observer_dropped > 0 {
            let _ = writeln!(
                out,
                "warning: the saga observer was a slow consumer {} time(s); some final events were lost",
                self.observer_dropped
            );
        }
        if !self.sweep.is_empty() {
            let _ = writeln!(
                out,
                "\nsweep (open loop):\n{:>9}{:>10}{:>11}{:>10}{:>10}{:>11}{:>10}{:>10}{:>7}{:>7}",
                "fraction",
                "target/s",
                "create/s",
                "p50 ms",
                "p99 ms",
                "sagas/s",
                "p50 ms",
                "p99 ms",
                "late",
                "unsent"
            );
            for p in &self.sweep {
                let _ = writeln!(
                    out,
                    "{:>9.2}{:>10.0}{:>11.1}{:>10.3}{:>10.3}{:>11.1}{:>10.3}{:>10.3}{:>7}{:>7}",
                    p.fraction,
                    p.target_rps,
                    p.create_rps,
                    p.create_p50_ms,
                    p.create_p99_ms,
                    p.saga_rps,
                    p.saga_p50_ms,
                    p.saga_p99_ms,
                    p.late,
                    p.unsent
                );
            }
        }
        out
    }
}

impl SweepPoint {
    /// The sweep point of one open-loop phase.
    pub fn new(fraction: f64, target_rps: f64, phase: &PhaseResult) -> Self {
        let create = phase.create.summary();
        let saga = phase.saga.latencies.summary();
        Self {
            fraction,
            target_rps: round3(target_rps),
            create_rps: round3(phase.create_rps),
            create_p50_ms: create.p50_ms,
            create_p99_ms: create.p99_ms,
            saga_rps: round3(phase.saga_rps),
            saga_p50_ms: saga.p50_ms,
            saga_p99_ms: saga.p99_ms,
            errors_total: phase.errors.values().sum(),
            late: phase.late,
            unsent: phase.unsent,
            sagas_unfinished: phase.saga.unfinished,
        }
    }
}

/// What the sweep's chart says besides the points: where and against what
/// they were measured. Read from a [`Report`], or from its JSON by
/// `orderflow-bench plot`.
#[derive(Clone, Debug, Deserialize)]
pub struct SweepContext {
    /// The open-loop runs.
    pub sweep: Vec<SweepPoint>,
    /// Where they ran.
    pub machine: Machine,
    /// The closed-loop run's in flight.
    pub concurrency: usize,
    /// Its CreateOrder rate.
    pub create_rps: f64,
    /// Its saga rate.
    pub saga_rps: f64,
    /// The baseline, when measured.
    pub baseline_publish_rps: Option<f64>,
}

impl From<&Report> for SweepContext {
    fn from(report: &Report) -> Self {
        Self {
            sweep: report.sweep.clone(),
            machine: report.machine.clone(),
            concurrency: report.concurrency,
            create_rps: report.create_rps,
            saga_rps: report.saga_rps,
            baseline_publish_rps: report.baseline_publish_rps,
        }
    }
}

/// The latency-versus-throughput chart of a sweep.
pub fn sweep_plot(context: &SweepContext) -> Plot {
    let series = |name: &str, color, dashed, y: fn(&SweepPoint) -> f64| Series {
        name: name.into(),
        color,
        dashed,
        points: context.sweep.iter().map(|p| (p.create_rps, y(p))).collect(),
    };
    let peak = context.create_rps.min(context.saga_rps);
    let baseline = context
        .baseline_publish_rps
        .map(|rps| format!(", raw publish {rps:.0}/s"))
        .unwrap_or_default();
    Plot {
        title: "orderflow: latency vs throughput (open loop)".into(),
        subtitle: format!(
            "{} CPU(s) {}; peak {peak:.0} orders/s (closed loop, {} in flight){baseline}",
            context.machine.cpus, context.machine.cpu_model, context.concurrency
        ),
        x_label: "achieved CreateOrder throughput (orders/s)".into(),
        y_label: "latency (ms, log scale)".into(),
        series: vec![
            series("CreateOrder p50", "#1f77b4", true, |p| p.create_p50_ms),
            series("CreateOrder p99", "#1f77b4", false, |p| p.create_p99_ms),
            series("saga p50", "#e6550d", true, |p| p.saga_p50_ms),
            series("saga p99", "#e6550d", false, |p| p.saga_p99_ms),
        ],
        goal: Some((25.0, "goal: saga p99 <= 25 ms at half of peak".into())),
        marker: Some((peak / 2.0, "half of peak".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        // Burn a little CPU so the tick counter has moved.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_time().is_some_and(|t| t > std::time::Duration::ZERO));
    }
}
