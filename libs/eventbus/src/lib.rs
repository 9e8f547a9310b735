//! orderflow's event plumbing on NATS JetStream.
//!
//! This is the only production crate that talks to async-nats (the bench and
//! the test harness also do). It knows how an event is framed (protobuf body,
//! CloudEvents binary-mode headers, `Nats-Msg-Id`, W3C trace context), how an
//! event is committed (an acked publish with optimistic concurrency over all
//! of the aggregate's subjects), how events are consumed
//! (durable pull consumers with explicit acks, bounded redelivery and a
//! dead-letter stream), how an aggregate is rebuilt from its own subjects, and
//! how lists are read from a stream's per-subject index (batched direct gets).
//!
//! It knows nothing of orders or payments: the services give it subjects,
//! ids and prost messages.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod consumer;
pub mod dead_letters;
pub mod deadline;
pub mod envelope;
pub mod gather;
pub mod index;
pub mod metrics;
pub mod propagation;
pub mod security;
pub mod setup;
pub mod store;
pub mod subject;

pub use async_nats::{Client, ConnectError, jetstream::Context as JetStream};
pub use consumer::{ConsumerSpec, DurableConsumer, EventHandler, Outcome};
pub use envelope::{EventEnvelope, ReceivedEvent};
/// The id rules events are held to, shared with the gRPC edge.
pub use orderflow_validation::identity;
pub use security::{ClientCertificate, NatsAuth, NatsTls};
pub use store::{
    AppendError, Appended, EnsureStreamError, EventStore, LoadError, StoredEvent, StreamSpec,
    WatchError, ensure_stream, ensure_streams,
};

// For `event_type!`, which expands in the services' crates.
#[doc(hidden)]
pub use prost as __prost;

use std::time::Duration;

/// Connects to NATS as `name`, authenticated by `auth`, over `tls`.
///
/// `urls` is the comma-separated list of the `NATS_URL` variable: with a
/// cluster, the client picks any reachable server and follows the cluster's
/// gossip afterwards. The client reconnects forever, so a broker outage is a
/// period of `NOT_SERVING`, never a crash.
///
/// Replies come to `_INBOX.<name>.>` (see [`security`]), so a server can
/// confine each service to its own inbox. What the server refuses later —
/// a publish or subscription the user is not permitted — is logged as a
/// warning naming the subject: the server tells only the client, and an
/// operator tightening permissions needs to see it.
pub async fn connect(
    urls: &str,
    name: &str,
    auth: &NatsAuth,
    tls: &NatsTls,
) -> Result<Client, async_nats::ConnectError> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, e)
        })?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        // Keep requests short while disconnected so callers answer UNAVAILABLE
        // instead of hanging on a broker that is gone.
        .request_timeout(Some(Duration::from_secs(5)))
        // A server that went silent (a partition, a stalled node) sends no
        // FIN: only unanswered pings reveal it, and the client gives up
        // after two. With the default minute the replica kept a dead link
        // for about two, failing every write (found by the nemesis); every
        // 5 s it moves to another node within about 15 s, and meanwhile the
        // broker gate answers UNAVAILABLE at once.
        .ping_interval(Duration::from_secs(5))
        .event_callback(|event| async move {
            if let async_nats::Event::ServerError(error) = event {
                let error = error.to_string();
                if error.contains("Permissions Violation") {
                    tracing::warn!(%error, "NATS refused an operation this service's user is not permitted; check the user's permissions (deploy/nats/auth.conf)");
                } else {
                    tracing::warn!(%error, "NATS server error");
                }
            }
        });
    if let Some(prefix) = security::inbox_prefix(name) {
        options = options.custom_inbox_prefix(prefix);
    }
    security::apply(options, auth, tls)
        .map_err(|e| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Authentication, e)
        })?
        .connect(servers)
        .await
}

/// Builds the JetStream context every service uses.
pub fn jetstream(client: Client) -> JetStream {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}

/// The oldest nats-server orderflow runs on: 2.11 brought
/// `Nats-Expected-Last-Subject-Sequence-Subject` (optimistic concurrency
/// over an aggregate's subjects) and batched direct gets (lists), 2.12
/// message schedules (an order's payment deadline). An older server ignores
/// the header, and every change of an aggregate would then look like a lost
/// race.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// The connected nats-server is older than [`MIN_SERVER_VERSION`].
#[derive(Debug, thiserror::Error)]
#[error(
    "nats-server {version} is too old: orderflow needs {}.{} or later (optimistic concurrency \
     over an aggregate's subjects, batched direct gets, message schedules); upgrade the server",
    MIN_SERVER_VERSION.0,
    MIN_SERVER_VERSION.1
)]
pub struct ServerTooOld {
    /// The version the server announced.
    pub version: String,
}

/// Why the connected server cannot serve orderflow, if it cannot.
pub fn check_server_version(client: &Client) -> Result<(), ServerTooOld> {
    let version = client.server_info().version;
    if supports(&version) {
        Ok(())
    } else {
        Err(ServerTooOld { version })
    }
}

/// Whether `version` (`2.15.1`, `2.11.0-RC.1`) is at least
/// [`MIN_SERVER_VERSION`]; a version that does not parse is taken as new
/// enough rather than refused.
fn supports(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MIN_SERVER_VERSION,
        _ => true,
    }
}

/// Whether the client is connected right now; health reporting polls it.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_before_2_12_are_too_old() {
        for (version, ok) in [
            ("2.15.1", true),
            ("2.12.0", true),
            ("v2.12.0-RC.1", true),
            ("2.11.9", false),
            ("3.0.0", true),
            ("2.10.24", false),
            ("2.9.25", false),
            ("nonsense", true),
        ] {
            assert_eq!(super::supports(version), ok, "{version}");
        }
    }

    #[test]
    fn a_server_too_old_is_told_what_it_lacks() {
        let error = super::ServerTooOld {
            version: "2.10.24".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "nats-server 2.10.24 is too old: orderflow needs 2.12 or later (optimistic \
             concurrency over an aggregate's subjects, batched direct gets, message schedules); \
             upgrade the server"
        );
    }
}
