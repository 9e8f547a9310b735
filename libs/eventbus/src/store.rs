//! Appending events (the commit) and reading an aggregate's last event (its
//! current state).
//!
//! Decision 1 of docs/contract.md (JetStream is the system of record, so no
//! state change can be stored without its event): the event is the commit. An
//! append succeeds only when JetStream has acked it, and only when the
//! aggregate's subject still ends at the sequence the caller read
//! (`Nats-Expected-Last-Subject-Sequence`), so two writers can never both act
//! on the same state. `Nats-Msg-Id` makes a retried append of the same event
//! a no-op.

use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind, RequestErrorKind},
    stream::{Config, StorageType},
};
use bytes::Bytes;
use opentelemetry::KeyValue;
use tracing::Instrument;

use crate::{JetStream, envelope::EventEnvelope};

/// The header (server 2.11+) that makes `Nats-Expected-Last-Subject-Sequence`
/// check the last sequence of every subject matching it (wildcards allowed)
/// instead of the message's own subject; async-nats 0.51 has no constant.
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// What a stream must look like.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Stream name (`ORDERS`).
    pub name: String,
    /// Subjects it captures (`orders.>`).
    pub subjects: Vec<String>,
    /// Replicas in a cluster (1 on a single server).
    pub replicas: usize,
    /// How long `Nats-Msg-Id` de-duplicates retried appends.
    pub duplicate_window: Duration,
}

/// Why a stream could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up JetStream stream {stream}: {message}")]
pub struct EnsureStreamError {
    stream: String,
    message: String,
    /// JetStream was not ready (timeout, no responders, a cluster still
    /// forming); set-up retries these.
    transient: bool,
}

impl crate::setup::Transient for EnsureStreamError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Creates the stream, or brings an existing one to `spec`.
///
/// async-nats' `get_or_create_stream` silently keeps an existing stream whose
/// configuration differs, so the subjects, replicas and direct-get setting are
/// compared and updated here. Answers of a JetStream that is not ready yet
/// are retried for [`SETUP_BUDGET`](crate::setup::SETUP_BUDGET); every step
/// reads before it writes, so a retried create that had taken effect is a
/// no-op.
pub async fn ensure_stream(js: &JetStream, spec: &StreamSpec) -> Result<(), EnsureStreamError> {
    let deadline = std::time::Instant::now() + crate::setup::SETUP_BUDGET;
    crate::setup::retry_transient(&spec.name, deadline, || ensure_stream_once(js, spec)).await
}

async fn ensure_stream_once(js: &JetStream, spec: &StreamSpec) -> Result<(), EnsureStreamError> {
    let err = |message: String, transient: bool| EnsureStreamError {
        stream: spec.name.clone(),
        message,
        transient,
    };
    let create_or_update_err = |e: jetstream::context::CreateStreamError| match e.kind() {
        CreateStreamErrorKind::JetStream(j) => err(
            j.to_string(),
            crate::setup::is_transient_code(j.error_code()),
        ),
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
            err(e.to_string(), true)
        }
        _ => err(e.to_string(), false),
    };
    let wanted = Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        storage: StorageType::File,
        num_replicas: spec.replicas,
        duplicate_window: spec.duplicate_window,
        allow_direct: true,
        ..Default::default()
    };
    match js.get_stream(&spec.name).await {
        Ok(mut stream) => {
            let info = stream.info().await.map_err(|e| {
                let transient = matches!(
                    e.kind(),
                    RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
                );
                err(e.to_string(), transient)
            })?;
            let current = &info.config;
            if current.subjects != wanted.subjects
                || current.num_replicas != wanted.num_replicas
                || current.duplicate_window != wanted.duplicate_window
                || !current.allow_direct
            {
                let mut updated = current.clone();
                updated.subjects = wanted.subjects;
                updated.num_replicas = wanted.num_replicas;
                updated.duplicate_window = wanted.duplicate_window;
                updated.allow_direct = true;
                js.update_stream(updated)
                    .await
                    .map_err(create_or_update_err)?;
            }
            Ok(())
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => js
                .create_stream(wanted)
                .await
                .map(|_| ())
                .map_err(create_or_update_err),
            GetStreamErrorKind::JetStream(j) => Err(err(
                j.to_string(),
                crate::setup::is_transient_code(j.error_code()),
            )),
            GetStreamErrorKind::Request => Err(err(e.to_string(), true)),
            _ => Err(err(e.to_string(), false)),
        },
    }
}

/// Ensures the given `(name, subjects)` streams and the dead-letter stream,
/// each with `replicas` replicas and a 10-minute de-duplication window.
///
/// Every service ensures every stream it writes or reads, so any of them may
/// start first.
pub async fn ensure_streams(
    js: &JetStream,
    streams: &[(&str, &str)],
    replicas: usize,
) -> Result<(), EnsureStreamError> {
    let dead_letters = (
        crate::subject::DEAD_LETTER_STREAM,
        crate::subject::DEAD_LETTER_SUBJECTS,
    );
    let deadline = std::time::Instant::now() + crate::setup::SETUP_BUDGET;
    for (name, subjects) in streams.iter().chain(std::iter::once(&dead_letters)) {
        let spec = StreamSpec {
            name: (*name).to_owned(),
            subjects: vec![(*subjects).to_owned()],
            replicas,
            duplicate_window: Duration::from_secs(600),
        };
        crate::setup::retry_transient(name, deadline, || ensure_stream_once(js, &spec)).await?;
    }
    Ok(())
}

/// Why an append did not commit.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The aggregate changed since it was read: read again and decide again.
    #[error("the aggregate changed concurrently (subject {subject})")]
    Conflict {
        /// The aggregate's subject.
        subject: String,
    },
    /// JetStream did not confirm the append; it may or may not be stored.
    /// Retrying with the same event id is safe (de-duplication).
    #[error("JetStream did not confirm the append on {subject}: {message}")]
    Unavailable {
        /// The aggregate's subject.
        subject: String,
        /// What went wrong.
        message: String,
    },
}

/// A committed append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's stream sequence.
    pub sequence: u64,
    /// The event id was already stored within the de-duplication window:
    /// this append changed nothing, and the stored event is the truth.
    pub duplicate: bool,
}

/// Why an aggregate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the last event of {subject}: {message}")]
pub struct LoadError {
    subject: String,
    message: String,
}

/// The last event of an aggregate, with the sequence to expect on the next
/// append.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The stream sequence of the event.
    pub sequence: u64,
    /// The event's headers.
    pub headers: async_nats::HeaderMap,
    /// The event's body.
    pub payload: Bytes,
}

/// One stream used as an event store.
#[derive(Clone)]
pub struct EventStore {
    js: JetStream,
    stream_name: String,
    source: String,
    /// The PRODUCER span's name, formatted once rather than per append.
    span_name: String,
}

impl EventStore {
    /// An event store on `stream_name`; `source` is the `ce-source` of every
    /// event this store appends.
    pub fn new(js: JetStream, stream_name: impl Into<String>, source: impl Into<String>) -> Self {
        let stream_name = stream_name.into();
        Self {
            js,
            span_name: format!("publish {stream_name}"),
            stream_name,
            source: source.into(),
        }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &JetStream {
        &self.js
    }

    /// Appends `event`, expecting the last event on the subjects matching
    /// `guard` (the aggregate's subjects) to be at `expected_sequence` (0:
    /// the aggregate has no event yet), and waits for JetStream's ack.
    pub async fn append(
        &self,
        event: &EventEnvelope,
        expected_sequence: u64,
        guard: &str,
    ) -> Result<Appended, AppendError> {
        let span = tracing::info_span!(
            "nats.publish",
            otel.name = self.span_name.as_str(),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %event.subject,
            messaging.message.id = %event.id,
            cloudevents.event_type = %event.ce_type,
            otel.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        // Framed inside the PRODUCER span, so the trace context the event
        // carries is that span's.
        let headers = span.in_scope(|| event.headers(&self.source));
        let result = self
            .append_copy(
                &event.subject,
                headers,
                event.payload.clone(),
                expected_sequence,
                guard,
            )
            .instrument(span.clone())
            .await;
        let mut labels = vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.name", "publish"),
            KeyValue::new("messaging.destination.name", self.stream_name.clone()),
            KeyValue::new("cloudevents.event_type", event.ce_type.clone()),
        ];
        if let Err(error) = &result {
            let kind = match error {
                AppendError::Conflict { .. } => "conflict",
                AppendError::Unavailable { .. } => "unavailable",
            };
            labels.push(KeyValue::new("error.type", kind));
            span.record("otel.status_code", "ERROR");
        }
        crate::metrics::metrics()
            .publish_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        result
    }

    /// Appends a stored event's copy (`headers` and `payload` as they are) on
    /// `subject`, with the same optimistic concurrency as [`Self::append`]:
    /// for moving events between subject layouts, where the event already
    /// exists and only its place changes. No PRODUCER span: nothing is
    /// produced, and the copy keeps the original's trace context.
    pub async fn append_copy(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        payload: Bytes,
        expected_sequence: u64,
        guard: &str,
    ) -> Result<Appended, AppendError> {
        let publish = jetstream::message::PublishMessage::build()
            .headers(headers)
            .payload(payload)
            .expected_last_subject_sequence(expected_sequence)
            // The expected sequence is that of the last event on any of the
            // aggregate's subjects, not only the event's own one.
            .header(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, guard);
        let map = |kind: PublishErrorKind, message: String| match kind {
            PublishErrorKind::WrongLastSequence => AppendError::Conflict {
                subject: subject.to_owned(),
            },
            _ => AppendError::Unavailable {
                subject: subject.to_owned(),
                message,
            },
        };
        // The first await sends; the second waits for the ack. Without the
        // second, nothing is known to be stored.
        let ack = self
            .js
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(|e| map(e.kind(), e.to_string()))?
            .await
            .map_err(|e| map(e.kind(), e.to_string()))?;
        Ok(Appended {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Reads the last event on the subjects matching `filter` (wildcards
    /// allowed: `orders.*.<id>.*` is an order's last event whatever its
    /// customer), or `None` when there is none. Served by any replica of the
    /// stream (direct get).
    pub async fn load_last(&self, filter: &str) -> Result<Option<StoredEvent>, LoadError> {
        let err = |e: crate::index::IndexError| LoadError {
            subject: filter.to_owned(),
            message: e.to_string(),
        };
        let mut found = crate::index::last_for(&self.js, &self.stream_name, filter)
            .await
            .map_err(err)?;
        if found.is_none() {
            // A follower's "none" may be one that has not caught up; the
            // leader's is the truth (an event the other service already
            // acted on is never "not found").
            found = crate::index::last_for_on_leader(&self.js, &self.stream_name, filter)
                .await
                .map_err(err)?;
        }
        Ok(found.map(|event| StoredEvent {
            sequence: event.sequence,
            headers: event.headers,
            payload: event.payload,
        }))
    }

    /// Every event on `subject` from stream sequence `from` on, as it is
    /// committed: an ephemeral ordered consumer, so nothing polls and the
    /// server forgets it when the watcher goes away.
    pub async fn watch(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<StoredEvent, LoadError>> + use<>, LoadError>
    {
        use futures_util::StreamExt;
        let err = |message: String| LoadError {
            subject: subject.to_owned(),
            message,
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                name: Some(crate::security::ordered_consumer_name()),
                filter_subject: subject.to_owned(),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
        let subject = subject.to_owned();
        Ok(messages.map(move |message| {
            let message = message.map_err(|e| LoadError {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            Ok(StoredEvent {
                sequence,
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
            })
        }))
    }

    /// Whether NATS is connected and the stream answers; health reporting
    /// polls this.
    pub async fn ready(&self) -> bool {
        crate::is_connected(&self.js.client())
            && self.js.get_stream(&self.stream_name).await.is_ok()
    }
}
