//! Watching sagas finish.
//!
//! A saga starts when the bench sends CreateOrder and ends when the order's
//! final event (`OrderConfirmed`, `OrderPaymentFailed`, `OrderCancelled` or
//! `OrderRefunded`) is published on `orders.<order_id>`. One plain NATS
//! subscription on `orders.>` sees every event as the order service commits
//! it, which costs the broker one more delivery per event and the bench one
//! protobuf decode per final event: far cheaper than a WatchOrder stream per
//! order, and it never falls behind a JetStream consumer's flow control.
//!
//! Orders are matched by their customer and `request_id`: the bench's
//! customers share a prefix unique to the run, and the `request_id` is the
//! request's sequence number. The final event can arrive before the
//! CreateOrder response, so both orders of arrival are handled
//! ([`SagaTracker::created`] and [`SagaTracker::completed`]).
//!
//! The observer also counts every message it receives, and its bytes as
//! nats-server counts them, because each is a delivery the broker makes only
//! for the bench: [`crate::cost`] takes them out of the broker's figures.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream::select_all};
use orderflow_proto::{
    Name as _,
    order::v1::{OrderCancelled, OrderConfirmed, OrderCreated, OrderPaymentFailed, OrderRefunded},
};
use prost::Message as _;
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::stats::Latencies;

/// How a saga ended, by the type of the order's final event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `OrderConfirmed`: the payment was authorised.
    Confirmed,
    /// `OrderPaymentFailed`: the payment was declined.
    PaymentFailed,
    /// `OrderCancelled` or `OrderRefunded` (the bench never asks for either,
    /// so these point at someone else touching the orders).
    Other,
}

/// How many sagas ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Orders confirmed.
    pub confirmed: u64,
    /// Orders whose payment failed.
    pub payment_failed: u64,
    /// Orders cancelled or refunded.
    pub other: u64,
}

/// The part of a phase's timeline that counts.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Requests sent (or due, in open loop) before this are warm-up.
    pub measure_from: Instant,
    /// The end of the measured window when it is known in advance (a run of
    /// fixed duration); `None` for a run of fixed count.
    pub measure_until: Option<Instant>,
}

/// A saga whose CreateOrder was answered, waiting for its final event.
#[derive(Clone, Copy, Debug)]
struct Started {
    /// When the request was sent (closed loop) or due (open loop).
    at: Instant,
    /// Whether it was sent inside the measured window.
    measured: bool,
}

/// What one phase observed.
#[derive(Debug)]
struct PhaseState {
    window: Window,
    /// Answered CreateOrders still waiting for their final event, by sequence.
    pending: HashMap<u64, Started>,
    /// Final events that arrived before their CreateOrder response.
    early: HashMap<u64, (Instant, Outcome)>,
    /// Saga latencies of measured requests.
    latencies: Latencies,
    /// Ends of the measured sagas.
    outcomes: Outcomes,
    /// Final events of this run's orders inside the window (any request).
    in_window: u64,
    /// When the last measured saga finished.
    last_measured_end: Option<Instant>,
}

impl PhaseState {
    fn new(window: Window) -> Self {
        Self {
            window,
            pending: HashMap::new(),
            early: HashMap::new(),
            latencies: Latencies::new(),
            outcomes: Outcomes::default(),
            in_window: 0,
            last_measured_end: None,
        }
    }

    fn finish(&mut self, started: Started, ended: Instant, outcome: Outcome) {
        if !started.measured {
            return;
        }
        self.latencies
            .record(ended.saturating_duration_since(started.at));
        match outcome {
            Outcome::Confirmed => self.outcomes.confirmed += 1,
            Outcome::PaymentFailed => self.outcomes.payment_failed += 1,
            Outcome::Other => self.outcomes.other += 1,
        }
        self.last_measured_end = Some(self.last_measured_end.map_or(ended, |t| t.max(ended)));
    }
}

/// The sagas of a phase, as [`SagaTracker::end_phase`] reports them.
#[derive(Debug)]
pub struct SagaResults {
    /// Saga latencies of the measured requests.
    pub latencies: Latencies,
    /// How they ended.
    pub outcomes: Outcomes,
    /// Final events seen inside the measured window.
    pub in_window: u64,
    /// When the last measured saga finished.
    pub last_measured_end: Option<Instant>,
    /// Measured sagas that had not finished when the bench stopped waiting.
    pub unfinished: u64,
}

/// Matches CreateOrder answers with final events, one phase at a time.
#[derive(Debug)]
pub struct SagaTracker {
    /// The customer-id prefix of this run's orders (`bench-<run>-`).
    customer_prefix: String,
    state: Mutex<PhaseState>,
    /// Final events of this run's orders, for the progress line.
    completed_total: AtomicU64,
    /// Encoded size of the first `OrderCreated` seen, for the baseline.
    created_event_bytes: AtomicUsize,
    /// Slow-consumer events on the observing connection: events dropped
    /// before the bench could read them (the report shows it).
    dropped: AtomicU64,
    /// Messages the observer received, anyone's.
    received_msgs: AtomicU64,
    /// Their header and payload bytes.
    received_bytes: AtomicU64,
    /// What the tap saw, by kind (`--by-kind`; all zero without it).
    kinds: crate::kinds::Counters,
    /// Whether a tap is counting kinds.
    tapped: std::sync::atomic::AtomicBool,
}

/// What the observer and the tap have received so far: messages, and their
/// bytes as nats-server's `out_bytes` counts them (headers and payload), and
/// what the tap saw by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Messages.
    pub msgs: u64,
    /// Header and payload bytes.
    pub bytes: u64,
    /// The tap's counts by kind, when a tap runs.
    pub kinds: Option<crate::kinds::Counts>,
}

/// The bytes of `message` that nats-server counts in `out_bytes`: headers
/// plus payload (`len(msg) - CRLF` in its `deliverMsg`), not the subject or
/// the reply subject. async-nats's `length` is subject + reply + headers +
/// payload (the HMSG total), so those two are taken off again.
fn server_counted_bytes(message: &async_nats::Message) -> u64 {
    let names = message.subject.len() + message.reply.as_ref().map_or(0, |r| r.len());
    message.length.saturating_sub(names) as u64
}

impl SagaTracker {
    /// A tracker for the orders whose customer id starts with `customer_prefix`.
    pub fn new(customer_prefix: String) -> Self {
        let now = Instant::now();
        Self {
            customer_prefix,
            state: Mutex::new(PhaseState::new(Window {
                measure_from: now,
                measure_until: None,
            })),
            completed_total: AtomicU64::new(0),
            created_event_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            received_msgs: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            kinds: crate::kinds::Counters::default(),
            tapped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What the observer has received since the tracker was made.
    pub fn observed(&self) -> Observed {
        Observed {
            msgs: self.received_msgs.load(Ordering::Relaxed),
            bytes: self.received_bytes.load(Ordering::Relaxed),
            kinds: self
                .tapped
                .load(Ordering::Relaxed)
                .then(|| self.kinds.read()),
        }
    }

    /// Counts one message the observer received.
    fn note_received(&self, bytes: u64) {
        self.received_msgs.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one message the tap received: a delivery made only for the
    /// bench, like the observer's.
    pub fn note_tapped(&self, message: &async_nats::Message) {
        self.note_received(server_counted_bytes(message));
    }

    /// From now on [`Self::observed`] reports the tap's counts by kind.
    pub fn start_tapping(&self) {
        self.tapped.store(true, Ordering::Relaxed);
    }

    /// Counts one message of `kind` the tap saw.
    pub fn note_kind(&self, kind: crate::kinds::Kind) {
        self.kinds.note(kind);
    }

    fn state(&self) -> MutexGuard<'_, PhaseState> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters to a report, so keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a phase; whatever the previous one left is forgotten.
    pub fn begin_phase(&self, window: Window) {
        *self.state() = PhaseState::new(window);
    }

    /// Records that CreateOrder `seq`, sent (or due) at `at`, was answered.
    pub fn created(&self, seq: u64, at: Instant, measured: bool) {
        let started = Started { at, measured };
        let mut state = self.state();
        if let Some((ended, outcome)) = state.early.remove(&seq) {
            state.finish(started, ended, outcome);
        } else {
            state.pending.insert(seq, started);
        }
    }

    /// Records the final event of order `seq`, seen at `at`.
    pub fn completed(&self, seq: u64, at: Instant, outcome: Outcome) {
        self.completed_total.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        let window = state.window;
        if at >= window.measure_from && window.measure_until.is_none_or(|end| at <= end) {
            state.in_window += 1;
        }
        if let Some(started) = state.pending.remove(&seq) {
            state.finish(started, at, outcome);
        } else {
            state.early.insert(seq, (at, outcome));
        }
    }

    /// Answered CreateOrders whose saga has not finished.
    pub fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// Final events seen since the tracker was made.
    pub fn completed_total(&self) -> u64 {
        self.completed_total.load(Ordering::Relaxed)
    }

    /// Encoded size of this run's `OrderCreated` events, once one was seen.
    pub fn created_event_bytes(&self) -> Option<usize> {
        Some(self.created_event_bytes.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    /// Slow-consumer events seen on the observing connection.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every answered CreateOrder has its final event, or
    /// `timeout` passes; returns how long it waited.
    pub async fn drain(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        while self.pending() > 0 && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        start.elapsed()
    }

    /// Ends the phase and returns what it observed.
    pub fn end_phase(&self) -> SagaResults {
        let mut state = self.state();
        let unfinished = state.pending.values().filter(|s| s.measured).count() as u64;
        state.pending.clear();
        state.early.clear();
        SagaResults {
            latencies: std::mem::take(&mut state.latencies),
            outcomes: state.outcomes,
            in_window: state.in_window,
            last_measured_end: state.last_measured_end,
            unfinished,
        }
    }

    /// Parses the sequence number of one of this run's orders from its
    /// customer and `request_id`; `None` for anyone else's order.
    fn sequence_of(&self, customer_id: &str, request_id: &str) -> Option<u64> {
        if !customer_id.starts_with(&self.customer_prefix) {
            return None;
        }
        request_id.parse().ok()
    }

    /// Handles one message from `orders.>`.
    fn on_event(&self, message: &async_nats::Message) {
        let at = Instant::now();
        let Some(kind) = message
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-type"))
            .map(|v| v.as_str())
        else {
            return;
        };
        let outcome = if kind == OrderConfirmed::full_name() {
            Outcome::Confirmed
        } else if kind == OrderPaymentFailed::full_name() {
            Outcome::PaymentFailed
        } else if kind == OrderCancelled::full_name() || kind == OrderRefunded::full_name() {
            Outcome::Other
        } else {
            if kind == OrderCreated::full_name()
                && self.created_event_bytes.load(Ordering::Relaxed) == 0
                && let Ok(event) = OrderCreated::decode(message.payload.clone())
                && let Some(order) = event.order
                && self
                    .sequence_of(&order.customer_id, &order.request_id)
                    .is_some()
            {
                self.created_event_bytes
                    .store(message.payload.len(), Ordering::Relaxed);
            }
            return;
        };
        // Every order event has the same shape (`Order order = 1`), so one
        // decoder reads all four final events.
        let Ok(event) = OrderConfirmed::decode(message.payload.clone()) else {
            return;
        };
        let Some(order) = event.order else { return };
        if let Some(seq) = self.sequence_of(&order.customer_id, &order.request_id) {
            self.completed(seq, at, outcome);
        }
    }

    /// Counts a slow-consumer event on the observing connection.
    pub fn note_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running subscription on `orders.>`.
#[derive(Debug)]
pub struct Observer {
    client: async_nats::Client,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

/// Subscribes to `orders.>` on `client` and feeds every event to `tracker`
/// until the connection closes or [`Observer::stop`]. The subscription is
/// registered on the server (flushed) before this returns, so no event of a
/// later request is missed.
pub async fn observe(
    client: &async_nats::Client,
    tracker: Arc<SagaTracker>,
) -> Result<Observer, String> {
    let mut subscriber = client
        .subscribe(orderflow_proto::contract::ORDERS_SUBJECTS)
        .await
        .map_err(|e| format!("cannot subscribe to order events: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("cannot subscribe to order events: {e}"))?;
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                message = subscriber.next() => {
                    let Some(message) = message else { break };
                    tracker.note_received(server_counted_bytes(&message));
                    tracker.on_event(&message);
                }
                _ = &mut stopped => {
                    if let Err(e) = subscriber.unsubscribe().await {
                        eprintln!("warning: cannot unsubscribe the saga observer: {e}");
                    }
                    break;
                }
            }
        }
    });
    Ok(Observer {
        client: client.clone(),
        task,
        stop: Some(stop),
    })
}

/// The subjects the tap subscribes to: the two streams', and JetStream's and
/// the inboxes' (see the module's documentation).
const TAP_SUBJECTS: [&str; 5] = [
    "orders.>",
    "payments.>",
    "$JS.ACK.>",
    "$JS.API.>",
    "_INBOX.>",
];

/// A running tap of the broker's traffic (`--by-kind`, see [`crate::kinds`]).
#[derive(Debug)]
pub struct Tap {
    task: JoinHandle<()>,
}

impl Tap {
    /// Subscribes on `client` and counts every message into `tracker` until
    /// [`Tap::stop`] or the connection closes; the subscriptions are
    /// registered on the server (flushed) before this returns.
    pub async fn start(
        client: &async_nats::Client,
        tracker: Arc<SagaTracker>,
    ) -> Result<Tap, String> {
        let mut subscribers = Vec::with_capacity(TAP_SUBJECTS.len());
        for subject in TAP_SUBJECTS {
            subscribers.push(
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| format!("cannot tap {subject}: {e}"))?,
            );
        }
        client
            .flush()
            .await
            .map_err(|e| format!("cannot tap the broker's traffic: {e}"))?;
        tracker.start_tapping();
        let mut messages = select_all(subscribers);
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let kind = crate::kinds::classify(
                    message.subject.as_str(),
                    message.reply.as_ref().map(|r| r.as_str()),
                    message
                        .status
                        .map(|s| (s.as_u16(), message.description.as_deref())),
                    &message.payload,
                );
                tracker.note_kind(kind);
                tracker.note_tapped(&message);
            }
        });
        Ok(Tap { task })
    }

    /// Stops counting.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Observer {
    /// Unsubscribes, and returns once the server has processed it (the
    /// UNSUB is flushed), so that the broker delivers nothing more to the
    /// bench.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.client
            .flush()
            .await
            .map_err(|e| format!("cannot stop observing order events: {e}"))
    }

    /// Stops at once, without waiting for the server.
    pub fn abort(&self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(now: Instant) -> Window {
        Window {
            measure_from: now,
            measure_until: Some(now + Duration::from_secs(60)),
        }
    }

    #[test]
    fn final_event_before_or_after_the_answer_is_matched() {
        let tracker = SagaTracker::new("bench-x-".into());
        let t0 = Instant::now();
        tracker.begin_phase(window(t0));
        // Answer first, then the event.
        tracker.created(1, t0, true);
        tracker.completed(1, t0 + Duration::from_millis(5), Outcome::Confirmed);
        // Event first, then the answer.
        tracker.completed(2, t0 + Duration::from_millis(7), Outcome::PaymentFailed);
        tracker.created(2, t0 + Duration::from_millis(1), true);
        // Never finishes.
        tracker.created(3, t0, true);
        // Warm-up: finishes but is not measured.
        tracker.created(4, t0, false);
        tracker.completed(4, t0 + Duration::from_millis(2), Outcome::Confirmed);
        assert_eq!(tracker.pending(), 1);
        let results = tracker.end_phase();
        assert_eq!(results.latencies.len(), 2);
        assert_eq!(
            results.outcomes,
            Outcomes {
                confirmed: 1,
                payment_failed: 1,
                other: 0
            }
        );
        assert_eq!(results.in_window, 3);
        assert_eq!(results.unfinished, 1);
        assert_eq!(
            results.last_measured_end,
            Some(t0 + Duration::from_millis(7))
        );
        assert_eq!(tracker.pending(), 0);
    }

    #[test]
    fn bytes_are_counted_as_the_server_counts_them() {
        // HMSG orders.1 9 <hdr 30> <total 173>: the server counts 173 (the
        // header block and the payload), async-nats's `length` adds the
        // subject and the reply subject.
        let message = async_nats::Message {
            subject: "orders.1".into(),
            reply: Some("_INBOX.x".into()),
            payload: bytes::Bytes::from(vec![0; 143]),
            headers: Some(async_nats::HeaderMap::new()),
            status: None,
            description: None,
            length: "orders.1".len() + "_INBOX.x".len() + 173,
        };
        assert_eq!(server_counted_bytes(&message), 173);
        let plain = async_nats::Message {
            reply: None,
            headers: None,
            length: "orders.1".len() + 143,
            ..message
        };
        assert_eq!(server_counted_bytes(&plain), 143);
    }

    #[test]
    fn the_observer_counts_what_it_received() {
        let tracker = SagaTracker::new("bench-x-".into());
        tracker.note_received(200);
        tracker.note_received(173);
        assert_eq!(
            tracker.observed(),
            Observed {
                msgs: 2,
                bytes: 373,
                kinds: None,
            }
        );
        tracker.start_tapping();
        tracker.note_kind(crate::kinds::Kind::Delivery);
        let kinds = tracker.observed().kinds.map(|k| k.0.iter().sum::<u64>());
        assert_eq!(
            kinds,
            Some(1),
            "once tapping, the counts by kind are reported"
        );
    }

    #[test]
    fn only_this_runs_orders_are_recognised() {
        let tracker = SagaTracker::new("bench-abc-".into());
        assert_eq!(tracker.sequence_of("bench-abc-3", "42"), Some(42));
        assert_eq!(tracker.sequence_of("bench-abd-3", "42"), None);
        assert_eq!(tracker.sequence_of("bench-abc-3", "r-1"), None);
    }
}
