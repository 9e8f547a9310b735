//! The `main` of every service: `.env`, `--help`, configuration, telemetry,
//! run until a signal, the shutdown's phases, exit code.
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad configuration or usage
//! (printed as one message naming every bad variable), 1 when the service
//! could not start or failed while running.

use std::{future::Future, process::ExitCode};

use crate::{
    config::{self, Lookup},
    server::{self, ServeError},
    service_config::{CommonConfig, ServiceConfig, TOKIO_WORKER_THREADS, parse_worker_threads},
    shutdown::{self, Shutdown},
    telemetry,
};
use orderflow_eventbus::aggregate::{AggregateStore, Kind};

/// A service as its binary runs it: built from its configuration, run
/// until told to stop. Each service's `App` implements it, so each binary's
/// `main` is one call of [`main`]. (Not `Service`: that is tower's request
/// handler, which these programs also implement.)
pub trait Program: Sized + Send + 'static {
    /// Its configuration.
    type Config: ServiceConfig;
    /// The aggregates whose events `migrate-subjects` moves (those the
    /// service writes).
    type Aggregate: Kind;

    /// Does everything that can fail at start-up (connect, streams, bind),
    /// so `main` reports it before serving.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, ServeError>> + Send;

    /// Serves until `shutdown` is requested, then runs its phases up to
    /// draining NATS (`main` flushes telemetry after).
    fn run_until_stopped(
        self,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), ServeError>> + Send;
}

/// What the process was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Serve until a signal.
    Serve,
    /// Move the service's stored events to this version's subjects and
    /// exit (`migrate-subjects`).
    MigrateSubjects,
}

/// The binaries' `main`: reads `.env`, builds the async runtime and runs
/// [`main`] on it.
///
/// The runtime is built here rather than by `#[tokio::main]` so that
/// `TOKIO_WORKER_THREADS` is read like every other variable: tokio panics
/// on a value it cannot parse, where here a bad value starts the runtime
/// with its default and [`main`] reports it with the rest of the
/// configuration (exit code 2). The worker count matters: on a host with
/// more CPUs than the service needs, each extra worker adds cross-thread
/// wake-ups and stolen tasks to every call (docs/benchmarks.md).
pub fn run<S: Program>() -> ExitCode {
    let name = S::Config::NAME;
    // A missing .env is normal; only a malformed one is worth reporting.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("{name}: cannot read .env: {error}");
        return ExitCode::from(2);
    }
    // Always set explicitly: left unset, tokio would read the variable
    // itself, and panic on a bad value.
    let workers = config::ProcessEnv
        .get(TOKIO_WORKER_THREADS.name)
        .and_then(|v| parse_worker_threads(v.trim()).ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(main::<S>()),
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs service `S` from its arguments and environment (`.env` already
/// loaded by [`run`]) to its exit code: serving until a signal, or
/// migrating its stored events once.
pub async fn main<S: Program>() -> ExitCode {
    let name = S::Config::NAME;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        // Where the service itself serves health in plaintext: its health
        // listener when it has one (the API port may need TLS), else
        // GRPC_ADDR, or its default from the variable table.
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let addr = set("GRPC_HEALTH_ADDR")
            .or_else(|| set("GRPC_ADDR"))
            .unwrap_or_else(|| {
                S::Config::vars()
                    .iter()
                    .find(|v| v.name == "GRPC_ADDR")
                    .and_then(|v| v.default)
                    .unwrap_or_default()
                    .to_owned()
            });
        return match crate::probe::parse(&args[2..], &addr) {
            Ok(probe) => crate::probe::run(&probe).await,
            Err(error) => {
                eprintln!("{name} probe: {error}\n{}", crate::probe::usage(name));
                ExitCode::from(2)
            }
        };
    }
    let mode = match config::command(args, name, S::Config::ABOUT, &S::Config::vars()) {
        config::Command::Run => Mode::Serve,
        config::Command::MigrateSubjects => Mode::MigrateSubjects,
        config::Command::Print(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        config::Command::Usage(text) => {
            eprintln!("{text}");
            return ExitCode::from(2);
        }
    };
    let config = match S::Config::from_lookup(&config::ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(&config.common().telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    // The signal is caught in both modes: serving stops by it, and a
    // migration runs to its end instead of stopping between an aggregate's
    // copies.
    let shutdown = Shutdown::configured(config.common(), shutdown::on_signal()).flushing(telemetry);
    let ran = match mode {
        Mode::Serve => serve::<S>(config, shutdown.clone()).await,
        Mode::MigrateSubjects => migrate_subjects::<S::Aggregate>(config.common(), name).await,
    };
    let code = match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} stopped with an error");
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    };
    // Last, so the line above is exported too.
    shutdown.finish();
    code
}

async fn serve<S: Program>(config: S::Config, shutdown: Shutdown) -> Result<(), ServeError> {
    S::build(config).await?.run_until_stopped(shutdown).await
}

/// `<service> migrate-subjects`: copies the aggregates of kind `K` stored
/// under the subjects of orderflow 0.1 (`<prefix>.<id>`) to this version's,
/// prints what it did, and returns. Run it with every replica of both
/// services stopped, the payment service's first (docs/events.md); it can
/// be run again safely.
pub async fn migrate_subjects<K: Kind>(
    common: &CommonConfig,
    name: &str,
) -> Result<(), ServeError> {
    let (client, js) = server::connect_jetstream(common, name).await?;
    let report = AggregateStore::<K>::new(js).migrate_legacy().await?;
    println!(
        "{}: {} found under the old subjects, {} copied, {} already moved, {} not readable (see the log)",
        K::PREFIX,
        report.found,
        report.moved,
        report.present,
        report.unreadable
    );
    let _ = client.drain().await;
    Ok(())
}
