//! API calls answered at once while the event broker is known to be
//! unreachable.
//!
//! Every API call needs NATS: writes are appends JetStream must acknowledge,
//! reads are direct gets, watches are consumers. While the connection is
//! down, async-nats queues what it is asked to send until it reconnects, so a
//! call would wait for the JetStream context's 5 s timeout (or the caller's
//! shorter deadline) and only then answer `UNAVAILABLE`, holding a
//! concurrency permit meanwhile. When the client already knows it is not
//! connected, nothing can succeed, so the call is answered at once:
//! `UNAVAILABLE`, a message naming the broker, and `google.rpc.RetryInfo`
//! saying when to try again. Nothing was done, so any call may be retried.
//!
//! One place for every API service of a replica (see `server`), not a check
//! per RPC. When the connection is up, calls go through untouched: one that
//! then meets a broker going away is bounded by the caller's deadline,
//! which tonic enforces, and by JetStream's 5 s timeout, and answers the
//! status its service gives that failure (no `RetryInfo`).

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::{Either, Ready, ready};
use orderflow_eventbus::Client;
use tonic::{Code, Status, body::Body};
use tonic_types::{ErrorDetails, StatusExt};

/// The delay `RetryInfo` advises: about the client's first reconnect
/// attempts, short enough that a broker back in a moment is used at once.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The message of the status a call gets while the broker is unreachable.
pub const UNREACHABLE: &str = "the event broker (NATS) is unreachable from this replica, which is \
     reconnecting: nothing was done; retry after the delay in the RetryInfo details (any call \
     may be retried; CreateOrder with the same request_id)";

/// The status of a call refused because the broker is unreachable.
pub fn unreachable() -> Status {
    Status::with_error_details(
        Code::Unavailable,
        UNREACHABLE,
        ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
    )
}

/// Tower layer answering API calls at once while `client` is not connected.
#[derive(Clone, Debug)]
pub struct BrokerGateLayer {
    client: Client,
}

impl BrokerGateLayer {
    /// A gate on the connection of `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> tower::Layer<S> for BrokerGateLayer {
    type Service = BrokerGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BrokerGate {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service made by [`BrokerGateLayer`].
#[derive(Clone, Debug)]
pub struct BrokerGate<S> {
    inner: S,
    client: Client,
}

impl<S, B> tower::Service<http::Request<B>> for BrokerGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if orderflow_eventbus::is_connected(&self.client) {
            Either::Left(self.inner.call(request))
        } else {
            tracing::warn!(
                path = request.uri().path(),
                "NATS is not connected: answering UNAVAILABLE at once"
            );
            Either::Right(ready(Ok(unreachable().into_http())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_broker_and_advises_a_retry() {
        let status = unreachable();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .contains("event broker (NATS) is unreachable")
        );
        let retry = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay);
        assert_eq!(retry, Some(RETRY_AFTER));
    }
}
