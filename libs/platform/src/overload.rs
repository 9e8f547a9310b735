//! Load shedding at the gRPC edge.
//!
//! At most `GRPC_MAX_CONCURRENT_CALLS` API calls are worked on at once, across
//! all connections. A call beyond that is answered at once with
//! `RESOURCE_EXHAUSTED` instead of waiting in a queue that grows without
//! bound, so an overloaded replica tells its callers (and their retry
//! budgets) right away and keeps its latency for the calls it accepted.
//!
//! Written here rather than with tower's `ConcurrencyLimit` + `LoadShed`:
//! those apply to every route, and health checks must never be shed — a
//! liveness probe refused under load would restart a busy pod. A streaming
//! call holds its permit until its response starts, not for the stream's life.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;

use crate::infra_paths::is_health_or_reflection;

/// Tower layer sharing one limit across all connections.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    /// At most `limit` API calls at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
        }
    }
}

/// The service made by [`LoadShedLayer`].
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<S, B> tower::Service<http::Request<B>> for LoadShed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_health_or_reflection(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                tracing::warn!(limit = self.limit, "overloaded: shedding a call");
                let status = tonic::Status::resource_exhausted(format!(
                    "overloaded: {} calls are already in progress on this replica; retry with backoff",
                    self.limit
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
