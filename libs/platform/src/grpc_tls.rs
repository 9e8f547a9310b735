//! Transport security of the gRPC server: TLS, mutual TLS, and where probes
//! and discovery are served.
//!
//! TLS is on when `GRPC_TLS_CERT_FILE` and `GRPC_TLS_KEY_FILE` are set
//! (rustls through tonic); with `GRPC_TLS_CLIENT_CA_FILE` as well, every
//! client must present a certificate signed by that CA, and one without is
//! refused during the handshake, before any call.
//!
//! **Health with TLS.** The Kubernetes kubelet's native gRPC probe speaks
//! plaintext only and cannot present a client certificate, so a TLS server
//! cannot be probed on its API port. `GRPC_HEALTH_ADDR` opens a second,
//! plaintext listener that serves `grpc.health.v1.Health` and nothing else —
//! no API, no reflection — on a port the probes (and the image's built-in
//! `probe`) use. Health reveals only SERVING/NOT_SERVING, so serving it
//! unencrypted on the pod network leaks nothing worth a certificate.
//!
//! The files are read and parsed at start-up, so a wrong path or a file that
//! is not PEM stops the service with the variable named, instead of failing
//! on the first connection.

use std::net::SocketAddr;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{EnvReader, Var, parse_bool};

/// `GRPC_TLS_CERT_FILE`.
pub const GRPC_TLS_CERT_FILE: Var = Var {
    name: "GRPC_TLS_CERT_FILE",
    default: None,
    help: "PEM certificate chain of the gRPC server; with GRPC_TLS_KEY_FILE turns TLS on (unset: plaintext)",
};
/// `GRPC_TLS_KEY_FILE`.
pub const GRPC_TLS_KEY_FILE: Var = Var {
    name: "GRPC_TLS_KEY_FILE",
    default: None,
    help: "PEM private key of GRPC_TLS_CERT_FILE",
};
/// `GRPC_TLS_CLIENT_CA_FILE`.
pub const GRPC_TLS_CLIENT_CA_FILE: Var = Var {
    name: "GRPC_TLS_CLIENT_CA_FILE",
    default: None,
    help: "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)",
};
/// `GRPC_HEALTH_ADDR`.
pub const GRPC_HEALTH_ADDR: Var = Var {
    name: "GRPC_HEALTH_ADDR",
    default: None,
    help: "also serve grpc.health.v1.Health alone, in plaintext, on this address (for Kubernetes probes when the API port uses TLS)",
};
/// `GRPC_REFLECTION`.
pub const GRPC_REFLECTION: Var = Var {
    name: "GRPC_REFLECTION",
    default: Some("true"),
    help: "serve gRPC server reflection (grpcurl discovery); false hides the schema from anonymous callers",
};

/// The transport variables, for `--help`.
pub fn vars() -> Vec<Var> {
    vec![
        GRPC_TLS_CERT_FILE,
        GRPC_TLS_KEY_FILE,
        GRPC_TLS_CLIENT_CA_FILE,
        GRPC_HEALTH_ADDR,
        GRPC_REFLECTION,
    ]
}

/// How the gRPC server is exposed.
#[derive(Clone, Debug)]
pub struct GrpcTransport {
    /// `None`: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Whether clients must present a certificate.
    pub mutual_tls: bool,
    /// The plaintext health-only listener, when configured.
    pub health_addr: Option<SocketAddr>,
    /// Whether reflection is served.
    pub reflection: bool,
}

impl Default for GrpcTransport {
    fn default() -> Self {
        Self {
            tls: None,
            mutual_tls: false,
            health_addr: None,
            reflection: true,
        }
    }
}

impl GrpcTransport {
    /// Reads and checks the transport variables.
    pub fn read(r: &mut EnvReader<'_>) -> Option<Self> {
        let reflection = r.parse_with(&GRPC_REFLECTION, parse_bool);
        let health_addr = match r.raw(&GRPC_HEALTH_ADDR) {
            None => Some(None),
            Some(_) => r
                .parse_with(&GRPC_HEALTH_ADDR, |v| {
                    v.parse::<SocketAddr>().map_err(|_| {
                        String::from("expected an IP address and port, like 0.0.0.0:8081")
                    })
                })
                .map(Some),
        };
        let cert = r.raw(&GRPC_TLS_CERT_FILE);
        let key = r.raw(&GRPC_TLS_KEY_FILE);
        let ca = r.raw(&GRPC_TLS_CLIENT_CA_FILE);
        let tls = match (cert, key) {
            (None, None) => {
                if ca.is_some() {
                    r.problem(
                        &GRPC_TLS_CLIENT_CA_FILE,
                        "needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE (mutual TLS is TLS first)",
                    );
                    None
                } else {
                    Some(None)
                }
            }
            (Some(_), None) => {
                r.problem(&GRPC_TLS_KEY_FILE, "required with GRPC_TLS_CERT_FILE");
                None
            }
            (None, Some(_)) => {
                r.problem(&GRPC_TLS_CERT_FILE, "required with GRPC_TLS_KEY_FILE");
                None
            }
            (Some(cert), Some(key)) => {
                let cert = read_pem(r, &GRPC_TLS_CERT_FILE, &cert, "CERTIFICATE");
                let key = read_pem(r, &GRPC_TLS_KEY_FILE, &key, "PRIVATE KEY");
                let ca = match &ca {
                    Some(path) => read_pem(r, &GRPC_TLS_CLIENT_CA_FILE, path, "CERTIFICATE")
                        .map(|pem| Some(Certificate::from_pem(pem))),
                    None => Some(None),
                };
                match (cert, key, ca) {
                    (Some(cert), Some(key), Some(ca)) => {
                        let mut config =
                            ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                        if let Some(ca) = ca {
                            config = config.client_ca_root(ca);
                        }
                        Some(Some(config))
                    }
                    _ => None,
                }
            }
        };
        Some(Self {
            mutual_tls: tls.as_ref().is_some_and(Option::is_some) && ca.is_some(),
            tls: tls?,
            health_addr: health_addr?,
            reflection: reflection?,
        })
    }
}

/// Reads a PEM file and checks it holds a `-----BEGIN <kind>` block (any
/// `... PRIVATE KEY` for keys); problems name the variable and the path,
/// never the content.
fn read_pem(r: &mut EnvReader<'_>, var: &Var, path: &str, kind: &str) -> Option<Vec<u8>> {
    let path = path.trim();
    match std::fs::read(path) {
        Ok(pem) => {
            let text = String::from_utf8_lossy(&pem);
            let found = text.lines().any(|l| {
                l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----"))
            });
            if found {
                Some(pem)
            } else {
                r.problem(var, format!("{path:?} holds no PEM {kind}"));
                None
            }
        }
        Err(error) => {
            r.problem(var, format!("cannot read {path:?}: {error}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn problems(env: &[(&str, &str)]) -> Vec<String> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let mut r = EnvReader::new(&env);
        let transport = GrpcTransport::read(&mut r);
        r.finish(transport)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn plaintext_by_default_with_reflection() {
        let env: HashMap<&str, &str> = HashMap::new();
        let mut r = EnvReader::new(&env);
        let transport = GrpcTransport::read(&mut r);
        let transport = r.finish(transport).unwrap_or_default();
        assert!(transport.tls.is_none() && transport.reflection);
        assert!(transport.health_addr.is_none());
    }

    #[test]
    fn incomplete_or_unreadable_tls_settings_name_their_variable() {
        assert!(problems(&[("GRPC_TLS_CERT_FILE", "/x.pem")])[0].starts_with("GRPC_TLS_KEY_FILE:"));
        assert!(
            problems(&[("GRPC_TLS_CLIENT_CA_FILE", "/ca.pem")])[0]
                .starts_with("GRPC_TLS_CLIENT_CA_FILE:")
        );
        let found = problems(&[
            ("GRPC_TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("GRPC_TLS_KEY_FILE", "/nonexistent/key.pem"),
        ]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("GRPC_TLS_CERT_FILE:"));
        assert!(found[1].starts_with("GRPC_TLS_KEY_FILE:"));
        assert!(problems(&[("GRPC_HEALTH_ADDR", "8081")])[0].starts_with("GRPC_HEALTH_ADDR:"));
    }
}
