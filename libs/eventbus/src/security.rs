//! Who a service is to NATS, and how its connection is protected.
//!
//! The services connect with one NATS user each, so that the server's
//! permissions can allow the order service to publish order events and
//! forbid it payment events (and the reverse): see `deploy/nats/auth.conf`.
//! This module holds the settings as plain values — the configuration crate
//! reads them from the environment — and turns them into async-nats options
//! in [`crate::connect`], the one place the services connect.
//!
//! Secrets (a password, a token, an NKey seed, a `.creds` file's content)
//! are [`SecretString`]s: their `Debug` prints `[REDACTED]`, so a settings
//! value can be logged or put in an error without leaking them. They are
//! exposed only when handed to async-nats, whose own `Debug` of the CONNECT
//! message redacts them too.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// How a service authenticates to NATS. At most one method: a server
/// accepts one identity per connection.
#[derive(Clone, Debug, Default)]
pub enum NatsAuth {
    /// No credentials: for a server that accepts anonymous clients (a local
    /// `nats-server -js`, the tests).
    #[default]
    Anonymous,
    /// A user name and its password (the users of `deploy/nats/auth.conf`).
    UserPassword {
        /// The NATS user; not a secret, it appears in the server's logs.
        user: String,
        /// Its password.
        password: SecretString,
    },
    /// A token shared with the server.
    Token(SecretString),
    /// An NKey seed (`SU...`): the server knows only the public key and the
    /// client signs the server's nonce, so no password crosses the wire.
    NKey(SecretString),
    /// The content of a `.creds` file: a user JWT and its NKey seed, for a
    /// server in operator (decentralised JWT) mode.
    Credentials(SecretString),
}

impl NatsAuth {
    /// A short name of the method, for logs and errors (never the secret).
    pub fn method(&self) -> &'static str {
        match self {
            NatsAuth::Anonymous => "anonymous",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Token(_) => "token",
            NatsAuth::NKey(_) => "NKey",
            NatsAuth::Credentials(_) => "credentials file",
        }
    }
}

/// TLS towards NATS.
#[derive(Clone, Debug, Default)]
pub struct NatsTls {
    /// Refuse a connection that is not TLS. Without it the client still
    /// uses TLS when the server requires it or the URL is `tls://`.
    pub required: bool,
    /// PEM file of the CA certificates that sign the server's certificate;
    /// the system's roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files), for servers that
    /// verify clients (mutual TLS).
    pub client_cert: Option<ClientCertificate>,
}

/// A client certificate chain and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// Applies `auth` and `tls` to `options`.
///
/// Fails only when a `.creds` content cannot be parsed; the message is
/// async-nats' own, which names what is missing and never echoes the file.
pub(crate) fn apply(
    mut options: async_nats::ConnectOptions,
    auth: &NatsAuth,
    tls: &NatsTls,
) -> std::io::Result<async_nats::ConnectOptions> {
    options = match auth {
        NatsAuth::Anonymous => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose_secret().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose_secret().to_owned()),
        NatsAuth::NKey(seed) => options.nkey(seed.expose_secret().to_owned()),
        NatsAuth::Credentials(creds) => options.credentials(creds.expose_secret())?,
    };
    if let Some(ca_file) = &tls.ca_file {
        options = options.add_root_certificates(ca_file.clone());
    }
    if let Some(cert) = &tls.client_cert {
        options = options.add_client_certificate(cert.cert_file.clone(), cert.key_file.clone());
    }
    if tls.required {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// A fresh name for a short-lived ordered consumer.
///
/// Unnamed, an ordered consumer is created through
/// `$JS.API.CONSUMER.CREATE.<stream>`, and a user allowed that subject may
/// put any name in the request, the other service's durable consumer's
/// included, and change its configuration. Named, it is created through
/// `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>` (the server checks
/// the name against the request), which permissions can allow for any name
/// but deny for the other service's durable consumers.
pub(crate) fn ordered_consumer_name() -> String {
    format!("ordered-{}", uuid::Uuid::new_v4().simple())
}

/// Whether a failed connection was the server refusing the credentials (or
/// the client unable to sign with them), rather than a server out of reach:
/// retrying will not help, fixing the credentials will.
pub fn is_refusal(error: &async_nats::ConnectError) -> bool {
    matches!(
        error.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication
    )
}

/// The inbox prefix of a service's connection: `_INBOX.<name>`.
///
/// Every reply a service receives — JetStream API answers, publish acks,
/// pulled messages — arrives on an inbox subject. With a prefix per service,
/// the server can let each user subscribe only to its own replies
/// (`_INBOX.order-service.>`), so one service cannot read what JetStream
/// hands the other. A server without permissions sees ordinary `_INBOX.>`
/// subjects. A name that is not a single subject token keeps the default.
pub(crate) fn inbox_prefix(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| format!("_INBOX.{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_print_without_their_secrets() {
        let auth = NatsAuth::UserPassword {
            user: "order-service".into(),
            password: SecretString::from("hunter2-password"),
        };
        let printed = format!("{auth:?}");
        assert!(printed.contains("order-service"));
        assert!(!printed.contains("hunter2"), "{printed}");
        for auth in [
            NatsAuth::Token(SecretString::from("hunter2-token")),
            NatsAuth::NKey(SecretString::from("hunter2-seed")),
            NatsAuth::Credentials(SecretString::from("hunter2-creds")),
        ] {
            assert!(!format!("{auth:?}").contains("hunter2"));
        }
    }

    #[test]
    fn a_service_name_becomes_its_own_inbox_prefix() {
        assert_eq!(
            inbox_prefix("order-service").as_deref(),
            Some("_INBOX.order-service")
        );
        assert_eq!(inbox_prefix("a.b"), None);
        assert_eq!(inbox_prefix("a b"), None);
        assert_eq!(inbox_prefix(""), None);
    }

    #[test]
    fn unparsable_credentials_fail_without_echoing_them() {
        let Err(error) = apply(
            async_nats::ConnectOptions::new(),
            &NatsAuth::Credentials(SecretString::from("hunter2 is not a creds file")),
            &NatsTls::default(),
        ) else {
            panic!("garbage credentials were accepted");
        };
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
