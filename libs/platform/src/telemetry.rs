//! Logs, traces and metrics, set up once per process.
//!
//! Logs go to stdout as text or JSON, filtered by `RUST_LOG`; JSON lines carry
//! the `trace_id` and `span_id` of the current span. Spans always carry real
//! trace and span ids (so W3C context reaches NATS headers even with no
//! collector). Traces and metrics are exported over OTLP only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set: spans through the SDK's batch
//! processor, whose bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`) drops and counts
//! instead of blocking a request; metrics through a periodic reader
//! (`OTEL_METRIC_EXPORT_INTERVAL`). The SDK itself reads the other standard
//! variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*`). Without an endpoint no meter provider is installed, so every
//! instrument is a no-op.

use std::io::IsTerminal;

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    metrics::SdkMeterProvider,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{LogFormat, OtlpProtocol, SamplerChoice, TelemetryConfig};

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
#[must_use = "call shutdown() before exiting, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what is queued (spans, then a last metrics collection) and
    /// stops the exporters.
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
    // A second init (tests running services in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider, meters })
}
