//! What a service is configured with: the settings every service has,
//! assembled from each concern, and what `main` needs of a service's
//! configuration.
//!
//! [`CommonConfig::read`] hands the reader to each concern in turn (the NATS
//! connection, telemetry, transport security, authentication), each of which
//! reads its own variables, and reads itself only the serving settings that
//! belong to no concern (the gRPC address, the concurrency limit, the
//! shutdown timings, stream replicas, the consumers' ack wait).
//! [`common_vars`] lists all of their variables in `--help` order, and
//! [`ServiceConfig`] is what each service's own configuration implements.
//!
//! A module of its own, above the concerns and below `server` and
//! `main_loop`: in `config` it would make the leaf depend on every concern
//! that reads through it (the cycle this layout removes); in `main_loop` it
//! would close a cycle with `server`, which starts a service from a
//! [`CommonConfig`]; and in `server` each service's configuration would
//! come from the gRPC server's module, though reading it serves nothing
//! (`--help`, `migrate-subjects`, the tests' in-process services).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    auth::{self, Authenticator},
    config::{ConfigError, EnvReader, Lookup, Var},
    grpc_tls::{self, GrpcTransport},
    nats_config::{NATS_URL, NatsConnectConfig},
    telemetry::{self, TelemetryConfig},
};

/// `GRPC_MAX_CONCURRENT_CALLS`.
pub const GRPC_MAX_CONCURRENT_CALLS: Var = Var {
    name: "GRPC_MAX_CONCURRENT_CALLS",
    default: Some("1024"),
    help: "API calls worked on at once; beyond it calls are refused at once with RESOURCE_EXHAUSTED (health checks are never refused)",
};
/// `SHUTDOWN_TIMEOUT_SECS`.
pub const SHUTDOWN_TIMEOUT_SECS: Var = Var {
    name: "SHUTDOWN_TIMEOUT_SECS",
    default: Some("20"),
    help: "after SIGTERM, how long in-flight work may take before the process exits anyway",
};
/// `SHUTDOWN_DELAY_SECS`.
pub const SHUTDOWN_DELAY_SECS: Var = Var {
    name: "SHUTDOWN_DELAY_SECS",
    default: Some("0"),
    help: "after SIGTERM, keep answering calls this long while health reports NOT_SERVING, so load balancers (Kubernetes endpoints) stop routing first",
};
/// `STREAM_REPLICAS`.
pub const STREAM_REPLICAS: Var = Var {
    name: "STREAM_REPLICAS",
    default: Some("1"),
    help: "replicas of the JetStream streams and buckets this service creates (3 on a 3-node cluster)",
};
/// `CONSUMER_ACK_WAIT_SECS`.
pub const CONSUMER_ACK_WAIT_SECS: Var = Var {
    name: "CONSUMER_ACK_WAIT_SECS",
    default: Some("30"),
    help: "how long a message handed to a replica may stay unacknowledged before JetStream redelivers it (after a crash); keep it above a gateway call with its retries",
};

/// `TOKIO_WORKER_THREADS`: tokio's own variable, read here first so that a
/// bad value is reported like any other instead of panicking inside tokio.
pub const TOKIO_WORKER_THREADS: Var = Var {
    name: "TOKIO_WORKER_THREADS",
    default: None,
    help: "threads running the service's async work; unset: one per CPU the process may use, its cgroup CPU limit included (the 500m limit of deploy/k8s gives one)",
};

/// A `TOKIO_WORKER_THREADS` value, checked.
pub fn parse_worker_threads(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(String::from("expected a whole number from 1 to 1024")),
    }
}

/// The variables every service reads, given its `GRPC_ADDR` variable.
pub fn common_vars(grpc_addr: Var) -> Vec<Var> {
    let mut vars = vec![
        NATS_URL,
        grpc_addr,
        GRPC_MAX_CONCURRENT_CALLS,
        TOKIO_WORKER_THREADS,
    ];
    vars.extend(telemetry::vars());
    vars.extend([
        SHUTDOWN_TIMEOUT_SECS,
        SHUTDOWN_DELAY_SECS,
        STREAM_REPLICAS,
        CONSUMER_ACK_WAIT_SECS,
    ]);
    vars.extend(grpc_tls::vars());
    vars.extend(auth::vars());
    vars.extend(NatsConnectConfig::vars());
    vars
}

/// Settings every service has.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    /// Where and how the service connects to NATS.
    pub nats: NatsConnectConfig,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// API calls worked on at once before new ones are shed.
    pub max_concurrent_calls: usize,
    /// Telemetry settings.
    pub telemetry: TelemetryConfig,
    /// Longest drain after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long calls are still served after SIGTERM (health already
    /// NOT_SERVING).
    pub shutdown_delay: Duration,
    /// Replicas of the streams and buckets the service creates.
    pub stream_replicas: usize,
    /// The ack wait of the service's durable consumers.
    pub consumer_ack_wait: Duration,
    /// TLS, the plaintext health listener and reflection.
    pub grpc: GrpcTransport,
    /// Bearer-token verification; `None` when API calls are not
    /// authenticated.
    pub auth: Option<Arc<Authenticator>>,
}

impl CommonConfig {
    /// Reads the common variables, each concern its own; `service_name` is
    /// the default `OTEL_SERVICE_NAME`, `service_version` the service's own
    /// version.
    pub fn read(
        r: &mut EnvReader<'_>,
        grpc_addr: &Var,
        service_name: &str,
        service_version: &'static str,
    ) -> Option<Self> {
        let nats = NatsConnectConfig::read(r);
        let grpc_addr = r.parse_with(grpc_addr, |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| String::from("expected an IP address and port, like 0.0.0.0:50052"))
        });
        let max_concurrent_calls =
            r.parse_with(&GRPC_MAX_CONCURRENT_CALLS, |v| match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(String::from("expected a whole number from 1 to 1000000")),
            });
        // Only checked: `main_loop::run` built the runtime from it before
        // this reading, which puts a bad value in the one error message.
        let _ = r.parse_with(&TOKIO_WORKER_THREADS, parse_worker_threads);
        let telemetry = TelemetryConfig::read(r, service_name, service_version);
        let shutdown_timeout = r.parse_with(&SHUTDOWN_TIMEOUT_SECS, |v| match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 1 to 3600")),
        });
        let shutdown_delay = r.parse_with(&SHUTDOWN_DELAY_SECS, |v| match v.parse::<u64>() {
            Ok(s) if s <= 300 => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 0 to 300")),
        });
        let stream_replicas = r.parse_with(&STREAM_REPLICAS, |v| match v.parse::<usize>() {
            Ok(n) if (1..=5).contains(&n) => Ok(n),
            _ => Err(String::from("expected 1 to 5")),
        });
        let consumer_ack_wait = r.parse_with(&CONSUMER_ACK_WAIT_SECS, |v| match v.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(String::from("expected whole seconds from 1 to 3600")),
        });
        let grpc = GrpcTransport::read(r);
        let auth = Authenticator::read(r);
        Some(Self {
            nats: nats?,
            grpc_addr: grpc_addr?,
            grpc: grpc?,
            auth: auth?,
            max_concurrent_calls: max_concurrent_calls?,
            telemetry: telemetry?,
            shutdown_timeout: shutdown_timeout?,
            shutdown_delay: shutdown_delay?,
            stream_replicas: stream_replicas?,
            consumer_ack_wait: consumer_ack_wait?,
        })
    }
}

/// A service's configuration, as its binary reads it: everything
/// [`crate::main_loop`] needs to print `--help` and parse the environment.
pub trait ServiceConfig: Sized + Send + 'static {
    /// The binary's name: the default `OTEL_SERVICE_NAME` and the name the
    /// service connects to NATS with (which its inbox is named after).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Every variable the service reads.
    fn vars() -> Vec<Var>;
    /// Reads the configuration, reporting every bad variable at once.
    fn from_lookup(lookup: &dyn Lookup) -> Result<Self, ConfigError>;
    /// The settings every service has.
    fn common(&self) -> &CommonConfig;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{config::help, telemetry::LogFormat};

    const GRPC: Var = Var {
        name: "GRPC_ADDR",
        default: Some("0.0.0.0:50051"),
        help: "where gRPC listens",
    };

    fn read(pairs: &[(&str, &str)]) -> Result<CommonConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut r = EnvReader::new(&map);
        let config = CommonConfig::read(&mut r, &GRPC, "svc", "0.0.0");
        r.finish(config)
    }

    #[test]
    fn defaults_give_a_working_configuration() -> Result<(), ConfigError> {
        let config = read(&[])?;
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, "svc");
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        assert_eq!(config.consumer_ack_wait, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let Err(error) = read(&[
            ("NATS_URL", "http://x:4222"),
            ("GRPC_ADDR", "nowhere"),
            ("LOG_FORMAT", "xml"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]) else {
            panic!("bad configuration was accepted");
        };
        let text = error.to_string();
        for name in [
            "NATS_URL",
            "GRPC_ADDR",
            "LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert_eq!(error.problems.len(), 4);
    }

    #[test]
    fn a_url_list_is_a_cluster() -> Result<(), ConfigError> {
        let config = read(&[("NATS_URL", "nats://a:4222, nats://b:4222")])?;
        assert_eq!(config.nats.url, "nats://a:4222,nats://b:4222");
        Ok(())
    }

    #[test]
    fn a_bad_nats_url_is_reported_without_its_password() {
        let env = HashMap::from([("NATS_URL", "http://alice:s3cret@host:4222")]);
        let mut r = EnvReader::new(&env);
        let config = CommonConfig::read(&mut r, &GRPC, "svc", "0");
        let problems = r
            .finish(config)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.starts_with("NATS_URL:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("s3cret")),
            "{problems:?}"
        );
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let vars = common_vars(GRPC);
        let text = help("svc", "about", &vars);
        for var in &vars {
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| line.split_whitespace().next() == Some(var.name))
                .collect();
            assert_eq!(lines.len(), 1, "{} has one line in: {text}", var.name);
            match var.default {
                Some(default) => assert!(
                    lines[0].contains(&format!("[default: {default}]")),
                    "{} shows its default {default:?}: {}",
                    var.name,
                    lines[0]
                ),
                None => assert!(!lines[0].contains("[default:"), "{}", lines[0]),
            }
        }
        assert!(text.contains("[default: nats://127.0.0.1:4222]"));
    }
}
