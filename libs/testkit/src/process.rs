//! Running a service binary as a child process: what signal and exit-code
//! tests need, where an in-process service would not do.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::wait_until;

/// The path of `binary` (`order-service` or `payment-service`), built by
/// `cargo build --workspace --bins` into the target directory this test
/// executable runs from (`target/<profile>/deps/<test>` →
/// `target/<profile>/<binary>`).
///
/// For tests outside the binary's own package, where Cargo sets no
/// `CARGO_BIN_EXE_<name>`.
///
/// # Panics
///
/// Panics, saying which command builds it, when the binary is missing.
pub fn workspace_binary(binary: &str) -> String {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(|dir| dir.join(binary))
        })
        .unwrap_or_else(|| panic!("cannot tell where the test executable runs from"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests \
         (scripts/test.sh does)",
        path.display()
    );
    path.display().to_string()
}

/// A free loopback address (bound, then released for the child to take).
#[allow(clippy::expect_used)]
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A service binary running as a child process; killed on drop.
pub struct ServiceProcess {
    child: Child,
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    /// Its standard output (the logs), kept for assertions.
    log: tempfile::NamedTempFile,
}

impl ServiceProcess {
    /// Starts `binary` on `nats_url` with `extra` variables and waits until
    /// its overall health is SERVING.
    #[allow(clippy::expect_used)]
    pub async fn start(binary: &str, nats_url: &str, extra: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let log = tempfile::NamedTempFile::new().expect("a temporary log file");
        let stdout = log.reopen().expect("the log file opens for writing");
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NATS_URL", nats_url)
            .env("GRPC_ADDR", addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .spawn()
            .expect("the service binary starts");
        let process = Self { child, addr, log };
        // A TLS server is probed on its plaintext health listener, as
        // Kubernetes does.
        let endpoint = match extra.iter().find(|(k, _)| *k == "GRPC_HEALTH_ADDR") {
            Some((_, health)) => format!("http://{health}"),
            None => format!("http://{addr}"),
        };
        wait_until(
            &format!("{binary} to be SERVING"),
            Duration::from_secs(20),
            || {
                let endpoint = endpoint.clone();
                async move {
                    let Ok(channel) = tonic::transport::Channel::from_shared(endpoint) else {
                        return false;
                    };
                    let Ok(channel) = channel.connect().await else {
                        return false;
                    };
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(HealthCheckRequest::default())
                        .await
                        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
                }
            },
        )
        .await;
        process
    }

    /// `http://addr` for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends SIGTERM, as Kubernetes does.
    #[allow(clippy::expect_used)]
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would: nothing is
    /// drained or acked. Returns once it has exited.
    pub fn kill(&mut self) {
        // Fails only when it has already exited, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (up to `timeout`) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => panic!("the service did not exit within {timeout:?}"),
            }
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
