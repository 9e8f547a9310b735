//! The gateway over HTTP: what the service calls when `GATEWAY_URL` is set
//! (tools/gateway-sim, or anything speaking its API; docs/gateway-sim.md).
//!
//! It is one more `tower::Service<GatewayRequest>`, so it runs under the same
//! breaker, retry and timeout stack as the built-in simulator, and a timeout
//! drops the request (and its connection) in flight. The answers map onto
//! [`GatewayError`] by what a retry can change:
//!
//! * no connection, a broken one, a 5xx or a 429: `Transient` (retried; the
//!   idempotency key makes the retry the same operation at the gateway);
//! * 402: `Declined`, the gateway's final word;
//! * any other 4xx: `Rejected`, which dead-letters with the gateway's reason;
//! * an amount that is no whole number of the currency's minor units:
//!   `Rejected` before any call, since rounding money is never right.
//!
//! The current span's trace context goes out as `traceparent`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use orderflow_money::minor_units;
use serde_json::{Value, json};

use crate::gateway::{GatewayError, GatewayRequest, GatewayResponse};

/// The header that makes a call idempotent at the gateway.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The largest answer body read; a gateway's answers are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A gateway reached over HTTP/1.1 at a base URL. Clones share one
/// connection pool.
#[derive(Clone, Debug)]
pub struct HttpGateway {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpGateway {
    /// A client of the gateway at `base` (`http://host:port`, optionally
    /// with a path prefix).
    pub fn new(base: &Uri) -> Self {
        let mut connector = HttpConnector::new();
        // Small requests and answers: Nagle's delay would be most of a call.
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.to_string().trim_end_matches('/').to_owned(),
        }
    }
}

/// The method, path, idempotency key and JSON body of `request`.
fn wire(request: &GatewayRequest) -> Result<(Method, String, &str, Value), GatewayError> {
    match request {
        GatewayRequest::Charge {
            idempotency_key,
            amount,
        } => {
            let minor = minor_units(amount).map_err(GatewayError::Rejected)?;
            let body = json!({"amount_minor": minor, "currency": amount.currency_code()});
            Ok((
                Method::POST,
                String::from("/v1/charges"),
                idempotency_key,
                body,
            ))
        }
        GatewayRequest::Refund {
            idempotency_key,
            charge_reference,
        } => Ok((
            Method::POST,
            String::from("/v1/refunds"),
            idempotency_key,
            json!({ "charge": charge_reference }),
        )),
        GatewayRequest::Lookup { idempotency_key } => Ok((
            Method::GET,
            format!(
                "/v1/charges?idempotency_key={}",
                query_escape(idempotency_key)
            ),
            idempotency_key,
            Value::Null,
        )),
    }
}

/// `text` as a query value: every byte but letters, digits and `-._~`
/// written `%XX`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The gateway's own words about a failure, for logs and dead letters.
fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["reason"].as_str())
        .unwrap_or("no reason given")
        .to_owned()
}

/// Maps the gateway's answer to `request` onto the service's terms.
fn answer(
    request: &GatewayRequest,
    status: StatusCode,
    body: &Value,
) -> Result<GatewayResponse, GatewayError> {
    if matches!(request, GatewayRequest::Lookup { .. }) && status == StatusCode::NOT_FOUND {
        return Ok(GatewayResponse::NotCharged);
    }
    if status == StatusCode::PAYMENT_REQUIRED {
        return Ok(GatewayResponse::Declined {
            reason: message(body),
        });
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(GatewayError::Transient(format!(
            "gateway answered {status}: {}",
            message(body)
        )));
    }
    if !status.is_success() {
        return Err(GatewayError::Rejected(format!(
            "gateway answered {status}: {}",
            message(body)
        )));
    }
    let Some(reference) = body["reference"].as_str().filter(|r| !r.is_empty()) else {
        // The operation may have happened: a retry with the same key gets
        // the first answer again, readable this time or not.
        return Err(GatewayError::Transient(format!(
            "gateway answered {status} without a reference"
        )));
    };
    let reference = reference.to_owned();
    Ok(match request {
        GatewayRequest::Charge { .. } | GatewayRequest::Lookup { .. } => {
            GatewayResponse::Charged { reference }
        }
        GatewayRequest::Refund { .. } => GatewayResponse::Refunded { reference },
    })
}

impl HttpGateway {
    async fn send(&self, request: GatewayRequest) -> Result<GatewayResponse, GatewayError> {
        let (method, path, key, body) = wire(&request)?;
        let uri = format!("{}{path}", self.base);
        let key = HeaderValue::from_str(key).map_err(|_| {
            GatewayError::Rejected(format!("idempotency key {key:?} is no valid header value"))
        })?;
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let mut http_request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, key)
            .body(Full::new(body))
            .map_err(|e| GatewayError::Rejected(format!("cannot build a request to {uri}: {e}")))?;
        orderflow_eventbus::propagation::inject_current_http(http_request.headers_mut());
        let response =
            self.client.request(http_request).await.map_err(|e| {
                GatewayError::Transient(format!("gateway at {uri} unreachable: {e}"))
            })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                GatewayError::Transient(format!("gateway answer from {uri} cut short: {e}"))
            })?
            .to_bytes();
        let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        answer(&request, status, &body)
    }
}

impl tower::Service<GatewayRequest> for HttpGateway {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, GatewayError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GatewayRequest) -> Self::Future {
        let gateway = self.clone();
        Box::pin(async move { gateway.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_money::Money;

    fn money(currency: &str, units: i64, nanos: i32) -> Money {
        Money::new(currency, units, nanos).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn answers_map_by_what_a_retry_can_change() {
        let charge = GatewayRequest::Charge {
            idempotency_key: String::from("charge:o"),
            amount: money("EUR", 1, 0),
        };
        let error = json!({"error": {"message": "nope"}});
        let transient = |s: u16| {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::OK);
            matches!(
                answer(&charge, status, &error),
                Err(GatewayError::Transient(_))
            )
        };
        assert!(transient(503) && transient(500) && transient(429));
        assert!(matches!(
            answer(&charge, StatusCode::CONFLICT, &error),
            Err(GatewayError::Rejected(m)) if m.contains("nope")
        ));
        assert!(matches!(
            answer(&charge, StatusCode::PAYMENT_REQUIRED, &json!({"reason": "limit"})),
            Ok(GatewayResponse::Declined { reason }) if reason == "limit"
        ));
        assert_eq!(
            answer(&charge, StatusCode::OK, &json!({"reference": "ch_1"})),
            Ok(GatewayResponse::Charged {
                reference: String::from("ch_1")
            })
        );
        assert!(matches!(
            answer(&charge, StatusCode::OK, &Value::Null),
            Err(GatewayError::Transient(_))
        ));
    }
}
