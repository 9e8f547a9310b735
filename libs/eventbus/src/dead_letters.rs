//! Reading and replaying the dead-letter stream.
//!
//! A dead letter keeps the original body and headers plus the reason (see
//! `consumer::dead_letter`). Replaying publishes them again on
//! `<original subject>.replay` — still captured by the original stream and
//! delivered to every consumer of it, whose handlers are idempotent — and
//! never on the aggregate's own subject, whose last event is the aggregate's
//! state and must not be overwritten by an old copy. Then the dead letter is
//! deleted, so a replay happens once.

use async_nats::{
    HeaderMap,
    jetstream::{
        context::{GetStreamError, PublishError, PublishErrorKind},
        stream::{DeleteMessageError, DirectGetError, DirectGetErrorKind},
    },
};
use bytes::Bytes;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    JetStream,
    envelope::headers::{self, MSG_ID},
    index::{self, IndexError},
    subject::{DEAD_LETTER_STREAM, replay_subject},
};

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The DEADLETTERS stream could not be looked up.
    #[error("dead letters: {0}")]
    Stream(#[from] GetStreamError),
    /// The listing's read failed.
    #[error("dead letters: {0}")]
    List(#[from] IndexError),
    /// Reading one dead letter failed.
    #[error("dead letters: {0}")]
    Get(#[from] DirectGetError),
    /// The dead letter does not say where it came from, so it cannot be
    /// replayed.
    #[error(
        "dead letters: dead letter {sequence} has no {} header",
        headers::ORIGINAL_SUBJECT
    )]
    NoOriginalSubject {
        /// The dead letter.
        sequence: u64,
    },
    /// The replay was not sent, or JetStream refused it.
    #[error("dead letters: {0}")]
    Replay(#[source] PublishError),
    /// JetStream did not acknowledge the replay in time. A server refusing
    /// the publish tells only the connection (it is logged there), so a
    /// permission the service lacks ends here too.
    #[error(
        "dead letters: JetStream did not acknowledge the replay on {subject} ({source}): the \
         stream is unreachable, or this service's NATS user lacks permission to publish there \
         (with deploy/nats/auth.conf each service publishes only its own events: replay this \
         dead letter through the service that writes {original_stream})"
    )]
    ReplayUnacknowledged {
        /// The replay subject.
        subject: String,
        /// The stream the dead letter came from.
        original_stream: String,
        /// The client's error.
        source: PublishError,
    },
    /// The replayed dead letter could not be deleted: it stays, and a second
    /// replay of it is de-duplicated.
    #[error("dead letters: {0}")]
    Delete(#[from] DeleteMessageError),
}

/// One dead letter as stored.
#[derive(Clone, Debug)]
pub struct DeadLetterRecord {
    /// Its sequence in DEADLETTERS.
    pub sequence: u64,
    /// Its headers (the original ones plus the `Orderflow-*` ones).
    pub headers: HeaderMap,
    /// The original body.
    pub payload: Bytes,
    /// When it was stored, as seconds and nanoseconds since the epoch.
    pub time: (i64, i32),
}

impl DeadLetterRecord {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.as_str())
            .unwrap_or_default()
    }
}

/// When a message read by a direct get was stored, as seconds and nanos of
/// the Unix epoch: its `Nats-Time-Stamp` header (RFC 3339), or the epoch
/// when the server sent none that parses.
fn stored_time(headers: &HeaderMap) -> (i64, i32) {
    headers
        .get("Nats-Time-Stamp")
        .and_then(|value| OffsetDateTime::parse(value.as_str(), &Rfc3339).ok())
        .map_or((0, 0), |at| {
            (
                at.unix_timestamp(),
                i32::try_from(at.nanosecond()).unwrap_or(0),
            )
        })
}

/// The DEADLETTERS stream.
#[derive(Clone)]
pub struct DeadLetters {
    js: JetStream,
}

impl DeadLetters {
    /// The dead letters on `js`.
    pub fn new(js: JetStream) -> Self {
        Self { js }
    }

    /// Up to `limit` dead letters after sequence `after`, of `consumer` when
    /// given, oldest first, and whether more follow.
    ///
    /// One batched direct get (`next_by_subj`), answered from the stream
    /// without a consumer: an ordered consumer per page cost its creation,
    /// a pull and its deletion, and stayed on the server until its
    /// inactivity threshold whenever the listing ended early.
    pub async fn list(
        &self,
        consumer: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetterRecord>, bool), DeadLetterError> {
        let filter = crate::subject::dead_letter_filter(consumer);
        let batch = index::next_batch(
            &self.js,
            DEAD_LETTER_STREAM,
            &filter,
            after.saturating_add(1),
            limit,
        )
        .await?;
        let more = batch.pending > 0;
        let records = batch
            .events
            .into_iter()
            .map(|event| DeadLetterRecord {
                sequence: event.sequence,
                time: stored_time(&event.headers),
                headers: event.headers,
                payload: event.payload,
            })
            .collect();
        Ok((records, more))
    }

    /// The dead letter at `sequence`, if there is one.
    pub async fn get(&self, sequence: u64) -> Result<Option<DeadLetterRecord>, DeadLetterError> {
        let stream = self.js.get_stream_no_info(DEAD_LETTER_STREAM).await?;
        match stream.direct_get(sequence).await {
            Ok(message) => Ok(Some(DeadLetterRecord {
                sequence: message.sequence,
                headers: message.headers,
                payload: message.payload,
                time: (
                    message.time.unix_timestamp(),
                    i32::try_from(message.time.nanosecond()).unwrap_or(0),
                ),
            })),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes the dead letter at `sequence` again on `<original
    /// subject>.replay`, waits for the ack, then deletes the dead letter.
    /// Returns it and the replay subject, or `None` when there is no such
    /// dead letter.
    pub async fn replay(
        &self,
        sequence: u64,
    ) -> Result<Option<(DeadLetterRecord, String)>, DeadLetterError> {
        let Some(record) = self.get(sequence).await? else {
            return Ok(None);
        };
        let original = record.header(headers::ORIGINAL_SUBJECT);
        if original.is_empty() {
            return Err(DeadLetterError::NoOriginalSubject { sequence });
        }
        let subject = replay_subject(original);
        let mut replayed = HeaderMap::new();
        for (name, values) in record.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Orderflow-") || name == MSG_ID || name.starts_with("Nats-") {
                continue;
            }
            for value in values {
                replayed.append(name, value.as_str());
            }
        }
        // A fresh id: the replay must not be de-duplicated against the
        // original, but replaying the same dead letter twice is.
        replayed.insert(MSG_ID, format!("replay-{sequence}").as_str());
        self.js
            .publish_with_headers(subject.clone(), replayed, record.payload.clone())
            .await
            .map_err(DeadLetterError::Replay)?
            .await
            .map_err(|source| {
                if source.kind() == PublishErrorKind::TimedOut {
                    DeadLetterError::ReplayUnacknowledged {
                        subject: subject.clone(),
                        original_stream: record.header(headers::ORIGINAL_STREAM).to_owned(),
                        source,
                    }
                } else {
                    DeadLetterError::Replay(source)
                }
            })?;
        let stream = self.js.get_stream(DEAD_LETTER_STREAM).await?;
        stream.delete_message(sequence).await?;
        Ok(Some((record, subject)))
    }
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;

    #[test]
    fn the_stored_time_is_read_from_the_direct_get_header() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Time-Stamp", "2026-12-02T07:30:01.123456789Z");
        assert_eq!(super::stored_time(&headers), (1_796_196_601, 123_456_789));
        assert_eq!(super::stored_time(&HeaderMap::new()), (0, 0));
    }
}
