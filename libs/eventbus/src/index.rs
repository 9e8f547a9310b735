//! Reading many aggregates at once from a stream's per-subject index, with
//! batched direct gets, so lists need no view that a consumer keeps.
//!
//! Two requests of nats-server's direct get API (`$JS.API.DIRECT.GET.<stream>`,
//! server 2.11+, the stream needs `allow_direct`):
//!
//! * [`next_batch`]: up to `batch` messages matching one filter (wildcards
//!   allowed) from a start sequence on, in stream order. It reads the
//!   per-subject index, not the messages in between, and has no limit on how
//!   many subjects match, so it pages through any number of aggregates.
//! * [`last_per_subject`]: the last message of every subject matching any of
//!   a few filters (`multi_last`). nats-server refuses it with `413` when more
//!   than 1,024 subjects match, whatever the batch, so it only resolves the
//!   aggregates of one page, never a whole list.
//!
//! Both answer with a stream of messages to the reply inbox that ends with a
//! status message (`204 EOB`, or `404` when nothing matches). async-nats 0.51
//! has no call for either (its `DirectGetRequest` knows neither `batch` nor
//! `multi_last`), hence this small hand-written request: subscribe to a fresh
//! inbox, publish the request with that reply subject, read to the status.
//! On a replicated stream any replica may answer, so a read right after a
//! write may miss it; lists accept that, and writes never rely on it.

use std::{sync::Arc, time::Duration};

use async_nats::{HeaderMap, RequestErrorKind, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::JetStream;

/// How long one batched read may take before it fails (the same bound as
/// every other JetStream request of the services).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest number of filters one [`last_per_subject`] request carries.
/// Each filter of orderflow matches one aggregate's few subjects, so a
/// request stays far below the server's 1,024 subjects.
pub const MAX_FILTERS: usize = 200;

/// One stored message, as a direct get returns it.
#[derive(Clone, Debug)]
pub struct IndexedEvent {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its headers (the server adds its `Nats-*` ones).
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
}

/// What one [`next_batch`] read returned.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The messages, in stream order.
    pub events: Vec<IndexedEvent>,
    /// How many more messages match after the last one returned, as the
    /// server counted them when it answered.
    pub pending: u64,
}

/// What went wrong underneath an [`IndexError`]: the async-nats or decoding
/// error, shared so that the error stays `Clone` (a gathered read answers
/// every asker with the same one).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a batched read failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IndexError {
    /// No answer came within the read timeout.
    #[error("cannot read stream {stream}: timed out")]
    TimedOut {
        /// The stream.
        stream: String,
    },
    /// Nothing answers the stream's API subject: JetStream is not running,
    /// or the stream does not exist (or serves no direct gets).
    #[error("cannot read stream {stream}: no responders")]
    NoResponders {
        /// The stream.
        stream: String,
    },
    /// The request was not sent: the connection is closed, or the request
    /// could not be encoded.
    #[error("cannot read stream {stream}: {source}")]
    NotSent {
        /// The stream.
        stream: String,
        /// The client's error.
        source: Cause,
    },
    /// The answer stopped before the status message that ends it (the
    /// reply subscription ended, as it does when the connection closes).
    #[error("cannot read stream {stream}: the reply subscription ended")]
    Interrupted {
        /// The stream.
        stream: String,
    },
    /// The server refused the request (a bad filter, too many subjects).
    #[error("stream {stream} refused the read: {status} {description}")]
    Refused {
        /// The stream.
        stream: String,
        /// The status code.
        status: u16,
        /// The server's description.
        description: String,
    },
    /// The answer is not one the API gives: JSON of another shape, or a
    /// stored message that is not base64.
    #[error("cannot read stream {stream}: unreadable answer: {source}")]
    Unreadable {
        /// The stream.
        stream: String,
        /// The decoder's error.
        source: Cause,
    },
    /// The answer carried neither a message nor an error.
    #[error("cannot read stream {stream}: an empty answer")]
    EmptyAnswer {
        /// The stream.
        stream: String,
    },
    /// The task that answers gathered reads has stopped
    /// ([`crate::gather::GatheredReads`]).
    #[error("cannot read stream {stream}: the gathered reader has stopped")]
    ReaderStopped {
        /// The stream.
        stream: String,
    },
}

impl IndexError {
    fn timed_out(stream: &str) -> Self {
        Self::TimedOut {
            stream: stream.to_owned(),
        }
    }

    fn no_responders(stream: &str) -> Self {
        Self::NoResponders {
            stream: stream.to_owned(),
        }
    }

    fn not_sent(stream: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::NotSent {
            stream: stream.to_owned(),
            source: Arc::new(source),
        }
    }

    fn unreadable(stream: &str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unreadable {
            stream: stream.to_owned(),
            source: Arc::new(source),
        }
    }

    /// A failed request, by what async-nats says went wrong.
    fn request(stream: &str, error: async_nats::RequestError) -> Self {
        match error.kind() {
            RequestErrorKind::TimedOut => Self::timed_out(stream),
            RequestErrorKind::NoResponders => Self::no_responders(stream),
            RequestErrorKind::InvalidSubject
            | RequestErrorKind::MaxPayloadExceeded
            | RequestErrorKind::Other => Self::not_sent(stream, error),
        }
    }
}

#[derive(serde::Serialize)]
struct NextRequest<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
}

#[derive(serde::Serialize)]
struct SequenceRequest {
    seq: u64,
}

#[derive(serde::Serialize)]
struct LastRequest<'a> {
    last_by_subj: &'a str,
}

#[derive(serde::Serialize)]
struct MultiLastRequest<'a> {
    multi_last: &'a [String],
}

/// The last message of `stream` on the subjects matching `filter`
/// (wildcards allowed), or `None` when none matches.
///
/// The request goes in the body (`last_by_subj`) rather than in the API
/// subject, because a subject with wildcards cannot be published to.
pub async fn last_for(
    js: &JetStream,
    stream: &str,
    filter: &str,
) -> Result<Option<IndexedEvent>, IndexError> {
    let body = serde_json::to_vec(&LastRequest {
        last_by_subj: filter,
    })
    .map_err(|e| IndexError::not_sent(stream, e))?;
    get_one(js, stream, body.into()).await
}

/// nats-server's error code for "no message found" (`JSNoMessageFoundErr`).
const NO_MESSAGE_FOUND: u16 = 10037;

/// The last message of `stream` on the subjects matching `filter`, asked of
/// the stream's leader (`$JS.API.STREAM.MSG.GET`), or `None` when none
/// matches there.
///
/// A direct get may be answered by a follower that has not stored the
/// latest messages yet, so its "none" is not the truth on a replicated
/// stream; the leader's is, once it is sure it still leads. A leader that
/// was paused or cut off answers from what it has until it learns that
/// another was elected (nats-server notices a lost quorum within about
/// 20 s). Used to confirm a miss, not for every read.
pub async fn last_for_on_leader(
    js: &JetStream,
    stream: &str,
    filter: &str,
) -> Result<Option<IndexedEvent>, IndexError> {
    #[derive(serde::Deserialize)]
    struct Reply {
        message: Option<Stored>,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        subject: String,
        seq: u64,
        #[serde(default)]
        hdrs: Option<String>,
        #[serde(default)]
        data: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        code: u16,
        #[serde(default)]
        err_code: Option<u16>,
        #[serde(default)]
        description: String,
    }
    use base64::{Engine, engine::general_purpose::STANDARD};
    let body = serde_json::to_vec(&LastRequest {
        last_by_subj: filter,
    })
    .map_err(|e| IndexError::not_sent(stream, e))?;
    let client = js.client();
    let request = client.request(format!("$JS.API.STREAM.MSG.GET.{stream}"), body.into());
    let message = tokio::time::timeout(READ_TIMEOUT, request)
        .await
        .map_err(|_| IndexError::timed_out(stream))?
        .map_err(|e| IndexError::request(stream, e))?;
    let reply: Reply =
        serde_json::from_slice(&message.payload).map_err(|e| IndexError::unreadable(stream, e))?;
    match (reply.message, reply.error) {
        (Some(stored), _) => {
            let decode = |text: Option<String>| {
                text.map_or(Ok(Vec::new()), |t| STANDARD.decode(t))
                    .map_err(|e| IndexError::unreadable(stream, e))
            };
            let headers = parse_headers(&decode(stored.hdrs)?);
            Ok(Some(IndexedEvent {
                subject: stored.subject,
                sequence: stored.seq,
                headers,
                payload: decode(stored.data)?.into(),
            }))
        }
        // "No message found" only: a 404 "stream not found" (10059) says
        // nothing about the message.
        (None, Some(error))
            if error.code == 404 && error.err_code.is_none_or(|c| c == NO_MESSAGE_FOUND) =>
        {
            Ok(None)
        }
        (None, Some(error)) => Err(IndexError::Refused {
            stream: stream.to_owned(),
            status: error.code,
            description: error.description,
        }),
        (None, None) => Err(IndexError::EmptyAnswer {
            stream: stream.to_owned(),
        }),
    }
}

/// The headers of a stored message's header block (`NATS/1.0` and then
/// `Name: value` lines).
fn parse_headers(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let text = String::from_utf8_lossy(block);
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(name.trim(), value.trim());
        }
    }
    headers
}

/// The message of `stream` at `sequence`, or `None` when there is none.
pub async fn at_sequence(
    js: &JetStream,
    stream: &str,
    sequence: u64,
) -> Result<Option<IndexedEvent>, IndexError> {
    let body = serde_json::to_vec(&SequenceRequest { seq: sequence })
        .map_err(|e| IndexError::not_sent(stream, e))?;
    get_one(js, stream, body.into()).await
}

/// Sends a direct get that is answered by one message (or a status).
async fn get_one(
    js: &JetStream,
    stream: &str,
    body: Bytes,
) -> Result<Option<IndexedEvent>, IndexError> {
    let client = js.client();
    let request = client.request(format!("$JS.API.DIRECT.GET.{stream}"), body);
    let message = tokio::time::timeout(READ_TIMEOUT, request)
        .await
        .map_err(|_| IndexError::timed_out(stream))?
        .map_err(|e| IndexError::request(stream, e))?;
    let headers = message.headers.unwrap_or_default();
    match message.status {
        None => Ok(Some(IndexedEvent {
            subject: headers
                .get("Nats-Subject")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            sequence: header_u64(&headers, "Nats-Sequence").unwrap_or(0),
            headers,
            payload: message.payload,
        })),
        Some(StatusCode::NOT_FOUND) => Ok(None),
        Some(StatusCode::NO_RESPONDERS) => Err(IndexError::no_responders(stream)),
        Some(status) => Err(IndexError::Refused {
            stream: stream.to_owned(),
            status: status.as_u16(),
            description: message.description.unwrap_or_default(),
        }),
    }
}

/// Up to `batch` messages of `stream` matching `filter`, from stream
/// sequence `from` on (1 for the start), in stream order.
pub async fn next_batch(
    js: &JetStream,
    stream: &str,
    filter: &str,
    from: u64,
    batch: usize,
) -> Result<Batch, IndexError> {
    let body = serde_json::to_vec(&NextRequest {
        seq: from.max(1),
        next_by_subj: filter,
        batch: batch.max(1),
    })
    .map_err(|e| IndexError::not_sent(stream, e))?;
    read(js, stream, body.into()).await
}

/// The last message of every subject of `stream` that matches one of
/// `filters` (at most [`MAX_FILTERS`]), in stream order; empty when none does.
pub async fn last_per_subject(
    js: &JetStream,
    stream: &str,
    filters: &[String],
) -> Result<Vec<IndexedEvent>, IndexError> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for chunk in filters.chunks(MAX_FILTERS) {
        let body = serde_json::to_vec(&MultiLastRequest { multi_last: chunk })
            .map_err(|e| IndexError::not_sent(stream, e))?;
        events.extend(read(js, stream, body.into()).await?.events);
    }
    if filters.len() > MAX_FILTERS {
        events.sort_by_key(|event| event.sequence);
    }
    Ok(events)
}

/// Sends one direct get request and collects its answer up to the status
/// message that ends it.
async fn read(js: &JetStream, stream: &str, body: Bytes) -> Result<Batch, IndexError> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| IndexError::not_sent(stream, e))?;
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body)
        .await
        .map_err(|e| IndexError::not_sent(stream, e))?;
    let collect = async {
        let mut batch = Batch::default();
        while let Some(message) = replies.next().await {
            let headers = message.headers.unwrap_or_default();
            match message.status {
                None => {
                    let sequence = header_u64(&headers, "Nats-Sequence").unwrap_or(0);
                    let subject = headers
                        .get("Nats-Subject")
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    batch.events.push(IndexedEvent {
                        subject,
                        sequence,
                        headers,
                        payload: message.payload,
                    });
                }
                // 204 EOB ends a batch; its pending count is what follows.
                Some(status) if status.as_u16() == 204 => {
                    // Without the count, say "more may follow": the next
                    // read finds out, where 0 would cut a list short.
                    batch.pending = header_u64(&headers, "Nats-Num-Pending").unwrap_or(1);
                    return Ok(batch);
                }
                Some(StatusCode::NOT_FOUND) => return Ok(batch),
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(IndexError::no_responders(stream));
                }
                Some(status) => {
                    return Err(IndexError::Refused {
                        stream: stream.to_owned(),
                        status: status.as_u16(),
                        description: message.description.unwrap_or_default(),
                    });
                }
            }
        }
        Err(IndexError::Interrupted {
            stream: stream.to_owned(),
        })
    };
    let result = tokio::time::timeout(READ_TIMEOUT, collect)
        .await
        .unwrap_or_else(|_| Err(IndexError::timed_out(stream)));
    // Dropping the subscriber unsubscribes; say so at once on success too.
    let _ = replies.unsubscribe().await;
    result
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stored_header_block_is_read_back() {
        let headers =
            super::parse_headers(b"NATS/1.0\r\nce-type: a.B\r\nNats-Msg-Id: x.created\r\n\r\n");
        assert_eq!(headers.get("ce-type").map(|v| v.as_str()), Some("a.B"));
        assert_eq!(
            headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("x.created")
        );
    }
}
