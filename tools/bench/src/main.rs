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
//! is the command line only; each job lives in its own module, and the main
//! job's many flags (`RunArgs`) live with it in `bench.rs`, which reads
//! every one of them.

mod bare_server;
mod baseline;
mod bench;
mod cost;
mod kinds;
mod load;
mod monitor;
mod otlp_sink;
mod progress;
mod report;
mod saga;
mod schedule;
mod secure;
mod slo;
mod startup;
mod stats;
mod svg;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::{bench::RunArgs, schedule::parse_duration};

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
