//! Reading and replaying the dead-letter stream.
//!
//! A dead letter keeps the original body and headers plus the reason (see
//! `consumer::dead_letter`). Replaying publishes them again on
//! `<original subject>.replay` — still captured by the original stream and
//! delivered to every consumer of it, whose handlers are idempotent — and
//! never on the aggregate's own subject, whose last event is the aggregate's
//! state and must not be overwritten by an old copy. Then the dead letter is
//! deleted, so a replay happens once.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        consumer::{
            DeliverPolicy, StreamError,
            pull::{self, OrderedError},
        },
        context::{GetStreamError, PublishError, PublishErrorKind},
        stream::{ConsumerError, DeleteMessageError, DirectGetError, DirectGetErrorKind},
    },
};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{
    JetStream,
    envelope::headers::{self, MSG_ID},
    subject::{DEAD_LETTER_STREAM, replay_subject},
};

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The DEADLETTERS stream could not be looked up.
    #[error("dead letters: {0}")]
    Stream(#[from] GetStreamError),
    /// The listing's consumer could not be created.
    #[error("dead letters: {0}")]
    List(#[from] ConsumerError),
    /// The listing's messages could not be subscribed to.
    #[error("dead letters: {0}")]
    Subscribe(#[from] StreamError),
    /// The listing broke while reading.
    #[error("dead letters: {0}")]
    Read(#[from] OrderedError),
    /// A listed message came without its JetStream metadata.
    #[error("dead letters: {0}")]
    Metadata(#[source] async_nats::Error),
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
    pub async fn list(
        &self,
        consumer: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetterRecord>, bool), DeadLetterError> {
        let stream = self.js.get_stream(DEAD_LETTER_STREAM).await?;
        let filter = crate::subject::dead_letter_filter(consumer);
        let ordered = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(crate::security::ordered_consumer_name()),
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ..Default::default()
            })
            .await?;
        let mut out = Vec::new();
        if ordered.cached_info().num_pending == 0 {
            return Ok((out, false));
        }
        let mut messages = ordered.messages().await?;
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            let message = message?;
            let info = message.info().map_err(DeadLetterError::Metadata)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let time = (
                info.published.unix_timestamp(),
                i32::try_from(info.published.nanosecond()).unwrap_or(0),
            );
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(DeadLetterRecord {
                sequence,
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
                time,
            });
            if pending == 0 {
                break;
            }
        }
        Ok((out, false))
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
