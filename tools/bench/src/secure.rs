//! How the bench reaches a secured deployment: TLS (or mutual TLS) to the
//! order service, a bearer token on every call, and a NATS login (with TLS
//! when the broker needs it) for the bench's own connections.
//!
//! The bench measures what a client of a secured deployment pays, so every
//! connection goes the way a real client's would: the gRPC calls through
//! the same TLS handshake and the same token check as any caller's, and the
//! observer and the baseline through the same broker, logged in, so that
//! the baseline's raw publishes cross the same authentication (and TLS) as
//! the services' do and the ratios compare like with like.
//!
//! Every file is read once, before anything connects, and a problem is an
//! error naming the flag and the path, never the content: a token or a
//! password must not reach the terminal, a log or the report.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Serialize;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Certificate, ClientTlsConfig, Identity},
};

/// The flags of a secured deployment; with none of them the bench talks
/// plaintext gRPC without a token and connects to NATS anonymously.
#[derive(Clone, Debug, Default, Args)]
pub struct SecurityArgs {
    /// PEM file of the CA that signed the order service's certificate:
    /// connect with TLS (the --target must be https://).
    #[arg(long, help_heading = "Security")]
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs --tls-key-file.
    #[arg(long, help_heading = "Security")]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, help_heading = "Security")]
    pub tls_key_file: Option<PathBuf>,
    /// The name the order service's certificate must carry (default: the
    /// --target's host).
    #[arg(long, help_heading = "Security")]
    pub tls_domain: Option<String>,
    /// A file holding a bearer token (a JWT, e.g. from
    /// scripts/mint-token.py), sent as `authorization: Bearer <token>` on
    /// every call.
    #[arg(long, help_heading = "Security")]
    pub token_file: Option<PathBuf>,
    /// The NATS user of the bench's own connections (the observer and the
    /// baseline); needs --nats-password-file.
    #[arg(long, help_heading = "Security")]
    pub nats_user: Option<String>,
    /// A file holding the NATS user's password.
    #[arg(long, help_heading = "Security")]
    pub nats_password_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and NKey seed), instead of a user and
    /// password.
    #[arg(long, help_heading = "Security")]
    pub nats_creds_file: Option<PathBuf>,
    /// PEM file of the CA that signed the NATS server's certificate: TLS to
    /// NATS, required.
    #[arg(long, help_heading = "Security")]
    pub nats_tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients;
    /// needs --nats-tls-key-file.
    #[arg(long, help_heading = "Security")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// The NATS client certificate's private key (PEM).
    #[arg(long, help_heading = "Security")]
    pub nats_tls_key_file: Option<PathBuf>,
}

/// The security of a run, read and checked from [`SecurityArgs`].
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// TLS to the order service, `None` for plaintext.
    pub grpc_tls: Option<ClientTlsConfig>,
    /// Whether a client certificate is presented (mutual TLS).
    pub mutual_tls: bool,
    /// What every call carries.
    pub bearer: Bearer,
    /// The bench's NATS login and TLS.
    pub nats: NatsLogin,
}

/// Which security a run used, for the report (never a secret).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SecurityMode {
    /// `secure` when anything below is on, else `plaintext`.
    pub mode: &'static str,
    /// `plaintext`, `tls` or `mtls`: how the bench reached the order service.
    pub grpc: &'static str,
    /// Whether every call carried a bearer token.
    pub bearer_token: bool,
    /// `anonymous`, `user and password` or `credentials file`: how the
    /// bench's own NATS connections logged in.
    pub nats_auth: &'static str,
    /// Whether they used TLS (`mtls` with a client certificate).
    pub nats_tls: &'static str,
}

impl Security {
    /// Reads every file the flags name and checks that they go together
    /// (`target` is the order service's URL).
    pub fn load(args: &SecurityArgs, target: &str) -> Result<Self, String> {
        let https = target.starts_with("https://");
        let grpc_tls = match (&args.tls_ca_file, https) {
            (Some(ca), true) => {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read("--tls-ca-file", ca)?));
                if let Some(domain) = &args.tls_domain {
                    tls = tls.domain_name(domain.clone());
                }
                if let Some((cert, key)) = pair(
                    ("--tls-cert-file", &args.tls_cert_file),
                    ("--tls-key-file", &args.tls_key_file),
                )? {
                    tls = tls.identity(Identity::from_pem(
                        read("--tls-cert-file", cert)?,
                        read("--tls-key-file", key)?,
                    ));
                }
                Some(tls)
            }
            (Some(_), false) => {
                return Err(format!(
                    "--tls-ca-file needs an https:// --target (got {target:?})"
                ));
            }
            (None, true) => {
                return Err(format!(
                    "an https:// --target ({target:?}) needs --tls-ca-file, the CA of the \
                     order service's certificate"
                ));
            }
            (None, false) => {
                for (flag, value) in [
                    ("--tls-cert-file", args.tls_cert_file.is_some()),
                    ("--tls-key-file", args.tls_key_file.is_some()),
                    ("--tls-domain", args.tls_domain.is_some()),
                ] {
                    if value {
                        return Err(format!(
                            "{flag} needs TLS: give --tls-ca-file and an https:// --target"
                        ));
                    }
                }
                None
            }
        };
        let bearer = match &args.token_file {
            Some(path) => Bearer::from_token(&read_text("--token-file", path)?)
                .map_err(|why| format!("--token-file {}: {why}", path.display()))?,
            None => Bearer::default(),
        };
        if bearer.0.is_some() && grpc_tls.is_none() {
            // Allowed for a loopback run, but never silently: the token is a
            // credential of the order service.
            eprintln!(
                "warning: --token-file without TLS: the bearer token goes in the clear on every \
                 call to {target}; give an https:// --target and --tls-ca-file unless the \
                 target is on this machine"
            );
        }
        Ok(Self {
            mutual_tls: grpc_tls.is_some() && args.tls_cert_file.is_some(),
            grpc_tls,
            bearer,
            nats: NatsLogin::load(args)?,
        })
    }

    /// Which security this is, for the report.
    pub fn mode(&self) -> SecurityMode {
        let grpc = match (&self.grpc_tls, self.mutual_tls) {
            (None, _) => "plaintext",
            (Some(_), false) => "tls",
            (Some(_), true) => "mtls",
        };
        let nats_auth = self.nats.auth.method();
        let nats_tls = match (&self.nats.tls_ca_file, &self.nats.client_cert) {
            (None, _) => "off",
            (Some(_), None) => "tls",
            (Some(_), Some(_)) => "mtls",
        };
        let bearer_token = self.bearer.0.is_some();
        let secure =
            grpc != "plaintext" || bearer_token || nats_auth != "anonymous" || nats_tls != "off";
        SecurityMode {
            mode: if secure { "secure" } else { "plaintext" },
            grpc,
            bearer_token,
            nats_auth,
            nats_tls,
        }
    }
}

/// Both files of a certificate and its key, or neither.
fn pair<'a>(
    (cert_flag, cert): (&str, &'a Option<PathBuf>),
    (key_flag, key): (&str, &'a Option<PathBuf>),
) -> Result<Option<(&'a Path, &'a Path)>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{cert_flag} needs {key_flag}, its private key")),
        (None, Some(_)) => Err(format!("{key_flag} needs {cert_flag}, its certificate")),
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// A secret file's content, without the trailing newline a mounted secret
/// or `echo` leaves; an empty one is an error.
fn read_text(flag: &str, path: &Path) -> Result<String, String> {
    let text = String::from_utf8(read(flag, path)?)
        .map_err(|_| format!("{flag} {} is not UTF-8 text", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Err(format!("{flag} {} is empty", path.display()));
    }
    Ok(text.to_owned())
}

/// The `authorization` value every call carries, if any. Its `Debug` never
/// shows it.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `authorization: Bearer <token>`; the error says why the token cannot
    /// be a header value, without quoting it.
    pub fn from_token(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if token.starts_with("Bearer ") || token.starts_with("bearer ") {
            return Err("give the token alone, without `Bearer `".into());
        }
        if token.chars().any(|c| c.is_whitespace()) {
            return Err("the token holds whitespace; a JWT is one word".into());
        }
        // HTTP allows bytes above 0x7f in a header value; a token never
        // holds them, so they are a wrong file rather than a token.
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err("the token is not printable ASCII".into());
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not printable ASCII".to_owned())?;
        // Kept out of HPACK's dynamic table and of any header dump.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer([REDACTED])"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How the bench's own NATS connections log in and protect themselves.
#[derive(Clone, Debug, Default)]
pub struct NatsLogin {
    auth: NatsAuth,
    tls_ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// One way to log in to NATS. The password's `Debug` is redacted.
#[derive(Clone, Default)]
enum NatsAuth {
    #[default]
    Anonymous,
    UserPassword {
        user: String,
        password: String,
    },
    /// A `.creds` file's content.
    Credentials(String),
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::UserPassword { user, .. } => {
                write!(f, "UserPassword({user}, [REDACTED])")
            }
            other => f.write_str(other.method()),
        }
    }
}

impl NatsAuth {
    fn method(&self) -> &'static str {
        match self {
            NatsAuth::Anonymous => "anonymous",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Credentials(_) => "credentials file",
        }
    }
}

impl NatsLogin {
    fn load(args: &SecurityArgs) -> Result<Self, String> {
        let auth = match (
            &args.nats_user,
            &args.nats_password_file,
            &args.nats_creds_file,
        ) {
            (None, None, None) => NatsAuth::Anonymous,
            (Some(user), Some(password), None) => {
                if user.trim().is_empty() {
                    return Err("--nats-user is empty".into());
                }
                NatsAuth::UserPassword {
                    user: user.clone(),
                    password: read_text("--nats-password-file", password)?,
                }
            }
            (None, None, Some(creds)) => {
                NatsAuth::Credentials(read_text("--nats-creds-file", creds)?)
            }
            (_, _, Some(_)) => {
                return Err(
                    "--nats-creds-file is a login of its own; leave out --nats-user and \
                     --nats-password-file"
                        .into(),
                );
            }
            (Some(_), None, None) => {
                return Err("--nats-user needs --nats-password-file".into());
            }
            (None, Some(_), None) => {
                return Err("--nats-password-file needs --nats-user".into());
            }
        };
        let client_cert = pair(
            ("--nats-tls-cert-file", &args.nats_tls_cert_file),
            ("--nats-tls-key-file", &args.nats_tls_key_file),
        )?
        .map(|(cert, key)| (cert.to_owned(), key.to_owned()));
        if client_cert.is_some() && args.nats_tls_ca_file.is_none() {
            return Err("--nats-tls-cert-file needs --nats-tls-ca-file (TLS to NATS)".into());
        }
        // Read now, so that a wrong path fails before anything connects;
        // async-nats reads them again when it connects.
        for (flag, path) in [
            ("--nats-tls-ca-file", args.nats_tls_ca_file.as_deref()),
            ("--nats-tls-cert-file", args.nats_tls_cert_file.as_deref()),
            ("--nats-tls-key-file", args.nats_tls_key_file.as_deref()),
        ] {
            if let Some(path) = path {
                read(flag, path)?;
            }
        }
        Ok(Self {
            auth,
            tls_ca_file: args.nats_tls_ca_file.clone(),
            client_cert,
        })
    }

    /// `options` with this login and TLS.
    pub fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        options = match &self.auth {
            NatsAuth::Anonymous => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            // async-nats's message names what is missing, never the content.
            NatsAuth::Credentials(creds) => options
                .credentials(creds)
                .map_err(|e| format!("--nats-creds-file is not a NATS .creds file: {e}"))?,
        };
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }

    /// What to check when a connection fails, for the error message.
    pub fn hint(&self) -> &'static str {
        match self.auth {
            NatsAuth::Anonymous => {
                "is --nats-url right? (a broker that needs a login wants --nats-user and \
                 --nats-password-file, or --nats-creds-file; one that speaks TLS wants \
                 --nats-tls-ca-file)"
            }
            _ => {
                "are --nats-url and the NATS login (--nats-user/--nats-password-file or \
                 --nats-creds-file) right, and --nats-tls-ca-file given if the broker speaks TLS?"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn error(args: &SecurityArgs, target: &str) -> String {
        Security::load(args, target).expect_err("the flags were accepted")
    }

    #[test]
    fn no_flags_is_a_plaintext_anonymous_run() {
        let security = Security::load(&SecurityArgs::default(), "http://127.0.0.1:1").unwrap();
        assert_eq!(
            security.mode(),
            SecurityMode {
                mode: "plaintext",
                grpc: "plaintext",
                bearer_token: false,
                nats_auth: "anonymous",
                nats_tls: "off",
            }
        );
    }

    #[test]
    fn a_full_set_of_flags_is_a_secure_run_and_prints_no_secret() {
        let temp = temp_dir();
        let dir = temp.path();
        let pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        let args = SecurityArgs {
            tls_ca_file: Some(write(dir, "ca.pem", pem)),
            tls_cert_file: Some(write(dir, "client.pem", pem)),
            tls_key_file: Some(write(dir, "client-key.pem", pem)),
            tls_domain: Some("localhost".into()),
            token_file: Some(write(dir, "token", "eyJ.hunter2-token.sig\n")),
            nats_user: Some("ops".into()),
            nats_password_file: Some(write(dir, "password", "hunter2-password\n")),
            nats_tls_ca_file: Some(dir.join("ca.pem")),
            nats_tls_cert_file: Some(dir.join("client.pem")),
            nats_tls_key_file: Some(dir.join("client-key.pem")),
            ..SecurityArgs::default()
        };
        let security = Security::load(&args, "https://127.0.0.1:1").unwrap();
        assert_eq!(
            security.mode(),
            SecurityMode {
                mode: "secure",
                grpc: "mtls",
                bearer_token: true,
                nats_auth: "user and password",
                nats_tls: "mtls",
            }
        );
        let printed = format!("{:?} {:?}", security.bearer, security.nats);
        assert!(!printed.contains("hunter2"), "{printed}");
        // The newline of the file is not part of the token.
        let mut bearer = security.bearer.clone();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer eyJ.hunter2-token.sig"
        );
    }

    #[test]
    fn bad_combinations_are_refused_naming_the_flags() {
        let temp = temp_dir();
        let dir = temp.path();
        let ca = write(dir, "ca-only.pem", "pem");
        let file = write(dir, "some-file", "value");
        let cases: Vec<(SecurityArgs, &str, &str)> = vec![
            (
                SecurityArgs::default(),
                "https://127.0.0.1:1",
                "needs --tls-ca-file",
            ),
            (
                SecurityArgs {
                    tls_ca_file: Some(ca.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--tls-ca-file needs an https:// --target",
            ),
            (
                SecurityArgs {
                    tls_cert_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--tls-cert-file needs TLS",
            ),
            (
                SecurityArgs {
                    tls_ca_file: Some(ca.clone()),
                    tls_cert_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "https://127.0.0.1:1",
                "--tls-cert-file needs --tls-key-file",
            ),
            (
                SecurityArgs {
                    tls_ca_file: Some(dir.join("missing.pem")),
                    ..SecurityArgs::default()
                },
                "https://127.0.0.1:1",
                "cannot read --tls-ca-file",
            ),
            (
                SecurityArgs {
                    token_file: Some(write(dir, "empty-token", "\n")),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "empty",
            ),
            (
                SecurityArgs {
                    token_file: Some(write(dir, "prefixed-token", "Bearer abc")),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "without `Bearer `",
            ),
            (
                SecurityArgs {
                    token_file: Some(write(dir, "non-ascii-token", "tök€n")),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "not printable ASCII",
            ),
            (
                SecurityArgs {
                    nats_user: Some("ops".into()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--nats-user needs --nats-password-file",
            ),
            (
                SecurityArgs {
                    nats_password_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--nats-password-file needs --nats-user",
            ),
            (
                SecurityArgs {
                    nats_user: Some("ops".into()),
                    nats_password_file: Some(file.clone()),
                    nats_creds_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--nats-creds-file is a login of its own",
            ),
            (
                SecurityArgs {
                    nats_tls_cert_file: Some(file.clone()),
                    nats_tls_key_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--nats-tls-cert-file needs --nats-tls-ca-file",
            ),
            (
                SecurityArgs {
                    nats_tls_ca_file: Some(ca.clone()),
                    nats_tls_key_file: Some(file.clone()),
                    ..SecurityArgs::default()
                },
                "http://127.0.0.1:1",
                "--nats-tls-key-file needs --nats-tls-cert-file",
            ),
        ];
        for (args, target, expected) in cases {
            let message = error(&args, target);
            assert!(
                message.contains(expected),
                "{args:?} against {target}: {message:?} does not say {expected:?}"
            );
            assert!(!message.contains("value"), "{message}");
        }
    }

    #[test]
    fn a_password_file_is_read_without_its_newline_and_never_printed() {
        let temp = temp_dir();
        let dir = temp.path();
        let args = SecurityArgs {
            nats_user: Some("ops".into()),
            nats_password_file: Some(write(dir, "ops.pw", "hunter2\r\n")),
            ..SecurityArgs::default()
        };
        let login = NatsLogin::load(&args).unwrap();
        match &login.auth {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("ops", "hunter2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
