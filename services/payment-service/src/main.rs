//! `payment-service`: wiring only. Configuration, telemetry, the app, signals.

use std::process::ExitCode;

use orderflow_platform::{config, shutdown, telemetry};
use payment_service::{App, Config};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; only a malformed one is worth reporting.
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("payment-service: cannot read .env: {error}");
        return ExitCode::from(2);
    }
    let vars = Config::vars();
    match config::command(std::env::args(), "payment-service", Config::ABOUT, &vars) {
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
    let config = match Config::from_lookup(&config::ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("payment-service: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(&config.common.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("payment-service: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match App::build(config).await {
        Ok(app) => app.run_until_stopped(shutdown::on_signal()).await,
        Err(error) => Err(error),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "payment-service stopped with an error");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
