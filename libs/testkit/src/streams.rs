//! Reading JetStream directly, to check what the services committed: the
//! events on a stream, their headers, and whether a consumer has caught up.

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

/// Every message of `stream_name` matching `filter` (`>` for all), in order.
pub async fn read_all(
    js: &jetstream::Context,
    stream_name: &str,
    filter: &str,
) -> Vec<StoredMessage> {
    let Some(mut stream) = stream(js, stream_name).await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    if info.state.messages == 0 {
        return Vec::new();
    }
    let Ok(consumer) = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return out;
    }
    let Ok(mut messages) = consumer.messages().await else {
        return out;
    };
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(2), messages.next()).await
    {
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        out.push(StoredMessage {
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.to_vec(),
        });
        if pending == 0 {
            break;
        }
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
