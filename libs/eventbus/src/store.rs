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
    consumer::{StreamError, pull::OrderedError},
    context::{
        CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
        PublishErrorKind, RequestError, RequestErrorKind,
    },
    stream::{Config, ConsumerError, RetentionPolicy, StorageType},
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
    /// When a message goes: never by itself (`Limits`, the event streams
    /// and the dead letters, which have no limit), or once every interested
    /// consumer acked it (`Interest`, the advisories). Set when the stream
    /// is created; an existing stream keeps its own.
    pub retention: RetentionPolicy,
    /// Whether the stream keeps message schedules (nats-server 2.12+): an
    /// aggregate's timers, such as an order's payment deadline. JetStream
    /// requires rollups to be allowed for them (a schedule replaces the one
    /// before it on its subject); only the aggregate's own service may
    /// publish to an event stream, so nobody else can roll events up.
    pub schedules: bool,
}

/// Why a stream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EnsureStreamError {
    /// JetStream answered with an error: a subject overlapping another
    /// stream, more replicas than servers, or a cluster still forming (see
    /// [`is_transient`](Self::is_transient)).
    #[error("cannot set up JetStream stream {stream}: {source}")]
    Refused {
        /// The stream.
        stream: String,
        /// JetStream's error, with its codes.
        source: jetstream::Error,
    },
    /// Looking the stream up failed without an answer from JetStream (the
    /// request failed, or the name is not one a stream can have).
    #[error("cannot set up JetStream stream {stream}: {source}")]
    Lookup {
        /// The stream.
        stream: String,
        /// The client's error.
        source: GetStreamError,
    },
    /// Reading the existing stream's configuration failed.
    #[error("cannot set up JetStream stream {stream}: {source}")]
    Info {
        /// The stream.
        stream: String,
        /// The client's error.
        source: RequestError,
    },
    /// Creating or updating the stream got no answer, or one that could
    /// not be read.
    #[error("cannot set up JetStream stream {stream}: {source}")]
    Write {
        /// The stream.
        stream: String,
        /// The client's error.
        source: CreateStreamError,
    },
}

impl EnsureStreamError {
    /// Whether JetStream was only not ready (a timeout, no responders, a
    /// cluster still forming): set-up retries these, and fails at once on
    /// the rest.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused { source, .. } => crate::setup::is_transient_code(source.error_code()),
            Self::Lookup { source, .. } => source.kind() == GetStreamErrorKind::Request,
            Self::Info { source, .. } => matches!(
                source.kind(),
                RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
            ),
            Self::Write { source, .. } => matches!(
                source.kind(),
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable
            ),
        }
    }
}

impl crate::setup::Transient for EnsureStreamError {
    fn is_transient(&self) -> bool {
        EnsureStreamError::is_transient(self)
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
    let stream = || spec.name.clone();
    let create_or_update_err = |source: CreateStreamError| match source.kind() {
        CreateStreamErrorKind::JetStream(refusal) => EnsureStreamError::Refused {
            stream: stream(),
            source: refusal,
        },
        _ => EnsureStreamError::Write {
            stream: stream(),
            source,
        },
    };
    let wanted = Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        storage: StorageType::File,
        num_replicas: spec.replicas,
        duplicate_window: spec.duplicate_window,
        retention: spec.retention,
        allow_direct: true,
        allow_message_schedules: spec.schedules,
        allow_rollup: spec.schedules,
        ..Default::default()
    };
    match js.get_stream(&spec.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|source| EnsureStreamError::Info {
                    stream: stream(),
                    source,
                })?;
            let current = &info.config;
            if current.subjects != wanted.subjects
                || current.num_replicas != wanted.num_replicas
                || current.duplicate_window != wanted.duplicate_window
                || !current.allow_direct
                || (spec.schedules && !(current.allow_message_schedules && current.allow_rollup))
            {
                let mut updated = current.clone();
                updated.subjects = wanted.subjects;
                updated.num_replicas = wanted.num_replicas;
                updated.duplicate_window = wanted.duplicate_window;
                updated.allow_direct = true;
                // Turned on for an existing stream (an upgrade), never off:
                // JetStream refuses to disable schedules once allowed.
                updated.allow_message_schedules |= spec.schedules;
                updated.allow_rollup |= spec.schedules;
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
            GetStreamErrorKind::JetStream(refusal) => Err(EnsureStreamError::Refused {
                stream: stream(),
                source: refusal,
            }),
            _ => Err(EnsureStreamError::Lookup {
                stream: stream(),
                source: e,
            }),
        },
    }
}

/// Ensures the given `(name, subjects)` streams, the dead-letter stream and
/// the advisory stream, each with `replicas` replicas and a 10-minute
/// de-duplication window.
///
/// Every service ensures every stream it writes or reads, so any of them may
/// start first.
pub async fn ensure_streams(
    js: &JetStream,
    streams: &[(&str, &str)],
    replicas: usize,
) -> Result<(), EnsureStreamError> {
    let ours = [
        (
            crate::subject::DEAD_LETTER_STREAM,
            crate::subject::DEAD_LETTER_SUBJECTS,
            RetentionPolicy::Limits,
            false,
        ),
        // Interest: an advisory is kept until the consumer watching its
        // subject acked it, and one nobody watches is not kept at all.
        (
            crate::subject::ADVISORY_STREAM,
            crate::subject::ADVISORY_SUBJECTS,
            RetentionPolicy::Interest,
            false,
        ),
    ];
    let deadline = std::time::Instant::now() + crate::setup::SETUP_BUDGET;
    // Event streams keep their aggregates' timers (`EventStore::append_scheduling`).
    let all = streams
        .iter()
        .map(|(name, subjects)| (*name, *subjects, RetentionPolicy::Limits, true))
        .chain(ours);
    for (name, subjects, retention, schedules) in all {
        let spec = StreamSpec {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            replicas,
            duplicate_window: Duration::from_secs(600),
            retention,
            schedules,
        };
        crate::setup::retry_transient(name, deadline, || ensure_stream_once(js, &spec)).await?;
    }
    Ok(())
}

/// Why an append did not commit.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The aggregate changed since it was read: read again and decide again.
    #[error(
        "the aggregate changed concurrently (subject {subject}, expected sequence {expected}{})",
        found_part(*.actual)
    )]
    Conflict {
        /// The aggregate's subject.
        subject: String,
        /// The sequence the append expected its aggregate's subjects to end at.
        expected: u64,
        /// The sequence they end at, when JetStream said
        /// (`wrong last sequence: <n>`).
        actual: Option<u64>,
        /// JetStream's refusal.
        source: PublishError,
    },
    /// The append was not sent (the connection is closed, too many appends
    /// await their acks, or the event is larger than the server accepts):
    /// nothing is stored.
    #[error("JetStream did not confirm the append on {subject}: {source}")]
    NotSent {
        /// The aggregate's subject.
        subject: String,
        /// The client's error.
        source: PublishError,
    },
    /// No ack came in time, or the connection broke while waiting: the
    /// event may or may not be stored. Retrying with the same event id is
    /// safe (de-duplication).
    #[error("JetStream did not confirm the append on {subject}: {source}")]
    Unconfirmed {
        /// The aggregate's subject.
        subject: String,
        /// The client's error.
        source: PublishError,
    },
    /// Nothing answered the publish (no responders): no stream captures the
    /// subject, or JetStream is not running. Nothing is stored.
    #[error("JetStream did not confirm the append on {subject}: {source}")]
    NoStream {
        /// The aggregate's subject.
        subject: String,
        /// The client's error.
        source: PublishError,
    },
    /// JetStream refused the append with another error than a conflict
    /// (its code and description are in the source).
    #[error("JetStream did not confirm the append on {subject}: {source}")]
    Refused {
        /// The aggregate's subject.
        subject: String,
        /// JetStream's refusal.
        source: PublishError,
    },
    /// The answer was not a publish ack: the event may or may not be
    /// stored, as after a timeout.
    #[error("JetStream did not confirm the append on {subject}: {source}")]
    Unreadable {
        /// The aggregate's subject.
        subject: String,
        /// The decoder's error, inside the client's.
        source: PublishError,
    },
}

/// `, found <n>` when the sequence found is known.
fn found_part(actual: Option<u64>) -> String {
    actual.map_or_else(String::new, |actual| format!(", found {actual}"))
}

/// JetStream's error behind a failed publish, when it answered with one.
fn api_error(error: &PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()
}

/// The sequence a conflicting append found, from JetStream's description
/// (`wrong last sequence: 42`); async-nats has no accessor for it, but
/// the error serializes as the API sent it.
fn found_sequence(error: &PublishError) -> Option<u64> {
    let api = serde_json::to_value(api_error(error)?).ok()?;
    api.get("description")?
        .as_str()?
        .strip_prefix("wrong last sequence: ")?
        .trim()
        .parse()
        .ok()
}

impl AppendError {
    /// An append whose ack did not come or said no, by what async-nats
    /// says went wrong.
    fn unacked(subject: &str, expected: u64, source: PublishError) -> Self {
        let subject = subject.to_owned();
        match source.kind() {
            PublishErrorKind::WrongLastSequence => Self::Conflict {
                subject,
                expected,
                actual: found_sequence(&source),
                source,
            },
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                Self::Unconfirmed { subject, source }
            }
            PublishErrorKind::StreamNotFound => Self::NoStream { subject, source },
            PublishErrorKind::MaxAckPending | PublishErrorKind::MaxPayloadExceeded => {
                Self::NotSent { subject, source }
            }
            PublishErrorKind::WrongLastMessageId => Self::Refused { subject, source },
            PublishErrorKind::Other if api_error(&source).is_some() => {
                Self::Refused { subject, source }
            }
            PublishErrorKind::Other => Self::Unreadable { subject, source },
        }
    }
}

/// A committed append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's stream sequence.
    pub sequence: u64,
    /// The event id was already stored within the de-duplication window
    /// (or, for a schedule, its subject already held one): this append
    /// changed nothing, and the stored message is the truth.
    pub duplicate: bool,
}

/// Why an aggregate's last event could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the last event of {subject}: {source}")]
pub struct LoadError {
    /// The subjects read (wildcards allowed).
    pub subject: String,
    /// What went wrong.
    pub source: crate::index::IndexError,
}

/// Why a watch could not start, or broke.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The stream's name is not one a stream can have.
    #[error("cannot watch {subject}: {source}")]
    Stream {
        /// The subjects watched.
        subject: String,
        /// The client's error.
        source: GetStreamError,
    },
    /// The watch's consumer could not be created (JetStream refused or did
    /// not answer, or the stream does not exist).
    #[error("cannot watch {subject}: {source}")]
    Start {
        /// The subjects watched.
        subject: String,
        /// The client's error.
        source: ConsumerError,
    },
    /// The consumer's messages could not be subscribed to.
    #[error("cannot watch {subject}: {source}")]
    Subscribe {
        /// The subjects watched.
        subject: String,
        /// The client's error.
        source: StreamError,
    },
    /// The watch broke after it started (missed heartbeats, a consumer
    /// that could not be recreated).
    #[error("the watch of {subject} broke: {source}")]
    Broken {
        /// The subjects watched.
        subject: String,
        /// The client's error.
        source: OrderedError,
    },
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
    /// The same connection with a JetStream timeout of
    /// [`MAX_ACK_WAIT`](crate::deadline::MAX_ACK_WAIT), for appends: each
    /// bounds its wait for the ack itself ([`crate::deadline`]), which the
    /// context's own 5 s would cut short.
    appends: JetStream,
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
        let appends = jetstream::ContextBuilder::new()
            .timeout(crate::deadline::MAX_ACK_WAIT)
            .build(js.client());
        Self {
            js,
            appends,
            span_name: format!("publish {stream_name}"),
            stream_name,
            source: source.into(),
        }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &JetStream {
        &self.js
    }

    /// The PRODUCER span of publishing `event`.
    fn producer_span(&self, event: &EventEnvelope) -> tracing::Span {
        tracing::info_span!(
            "nats.publish",
            otel.name = self.span_name.as_str(),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.destination.name = %event.subject,
            messaging.message.id = %event.id,
            cloudevents.event_type = %event.ce_type,
            messaging.batch.message_count = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
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
        let span = self.producer_span(event);
        self.append_in(&span, event, expected_sequence, guard).await
    }

    /// [`EventStore::append`] of `event` together with storing `schedule`
    /// as a message schedule on its subject: at `at`, unless an event whose
    /// envelope names it in `ends_schedule` removes it first, JetStream
    /// publishes a copy of it, without the schedule headers and with
    /// `Nats-Scheduler` naming the schedule, on `target` in the same stream,
    /// then removes the schedule.
    ///
    /// Both messages are sent before either ack is awaited (one round
    /// trip), and the answer is the event's append once both are stored: an
    /// error of either is an error. One send of two messages, so one
    /// PRODUCER span, with `messaging.batch.message_count` 2, whose context
    /// both carry (a fired schedule's CONSUMER span hangs under it): a span
    /// of its own per schedule cost export work on every order for a
    /// message whose send is already traced.
    ///
    /// A schedule is stored only on a subject that holds none (expected
    /// sequence 0): a retried one, even after the de-duplication window,
    /// finds the first and keeps it, so a timer never moves once set; a
    /// schedule stored without its event (the append failed) fires for
    /// nothing. No timer lives in a process: the schedule is replicated
    /// with the stream and survives restarts of every service and server.
    pub async fn append_scheduling(
        &self,
        event: &EventEnvelope,
        expected_sequence: u64,
        guard: &str,
        schedule: &EventEnvelope,
        target: &str,
        at: std::time::SystemTime,
    ) -> Result<Appended, AppendError> {
        let span = self.producer_span(event);
        span.record("messaging.batch.message_count", 2);
        let (scheduled, appended) = tokio::join!(
            self.schedule_in(&span, schedule, target, at),
            self.append_in(&span, event, expected_sequence, guard)
        );
        scheduled?;
        appended
    }

    /// [`EventStore::append`] inside `span`, its PRODUCER span.
    async fn append_in(
        &self,
        span: &tracing::Span,
        event: &EventEnvelope,
        expected_sequence: u64,
        guard: &str,
    ) -> Result<Appended, AppendError> {
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
                AppendError::NotSent { .. }
                | AppendError::Unconfirmed { .. }
                | AppendError::NoStream { .. }
                | AppendError::Refused { .. }
                | AppendError::Unreadable { .. } => "unavailable",
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
        self.send_acked(subject, publish, expected_sequence).await
    }

    /// Stores `schedule` (framed like an event, inside `span`) on its
    /// subject as a message schedule firing at `at` on `target`; an existing
    /// schedule on that subject is [`Appended::duplicate`] of it (see
    /// [`EventStore::append_scheduling`]).
    async fn schedule_in(
        &self,
        span: &tracing::Span,
        schedule: &EventEnvelope,
        target: &str,
        at: std::time::SystemTime,
    ) -> Result<Appended, AppendError> {
        let mut headers = span.in_scope(|| schedule.headers(&self.source));
        headers.insert(
            crate::envelope::headers::SCHEDULE,
            format!("@at {}", crate::envelope::rfc3339(at)).as_str(),
        );
        headers.insert(crate::envelope::headers::SCHEDULE_TARGET, target);
        let publish = jetstream::message::PublishMessage::build()
            .headers(headers)
            .payload(schedule.payload.clone())
            .expected_last_subject_sequence(0);
        let result = match self
            .send_acked(&schedule.subject, publish, 0)
            .instrument(span.clone())
            .await
        {
            Err(AppendError::Conflict { actual, .. }) => Ok(Appended {
                sequence: actual.unwrap_or(0),
                duplicate: true,
            }),
            other => other,
        };
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// Sends `publish` and waits for its ack: an acknowledged publish.
    async fn send_acked(
        &self,
        subject: &str,
        publish: jetstream::message::PublishMessage,
        expected_sequence: u64,
    ) -> Result<Appended, AppendError> {
        // The first await sends; the second waits for the ack. Without the
        // second, nothing is known to be stored. Both together wait until the
        // caller's deadline, or 5 s without one (`deadline`).
        let committed = tokio::time::timeout(crate::deadline::ack_wait(), async {
            self.appends
                .send_publish(subject.to_owned(), publish)
                .await
                .map_err(|source| AppendError::NotSent {
                    subject: subject.to_owned(),
                    source,
                })?
                .await
                .map_err(|source| AppendError::unacked(subject, expected_sequence, source))
        })
        .await;
        let ack = committed.unwrap_or_else(|_| {
            Err(AppendError::unacked(
                subject,
                expected_sequence,
                PublishError::new(PublishErrorKind::TimedOut),
            ))
        })?;
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
        let err = |source| LoadError {
            subject: filter.to_owned(),
            source,
        };
        let mut found = crate::index::last_for(&self.js, &self.stream_name, filter)
            .await
            .map_err(err)?;
        if found.is_none() {
            // A follower's "none" may be one that has not caught up; the
            // leader's is the truth, but for a leader that was paused or
            // cut off and has not learned yet that another was elected.
            // So a caller that knows the aggregate exists (an event names
            // it) retries a "none" for a while before it believes it.
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
    ) -> Result<impl futures_util::Stream<Item = Result<StoredEvent, WatchError>> + use<>, WatchError>
    {
        use futures_util::StreamExt;
        let stream = self
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|source| WatchError::Stream {
                subject: subject.to_owned(),
                source,
            })?;
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
            .map_err(|source| WatchError::Start {
                subject: subject.to_owned(),
                source,
            })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|source| WatchError::Subscribe {
                subject: subject.to_owned(),
                source,
            })?;
        let subject = subject.to_owned();
        Ok(messages.map(move |message| {
            let message = message.map_err(|source| WatchError::Broken {
                subject: subject.clone(),
                source,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// JetStream's error as the API sends it.
    fn api(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": code,
            "description": description,
        }))
        .unwrap_or_else(|e| panic!("an API error must deserialize: {e}"))
    }

    #[test]
    fn a_refused_append_says_what_happened() {
        let wrong_last = PublishError::with_source(
            PublishErrorKind::WrongLastSequence,
            api(10071, "wrong last sequence: 42"),
        );
        let conflict = AppendError::unacked("orders.c.id.created", 7, wrong_last);
        assert!(
            matches!(
                conflict,
                AppendError::Conflict {
                    expected: 7,
                    actual: Some(42),
                    ..
                }
            ),
            "{conflict:?}"
        );
        assert_eq!(
            conflict.to_string(),
            "the aggregate changed concurrently (subject orders.c.id.created, expected sequence 7, found 42)"
        );
        let unsaid = PublishError::new(PublishErrorKind::WrongLastSequence);
        assert!(matches!(
            AppendError::unacked("s", 0, unsaid),
            AppendError::Conflict { actual: None, .. }
        ));

        let other = PublishError::with_source(
            PublishErrorKind::Other,
            api(10077, "maximum messages exceeded"),
        );
        let refused = AppendError::unacked("s", 0, other);
        assert!(
            matches!(refused, AppendError::Refused { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("maximum messages exceeded"),
            "{refused}"
        );

        let garbage = serde_json::from_slice::<serde_json::Value>(b"{")
            .err()
            .unwrap_or_else(|| panic!("\"{{\" is no JSON"));
        let unreadable = AppendError::unacked(
            "s",
            0,
            PublishError::with_source(PublishErrorKind::Other, garbage),
        );
        assert!(
            matches!(unreadable, AppendError::Unreadable { .. }),
            "{unreadable:?}"
        );

        for (kind, unconfirmed) in [
            (PublishErrorKind::TimedOut, true),
            (PublishErrorKind::BrokenPipe, true),
            (PublishErrorKind::StreamNotFound, false),
        ] {
            let error = AppendError::unacked("s", 0, PublishError::new(kind));
            assert_eq!(
                matches!(error, AppendError::Unconfirmed { .. }),
                unconfirmed,
                "{error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("JetStream did not confirm the append on s: "),
                "{error}"
            );
        }
    }

    #[test]
    fn only_a_jetstream_that_is_not_ready_is_retried() {
        let refused = |code| EnsureStreamError::Refused {
            stream: "ORDERS".to_owned(),
            source: api(code, "x"),
        };
        assert!(refused(ErrorCode::CLUSTER_NOT_AVAILABLE.0).is_transient());
        assert!(!refused(ErrorCode::STREAM_SUBJECT_OVERLAP.0).is_transient());
        let write = |kind| EnsureStreamError::Write {
            stream: "ORDERS".to_owned(),
            source: CreateStreamError::new(kind),
        };
        assert!(write(CreateStreamErrorKind::TimedOut).is_transient());
        assert!(write(CreateStreamErrorKind::JetStreamUnavailable).is_transient());
        assert!(!write(CreateStreamErrorKind::ResponseParse).is_transient());
        let info = |kind| EnsureStreamError::Info {
            stream: "ORDERS".to_owned(),
            source: RequestError::new(kind),
        };
        assert!(info(RequestErrorKind::NoResponders).is_transient());
        assert!(!info(RequestErrorKind::Other).is_transient());
    }
}
