//! What every orderflow service needs around its domain.
//!
//! - [`admin`]: the dead-letter admin API both services serve.
//! - [`auth`]: bearer JWTs verified at the gRPC edge; admin-only methods.
//! - [`grpc_tls`]: TLS and mutual TLS, the plaintext health listener, reflection on/off.
//! - [`config`]: how environment variables are declared and read: every bad
//!   variable reported together, `--help` generated from the same table.
//! - [`service_config`]: the settings every service has, assembled from each
//!   concern's own variables, and what `main` needs of a service's configuration.
//! - [`telemetry`]: the tracing subscriber (text or JSON logs) and the
//!   OpenTelemetry SDK with optional OTLP export, flushed on shutdown.
//! - [`json_log`]: the `LOG_FORMAT=json` line, with the current trace and span ids.
//! - [`server`]: the gRPC server bootstrap: the layers around each API service, health
//!   (driven by a readiness check), reflection v1 and v1alpha, graceful stop.
//! - [`main_loop`]: the whole `main` of a service, shared by both binaries.
//! - [`overload`]: the concurrency limit that sheds API calls beyond it.
//! - [`broker_gate`]: API calls answered `UNAVAILABLE` at once, with
//!   `RetryInfo`, while NATS is known to be unreachable.
//! - [`throttle`]: warnings that would repeat on every call said at most once
//!   per interval, with a count.
//! - [`probe`]: `<service> probe`, the gRPC health check built into each binary.
//! - [`nats_config`]: the NATS URLs, credentials (user and password, token,
//!   NKey, `.creds`) and TLS, from the environment.
//! - [`secret`]: secrets from `NAME` or `NAME_FILE`, in types that never print.
//! - [`status`]: field violations and the `google.rpc.BadRequest` status they become.
//! - [`paging`]: page tokens and page sizes of the list RPCs.
//! - [`shutdown`]: SIGTERM/SIGINT turned into one cancellation token, and the
//!   phases of a stop, in order, up to flushing telemetry, owned by one object.
//!
//! Which module uses which, from the leaves up (each line uses only modules
//! of the lines above it; there is no cycle):
//!
//! 1. `config`, `json_log`, `status`, `probe`, `overload`, `throttle`: use no
//!    other module.
//! 2. `broker_gate` (throttle), `secret` (config), `grpc_tls` (config), `telemetry` (config,
//!    json_log), `paging` (status).
//! 3. `auth` (config, secret), `nats_config` (config, secret),
//!    `admin` (paging, status).
//! 4. `service_config`: config and the concerns (nats_config, telemetry,
//!    grpc_tls, auth).
//! 5. `shutdown`: service_config (the delays), telemetry (flushed last).
//! 6. `server`: service_config, admin, auth, grpc_tls, nats_config, overload,
//!    broker_gate, shutdown.
//! 7. `main_loop`: config, service_config, server, telemetry, probe, shutdown.
//!
//! Nothing here knows about orders or payments.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod broker_gate;
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
pub mod service_config;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod throttle;
