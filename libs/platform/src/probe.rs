//! `<service> probe`: a gRPC health check built into every binary.
//!
//! Container images carry nothing but the binary, so Docker's `HEALTHCHECK`
//! and anyone without `grpc_health_probe` run the binary itself:
//!
//! ```text
//! order-service probe [--addr HOST:PORT] [--service NAME] [--timeout-ms N]
//! ```
//!
//! It asks `grpc.health.v1.Health/Check` (tonic-health's client) and exits 0
//! only when the answer is SERVING; 1 when it is anything else or the call
//! fails; 2 for bad arguments. The address defaults to `GRPC_HEALTH_ADDR`
//! (the plaintext health listener a TLS server keeps for probes), else
//! `GRPC_ADDR`, with an unspecified host (`0.0.0.0`, `[::]`) replaced by
//! loopback. The probe speaks plaintext, as the kubelet's gRPC probe does.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The server to ask.
    pub addr: SocketAddr,
    /// The health service name (`""` is the whole server).
    pub service: String,
    /// How long to wait for the answer, connection included.
    pub timeout: Duration,
}

/// The usage line.
pub fn usage(binary: &str) -> String {
    format!(
        "Usage: {binary} probe [--addr HOST:PORT] [--service NAME] [--timeout-ms N]\n\
         Exits 0 when the gRPC health check answers SERVING, 1 otherwise, 2 on bad arguments.\n\
         --addr defaults to GRPC_HEALTH_ADDR, else GRPC_ADDR (0.0.0.0 becomes 127.0.0.1); health is probed in plaintext; --service defaults to \"\" (the whole server)."
    )
}

/// Parses the arguments after `probe`; `default_addr` is `GRPC_ADDR` or the
/// service's default.
pub fn parse(args: &[String], default_addr: &str) -> Result<Probe, String> {
    let mut addr = default_addr.to_owned();
    let mut service = String::new();
    let mut timeout = Duration::from_secs(2);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--service" => service = value()?,
            "--timeout-ms" => {
                let ms = value()?;
                timeout = ms
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("--timeout-ms must be a positive number, got {ms:?}"))?;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let mut addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:50051"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(Probe {
        addr,
        service,
        timeout,
    })
}

/// Asks the server and prints the answer; the exit code says SERVING or not.
pub async fn run(probe: &Probe) -> ExitCode {
    let ask = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", probe.addr))
            .map_err(|e| e.to_string())?
            .connect_timeout(probe.timeout);
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: probe.service.clone(),
            })
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
        Ok::<_, String>(answer.into_inner().status())
    };
    match tokio::time::timeout(probe.timeout, ask).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("probe of {} failed: {error}", probe.addr);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "probe of {} timed out after {:?}",
                probe.addr, probe.timeout
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_to_loopback_on_the_service_port() -> Result<(), String> {
        let probe = parse(&[], "0.0.0.0:50051")?;
        assert_eq!(probe.addr, "127.0.0.1:50051".parse().map_err(|_| "addr")?);
        assert_eq!(probe.service, "");
        Ok(())
    }

    #[test]
    fn flags_override_the_defaults() -> Result<(), String> {
        let probe = parse(
            &args(&[
                "--addr",
                "10.0.0.1:9",
                "--service",
                "liveness",
                "--timeout-ms",
                "500",
            ]),
            "0.0.0.0:50051",
        )?;
        assert_eq!(probe.addr.port(), 9);
        assert_eq!(probe.service, "liveness");
        assert_eq!(probe.timeout, Duration::from_millis(500));
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&args(&["--addr"]), "0.0.0.0:1").is_err());
        assert!(parse(&args(&["--addr", "nowhere"]), "0.0.0.0:1").is_err());
        assert!(parse(&args(&["--timeout-ms", "0"]), "0.0.0.0:1").is_err());
        assert!(parse(&args(&["--bogus"]), "0.0.0.0:1").is_err());
    }
}
