//! The bench against a secured deployment, end to end: a real nats-server
//! running the users and permissions of `deploy/nats/auth.conf` behind
//! mutual TLS, both real service binaries with mutual TLS on their API,
//! JWT authentication and their own NATS users, and the real bench binary
//! with its security flags. It runs sagas and the baseline through all of
//! it and says so in its report; left without its token, its client
//! certificate or the right NATS password, it stops at once with a message
//! naming what to check, and never prints a secret.
//!
//! Needs `cargo build --workspace --bins` first (scripts/test.sh does): the
//! services are the built binaries, as in a deployment.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{path::Path, process::Output, time::Duration};

use orderflow_testkit::{
    NatsServer,
    pki::TestPki,
    process::{ServiceProcess, free_addr, workspace_binary},
};
use serde_json::{Value, json};

const ISSUER: &str = "https://bench.orderflow.test";
const AUDIENCE: &str = "orderflow";
/// How long one bench run may take; far above what it needs.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A secured deployment: the broker, both services, and every file the
/// bench needs to reach them.
struct Deployment {
    pki: TestPki,
    nats: NatsServer,
    order: ServiceProcess,
    _payment: ServiceProcess,
    files: tempfile::TempDir,
    secrets: Vec<String>,
}

impl Deployment {
    async fn start() -> Self {
        let pki = TestPki::generate();
        let files = tempfile::tempdir().unwrap();
        let nonce = std::process::id();
        let passwords = [
            ("order-service", format!("order-pw-{nonce}-Zq")),
            ("payment-service", format!("payment-pw-{nonce}-Zq")),
            ("ops", format!("ops-pw-{nonce}-Zq")),
            ("wrong", format!("wrong-pw-{nonce}-Zq")),
        ];
        for (user, password) in &passwords {
            write(
                files.path(),
                &format!("{user}.pw"),
                &format!("{password}\n"),
            );
        }
        let jwt_secret = format!("bench-test-secret-that-is-long-enough-{nonce}");
        write(files.path(), "jwt-secret", &jwt_secret);
        let token = mint(&files.path().join("jwt-secret"));
        write(files.path(), "token", &format!("{token}\n"));

        // Mutual TLS to NATS too, so that every flag of the bench is used.
        let tls = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
            path(&pki.server.cert_file),
            path(&pki.server.key_file),
            path(&pki.ca_file),
        );
        let auth = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/auth.conf"),
        )
        .unwrap();
        // nats-server refuses to start while a password variable of the
        // file is unset: the users this test does not log in as get one too.
        let mut env: Vec<(String, String)> = password_variables(&auth)
            .into_iter()
            .map(|var| {
                let value = format!("{}-pw-{nonce}-Zq", var.to_lowercase());
                (var, value)
            })
            .collect();
        for (var, user) in [
            ("ORDER_SERVICE_NATS_PASSWORD", 0),
            ("PAYMENT_SERVICE_NATS_PASSWORD", 1),
            ("OPS_NATS_PASSWORD", 2),
        ] {
            let slot = env
                .iter_mut()
                .find(|(name, _)| name == var)
                .unwrap_or_else(|| panic!("deploy/nats/auth.conf has no ${var}"));
            slot.1.clone_from(&passwords[user].1);
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let nats = NatsServer::start_with_config(&format!("{tls}{auth}"), &env);
        let start = |name: &'static str| {
            let (pki, files, url) = (&pki, files.path(), nats.url());
            async move {
                let health = free_addr().to_string();
                let env = [
                    ("GRPC_TLS_CERT_FILE", path(&pki.server.cert_file)),
                    ("GRPC_TLS_KEY_FILE", path(&pki.server.key_file)),
                    ("GRPC_TLS_CLIENT_CA_FILE", path(&pki.ca_file)),
                    ("GRPC_HEALTH_ADDR", health),
                    ("AUTH_JWT_ISSUER", ISSUER.to_owned()),
                    ("AUTH_JWT_AUDIENCE", AUDIENCE.to_owned()),
                    ("AUTH_JWT_SECRET_FILE", path(&files.join("jwt-secret"))),
                    ("NATS_USER", name.to_owned()),
                    (
                        "NATS_PASSWORD_FILE",
                        path(&files.join(format!("{name}.pw"))),
                    ),
                    ("NATS_TLS_CA_FILE", path(&pki.ca_file)),
                    ("NATS_TLS_CERT_FILE", path(&pki.client.cert_file)),
                    ("NATS_TLS_KEY_FILE", path(&pki.client.key_file)),
                ];
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                ServiceProcess::start(&workspace_binary(name), &url, &env).await
            }
        };
        let order = start("order-service").await;
        let payment = start("payment-service").await;
        let mut secrets: Vec<String> = passwords.into_iter().map(|(_, p)| p).collect();
        secrets.extend([jwt_secret, token]);
        Self {
            pki,
            nats,
            order,
            _payment: payment,
            files,
            secrets,
        }
    }

    fn file(&self, name: &str) -> String {
        path(&self.files.path().join(name))
    }

    /// The bench's flags for this deployment, every one of them right.
    fn flags(&self) -> Vec<(&'static str, String)> {
        vec![
            ("--target", format!("https://{}", self.order.addr)),
            ("--nats-url", self.nats.url()),
            ("--tls-ca-file", path(&self.pki.ca_file)),
            ("--tls-cert-file", path(&self.pki.client.cert_file)),
            ("--tls-key-file", path(&self.pki.client.key_file)),
            ("--tls-domain", "localhost".to_owned()),
            ("--token-file", self.file("token")),
            ("--nats-user", "ops".to_owned()),
            ("--nats-password-file", self.file("ops.pw")),
            ("--nats-tls-ca-file", path(&self.pki.ca_file)),
            ("--nats-tls-cert-file", path(&self.pki.client.cert_file)),
            ("--nats-tls-key-file", path(&self.pki.client.key_file)),
        ]
    }

    /// Runs a short bench with `flags`, and checks that no secret of the
    /// deployment is in what it printed.
    async fn bench(&self, flags: &[(&str, String)]) -> (Output, String) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow-bench"));
        command
            .args([
                "--count",
                "20",
                "--concurrency",
                "4",
                "--warmup",
                "200ms",
                "--baseline",
                "--baseline-duration",
                "500ms",
                "--json",
                "--quiet",
            ])
            .kill_on_drop(true);
        for (flag, value) in flags {
            command.args([*flag, value.as_str()]);
        }
        let output = tokio::time::timeout(RUN_LIMIT, command.output())
            .await
            .expect("the bench ends")
            .expect("the bench runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in &self.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret was printed: {text}"
            );
        }
        (output, text)
    }
}

/// The `$..._NATS_PASSWORD` variables a nats-server configuration names.
fn password_variables(config: &str) -> Vec<String> {
    let mut vars: Vec<String> = config
        .split('$')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| name.ends_with("_NATS_PASSWORD"))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A token signed by scripts/mint-token.py, as bench.sh --secure mints it.
fn mint(secret_file: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mint-token.py");
    let output = std::process::Command::new("python3")
        .args([script, "--secret-file"])
        .arg(secret_file)
        .args(["--issuer", ISSUER, "--audience", AUDIENCE])
        .args(["--subject", "orderflow-bench"])
        .output()
        .expect("python3 runs scripts/mint-token.py");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn without(flags: &[(&'static str, String)], left_out: &[&str]) -> Vec<(&'static str, String)> {
    flags
        .iter()
        .filter(|(flag, _)| !left_out.contains(flag))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_sagas_and_its_baseline_through_mutual_tls_a_token_and_nats_logins() {
    let deployment = Deployment::start().await;
    let (output, text) = deployment.bench(&deployment.flags()).await;
    assert!(output.status.success(), "the secured run failed: {text}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["security"],
        json!({
            "mode": "secure",
            "grpc": "mtls",
            "bearer_token": true,
            "nats_auth": "user and password",
            "nats_tls": "mtls",
        }),
        "{report}"
    );
    assert_eq!(report["sagas_completed"], json!(20), "{report}");
    assert_eq!(report["errors_total"], json!(0), "{report}");
    assert_eq!(report["sagas_unfinished"], json!(0), "{report}");
    // The baseline published on the same secured broker, logged in as ops.
    assert!(
        report["baseline_publish_rps"].as_f64().unwrap_or_default() > 0.0,
        "{report}"
    );
    assert_eq!(report["baseline"]["errors"], json!({}), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_token_certificate_or_nats_password_the_bench_stops_saying_what_to_check() {
    let deployment = Deployment::start().await;
    let all = deployment.flags();
    let mut wrong_password = without(&all, &["--nats-password-file"]);
    wrong_password.push(("--nats-password-file", deployment.file("wrong.pw")));
    let cases = [
        (
            "no token",
            without(&all, &["--token-file"]),
            vec!["UNAUTHENTICATED", "--token-file"],
        ),
        (
            "no client certificate",
            without(&all, &["--tls-cert-file", "--tls-key-file"]),
            vec!["refused the TLS connection", "--tls-cert-file"],
        ),
        (
            "plaintext to the TLS port",
            without(
                &all,
                &[
                    "--target",
                    "--tls-ca-file",
                    "--tls-cert-file",
                    "--tls-key-file",
                    "--tls-domain",
                ],
            )
            .into_iter()
            .chain([("--target", format!("http://{}", deployment.order.addr))])
            .collect(),
            vec!["plaintext", "https://"],
        ),
        (
            "a wrong NATS password",
            wrong_password,
            vec!["cannot connect to NATS", "--nats-password-file"],
        ),
        (
            "no NATS login",
            without(&all, &["--nats-user", "--nats-password-file"]),
            vec!["cannot connect to NATS", "--nats-user"],
        ),
    ];
    for (what, flags, expected) in cases {
        let (output, text) = deployment.bench(&flags).await;
        assert!(!output.status.success(), "{what}: the bench ran: {text}");
        for needle in expected {
            assert!(
                text.contains(needle),
                "{what}: the error does not say {needle:?}: {text}"
            );
        }
    }
}
