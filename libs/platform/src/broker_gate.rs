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
//! per RPC. When the connection is up, the call goes on with the caller's
//! deadline (`grpc-timeout`) as the deadline of its appends
//! (`orderflow_eventbus::deadline`): one that meets a broker that does not
//! answer waits for the ack until that deadline (60 s at most), or 5 s when
//! the caller set none, and then answers the status its service gives that
//! failure (no `RetryInfo`). tonic itself ends the call at the deadline.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::{Either, Ready, ready};
use orderflow_eventbus::Client;
use tokio::{task::futures::TaskLocalFuture, time::Instant};
use tonic::{Code, Status, body::Body};
use tonic_types::{ErrorDetails, StatusExt};

use crate::throttle::LogThrottle;

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

/// While the broker is down every call is refused: a line per call would
/// write the log at the request rate (the gRPC metrics count every call).
static REFUSALS: LogThrottle = LogThrottle::new(crate::throttle::INTERVAL);

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
    type Future = Either<
        TaskLocalFuture<Option<Instant>, S::Future>,
        Ready<Result<http::Response<Body>, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if orderflow_eventbus::is_connected(&self.client) {
            let deadline = request
                .headers()
                .get("grpc-timeout")
                .and_then(|value| value.to_str().ok())
                .and_then(grpc_timeout)
                .map(|timeout| Instant::now() + timeout);
            Either::Left(orderflow_eventbus::deadline::within(
                deadline,
                self.inner.call(request),
            ))
        } else {
            if let Some(refused) = REFUSALS.note() {
                tracing::warn!(
                    path = request.uri().path(),
                    refused,
                    "NATS is not connected: answering UNAVAILABLE at once ({refused} call(s) \
                     refused since the last such line)"
                );
            }
            Either::Right(ready(Ok(unreachable().into_http())))
        }
    }
}

/// The duration of a `grpc-timeout` header (`100m`, `5S`, `1H`): at most 8
/// digits and a unit, as the gRPC protocol spells it; `None` when it is not
/// one (tonic then refuses the call itself).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        for (value, parsed) in [
            ("100m", Some(Duration::from_millis(100))),
            ("5S", Some(Duration::from_secs(5))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("250u", Some(Duration::from_micros(250))),
            ("7n", Some(Duration::from_nanos(7))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("5s", None),
            ("-5S", None),
            ("5€", None),
        ] {
            assert_eq!(grpc_timeout(value), parsed, "{value:?}");
        }
    }

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
