//! `payment-service`: wiring only. See `orderflow_platform::main_loop` for the
//! process lifecycle and `app.rs` for what runs.

use std::process::ExitCode;

use orderflow_platform::main_loop::{Service, main as run_service};
use payment_service::{App, Config};

/// mimalloc instead of glibc malloc: under load glibc's `malloc`, `free`
/// and `malloc_consolidate` took about a third of the service's CPU
/// (docs/benchmarks.md has the profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let service = Service {
        binary: "payment-service",
        about: Config::ABOUT,
        vars: Config::vars(),
        parse: Config::from_lookup,
        telemetry: |config: &Config| &config.common.telemetry,
    };
    run_service(service, |config, shutdown| async move {
        App::build(config).await?.run_until_stopped(shutdown).await
    })
    .await
}
