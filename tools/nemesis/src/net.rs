//! Real network partitions: each NATS node in a network namespace of its
//! own, joined to the others and to the host by a veth pair on one bridge.
//!
//! Why namespaces and not a TCP proxy on every link: a NATS cluster learns
//! its peers' route addresses from each other (gossip) and dials them
//! directly, so a proxy in the middle of the configured routes does not see
//! every route; and a proxy cuts TCP cleanly, where a real partition leaves
//! both ends waiting on a silent peer. Taking a node's host-side veth down
//! is that: its routes and its clients' connections stop carrying packets,
//! and each end learns it only from its own ping timeouts.
//!
//! Needs root (`ip netns`, `ip link`). Everything is named after one
//! prefix, removed on drop and before creating, so a killed run leaves
//! nothing that breaks the next.

use std::{net::Ipv4Addr, process::Command};

/// Why the network could not be set up or changed.
#[derive(Debug, thiserror::Error)]
#[error("`ip {args}` failed: {detail} (the nemesis needs root for network namespaces)")]
pub struct NetError {
    args: String,
    detail: String,
}

/// The namespaces, veths and bridge of one run.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    subnet: u8,
    nodes: usize,
}

impl Net {
    /// Creates `nodes` namespaces on a bridge, node `i` at
    /// `10.213.<subnet>.<i + 1>` and the host at `.254`.
    pub fn create(nodes: usize) -> Result<Self, NetError> {
        // One run at a time per pid; the subnet keeps two runs apart.
        let subnet = u8::try_from(std::process::id() % 200 + 20).unwrap_or(20);
        let net = Net {
            prefix: format!("ofn{subnet}"),
            subnet,
            nodes,
        };
        net.remove();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.host_ip()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let (ns, host, inner) = (net.namespace(i), net.host_veth(i), net.inner_veth(i));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &bridge])?;
            ip(&["link", "set", &host, "up"])?;
            let addr = format!("{}/24", net.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s address.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, u8::try_from(i + 1).unwrap_or(1))
    }

    fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_in(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace(i)]
            .map(String::from)
            .to_vec()
    }

    /// Cuts node `i` from the other nodes and from every client.
    pub fn partition(&self, i: usize) -> Result<(), NetError> {
        ip(&["link", "set", &self.host_veth(i), "down"])
    }

    /// Joins node `i` to the others again.
    pub fn heal(&self, i: usize) -> Result<(), NetError> {
        ip(&["link", "set", &self.host_veth(i), "up"])?;
        // A bridge port that comes up forwards at once (no STP here).
        Ok(())
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }
    fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }
    fn host_veth(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }
    fn inner_veth(&self, i: usize) -> String {
        format!("{}v{i}", self.prefix)
    }

    /// Deleting a namespace deletes its veth, and with it the host end.
    fn remove(&self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.host_veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let failed = |detail: String| NetError {
        args: args.join(" "),
        detail,
    };
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}
