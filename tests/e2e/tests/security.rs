//! gRPC transport security and API authentication, against the real
//! binaries: TLS and mutual-TLS handshakes accepted and refused, the
//! plaintext health listener for probes, bearer tokens missing, wrong and
//! right, roles, reflection on and off, and no token or secret in any log
//! line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use orderflow_e2e::services::order_request;
use orderflow_proto::{
    admin::v1::{ListDeadLettersRequest, dead_letter_service_client::DeadLetterServiceClient},
    order::v1::{GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient},
    payment::v1::{
        ListPaymentsRequest, PaymentStatus, RefundPaymentRequest,
        payment_service_client::PaymentServiceClient,
    },
};
use orderflow_testkit::{
    NatsServer,
    pki::TestPki,
    process::{ServiceProcess, free_addr, workspace_binary},
    wait_until,
};
use serde_json::json;
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const ISSUER: &str = "https://id.orderflow.test";
const AUDIENCE: &str = "orderflow";
/// The HS256 development secret the services verify tokens with; it must
/// never appear in a log line.
const SECRET: &str = "test-secret-that-is-long-enough-0123456789";

async fn tls_channel(
    addr: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Asks `GetOrder` for an order that does not exist: `NOT_FOUND` proves the
/// call reached the handler through TLS; anything else is what refused it.
async fn get_unknown_order(channel: Channel) -> Code {
    OrderServiceClient::new(channel)
        .get_order(GetOrderRequest {
            order_id: "00000000-0000-4000-8000-000000000000".into(),
        })
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn health_status(endpoint: String) -> Option<i32> {
    let channel = Channel::from_shared(endpoint).ok()?.connect().await.ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_clients_with_a_certificate_of_the_trusted_ca() {
    let nats = NatsServer::start();
    let pki = TestPki::generate();
    let health_addr = free_addr().to_string();
    let (cert, key, ca) = (
        pki.server.cert_file.to_string_lossy().into_owned(),
        pki.server.key_file.to_string_lossy().into_owned(),
        pki.ca_file.to_string_lossy().into_owned(),
    );
    let orders = ServiceProcess::start(
        &workspace_binary("order-service"),
        &nats.url(),
        &[
            ("GRPC_TLS_CERT_FILE", &cert),
            ("GRPC_TLS_KEY_FILE", &key),
            ("GRPC_TLS_CLIENT_CA_FILE", &ca),
            ("GRPC_HEALTH_ADDR", &health_addr),
        ],
    )
    .await;
    let addr = orders.addr.to_string();

    // A client certificate of the trusted CA: the call reaches the handler.
    let trusted = tls_channel(
        &addr,
        &pki.ca_pem,
        Some((&pki.client.cert_pem, &pki.client.key_pem)),
    )
    .await
    .expect("a trusted client completes the handshake");
    assert_eq!(get_unknown_order(trusted).await, Code::NotFound);

    // No certificate, or one of another CA: refused during the handshake,
    // so no call ever reaches a handler.
    for (what, identity) in [
        ("no client certificate", None),
        (
            "a certificate of an untrusted CA",
            Some((
                pki.stranger.cert_pem.as_str(),
                pki.stranger.key_pem.as_str(),
            )),
        ),
    ] {
        let code = match tls_channel(&addr, &pki.ca_pem, identity).await {
            Err(_) => Code::Unavailable,
            Ok(channel) => get_unknown_order(channel).await,
        };
        assert_ne!(
            code,
            Code::NotFound,
            "{what}: the call must not reach the service"
        );
        assert_ne!(code, Code::Ok, "{what}");
    }

    // Plaintext to the TLS port is refused too.
    let plaintext = health_status(orders.endpoint()).await;
    assert_eq!(plaintext, None, "plaintext gRPC on the TLS port must fail");

    // Probes use the plaintext health listener, which serves health only.
    assert_eq!(
        health_status(format!("http://{health_addr}")).await,
        Some(ServingStatus::Serving as i32)
    );
    let health_channel = Channel::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        get_unknown_order(health_channel).await,
        Code::Unimplemented,
        "the health listener must not serve the API"
    );
    // And the built-in probe finds it through GRPC_HEALTH_ADDR.
    let probe = Command::new(workspace_binary("order-service"))
        .arg("probe")
        .env_clear()
        .env("GRPC_HEALTH_ADDR", &health_addr)
        .env("GRPC_ADDR", &addr)
        .status()
        .unwrap();
    assert!(probe.success(), "probe on the health listener: {probe:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_client_ca_serves_any_client_that_trusts_the_server() {
    let nats = NatsServer::start();
    let pki = TestPki::generate();
    let health_addr = free_addr().to_string();
    let (cert, key) = (
        pki.server.cert_file.to_string_lossy().into_owned(),
        pki.server.key_file.to_string_lossy().into_owned(),
    );
    let orders = ServiceProcess::start(
        &workspace_binary("order-service"),
        &nats.url(),
        &[
            ("GRPC_TLS_CERT_FILE", &cert),
            ("GRPC_TLS_KEY_FILE", &key),
            ("GRPC_HEALTH_ADDR", &health_addr),
        ],
    )
    .await;
    let channel = tls_channel(&orders.addr.to_string(), &pki.ca_pem, None)
        .await
        .expect("server-only TLS needs no client certificate");
    assert_eq!(get_unknown_order(channel).await, Code::NotFound);

    // A client that does not trust the server's CA refuses it.
    let other = TestPki::generate();
    let code = match tls_channel(&orders.addr.to_string(), &other.ca_pem, None).await {
        Err(_) => Code::Unavailable,
        Ok(channel) => get_unknown_order(channel).await,
    };
    assert_ne!(code, Code::NotFound);
}

fn token(subject: &str, roles: &[&str], expires_in: i64, secret: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    jsonwebtoken::encode(
        &Header::default(),
        &json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject,
            "roles": roles, "iat": now, "exp": now + expires_in,
        }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn mint_with_script(secret_file: &str, subject: &str, role: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mint-token.py");
    let output = Command::new("python3")
        .args([
            script,
            "--secret-file",
            secret_file,
            "--issuer",
            ISSUER,
            "--audience",
            AUDIENCE,
            "--subject",
            subject,
            "--role",
            role,
        ])
        .output()
        .expect("python3 runs scripts/mint-token.py");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_need_a_valid_token_and_admin_methods_the_admin_role() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let secret_file = secret_file.to_string_lossy().into_owned();
    let auth = [
        ("AUTH_JWT_ISSUER", ISSUER),
        ("AUTH_JWT_AUDIENCE", AUDIENCE),
        ("AUTH_JWT_SECRET_FILE", secret_file.as_str()),
        // Everything the services and their libraries log, so a leaked
        // token or secret would show.
        ("RUST_LOG", "debug"),
    ];
    let orders =
        ServiceProcess::start(&workspace_binary("order-service"), &nats.url(), &auth).await;
    let payments =
        ServiceProcess::start(&workspace_binary("payment-service"), &nats.url(), &auth).await;
    let order_channel = Channel::from_shared(orders.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let payment_channel = Channel::from_shared(payments.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut order_api = OrderServiceClient::new(order_channel.clone());
    let mut payment_api = PaymentServiceClient::new(payment_channel.clone());

    let clerk = token("clerk", &["orders"], 300, SECRET);
    // The admin's token comes from the documented development script, so
    // docs/security.md's way of getting one is tested too.
    let admin = mint_with_script(&secret_file, "ops", "admin");
    let expired = token("clerk", &["admin"], -300, SECRET);
    let forged = token(
        "mallory",
        &["admin"],
        300,
        "not-the-secret-but-just-as-long-0123456789",
    );

    // Missing, malformed, expired and forged tokens: UNAUTHENTICATED, and
    // the message says why without echoing the token.
    let create = || order_request("c-auth", 1, 12, "r-auth-1");
    let missing = order_api.create_order(create()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("missing bearer token"));
    let mut garbage = Request::new(create());
    garbage
        .metadata_mut()
        .insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    let garbage = order_api.create_order(garbage).await.unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    for (what, bad, reason) in [
        ("expired", &expired, "expired"),
        ("forged", &forged, "signature"),
    ] {
        let status = order_api
            .create_order(with_token(create(), bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(status.message().contains(reason), "{what}: {status:?}");
        assert!(!status.message().contains(bad.as_str()));
    }

    // A valid token without roles runs the saga.
    let order = order_api
        .create_order(with_token(create(), &clerk))
        .await
        .expect("a valid token may create an order")
        .into_inner()
        .order
        .unwrap();
    let mut watcher = OrderServiceClient::new(order_channel.clone());
    let confirmed = {
        let clerk = clerk.clone();
        let order_id = order.order_id.clone();
        wait_until("the order to be confirmed", Duration::from_secs(20), || {
            let (mut watcher, clerk, order_id) = (watcher.clone(), clerk.clone(), order_id.clone());
            async move {
                watcher
                    .get_order(with_token(GetOrderRequest { order_id }, &clerk))
                    .await
                    .is_ok_and(|r| {
                        r.into_inner()
                            .order
                            .is_some_and(|o| o.status == OrderStatus::Confirmed as i32)
                    })
            }
        })
        .await;
        watcher
            .get_order(with_token(
                GetOrderRequest {
                    order_id: order.order_id.clone(),
                },
                &clerk,
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    };
    assert_eq!(confirmed.status, OrderStatus::Confirmed as i32);

    // Refunds and dead-letter admin need the admin role.
    let payment = payment_api
        .list_payments(with_token(
            ListPaymentsRequest {
                order_id: order.order_id.clone(),
                ..Default::default()
            },
            &clerk,
        ))
        .await
        .unwrap()
        .into_inner()
        .payments
        .into_iter()
        .next()
        .expect("the order's payment is listed");
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
    let refund = || RefundPaymentRequest {
        payment_id: payment.payment_id.clone(),
    };
    let denied = payment_api
        .refund_payment(with_token(refund(), &clerk))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("admin"));
    let refunded = payment_api
        .refund_payment(with_token(refund(), &admin))
        .await
        .expect("an admin may refund")
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded as i32);

    let mut dead_letters = DeadLetterServiceClient::new(order_channel.clone());
    let denied = dead_letters
        .list_dead_letters(with_token(ListDeadLettersRequest::default(), &clerk))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    dead_letters
        .list_dead_letters(with_token(ListDeadLettersRequest::default(), &admin))
        .await
        .expect("an admin may list dead letters");

    // Health and reflection stay open without a token.
    assert_eq!(
        health_status(orders.endpoint()).await,
        Some(ServingStatus::Serving as i32)
    );
    let listed = Command::new("grpcurl")
        .args(["-plaintext", &orders.addr.to_string(), "list"])
        .output()
        .expect("grpcurl runs (scripts/install-tools.sh installs it)");
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("orderflow.order.v1.OrderService"));

    // Nothing secret in any log line of either service.
    for (name, log) in [
        ("order-service", orders.log()),
        ("payment-service", payments.log()),
    ] {
        assert!(!log.is_empty(), "{name} logged nothing at debug");
        for secret in [
            SECRET,
            clerk.as_str(),
            admin.as_str(),
            expired.as_str(),
            forged.as_str(),
        ] {
            assert!(
                !log.contains(secret),
                "{name} logged a secret or token:\n{}",
                log.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        // The signature part alone must not leak either.
        let signature = clerk.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "{name} logged a token signature");
    }
}

/// What grpcurl prints when the server answers UNIMPLEMENTED for the
/// reflection service: reflection is not served. Any other failure (no
/// grpcurl, nothing listening, a TLS mismatch) prints something else.
const REFLECTION_NOT_SERVED: &str =
    "Failed to list services: server does not support the reflection API";

fn grpcurl_list(addr: &str) -> std::process::Output {
    Command::new("grpcurl")
        .args(["-plaintext", addr, "list"])
        .output()
        .expect("grpcurl runs (scripts/install-tools.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_turned_off() {
    let nats = NatsServer::start();
    // The same command against the switch turned on lists the services, so
    // grpcurl works and is pointed the right way.
    let on = ServiceProcess::start(
        &workspace_binary("order-service"),
        &nats.url(),
        &[("GRPC_REFLECTION", "true")],
    )
    .await;
    let listed = grpcurl_list(&on.addr.to_string());
    assert!(
        listed.status.success(),
        "reflection should be on: {listed:?}"
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("orderflow.order.v1.OrderService"),
        "{listed:?}"
    );

    let off = ServiceProcess::start(
        &workspace_binary("order-service"),
        &nats.url(),
        &[("GRPC_REFLECTION", "false")],
    )
    .await;
    let refused = grpcurl_list(&off.addr.to_string());
    assert!(
        !refused.status.success(),
        "reflection should be off: {refused:?}"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim(),
        REFLECTION_NOT_SERVED,
        "grpcurl failed for another reason than reflection being off"
    );
    assert!(refused.stdout.is_empty(), "{refused:?}");
    // The API itself still answers.
    let channel = Channel::from_shared(off.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(get_unknown_order(channel).await, Code::NotFound);
}

#[test]
fn bad_security_settings_stop_start_up_naming_the_variable_and_never_the_secret() {
    let output = Command::new(workspace_binary("payment-service"))
        .env_clear()
        .env("AUTH_JWT_SECRET", "short-but-secret")
        .env("GRPC_TLS_CERT_FILE", "/nonexistent/cert.pem")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for var in ["AUTH_JWT_SECRET:", "GRPC_TLS_KEY_FILE:"] {
        assert!(stderr.contains(var), "{var} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("short-but-secret"), "{stderr}");

    let help = Command::new(workspace_binary("payment-service"))
        .arg("--help")
        .env("AUTH_JWT_SECRET", "short-but-secret")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "GRPC_TLS_CERT_FILE",
        "GRPC_TLS_CLIENT_CA_FILE",
        "GRPC_HEALTH_ADDR",
        "AUTH_JWT_SECRET_FILE",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    assert!(!help.contains("short-but-secret"));
}
