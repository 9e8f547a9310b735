//! The `main` of every service: `.env`, `--help`, configuration, telemetry,
//! run until a signal, flush, exit code.
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad configuration or usage
//! (printed as one message naming every bad variable), 1 when the service
//! could not start or failed while running.

use std::{future::Future, process::ExitCode};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{self, ConfigError, Lookup, TelemetryConfig, Var},
    server::ServeError,
    shutdown, telemetry,
};

/// What a service's `main` passes in.
pub struct Service<C> {
    /// The binary's name.
    pub binary: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Every variable the service reads.
    pub vars: Vec<Var>,
    /// Parses the configuration.
    pub parse: fn(&dyn Lookup) -> Result<C, ConfigError>,
    /// The telemetry part of the configuration.
    pub telemetry: fn(&C) -> &TelemetryConfig,
}

/// Runs a service process from its arguments and environment to its exit
/// code; `run` builds and runs the service until the token is cancelled.
pub async fn main<C, F, Fut>(service: Service<C>, run: F) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    let name = service.binary;
    // A missing .env is normal; only a malformed one is worth reporting.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("{name}: cannot read .env: {error}");
        return ExitCode::from(2);
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        // Where the service itself serves health in plaintext: its health
        // listener when it has one (the API port may need TLS), else
        // GRPC_ADDR, or its default from the variable table.
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let addr = set("GRPC_HEALTH_ADDR")
            .or_else(|| set("GRPC_ADDR"))
            .unwrap_or_else(|| {
                service
                    .vars
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
    match config::command(args, name, service.about, &service.vars) {
        config::Command::Run => {}
        config::Command::Print(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        config::Command::Usage(text) => {
            eprintln!("{text}");
            return ExitCode::from(2);
        }
    }
    let config = match (service.parse)(&config::ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init((service.telemetry)(&config)) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let code = match run(config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{name} stopped with an error");
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    };
    // Flushing blocks until the exporters answer; let the runtime's other
    // workers run the export requests meanwhile.
    tokio::task::block_in_place(|| telemetry.shutdown());
    code
}
