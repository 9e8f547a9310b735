//! A real OTLP receiver for tests: the collector's gRPC services (from the
//! `opentelemetry-proto` crate's tonic types) and the OTLP/HTTP protobuf
//! endpoints, keeping every span, metric name, metric data point and log
//! record it is sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::{metric::Data, number_data_point},
};
use prost::Message;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

/// One received span, flattened for assertions.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The span name.
    pub name: String,
    /// Its kind (`opentelemetry_proto` `SpanKind` value: 2 server, 3 client,
    /// 4 producer, 5 consumer).
    pub kind: i32,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id (empty for a root).
    pub parent_span_id: String,
    /// Attributes, values as strings.
    pub attributes: HashMap<String, String>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// How many links it has.
    pub links: usize,
}

/// One received metric data point, flattened for assertions.
///
/// Sums (counters) and gauges give their value; histograms give their count.
/// The SDK exports cumulative sums by default, so the latest point of a
/// counter series is its total so far.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedPoint {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The metric name, e.g. `orderflow.gateway.breaker.transitions`.
    pub metric: String,
    /// The point's attributes, values as strings.
    pub attributes: HashMap<String, String>,
    /// The value (a histogram's count).
    pub value: f64,
}

/// One received log record, flattened for assertions.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Every attribute of that resource, values as strings.
    pub resource: HashMap<String, String>,
    /// The instrumentation scope's name: the tracing event's target.
    pub scope: String,
    /// The severity text, e.g. `INFO`.
    pub severity: String,
    /// The body (the tracing event's message), as a string.
    pub body: String,
    /// Hex trace id (empty when the record has none).
    pub trace_id: String,
    /// Hex span id (empty when the record has none).
    pub span_id: String,
    /// Attributes (the event's other fields), values as strings.
    pub attributes: HashMap<String, String>,
}

/// What the receiver has collected.
#[derive(Debug, Default)]
struct Collected {
    spans: Vec<ReceivedSpan>,
    logs: Vec<ReceivedLog>,
    /// (service, metric name).
    metrics: Vec<(String, String)>,
    /// Every data point, in arrival order.
    points: Vec<ReceivedPoint>,
}

/// A running OTLP receiver; stops on drop.
pub struct OtlpReceiver {
    /// Its address.
    pub addr: SocketAddr,
    collected: Arc<Mutex<Collected>>,
    stop: CancellationToken,
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn service_name(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(kv.value.as_ref()))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn collect_traces(collected: &Mutex<Collected>, request: ExportTraceServiceRequest) {
    let mut collected = collected.lock().unwrap_or_else(|p| p.into_inner());
    for resource_spans in request.resource_spans {
        let service = service_name(
            resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default(),
        );
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                collected.spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    status_code: span.status.map(|s| s.code).unwrap_or(0),
                    links: span.links.len(),
                });
            }
        }
    }
}

fn collect_metrics(collected: &Mutex<Collected>, request: ExportMetricsServiceRequest) {
    let mut collected = collected.lock().unwrap_or_else(|p| p.into_inner());
    for resource_metrics in request.resource_metrics {
        let service = service_name(
            resource_metrics
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default(),
        );
        for scope in resource_metrics.scope_metrics {
            for metric in scope.metrics {
                let point = |attributes: &[KeyValue], value: f64| ReceivedPoint {
                    service: service.clone(),
                    metric: metric.name.clone(),
                    attributes: attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    value,
                };
                let number = |value: Option<&number_data_point::Value>| match value {
                    Some(number_data_point::Value::AsDouble(d)) => *d,
                    Some(number_data_point::Value::AsInt(i)) => *i as f64,
                    None => 0.0,
                };
                let points: Vec<ReceivedPoint> = match metric.data.as_ref() {
                    Some(Data::Sum(sum)) => sum
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, number(p.value.as_ref())))
                        .collect(),
                    Some(Data::Gauge(gauge)) => gauge
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, number(p.value.as_ref())))
                        .collect(),
                    Some(Data::Histogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, p.count as f64))
                        .collect(),
                    _ => Vec::new(),
                };
                collected.points.extend(points);
                collected.metrics.push((service.clone(), metric.name));
            }
        }
    }
}

fn collect_logs(collected: &Mutex<Collected>, request: ExportLogsServiceRequest) {
    let mut collected = collected.lock().unwrap_or_else(|p| p.into_inner());
    for resource_logs in request.resource_logs {
        let attributes = resource_logs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service = service_name(attributes);
        let resource: HashMap<String, String> = attributes
            .iter()
            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
            .collect();
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for record in scope_logs.log_records {
                collected.logs.push(ReceivedLog {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    severity: record.severity_text,
                    body: text(record.body.as_ref()),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    attributes: record
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Collected>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect_traces(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        collect_metrics(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        collect_logs(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl OtlpReceiver {
    /// Starts an OTLP/gRPC receiver on a free loopback port.
    #[allow(clippy::expect_used)]
    pub async fn start_grpc() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let collected = Arc::new(Mutex::new(Collected::default()));
        let stop = CancellationToken::new();
        let sink = Sink(collected.clone());
        let shutdown = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink.clone()))
                .add_service(LogsServiceServer::new(sink))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                ),
        );
        Self {
            addr,
            collected,
            stop,
        }
    }

    /// Starts an OTLP/HTTP (protobuf) receiver on a free loopback port,
    /// answering `POST /v1/traces`, `POST /v1/metrics` and `POST /v1/logs`.
    ///
    /// A minimal HTTP/1.1 server written here: the exporter sends
    /// `Content-Length` bodies on kept-alive connections, and nothing more is
    /// needed to receive them.
    #[allow(clippy::expect_used)]
    pub async fn start_http() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let collected = Arc::new(Mutex::new(Collected::default()));
        let stop = CancellationToken::new();
        let (sink, shutdown) = (collected.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let _ = serve_http(stream, &sink).await;
                });
            }
        });
        Self {
            addr,
            collected,
            stop,
        }
    }

    /// `http://addr`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected
            .lock()
            .map(|c| c.spans.clone())
            .unwrap_or_default()
    }

    /// Every log record received so far, in arrival order.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.collected
            .lock()
            .map(|c| c.logs.clone())
            .unwrap_or_default()
    }

    /// Every (service, metric name) received so far.
    pub fn metrics(&self) -> Vec<(String, String)> {
        self.collected
            .lock()
            .map(|c| c.metrics.clone())
            .unwrap_or_default()
    }

    /// Every data point of `metric` received so far, in arrival order.
    pub fn points(&self, metric: &str) -> Vec<ReceivedPoint> {
        self.collected
            .lock()
            .map(|c| {
                c.points
                    .iter()
                    .filter(|p| p.metric == metric)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The largest value received for `metric` from `service` on points
    /// whose attribute `key` is `value` (the total so far, for a cumulative
    /// counter), or `None` when no such point arrived.
    pub fn max_value(&self, service: &str, metric: &str, key: &str, value: &str) -> Option<f64> {
        self.points(metric)
            .into_iter()
            .filter(|p| {
                p.service == service && p.attributes.get(key).map(String::as_str) == Some(value)
            })
            .map(|p| p.value)
            .reduce(f64::max)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_http(stream: tokio::net::TcpStream, sink: &Mutex<Collected>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let status = match path.as_str() {
            "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    collect_traces(sink, request);
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    collect_metrics(sink, request);
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            },
            "/v1/logs" => match ExportLogsServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    collect_logs(sink, request);
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            },
            _ => "404 Not Found",
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
    }
}
