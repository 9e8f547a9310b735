//! A three-node `nats-server` cluster with JetStream on loopback, for the
//! fault tests that lose a node.
//!
//! Each node is a real `nats-server` process with its own client port, route
//! port, monitoring port and JetStream store, routed to the two others. Nodes
//! are named (`-n`), so the `cluster.leader` that JetStream reports for a
//! stream maps back to a process this harness can kill and restart.
//!
//! The cluster counts as ready when every running node greets clients with
//! its own name, its monitoring endpoint's `/healthz` answers 200 (JetStream
//! has a meta leader and every stream and consumer the node holds is
//! current), and the meta leader's `/jsz` lists every other running node as
//! a current peer. So a started cluster places R3 streams at once, and a
//! restarted node has caught up when [`NatsCluster::restart`] returns.
//!
//! Like [`NatsServer`](crate::NatsServer), everything is synchronous so it
//! works from plain `#[test]`s and from inside any async runtime; dropping the
//! cluster kills every node and deletes the stores. `ORDERFLOW_TEST_NATS_URL`
//! does not apply: a cluster always starts its own processes.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::nats::{INSTALL_HINT, NATS_SERVER_BIN, read_info_line};

/// How many nodes a cluster has: the smallest that survives losing one.
pub const NODES: usize = 3;

/// How long a (re)started node has to become ready, JetStream included.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two readiness probes.
const READY_POLL: Duration = Duration::from_millis(50);

/// How often a whole start is retried when another process took one of the
/// ports between our picking them and the servers binding them.
const START_ATTEMPTS: usize = 3;

/// How many lines of a node's log a failure message shows.
const LOG_TAIL_LINES: usize = 30;

/// Makes cluster names unique within this test process.
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(0);

/// A three-node JetStream cluster on 127.0.0.1; killed and deleted on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// Owns every node's store and log; deleted on drop.
    dir: Option<TempDir>,
}

/// One `nats-server` of the cluster.
#[derive(Debug)]
struct Node {
    /// Its `server_name`, as JetStream reports leaders.
    name: String,
    /// The `cluster_name` shared by the three nodes.
    cluster_name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    /// The other nodes' route ports.
    peers: Vec<u16>,
    store_dir: PathBuf,
    log_path: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts three routed nodes with JetStream and waits until every one is
    /// ready (a meta leader is elected), so R3 streams can be created.
    ///
    /// # Panics
    ///
    /// Panics — failing the test — when `nats-server` is not on `PATH`, or the
    /// cluster does not form within 30 s (the message shows the nodes' logs).
    pub fn start() -> NatsCluster {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start() {
                Ok(cluster) => return cluster,
                // A node exited (typically a port taken meanwhile): new ports.
                Err(why) => last_failure = why,
            }
        }
        panic!(
            "the NATS cluster did not start after {START_ATTEMPTS} attempts; last:\n{last_failure}"
        );
    }

    fn try_start() -> Result<NatsCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("orderflow-nats-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for the cluster: {e}"));
        let id = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let cluster_name = format!("orderflow-test-{}-{id}", std::process::id());
        let ports = free_loopback_ports(NODES * 3);
        let route_ports: Vec<u16> = ports[NODES..NODES * 2].to_vec();
        let nodes = (0..NODES)
            .map(|i| Node {
                name: format!("{cluster_name}-n{i}"),
                cluster_name: cluster_name.clone(),
                client_port: ports[i],
                route_port: route_ports[i],
                monitor_port: ports[NODES * 2 + i],
                peers: route_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect(),
                store_dir: dir.path().join(format!("n{i}")).join("store"),
                log_path: dir.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster {
            nodes,
            dir: Some(dir),
        };
        // All three first: none becomes ready (no meta leader) on its own.
        for node in &mut cluster.nodes {
            node.spawn();
        }
        match cluster.wait_ready() {
            Ok(()) => Ok(cluster),
            Err(why) => Err(format!("{why}\n{}", cluster.logs())),
        }
    }

    /// Polls until every running node is ready and the meta leader sees the
    /// others as current peers, or 30 s have passed.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut waiting_for = Vec::new();
            for node in &mut self.nodes {
                if node.child.is_none() {
                    continue;
                }
                if let Some(status) = node.exited() {
                    return Err(format!(
                        "{} exited with {status} before it was ready",
                        node.name
                    ));
                }
                if !node.answers() {
                    waiting_for.push(format!("{} to answer and pass /healthz", node.name));
                }
            }
            if waiting_for.is_empty() {
                match self.meta_peers_current() {
                    Ok(()) => return Ok(()),
                    Err(why) => waiting_for.push(why),
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the NATS cluster was not ready within {READY_TIMEOUT:?}, waiting for: {}",
                    waiting_for.join("; ")
                ));
            }
            thread::sleep(READY_POLL);
        }
    }

    /// Whether the JetStream meta leader is one of the running nodes and
    /// lists every other running node as a current peer.
    fn meta_peers_current(&self) -> Result<(), String> {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let leader = running
            .iter()
            .find_map(|n| n.meta_cluster()?.get("leader")?.as_str().map(str::to_owned))
            .ok_or_else(|| String::from("a JetStream meta leader"))?;
        let leader_node = running
            .iter()
            .find(|n| n.name == leader)
            .ok_or_else(|| format!("the meta leader {leader} to be a running node"))?;
        let meta = leader_node
            .meta_cluster()
            .ok_or_else(|| format!("/jsz of the meta leader {leader}"))?;
        let current: Vec<&str> = meta
            .get("replicas")
            .and_then(|r| r.as_array())
            .map(|peers| {
                peers
                    .iter()
                    .filter(|p| p.get("current").and_then(|c| c.as_bool()) == Some(true))
                    .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&str> = running
            .iter()
            .filter(|n| n.name != leader && !current.contains(&n.name.as_str()))
            .map(|n| n.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the meta leader {leader} to see {} as current",
                missing.join(", ")
            ))
        }
    }

    /// The comma-separated client URLs of all three nodes, for `NATS_URL`.
    pub fn url(&self) -> String {
        (0..NODES)
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `index` alone.
    pub fn node_url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.node(index).client_port)
    }

    /// The `server_name` of node `index`, as JetStream names leaders.
    pub fn node_name(&self, index: usize) -> &str {
        &self.node(index).name
    }

    /// The index of the node called `name`, if it is one of ours.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Whether node `index` is running (not killed).
    pub fn is_running(&self, index: usize) -> bool {
        self.node(index).child.is_some()
    }

    /// The URLs of the running nodes only, comma-separated.
    pub fn running_url(&self) -> String {
        (0..NODES)
            .filter(|i| self.is_running(*i))
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node that leads JetStream stream `stream` now, asked
    /// of the running nodes; `None` while there is no leader (an election)
    /// or no such stream.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let js = async_nats::jetstream::new(self.client().await?);
        let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
        let leader = info.cluster?.leader?;
        self.node_index(&leader)
    }

    /// Moves the leadership of stream `stream` to node `to` (JetStream's
    /// leader stepdown, asking for `to` as the preferred server) and waits
    /// until `to` leads it.
    ///
    /// # Panics
    ///
    /// Panics when `to` does not lead the stream within 30 s.
    pub async fn move_stream_leader(&self, stream: &str, to: usize) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let preferred = self.node_name(to).to_owned();
        loop {
            let leader = self.stream_leader(stream).await;
            if leader == Some(to) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{preferred} did not become the leader of {stream} within {READY_TIMEOUT:?} \
                 (leader: {leader:?})"
            );
            if leader.is_some() {
                // A refusal (the preferred peer is not current yet) is
                // simply asked again.
                let _ = self
                    .request(
                        format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                        serde_json::json!({ "placement": { "preferred": preferred } }),
                    )
                    .await;
            }
            tokio::time::sleep(READY_POLL * 4).await;
        }
    }

    /// The index of the node that the client named `name` (the name it
    /// gave in CONNECT, e.g. `order-service`) is connected to, from each
    /// running node's `/connz`; `None` while it is connected nowhere.
    pub fn client_node(&self, name: &str) -> Option<usize> {
        (0..NODES).filter(|i| self.is_running(*i)).find(|i| {
            let Some((200, body)) = http_get(self.nodes[*i].monitor_port, "/connz?limit=1024")
            else {
                return false;
            };
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|connz| connz.get("connections")?.as_array().cloned())
                .is_some_and(|connections| {
                    connections
                        .iter()
                        .any(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
                })
        })
    }

    /// Sends a request to the running nodes and returns the answer's body.
    async fn request(&self, subject: String, body: serde_json::Value) -> Option<Vec<u8>> {
        let client = self.client().await?;
        let answer = client
            .request(subject, body.to_string().into_bytes().into())
            .await
            .ok()?;
        Some(answer.payload.to_vec())
    }

    /// A client of the running nodes.
    async fn client(&self) -> Option<async_nats::Client> {
        let servers: Vec<async_nats::ServerAddr> = (0..NODES)
            .filter(|i| self.is_running(*i))
            .filter_map(|i| self.node_url(i).parse().ok())
            .collect();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(servers)
            .await
            .ok()
    }

    /// Kills node `index` with SIGKILL, as a crash would, keeping its store.
    /// Killing a node that is down does nothing.
    pub fn kill(&mut self, index: usize) {
        self.node_mut(index).kill();
    }

    /// Starts node `index` again on its ports with its store (killing it
    /// first if it is running) and waits until it is ready: routed back into
    /// the cluster, with its streams caught up.
    ///
    /// # Panics
    ///
    /// Panics when the node is not ready within 30 s.
    pub fn restart(&mut self, index: usize) {
        let node = self.node_mut(index);
        node.kill();
        node.spawn();
        if let Err(why) = self.wait_ready() {
            panic!(
                "node {index} of the NATS cluster did not come back: {why}\n{}",
                self.logs()
            );
        }
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes
            .get(index)
            .unwrap_or_else(|| panic!("the cluster has nodes 0 to {}, not {index}", NODES - 1))
    }

    fn node_mut(&mut self, index: usize) -> &mut Node {
        self.nodes
            .get_mut(index)
            .unwrap_or_else(|| panic!("the cluster has nodes 0 to {}, not {index}", NODES - 1))
    }

    /// The end of every node's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- last lines of {} ({}) ---\n{}",
                    n.name,
                    n.log_path.display(),
                    n.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        // The logs go with the directory: show them to a failing test first.
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!("warning: could not delete {}: {e}", path.display());
            }
        }
    }
}

impl Node {
    /// Spawns the process; readiness is [`Node::wait_ready`]'s business.
    fn spawn(&mut self) {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()))
        };
        let (stdout, stderr) = (open(), open());
        let routes = self
            .peers
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(NATS_SERVER_BIN)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.client_port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(&self.store_dir)
            .args(["-n", &self.name])
            .args(["--cluster_name", &self.cluster_name])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.route_port),
            ])
            .args(["--routes", &routes])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`{NATS_SERVER_BIN}` was not found on PATH: {INSTALL_HINT}")
            }
            Err(e) => panic!("cannot run `{NATS_SERVER_BIN}`: {e}"),
        }
    }

    /// The exit status, if the process has exited on its own.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether the node greets clients with its own name and passes
    /// `/healthz`.
    fn answers(&self) -> bool {
        let client = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        // Our unique name appears in our server's INFO, never in another one's.
        let name_field = format!("\"server_name\":\"{}\"", self.name);
        read_info_line(client).is_some_and(|info| info.contains(&name_field))
            && http_get(self.monitor_port, "/healthz").is_some_and(|(status, _)| status == 200)
    }

    /// The `meta_cluster` object of the node's `/jsz`.
    fn meta_cluster(&self) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.monitor_port, "/jsz")?;
        if status != 200 {
            return None;
        }
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz.get("meta_cluster").cloned()
    }

    /// Sends SIGKILL and reaps the process, if there is one.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when it has already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let Ok(file) = File::open(&self.log_path) else {
            return format!("(no log at {})", self.log_path.display());
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }
}

/// `GET path` on the monitoring port: the status code and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // HTTP/1.0: the answer comes whole, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `count` distinct free ports on 127.0.0.1, held together while picked so
/// they differ, then released for the servers.
fn free_loopback_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("cannot read a bound port: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_forms_loses_a_node_and_takes_it_back() {
        let mut cluster = NatsCluster::start();
        assert_eq!(cluster.url().split(',').count(), NODES);
        for i in 0..NODES {
            assert_eq!(cluster.node_index(cluster.node_name(i)), Some(i));
        }

        // An R3 stream has a leader among our nodes.
        let js = crate::streams::jetstream(&cluster.url()).await;
        // On a busy machine the first R3 stream can take longer than one
        // API request waits (its Raft group is formed on three nodes), so
        // the creation (the same config each time) is retried until stored.
        crate::wait::wait_until("the R3 stream PROBE", Duration::from_secs(30), || async {
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: String::from("PROBE"),
                subjects: vec![String::from("probe.>")],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .is_ok()
        })
        .await;
        let leader = cluster.stream_leader("PROBE").await.unwrap();
        let other = (leader + 1) % NODES;
        cluster.move_stream_leader("PROBE", other).await;
        assert_eq!(cluster.stream_leader("PROBE").await, Some(other));
        let named = async_nats::ConnectOptions::new()
            .name("probe-client")
            .connect(cluster.node_url(other))
            .await
            .unwrap();
        named.flush().await.unwrap();
        assert_eq!(cluster.client_node("probe-client"), Some(other));
        drop(named);
        let leader = other;

        cluster.kill(leader);
        assert!(!cluster.is_running(leader));
        assert!(!cluster.running_url().contains(&cluster.node_url(leader)));
        cluster.restart(leader);
        assert!(cluster.is_running(leader));
        assert!(cluster.nodes[leader].answers());

        // Taken back, not merely answering: the node is routed to both
        // others again, and the stream it used to lead counts it as a
        // current replica when asked through that node alone.
        let others: Vec<&str> = (0..NODES)
            .filter(|i| *i != leader)
            .map(|i| cluster.node_name(i))
            .collect();
        crate::wait_until(
            "the restarted node's /routez to list routes to both others",
            READY_TIMEOUT,
            || async {
                let routed = routed_to(&cluster.nodes[leader]);
                others.iter().all(|o| routed.iter().any(|name| name == o))
            },
        )
        .await;
        let restarted = cluster.node_name(leader).to_owned();
        let through_it = async_nats::jetstream::new(
            async_nats::connect(cluster.node_url(leader))
                .await
                .expect("a client connects to the restarted node"),
        );
        crate::wait_until(
            "the restarted node to be a current replica of PROBE",
            READY_TIMEOUT,
            || async {
                let Ok(mut stream) = through_it.get_stream("PROBE").await else {
                    return false;
                };
                let Ok(info) = stream.info().await else {
                    return false;
                };
                let Some(group) = info.cluster.clone() else {
                    return false;
                };
                let leader = group.leader.unwrap_or_default();
                let current = |name: &str| {
                    leader == name
                        || group
                            .replicas
                            .iter()
                            .any(|p| p.name == name && p.current && !p.offline)
                };
                current(&restarted) && others.iter().all(|o| current(o))
            },
        )
        .await;
    }

    /// The `server_name`s the node's `/routez` lists routes to; none while
    /// it does not answer.
    fn routed_to(node: &Node) -> Vec<String> {
        let Some((200, body)) = http_get(node.monitor_port, "/routez") else {
            return Vec::new();
        };
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .as_ref()
            .and_then(|routez| routez.get("routes"))
            .and_then(|r| r.as_array())
            .map(|routes| {
                routes
                    .iter()
                    .filter_map(|r| r.get("remote_name")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}
