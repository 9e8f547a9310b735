//! Logs, traces and metrics, set up once per process.
//!
//! Logs go to stdout as text or JSON, filtered by `RUST_LOG`; JSON lines carry
//! the `trace_id` and `span_id` of the current span. Spans always carry real
//! trace and span ids (so W3C context reaches NATS headers even with no
//! collector). Traces, metrics and log records are exported over OTLP only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans through the SDK's batch
//! processor, whose bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`) drops and counts
//! instead of blocking a request; metrics through a periodic reader
//! (`OTEL_METRIC_EXPORT_INTERVAL`); log records (the same events as the
//! stdout lines, through OpenTelemetry's tracing bridge, in the trace of
//! their span) through the batch log processor, bounded the same way
//! (`OTEL_BLRP_MAX_QUEUE_SIZE`), unless `OTEL_LOGS_EXPORTER=none`. The SDK
//! itself reads the other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_BLRP_*`). Without an
//! endpoint no meter provider is installed, so every instrument is a no-op,
//! and no log record is built.
//!
//! The variables are declared here ([`vars`]) and read by
//! [`TelemetryConfig::read`], which also checks those the SDK reads itself,
//! so a typo in them stops start-up with the other problems.

use std::io::IsTerminal;

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    metrics::SdkMeterProvider,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, filter_fn},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{EnvReader, Var, parse_bool};

// The telemetry settings live beside the code that applies them; `config`
// only provides the reading.

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
/// `OTEL_LOGS_EXPORTER`.
pub const OTEL_LOGS_EXPORTER: Var = Var {
    name: "OTEL_LOGS_EXPORTER",
    default: Some("otlp"),
    help: "otlp: log records also go to the OTLP endpoint, when one is set; none: stdout only",
};
/// `OTEL_BLRP_SCHEDULE_DELAY` (read by the OpenTelemetry SDK itself).
pub const OTEL_BLRP_SCHEDULE_DELAY: Var = Var {
    name: "OTEL_BLRP_SCHEDULE_DELAY",
    default: Some("1000"),
    help: "milliseconds between two log record exports",
};
/// `OTEL_BLRP_MAX_QUEUE_SIZE` (read by the OpenTelemetry SDK itself).
pub const OTEL_BLRP_MAX_QUEUE_SIZE: Var = Var {
    name: "OTEL_BLRP_MAX_QUEUE_SIZE",
    default: Some("2048"),
    help: "log records queued for export; beyond it records are dropped, never waited for",
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
    help: "true records and exports no spans, metrics or log records (trace context is still passed on)",
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

/// The telemetry variables, for `--help`.
pub fn vars() -> Vec<Var> {
    vec![
        OTEL_SERVICE_NAME,
        OTEL_EXPORTER_OTLP_ENDPOINT,
        OTEL_EXPORTER_OTLP_PROTOCOL,
        OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_RESOURCE_ATTRIBUTES,
        OTEL_BSP_SCHEDULE_DELAY,
        OTEL_BSP_MAX_QUEUE_SIZE,
        OTEL_METRIC_EXPORT_INTERVAL,
        OTEL_LOGS_EXPORTER,
        OTEL_BLRP_SCHEDULE_DELAY,
        OTEL_BLRP_MAX_QUEUE_SIZE,
        OTEL_TRACES_SAMPLER,
        OTEL_TRACES_SAMPLER_ARG,
        OTEL_SDK_DISABLED,
        RUST_LOG,
        LOG_FORMAT,
    ]
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

/// Whether log records go to the OTLP endpoint (`OTEL_LOGS_EXPORTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogsExporter {
    /// To the endpoint, beside traces and metrics (when one is set).
    Otlp,
    /// Nowhere but stdout.
    None,
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
    /// Whether log records are exported too.
    pub logs_exporter: LogsExporter,
    /// No spans at all.
    pub sdk_disabled: bool,
    /// The `RUST_LOG` filter.
    pub log_filter: String,
    /// Text or JSON logs.
    pub log_format: LogFormat,
}

impl TelemetryConfig {
    /// Reads the telemetry variables; `service_name` is the default
    /// `OTEL_SERVICE_NAME`, `service_version` the service's own version.
    /// Every problem is recorded in `r` and `None` returned.
    pub fn read(
        r: &mut EnvReader<'_>,
        service_name: &str,
        service_version: &'static str,
    ) -> Option<Self> {
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
        let logs_exporter = r.parse_with(&OTEL_LOGS_EXPORTER, |v| match v {
            "otlp" => Ok(LogsExporter::Otlp),
            "none" => Ok(LogsExporter::None),
            _ => Err(String::from("expected otlp or none")),
        });
        let sdk_disabled = r.parse_with(&OTEL_SDK_DISABLED, parse_bool);
        // Read by the SDK from the environment; checked here so a typo stops
        // start-up with the others instead of being ignored.
        for var in [
            &OTEL_BSP_SCHEDULE_DELAY,
            &OTEL_BSP_MAX_QUEUE_SIZE,
            &OTEL_METRIC_EXPORT_INTERVAL,
            &OTEL_BLRP_SCHEDULE_DELAY,
            &OTEL_BLRP_MAX_QUEUE_SIZE,
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
        let service_name = r
            .raw(&OTEL_SERVICE_NAME)
            .unwrap_or_else(|| service_name.to_owned());
        Some(Self {
            service_name,
            service_version,
            otlp_endpoint,
            otlp_protocol: otlp_protocol?,
            sampler: sampler?,
            logs_exporter: logs_exporter?,
            sdk_disabled: sdk_disabled?,
            log_filter: log_filter?,
            log_format: log_format?,
        })
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// The log filter is invalid.
    #[error("invalid RUST_LOG: {0}")]
    Filter(String),
}

/// Flushes telemetry on shutdown.
#[must_use = "call shutdown() before exiting, or queued spans and log records are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Exports what is queued (spans, then a last metrics collection, then
    /// log records) and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
        if let Some(meters) = self.meters
            && let Err(error) = meters.shutdown()
        {
            eprintln!("telemetry: flushing metrics failed: {error}");
        }
        // Last: the line that says how the process ends was logged before
        // this, and nothing after it is worth a record.
        if let Some(logs) = self.logs
            && let Err(error) = logs.shutdown()
        {
            eprintln!("telemetry: flushing log records failed: {error}");
        }
    }
}

/// The OTLP/HTTP client: hyper, driven by the service's tokio runtime.
///
/// The SDK's batch span processor and periodic metric reader export from
/// their own threads, where hyper finds no tokio reactor and panics. This
/// adapter runs each request on the runtime the exporter was built in and
/// hands the answer back, so OTLP/HTTP needs no second HTTP stack (reqwest's
/// blocking client) next to the hyper that tonic already brings.
#[derive(Debug, Clone)]
struct RuntimeHttpClient {
    inner: std::sync::Arc<opentelemetry_http::hyper::HyperClient>,
    runtime: tokio::runtime::Handle,
}

impl RuntimeHttpClient {
    /// Must be called inside the tokio runtime.
    fn new() -> Self {
        Self {
            inner: std::sync::Arc::new(
                opentelemetry_http::hyper::HyperClient::with_default_connector(
                    std::time::Duration::from_secs(10),
                    None,
                ),
            ),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.send_bytes(request).await })
            .await
            .map_err(|e| opentelemetry_http::HttpError::from(e.to_string()))?
    }
}

/// Identifies this process among the replicas of its service, so their
/// metric series stay apart; `OTEL_RESOURCE_ATTRIBUTES` may set a better one
/// (the pod name).
fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

fn resource(config: &TelemetryConfig) -> Resource {
    let mut builder = Resource::builder().with_service_name(config.service_name.clone());
    builder = builder.with_attribute(KeyValue::new("service.version", config.service_version));
    if std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .map(|v| !v.contains("service.instance.id="))
        .unwrap_or(true)
    {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", instance_id()));
    }
    builder.build()
}

/// Builds the meter provider exporting to the OTLP endpoint, or `None`
/// without one.
///
/// Must run inside the tokio runtime.
pub fn meter_provider(
    config: &TelemetryConfig,
) -> Result<Option<SdkMeterProvider>, TelemetryError> {
    let Some(endpoint) = config
        .otlp_endpoint
        .as_ref()
        .filter(|_| !config.sdk_disabled)
    else {
        return Ok(None);
    };
    let exporter = match config.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(RuntimeHttpClient::new())
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .build(),
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(Some(
        SdkMeterProvider::builder()
            .with_resource(resource(config))
            .with_periodic_exporter(exporter)
            .build(),
    ))
}

/// Builds the logger provider exporting log records to the OTLP endpoint,
/// or `None` without one, with `OTEL_LOGS_EXPORTER=none` or with the SDK
/// disabled.
///
/// Must run inside the tokio runtime.
pub fn logger_provider(
    config: &TelemetryConfig,
) -> Result<Option<SdkLoggerProvider>, TelemetryError> {
    let Some(endpoint) = config
        .otlp_endpoint
        .as_ref()
        .filter(|_| !config.sdk_disabled && config.logs_exporter == LogsExporter::Otlp)
    else {
        return Ok(None);
    };
    let exporter = match config.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_http_client(RuntimeHttpClient::new())
            .with_endpoint(format!("{endpoint}/v1/logs"))
            .build(),
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(Some(
        SdkLoggerProvider::builder()
            .with_resource(resource(config))
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// The crates whose events never become log records: the OTLP exporters'
/// own stack and the SDK's internal logs. Exporting a batch makes these
/// crates log (at DEBUG, or WARN when the collector is down); were those
/// events exported, every export would feed the next one. Their lines still
/// go to stdout under `RUST_LOG`.
const NOT_EXPORTED_AS_LOGS: [&str; 6] =
    ["opentelemetry", "hyper", "h2", "tonic", "tower", "reqwest"];

/// Whether an event of `target` may become a log record: its crate (the
/// target's first segment, `-` and `_` alike) is not one of
/// [`NOT_EXPORTED_AS_LOGS`] or named after one.
fn exported_as_log(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    !NOT_EXPORTED_AS_LOGS.iter().any(|blocked| {
        krate
            .strip_prefix(blocked)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '-']))
    })
}

/// The OpenTelemetry log bridge, each record in its event's trace.
///
/// The SDK logger takes a record's trace and span ids from the current
/// OpenTelemetry context, but spans do not make their context current when
/// entered (context activation is off, for throughput, see [`init`]). The
/// event's span still holds its context, as the JSON lines read it: this
/// layer makes it current while the bridge builds and emits the record.
struct InTrace<L>(L);

impl<S, L> Layer<S> for InTrace<L>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        // The SDK marks the context of its own export threads as suppressed,
        // so that their events never become records (no export feeding
        // itself); attaching the span's context would drop that mark.
        if opentelemetry::Context::is_current_telemetry_suppressed() {
            return self.0.on_event(event, ctx);
        }
        // Outside any span there is no trace to put the record in, and
        // nothing to attach.
        let span = tracing::Span::current();
        if span.is_none() {
            return self.0.on_event(event, ctx);
        }
        let _current = span.context().attach();
        self.0.on_event(event, ctx);
    }

    // The bridge's span-attribute option (off here) reads spans through
    // these two; passing them on keeps the wrapper transparent.
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(id, values, ctx);
    }
}

/// Installs the W3C trace-context and baggage propagators.
///
/// The global propagator is a no-op until this is called; tests call it too.
pub fn install_propagator() {
    global::set_text_map_propagator(opentelemetry::propagation::TextMapCompositePropagator::new(
        vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ],
    ));
}

fn sampler(choice: SamplerChoice) -> Sampler {
    match choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerChoice::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerChoice::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// Builds the tracer provider: ids always, export only with an endpoint.
///
/// Must run inside the tokio runtime (the exporters spawn on it).
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = resource(config);
    // Disabled still propagates: spans are never recorded or exported, but
    // they carry the caller's trace id, so every event keeps its traceparent.
    let sampler = if config.sdk_disabled {
        Sampler::AlwaysOff
    } else {
        sampler(config.sampler)
    };
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler);
    if let (Some(endpoint), false) = (&config.otlp_endpoint, config.sdk_disabled) {
        let exporter = match config.otlp_protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(RuntimeHttpClient::new())
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .build(),
        }
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs logging and tracing for the process.
///
/// The `RUST_LOG` filter applies to log lines only: spans of orderflow's own
/// crates are always built at INFO so trace context keeps flowing when logs
/// are quiet.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    install_propagator();
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(crate::json_log::NoSpanFields)
            .event_format(crate::json_log::JsonWithTrace)
            .with_filter(filter)
            .boxed(),
    };
    let (otel, provider) = {
        let provider = tracer_provider(config)?;
        let tracer = provider.tracer("orderflow");
        global::set_tracer_provider(provider.clone());
        // The defaults of tracing-opentelemetry cost a third of the
        // throughput under load (docs/benchmarks.md): each poll of an
        // instrumented future activated the span's OpenTelemetry context and
        // read the clock twice (busy/idle time), and every span carried five
        // attributes no one queries (source file, line, module, thread id and
        // name, target). Our propagation reads the context from the tracing
        // span itself, so none of that is needed; the spans keep their
        // semantic-convention attributes, kinds, links and parents.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(LevelFilter::INFO);
        (Some(layer), Some(provider))
    };
    let meters = meter_provider(config)?;
    if let Some(meters) = &meters {
        global::set_meter_provider(meters.clone());
    }
    let logs = logger_provider(config)?;
    // The records are the stdout lines (the same `RUST_LOG` filter), less
    // the exporters' own events.
    let bridge = match &logs {
        Some(logs) => {
            let filter = EnvFilter::try_new(&config.log_filter)
                .map_err(|e| TelemetryError::Filter(e.to_string()))?
                .and(filter_fn(|meta| exported_as_log(meta.target())));
            Some(
                InTrace(
                    opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(logs),
                )
                .with_filter(filter),
            )
        }
        None => None,
    };
    // A second init (tests running services in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(bridge)
        .try_init();
    Ok(Telemetry {
        provider,
        meters,
        logs,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{LogsExporter, TelemetryConfig, exported_as_log, logger_provider};
    use crate::config::{ConfigError, EnvReader};

    fn read(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut r = EnvReader::new(&map);
        let config = TelemetryConfig::read(&mut r, "svc", "0.0.0");
        r.finish(config)
    }

    #[test]
    fn logs_are_exported_by_default_and_none_turns_them_off() -> Result<(), ConfigError> {
        assert_eq!(read(&[])?.logs_exporter, LogsExporter::Otlp);
        assert_eq!(
            read(&[("OTEL_LOGS_EXPORTER", "none")])?.logs_exporter,
            LogsExporter::None
        );
        let problems = read(&[
            ("OTEL_LOGS_EXPORTER", "console"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "1s"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "-1"),
        ])
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
        for name in [
            "OTEL_LOGS_EXPORTER",
            "OTEL_BLRP_SCHEDULE_DELAY",
            "OTEL_BLRP_MAX_QUEUE_SIZE",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name} not reported: {problems:?}"
            );
        }
        Ok(())
    }

    /// No logger provider, so no record is even built, without an endpoint,
    /// with `OTEL_LOGS_EXPORTER=none` or with the SDK disabled. (With one,
    /// the exporter needs a tokio runtime: the binaries' tests cover it.)
    #[test]
    fn no_logger_provider_unless_logs_are_exported() -> Result<(), ConfigError> {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        for env in [
            vec![],
            vec![endpoint, ("OTEL_LOGS_EXPORTER", "none")],
            vec![endpoint, ("OTEL_SDK_DISABLED", "true")],
        ] {
            let config = read(&env)?;
            assert!(
                logger_provider(&config).is_ok_and(|p| p.is_none()),
                "a logger provider with {env:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_exporters_own_crates_never_become_log_records() {
        for target in [
            "opentelemetry_sdk",
            "opentelemetry-otlp",
            "opentelemetry",
            "hyper_util::client::legacy::pool",
            "hyper::proto::h1",
            "h2::codec::framed_write",
            "tonic::transport::channel",
            "tower::buffer::worker",
            "reqwest::connect",
        ] {
            assert!(!exported_as_log(target), "{target} would be exported");
        }
        for target in [
            "order_service::grpc",
            "payment_service::charging",
            "orderflow_platform::shutdown",
            "orderflow_eventbus::consumer",
            "async_nats",
            "h2o",
            "towering",
        ] {
            assert!(exported_as_log(target), "{target} would not be exported");
        }
    }
}
