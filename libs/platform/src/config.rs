//! Configuration from environment variables, parsed once.
//!
//! Every variable is declared once as a [`Var`]: its name, default and
//! meaning. The same table parses the environment and prints `--help`, so the
//! two cannot drift. Variables are read through [`Lookup`], so tests pass a
//! map instead of mutating the process environment, and every bad variable is
//! collected before start-up fails, so an operator fixes them all in one go.
//!
//! clap is not used: it stops at the first bad value and parses flags, while
//! the contract of orderflow is environment variables reported all at once.

use std::{collections::HashMap, fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

/// One environment variable of a service.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, when it has one (shown by `--help`).
    pub default: Option<&'static str>,
    /// What it means, in one line.
    pub help: &'static str,
}

/// Where variables are read from.
pub trait Lookup {
    /// The value of `name`, when set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment (after `.env` was loaded by `dotenvy`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Lookup for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}\nRun with --help to see every variable, its default and its meaning.", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per bad variable, each starting with its name.
    pub problems: Vec<String>,
}

/// Reads variables and collects every problem.
pub struct EnvReader<'a> {
    lookup: &'a dyn Lookup,
    problems: Vec<String>,
}

impl<'a> EnvReader<'a> {
    /// A reader over `lookup`.
    pub fn new(lookup: &'a dyn Lookup) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The raw value of `var` (or its default); empty values count as unset.
    pub fn raw(&self, var: &Var) -> Option<String> {
        self.lookup
            .get(var.name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| var.default.map(str::to_owned))
    }

    /// The value of `name` exactly as set, for secrets (which are never
    /// echoed, trimmed or defaulted).
    pub(crate) fn lookup_raw(&self, name: &str) -> Option<String> {
        self.lookup.get(name)
    }

    /// Parses `var` (or its default) as `T`; a bad value is recorded and
    /// `None` returned.
    pub fn parse<T>(&mut self, var: &Var) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.raw(var)?;
        match raw.trim().parse::<T>() {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(var, format!("{error} (got {raw:?})"));
                None
            }
        }
    }

    /// Parses `var` with `parse`; an error is recorded and `None` returned.
    pub fn parse_with<T>(
        &mut self,
        var: &Var,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse_with_shown(var, str::to_owned, parse)
    }

    /// Like [`EnvReader::parse_with`], but a problem shows the value as
    /// `shown` renders it (a URL without its password, say).
    pub fn parse_with_shown<T>(
        &mut self,
        var: &Var,
        shown: impl Fn(&str) -> String,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw(var)?;
        match parse(raw.trim()) {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(var, format!("{error} (got {:?})", shown(&raw)));
                None
            }
        }
    }

    /// Records a problem with `var`.
    pub fn problem(&mut self, var: &Var, message: impl Display) {
        self.problems.push(format!("{}: {message}", var.name));
    }

    /// Ends reading: `value` when nothing was wrong, every problem otherwise.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) if self.problems.is_empty() => Ok(value),
            _ => Err(ConfigError {
                problems: if self.problems.is_empty() {
                    vec![String::from("a required variable is missing")]
                } else {
                    self.problems
                },
            }),
        }
    }
}

/// `NATS_URL`.
pub const NATS_URL: Var = Var {
    name: "NATS_URL",
    default: Some("nats://127.0.0.1:4222"),
    help: "NATS server URL; a comma-separated list for a cluster",
};
/// `OTEL_SERVICE_NAME`.
pub const OTEL_SERVICE_NAME: Var = Var {
    name: "OTEL_SERVICE_NAME",
    default: None,
    help: "service name in traces (default: the binary's name)",
};
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: Var = Var {
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    default: None,
    help: "OTLP collector URL, e.g. http://localhost:4317; unset: nothing is exported",
};
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: Var = Var {
    name: "OTEL_EXPORTER_OTLP_PROTOCOL",
    default: Some("grpc"),
    help: "OTLP protocol: grpc or http/protobuf",
};
/// `OTEL_EXPORTER_OTLP_HEADERS` (read by the OpenTelemetry SDK itself).
pub const OTEL_EXPORTER_OTLP_HEADERS: Var = Var {
    name: "OTEL_EXPORTER_OTLP_HEADERS",
    default: None,
    help: "headers sent to the collector, as key=value pairs separated by commas",
};
/// `OTEL_RESOURCE_ATTRIBUTES` (read by the OpenTelemetry SDK itself).
pub const OTEL_RESOURCE_ATTRIBUTES: Var = Var {
    name: "OTEL_RESOURCE_ATTRIBUTES",
    default: None,
    help: "extra resource attributes, e.g. deployment.environment.name=prod,k8s.pod.name=x",
};
/// `OTEL_BSP_SCHEDULE_DELAY` (read by the OpenTelemetry SDK itself).
pub const OTEL_BSP_SCHEDULE_DELAY: Var = Var {
    name: "OTEL_BSP_SCHEDULE_DELAY",
    default: Some("5000"),
    help: "milliseconds between two span exports",
};
/// `OTEL_BSP_MAX_QUEUE_SIZE` (read by the OpenTelemetry SDK itself).
pub const OTEL_BSP_MAX_QUEUE_SIZE: Var = Var {
    name: "OTEL_BSP_MAX_QUEUE_SIZE",
    default: Some("2048"),
    help: "spans queued for export; beyond it spans are dropped (and counted), never waited for",
};
/// `OTEL_METRIC_EXPORT_INTERVAL` (read by the OpenTelemetry SDK itself).
pub const OTEL_METRIC_EXPORT_INTERVAL: Var = Var {
    name: "OTEL_METRIC_EXPORT_INTERVAL",
    default: Some("60000"),
    help: "milliseconds between two metric exports",
};
/// `OTEL_TRACES_SAMPLER`.
pub const OTEL_TRACES_SAMPLER: Var = Var {
    name: "OTEL_TRACES_SAMPLER",
    default: Some("parentbased_always_on"),
    help: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
};
/// `OTEL_TRACES_SAMPLER_ARG`.
pub const OTEL_TRACES_SAMPLER_ARG: Var = Var {
    name: "OTEL_TRACES_SAMPLER_ARG",
    default: Some("1.0"),
    help: "sampling ratio (0 to 1) for the traceidratio samplers",
};
/// `OTEL_SDK_DISABLED`.
pub const OTEL_SDK_DISABLED: Var = Var {
    name: "OTEL_SDK_DISABLED",
    default: Some("false"),
    help: "true records and exports no spans and no metrics (trace context is still passed on)",
};
/// `RUST_LOG`.
pub const RUST_LOG: Var = Var {
    name: "RUST_LOG",
    default: Some("info"),
    help: "log filter, e.g. info or order_service=debug,async_nats=warn",
};
/// `LOG_FORMAT`.
pub const LOG_FORMAT: Var = Var {
    name: "LOG_FORMAT",
    default: Some("text"),
    help: "log line format: text (for people) or json (for machines)",
};
/// `SHUTDOWN_TIMEOUT_SECS`.
pub const SHUTDOWN_TIMEOUT_SECS: Var = Var {
    name: "SHUTDOWN_TIMEOUT_SECS",
    default: Some("20"),
    help: "after SIGTERM, how long in-flight work may take before the process exits anyway",
};
/// `GRPC_MAX_CONCURRENT_CALLS`.
pub const GRPC_MAX_CONCURRENT_CALLS: Var = Var {
    name: "GRPC_MAX_CONCURRENT_CALLS",
    default: Some("1024"),
    help: "API calls worked on at once; beyond it calls are refused at once with RESOURCE_EXHAUSTED (health checks are never refused)",
};
/// `SHUTDOWN_DELAY_SECS`.
pub const SHUTDOWN_DELAY_SECS: Var = Var {
    name: "SHUTDOWN_DELAY_SECS",
    default: Some("0"),
    help: "after SIGTERM, keep answering calls this long while health reports NOT_SERVING, so load balancers (Kubernetes endpoints) stop routing first",
};
/// `STREAM_REPLICAS`.
pub const STREAM_REPLICAS: Var = Var {
    name: "STREAM_REPLICAS",
    default: Some("1"),
    help: "replicas of the JetStream streams and buckets this service creates (3 on a 3-node cluster)",
};

/// `CONSUMER_ACK_WAIT_SECS`.
pub const CONSUMER_ACK_WAIT_SECS: Var = Var {
    name: "CONSUMER_ACK_WAIT_SECS",
    default: Some("30"),
    help: "how long a message handed to a replica may stay unacknowledged before JetStream redelivers it (after a crash); keep it above a gateway call with its retries",
};

/// The variables every service reads, given its `GRPC_ADDR` variable.
pub fn common_vars(grpc_addr: Var) -> Vec<Var> {
    let mut vars = vec![
        NATS_URL,
        grpc_addr,
        GRPC_MAX_CONCURRENT_CALLS,
        OTEL_SERVICE_NAME,
        OTEL_EXPORTER_OTLP_ENDPOINT,
        OTEL_EXPORTER_OTLP_PROTOCOL,
        OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_RESOURCE_ATTRIBUTES,
        OTEL_BSP_SCHEDULE_DELAY,
        OTEL_BSP_MAX_QUEUE_SIZE,
        OTEL_METRIC_EXPORT_INTERVAL,
        OTEL_TRACES_SAMPLER,
        OTEL_TRACES_SAMPLER_ARG,
        OTEL_SDK_DISABLED,
        RUST_LOG,
        LOG_FORMAT,
        SHUTDOWN_TIMEOUT_SECS,
        SHUTDOWN_DELAY_SECS,
        STREAM_REPLICAS,
        CONSUMER_ACK_WAIT_SECS,
    ];
    vars.extend(crate::grpc_tls::vars());
    vars.extend(crate::auth::vars());
    vars.extend(crate::nats_config::NatsConnectConfig::vars());
    vars
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

/// Which traces are recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerChoice {
    /// Every trace.
    AlwaysOn,
    /// No trace.
    AlwaysOff,
    /// A fraction of traces, by trace id.
    TraceIdRatio(f64),
    /// Follow the caller's decision; root traces always on.
    ParentBasedAlwaysOn,
    /// Follow the caller's decision; root traces always off.
    ParentBasedAlwaysOff,
    /// Follow the caller's decision; root traces by ratio.
    ParentBasedTraceIdRatio(f64),
}

/// Telemetry settings, from the standard OpenTelemetry variables.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of spans.
    pub service_name: String,
    /// `service.version`: the service crate's version.
    pub service_version: &'static str,
    /// Where to export; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// How to export.
    pub otlp_protocol: OtlpProtocol,
    /// Which traces to record.
    pub sampler: SamplerChoice,
    /// No spans at all.
    pub sdk_disabled: bool,
    /// The `RUST_LOG` filter.
    pub log_filter: String,
    /// Text or JSON logs.
    pub log_format: LogFormat,
}

/// Settings every service has.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    /// NATS server URLs, comma-separated.
    pub nats_url: String,
    /// How the service authenticates to NATS and secures the connection.
    pub nats: crate::nats_config::NatsConnectConfig,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// API calls worked on at once before new ones are shed.
    pub max_concurrent_calls: usize,
    /// Telemetry settings.
    pub telemetry: TelemetryConfig,
    /// Longest drain after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long calls are still served after SIGTERM (health already
    /// NOT_SERVING).
    pub shutdown_delay: Duration,
    /// Replicas of the streams and buckets the service creates.
    pub stream_replicas: usize,
    /// The ack wait of the service's durable consumers.
    pub consumer_ack_wait: Duration,
    /// TLS, the plaintext health listener and reflection.
    pub grpc: crate::grpc_tls::GrpcTransport,
    /// Bearer-token verification; `None` when API calls are not
    /// authenticated.
    pub auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
}

impl CommonConfig {
    /// Reads the common variables; `service_name` is the default
    /// `OTEL_SERVICE_NAME`, `service_version` the service's own version.
    pub fn read(
        r: &mut EnvReader<'_>,
        grpc_addr: &Var,
        service_name: &str,
        service_version: &'static str,
    ) -> Option<Self> {
        // A URL may carry a password (refused later, by the NATS settings);
        // a problem never echoes it.
        let nats_url = r.parse_with_shown(&NATS_URL, redact_url_credentials, parse_nats_urls);
        let nats = crate::nats_config::NatsConnectConfig::read(r);
        let grpc_addr = r.parse_with(grpc_addr, |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| String::from("expected an IP address and port, like 0.0.0.0:50052"))
        });
        let max_concurrent_calls =
            r.parse_with(&GRPC_MAX_CONCURRENT_CALLS, |v| match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(String::from("expected a whole number from 1 to 1000000")),
            });
        let otlp_endpoint = r.parse_with(&OTEL_EXPORTER_OTLP_ENDPOINT, |v| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v.trim_end_matches('/').to_owned())
            } else {
                Err(String::from("expected an http:// or https:// URL"))
            }
        });
        let otlp_protocol = r.parse_with(&OTEL_EXPORTER_OTLP_PROTOCOL, |v| match v {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(String::from("expected grpc or http/protobuf")),
        });
        let ratio = r.parse_with(&OTEL_TRACES_SAMPLER_ARG, |v| match v.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
            _ => Err(String::from("expected a number from 0 to 1")),
        });
        let sampler = r.parse_with(&OTEL_TRACES_SAMPLER, |v| match v {
            "always_on" => Ok(SamplerChoice::AlwaysOn),
            "always_off" => Ok(SamplerChoice::AlwaysOff),
            "traceidratio" => Ok(SamplerChoice::TraceIdRatio(ratio.unwrap_or(1.0))),
            "parentbased_always_on" => Ok(SamplerChoice::ParentBasedAlwaysOn),
            "parentbased_always_off" => Ok(SamplerChoice::ParentBasedAlwaysOff),
            "parentbased_traceidratio" => {
                Ok(SamplerChoice::ParentBasedTraceIdRatio(ratio.unwrap_or(1.0)))
            }
            _ => Err(String::from(
                "expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            )),
        });
        let sdk_disabled = r.parse_with(&OTEL_SDK_DISABLED, parse_bool);
        // Read by the SDK from the environment; checked here so a typo stops
        // start-up with the others instead of being ignored.
        for var in [
            &OTEL_BSP_SCHEDULE_DELAY,
            &OTEL_BSP_MAX_QUEUE_SIZE,
            &OTEL_METRIC_EXPORT_INTERVAL,
        ] {
            r.parse_with(var, |v| {
                v.parse::<u64>()
                    .map_err(|_| String::from("expected a whole number"))
            });
        }
        for var in [&OTEL_EXPORTER_OTLP_HEADERS, &OTEL_RESOURCE_ATTRIBUTES] {
            r.parse_with(var, |v| {
                if v.split(',').all(|pair| {
                    pair.split_once('=')
                        .is_some_and(|(k, _)| !k.trim().is_empty())
                }) {
                    Ok(())
                } else {
                    Err(String::from("expected key=value pairs separated by commas"))
                }
            });
        }
        let log_filter = r.parse_with(&RUST_LOG, |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_owned())
                .map_err(|e| e.to_string())
        });
        let log_format = r.parse_with(&LOG_FORMAT, |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(String::from("expected text or json")),
        });
        let shutdown_timeout = r.parse_with(&SHUTDOWN_TIMEOUT_SECS, |v| match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 1 to 3600")),
        });
        let shutdown_delay = r.parse_with(&SHUTDOWN_DELAY_SECS, |v| match v.parse::<u64>() {
            Ok(s) if s <= 300 => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 0 to 300")),
        });
        let stream_replicas = r.parse_with(&STREAM_REPLICAS, |v| match v.parse::<usize>() {
            Ok(n) if (1..=5).contains(&n) => Ok(n),
            _ => Err(String::from("expected 1 to 5")),
        });
        let consumer_ack_wait = r.parse_with(&CONSUMER_ACK_WAIT_SECS, |v| match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 1 to 3600")),
        });
        let grpc = crate::grpc_tls::GrpcTransport::read(r);
        let auth = crate::auth::Authenticator::read(r);
        let service_name = r
            .raw(&OTEL_SERVICE_NAME)
            .unwrap_or_else(|| service_name.to_owned());
        Some(Self {
            nats_url: nats_url?,
            nats: nats?,
            grpc_addr: grpc_addr?,
            grpc: grpc?,
            auth: auth?,
            max_concurrent_calls: max_concurrent_calls?,
            telemetry: TelemetryConfig {
                service_name,
                service_version,
                otlp_endpoint,
                otlp_protocol: otlp_protocol?,
                sampler: sampler?,
                sdk_disabled: sdk_disabled?,
                log_filter: log_filter?,
                log_format: log_format?,
            },
            shutdown_timeout: shutdown_timeout?,
            shutdown_delay: shutdown_delay?,
            stream_replicas: stream_replicas?,
            consumer_ack_wait: consumer_ack_wait?,
        })
    }
}

fn parse_nats_urls(value: &str) -> Result<String, String> {
    let urls: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(String::from("expected at least one URL"));
    }
    for url in &urls {
        let rest = url.split_once("://").map_or(*url, |(scheme, rest)| {
            if matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                rest
            } else {
                ""
            }
        });
        if rest.is_empty() || rest.starts_with(':') {
            return Err(format!(
                "{:?} is not a NATS URL like nats://host:4222",
                redact_url_credentials(url)
            ));
        }
    }
    Ok(urls.join(","))
}

/// `value` with the user-info part of every URL in it (`user:password@`)
/// replaced by `***@`, for messages.
pub fn redact_url_credentials(value: &str) -> String {
    value
        .split(',')
        .map(|url| match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_owned(),
            },
            None => match url.split_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => url.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `true`/`false` (and 1/0, yes/no).
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(String::from("expected true or false")),
    }
}

/// A service's configuration, as its binary reads it: everything
/// [`crate::main_loop`] needs to print `--help` and parse the environment.
pub trait ServiceConfig: Sized + Send + 'static {
    /// The binary's name: the default `OTEL_SERVICE_NAME` and the name the
    /// service connects to NATS with (which its inbox is named after).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Every variable the service reads.
    fn vars() -> Vec<Var>;
    /// Reads the configuration, reporting every bad variable at once.
    fn from_lookup(lookup: &dyn Lookup) -> Result<Self, ConfigError>;
    /// The settings every service has.
    fn common(&self) -> &CommonConfig;
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the service.
    Run,
    /// Move the events of the service's stream to the subject layout of
    /// this version, then exit (`migrate-subjects`).
    MigrateSubjects,
    /// Print this text and exit 0.
    Print(String),
    /// Print this text and exit 2.
    Usage(String),
}

/// Interprets the arguments: `--help`/`-h`, `--version`/`-V`,
/// `migrate-subjects`, or nothing.
pub fn command(
    args: impl IntoIterator<Item = String>,
    binary: &str,
    about: &str,
    vars: &[Var],
) -> Command {
    let args: Vec<String> = args.into_iter().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Command::Run,
        Some("migrate-subjects") if args.len() == 1 => Command::MigrateSubjects,
        Some("--help" | "-h" | "help") => Command::Print(help(binary, about, vars)),
        Some("--version" | "-V") => {
            Command::Print(format!("{binary} {}", env!("CARGO_PKG_VERSION")))
        }
        Some(other) => Command::Usage(format!(
            "{binary}: unexpected argument {other:?}; it is configured by environment variables.\nRun `{binary} --help` to see them."
        )),
    }
}

/// The `--help` text: every variable, its default and its meaning.
pub fn help(binary: &str, about: &str, vars: &[Var]) -> String {
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut out = format!(
        "{binary} {}\n{about}\n\nUsage: {binary} [--help | --version]\n       {binary} probe [--addr HOST:PORT] [--service NAME] [--timeout-ms N]   (gRPC health check: exit 0 only on SERVING)\n       {binary} migrate-subjects   (moves the service's events stored under the subjects of orderflow 0.1 to those of this version, then exits; docs/events.md)\n\nConfigured by environment variables (a .env file in the working directory is read when present):\n\n",
        env!("CARGO_PKG_VERSION")
    );
    for var in vars {
        let default = var
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        out.push_str(&format!("  {:width$}  {}{}\n", var.name, var.help, default));
    }
    out.push_str("\nBad or missing configuration stops start-up with one message naming every bad variable, and exit code 2.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRPC: Var = Var {
        name: "GRPC_ADDR",
        default: Some("0.0.0.0:50051"),
        help: "where gRPC listens",
    };

    fn read(pairs: &[(&str, &str)]) -> Result<CommonConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut r = EnvReader::new(&map);
        let config = CommonConfig::read(&mut r, &GRPC, "svc", "0.0.0");
        r.finish(config)
    }

    #[test]
    fn defaults_give_a_working_configuration() -> Result<(), ConfigError> {
        let config = read(&[])?;
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, "svc");
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        assert_eq!(config.consumer_ack_wait, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let Err(error) = read(&[
            ("NATS_URL", "http://x:4222"),
            ("GRPC_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]) else {
            panic!("bad configuration was accepted");
        };
        let text = error.to_string();
        for name in [
            "NATS_URL",
            "GRPC_ADDR",
            "LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert_eq!(error.problems.len(), 4);
    }

    #[test]
    fn a_url_list_is_a_cluster() -> Result<(), ConfigError> {
        let config = read(&[("NATS_URL", "nats://a:4222, nats://b:4222")])?;
        assert_eq!(config.nats_url, "nats://a:4222,nats://b:4222");
        Ok(())
    }

    #[test]
    fn a_bad_nats_url_is_reported_without_its_password() {
        let env = HashMap::from([("NATS_URL", "http://alice:s3cret@host:4222")]);
        let mut r = EnvReader::new(&env);
        let config = CommonConfig::read(&mut r, &GRPC, "svc", "0");
        let problems = r
            .finish(config)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.starts_with("NATS_URL:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("s3cret")),
            "{problems:?}"
        );
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let vars = common_vars(GRPC);
        let text = help("svc", "about", &vars);
        for var in &vars {
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| line.split_whitespace().next() == Some(var.name))
                .collect();
            assert_eq!(lines.len(), 1, "{} has one line in: {text}", var.name);
            match var.default {
                Some(default) => assert!(
                    lines[0].contains(&format!("[default: {default}]")),
                    "{} shows its default {default:?}: {}",
                    var.name,
                    lines[0]
                ),
                None => assert!(!lines[0].contains("[default:"), "{}", lines[0]),
            }
        }
        assert!(text.contains("[default: nats://127.0.0.1:4222]"));
    }

    #[test]
    fn unknown_arguments_are_a_usage_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command(args(&["svc"]), "svc", "", &[]), Command::Run);
        assert_eq!(
            command(args(&["svc", "migrate-subjects"]), "svc", "", &[]),
            Command::MigrateSubjects
        );
        assert!(matches!(
            command(args(&["svc", "migrate-subjects", "x"]), "svc", "", &[]),
            Command::Usage(_)
        ));
        assert!(matches!(
            command(args(&["svc", "--help"]), "svc", "", &[]),
            Command::Print(_)
        ));
        assert!(matches!(
            command(args(&["svc", "--port"]), "svc", "", &[]),
            Command::Usage(_)
        ));
    }
}
