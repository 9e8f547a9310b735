//! The shipped configuration: `--help` lists the NATS credentials without a
//! secret default, and `deploy/nats` passes `nats-server -t`.

use super::*;

#[tokio::test]
async fn help_lists_the_nats_credentials_without_any_secret_default() {
    for binary in ["order-service", "payment-service"] {
        let mut command = Command::new(workspace_binary(binary));
        command
            .arg("--help")
            .env_clear()
            .env("NATS_PASSWORD", "hunter2-from-env");
        let out = output_within(command, CHILD_TIMEOUT).await;
        let help = String::from_utf8_lossy(&out.stdout);
        for var in [
            "NATS_USER",
            "NATS_PASSWORD_FILE",
            "NATS_TOKEN_FILE",
            "NATS_NKEY_SEED_FILE",
            "NATS_CREDS_FILE",
            "NATS_TLS_CA_FILE",
        ] {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{var} ")))
                .unwrap_or_else(|| panic!("{binary} --help does not list {var}:\n{help}"));
            assert!(!line.contains("[default:"), "{line}");
        }
        assert!(!help.contains("hunter2"));
    }
}

#[tokio::test]
async fn the_deploy_nats_configuration_is_valid() {
    let mut command = Command::new("nats-server");
    command
        .args(["-t", "-c"])
        .arg(deploy_file("nats/nats-server.conf"))
        .envs([
            ("ORDER_SERVICE_NATS_PASSWORD", "a"),
            ("PAYMENT_SERVICE_NATS_PASSWORD", "b"),
            ("OPS_NATS_PASSWORD", "c"),
            ("EVENTS_READER_NATS_PASSWORD", "d"),
        ]);
    let out = output_within(command, CHILD_TIMEOUT).await;
    assert!(
        out.status.success(),
        "nats-server -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
