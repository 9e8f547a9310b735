//! `orderflow-bench otlp-sink`: an OTLP/gRPC receiver that counts and
//! discards.
//!
//! The "tracing on" benchmark needs the services to really export every span
//! over the network, but a real collector would compete for the same two
//! cores and its cost would be charged to the services. This receiver does
//! the least a receiver can: decode each export request (tonic has to), count
//! spans and metric points, answer OK. On SIGTERM or Ctrl-C it prints the
//! counts as one JSON object on stdout, so the benchmark can show that the
//! spans really flowed.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value::Value,
    metrics::v1::metric::Data,
    resource::v1::Resource,
};
use serde::Serialize;
use tokio::net::TcpListener;

/// What the sink received.
#[derive(Debug, Default)]
struct Counts {
    trace_exports: AtomicU64,
    spans: AtomicU64,
    metric_exports: AtomicU64,
    metric_points: AtomicU64,
    /// Spans by `service.name`.
    spans_by_service: Mutex<BTreeMap<String, u64>>,
}

/// The JSON printed at the end.
#[derive(Debug, Serialize)]
struct Summary {
    trace_exports: u64,
    spans: u64,
    spans_by_service: BTreeMap<String, u64>,
    metric_exports: u64,
    metric_points: u64,
}

#[derive(Clone, Debug, Default)]
struct Sink(Arc<Counts>);

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into())
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.0.trace_exports.fetch_add(1, Ordering::Relaxed);
        let mut by_service = self
            .0
            .spans_by_service
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for resource_spans in &request.resource_spans {
            let spans: u64 = resource_spans
                .scope_spans
                .iter()
                .map(|s| s.spans.len() as u64)
                .sum();
            self.0.spans.fetch_add(spans, Ordering::Relaxed);
            *by_service
                .entry(service_name(resource_spans.resource.as_ref()))
                .or_default() += spans;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metric_exports.fetch_add(1, Ordering::Relaxed);
        let points: usize = request
            .into_inner()
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        self.0
            .metric_points
            .fetch_add(points as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Waits for SIGTERM or Ctrl-C (also how `bare-order-server` stops).
pub(crate) async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves on `addr` until SIGTERM or Ctrl-C, then prints the counts.
pub async fn run(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    eprintln!("otlp-sink: listening on {local} (OTLP/gRPC); SIGTERM prints the counts");
    let sink = Sink::default();
    let counts = sink.0.clone();
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .add_service(MetricsServiceServer::new(sink))
        .serve_with_incoming_shutdown(tokio_stream_listener(listener), stopped())
        .await
        .map_err(|e| format!("the OTLP receiver failed: {e}"))?;
    let summary = Summary {
        trace_exports: counts.trace_exports.load(Ordering::Relaxed),
        spans: counts.spans.load(Ordering::Relaxed),
        spans_by_service: counts
            .spans_by_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        metric_exports: counts.metric_exports.load(Ordering::Relaxed),
        metric_points: counts.metric_points.load(Ordering::Relaxed),
    };
    let json = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

/// The accepted connections of `listener` as the stream tonic serves.
fn tokio_stream_listener(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}
