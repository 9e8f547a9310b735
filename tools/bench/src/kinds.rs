//! The broker's messages by kind (`--by-kind`): which of a saga's messages
//! are appends, acks, deliveries, pulls, reads or other JetStream API calls.
//!
//! nats-server's `/varz` counts messages but not what they are for, and
//! nothing else of the server does either. So the bench taps the traffic:
//! plain subscriptions on the streams' subjects (every append), on
//! `$JS.ACK.>` (every ack of a delivery), on `$JS.API.>` (every pull
//! request, direct get and other API request) and on `_INBOX.>` (every
//! answer the server sends: publish acks, deliveries of pull consumers,
//! direct-get replies, status messages). Core NATS gives each matching
//! subscription a copy, so the tap sees what the services see. Each copy is
//! one more delivery by the broker, counted with the observer's
//! ([`crate::saga::Tap`]) and so taken out of every figure; but
//! the copies cost the broker CPU, so a run with the tap measures counts,
//! not CPU or speed.
//!
//! Classifying needs only the subject, the reply subject, the status and the
//! first bytes of the payload, never a decode.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What a message the broker handled was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A publish to a stream's subjects (an event, a schedule).
    Append,
    /// JetStream's ack of an append, to the publisher's inbox.
    AppendAck,
    /// A message of a pull consumer, delivered to the puller's inbox.
    Delivery,
    /// A consumer's ack (or nak, or term) of a delivery.
    DeliveryAck,
    /// A pull request (`$JS.API.CONSUMER.MSG.NEXT.*`).
    PullRequest,
    /// A status ending or pacing a pull: 404 no messages, 408 expired, 409,
    /// 100 heartbeat.
    PullStatus,
    /// A direct get (`$JS.API.DIRECT.GET.*`), single or batched.
    DirectGet,
    /// A message a direct get answered with, or its end-of-batch or
    /// not-found status.
    DirectGetReply,
    /// Another JetStream API request (stream or consumer info, create).
    ApiRequest,
    /// Its JSON answer.
    ApiReply,
    /// An inbox message of none of these kinds.
    OtherReply,
}

impl Kind {
    /// Every kind, in the order of [`Counts`].
    pub const ALL: [Kind; 11] = [
        Kind::Append,
        Kind::AppendAck,
        Kind::Delivery,
        Kind::DeliveryAck,
        Kind::PullRequest,
        Kind::PullStatus,
        Kind::DirectGet,
        Kind::DirectGetReply,
        Kind::ApiRequest,
        Kind::ApiReply,
        Kind::OtherReply,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The kind's name in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Append => "appends",
            Kind::AppendAck => "append_acks",
            Kind::Delivery => "deliveries",
            Kind::DeliveryAck => "delivery_acks",
            Kind::PullRequest => "pull_requests",
            Kind::PullStatus => "pull_statuses",
            Kind::DirectGet => "direct_gets",
            Kind::DirectGetReply => "direct_get_replies",
            Kind::ApiRequest => "api_requests",
            Kind::ApiReply => "api_replies",
            Kind::OtherReply => "other_replies",
        }
    }
}

/// How many messages of each kind, in the order of [`Kind::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts(pub [u64; Kind::ALL.len()]);

impl Counts {
    /// The counts since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut delta = Counts::default();
        for (i, d) in delta.0.iter_mut().enumerate() {
            *d = self.0[i].saturating_sub(earlier.0[i]);
        }
        delta
    }
}

/// Counters the tap adds to.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; Kind::ALL.len()]);

impl Counters {
    /// Counts one message of `kind`.
    pub fn note(&self, kind: Kind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn read(&self) -> Counts {
        let mut counts = Counts::default();
        for (c, a) in counts.0.iter_mut().zip(&self.0) {
            *c = a.load(Ordering::Relaxed);
        }
        counts
    }
}

/// What a message seen on `subject` is: `reply` is its reply subject,
/// `status` its status code and `description` the text after it (a status
/// message has no body), `payload` its body.
pub fn classify(
    subject: &str,
    reply: Option<&str>,
    status: Option<(u16, Option<&str>)>,
    payload: &[u8],
) -> Kind {
    if let Some(api) = subject.strip_prefix("$JS.API.") {
        return if api.starts_with("CONSUMER.MSG.NEXT.") {
            Kind::PullRequest
        } else if api.starts_with("DIRECT.GET.") {
            Kind::DirectGet
        } else {
            Kind::ApiRequest
        };
    }
    if subject.starts_with("$JS.ACK.") {
        return Kind::DeliveryAck;
    }
    // A pull consumer's message carries its ack subject as reply, and the
    // stream subject it was stored on as subject (the server routes it by
    // the pull's inbox, which the subscriber never sees).
    if reply.is_some_and(|r| r.starts_with("$JS.ACK.")) {
        return Kind::Delivery;
    }
    if !subject.starts_with("_INBOX.") {
        // Besides these the tap subscribes only to the streams' subjects.
        return Kind::Append;
    }
    match status {
        // A batched direct get ends with 204 EOB, or is answered 404 "No
        // Results" when nothing matched, and a single one 404 "Message Not
        // Found"; a pull that found nothing is 404 "No Messages".
        Some((204, _)) => Kind::DirectGetReply,
        Some((404, Some(text))) if text.contains("Not Found") || text.contains("No Results") => {
            Kind::DirectGetReply
        }
        Some(_) => Kind::PullStatus,
        None if payload.starts_with(b"{\"type\":") => Kind::ApiReply,
        // `{"stream":"ORDERS","seq":7}`, or an append's error.
        None if payload.starts_with(b"{") => Kind::AppendAck,
        // A direct get's message: a stored body, protobuf in orderflow.
        None => Kind::DirectGetReply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_of_a_saga_has_its_kind() {
        let inbox = "_INBOX.order-service.Zq3.17";
        for (subject, reply, status, payload, kind) in [
            (
                "orders.c-1.o-1.created",
                Some(inbox),
                None,
                &b"\x0a\x03o-1"[..],
                Kind::Append,
            ),
            (
                "orders.c-1.o-1.payment-deadline.scheduled",
                Some(inbox),
                None,
                b"\x0a",
                Kind::Append,
            ),
            (
                "payments.c-1.p-1.authorized",
                Some(inbox),
                None,
                b"\x0a",
                Kind::Append,
            ),
            (
                inbox,
                None,
                None,
                br#"{"stream":"ORDERS","seq":7}"#,
                Kind::AppendAck,
            ),
            (
                inbox,
                None,
                None,
                br#"{"error":{"code":400,"err_code":10071},"stream":"ORDERS"}"#,
                Kind::AppendAck,
            ),
            (
                "orders.c-1.o-1.created",
                Some("$JS.ACK.ORDERS.payment-service-orders.1.7.7.1.0"),
                None,
                b"\x0a\x03o-1",
                Kind::Delivery,
            ),
            (
                "$JS.ACK.ORDERS.payment-service-orders.1.7.7.1.0",
                None,
                None,
                b"",
                Kind::DeliveryAck,
            ),
            (
                "$JS.API.CONSUMER.MSG.NEXT.ORDERS.payment-service-orders",
                Some(inbox),
                None,
                br#"{"batch":128,"expires":1000000000}"#,
                Kind::PullRequest,
            ),
            (
                inbox,
                None,
                Some((408, Some("Request Timeout"))),
                b"",
                Kind::PullStatus,
            ),
            (
                inbox,
                None,
                Some((404, Some("No Messages"))),
                b"",
                Kind::PullStatus,
            ),
            (
                inbox,
                None,
                Some((404, Some("Message Not Found"))),
                b"",
                Kind::DirectGetReply,
            ),
            (
                inbox,
                None,
                Some((404, Some("No Results"))),
                b"",
                Kind::DirectGetReply,
            ),
            (
                inbox,
                None,
                Some((100, Some("Idle Heartbeat"))),
                b"",
                Kind::PullStatus,
            ),
            (
                "$JS.API.DIRECT.GET.ORDERS",
                Some(inbox),
                None,
                br#"{"multi_last":["orders.*.o-1.cancelled"],"batch":64}"#,
                Kind::DirectGet,
            ),
            (inbox, None, None, b"\x0a\x03o-1", Kind::DirectGetReply),
            (
                inbox,
                None,
                Some((204, Some("EOB"))),
                b"",
                Kind::DirectGetReply,
            ),
            (
                "$JS.API.CONSUMER.INFO.ORDERS.payment-service-orders",
                Some(inbox),
                None,
                b"",
                Kind::ApiRequest,
            ),
            (
                inbox,
                None,
                None,
                br#"{"type":"io.nats.jetstream.api.v1.consumer_info_response"}"#,
                Kind::ApiReply,
            ),
        ] {
            assert_eq!(
                classify(subject, reply, status, payload),
                kind,
                "{subject} (reply {reply:?}, status {status:?})"
            );
        }
    }

    #[test]
    fn counts_subtract_kind_by_kind() {
        let counters = Counters::default();
        counters.note(Kind::Append);
        let before = counters.read();
        counters.note(Kind::Append);
        counters.note(Kind::PullStatus);
        let delta = counters.read().since(&before);
        assert_eq!(delta.0[Kind::Append.index()], 1);
        assert_eq!(delta.0[Kind::PullStatus.index()], 1);
        assert_eq!(delta.0.iter().sum::<u64>(), 2);
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::ALL.len());
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{} is out of order", kind.name());
        }
    }
}
