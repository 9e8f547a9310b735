//! Where a service connects to NATS (`NATS_URL`), how it authenticates and
//! how it protects the connection, read from the environment.
//!
//! With `deploy/nats/auth.conf` each service is a NATS user whose
//! permissions allow only its own subjects, so the service must prove which
//! user it is. It does so in one of four ways, whichever the server is set
//! up for: a user and password, a token, an NKey seed, or a `.creds` file
//! (a user JWT and its seed, for servers in operator mode). With none set
//! the service connects anonymously, as to a local `nats-server -js`.
//!
//! Every secret comes from a file (`NATS_PASSWORD_FILE`, `NATS_TOKEN_FILE`,
//! `NATS_NKEY_SEED_FILE`, `NATS_CREDS_FILE`: Kubernetes Secrets and Docker
//! secrets are mounted as files) or, for the password and the token, from
//! the variable itself. It is held in a `SecretString` from the moment it
//! is read; no default, `--help` line or problem ever contains it. Problems
//! name the variable (and a file's path), never a value.
//!
//! Credentials in `NATS_URL` (`nats://user:secret@host`) are refused: the
//! URL is printed in start-up errors and by the NATS client's logs.

use std::path::{Path, PathBuf};

use orderflow_eventbus::{ClientCertificate, NatsAuth, NatsTls};
use secrecy::ExposeSecret;

use crate::{
    config::{EnvReader, Var, parse_bool},
    secret,
};

/// `NATS_URL`.
pub const NATS_URL: Var = Var {
    name: "NATS_URL",
    default: Some("nats://127.0.0.1:4222"),
    help: "NATS server URL; a comma-separated list for a cluster",
};
/// `NATS_USER`.
pub const NATS_USER: Var = Var {
    name: "NATS_USER",
    default: None,
    help: "NATS user name; needs NATS_PASSWORD or NATS_PASSWORD_FILE",
};
/// `NATS_PASSWORD`.
pub const NATS_PASSWORD: Var = Var {
    name: "NATS_PASSWORD",
    default: None,
    help: "password of NATS_USER (prefer NATS_PASSWORD_FILE: a value in the environment is visible to anyone who can inspect the process)",
};
/// `NATS_PASSWORD_FILE`.
pub const NATS_PASSWORD_FILE: Var = Var {
    name: "NATS_PASSWORD_FILE",
    default: None,
    help: "file holding the password of NATS_USER, e.g. a mounted Kubernetes Secret",
};
/// `NATS_TOKEN`.
pub const NATS_TOKEN: Var = Var {
    name: "NATS_TOKEN",
    default: None,
    help: "NATS authentication token (prefer NATS_TOKEN_FILE)",
};
/// `NATS_TOKEN_FILE`.
pub const NATS_TOKEN_FILE: Var = Var {
    name: "NATS_TOKEN_FILE",
    default: None,
    help: "file holding the NATS authentication token",
};
/// `NATS_NKEY_SEED_FILE`.
pub const NATS_NKEY_SEED_FILE: Var = Var {
    name: "NATS_NKEY_SEED_FILE",
    default: None,
    help: "file holding the NATS user's NKey seed (SU...); the server knows its public key",
};
/// `NATS_CREDS_FILE`.
pub const NATS_CREDS_FILE: Var = Var {
    name: "NATS_CREDS_FILE",
    default: None,
    help: "NATS .creds file (user JWT and NKey seed), for servers in operator (JWT) mode",
};
/// `NATS_TLS_REQUIRED`.
pub const NATS_TLS_REQUIRED: Var = Var {
    name: "NATS_TLS_REQUIRED",
    default: Some("false"),
    help: "true refuses a NATS connection without TLS; implied by tls:// URLs, NATS_TLS_CA_FILE and NATS_TLS_CERT_FILE",
};
/// `NATS_TLS_CA_FILE`.
pub const NATS_TLS_CA_FILE: Var = Var {
    name: "NATS_TLS_CA_FILE",
    default: None,
    help: "PEM file of the CA certificates that sign the NATS server's certificate (default: the system's roots)",
};
/// `NATS_TLS_CERT_FILE`.
pub const NATS_TLS_CERT_FILE: Var = Var {
    name: "NATS_TLS_CERT_FILE",
    default: None,
    help: "PEM client certificate for NATS servers that verify clients (mutual TLS); needs NATS_TLS_KEY_FILE",
};
/// `NATS_TLS_KEY_FILE`.
pub const NATS_TLS_KEY_FILE: Var = Var {
    name: "NATS_TLS_KEY_FILE",
    default: None,
    help: "PEM private key of NATS_TLS_CERT_FILE",
};

/// Where the service connects to NATS, as whom, and how securely.
#[derive(Clone, Debug)]
pub struct NatsConnectConfig {
    /// NATS server URLs, comma-separated (`NATS_URL`).
    pub url: String,
    /// How the service authenticates (anonymous when nothing is set).
    pub auth: NatsAuth,
    /// TLS towards the server.
    pub tls: NatsTls,
}

impl NatsConnectConfig {
    /// The credential and TLS variables, for `--help` (where [`NATS_URL`]
    /// is listed first, with the other basics). None has a default that is
    /// a secret: secrets have no default at all.
    pub fn vars() -> Vec<Var> {
        vec![
            NATS_USER,
            NATS_PASSWORD,
            NATS_PASSWORD_FILE,
            NATS_TOKEN,
            NATS_TOKEN_FILE,
            NATS_NKEY_SEED_FILE,
            NATS_CREDS_FILE,
            NATS_TLS_REQUIRED,
            NATS_TLS_CA_FILE,
            NATS_TLS_CERT_FILE,
            NATS_TLS_KEY_FILE,
        ]
    }

    /// Reads and checks the NATS URLs, credentials and TLS settings; every
    /// problem is recorded in `r` (by variable name, without values) and
    /// `None` returned.
    pub fn read(r: &mut EnvReader<'_>) -> Option<Self> {
        // A URL may carry a password (refused by `read_auth`); a problem
        // never echoes it.
        let url = r.parse_with_shown(&NATS_URL, redact_url_credentials, parse_nats_urls);
        let auth = read_auth(r);
        let tls = read_tls(r);
        Some(Self {
            url: url?,
            auth: auth?,
            tls: tls?,
        })
    }
}

/// Whether `var` is set to something, as [`EnvReader::raw`] sees it (its
/// value is not looked at further).
fn is_set(r: &EnvReader<'_>, var: &Var) -> bool {
    r.lookup_raw(var.name).is_some_and(|v| !v.trim().is_empty())
}

/// Whether the secret `var` is set, as [`secret::read`] sees it: any
/// non-empty value, spaces included (a password may be one).
fn secret_set(r: &EnvReader<'_>, var: &Var) -> bool {
    r.lookup_raw(var.name).is_some_and(|v| !v.is_empty())
}

fn read_auth(r: &mut EnvReader<'_>) -> Option<NatsAuth> {
    let mut ok = true;
    // Credentials inside NATS_URL would bypass all of the below and be
    // printed wherever the URL is.
    if r.raw(&NATS_URL).is_some_and(|urls| {
        urls.split(',').any(|url| {
            let rest = url.trim().split_once("://").map_or(url, |(_, rest)| rest);
            rest.split('/').next().unwrap_or_default().contains('@')
        })
    }) {
        r.problem(
            &NATS_URL,
            "carries credentials (user:password@ or token@); set NATS_USER and NATS_PASSWORD_FILE (or NATS_TOKEN_FILE) instead, which are never printed",
        );
        ok = false;
    }

    // Which methods are configured, decided by which variables are set, so
    // that an unreadable file is one problem, not also a missing method.
    let user_set = is_set(r, &NATS_USER);
    let password_set = secret_set(r, &NATS_PASSWORD) || is_set(r, &NATS_PASSWORD_FILE);
    let token_set = secret_set(r, &NATS_TOKEN) || is_set(r, &NATS_TOKEN_FILE);
    let seed_set = is_set(r, &NATS_NKEY_SEED_FILE);
    let creds_set = is_set(r, &NATS_CREDS_FILE);
    let methods: Vec<&Var> = [
        (user_set || password_set, &NATS_USER),
        (token_set, &NATS_TOKEN),
        (seed_set, &NATS_NKEY_SEED_FILE),
        (creds_set, &NATS_CREDS_FILE),
    ]
    .into_iter()
    .filter_map(|(set, var)| set.then_some(var))
    .collect();
    if methods.len() > 1 {
        let names: Vec<&str> = methods.iter().map(|v| v.name).collect();
        r.problem(
            methods[1],
            format!(
                "set one way to authenticate to NATS, not several (found {})",
                names.join(", ")
            ),
        );
        ok = false;
    }

    let password = secret::read(r, &NATS_PASSWORD, &NATS_PASSWORD_FILE);
    let token = secret::read(r, &NATS_TOKEN, &NATS_TOKEN_FILE);
    let seed = secret::read_file(r, &NATS_NKEY_SEED_FILE);
    let creds = secret::read_file(r, &NATS_CREDS_FILE);
    // A variable that is set but gave no value had its problem recorded.
    ok &= password.is_some() == password_set
        && token.is_some() == token_set
        && seed.is_some() == seed_set
        && creds.is_some() == creds_set;

    if let Some(seed) = &seed
        && !looks_like_user_seed(seed.expose_secret())
    {
        r.problem(
            &NATS_NKEY_SEED_FILE,
            "the file does not hold a user NKey seed (58 characters starting with SU, as `nk -gen user` prints)",
        );
        ok = false;
    }
    if let Some(creds) = &creds {
        let text = creds.expose_secret();
        if !(text.contains("BEGIN NATS USER JWT") && text.contains("BEGIN USER NKEY SEED")) {
            r.problem(
                &NATS_CREDS_FILE,
                "the file is not a NATS credentials file (a user JWT and an NKey seed, as `nsc generate creds` writes)",
            );
            ok = false;
        }
    }
    let user = r.raw(&NATS_USER).map(|u| u.trim().to_owned());
    match (&user, password_set) {
        (Some(_), false) => {
            r.problem(&NATS_USER, "needs NATS_PASSWORD or NATS_PASSWORD_FILE");
            ok = false;
        }
        (None, true) => {
            let var = if is_set(r, &NATS_PASSWORD_FILE) {
                &NATS_PASSWORD_FILE
            } else {
                &NATS_PASSWORD
            };
            r.problem(var, "a NATS password needs NATS_USER");
            ok = false;
        }
        _ => {}
    }
    if !ok {
        return None;
    }
    Some(match (user, password, token, seed, creds) {
        (Some(user), Some(password), ..) => NatsAuth::UserPassword { user, password },
        (_, _, Some(token), ..) => NatsAuth::Token(token),
        (_, _, _, Some(seed), _) => NatsAuth::NKey(seed),
        (.., Some(creds)) => NatsAuth::Credentials(creds),
        _ => NatsAuth::Anonymous,
    })
}

/// A user seed is 58 base32 characters starting with `S` (seed) and `U`
/// (user); the NATS client checks the rest when it signs.
fn looks_like_user_seed(seed: &str) -> bool {
    let seed = seed.trim();
    seed.len() == 58
        && seed.starts_with("SU")
        && seed
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn read_tls(r: &mut EnvReader<'_>) -> Option<NatsTls> {
    let required = r.parse_with(&NATS_TLS_REQUIRED, parse_bool);
    let ca_file = readable_file(r, &NATS_TLS_CA_FILE);
    let cert_file = readable_file(r, &NATS_TLS_CERT_FILE);
    let key_file = readable_file(r, &NATS_TLS_KEY_FILE);
    let mut ok = ca_file.is_some() == is_set(r, &NATS_TLS_CA_FILE)
        && cert_file.is_some() == is_set(r, &NATS_TLS_CERT_FILE)
        && key_file.is_some() == is_set(r, &NATS_TLS_KEY_FILE);
    match (
        is_set(r, &NATS_TLS_CERT_FILE),
        is_set(r, &NATS_TLS_KEY_FILE),
    ) {
        (true, false) => {
            r.problem(
                &NATS_TLS_CERT_FILE,
                "needs NATS_TLS_KEY_FILE, its private key",
            );
            ok = false;
        }
        (false, true) => {
            r.problem(
                &NATS_TLS_KEY_FILE,
                "needs NATS_TLS_CERT_FILE, the certificate it belongs to",
            );
            ok = false;
        }
        _ => {}
    }
    let tls_url = r
        .raw(&NATS_URL)
        .is_some_and(|urls| urls.split(',').any(|u| u.trim().starts_with("tls://")));
    if !ok {
        return None;
    }
    let client_cert = cert_file
        .zip(key_file)
        .map(|(cert_file, key_file)| ClientCertificate {
            cert_file,
            key_file,
        });
    Some(NatsTls {
        // Given a CA or a client certificate, plaintext would silently drop
        // what was asked for.
        required: required? || tls_url || ca_file.is_some() || client_cert.is_some(),
        ca_file,
        client_cert,
    })
}

/// The path in `var`, when set and the file is readable; a problem
/// otherwise. A path is not a secret, so it is named in the problem.
fn readable_file(r: &mut EnvReader<'_>, var: &Var) -> Option<PathBuf> {
    let path = PathBuf::from(r.raw(var)?.trim());
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => Some(path),
        Ok(_) => {
            r.problem(var, format!("{} is not a file", show(&path)));
            None
        }
        Err(error) => {
            r.problem(var, format!("cannot read {}: {error}", show(&path)));
            None
        }
    }
}

fn show(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn parse_nats_urls(value: &str) -> Result<String, String> {
    let urls: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(String::from("expected at least one URL"));
    }
    for url in &urls {
        let rest = url.split_once("://").map_or(*url, |(scheme, rest)| {
            if matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                rest
            } else {
                ""
            }
        });
        if rest.is_empty() || rest.starts_with(':') {
            return Err(format!(
                "{:?} is not a NATS URL like nats://host:4222",
                redact_url_credentials(url)
            ));
        }
    }
    Ok(urls.join(","))
}

/// `value` with the user-info part of every URL in it (`user:password@`)
/// replaced by `***@`, for messages.
pub fn redact_url_credentials(value: &str) -> String {
    value
        .split(',')
        .map(|url| match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_owned(),
            },
            None => match url.split_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => url.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that keep secrets out of `--help` and out of problems.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{ConfigError, help};

    const SEED: &str = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";

    fn read(pairs: &[(&str, &str)]) -> Result<NatsConnectConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut r = EnvReader::new(&map);
        let config = NatsConnectConfig::read(&mut r);
        r.finish(config)
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        match read(pairs) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(error) => error.problems,
        }
    }

    /// A file under a fresh temporary directory holding `content`.
    fn file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    }

    #[test]
    fn nothing_set_connects_anonymously_without_tls() -> Result<(), ConfigError> {
        let config = read(&[])?;
        assert!(matches!(config.auth, NatsAuth::Anonymous));
        assert!(!config.tls.required);
        Ok(())
    }

    #[test]
    fn a_user_gets_its_password_from_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = file(&dir, "password", "s3cret-from-file\n");
        let config = read(&[
            ("NATS_USER", "order-service"),
            ("NATS_PASSWORD_FILE", &path),
        ])?;
        let NatsAuth::UserPassword { user, password } = &config.auth else {
            panic!("expected a user and password, got {:?}", config.auth);
        };
        assert_eq!(user, "order-service");
        assert_eq!(password.expose_secret(), "s3cret-from-file");
        assert!(!format!("{config:?}").contains("s3cret"));
        Ok(())
    }

    #[test]
    fn tokens_seeds_and_creds_files_are_read() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = read(&[("NATS_TOKEN", "t0ken")])?;
        assert!(matches!(&config.auth, NatsAuth::Token(t) if t.expose_secret() == "t0ken"));
        let seed = file(&dir, "seed", &format!("{SEED}\n"));
        let config = read(&[("NATS_NKEY_SEED_FILE", &seed)])?;
        assert!(matches!(&config.auth, NatsAuth::NKey(s) if s.expose_secret() == SEED));
        let creds = file(
            &dir,
            "x.creds",
            &format!(
                "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
            ),
        );
        let config = read(&[("NATS_CREDS_FILE", &creds)])?;
        assert!(matches!(&config.auth, NatsAuth::Credentials(_)));
        Ok(())
    }

    #[test]
    fn problems_name_the_variable_and_never_the_secret() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let not_a_seed = file(&dir, "seed", "hunter2-not-a-seed");
        let not_creds = file(&dir, "creds", "hunter2-not-creds");
        // (environment, the variables its problems name)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[("NATS_PASSWORD", "hunter2")], &["NATS_PASSWORD"]),
            (&[("NATS_USER", "u")], &["NATS_USER"]),
            (
                &[
                    ("NATS_USER", "u"),
                    ("NATS_PASSWORD", "hunter2"),
                    ("NATS_TOKEN", "hunter2-token"),
                ],
                &["NATS_TOKEN"],
            ),
            (
                &[
                    ("NATS_USER", "u"),
                    ("NATS_PASSWORD", "hunter2"),
                    ("NATS_PASSWORD_FILE", "/x"),
                ],
                &["NATS_PASSWORD"],
            ),
            (
                &[("NATS_NKEY_SEED_FILE", &not_a_seed)],
                &["NATS_NKEY_SEED_FILE"],
            ),
            (&[("NATS_CREDS_FILE", &not_creds)], &["NATS_CREDS_FILE"]),
            (
                &[("NATS_URL", "nats://u:hunter2@127.0.0.1:4222")],
                &["NATS_URL"],
            ),
            (
                &[("NATS_URL", "nats://hunter2@127.0.0.1:4222")],
                &["NATS_URL"],
            ),
            (
                &[("NATS_TOKEN_FILE", "/nonexistent/hunter2-path")],
                &["NATS_TOKEN_FILE"],
            ),
        ];
        for (env, expected) in cases {
            let found = problems(env);
            let named: Vec<&str> = found
                .iter()
                .map(|p| p.split(':').next().unwrap_or_default())
                .collect();
            assert_eq!(&named, expected, "{env:?}: {found:?}");
            for problem in &found {
                // A path is not a secret and may be named; a value never is.
                let without_paths = problem.replace("/nonexistent/hunter2-path", "");
                assert!(
                    !without_paths.contains("hunter2"),
                    "{env:?} leaked a secret: {problem}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn tls_is_required_when_asked_for_or_implied() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ca = file(&dir, "ca.pem", "pem");
        assert!(read(&[("NATS_TLS_REQUIRED", "true")])?.tls.required);
        assert!(read(&[("NATS_URL", "tls://127.0.0.1:4222")])?.tls.required);
        let config = read(&[("NATS_TLS_CA_FILE", &ca)])?;
        assert!(config.tls.required);
        assert_eq!(config.tls.ca_file.as_deref(), Some(Path::new(&ca)));
        assert_eq!(
            problems(&[("NATS_TLS_CERT_FILE", &ca)]),
            ["NATS_TLS_CERT_FILE: needs NATS_TLS_KEY_FILE, its private key"]
        );
        let missing = problems(&[("NATS_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(
            missing[0].starts_with("NATS_TLS_CA_FILE: cannot read"),
            "{missing:?}"
        );
        let config = read(&[("NATS_TLS_CERT_FILE", &ca), ("NATS_TLS_KEY_FILE", &ca)])?;
        assert!(config.tls.required && config.tls.client_cert.is_some());
        Ok(())
    }

    #[test]
    fn help_lists_every_nats_variable_and_no_secret_default() {
        let vars = NatsConnectConfig::vars();
        let text = help("svc", "about", &vars);
        for var in &vars {
            assert!(text.contains(var.name), "{} missing", var.name);
            let secret = ["PASSWORD", "TOKEN", "SEED", "CREDS", "KEY"]
                .iter()
                .any(|word| var.name.contains(word));
            if secret {
                assert_eq!(var.default, None, "{} shows a default", var.name);
            }
        }
    }
}
