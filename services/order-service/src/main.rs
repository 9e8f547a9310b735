//! `order-service`: wiring only. See `orderflow_platform::main_loop` for the
//! process lifecycle and `app.rs` for what runs.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: under load glibc's `malloc`, `free`
/// and `malloc_consolidate` took about a third of the service's CPU
/// (docs/benchmarks.md has the profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    orderflow_platform::main_loop::run::<order_service::App>()
}
