//! The benchmark itself: check the system end to end with one order, measure
//! the baseline, run the load, optionally sweep open-loop rates, report.
//!
//! The order of the phases matters. The probe order comes first so that a
//! misconfigured run (payment service missing, wrong NATS server) fails in
//! seconds with a message instead of after the whole load; it also gives the
//! exact size of this run's `OrderCreated` events, which the baseline then
//! publishes. The baseline runs before the load, while the services are idle,
//! so it measures the broker alone.
//!
//! With `--create-only` the load is CreateOrder alone: the bench observes
//! only the probe's `OrderCreated` (for its size), then unsubscribes, so the
//! broker carries nothing for the bench during the load, and no phase waits
//! for sagas.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use prost::Message as _;

use crate::{
    baseline,
    cost::{Pids, Sampler},
    load::{self, CreateStats, Driver, Length, Mode, Orders},
    monitor::MonitorUrl,
    progress::Progress,
    report::{self, Report, Setup, SweepPoint},
    saga::{self, SagaTracker, Tap},
    schedule::{Schedule, parse_duration, parse_fractions},
    secure::{NatsLogin, Security, SecurityArgs},
    slo::{self, Bracket},
    stats::{ratio, round3},
    svg,
};

/// The benchmark's flags.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// The order service.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// The NATS server both services use (the bench watches orders.> there,
    /// and publishes the baseline there).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Closed loop: requests in flight. Also the baseline's publishes in
    /// flight, and the open loop's in-flight cap unless --max-in-flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: requests per second, sent on schedule whatever the
    /// answers; latency counts from when each request was due.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Open loop: at most this many requests in flight (bounds memory when
    /// the server falls behind; the schedule then slips and the latencies
    /// show it).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// How long to measure, after the warm-up (10s, 500ms, 2m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Load sent before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// gRPC connections to the order service, used round-robin.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// How long to wait for the last sagas after the load stops.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub saga_timeout: Duration,
    /// Also measure raw JetStream acked publishes (same payload size, same
    /// in flight, same server) and give every figure as a ratio to it.
    #[arg(long)]
    pub baseline: bool,
    /// How long the baseline measures (default: --duration).
    #[arg(long, value_parser = parse_duration)]
    pub baseline_duration: Option<Duration>,
    /// After the closed-loop run, run open loop at fractions of its peak
    /// (the lower of the CreateOrder and saga rates) and draw
    /// latency-versus-throughput to --svg.
    #[arg(long)]
    pub sweep: bool,
    /// The sweep's fractions of the peak.
    #[arg(long, default_value = "0.1,0.25,0.5,0.75,0.9,1.0", value_parser = |s: &str| parse_fractions(s).map(Fractions))]
    pub sweep_fractions: Fractions,
    /// How long each sweep point measures (default: --duration).
    #[arg(long, value_parser = parse_duration)]
    pub sweep_duration: Option<Duration>,
    /// Where the sweep writes its SVG plot.
    #[arg(long, default_value = "bench-latency.svg")]
    pub svg: std::path::PathBuf,
    /// The saga p99 goal, ms: after the sweep, the highest open-loop rate
    /// that meets it is searched by bisection (`slo_rps`).
    #[arg(long, default_value_t = 25.0)]
    pub slo_p99_ms: f64,
    /// How many extra open-loop runs (of --sweep-duration each) the
    /// bisection may take; 0 reports the best sweep point only.
    #[arg(long, default_value_t = 3)]
    pub slo_steps: usize,
    /// nats-server's monitoring endpoint (`nats-server -m PORT`), e.g.
    /// http://127.0.0.1:8222: its /varz counters are read right before and
    /// after the main phase's measured window, to report the broker's
    /// messages and bytes per saga and per CreateOrder (the bench's own
    /// observer deliveries left out).
    #[arg(long)]
    pub nats_monitor_url: Option<String>,
    /// The order service's pid (repeatable; several add up): its CPU time in
    /// the measured window is reported per saga and per CreateOrder.
    #[arg(long = "order-pid")]
    pub order_pids: Vec<u32>,
    /// The payment service's pid (repeatable).
    #[arg(long = "payment-pid")]
    pub payment_pids: Vec<u32>,
    /// nats-server's pid (repeatable).
    #[arg(long = "nats-pid")]
    pub nats_pids: Vec<u32>,
    /// Measure CreateOrder alone: send the load without following sagas
    /// (run the order service without the payment service, so nothing else
    /// consumes its events). The probe checks CreateOrder only.
    #[arg(long)]
    pub create_only: bool,
    /// Also count the broker's messages by kind (appends, acks, deliveries,
    /// pulls, reads; `broker_msgs_by_kind_per_saga`) by tapping the traffic
    /// with plain subscriptions: their copies are left out of every figure,
    /// but they cost the broker CPU, so a run with it measures counts only.
    /// Its NATS user must be allowed to subscribe to `orders.>`,
    /// `payments.>`, `$JS.ACK.>`, `$JS.API.>` and `_INBOX.>`.
    #[arg(long)]
    pub by_kind: bool,
    /// A label copied into the report, e.g. tracing-on.
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// TLS, bearer token and NATS login of a secured deployment.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Fractions of the peak rate, sorted (a newtype, because clap reads a
/// `Vec` field as a repeated flag).
#[derive(Clone, Debug)]
pub struct Fractions(pub Vec<f64>);

/// How long the probe order may take, CreateOrder and saga together.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks the flags that clap cannot check alone.
fn validate(args: &RunArgs) -> Result<(), String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if args.duration.is_zero() && args.count.is_none() {
        return Err("--duration must be longer than 0".into());
    }
    if let Some(rate) = args.rate
        && Schedule::new(rate).is_none()
    {
        return Err(format!(
            "--rate must be a positive number of requests per second, got {rate}"
        ));
    }
    if args.sweep && args.create_only {
        return Err(
            "--sweep measures sagas, which --create-only does not follow; leave out one of them"
                .into(),
        );
    }
    if !(args.slo_p99_ms.is_finite() && args.slo_p99_ms > 0.0) {
        return Err(format!(
            "--slo-p99-ms must be a positive number of milliseconds, got {}",
            args.slo_p99_ms
        ));
    }
    if args.sweep && args.rate.is_some() {
        return Err(
            "--sweep scales the peak of a closed-loop run; leave out --rate (use --concurrency)"
                .into(),
        );
    }
    Ok(())
}

/// A name for this run's orders, unique across runs against the same broker.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos, std::process::id())
}

/// The size of an `OrderCreated` for this run's requests, should the probe's
/// event not have been seen: the event carries the order as committed, with
/// a UUID and two timestamps added to the request.
fn estimated_event_bytes(orders: &Orders) -> usize {
    let request = orders.request(1_000_000);
    let now = prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 123_456_789,
    };
    crate::bare_server::created_event("00000000-0000-5000-8000-000000000000".into(), request, now)
        .encoded_len()
}

async fn nats(
    url: &str,
    login: &NatsLogin,
    name: &str,
    tracker: Option<Arc<SagaTracker>>,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        // Room for a long burst of events while the bench is descheduled; a
        // full buffer drops events (counted, and shown in the report).
        .subscription_capacity(1 << 20);
    if let Some(tracker) = tracker {
        options = options.event_callback(move |event| {
            let tracker = tracker.clone();
            async move {
                if matches!(event, async_nats::Event::SlowConsumer(_)) {
                    tracker.note_dropped();
                }
            }
        });
    }
    login
        .apply(options)?
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}; {}", login.hint()))
}

/// Runs the benchmark and prints the report.
pub async fn run(args: RunArgs) -> Result<(), String> {
    validate(&args)?;
    let security = Security::load(&args.security, &args.target)?;
    let monitor = args
        .nats_monitor_url
        .as_deref()
        .map(MonitorUrl::parse)
        .transpose()?;
    if let Some(monitor) = &monitor {
        // A wrong URL fails now, not after the load.
        monitor.varz().await.map_err(|e| {
            format!("cannot read nats-server's monitoring endpoint: {e}; is it running with -m?")
        })?;
    }
    let orders = Arc::new(Orders::new(&run_id()));
    let tracker = Arc::new(SagaTracker::new(orders.customer_prefix().to_owned()));
    let observer_client = nats(
        &args.nats_url,
        &security.nats,
        "orderflow-bench-observer",
        Some(tracker.clone()),
    )
    .await?;
    let mut observer = Some(saga::observe(&observer_client, tracker.clone()).await?);
    let tap = if args.by_kind {
        Some(Tap::start(&observer_client, tracker.clone()).await?)
    } else {
        None
    };
    let driver = Driver {
        clients: load::connect(&args.target, args.connections, &security).await?,
        orders: orders.clone(),
        tracker: tracker.clone(),
        follow_sagas: !args.create_only,
        tls: security.grpc_tls.is_some(),
    };
    driver.probe(PROBE_TIMEOUT).await?;
    let event_bytes = tracker.created_event_bytes();
    if args.create_only
        && let Some(observer) = observer.take()
    {
        observer.stop().await?;
    }

    let baseline = if args.baseline {
        let payload = event_bytes.unwrap_or_else(|| estimated_event_bytes(&orders));
        let client = nats(
            &args.nats_url,
            &security.nats,
            "orderflow-bench-baseline",
            None,
        )
        .await?;
        if !args.quiet {
            eprintln!(
                "baseline: raw JetStream publishes, {} in flight, {payload} B, {:.1} s...",
                args.concurrency,
                args.baseline_duration
                    .unwrap_or(args.duration)
                    .as_secs_f64()
            );
        }
        Some(
            baseline::run(
                client,
                args.concurrency,
                payload,
                args.warmup,
                args.baseline_duration.unwrap_or(args.duration),
            )
            .await?,
        )
    } else {
        None
    };

    let (mode, setup_concurrency) = match args.rate.and_then(Schedule::new) {
        Some(schedule) => (
            Mode::Open {
                schedule,
                max_in_flight: args.max_in_flight,
            },
            args.max_in_flight,
        ),
        None => (
            Mode::Closed {
                concurrency: args.concurrency,
            },
            args.concurrency,
        ),
    };
    let length = args
        .count
        .map_or(Length::Time(args.duration), Length::Count);
    let sampler = Sampler::new(
        monitor,
        Pids {
            order_service: args.order_pids.clone(),
            payment_service: args.payment_pids.clone(),
            nats_server: args.nats_pids.clone(),
        },
        tracker.clone(),
    )
    .map(Arc::new);
    let stats = Arc::new(CreateStats::default());
    let progress = Progress::start("load".into(), args.quiet, stats.clone(), tracker.clone());
    let (cpu_before, wall_before) = (report::cpu_time(), Instant::now());
    let phase = driver
        .run(mode, args.warmup, length, args.saga_timeout, stats, sampler)
        .await?;
    let bench_cpu_percent = match (cpu_before, report::cpu_time()) {
        (Some(before), Some(after)) => Some(
            (after.saturating_sub(before).as_secs_f64() / wall_before.elapsed().as_secs_f64()
                * 100.0)
                .round(),
        ),
        _ => None,
    };
    drop(progress);

    let setup = Setup {
        label: args.label.clone(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        concurrency: setup_concurrency,
        target_rps: args.rate,
        connections: args.connections,
        warmup_s: args.warmup.as_secs_f64(),
        create_only: args.create_only,
        security: security.mode(),
    };
    let mut report = Report::new(setup, &phase, baseline, event_bytes, tracker.dropped());
    report.bench_cpu_percent = bench_cpu_percent;

    if args.sweep {
        sweep(&args, &driver, &mut report).await?;
    }
    report.observer_dropped = tracker.dropped();
    report.sagas_observed_total = tracker.completed_total();
    if let Some(observer) = &observer {
        observer.abort();
    }
    if let Some(tap) = &tap {
        tap.stop();
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| format!("cannot write JSON: {e}"))?
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Open-loop runs at fractions of the closed-loop peak, then the plot.
async fn sweep(args: &RunArgs, driver: &Driver, report: &mut Report) -> Result<(), String> {
    let peak = report.peak_rps();
    if peak < 1.0 {
        return Err(format!(
            "the closed-loop run reached {peak:.1} orders/s; too little to sweep"
        ));
    }
    for &fraction in &args.sweep_fractions.0 {
        if let Some(point) = open_loop_point(args, driver, "sweep", fraction * peak, peak).await? {
            report.sweep.push(point);
        }
    }
    slo_search(args, driver, report, peak).await?;
    report.saga_p99_at_half_peak_ms = report
        .sweep
        .iter()
        .find(|p| (p.fraction - 0.5).abs() < 1e-9)
        .map(|p| p.saga_p99_ms);
    let svg = svg::render(&report::sweep_plot(&report::SweepContext::from(&*report)));
    std::fs::write(&args.svg, svg)
        .map_err(|e| format!("cannot write {}: {e}", args.svg.display()))?;
    if !args.quiet {
        eprintln!("wrote {}", args.svg.display());
    }
    Ok(())
}

/// One open-loop run at `rate` for the sweep's duration, as a sweep point
/// (`peak` gives its fraction); `None` for a rate that is no rate.
async fn open_loop_point(
    args: &RunArgs,
    driver: &Driver,
    name: &str,
    rate: f64,
    peak: f64,
) -> Result<Option<SweepPoint>, String> {
    let Some(schedule) = Schedule::new(rate) else {
        return Ok(None);
    };
    let stats = Arc::new(CreateStats::default());
    let progress = Progress::start(
        format!("{name} {:.0}/s", schedule.rate()),
        args.quiet,
        stats.clone(),
        driver.tracker.clone(),
    );
    let phase = driver
        .run(
            Mode::Open {
                schedule,
                max_in_flight: args.max_in_flight,
            },
            args.warmup,
            Length::Time(args.sweep_duration.unwrap_or(args.duration)),
            args.saga_timeout,
            stats,
            None,
        )
        .await?;
    drop(progress);
    let mut point = SweepPoint::new(rate / peak, rate, &phase);
    point.slo_pass = Some(slo::passes(&point, args.slo_p99_ms));
    Ok(Some(point))
}

/// The highest rate that meets the saga p99 goal: the bracket of the sweep's
/// points, narrowed by up to `--slo-steps` more runs.
async fn slo_search(
    args: &RunArgs,
    driver: &Driver,
    report: &mut Report,
    peak: f64,
) -> Result<(), String> {
    let mut bracket = Bracket::from_points(
        report
            .sweep
            .iter()
            .map(|p| (p.target_rps, p.slo_pass == Some(true))),
    );
    for _ in 0..args.slo_steps {
        let Some(rate) = bracket.next_rate() else {
            break;
        };
        let Some(point) = open_loop_point(args, driver, "slo", rate, peak).await? else {
            break;
        };
        bracket.record(rate, point.slo_pass == Some(true));
        report.slo_search.push(point);
    }
    report.slo_p99_ms = Some(args.slo_p99_ms);
    report.slo_rps = bracket.pass.map(round3);
    report.slo_ratio = bracket.pass.and_then(|rps| ratio(rps, report.saga_rps));
    report.slo_bounded = Some(bracket.bounded());
    report.slo_fail_rps = bracket.fail.map(round3);
    Ok(())
}
