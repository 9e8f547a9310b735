//! What every orderflow service needs around its domain.
//!
//! - [`admin`]: the dead-letter admin API both services serve.
//! - [`auth`]: bearer JWTs verified at the gRPC edge; admin-only methods.
//! - [`grpc_tls`]: TLS and mutual TLS, the plaintext health listener, reflection on/off.
//! - [`config`]: environment variables parsed once into typed settings, every
//!   bad variable reported together, `--help` generated from the same table.
//! - [`telemetry`]: the tracing subscriber (text or JSON logs) and the
//!   OpenTelemetry SDK with optional OTLP export, flushed on shutdown.
//! - [`server`]: the gRPC server bootstrap: the trace-context layer, health
//!   (driven by a readiness check), reflection v1 and v1alpha, graceful stop.
//! - [`main_loop`]: the whole `main` of a service, shared by both binaries.
//! - [`overload`]: the concurrency limit that sheds API calls beyond it.
//! - [`probe`]: `<service> probe`, the gRPC health check built into each binary.
//! - [`nats_config`]: NATS credentials (user and password, token, NKey, `.creds`)
//!   and TLS, from the environment.
//! - [`secret`]: secrets from `NAME` or `NAME_FILE`, in types that never print.
//! - [`status`]: field violations and the `google.rpc.BadRequest` status they become.
//! - [`shutdown`]: SIGTERM/SIGINT turned into one cancellation token.
//!
//! Nothing here knows about orders or payments.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod grpc_tls;
pub mod json_log;
pub mod main_loop;
pub mod nats_config;
pub mod overload;
pub mod paging;
pub mod probe;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
