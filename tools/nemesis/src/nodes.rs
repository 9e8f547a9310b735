//! The three NATS nodes, each in its namespace (see `net`), clustered with
//! JetStream, and their readiness.

use std::{path::Path, time::Duration};

use crate::{http, net::Net, process::Proc};

/// Client port of every node (each has its own address).
pub const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;

/// The `nats-server` processes of the run.
pub fn processes(net: &Net, nodes: usize, dir: &Path) -> std::io::Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for i in 0..nodes {
        let ip = net.node_ip(i);
        let routes: Vec<String> = (0..nodes)
            .filter(|&j| j != i)
            .map(|j| format!("\"nats://{}:{CLUSTER_PORT}\"", net.node_ip(j)))
            .collect();
        let store = dir.join(format!("nats-{i}"));
        std::fs::create_dir_all(&store)?;
        // Pings every second, two missed: a partitioned peer or client is
        // noticed in seconds, as a real deployment tunes it, not after the
        // default two minutes.
        let config = format!(
            "server_name: n{i}\n\
             listen: \"{ip}:{CLIENT_PORT}\"\n\
             http: \"{ip}:{MONITOR_PORT}\"\n\
             ping_interval: \"1s\"\n\
             ping_max: 2\n\
             write_deadline: \"2s\"\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             cluster {{\n  name: nemesis\n  listen: \"{ip}:{CLUSTER_PORT}\"\n  routes: [{}]\n}}\n",
            store.display(),
            routes.join(", ")
        );
        let config_path = dir.join(format!("nats-{i}.conf"));
        std::fs::write(&config_path, config)?;
        let mut argv = net.exec_in(i);
        argv.extend([
            String::from("nats-server"),
            String::from("-c"),
            config_path.display().to_string(),
        ]);
        procs.push(Proc::new(
            &format!("nats-{i}"),
            argv,
            Vec::new(),
            dir.join(format!("nats-{i}.log")),
        ));
    }
    Ok(procs)
}

/// `NATS_URL` for the services: every node.
pub fn client_urls(net: &Net, nodes: usize) -> String {
    (0..nodes)
        .map(|i| format!("nats://{}:{CLIENT_PORT}", net.node_ip(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether node `i` says it is healthy: connected to its cluster, with a
/// JetStream meta leader and every stream it holds current.
pub async fn healthy(net: &Net, i: usize) -> bool {
    let url = format!("http://{}:{MONITOR_PORT}/healthz", net.node_ip(i));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), http::get(&url)).await,
        Ok(Ok((200, _)))
    )
}
