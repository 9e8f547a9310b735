//! Durable pull consumers: at-least-once delivery, effectively-once effects.
//!
//! Decision 2 of docs/contract.md (at-least-once delivery, effectively-once
//! effects: a repeated delivery never repeats an effect). Every replica of a
//! service pulls from the same durable consumer, so JetStream spreads the
//! work and remembers progress across restarts. A message is acked only after
//! its handler finished; a transient failure is NAKed with a delay
//! (redelivered later), and a message that can never succeed — undecodable,
//! of an unknown type, or still failing at the last allowed delivery — is
//! copied to the dead-letter stream with the reason in its headers before it
//! is terminated. A message whose last delivery is never settled (the replica
//! holding it crashed or stalled past the ack wait, every time) is copied by
//! [`MaxDeliveries`], from the advisory JetStream publishes when it gives up
//! on it. Nothing is dropped.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind, ErrorCode,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::{GetStreamError, GetStreamErrorKind},
    stream::{ConsumerError, DirectGetErrorKind},
};
use futures_util::{FutureExt, StreamExt, future::Shared};
use tokio::{
    sync::{Semaphore, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    JetStream,
    envelope::{ReceivedEvent, headers},
    propagation,
    subject::{
        ADVISORY_STREAM, REPLAY_TOKEN, aggregate_key, max_deliveries_durable,
        max_deliveries_subject, replays_durable,
    },
};

/// How often the consumer backlog is read for the metrics.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);

/// The redelivery delay after `delivered` failed deliveries: 1 s doubling
/// up to one minute. Handlers take it through [`Outcome::backing_off`].
fn retry_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(60))
}

/// What a handler decided about one message.
#[derive(Debug)]
pub enum Outcome {
    /// Handled (or nothing to do): ack it.
    Done,
    /// Failed for a reason that may pass: redeliver after `after`.
    Retry {
        /// How long JetStream waits before the redelivery.
        after: Duration,
        /// What failed, recorded if the message is finally dead-lettered.
        reason: String,
    },
    /// Can never succeed: dead-letter it now.
    Reject {
        /// Why, recorded in the dead letter's headers.
        reason: String,
    },
}

impl Outcome {
    /// A retry of a message that failed on its `delivered`-th delivery,
    /// after 1 s doubling per delivery up to a minute: the one backoff
    /// every handler's passing failures take. A fixed short delay would use up a message's
    /// `max_deliver` deliveries within seconds of a broker outage (ten in
    /// about fifteen seconds at 1 s) and dead-letter, say, the payment
    /// result of an order already charged; doubling, the same deliveries
    /// last about four minutes.
    pub fn backing_off(delivered: i64, reason: impl Into<String>) -> Self {
        Self::Retry {
            after: retry_delay(delivered),
            reason: reason.into(),
        }
    }
}

/// Handles the messages of one durable consumer.
///
/// Handlers must be idempotent: a message can be delivered more than once
/// (after a crash, an ack lost on the way, or an expired ack wait).
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one message.
    ///
    /// The event is borrowed: the consumer keeps it for the dead-letter copy,
    /// and a clone of its headers per delivery was a measurable share of
    /// the services' allocations (docs/benchmarks.md).
    fn handle<'a>(&'a self, event: &'a ReceivedEvent) -> impl Future<Output = Outcome> + Send + 'a;

    /// Whether messages of `ce_type` are of a kind this handler receives but
    /// never acts on (its consumer's one filter subject takes them too, see
    /// [`ConsumerSpec::durable`]). They are acked as they arrive, without a
    /// task, a span or a metric.
    fn skips(&self, ce_type: &str) -> bool {
        let _ = ce_type;
        false
    }

    /// Resolves when the handler can take more work.
    ///
    /// The consumer pulls nothing while this is pending, so a handler whose
    /// downstream is known to be down (an open circuit breaker) leaves its
    /// messages in the stream instead of burning their deliveries.
    fn ready(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How a durable consumer is configured.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name, shared by every replica of the service.
    pub durable: String,
    /// The subjects it receives.
    pub filter_subjects: Vec<String>,
    /// How long a delivered message may stay unacked before redelivery.
    pub ack_wait: Duration,
    /// The number of deliveries after which a failing message is dead-lettered.
    pub max_deliver: i64,
    /// Redelivery delays for messages whose ack wait expired; empty (the
    /// ack wait every time) in orderflow's specs, see
    /// [`ConsumerSpec::durable`].
    pub backoff: Vec<Duration>,
    /// How many messages one replica handles at once.
    pub concurrency: usize,
    /// The filter of its replays' durable ([`ConsumerSpec::replays`]), or
    /// `None` when it has none.
    pub replays_subject: Option<String>,
}

impl ConsumerSpec {
    /// orderflow's defaults for a durable consumer of `subject` on `stream`:
    /// a 30 s ack wait (longer than a gateway call with its retries), 10
    /// deliveries before a dead letter, and 64 messages in flight per
    /// replica. Handler failures are NAKed with their own delay
    /// ([`Outcome::backing_off`]) and do not wait for the ack wait.
    ///
    /// One filter subject, never several. nats-server (2.15 at least) walks
    /// the stream's whole per-subject index, holding the store's lock that
    /// every append waits for, whenever a consumer with several filter
    /// subjects finds nothing more in a message block that is not the last:
    /// about once per 8 MB of stream, 150 to 480 ms with 100,000 orders
    /// stored, and it grows with them. With one wildcard subject it skips
    /// that walk once the stream has 64 Ki subjects, and with `>` it never
    /// takes it (docs/benchmarks.md, "What holds the tail back").
    ///
    /// No backoff is set, on purpose. With a backoff, nats-server (2.10 to
    /// 2.15 at least) measures a NAK's delay from the ack wait but expires it
    /// by the backoff step of the delivery count, so each NAK delay grows by
    /// `backoff[n] - ack_wait`: with 30/60/120 s, a 2 s retry of a second
    /// delivery came back after 32 s, and one of a third delivery after
    /// 94 s. Retries then took minutes where [`Outcome::backing_off`] asks for
    /// seconds (found by the fault tests in `tests/e2e/tests/faults/`).
    ///
    /// Replays of dead letters, `<subject>.replay`, go to a durable of their
    /// own ([`ConsumerSpec::replays`]) unless `subject` ends in `>` and so
    /// matches them already.
    pub fn durable(stream: &str, durable: &str, subject: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            filter_subjects: vec![subject.to_owned()],
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            backoff: Vec::new(),
            concurrency: 64,
            replays_subject: (!subject.ends_with('>')).then(|| format!("{subject}.{REPLAY_TOKEN}")),
        }
    }

    /// The same spec with its replays' durable receiving `subject` instead
    /// of `<its own subject>.replay`: for a service whose durables split
    /// one subject space by event kind (`orders.*.*.created`,
    /// `orders.*.*.cancelled`, ...), one of them takes the replays of all
    /// (`orders.*.*.*.replay`) and the others none
    /// ([`ConsumerSpec::without_replays`]), so no replay needs a durable of
    /// its kind.
    pub fn with_replays(mut self, subject: &str) -> Self {
        self.replays_subject = Some(subject.to_owned());
        self
    }

    /// The same spec without a replays' durable: another durable of the
    /// service receives them ([`ConsumerSpec::with_replays`]).
    pub fn without_replays(mut self) -> Self {
        self.replays_subject = None;
        self
    }

    /// The durable consumer of this one's replays: `<durable>-replays`,
    /// receiving `<subject>.replay` (or what [`ConsumerSpec::with_replays`]
    /// named), where the admin API republishes a dead letter of `subject`
    /// (see `dead_letters`). `None` when the filter ends in `>`, which
    /// receives its replays itself, or when another durable takes them.
    /// Replays are rare and handled as repeats, so 4 at a time are enough.
    pub fn replays(&self) -> Option<Self> {
        let subject = self.replays_subject.as_ref()?;
        Some(Self {
            durable: replays_durable(&self.durable),
            filter_subjects: vec![subject.clone()],
            concurrency: 4,
            replays_subject: None,
            ..self.clone()
        })
    }

    /// The same spec with an ack wait of `ack_wait` (the
    /// `CONSUMER_ACK_WAIT_SECS` variable).
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The durable consumer of the advisory stream that receives this
    /// consumer's max-deliveries advisories, and only those.
    ///
    /// It allows 100 deliveries rather than 10: what fails it is the broker
    /// (the original cannot be read or its copy stored), and with delays
    /// doubling to a minute that is more than an hour of retries before the
    /// advisory itself is dead-lettered.
    pub fn max_deliveries_watch(&self) -> Self {
        Self {
            stream: ADVISORY_STREAM.to_owned(),
            durable: max_deliveries_durable(&self.durable),
            filter_subjects: vec![max_deliveries_subject(&self.stream, &self.durable)],
            ack_wait: Duration::from_secs(30),
            max_deliver: 100,
            backoff: Vec::new(),
            concurrency: 4,
            replays_subject: None,
        }
    }
}

/// Why the durable consumer could not be bound; the pull loop logs it and
/// tries again.
#[derive(Debug, thiserror::Error)]
enum BindError {
    /// The stream does not exist (yet): no service has ensured it.
    #[error("stream {stream} does not exist: {source}")]
    StreamMissing {
        stream: String,
        source: GetStreamError,
    },
    /// The stream could not be looked up (JetStream refused or did not
    /// answer).
    #[error("cannot look up stream {stream}: {source}")]
    Stream {
        stream: String,
        source: GetStreamError,
    },
    /// The consumer could not be created or brought to its spec.
    #[error(
        "cannot create the consumer on stream {stream}: {source} (when this times out, \
         JetStream may be unreachable, or this service's NATS user may lack the permission: \
         deploy/nats/auth.conf of the same version as the service allows each service its \
         own durable consumers)"
    )]
    Create {
        stream: String,
        source: ConsumerError,
    },
}

/// A durable pull consumer bound to a handler.
pub struct DurableConsumer {
    js: JetStream,
    spec: ConsumerSpec,
}

impl DurableConsumer {
    /// Binds `spec` on `js`. Nothing is created until [`DurableConsumer::run`].
    pub fn new(js: JetStream, spec: ConsumerSpec) -> Self {
        Self { js, spec }
    }

    async fn create(&self) -> Result<PullConsumer, BindError> {
        let spec = &self.spec;
        let stream = self.js.get_stream(&spec.stream).await.map_err(|source| {
            let missing = matches!(
                source.kind(),
                GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND
            );
            let stream = spec.stream.clone();
            if missing {
                BindError::StreamMissing { stream, source }
            } else {
                BindError::Stream { stream, source }
            }
        })?;
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            backoff: spec.backoff.clone(),
            filter_subjects: spec.filter_subjects.clone(),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        // Create-or-update, so a changed spec reaches an existing consumer.
        stream
            .create_consumer(config)
            .await
            .map_err(|source| BindError::Create {
                stream: spec.stream.clone(),
                source,
            })
    }

    /// Pulls and handles messages until `shutdown` is cancelled, then finishes
    /// and acks every message it holds before returning.
    ///
    /// Beside it run the consumer's max-deliveries watch
    /// ([`ConsumerSpec::max_deliveries_watch`], handled by
    /// [`MaxDeliveries`]), so that every durable consumer dead-letters what
    /// it gave up on without a settle, as well as what its handler gave up
    /// on; and its replays' durable ([`ConsumerSpec::replays`]), with a
    /// watch of its own, delivering to the same handler.
    ///
    /// Broker outages are waited out: the loop retries with a pause and never
    /// returns an error.
    pub async fn run<H: EventHandler>(self, handler: Arc<H>, shutdown: CancellationToken) {
        let replays = self
            .spec
            .replays()
            .map(|spec| DurableConsumer::new(self.js.clone(), spec));
        let replays = {
            let (handler, shutdown) = (handler.clone(), shutdown.clone());
            async move {
                if let Some(replays) = replays {
                    replays.watched(handler, shutdown).await;
                }
            }
        };
        tokio::join!(self.watched(handler, shutdown), replays);
    }

    /// This consumer's pull loop beside its max-deliveries watch.
    async fn watched<H: EventHandler>(self, handler: Arc<H>, shutdown: CancellationToken) {
        let watch = DurableConsumer::new(self.js.clone(), self.spec.max_deliveries_watch());
        let watcher = Arc::new(MaxDeliveries {
            js: self.js.clone(),
            watched: self.spec.clone(),
        });
        tokio::join!(
            self.pull(handler, shutdown.clone()),
            watch.pull(watcher, shutdown),
        );
    }

    /// The pull loop of [`DurableConsumer::run`], for this consumer alone.
    async fn pull<H: EventHandler>(self, handler: Arc<H>, shutdown: CancellationToken) {
        let spec = Arc::new(self.spec.clone());
        let limit = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let pause = Duration::from_millis(500);
        let mut consumer: Option<PullConsumer> = None;
        let order = Arc::new(SubjectOrder::default());
        // The CONSUMER span's name, formatted once rather than per message.
        let span_name: Arc<str> = format!("process {}", spec.durable).into();
        // The backlog gauges are read on their own timer: they matter most
        // when the pull loop is stuck (breaker open, broker down).
        let backlog = tokio::spawn(watch_backlog(
            self.js.clone(),
            spec.clone(),
            shutdown.clone(),
        ));
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = handler.ready() => {}
            }
            let pull = match &consumer {
                Some(c) => c,
                None => match self.create().await {
                    Ok(c) => consumer.insert(c),
                    Err(error) => {
                        tracing::warn!(consumer = %spec.durable, %error, "cannot bind the durable consumer; retrying");
                        sleep_or_cancel(pause, &shutdown).await;
                        continue;
                    }
                },
            };
            // A short expiry bounds how long a shutdown waits for the batch
            // in flight, whose messages are all handled before returning.
            let batch = pull
                .batch()
                .max_messages(spec.concurrency.max(1) * 2)
                .expires(Duration::from_millis(1000))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(consumer = %spec.durable, %error, "pull request failed; retrying");
                    consumer = None;
                    sleep_or_cancel(pause, &shutdown).await;
                    continue;
                }
            };
            while let Some(message) = batch.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(consumer = %spec.durable, %error, "pull failed; retrying");
                        sleep_or_cancel(pause, &shutdown).await;
                        break;
                    }
                };
                let aggregate = aggregate_key(message.subject.as_str());
                let skipped = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::CE_TYPE))
                    .is_some_and(|t| handler.skips(t.as_str()));
                if skipped {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(consumer = %spec.durable, %error, "cannot ack a message of a kind it skips; it will be redelivered");
                    }
                    continue;
                }
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let handler = handler.clone();
                let js = self.js.clone();
                let spec = spec.clone();
                let span_name = span_name.clone();
                let turn = order.enter(aggregate);
                let order = order.clone();
                tasks.spawn(async move {
                    // Events of one aggregate are handled in stream order.
                    turn.wait().await;
                    process(&js, &spec, &span_name, handler.as_ref(), message).await;
                    order.leave(turn);
                    drop(permit);
                });
                // Reap finished tasks so the set does not grow.
                while tasks.try_join_next().is_some() {}
            }
        }
        while tasks.join_next().await.is_some() {}
        backlog.abort();
    }
}

/// Reads the consumer's pending and ack-pending counts every few seconds
/// for the backlog gauges, until `shutdown`.
async fn watch_backlog(js: JetStream, spec: Arc<ConsumerSpec>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Ok(stream) = js.get_stream_no_info(&spec.stream).await
            && let Ok(info) = stream.consumer_info(&spec.durable).await
        {
            crate::metrics::record_backlog(
                &spec.stream,
                &spec.durable,
                info.num_pending,
                u64::try_from(info.num_ack_pending).unwrap_or(0),
            );
        }
        sleep_or_cancel(BACKLOG_INTERVAL, &shutdown).await;
    }
}

/// Keeps the events of one aggregate in stream order while events of
/// different aggregates run concurrently. An aggregate is its subjects
/// without the event token ([`aggregate_key`]), so
/// `orders.c-1.<id>.created` and `orders.c-1.<id>.cancelled` queue together.
///
/// Without it, an `OrderCreated` and the `OrderCancelled` right behind it
/// could be handled at once, and the charge would race the cancellation.
/// Each message waits for the one before it on its aggregate; the map only
/// holds aggregates with work in flight.
#[derive(Default)]
struct SubjectOrder {
    tails: std::sync::Mutex<Tails>,
    tickets: std::sync::atomic::AtomicU64,
}

/// Per subject: the ticket of the last message in line, and a future that
/// resolves when it is handled.
type Tails = HashMap<String, (u64, Shared<oneshot::Receiver<()>>)>;

/// A message's place in its subject's queue.
struct Turn {
    subject: String,
    ticket: u64,
    previous: Option<Shared<oneshot::Receiver<()>>>,
    /// Dropped when the message is handled, which wakes the next in line.
    _done: oneshot::Sender<()>,
}

impl Turn {
    async fn wait(&self) {
        if let Some(previous) = self.previous.clone() {
            // Err means the previous sender was dropped: it finished.
            let _ = previous.await;
        }
    }
}

impl SubjectOrder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tails> {
        // Entries are plain values; a poisoned map is still consistent.
        self.tails.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, subject: &str) -> Turn {
        let ticket = self
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, finished) = oneshot::channel();
        let previous = self
            .lock()
            .insert(subject.to_owned(), (ticket, finished.shared()))
            .map(|(_, previous)| previous);
        Turn {
            subject: subject.to_owned(),
            ticket,
            previous,
            _done: done,
        }
    }

    fn leave(&self, turn: Turn) {
        let mut tails = self.lock();
        if tails
            .get(&turn.subject)
            .is_some_and(|(t, _)| *t == turn.ticket)
        {
            tails.remove(&turn.subject);
        }
    }
}

async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Handles one message and settles it: ack, NAK with delay, or dead letter.
async fn process<H: EventHandler>(
    js: &JetStream,
    spec: &ConsumerSpec,
    span_name: &str,
    handler: &H,
    message: jetstream::Message,
) {
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 1),
    };
    // Moved out, not cloned: nothing reads the message's headers afterwards
    // (acks use its reply subject, dead letters copy from `event`).
    let mut message = message;
    let headers = message.message.headers.take().unwrap_or_default();
    let event = ReceivedEvent {
        subject: message.message.subject.to_string(),
        payload: message.message.payload.clone(),
        headers,
        stream_sequence,
        delivered,
    };
    let span = tracing::info_span!(
        "nats.process",
        otel.name = span_name,
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %event.subject,
        messaging.consumer.group.name = %spec.durable,
        messaging.message.id = event.ce_id().unwrap_or_default(),
        messaging.message.delivery_count = delivered,
        cloudevents.event_type = event.ce_type().unwrap_or_default(),
        otel.status_code = tracing::field::Empty,
    );
    let producer = propagation::extract(&event.headers);
    // The producer's context is the parent (one trace end to end) and also a
    // link, which trace backends show on a consumer span that batches or
    // redeliveries detach from its parent's timing.
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let producer_span = producer.span().span_context().clone();
        if producer_span.is_valid() {
            span.add_link(producer_span);
        }
    }
    propagation::set_parent(&span, producer);
    let metrics = crate::metrics::metrics();
    let mut labels = vec![
        opentelemetry::KeyValue::new("messaging.system", "nats"),
        opentelemetry::KeyValue::new("messaging.operation.name", "process"),
        opentelemetry::KeyValue::new("messaging.destination.name", spec.stream.clone()),
        opentelemetry::KeyValue::new("messaging.consumer.group.name", spec.durable.clone()),
        opentelemetry::KeyValue::new(
            "cloudevents.event_type",
            event.ce_type().unwrap_or("unknown").to_owned(),
        ),
    ];
    if delivered > 1 {
        metrics.redeliveries.add(1, &labels);
    }
    let started = std::time::Instant::now();
    async {
        let outcome = handler.handle(&event).await;
        let (settled, label) = match outcome {
            Outcome::Done => (message.ack().await, "ack"),
            Outcome::Retry { after, reason } if delivered < spec.max_deliver => {
                tracing::warn!(%reason, delivered, "handler failed; the message will be redelivered");
                tracing::Span::current().record("otel.status_code", "ERROR");
                (message.ack_with(AckKind::Nak(Some(after))).await, "retry")
            }
            Outcome::Retry { reason, .. } => {
                let reason = format!("still failing after {delivered} deliveries: {reason}");
                let stored = dead_letter(js, spec, &message, &event, &reason).await;
                (stored.map(|()| metrics.dead_letters.add(1, &labels)), "dead_letter")
            }
            Outcome::Reject { reason } => {
                let stored = dead_letter(js, spec, &message, &event, &reason).await;
                (stored.map(|()| metrics.dead_letters.add(1, &labels)), "dead_letter")
            }
        };
        labels.push(opentelemetry::KeyValue::new("orderflow.outcome", label));
        metrics
            .process_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        if let Err(error) = settled {
            // The message stays unacked and comes back after ack_wait.
            tracing::warn!(%error, "could not settle a message; it will be redelivered");
        }
    }
    .instrument(span)
    .await
}

/// Copies the message to the dead-letter stream with the reason, then
/// terminates it. When the copy is not confirmed the message is NAKed instead,
/// so it is never lost between the two streams.
async fn dead_letter(
    js: &JetStream,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    event: &ReceivedEvent,
    reason: &str,
) -> Result<(), async_nats::Error> {
    tracing::error!(%reason, subject = %event.subject, "dead-lettering a message");
    tracing::Span::current().record("otel.status_code", "ERROR");
    let original = Original {
        subject: &event.subject,
        headers: &event.headers,
        payload: &event.payload,
        stream_sequence: event.stream_sequence,
        delivered: event.delivered,
    };
    match store_dead_letter(js, spec, &original, reason).await {
        Ok(()) => message.ack_with(AckKind::Term).await,
        Err(error) => {
            tracing::error!(%error, "could not store a dead letter; NAKing instead");
            message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await?;
            Err(error)
        }
    }
}

/// The message a dead letter is a copy of, as its consumer's stream holds it.
struct Original<'a> {
    subject: &'a str,
    headers: &'a async_nats::HeaderMap,
    payload: &'a bytes::Bytes,
    stream_sequence: u64,
    delivered: i64,
}

/// Stores the dead letter of `original`, which consumer `spec` gave up on,
/// with `reason`, and waits for JetStream's ack.
///
/// Its `Nats-Msg-Id` names the stream, the consumer and the sequence, so
/// every copy of one message by one consumer is stored once within the
/// dead-letter stream's de-duplication window: two replicas, a handler and
/// the max-deliveries watch, or a redelivered advisory.
async fn store_dead_letter(
    js: &JetStream,
    spec: &ConsumerSpec,
    original: &Original<'_>,
    reason: &str,
) -> Result<(), async_nats::Error> {
    // The copy keeps the original's headers but none of JetStream's
    // (`Nats-*`): an event appended with optimistic concurrency carries
    // `Nats-Expected-Last-Subject-Sequence`, which the dead-letter stream
    // would check again against its own subject and refuse the copy, every
    // time. The replay (`dead_letters.rs`) drops them the same way.
    let mut dl_headers = async_nats::HeaderMap::new();
    for (name, values) in original.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Nats-") {
            continue;
        }
        for value in values {
            dl_headers.append(name, value.as_str());
        }
    }
    // The copy must not be de-duplicated against the original's id, nor
    // against another consumer's dead letter of the same message.
    dl_headers.insert(
        headers::MSG_ID,
        format!(
            "dl-{}-{}-{}",
            spec.stream, spec.durable, original.stream_sequence
        )
        .as_str(),
    );
    dl_headers.insert(headers::DEAD_LETTER_REASON, reason);
    dl_headers.insert(headers::ORIGINAL_SUBJECT, original.subject);
    dl_headers.insert(headers::ORIGINAL_STREAM, spec.stream.as_str());
    dl_headers.insert(
        headers::ORIGINAL_SEQUENCE,
        original.stream_sequence.to_string().as_str(),
    );
    dl_headers.insert(headers::ORIGINAL_CONSUMER, spec.durable.as_str());
    dl_headers.insert(
        headers::DELIVERY_COUNT,
        original.delivered.to_string().as_str(),
    );
    let subject = crate::subject::dead_letter_subject(&spec.stream, &spec.durable);
    js.publish_with_headers(subject, dl_headers, original.payload.clone())
        .await?
        .await?;
    Ok(())
}

/// The body of JetStream's max-deliveries advisory
/// (`io.nats.jetstream.advisory.v1.max_deliver`), the fields used.
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: i64,
}

/// Dead-letters the messages a durable consumer reached its max deliveries
/// on without settling the last one, from JetStream's max-deliveries
/// advisories.
///
/// When the handler fails a message's last delivery, the consumer
/// dead-letters it itself. When that delivery is never settled (the replica
/// was killed or stalled past the ack wait while handling it, a crash loop),
/// JetStream gives up on the message once that ack wait ran out (nats-server
/// 2.15.1 decides it at the consumer's next pull, by any replica) and only
/// publishes `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`,
/// once, as a core message: exactly when the owner's replicas may be down or
/// crashing again. So the advisory is not subscribed to: the stream `ADVISORIES`
/// captures it (it is published in the streams' account), and this handler
/// receives it through a durable consumer of the owning service
/// ([`ConsumerSpec::max_deliveries_watch`]), which JetStream keeps it for
/// until one replica acked it, however long they were all down.
///
/// The dead letter is the original message, read by its sequence from the
/// consumer's stream, with a reason saying its last delivery was never
/// settled; it has the `Nats-Msg-Id` of the handler's dead letter of it
/// (`store_dead_letter`), so two replicas, or a handler that dead-lettered
/// it but lost its term, still make one.
pub struct MaxDeliveries {
    js: JetStream,
    watched: ConsumerSpec,
}

impl EventHandler for MaxDeliveries {
    async fn handle(&self, event: &ReceivedEvent) -> Outcome {
        let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(&event.payload) {
            Ok(advisory) => advisory,
            Err(error) => {
                return Outcome::Reject {
                    reason: format!("not a JetStream max-deliveries advisory: {error}"),
                };
            }
        };
        let watched = &self.watched;
        // The filter subject names the consumer; a body naming another is
        // not JetStream's.
        if advisory.stream != watched.stream || advisory.consumer != watched.durable {
            return Outcome::Reject {
                reason: format!(
                    "a max-deliveries advisory of {}/{} on the subject of {}/{}",
                    advisory.stream, advisory.consumer, watched.stream, watched.durable
                ),
            };
        }
        let retry = |reason: String| Outcome::backing_off(event.delivered, reason);
        let stream = match self.js.get_stream_no_info(&watched.stream).await {
            Ok(stream) => stream,
            Err(error) => {
                return retry(format!("cannot look up stream {}: {error}", watched.stream));
            }
        };
        let message = match stream.direct_get(advisory.stream_seq).await {
            Ok(message) => message,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => {
                // Nothing left to copy: only a stream's operator deletes
                // events, and the services may not.
                tracing::error!(stream = %watched.stream, consumer = %watched.durable,
                    sequence = advisory.stream_seq,
                    "a message reached its max deliveries unsettled and is no longer in its stream; no dead letter");
                return Outcome::Done;
            }
            Err(error) => {
                return retry(format!(
                    "cannot read message {} of {}: {error}",
                    advisory.stream_seq, watched.stream
                ));
            }
        };
        // No ack wait in it: the one in effect then may not be this
        // replica's.
        let reason = format!(
            "max deliveries ({}) reached and the last delivery was never settled: its ack wait \
             ran out with no ack, NAK or dead letter (the replica handling it crashed, stalled \
             or lost its connection)",
            advisory.deliveries,
        );
        tracing::error!(%reason, subject = %message.subject, sequence = advisory.stream_seq,
            "dead-lettering a message from its max-deliveries advisory");
        let original = Original {
            subject: message.subject.as_str(),
            headers: &message.headers,
            payload: &message.payload,
            stream_sequence: advisory.stream_seq,
            delivered: advisory.deliveries,
        };
        match store_dead_letter(&self.js, watched, &original, &reason).await {
            Ok(()) => {
                let labels = [
                    opentelemetry::KeyValue::new("messaging.system", "nats"),
                    opentelemetry::KeyValue::new("messaging.operation.name", "process"),
                    opentelemetry::KeyValue::new(
                        "messaging.destination.name",
                        watched.stream.clone(),
                    ),
                    opentelemetry::KeyValue::new(
                        "messaging.consumer.group.name",
                        watched.durable.clone(),
                    ),
                    opentelemetry::KeyValue::new(
                        "cloudevents.event_type",
                        message
                            .headers
                            .get(headers::CE_TYPE)
                            .map_or("unknown", |v| v.as_str())
                            .to_owned(),
                    ),
                ];
                crate::metrics::metrics().dead_letters.add(1, &labels);
                Outcome::Done
            }
            Err(error) => retry(format!("cannot store the dead letter: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_has_one_filter_subject_and_its_replays_a_durable_of_their_own() {
        let live = ConsumerSpec::durable("ORDERS", "payment-service-orders", "orders.*.*.*");
        assert_eq!(live.filter_subjects, ["orders.*.*.*"]);
        let Some(replays) = live.replays() else {
            panic!("a filter without `>` has a replays durable");
        };
        assert_eq!(replays.durable, "payment-service-orders-replays");
        assert_eq!(replays.filter_subjects, ["orders.*.*.*.replay"]);
        assert_eq!(replays.stream, "ORDERS");
        assert_eq!(replays.max_deliver, live.max_deliver);
        assert!(
            replays.replays().is_none(),
            "replays have no replays of their own"
        );
        // A filter ending in `>` receives its replays itself.
        let all = ConsumerSpec::durable("PAYMENTS", "order-service-payments", "payments.>");
        assert!(all.replays().is_none());
        assert!(all.max_deliveries_watch().replays().is_none());
    }

    #[test]
    fn durables_that_split_a_subject_space_share_one_replays_durable() {
        let created =
            ConsumerSpec::durable("ORDERS", "payment-service-orders", "orders.*.*.created")
                .with_replays("orders.*.*.*.replay");
        let Some(replays) = created.replays() else {
            panic!("with_replays names a replays durable");
        };
        assert_eq!(replays.durable, "payment-service-orders-replays");
        assert_eq!(replays.filter_subjects, ["orders.*.*.*.replay"]);
        let cancelled = ConsumerSpec::durable(
            "ORDERS",
            "payment-service-cancellations",
            "orders.*.*.cancelled",
        )
        .without_replays();
        assert_eq!(cancelled.filter_subjects, ["orders.*.*.cancelled"]);
        assert!(cancelled.replays().is_none());
    }
}
