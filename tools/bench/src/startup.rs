//! `orderflow-bench startup`: start-to-SERVING time and idle memory of a
//! service binary.
//!
//! The clock starts just before the process is spawned and stops at the first
//! `grpc.health.v1.Health/Check` answer of SERVING for the whole server
//! (`""`), polled every millisecond, so it includes exec, configuration,
//! telemetry set-up, connecting to NATS, ensuring the streams and consumers,
//! and binding the port. After `idle` more seconds without any call, VmRSS
//! (resident memory) and VmHWM (its peak) are read from `/proc/<pid>/status`.
//! The process then gets SIGTERM and has 10 s to exit.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::process::{Child, Command};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::stats::round3;

/// One start of the binary.
#[derive(Clone, Debug, Serialize)]
pub struct StartupRun {
    /// Milliseconds from spawn to the first SERVING answer.
    pub start_to_serving_ms: f64,
    /// Resident memory after the idle wait, MiB.
    pub idle_rss_mib: f64,
    /// Peak resident memory until then, MiB.
    pub peak_rss_mib: f64,
}

/// Every run and their medians.
#[derive(Clone, Debug, Serialize)]
pub struct StartupReport {
    /// The binary.
    pub binary: String,
    /// Each run, in order (the first may create the streams).
    pub runs: Vec<StartupRun>,
    /// Median start-to-SERVING time, ms.
    pub median_start_to_serving_ms: f64,
    /// Median idle RSS, MiB.
    pub median_idle_rss_mib: f64,
}

/// A free loopback port: bind port 0 and let it go. Another process could
/// take it before the service binds it; the service then fails to start and
/// the run reports it.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn memory_of(pid: u32) -> Result<(f64, f64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    Ok((
        status_kib(&status, "VmRSS:").unwrap_or(0.0) / 1024.0,
        status_kib(&status, "VmHWM:").unwrap_or(0.0) / 1024.0,
    ))
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Asks for SERVING every millisecond until `deadline`, each time on a new
/// connection, as a probe does (kubelet, `grpc_health_probe`, `<service>
/// probe`). Reusing one connection would add the server's delayed answers on
/// a kept-alive connection (see docs/benchmarks.md) to the start-up time.
async fn wait_serving(
    addr: SocketAddr,
    child: &mut Child,
    deadline: Instant,
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(200));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status} before SERVING"));
        }
        if Instant::now() >= deadline {
            return Err("it did not report SERVING within 60 s".into());
        }
        if let Ok(channel) = endpoint.connect().await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|a| a.get_ref().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends SIGTERM (through `kill`, as this crate has no unsafe code to call
/// `kill(2)` itself) and waits up to 10 s, then kills.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Starts `binary` `runs` times, one after the other.
pub async fn run(binary: &Path, runs: usize, idle: Duration) -> Result<StartupReport, String> {
    if !binary.is_file() {
        return Err(format!(
            "{} is not a file; build it first (cargo build --release)",
            binary.display()
        ));
    }
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs.max(1) {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        let mut child = Command::new(binary)
            .env("GRPC_ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let serving = wait_serving(addr, &mut child, started + Duration::from_secs(60)).await;
        let elapsed = started.elapsed();
        if let Err(e) = serving {
            stop(&mut child).await;
            return Err(format!(
                "run {run}: {}: {e} (is NATS_URL set to a running nats-server with JetStream?)",
                binary.display()
            ));
        }
        tokio::time::sleep(idle).await;
        let memory = child.id().map(memory_of).transpose();
        stop(&mut child).await;
        let (rss, peak) = memory?.unwrap_or((0.0, 0.0));
        results.push(StartupRun {
            start_to_serving_ms: round3(elapsed.as_secs_f64() * 1000.0),
            idle_rss_mib: round3(rss),
            peak_rss_mib: round3(peak),
        });
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(StartupReport {
        binary: binary.display().to_string(),
        median_start_to_serving_ms: median(results.iter().map(|r| r.start_to_serving_ms).collect()),
        median_idle_rss_mib: median(results.iter().map(|r| r.idle_rss_mib).collect()),
        runs: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let status = "Name:\torder-service\nVmHWM:\t   11264 kB\nVmRSS:\t    9216 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(9216.0));
        assert_eq!(status_kib(status, "VmHWM:"), Some(11264.0));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_resident_memory() {
        let (rss, peak) = memory_of(std::process::id()).unwrap_or((0.0, 0.0));
        assert!(rss > 0.0 && peak >= rss, "rss {rss} peak {peak}");
    }
}
