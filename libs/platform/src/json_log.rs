//! JSON log lines that link to their trace.
//!
//! tracing-subscriber's JSON format knows nothing of OpenTelemetry ids, so
//! this formatter writes one object per event with `timestamp`, `level`,
//! `target`, the event's fields (`message` included), the current span's
//! name, and the `trace_id` and `span_id` of the current span — the ids a
//! trace backend shows, so a log line leads to its trace and back.
//!
//! `json-subscriber` writes the same ids, but its newest release (0.3)
//! supports tracing-opentelemetry up to 0.33 and this workspace uses 0.34:
//! adopting it would put a second tracing-opentelemetry in the build, whose
//! span data the first never fills, so the ids would be missing. Re-check
//! when it follows.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The JSON event format with trace ids.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonWithTrace;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut map = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        map.insert("timestamp".into(), Value::from(now));
        map.insert("level".into(), Value::from(meta.level().as_str()));
        map.insert("target".into(), Value::from(meta.target()));
        event.record(&mut Fields(&mut map));
        if let Some(span) = ctx.lookup_current() {
            map.insert("span".into(), Value::from(span.name()));
        }
        // The event's contextual span is the current one; its OpenTelemetry
        // context holds the ids (no extension lock is held here).
        let context = tracing::Span::current().context();
        let span_context = context.span().span_context().clone();
        if span_context.is_valid() {
            map.insert(
                "trace_id".into(),
                Value::from(span_context.trace_id().to_string()),
            );
            map.insert(
                "span_id".into(),
                Value::from(span_context.span_id().to_string()),
            );
        }
        let line = serde_json::to_string(&map).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// The span-field format of the JSON layer: nothing.
///
/// A JSON line names its span and carries its trace ids, never the span's
/// fields, yet the fmt layer formats every span's fields when the span is
/// created, in case a line prints them. With this, creating a span costs the
/// log layer no formatting.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}
