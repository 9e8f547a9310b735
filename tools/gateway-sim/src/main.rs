//! `gateway-sim`: the card gateway simulator's command line. Every flag has
//! a `GATEWAY_SIM_*` environment twin; docs/gateway-sim.md lists them.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use orderflow_gateway_sim::{
    Running, Settings,
    knobs::{DEFAULT_DECLINE_ABOVE_MINOR, Knobs, Outage},
};

/// A card gateway simulator with an idempotent charge and refund API and a
/// ledger on disk that survives restarts.
///
/// It prints `listening on http://ADDR` on stdout once it accepts calls.
/// SIGTERM or Ctrl-C stops it after the calls in flight; SIGKILL loses
/// nothing it answered, since every operation is fsynced before its answer.
#[derive(Debug, Parser)]
#[command(name = "gateway-sim", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "GATEWAY_SIM_ADDR", default_value = "127.0.0.1:8099")]
    addr: SocketAddr,
    /// Directory of the ledger (ledger.jsonl); created if missing.
    #[arg(
        long,
        env = "GATEWAY_SIM_DATA_DIR",
        default_value = ".orderflow/gateway-sim"
    )]
    data_dir: PathBuf,
    /// Latency added to every charge and refund, in milliseconds.
    #[arg(long, env = "GATEWAY_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Up to this many more milliseconds, drawn per call.
    #[arg(long, env = "GATEWAY_SIM_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,
    /// Fraction (0 to 1) of calls answered 503 and not recorded.
    #[arg(long, env = "GATEWAY_SIM_FAILURE_RATE", default_value_t = 0.0, value_parser = rate)]
    failure_rate: f64,
    /// Fraction (0 to 1) of calls recorded, then answered 503 (a lost answer).
    #[arg(long, env = "GATEWAY_SIM_LOST_ANSWER_RATE", default_value_t = 0.0, value_parser = rate)]
    lost_answer_rate: f64,
    /// Charges above this many minor units are declined (and recorded).
    #[arg(long, env = "GATEWAY_SIM_DECLINE_ABOVE_MINOR", default_value_t = DEFAULT_DECLINE_ABOVE_MINOR)]
    decline_above_minor: u64,
    /// Start in an outage: every charge and refund answered 503 until
    /// `POST /control` ends it.
    #[arg(long, env = "GATEWAY_SIM_OUTAGE")]
    outage: bool,
    /// Seed of the fault draws; without it one is taken from the clock and
    /// logged, so a run can be repeated.
    #[arg(long, env = "GATEWAY_SIM_SEED")]
    seed: Option<u64>,
}

fn rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(String::from("expected a number from 0 to 1")),
    }
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let settings = Settings {
        data_dir: cli.data_dir,
        knobs: Knobs {
            latency: Duration::from_millis(cli.latency_ms),
            jitter: Duration::from_millis(cli.jitter_ms),
            failure_rate: cli.failure_rate,
            lost_answer_rate: cli.lost_answer_rate,
            decline_above_minor: cli.decline_above_minor,
            outage: if cli.outage { Outage::On } else { Outage::Off },
        },
        seed,
    };
    let running = match Running::start(settings.clone(), cli.addr).await {
        Ok(running) => running,
        Err(error) => {
            tracing::error!(%error, "gateway-sim cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %running.addr(),
        data_dir = %settings.data_dir.display(),
        operations = running.entries().len(),
        seed,
        "gateway-sim started"
    );
    println!("listening on {}", running.url());
    match running.stop_when(terminated()).await {
        Ok(()) => {
            tracing::info!("gateway-sim stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "gateway-sim failed");
            ExitCode::FAILURE
        }
    }
}
