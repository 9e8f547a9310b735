//! List projections kept in a JetStream KV bucket.
//!
//! Every replica of a service can answer list queries from the bucket, and a
//! restart loses nothing. Each value is stamped with the aggregate's version,
//! and writes are compare-and-set on the KV revision, so a stale or
//! redelivered event never overwrites a newer state, even when two replicas
//! project events of one aggregate at once.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
    kv::{self, CreateErrorKind, UpdateErrorKind},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::JetStream;

/// Why a projection could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("projection {bucket}: {message}")]
pub struct ViewError {
    bucket: String,
    message: String,
    /// JetStream was not ready; opening the bucket retries these.
    transient: bool,
}

impl crate::setup::Transient for ViewError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// One KV bucket holding the latest version of every aggregate.
#[derive(Clone)]
pub struct ViewStore {
    js: JetStream,
    kv: kv::Store,
    bucket: String,
}

impl ViewStore {
    /// Opens the bucket, creating it when it does not exist, and brings an
    /// existing bucket to `replicas` (a cluster grown from one node to three
    /// keeps its projections on three). A JetStream that is not ready yet is
    /// retried for [`SETUP_BUDGET`](crate::setup::SETUP_BUDGET).
    pub async fn open(js: JetStream, bucket: &str, replicas: usize) -> Result<Self, ViewError> {
        let deadline = std::time::Instant::now() + crate::setup::SETUP_BUDGET;
        let kv =
            crate::setup::retry_transient(bucket, deadline, || open_bucket(&js, bucket, replicas))
                .await?;
        Ok(Self {
            js,
            kv,
            bucket: bucket.to_owned(),
        })
    }

    fn err(&self, message: impl ToString) -> ViewError {
        ViewError {
            bucket: self.bucket.clone(),
            message: message.to_string(),
            transient: false,
        }
    }

    /// Stores `value` at `key` unless the stored version is already `version`
    /// or newer. Returns whether it wrote.
    pub async fn upsert(&self, key: &str, version: u64, value: &[u8]) -> Result<bool, ViewError> {
        let encoded = encode(version, value);
        for _ in 0..16 {
            match self.kv.entry(key).await.map_err(|e| self.err(e))? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    if decode(&entry.value).is_some_and(|(stored, _)| stored >= version) {
                        return Ok(false);
                    }
                    match self.kv.update(key, encoded.clone(), entry.revision).await {
                        Ok(_) => return Ok(true),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                _ => match self.kv.create(key, encoded.clone()).await {
                    Ok(_) => return Ok(true),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(self.err(e)),
                },
            }
        }
        Err(self.err(format!("key {key} kept changing; giving up this delivery")))
    }

    /// Reads the latest value of every key matching `pattern` (a KV key
    /// pattern: `>` for all, `customer.*` ...), as (key, value) pairs.
    ///
    /// One ordered consumer delivers the last value per key; the read ends
    /// when the consumer reports nothing pending.
    pub async fn scan(&self, pattern: &str) -> Result<Vec<(String, Bytes)>, ViewError> {
        let prefix = format!("$KV.{}.", self.bucket);
        let stream = self
            .js
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| self.err(e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(crate::security::ordered_consumer_name()),
                filter_subject: format!("{prefix}{pattern}"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(|e| self.err(e))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .map_err(|_| self.err("timed out reading the bucket"))?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| self.err(e))?;
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some();
            if !deleted {
                let key = message
                    .subject
                    .as_str()
                    .strip_prefix(&prefix)
                    .unwrap_or_default()
                    .to_owned();
                if let Some((_, value)) = decode(&message.payload) {
                    out.push((key, Bytes::copy_from_slice(value)));
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// Encodes any text as one KV key token.
///
/// KV keys allow only `[-/_=.a-zA-Z0-9]`, and `.` separates tokens; base64url
/// without padding keeps any identifier (an e-mail address, say) inside one
/// token, so key patterns like `<customer>.*` stay exact.
pub fn key_token(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(value.as_bytes())
}

fn encode(version: u64, value: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + value.len());
    buf.extend_from_slice(&version.to_be_bytes());
    buf.extend_from_slice(value);
    buf.freeze()
}

fn decode(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (version, value) = stored.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*version), value))
}

/// One attempt at opening (or creating, or re-replicating) `bucket`.
///
/// async-nats' KV errors keep the JetStream code private, so an error counts
/// as transient when its message says JetStream timed out or had no
/// responders — the answers of a cluster still forming.
async fn open_bucket(
    js: &JetStream,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, ViewError> {
    let err = |message: String| ViewError {
        bucket: bucket.to_owned(),
        transient: is_transient_message(&message),
        message,
    };
    match js.get_key_value(bucket).await {
        Ok(kv) => {
            let mut stream = js
                .get_stream(format!("KV_{bucket}"))
                .await
                .map_err(|e| err(e.to_string()))?;
            let config = stream
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .config
                .clone();
            if config.num_replicas != replicas {
                let mut updated = config;
                updated.num_replicas = replicas;
                js.update_stream(updated)
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok(kv)
        }
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                history: 1,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string())),
    }
}

fn is_transient_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "timed out",
        "no responders",
        "not available",
        "temporarily unavailable",
        "insufficient resources",
        "no suitable peers",
    ]
    .iter()
    .any(|m| message.contains(m))
}
