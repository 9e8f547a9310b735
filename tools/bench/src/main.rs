//! `orderflow-bench`: the load generator and benchmark of orderflow.
//!
//! ```text
//! orderflow-bench [OPTIONS]            CreateOrder load, saga completion, --baseline, --sweep
//! orderflow-bench otlp-sink --addr A   an OTLP/gRPC receiver that counts spans and discards them
//! orderflow-bench startup --bin PATH   start-to-SERVING time and idle RSS of a service binary
//! orderflow-bench plot --from R.json   redraw the sweep's SVG from a saved report
//! orderflow-bench bare-order-server    a bare CreateOrder (publish, await the ack): the reference
//! ```
//!
//! `scripts/bench.sh` starts a broker and both services and runs all of it;
//! `docs/benchmarks.md` explains the method and shows the figures. This file
//! is the command line only; each job lives in its own module.

mod bare_server;
mod baseline;
mod bench;
mod cost;
mod load;
mod monitor;
mod otlp_sink;
mod progress;
mod report;
mod saga;
mod schedule;
mod slo;
mod startup;
mod stats;
mod svg;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::schedule::{parse_duration, parse_fractions};

/// Load generator and benchmark of orderflow.
///
/// Without a subcommand it sends CreateOrder to the order service, closed
/// loop (--concurrency requests in flight) or open loop (--rate requests per
/// second), follows every order until its saga ends (final event on
/// orders.>), and reports throughput and latency percentiles. The table (or
/// one JSON object with --json) goes to stdout, the progress line to stderr.
#[derive(Debug, Parser)]
#[command(
    name = "orderflow-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive OTLP/gRPC traces and metrics, count them, discard them; print
    /// the counts as JSON on SIGTERM or Ctrl-C.
    OtlpSink {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:4317")]
        addr: SocketAddr,
    },
    /// Redraw the sweep's SVG plot from a saved `--sweep --json` report.
    Plot {
        /// The JSON report.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the SVG.
        #[arg(long, default_value = "bench-latency.svg")]
        svg: PathBuf,
    },
    /// Start a service binary several times and measure start to SERVING and
    /// idle RSS. The binary inherits the environment (set NATS_URL); its
    /// GRPC_ADDR is a free loopback port.
    Startup {
        /// The service binary, e.g. target/release/order-service.
        #[arg(long = "bin")]
        binary: PathBuf,
        /// How many starts.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// How long to leave it idle before reading its memory.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        idle: Duration,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve a bare OrderService.CreateOrder (publish one OrderCreated to a
    /// scratch stream, await the ack, answer; nothing else) and
    /// grpc.health.v1, until SIGTERM or Ctrl-C: the reference the order
    /// service's CreateOrder is compared with (`scripts/bench.sh --bare`).
    BareOrderServer {
        /// The NATS server of the scratch stream `BENCH_BARE`.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Where to listen; with port 0 a free one, the bound address is
        /// printed to stderr as `bare-order-server: listening on ADDR`.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
}

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
    pub svg: PathBuf,
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
    /// A label copied into the report, e.g. tracing-on.
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Fractions of the peak rate, sorted (a newtype, because clap reads a
/// `Vec` field as a repeated flag).
#[derive(Clone, Debug)]
pub struct Fractions(pub Vec<f64>);

/// The services' allocator, so the load generator spends as little CPU as
/// they do per message and leaves the rest of the machine to them, and so
/// `bare-order-server` allocates as the order service does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => bench::run(cli.run).await,
        Some(Command::OtlpSink { addr }) => otlp_sink::run(addr).await,
        Some(Command::Plot { from, svg }) => plot_command(&from, &svg),
        Some(Command::Startup {
            binary,
            runs,
            idle,
            json,
        }) => startup_command(&binary, runs, idle, json).await,
        Some(Command::BareOrderServer { nats_url, listen }) => {
            bare_server::run(&nats_url, listen).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("orderflow-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn plot_command(from: &std::path::Path, svg: &std::path::Path) -> Result<(), String> {
    let json = std::fs::read_to_string(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let context: report::SweepContext = serde_json::from_str(&json).map_err(|e| {
        format!(
            "{} is not a report of `orderflow-bench --sweep --json`: {e}",
            from.display()
        )
    })?;
    if context.sweep.is_empty() {
        return Err(format!(
            "{} has no sweep; run the bench with --sweep",
            from.display()
        ));
    }
    std::fs::write(svg, svg::render(&report::sweep_plot(&context)))
        .map_err(|e| format!("cannot write {}: {e}", svg.display()))
}

async fn startup_command(
    binary: &std::path::Path,
    runs: usize,
    idle: Duration,
    json: bool,
) -> Result<(), String> {
    let report = startup::run(binary, runs, idle).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", report.binary);
        for (i, run) in report.runs.iter().enumerate() {
            println!(
                "  run {}: start to SERVING {:>8.1} ms, idle RSS {:>6.1} MiB (peak {:.1} MiB)",
                i + 1,
                run.start_to_serving_ms,
                run.idle_rss_mib,
                run.peak_rss_mib
            );
        }
        println!(
            "  median: start to SERVING {:.1} ms, idle RSS {:.1} MiB",
            report.median_start_to_serving_ms, report.median_idle_rss_mib
        );
    }
    Ok(())
}
