//! The report: one JSON object (`--json`) or a table for people, with every
//! figure also given as a ratio to the raw-publish baseline of the same run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    baseline::BaselineReport,
    cost::{BrokerPerUnit, BrokerWindow, PerProcess, cpu_per},
    load::PhaseResult,
    saga::Outcomes,
    secure::SecurityMode,
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
    /// `--create-only`: CreateOrder alone; the bench did not follow sagas,
    /// and the `saga_*` figures are empty.
    pub create_only: bool,
    /// How the bench reached the deployment: `security.mode` is `secure`
    /// (TLS, a bearer token or a NATS login) or `plaintext`, so that a
    /// secured run's figures are never mistaken for an unsecured one's.
    pub security: SecurityMode,
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

    /// The broker's traffic in the measured window, as nats-server counted
    /// it, with the bench observer's share (`--nats-monitor-url`).
    pub broker_window: Option<BrokerWindow>,
    /// Broker messages (in + out) per saga completed in the window, the
    /// bench observer's deliveries left out.
    pub broker_msgs_per_saga: Option<f64>,
    /// Messages the services published per saga.
    pub broker_in_msgs_per_saga: Option<f64>,
    /// Messages delivered to the services per saga.
    pub broker_out_msgs_per_saga: Option<f64>,
    /// Header and payload bytes published per saga.
    pub broker_in_bytes_per_saga: Option<f64>,
    /// Header and payload bytes delivered to the services per saga.
    pub broker_out_bytes_per_saga: Option<f64>,
    /// Broker messages (in + out) per CreateOrder answered in the window
    /// (the figure of `--create-only`; in a saga run it also carries the
    /// sagas' messages).
    pub broker_msgs_per_create: Option<f64>,
    /// Messages published per CreateOrder.
    pub broker_in_msgs_per_create: Option<f64>,
    /// Messages delivered per CreateOrder.
    pub broker_out_msgs_per_create: Option<f64>,
    /// Header and payload bytes published per CreateOrder.
    pub broker_in_bytes_per_create: Option<f64>,
    /// Header and payload bytes delivered per CreateOrder.
    pub broker_out_bytes_per_create: Option<f64>,
    /// Broker messages per saga by kind (`--by-kind`): appends, their acks,
    /// deliveries, their acks, pull requests and statuses, direct gets and
    /// their replies, other API requests and replies, and `unclassified`
    /// (counted by nats-server, not seen by the tap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_msgs_by_kind_per_saga: Option<std::collections::BTreeMap<&'static str, f64>>,
    /// The same per CreateOrder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_msgs_by_kind_per_create: Option<std::collections::BTreeMap<&'static str, f64>>,
    /// CPU microseconds per saga completed in the window, of each process
    /// whose pid was given (`--order-pid`, `--payment-pid`, `--nats-pid`).
    pub cpu_us_per_saga: Option<PerProcess<f64>>,
    /// CPU microseconds per CreateOrder answered in the window.
    pub cpu_us_per_create: Option<PerProcess<f64>>,

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
    /// The saga p99 goal the sweep searched for (`--slo-p99-ms`).
    pub slo_p99_ms: Option<f64>,
    /// The highest open-loop rate (offered, per second) whose run met the
    /// goal: saga p99 within `slo_p99_ms`, nothing failed, unfinished or
    /// unsent. `None` when no rate tried passed.
    pub slo_rps: Option<f64>,
    /// `slo_rps` over the closed-loop saga rate (`saga_rps`).
    pub slo_ratio: Option<f64>,
    /// Whether a failing rate above `slo_rps` was found; `false` means every
    /// rate tried passed, and `slo_rps` is only a lower bound.
    pub slo_bounded: Option<bool>,
    /// The lowest failing rate above `slo_rps`.
    pub slo_fail_rps: Option<f64>,
    /// The extra open-loop runs of the bisection, in the order run.
    pub slo_search: Vec<SweepPoint>,

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
    /// Whether the run met the saga p99 goal (see `slo::passes`).
    #[serde(default)]
    pub slo_pass: Option<bool>,
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
    crate::cost::process_cpu("self")
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
    /// `--create-only`.
    pub create_only: bool,
    /// The security flags' mode.
    pub security: SecurityMode,
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
        let sagas_followed = !setup.create_only;
        let saga_ratio = |value: f64, of: f64| ratio(value, of).filter(|_| sagas_followed);
        let ratios = baseline.as_ref().map(|b| Ratios {
            create_vs_baseline: ratio(phase.create_rps, b.publish_rps),
            saga_vs_baseline: saga_ratio(phase.saga_rps, b.publish_rps),
            create_p50_vs_baseline_p50: ratio(create.p50_ms, b.latency.p50_ms),
            create_p99_vs_baseline_p99: ratio(create.p99_ms, b.latency.p99_ms),
            saga_p50_vs_baseline_p50: saga_ratio(saga.p50_ms, b.latency.p50_ms),
            saga_p99_vs_baseline_p99: saga_ratio(saga.p99_ms, b.latency.p99_ms),
        });
        let broker_window = phase.cost.as_ref().and_then(|c| c.broker.clone());
        let per = |units: fn(&BrokerWindow) -> u64, figure: fn(&BrokerPerUnit) -> f64| {
            broker_window
                .as_ref()
                .and_then(|w| w.per(units(w)))
                .map(|p| figure(&p))
        };
        let per_saga = |figure| per(|w| w.sagas, figure);
        let per_create = |figure| per(|w| w.creates, figure);
        Self {
            label: setup.label,
            mode: setup.mode,
            concurrency: setup.concurrency,
            target_rps: setup.target_rps,
            connections: setup.connections,
            create_only: setup.create_only,
            security: setup.security,
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
            broker_msgs_per_saga: per_saga(|p| p.msgs),
            broker_in_msgs_per_saga: per_saga(|p| p.in_msgs),
            broker_out_msgs_per_saga: per_saga(|p| p.out_msgs),
            broker_in_bytes_per_saga: per_saga(|p| p.in_bytes),
            broker_out_bytes_per_saga: per_saga(|p| p.out_bytes),
            broker_msgs_per_create: per_create(|p| p.msgs),
            broker_in_msgs_per_create: per_create(|p| p.in_msgs),
            broker_out_msgs_per_create: per_create(|p| p.out_msgs),
            broker_in_bytes_per_create: per_create(|p| p.in_bytes),
            broker_out_bytes_per_create: per_create(|p| p.out_bytes),
            broker_msgs_by_kind_per_saga: broker_window
                .as_ref()
                .and_then(|w| w.by_kind_per(w.sagas)),
            broker_msgs_by_kind_per_create: broker_window
                .as_ref()
                .and_then(|w| w.by_kind_per(w.creates)),
            cpu_us_per_saga: phase.cost.as_ref().and_then(|c| cpu_per(&c.cpu, c.sagas)),
            cpu_us_per_create: phase.cost.as_ref().and_then(|c| cpu_per(&c.cpu, c.creates)),
            broker_window,
            baseline_publish_rps: baseline.as_ref().map(|b| b.publish_rps),
            baseline_p50_ms: baseline.as_ref().map(|b| b.latency.p50_ms),
            baseline_p99_ms: baseline.as_ref().map(|b| b.latency.p99_ms),
            baseline,
            ratios,
            sweep: Vec::new(),
            saga_p99_at_half_peak_ms: None,
            slo_p99_ms: None,
            slo_rps: None,
            slo_ratio: None,
            slo_bounded: None,
            slo_fail_rps: None,
            slo_search: Vec::new(),
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
        let s = &self.security;
        let _ = writeln!(
            out,
            "security: {} (gRPC {}, bearer token {}, NATS login {}, NATS TLS {})",
            s.mode,
            s.grpc,
            if s.bearer_token { "yes" } else { "no" },
            s.nats_auth,
            s.nats_tls
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
        if self.create_only {
            let _ = writeln!(out, "{:<22}not followed (--create-only)", "saga");
        } else {
            row(&mut out, "saga (to final event)", self.saga_rps, &saga);
        }
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
            if !self.create_only {
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
            }
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
        if !self.create_only {
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
        }
        self.cost_text(&mut out);
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
        self.slo_text(&mut out);
        out
    }

    /// The broker's traffic and the processes' CPU per unit of work.
    fn cost_text(&self, out: &mut String) {
        if let Some(w) = &self.broker_window {
            let line = |out: &mut String, unit: &str, figures: [Option<f64>; 5]| {
                if let [
                    Some(msgs),
                    Some(in_msgs),
                    Some(out_msgs),
                    Some(in_b),
                    Some(out_b),
                ] = figures
                {
                    let _ = writeln!(
                        out,
                        "broker per {unit}: {msgs:.1} messages ({in_msgs:.1} in, {out_msgs:.1} out), \
                         {in_b:.0} B in, {out_b:.0} B out"
                    );
                }
            };
            line(
                out,
                "saga",
                [
                    self.broker_msgs_per_saga,
                    self.broker_in_msgs_per_saga,
                    self.broker_out_msgs_per_saga,
                    self.broker_in_bytes_per_saga,
                    self.broker_out_bytes_per_saga,
                ],
            );
            line(
                out,
                "CreateOrder",
                [
                    self.broker_msgs_per_create,
                    self.broker_in_msgs_per_create,
                    self.broker_out_msgs_per_create,
                    self.broker_in_bytes_per_create,
                    self.broker_out_bytes_per_create,
                ],
            );
            let _ = writeln!(
                out,
                "broker window: {:.3} s, {} in, {} out ({} of them, {} B, to the bench's observer, left out above), \
                 {} sagas, {} CreateOrders",
                w.seconds,
                w.in_msgs,
                w.out_msgs,
                w.observer_msgs,
                w.observer_bytes,
                w.sagas,
                w.creates
            );
            for (unit, kinds) in [
                ("saga", &self.broker_msgs_by_kind_per_saga),
                ("CreateOrder", &self.broker_msgs_by_kind_per_create),
            ] {
                if let Some(kinds) = kinds {
                    let parts: Vec<String> = kinds
                        .iter()
                        .filter(|(_, n)| **n > 0.0)
                        .map(|(name, n)| format!("{name} {n:.3}"))
                        .collect();
                    let _ = writeln!(out, "broker per {unit} by kind: {}", parts.join(", "));
                }
            }
        }
        let cpu = |out: &mut String, unit: &str, per: &Option<PerProcess<f64>>| {
            let Some(per) = per else { return };
            let parts: Vec<String> = [
                ("order-service", per.order_service),
                ("payment-service", per.payment_service),
                ("nats-server", per.nats_server),
            ]
            .into_iter()
            .filter_map(|(name, us)| us.map(|us| format!("{name} {us:.0} us")))
            .collect();
            let _ = writeln!(out, "CPU per {unit}: {}", parts.join(", "));
        };
        cpu(out, "saga", &self.cpu_us_per_saga);
        cpu(out, "CreateOrder", &self.cpu_us_per_create);
    }

    /// The result of the search for the saga p99 goal.
    fn slo_text(&self, out: &mut String) {
        let Some(limit) = self.slo_p99_ms else { return };
        let _ = match (self.slo_rps, self.slo_bounded) {
            (Some(rps), Some(true)) => writeln!(
                out,
                "saga p99 <= {limit} ms up to {rps:.0} orders/s offered ({}x the closed-loop saga rate); {:.0}/s failed",
                self.slo_ratio
                    .map_or_else(|| "-".into(), |r| format!("{r:.3}")),
                self.slo_fail_rps.unwrap_or_default()
            ),
            (Some(rps), _) => writeln!(
                out,
                "saga p99 <= {limit} ms at every rate tried, up to {rps:.0} orders/s ({}x the closed-loop saga rate): \
                 the limit lies higher",
                self.slo_ratio
                    .map_or_else(|| "-".into(), |r| format!("{r:.3}"))
            ),
            (None, _) => writeln!(
                out,
                "saga p99 <= {limit} ms at no rate tried (lowest tried {:.0}/s)",
                self.slo_fail_rps.unwrap_or_default()
            ),
        };
        if !self.slo_search.is_empty() {
            let _ = writeln!(
                out,
                "bisection:{:>9}{:>11}{:>11}{:>10}{:>7}",
                "target/s", "sagas/s", "p99 ms", "late", "pass"
            );
            for p in &self.slo_search {
                let _ = writeln!(
                    out,
                    "{:>19.0}{:>11.1}{:>11.3}{:>10}{:>7}",
                    p.target_rps,
                    p.saga_rps,
                    p.saga_p99_ms,
                    p.late,
                    if p.slo_pass == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
        }
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
            slo_pass: None,
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
