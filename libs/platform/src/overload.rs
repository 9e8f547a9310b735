//! Load shedding at the gRPC edge.
//!
//! At most `GRPC_MAX_CONCURRENT_CALLS` API calls are worked on at once, across
//! all connections and every API service of the replica. A call beyond that
//! is answered at once with `RESOURCE_EXHAUSTED` instead of waiting in a
//! queue that grows without bound, so an overloaded replica tells its callers
//! (and their retry budgets) right away and keeps its latency for the calls
//! it accepted.
//!
//! tower does the work: a `GlobalConcurrencyLimit` (one semaphore for every
//! service it wraps) holds the permits and `LoadShed` refuses a call when
//! none is free instead of waiting for one. What is left here is the one
//! place that turns tower's `Overloaded` into the status a caller gets, with
//! its log line. Only API services are wrapped (see `server`): health checks
//! never pass through here, so a liveness probe is never refused under load
//! (which would restart a busy pod). A streaming call holds its permit until
//! its response starts, not for the stream's life.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tower::{
    BoxError,
    limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer},
    load_shed::{LoadShed, error::Overloaded},
};

/// Tower layer sharing one limit across every service it wraps and every
/// connection.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    permits: GlobalConcurrencyLimitLayer,
    limit: usize,
}

impl LoadShedLayer {
    /// At most `limit` API calls at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: GlobalConcurrencyLimitLayer::new(limit),
            limit,
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = Shed<LoadShed<ConcurrencyLimit<S>>>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner: LoadShed::new(self.permits.layer(inner)),
            limit: self.limit,
        }
    }
}

/// The service made by [`LoadShedLayer`]: tower's load shedding, its
/// refusal answered as a gRPC status (tonic serves only services that
/// never fail).
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    limit: usize,
}

impl<S, B> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = BoxError,
        >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                // LoadShed fails only when the service it wraps does, and
                // an API service never does; were it to, `call` below
                // answers with a status instead of the server failing.
                tracing::error!(%error, "an API service is not ready");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => response,
                Err(error) => refusal(error, limit).into_http(),
            })
        })
    }
}

/// The status of a call tower did not let through.
fn refusal(error: BoxError, limit: usize) -> tonic::Status {
    if error.is::<Overloaded>() {
        tracing::warn!(limit, "overloaded: shedding a call");
        tonic::Status::resource_exhausted(format!(
            "overloaded: {limit} calls are already in progress on this replica; retry with backoff"
        ))
    } else {
        tonic::Status::from_error(error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn status(response: &http::Response<tonic::body::Body>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    #[tokio::test]
    async fn beyond_the_limit_a_call_to_any_wrapped_service_is_refused_at_once() {
        // A service whose calls finish only when released: the first call
        // holds the one permit for as long as the test wants.
        let release = Arc::new(tokio::sync::Notify::new());
        let held = {
            let release = release.clone();
            tower::service_fn(move |_: http::Request<()>| {
                let release = release.clone();
                async move {
                    release.notified().await;
                    Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
                }
            })
        };
        let layer = LoadShedLayer::new(1);
        let (mut first, mut second) = (layer.layer(held.clone()), layer.layer(held));

        let holding = first
            .ready()
            .await
            .unwrap_or_else(|e| match e {})
            .call(http::Request::new(()));
        // Another service wrapped by the same layer shares the limit; a
        // call that waited for the permit would never end, so the test
        // bounds it instead of hanging.
        let shed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            second
                .ready()
                .await
                .unwrap_or_else(|e| match e {})
                .call(http::Request::new(()))
                .await
                .unwrap_or_else(|e| match e {})
        })
        .await
        .unwrap_or_else(|_| panic!("a call beyond the limit waited instead of being shed"));
        let refused = status(&shed).map(|s| (s.code(), s.message().to_owned()));
        assert_eq!(
            refused,
            Some((
                tonic::Code::ResourceExhausted,
                String::from(
                    "overloaded: 1 calls are already in progress on this replica; retry with backoff"
                )
            ))
        );

        release.notify_one();
        let held = holding.await.unwrap_or_else(|e| match e {});
        assert!(status(&held).is_none(), "the held call was answered");
        // Its permit is free again.
        release.notify_one();
        let next = second
            .ready()
            .await
            .unwrap_or_else(|e| match e {})
            .call(http::Request::new(()))
            .await
            .unwrap_or_else(|e| match e {});
        assert!(
            status(&next).is_none(),
            "a call after the held one was shed"
        );
    }
}
