//! The HTTP API: charges, refunds, the ledger, the runtime control of the
//! knobs, and a health check. docs/gateway-sim.md is its reference.
//!
//! A charge or refund passes, in order: the outage, the latency, the
//! transient failure draw (503, nothing recorded), validation (400 naming
//! the field), the idempotency check and the fsynced append (under the
//! ledger's lock, so two calls with one key cannot both be new), and the
//! lost-answer draw (recorded, then 503).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    knobs::{FieldError, Knobs, Rng},
    ledger::{Entry, Ledger, LedgerError, Operation, Outcome},
};

/// The request header that makes a charge or refund idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header set on the first answer repeated for a known key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The gateway's state, shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) knobs: Mutex<Knobs>,
    pub(crate) rng: Mutex<Rng>,
}

/// The routes over `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/charges", post(charge).get(find_charge))
        .route("/v1/refunds", post(refund))
        .route("/v1/ledger", get(ledger))
        .route("/control", get(control).post(set_control))
        .route("/health", get(health))
        .with_state(shared)
}

/// An error answer: `{"error": {"code", "field"?, "message"}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn bad_request(error: FieldError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: format!("{}: {}", error.field, error.message),
            field: Some(error.field),
        }
    }

    fn new(status: StatusCode, code: &'static str, field: Option<&str>, message: String) -> Self {
        Self {
            status,
            code,
            field: field.map(str::to_owned),
            message,
        }
    }

    fn unavailable(code: &'static str, message: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            None,
            message.to_owned(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = Value::String(field);
        }
        let mut response = json_response(self.status, &json!({ "error": error }));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A validated charge or refund, and the trace context it came with.
#[derive(Clone, Debug)]
struct Request {
    call: Call,
    traceparent: Option<String>,
}

#[derive(Clone, Debug)]
enum Call {
    Charge {
        key: String,
        amount_minor: u64,
        currency: String,
    },
    Refund {
        key: String,
        charge: String,
    },
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, FieldError> {
    const FIELD: &str = "Idempotency-Key";
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| FieldError::new(FIELD, "the header is required"))?;
    let key = value
        .to_str()
        .map_err(|_| FieldError::new(FIELD, "must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(FieldError::new(
            FIELD,
            &format!("must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    Ok(key.to_owned())
}

/// The caller's `traceparent`, kept when it looks like one (W3C: 55
/// characters for version 00); anything else is not ours to refuse.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (55..=128).contains(&v.len()))
        .map(str::to_owned)
}

fn object(body: &[u8], fields: &[&str]) -> Result<Map<String, Value>, FieldError> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(FieldError::new("body", "expected a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(FieldError::new(unknown, "is not a field of this request"));
    }
    Ok(map)
}

fn charge_request(headers: &HeaderMap, body: &[u8]) -> Result<Request, FieldError> {
    let key = idempotency_key(headers)?;
    let map = object(body, &["amount_minor", "currency"])?;
    let amount_minor = match map.get("amount_minor").map(Value::as_u64) {
        None => return Err(FieldError::new("amount_minor", "is required")),
        Some(Some(n)) if n > 0 => n,
        Some(_) => {
            return Err(FieldError::new(
                "amount_minor",
                "expected a whole number of minor units above 0",
            ));
        }
    };
    let currency = match map.get("currency").map(Value::as_str) {
        None => return Err(FieldError::new("currency", "is required")),
        Some(Some(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c,
        Some(_) => {
            return Err(FieldError::new(
                "currency",
                "expected an ISO 4217 code: three capital letters",
            ));
        }
    };
    Ok(Request {
        call: Call::Charge {
            key,
            amount_minor,
            currency: currency.to_owned(),
        },
        traceparent: traceparent(headers),
    })
}

fn refund_request(headers: &HeaderMap, body: &[u8]) -> Result<Request, FieldError> {
    let key = idempotency_key(headers)?;
    let map = object(body, &["charge"])?;
    let charge = match map.get("charge").map(Value::as_str) {
        None => return Err(FieldError::new("charge", "is required")),
        Some(Some(c)) if !c.is_empty() => c,
        Some(_) => {
            return Err(FieldError::new(
                "charge",
                "expected the reference of a charge",
            ));
        }
    };
    Ok(Request {
        call: Call::Refund {
            key,
            charge: charge.to_owned(),
        },
        traceparent: traceparent(headers),
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn reused_key() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        Some("Idempotency-Key"),
        String::from("the key was first used for a different request"),
    )
}

/// Decides `request` against the ledger and records it if it is new:
/// the entry, and whether it is a repeat of the first answer.
fn decide(
    ledger: &mut Ledger,
    request: Request,
    decline_above_minor: u64,
) -> Result<(Entry, bool), ApiError> {
    let seq = ledger.next_seq();
    let Request { call, traceparent } = request;
    let entry = match call {
        Call::Charge {
            key,
            amount_minor,
            currency,
        } => {
            if let Some(first) = ledger.by_key(&key) {
                let same = first.operation == Operation::Charge
                    && first.amount_minor == amount_minor
                    && first.currency == currency;
                return if same {
                    Ok((first.clone(), true))
                } else {
                    Err(reused_key())
                };
            }
            let declined = amount_minor > decline_above_minor;
            Entry {
                seq,
                time: now_rfc3339(),
                operation: Operation::Charge,
                idempotency_key: key,
                reference: format!("ch_{seq:08}"),
                amount_minor,
                reason: declined.then(|| {
                    format!(
                        "amount {amount_minor} minor units of {currency} is above the limit of {decline_above_minor}"
                    )
                }),
                currency,
                outcome: if declined {
                    Outcome::Declined
                } else {
                    Outcome::Succeeded
                },
                charge: None,
                traceparent,
            }
        }
        Call::Refund { key, charge } => {
            if let Some(first) = ledger.by_key(&key) {
                let same = first.operation == Operation::Refund
                    && first.charge.as_deref() == Some(charge.as_str());
                return if same {
                    Ok((first.clone(), true))
                } else {
                    Err(reused_key())
                };
            }
            let refunded = match ledger.by_reference(&charge) {
                Some(c) if c.operation == Operation::Charge => c,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "no_such_charge",
                        Some("charge"),
                        format!("no charge {charge}"),
                    ));
                }
            };
            if refunded.outcome == Outcome::Declined {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "charge_declined",
                    Some("charge"),
                    format!("charge {charge} was declined; there is nothing to refund"),
                ));
            }
            if let Some(earlier) = ledger.refund_of(&charge) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "charge_already_refunded",
                    Some("charge"),
                    format!(
                        "charge {charge} was refunded already ({})",
                        earlier.reference
                    ),
                ));
            }
            Entry {
                seq,
                time: now_rfc3339(),
                operation: Operation::Refund,
                idempotency_key: key,
                reference: format!("re_{seq:08}"),
                amount_minor: refunded.amount_minor,
                currency: refunded.currency.clone(),
                outcome: Outcome::Succeeded,
                reason: None,
                charge: Some(charge),
                traceparent,
            }
        }
    };
    match ledger.append(entry) {
        Ok(entry) => Ok((entry.clone(), false)),
        Err(error) => {
            tracing::error!(%error, "the ledger refused an append");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ledger_unavailable",
                None,
                String::from("the ledger could not record the operation; nothing was done"),
            ))
        }
    }
}

/// The knobs and the random draws of one call, taken together.
struct Draw {
    knobs: Knobs,
    extra: std::time::Duration,
    fails: bool,
    loses_answer: bool,
}

fn draw(shared: &Shared) -> Result<Draw, ApiError> {
    let poisoned = || ApiError::unavailable("unavailable", "the gateway's state is unavailable");
    let knobs = shared.knobs.lock().map_err(|_| poisoned())?.clone();
    let mut rng = shared.rng.lock().map_err(|_| poisoned())?;
    Ok(Draw {
        extra: rng.up_to(knobs.jitter),
        fails: rng.chance(knobs.failure_rate),
        loses_answer: rng.chance(knobs.lost_answer_rate),
        knobs,
    })
}

async fn handle(
    shared: Arc<Shared>,
    parsed: Result<Request, FieldError>,
) -> Result<Response, ApiError> {
    let draw = draw(&shared)?;
    if draw.knobs.in_outage(Instant::now()) {
        return Err(ApiError::unavailable("outage", "the gateway is down"));
    }
    let latency = draw.knobs.latency + draw.extra;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if draw.fails {
        return Err(ApiError::unavailable(
            "transient",
            "simulated transient failure; nothing was done",
        ));
    }
    let request = parsed.map_err(ApiError::bad_request)?;
    let decline_above = draw.knobs.decline_above_minor;
    let state = shared.clone();
    // The append fsyncs: off the async workers, holding the ledger's lock
    // so that the idempotency check and the append are one step.
    let decided = tokio::task::spawn_blocking(move || {
        let mut ledger = state
            .ledger
            .lock()
            .map_err(|_| ApiError::unavailable("unavailable", "the ledger is unavailable"))?;
        decide(&mut ledger, request, decline_above)
    })
    .await
    .map_err(|_| ApiError::unavailable("unavailable", "the ledger task failed"))??;
    let (entry, replayed) = decided;
    if draw.loses_answer {
        return Err(ApiError::unavailable(
            "lost_answer",
            "simulated lost answer; the operation was recorded",
        ));
    }
    let status = match entry.outcome {
        Outcome::Succeeded => StatusCode::OK,
        Outcome::Declined => StatusCode::PAYMENT_REQUIRED,
    };
    let mut response = json_response(status, &entry);
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn charge(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = charge_request(&headers, &body);
    handle(shared, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/charges?idempotency_key=K`: the charge made under `K`, as its
/// charge answered it (200, or 402 when declined), or 404: what a client
/// asks when it cannot tell whether an earlier call of its own charged,
/// without charging. Outages and latency apply; failure draws do not.
async fn find_charge(State(shared): State<Arc<Shared>>, query: RawQuery) -> Response {
    lookup(&shared, query.0.as_deref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn lookup(shared: &Shared, query: Option<&str>) -> Result<Response, ApiError> {
    let draw = draw(shared)?;
    if draw.knobs.in_outage(Instant::now()) {
        return Err(ApiError::unavailable("outage", "the gateway is down"));
    }
    let latency = draw.knobs.latency + draw.extra;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let key = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("idempotency_key="))
        .map(percent_decode)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::bad_request(FieldError::new("idempotency_key", "is required")))?;
    let ledger = shared
        .ledger
        .lock()
        .map_err(|_| ApiError::unavailable("unavailable", "the ledger is unavailable"))?;
    match ledger
        .by_key(&key)
        .filter(|entry| entry.operation == Operation::Charge)
    {
        Some(entry) => {
            let status = match entry.outcome {
                Outcome::Succeeded => StatusCode::OK,
                Outcome::Declined => StatusCode::PAYMENT_REQUIRED,
            };
            Ok(json_response(status, entry))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("idempotency_key"),
            format!("no charge under {key:?}"),
        )),
    }
}

/// `%XX` escapes decoded; anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn refund(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = refund_request(&headers, &body);
    handle(shared, parsed)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn ledger(State(shared): State<Arc<Shared>>) -> Response {
    let entries = match shared.ledger.lock() {
        Ok(ledger) => ledger.entries().to_vec(),
        Err(_) => {
            return ApiError::unavailable("unavailable", "the ledger is unavailable")
                .into_response();
        }
    };
    // Serialized from the entries themselves, so fields keep their order.
    #[derive(Serialize)]
    struct Operations {
        operations: Vec<Entry>,
    }
    json_response(
        StatusCode::OK,
        &Operations {
            operations: entries,
        },
    )
}

async fn control(State(shared): State<Arc<Shared>>) -> Response {
    match shared.knobs.lock() {
        Ok(knobs) => json_response(StatusCode::OK, &knobs.view(Instant::now())),
        Err(_) => ApiError::unavailable("unavailable", "the knobs are unavailable").into_response(),
    }
}

async fn set_control(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return ApiError::bad_request(FieldError::new("body", "expected a JSON object"))
            .into_response();
    };
    let Ok(mut knobs) = shared.knobs.lock() else {
        return ApiError::unavailable("unavailable", "the knobs are unavailable").into_response();
    };
    let now = Instant::now();
    match knobs.apply(&fields, now) {
        Ok(()) => {
            tracing::info!(knobs = ?knobs.view(now), "knobs changed");
            json_response(StatusCode::OK, &knobs.view(now))
        }
        Err(error) => ApiError::bad_request(error).into_response(),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
