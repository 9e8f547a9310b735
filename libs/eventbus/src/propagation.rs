//! W3C trace-context propagation across gRPC metadata and NATS headers.
//!
//! The one place where a trace crosses a process boundary. Incoming gRPC
//! requests get a SERVER span whose parent is extracted from `traceparent` /
//! `tracestate` / `baggage` metadata ([`TraceContextLayer`]); every publish
//! injects the current span's context into the message headers
//! ([`inject_current`]); every consumed message's context is extracted
//! ([`extract`]) and made the parent of the CONSUMER span that handles it.
//!
//! The carriers are written here because opentelemetry ships none for
//! async-nats headers, and the tonic one lives in an unmaintained crate.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes trace context into NATS headers.
///
/// Empty values are skipped: the W3C propagator writes an empty `tracestate`
/// when there is none, and every header costs publish throughput.
pub struct NatsHeaderInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key, value.as_str());
        }
    }
}

/// Reads trace context from NATS headers.
pub struct NatsHeaderExtractor<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Reads trace context from gRPC metadata (HTTP/2 headers).
pub struct HttpHeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace context into gRPC metadata of an outgoing call.
pub struct HttpHeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HttpHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Injects the context of the current tracing span into NATS headers.
pub fn inject_current(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut NatsHeaderInjector(headers))
    });
}

/// Extracts the trace context carried by NATS headers (an empty context when
/// there is none).
pub fn extract(headers: &async_nats::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsHeaderExtractor(headers)))
}

/// Extracts the trace context carried by gRPC metadata.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaderExtractor(headers)))
}

/// Injects the current span's context into the metadata of an outgoing gRPC
/// call (used by clients, including the test clients).
pub fn inject_current_http(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HttpHeaderInjector(headers))
    });
}

/// Makes `parent` the parent of `span`.
///
/// A failure means the span is already started or disabled; the work goes on
/// in its own trace, which is worth a debug line but never an error.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "could not set the parent of a span");
    }
}

/// Tower layer that opens one SERVER span per gRPC request, child of the
/// caller's trace context, and records its duration.
///
/// Applied to each API service (not to health or reflection: probes every
/// few seconds would otherwise each start a trace of their own), so no
/// handler repeats it; the handler's own spans, its publishes and their
/// NATS headers all inherit this trace.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// The service made by [`TraceContextLayer`].
#[derive(Clone, Debug)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // gRPC paths are `/package.Service/Method`.
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        set_parent(&span, extract_http(request.headers()));
        let started = std::time::Instant::now();
        let labels = [
            opentelemetry::KeyValue::new("rpc.system", "grpc"),
            opentelemetry::KeyValue::new("rpc.service", service.to_owned()),
            opentelemetry::KeyValue::new("rpc.method", method.to_owned()),
        ];
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let response = future.await?;
                // Unary errors carry grpc-status in the response headers
                // (trailers-only responses); success reports it in trailers, which
                // a layer cannot see without wrapping the body, so absent means OK.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code);
                if code != 0 {
                    span.record("otel.status_code", "ERROR");
                    // grpc-message is percent-encoded; the raw text is close
                    // enough to read in a trace view.
                    if let Some(message) = response
                        .headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                    {
                        span.record("otel.status_description", message);
                    }
                }
                let [system, service, method] = labels;
                crate::metrics::metrics().rpc_duration.record(
                    started.elapsed().as_secs_f64(),
                    &[
                        system,
                        service,
                        method,
                        opentelemetry::KeyValue::new("rpc.grpc.status_code", i64::from(code)),
                    ],
                );
                Ok(response)
            }
            .instrument(span),
        )
    }
}
