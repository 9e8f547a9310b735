//! The few HTTP/1.1 calls the nemesis makes: nats-server's `/healthz`, and
//! the gateway simulator's ledger and control endpoints.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Why a call failed before an answer came.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL or request is malformed.
    #[error("bad request to {url}: {detail}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// No answer (connection refused, reset, ...).
    #[error("{url}: {detail}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`: the status and the body.
pub async fn get(url: &str) -> Result<(u16, Bytes), HttpError> {
    call(url, hyper::Method::GET, Bytes::new()).await
}

/// `POST url` with a JSON `body`: the status and the answer's body.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<(u16, Bytes), HttpError> {
    call(url, hyper::Method::POST, Bytes::from(body.to_string())).await
}

async fn call(url: &str, method: hyper::Method, body: Bytes) -> Result<(u16, Bytes), HttpError> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| HttpError::Request {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
    let transport = |detail: String| HttpError::Transport {
        url: url.to_owned(),
        detail,
    };
    let response = client()
        .request(request)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
