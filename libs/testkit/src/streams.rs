//! Reading JetStream directly, to check what the services committed: the
//! events on a stream, their headers, and whether a consumer has caught up.
//!
//! A read is complete or it fails the test: an empty answer has to mean an
//! empty stream, or "nothing was dead-lettered" would pass whenever the read
//! went wrong.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream::Stream};
use futures_util::StreamExt;

/// One stored message.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: async_nats::HeaderMap,
    /// Its body.
    pub payload: Vec<u8>,
}

impl StoredMessage {
    /// Its headers as a redelivery of it carries them: without the
    /// optimistic-concurrency headers of its append, which are not checked
    /// again. For tests that store a copy to stand for a redelivery.
    pub fn redelivery_headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in self.headers.iter() {
            let name: &str = name.as_ref();
            if !name.starts_with("Nats-Expected") {
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        headers
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }
}

/// A JetStream context on `nats_url`, one URL or a comma-separated list of
/// a cluster's URLs (the client follows the cluster when a node goes).
#[allow(clippy::expect_used)]
pub async fn jetstream(nats_url: &str) -> jetstream::Context {
    let servers: Vec<async_nats::ServerAddr> = nats_url
        .split(',')
        .map(|url| url.trim().parse().expect("a valid NATS URL"))
        .collect();
    let client = async_nats::connect(servers)
        .await
        .expect("connect to nats-server");
    jetstream::new(client)
}

async fn stream(js: &jetstream::Context, name: &str) -> Option<Stream> {
    js.get_stream(name).await.ok()
}

/// How long [`read_all`] may take to receive what its consumer reported.
/// Generous: CI is a loaded 2-core machine, and a complete read of a test's
/// streams takes well under a second.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Every message of `stream_name` matching `filter` (`>` for all), in order.
///
/// The read is complete or it fails: it collects exactly the messages the
/// ordered consumer reports pending (`num_pending`) when it is created, so
/// messages appended during the read are left for the next one.
///
/// # Panics
///
/// Panics, naming the stream and the filter, when the stream does not exist
/// (a misspelled name or a stream nobody created must not read as "no
/// messages"), when JetStream does not answer, when the consumer cannot be
/// created or its delivery fails, and when the reported messages do not all
/// arrive within [`READ_TIMEOUT`].
pub async fn read_all(
    js: &jetstream::Context,
    stream_name: &str,
    filter: &str,
) -> Vec<StoredMessage> {
    let what = format!("stream {stream_name} (filter {filter:?})");
    let stream = js
        .get_stream(stream_name)
        .await
        .unwrap_or_else(|e| panic!("cannot read {what}: cannot look the stream up: {e}"));
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("cannot read {what}: cannot create a consumer: {e}"));
    let expected = consumer.cached_info().num_pending;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or_default());
    if expected == 0 {
        return out;
    }
    let mut messages = consumer
        .messages()
        .await
        .unwrap_or_else(|e| panic!("cannot read {what}: cannot pull its messages: {e}"));
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while (out.len() as u64) < expected {
        let message = match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => panic!(
                "cannot read {what}: delivery failed after {} of {expected} messages: {e}",
                out.len()
            ),
            Ok(None) => panic!(
                "cannot read {what}: the consumer ended after {} of {expected} messages",
                out.len()
            ),
            Err(_) => panic!(
                "cannot read {what}: received {} of the {expected} messages its consumer \
                 reported within {READ_TIMEOUT:?}",
                out.len()
            ),
        };
        out.push(StoredMessage {
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.to_vec(),
        });
    }
    out
}

/// Whether durable consumer `durable` on `stream_name` has handled (acked or
/// terminated) every message of the stream it matches.
pub async fn consumer_caught_up(js: &jetstream::Context, stream_name: &str, durable: &str) -> bool {
    let Some(stream) = stream(js, stream_name).await else {
        return false;
    };
    match stream.consumer_info(durable).await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}
