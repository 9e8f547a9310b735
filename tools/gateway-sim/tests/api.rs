//! The gateway simulator over real HTTP on loopback: idempotent answers, the
//! ledger across restarts (and across a SIGKILL of the binary), a torn last
//! line, 400s naming the field, declines, refunds and the runtime knobs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    io::BufRead,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use orderflow_gateway_sim::{
    Running, Settings,
    knobs::Knobs,
    ledger::{LEDGER_FILE, Operation, Outcome},
};
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

async fn call(base: &str, method: Method, path: &str, key: Option<&str>, body: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        replayed,
        body,
    }
}

async fn charge(base: &str, key: &str, amount_minor: u64) -> Answer {
    let body = json!({"amount_minor": amount_minor, "currency": "EUR"}).to_string();
    call(base, Method::POST, "/v1/charges", Some(key), &body).await
}

async fn ledger(base: &str) -> Vec<Value> {
    let answer = call(base, Method::GET, "/v1/ledger", None, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.body["operations"].as_array().unwrap().clone()
}

fn settings(dir: &Path) -> Settings {
    Settings {
        data_dir: dir.to_owned(),
        knobs: Knobs::default(),
        seed: 1,
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn a_repeated_key_answers_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();

    let first = charge(&base, "charge:o-1", 2400).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(!first.replayed);
    assert_eq!(first.body["outcome"], "succeeded");
    let again = charge(&base, "charge:o-1", 2400).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed, "a repeat is marked as one");
    assert_eq!(again.body, first.body, "a repeat answers the first answer");

    let other = charge(&base, "charge:o-1", 2500).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.body["error"]["field"], "Idempotency-Key");

    let operations = ledger(&base).await;
    assert_eq!(operations.len(), 1, "{operations:?}");
    assert_eq!(operations[0], first.body);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_one_key_charge_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { charge(&base, "charge:o-race", 990).await })
        })
        .collect();
    let mut references = std::collections::BTreeSet::new();
    let mut new = 0;
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        new += usize::from(!answer.replayed);
        references.insert(answer.body["reference"].to_string());
    }
    assert_eq!(
        (new, references.len()),
        (1, 1),
        "one new charge, one reference"
    );
    assert_eq!(ledger(&base).await.len(), 1);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn the_ledger_survives_a_restart_on_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let first = charge(&gateway.url(), "charge:o-2", 1000).await;
    assert_eq!(first.status, StatusCode::OK);
    gateway.stop().await.unwrap();

    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();
    assert_eq!(ledger(&base).await, vec![first.body.clone()]);
    let again = charge(&base, "charge:o-2", 1000).await;
    assert!(
        again.replayed,
        "the idempotency map was rebuilt from the file"
    );
    assert_eq!(again.body, first.body);
    let next = charge(&base, "charge:o-3", 1000).await;
    assert_eq!(next.body["seq"], 2);
    assert_ne!(next.body["reference"], first.body["reference"]);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_torn_last_line_is_ignored_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let first = charge(&gateway.url(), "charge:o-4", 700).await;
    gateway.stop().await.unwrap();
    // What a SIGKILL in the middle of an append leaves.
    let file = dir.path().join(LEDGER_FILE);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(r#"{"seq":2,"time":"2026-01-01T00:00:00Z","operation":"cha"#);
    std::fs::write(&file, text).unwrap();

    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let torn = gateway.torn_tail().expect("the torn line is reported");
    assert_eq!(torn.line, 2);
    let base = gateway.url();
    assert_eq!(ledger(&base).await, vec![first.body.clone()]);
    let next = charge(&base, "charge:o-5", 800).await;
    assert_eq!(next.status, StatusCode::OK);
    gateway.stop().await.unwrap();

    // The next append started on a fresh line: the file reads whole.
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    assert!(gateway.torn_tail().is_none());
    assert_eq!(ledger(&gateway.url()).await, vec![first.body, next.body]);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();
    let rows: &[(&str, Option<&str>, &str, &str)] = &[
        (
            "/v1/charges",
            None,
            r#"{"amount_minor":1,"currency":"EUR"}"#,
            "Idempotency-Key",
        ),
        (
            "/v1/charges",
            Some(""),
            r#"{"amount_minor":1,"currency":"EUR"}"#,
            "Idempotency-Key",
        ),
        ("/v1/charges", Some("k"), "not json", "body"),
        (
            "/v1/charges",
            Some("k"),
            r#"{"currency":"EUR"}"#,
            "amount_minor",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":"12","currency":"EUR"}"#,
            "amount_minor",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":0,"currency":"EUR"}"#,
            "amount_minor",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":-5,"currency":"EUR"}"#,
            "amount_minor",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":1}"#,
            "currency",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":1,"currency":"eur"}"#,
            "currency",
        ),
        (
            "/v1/charges",
            Some("k"),
            r#"{"amount_minor":1,"currency":"EUR","amount":1}"#,
            "amount",
        ),
        ("/v1/refunds", Some("k"), r#"{}"#, "charge"),
        ("/v1/refunds", Some("k"), r#"{"charge":7}"#, "charge"),
        ("/control", None, r#"{"failure_rate":1.5}"#, "failure_rate"),
        ("/control", None, r#"{"slowness":1}"#, "slowness"),
    ];
    for (path, key, body, field) in rows {
        let answer = call(&base, Method::POST, path, *key, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(
            answer.body["error"]["field"], *field,
            "{path} {body}: {}",
            answer.body
        );
    }
    assert!(
        ledger(&base).await.is_empty(),
        "a bad request records nothing"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn declines_are_recorded_and_refunds_refund_a_charge_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    settings.knobs.decline_above_minor = 1000;
    let gateway = Running::start(settings, loopback()).await.unwrap();
    let base = gateway.url();

    let declined = charge(&base, "charge:o-6", 1001).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined.body["outcome"], "declined");
    assert!(
        declined.body["reason"]
            .as_str()
            .unwrap()
            .contains("above the limit")
    );

    let charged = charge(&base, "charge:o-7", 1000).await;
    let reference = charged.body["reference"].as_str().unwrap().to_owned();
    let refund = |key: &'static str, charge: String| {
        let base = base.clone();
        async move {
            let body = json!({ "charge": charge }).to_string();
            call(&base, Method::POST, "/v1/refunds", Some(key), &body).await
        }
    };
    let refunded = refund("refund:o-7", reference.clone()).await;
    assert_eq!(refunded.status, StatusCode::OK, "{}", refunded.body);
    assert_eq!(refunded.body["amount_minor"], 1000);
    assert_eq!(refunded.body["charge"], reference.as_str());
    assert!(refund("refund:o-7", reference.clone()).await.replayed);
    let twice = refund("refund:other", reference).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let declined_ref = declined.body["reference"].as_str().unwrap().to_owned();
    assert_eq!(
        refund("refund:o-6", declined_ref).await.status,
        StatusCode::CONFLICT
    );
    let unknown = refund("refund:o-8", String::from("ch_nope")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["field"], "charge");

    let entries = gateway.entries();
    let kinds: Vec<_> = entries.iter().map(|e| (e.operation, e.outcome)).collect();
    assert_eq!(
        kinds,
        [
            (Operation::Charge, Outcome::Declined),
            (Operation::Charge, Outcome::Succeeded),
            (Operation::Refund, Outcome::Succeeded),
        ]
    );
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn the_knobs_change_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();
    let control = |body: Value| {
        let base = base.clone();
        async move { call(&base, Method::POST, "/control", None, &body.to_string()).await }
    };

    let set = control(json!({"outage_secs": 600})).await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(set.body["outage"], true);
    assert_eq!(
        charge(&base, "charge:o-9", 1).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    control(json!({"outage": false})).await;

    control(json!({"failure_rate": 1.0})).await;
    assert_eq!(
        charge(&base, "charge:o-9", 1).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        ledger(&base).await.is_empty(),
        "outages and failures record nothing"
    );

    control(json!({"failure_rate": 0.0, "lost_answer_rate": 1.0})).await;
    assert_eq!(
        charge(&base, "charge:o-9", 1).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(ledger(&base).await.len(), 1, "a lost answer was recorded");
    control(json!({"lost_answer_rate": 0.0})).await;
    let retried = charge(&base, "charge:o-9", 1).await;
    assert!(
        retried.replayed,
        "the retry after a lost answer charges nothing more"
    );

    let view = call(&base, Method::GET, "/control", None, "").await;
    assert_eq!(view.body["outage"], false);
    assert_eq!(view.body["lost_answer_rate"], 0.0);
    gateway.stop().await.unwrap();
}

#[test]
fn the_binary_keeps_what_it_answered_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-sim"))
            .args(["--addr", "127.0.0.1:0", "--seed", "3", "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        (child, url)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let (mut child, url) = start();
    let first = runtime.block_on(charge(&url, "charge:o-10", 1234));
    assert_eq!(first.status, StatusCode::OK);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, url) = start();
    let again = runtime.block_on(charge(&url, "charge:o-10", 1234));
    assert!(again.replayed);
    assert_eq!(again.body, first.body);
    assert_eq!(runtime.block_on(ledger(&url)), vec![first.body]);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_lookup_answers_the_charge_under_a_key_without_charging() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Running::start(settings(dir.path()), loopback())
        .await
        .unwrap();
    let base = gateway.url();

    let missing = call(
        &base,
        Method::GET,
        "/v1/charges?idempotency_key=charge%3Ao-9",
        None,
        "",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert_eq!(missing.body["error"]["field"], "idempotency_key");
    let charged = charge(&base, "charge:o-9", 1200).await;
    let found = call(
        &base,
        Method::GET,
        "/v1/charges?idempotency_key=charge%3Ao-9",
        None,
        "",
    )
    .await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(found.body, charged.body, "the lookup answers the charge");
    let declined = charge(&base, "charge:o-10", 2_000_000).await;
    let found = call(
        &base,
        Method::GET,
        "/v1/charges?idempotency_key=charge:o-10",
        None,
        "",
    )
    .await;
    assert_eq!(found.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(found.body, declined.body);
    let bad = call(&base, Method::GET, "/v1/charges", None, "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["field"], "idempotency_key");
    assert_eq!(ledger(&base).await.len(), 2, "lookups record nothing");
    gateway.stop().await.unwrap();
}
