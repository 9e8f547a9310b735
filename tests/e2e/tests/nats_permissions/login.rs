//! Logging in: a wrong password stops start-up naming the variables and is
//! never printed; mutual TLS logs in, and no client certificate is refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_start_up_with_exit_code_1_and_is_never_printed() {
    let nats = SecuredNats::start();
    let wrong_file = nats.password_file("wrong");
    let wrong = std::fs::read_to_string(&wrong_file).unwrap();
    let mut command = Command::new(workspace_binary("order-service"));
    command
        .env_clear()
        .env("NATS_URL", nats.url())
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("NATS_USER", "order-service")
        .env("NATS_PASSWORD_FILE", wrong_file)
        .env("RUST_LOG", "trace")
        .current_dir(std::env::temp_dir());
    let out = output_within(command, CHILD_TIMEOUT).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refused this service's credentials") && text.contains("NATS_PASSWORD_FILE"),
        "the error says what to check: {text}"
    );
    assert!(
        !text.contains(wrong.trim()),
        "the wrong password was printed"
    );
    for secret in nats.secrets() {
        assert!(!text.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logs_in_over_mutual_tls_and_without_a_client_certificate_is_refused() {
    let pki = orderflow_testkit::pki::TestPki::generate();
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        pki.server.cert_file.display().to_string(),
        pki.server.key_file.display().to_string(),
        pki.ca_file.display().to_string(),
    );
    let auth = std::fs::read_to_string(deploy_file("nats/auth.conf")).unwrap();
    let password_dir = tempfile::tempdir().unwrap();
    let password_file = password_dir.path().join("password");
    std::fs::write(&password_file, "tls-order-pw").unwrap();
    let nats = NatsServer::start_with_config(
        &format!("{tls}{auth}"),
        &[
            ("ORDER_SERVICE_NATS_PASSWORD", "tls-order-pw"),
            ("PAYMENT_SERVICE_NATS_PASSWORD", "unused"),
            ("OPS_NATS_PASSWORD", "unused"),
            ("EVENTS_READER_NATS_PASSWORD", "unused"),
        ],
    );
    let url = nats.url().replace("nats://", "tls://");
    let password_file = password_file.display().to_string();
    let ca = pki.ca_file.display().to_string();
    let cert = pki.client.cert_file.display().to_string();
    let key = pki.client.key_file.display().to_string();
    let login = [
        ("NATS_USER", "order-service"),
        ("NATS_PASSWORD_FILE", password_file.as_str()),
        ("NATS_TLS_CA_FILE", ca.as_str()),
    ];
    let owned_login: Vec<(String, String)> = login
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();

    let mut with_cert = login.to_vec();
    with_cert.extend([
        ("NATS_TLS_CERT_FILE", cert.as_str()),
        ("NATS_TLS_KEY_FILE", key.as_str()),
    ]);
    let service = ServiceProcess::start(&workspace_binary("order-service"), &url, &with_cert).await;
    let mut orders = OrderServiceClient::connect(service.endpoint())
        .await
        .unwrap();
    orders
        .create_order(order_request("c-tls", 1, 5, "r-tls"))
        .await
        .unwrap();
    drop(service);

    let mut command = Command::new(workspace_binary("order-service"));
    command
        .env_clear()
        .env("NATS_URL", url)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .envs(owned_login)
        .current_dir(std::env::temp_dir());
    let out = output_within(command, CHILD_TIMEOUT).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a client without a certificate was let in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CertificateRequired"),
        "refused for its missing certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
