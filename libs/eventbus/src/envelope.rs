//! How an event is framed on the wire.
//!
//! CloudEvents binary content mode over NATS: the body is the protobuf-encoded
//! payload message, and the attributes travel as `ce-*` headers, so any
//! language decodes an event with the classes generated from `proto/` and
//! routes it by `ce-type` without touching the body.

use async_nats::HeaderMap;
use bytes::Bytes;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The header names of the public event contract.
pub mod headers {
    /// JetStream de-duplication id; equal to `ce-id`.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// When a schedule fires: `@at <RFC 3339 time>` (nats-server 2.12+).
    pub const SCHEDULE: &str = "Nats-Schedule";
    /// The subject a schedule publishes to when it fires.
    pub const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
    /// `purge` on a message removes the schedule named by [`SCHEDULER`]; a
    /// fired message carries it too (JetStream purged its schedule).
    pub const SCHEDULE_NEXT: &str = "Nats-Schedule-Next";
    /// The schedule subject a fired message came from, or that
    /// [`SCHEDULE_NEXT`] purges.
    pub const SCHEDULER: &str = "Nats-Scheduler";
    /// CloudEvents spec version, always `1.0`.
    pub const CE_SPECVERSION: &str = "ce-specversion";
    /// CloudEvents id: unique per event, stable across redeliveries.
    pub const CE_ID: &str = "ce-id";
    /// CloudEvents source: the service that produced the event.
    pub const CE_SOURCE: &str = "ce-source";
    /// CloudEvents type: the full protobuf name of the payload message.
    pub const CE_TYPE: &str = "ce-type";
    /// CloudEvents time: when the event happened (RFC 3339).
    pub const CE_TIME: &str = "ce-time";
    /// CloudEvents subject: the aggregate id the event is about.
    pub const CE_SUBJECT: &str = "ce-subject";
    /// Content type of the body.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The body's content type: protobuf.
    pub const PROTOBUF: &str = "application/protobuf";
    /// Why a message was dead-lettered.
    pub const DEAD_LETTER_REASON: &str = "Orderflow-Dead-Letter-Reason";
    /// The subject a dead-lettered message was published on.
    pub const ORIGINAL_SUBJECT: &str = "Orderflow-Original-Subject";
    /// The stream a dead-lettered message came from.
    pub const ORIGINAL_STREAM: &str = "Orderflow-Original-Stream";
    /// The stream sequence of a dead-lettered message.
    pub const ORIGINAL_SEQUENCE: &str = "Orderflow-Original-Sequence";
    /// The durable consumer that gave up on a dead-lettered message.
    pub const ORIGINAL_CONSUMER: &str = "Orderflow-Original-Consumer";
    /// How many times a dead-lettered message was delivered.
    pub const DELIVERY_COUNT: &str = "Orderflow-Delivery-Count";
    /// The header that marks an event copied from the subject layout of
    /// orderflow 0.1 (`<prefix>.<id>`) by `AggregateStore::migrate_legacy`:
    /// `<old subject>#<old sequence>`. A consumer that receives such a copy
    /// treats it as a repeat (it may have acted on the original).
    pub const MIGRATED_FROM: &str = "Orderflow-Migrated-From";
}

/// An event ready to be appended: its subject, its id and its encoded payload.
#[derive(Clone, Debug)]
pub struct EventEnvelope {
    /// The subject, which names the aggregate (`orders.<order_id>`).
    pub subject: String,
    /// The unique event id, used as `ce-id` and `Nats-Msg-Id`. Deterministic
    /// per (aggregate, transition), so a retried append is de-duplicated.
    pub id: String,
    /// The aggregate id, used as `ce-subject`.
    pub aggregate_id: String,
    /// The full protobuf name of the payload.
    pub ce_type: String,
    /// The protobuf-encoded payload.
    pub payload: Bytes,
    /// The schedule subject (`<prefix>.<owner>.<id>.<timer>.scheduled`)
    /// whose pending schedule this event's commit removes, if any: the event
    /// makes the timer pointless (an order paid before its deadline). The
    /// removal is part of the same stored message, so it costs no extra
    /// broker round trip and can never be lost apart from the event.
    pub ends_schedule: Option<String>,
}

impl EventEnvelope {
    /// Frames a prost message. `ce-type` comes from the message's own
    /// `prost::Name`, so the header can never disagree with the body.
    pub fn new<M: prost::Message + prost::Name>(
        subject: String,
        id: String,
        aggregate_id: String,
        message: &M,
    ) -> Self {
        Self {
            subject,
            id,
            aggregate_id,
            ce_type: M::full_name(),
            payload: Bytes::from(message.encode_to_vec()),
            ends_schedule: None,
        }
    }

    /// The NATS headers of this event, with the current trace context.
    pub fn headers(&self, source: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(headers::MSG_ID, self.id.as_str());
        map.insert(headers::CE_SPECVERSION, "1.0");
        map.insert(headers::CE_ID, self.id.as_str());
        map.insert(headers::CE_SOURCE, source);
        map.insert(headers::CE_TYPE, self.ce_type.as_str());
        map.insert(headers::CE_SUBJECT, self.aggregate_id.as_str());
        map.insert(headers::CE_TIME, now_rfc3339().as_str());
        map.insert(headers::CONTENT_TYPE, headers::PROTOBUF);
        if let Some(schedule) = &self.ends_schedule {
            // JetStream purges `Nats-Scheduler`'s subject when it stores a
            // message carrying `Nats-Schedule-Next: purge` (server 2.12+;
            // allowed on a subject that holds a schedule or nothing).
            map.insert(headers::SCHEDULE_NEXT, "purge");
            map.insert(headers::SCHEDULER, schedule.as_str());
        }
        crate::propagation::inject_current(&mut map);
        map
    }
}

fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `at` in RFC 3339, UTC (`2026-12-01T17:00:00.25Z`): what `ce-time` and a
/// schedule's `@at` carry.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

/// Why an event could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message has no `ce-type` header.
    #[error("the message has no ce-type header")]
    MissingType,
    /// The `ce-type` header names another message than the one expected.
    #[error("ce-type is {actual}, expected {expected}")]
    WrongType {
        /// The header's value.
        actual: String,
        /// The expected full protobuf name.
        expected: String,
    },
    /// The body is not a valid encoding of the message.
    #[error("the body is not a valid {message}: {source}")]
    Body {
        /// The expected full protobuf name.
        message: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
}

/// An event as a consumer receives it.
#[derive(Clone, Debug)]
pub struct ReceivedEvent {
    /// The subject it was published on.
    pub subject: String,
    /// All its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// How many times it has been delivered to this consumer, from 1.
    pub delivered: i64,
}

impl ReceivedEvent {
    /// Whether this is a copy of an event that consumers may already have
    /// acted on: a dead letter replayed on `<subject>.replay`, or an event
    /// of orderflow 0.1 copied by `migrate-subjects`. A handler treats it as
    /// a repeat, whatever its delivery count says.
    pub fn is_copy(&self) -> bool {
        crate::subject::is_replay(&self.subject)
            || self.headers.get(headers::MIGRATED_FROM).is_some()
    }

    /// The `ce-type` header, when present.
    pub fn ce_type(&self) -> Option<&str> {
        self.headers.get(headers::CE_TYPE).map(|v| v.as_str())
    }

    /// The `ce-id` header, when present.
    pub fn ce_id(&self) -> Option<&str> {
        self.headers.get(headers::CE_ID).map(|v| v.as_str())
    }

    /// Whether this event's payload is a `M`.
    pub fn is<M: prost::Name>(&self) -> bool {
        self.ce_type().is_some_and(names::<M>)
    }

    /// Decodes the payload as `M`, checking `ce-type` first.
    pub fn decode<M: prost::Message + prost::Name + Default>(&self) -> Result<M, DecodeError> {
        decode_checked(&self.headers, &self.payload)
    }
}

/// Whether `ce_type` names `M` (`<package>.<name>`), compared without
/// building `M::full_name()`, which allocates.
pub fn names<M: prost::Name>(ce_type: &str) -> bool {
    ce_type
        .strip_prefix(M::PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
        == Some(M::NAME)
}

/// Decodes a payload as `M` after checking that `ce-type` names `M`.
pub fn decode_checked<M: prost::Message + prost::Name + Default>(
    headers_map: &HeaderMap,
    payload: &[u8],
) -> Result<M, DecodeError> {
    match headers_map.get(headers::CE_TYPE).map(|v| v.as_str()) {
        None => return Err(DecodeError::MissingType),
        Some(actual) if !names::<M>(actual) => {
            return Err(DecodeError::WrongType {
                actual: actual.to_owned(),
                expected: M::full_name(),
            });
        }
        Some(_) => {}
    }
    M::decode(payload).map_err(|source| DecodeError::Body {
        message: M::full_name(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Created {}

    impl prost::Name for Created {
        const NAME: &'static str = "OrderCreated";
        const PACKAGE: &'static str = "orderflow.order.v1";
    }

    #[test]
    fn a_ce_type_names_a_message_by_its_package_and_name_exactly() {
        assert!(names::<Created>("orderflow.order.v1.OrderCreated"));
        for other in [
            "orderflow.order.v1.OrderCreatedX",
            "orderflow.order.v1OrderCreated",
            "orderflow.order.v2.OrderCreated",
            "OrderCreated",
            "",
        ] {
            assert!(!names::<Created>(other), "{other}");
        }
    }
}
