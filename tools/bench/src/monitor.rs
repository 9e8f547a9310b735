//! Reading nats-server's monitoring endpoint (`nats-server -m PORT`):
//! `GET /varz`, of which the bench needs four counters.
//!
//! The request is a hand-written HTTP/1.0 GET over a tokio `TcpStream`. The
//! bench needs one plain-text GET to a loopback port twice per run; an HTTP
//! client crate (hyper-util, reqwest) would add a dependency tree and compile
//! time for that, while HTTP/1.0 without keep-alive is simple enough to speak
//! by hand: the server answers without chunked encoding and closes the
//! connection, so the body is whatever follows the header up to EOF.
//!
//! What the counters mean, from nats-server's `server/client.go` (v2.15):
//! `in_msgs` counts messages the server read from client (and route, leaf)
//! connections, that is everything clients published, including JetStream
//! API requests, acks and pull requests; messages made inside the server
//! (JetStream deliveries, API replies) are not "in". `out_msgs` counts every
//! delivery to a subscription that is not internal to the server: a message
//! a client received. The byte counters count a message's headers plus
//! payload, without its subject, reply subject or protocol line
//! (`len(msg) - CRLF` in `processInboundClientMsg` and `deliverMsg`).

use std::{fmt, time::Duration};

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// How long one GET may take, connect to EOF.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read; `/varz` is a few kilobytes.
const MAX_RESPONSE: u64 = 4 << 20;

/// The counters of `/varz` the bench reads (the endpoint has many more).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Varz {
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Messages delivered to clients.
    pub out_msgs: u64,
    /// Header and payload bytes of `in_msgs`.
    pub in_bytes: u64,
    /// Header and payload bytes of `out_msgs`.
    pub out_bytes: u64,
}

impl Varz {
    /// The counts from `earlier` to `self`. The counters only grow while the
    /// server runs; a smaller value (a restarted server) reads as 0.
    pub fn since(&self, earlier: &Varz) -> Varz {
        Varz {
            in_msgs: self.in_msgs.saturating_sub(earlier.in_msgs),
            out_msgs: self.out_msgs.saturating_sub(earlier.out_msgs),
            in_bytes: self.in_bytes.saturating_sub(earlier.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(earlier.out_bytes),
        }
    }
}

/// Where the monitoring endpoint listens: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorUrl {
    host: String,
    port: u16,
    /// A path prefix without the trailing slash (empty for none).
    prefix: String,
}

impl fmt::Display for MonitorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
        }
    }
}

impl MonitorUrl {
    /// Parses `http://127.0.0.1:8222` (port 80 when none is given). Only
    /// plain HTTP: nats-server's monitoring port speaks HTTPS only with
    /// `--https_port`, which a benchmark has no reason to use.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--nats-monitor-url {url:?}: {why}");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (e.g. http://127.0.0.1:8222)"))?;
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port, like [::1], has colons inside the brackets.
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// Reads the counters of `/varz`.
    pub async fn varz(&self) -> Result<Varz, String> {
        let body = self.get(&format!("{}/varz", self.prefix)).await?;
        parse_varz(&body).map_err(|e| format!("{self}/varz: {e}"))
    }

    /// `GET path`, the body of a 200 answer.
    async fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let exchange = async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\n\r\n",
                self.host, self.port
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("cannot send the request: {e}"))?;
            let mut raw = Vec::new();
            (&mut stream)
                .take(MAX_RESPONSE)
                .read_to_end(&mut raw)
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?;
            Ok::<_, String>(raw)
        };
        let raw = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{self}{path}: no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("{self}{path}: {e}"))?;
        response_body(&raw)
            .map(<[u8]>::to_vec)
            .map_err(|e| format!("{self}{path}: {e}"))
    }
}

/// The body of an HTTP/1.x answer, if its status is 200.
fn response_body(raw: &[u8]) -> Result<&[u8], String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (version, status) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("not an HTTP/1 answer: {status_line:?}"));
    }
    if status != Some("200") {
        return Err(format!("the server answered {status_line:?}"));
    }
    Ok(&raw[end + 4..])
}

/// The four counters of a `/varz` body; every other field is ignored.
fn parse_varz(body: &[u8]) -> Result<Varz, String> {
    serde_json::from_slice(body).map_err(|e| format!("not the JSON of /varz: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of nats-server 2.15's answer, shortened.
    const VARZ: &str = r#"{
      "server_id": "NB...", "version": "2.15.1", "now": "2026-01-01T00:00:00Z",
      "jetstream": {"config": {"max_memory": 1}},
      "in_msgs": 1234567, "out_msgs": 2345678,
      "in_bytes": 987654321, "out_bytes": 876543210,
      "slow_consumers": 0, "subscriptions": 42
    }"#;

    #[test]
    fn the_four_counters_are_read_and_the_rest_ignored() {
        assert_eq!(
            parse_varz(VARZ.as_bytes()),
            Ok(Varz {
                in_msgs: 1_234_567,
                out_msgs: 2_345_678,
                in_bytes: 987_654_321,
                out_bytes: 876_543_210,
            })
        );
    }

    #[test]
    fn a_body_without_the_counters_is_an_error() {
        assert!(parse_varz(br#"{"in_msgs": 1, "out_msgs": 2}"#).is_err());
        assert!(parse_varz(b"<html>not found</html>").is_err());
        assert!(
            parse_varz(br#"{"in_msgs": -1, "out_msgs": 2, "in_bytes": 3, "out_bytes": 4}"#)
                .is_err()
        );
    }

    #[test]
    fn the_body_of_a_200_answer_follows_the_header() {
        let raw =
            format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nDate: x\r\n\r\n{VARZ}");
        let body = response_body(raw.as_bytes()).map(|b| b.to_vec());
        assert_eq!(body, Ok(VARZ.as_bytes().to_vec()));
        assert!(response_body(b"HTTP/1.1 404 Not Found\r\n\r\nnope").is_err());
        assert!(response_body(b"HTTP/1.0 200 OK\r\nContent-Type: x").is_err());
        assert!(response_body(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn counts_since_an_earlier_reading() {
        let before = Varz {
            in_msgs: 10,
            out_msgs: 20,
            in_bytes: 1000,
            out_bytes: 2000,
        };
        let after = Varz {
            in_msgs: 110,
            out_msgs: 220,
            in_bytes: 11_000,
            out_bytes: 22_000,
        };
        assert_eq!(
            after.since(&before),
            Varz {
                in_msgs: 100,
                out_msgs: 200,
                in_bytes: 10_000,
                out_bytes: 20_000,
            }
        );
        assert_eq!(before.since(&after), Varz::default());
    }

    #[test]
    fn monitor_urls() {
        let url = MonitorUrl::parse("http://127.0.0.1:8222");
        assert_eq!(
            url,
            Ok(MonitorUrl {
                host: "127.0.0.1".into(),
                port: 8222,
                prefix: String::new(),
            })
        );
        let with_prefix = MonitorUrl::parse("http://localhost:9/nats/");
        assert_eq!(
            with_prefix.as_ref().map(ToString::to_string),
            Ok("http://localhost:9/nats".into())
        );
        assert_eq!(
            MonitorUrl::parse("http://[::1]").map(|u| (u.host, u.port)),
            Ok(("::1".into(), 80))
        );
        assert_eq!(
            MonitorUrl::parse("http://[::1]:8222").map(|u| (u.host, u.port)),
            Ok(("::1".into(), 8222))
        );
        assert!(MonitorUrl::parse("https://127.0.0.1:8222").is_err());
        assert!(MonitorUrl::parse("127.0.0.1:8222").is_err());
        assert!(MonitorUrl::parse("http://host:port").is_err());
        assert!(MonitorUrl::parse("http://:8222").is_err());
    }
}
