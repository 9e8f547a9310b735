//! Who may call the API: bearer JWTs checked at the gRPC edge.
//!
//! **Why JWT rather than static tokens.** Callers of orderflow already get
//! tokens from an identity provider (Keycloak, Auth0, a cloud IAM, a service
//! mesh); a service that verifies signed, expiring tokens against the
//! provider's *public* key needs no shared secret per caller, no token list
//! to rotate, and no restart when a caller is added. For development a
//! symmetric HS256 secret (`AUTH_JWT_SECRET`/`_FILE`) works with any JWT
//! library (`scripts/mint-token.py` signs one).
//!
//! A token must carry the configured `iss` and `aud`, an `exp` in the future
//! (30 s of clock skew allowed) and, when it has one, an `nbf` in the past.
//! The algorithm is fixed by the key's type — an RSA key accepts RS256/384/512
//! and PS256/384/512, an EC key ES256/384, an Ed25519 key EdDSA, a secret
//! HS256/384/512 — so a token cannot choose a weaker one (`alg: none` and the
//! RSA-key-as-HMAC-secret confusion are impossible). Signature checks are
//! ring's, which compare in constant time.
//!
//! Roles come from the token's `roles` claim (a list of strings). Every API
//! call needs a valid token; the methods a service lists as admin-only
//! (refunds, dead-letter replay) also need the [`ADMIN_ROLE`]. Health and
//! reflection stay open because only API services are wrapped in this layer
//! (see `server`), so probes and grpcurl's discovery work (reflection can be
//! turned off with `GRPC_REFLECTION=false`).
//!
//! The token is never logged or put in a span: the layer reads the
//! `authorization` header, hands the verified [`Caller`] to the handler in
//! the request's extensions, and logs only the method and the reason of a
//! refusal.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::{
    config::{EnvReader, Var},
    secret,
};

/// The role that may call admin-only methods.
pub const ADMIN_ROLE: &str = "admin";

/// `AUTH_JWT_ISSUER`.
pub const AUTH_JWT_ISSUER: Var = Var {
    name: "AUTH_JWT_ISSUER",
    default: None,
    help: "the `iss` every API token must carry; set with a key below to require bearer JWTs on API calls (unset: API calls are not authenticated)",
};
/// `AUTH_JWT_AUDIENCE`.
pub const AUTH_JWT_AUDIENCE: Var = Var {
    name: "AUTH_JWT_AUDIENCE",
    default: None,
    help: "the `aud` every API token must carry (required with AUTH_JWT_ISSUER)",
};
/// `AUTH_JWT_PUBLIC_KEY_FILE`.
pub const AUTH_JWT_PUBLIC_KEY_FILE: Var = Var {
    name: "AUTH_JWT_PUBLIC_KEY_FILE",
    default: None,
    help: "PEM public key that signs API tokens: RSA (RS*/PS*), EC (ES256/ES384) or Ed25519 (EdDSA)",
};
/// `AUTH_JWT_SECRET`.
pub const AUTH_JWT_SECRET: Var = Var {
    name: "AUTH_JWT_SECRET",
    default: None,
    help: "HS256/384/512 secret that signs API tokens, for development (instead of AUTH_JWT_PUBLIC_KEY_FILE)",
};
/// `AUTH_JWT_SECRET_FILE`.
pub const AUTH_JWT_SECRET_FILE: Var = Var {
    name: "AUTH_JWT_SECRET_FILE",
    default: None,
    help: "a file holding AUTH_JWT_SECRET (a mounted Kubernetes Secret, say)",
};

/// The authentication variables, for `--help`.
pub fn vars() -> Vec<Var> {
    vec![
        AUTH_JWT_ISSUER,
        AUTH_JWT_AUDIENCE,
        AUTH_JWT_PUBLIC_KEY_FILE,
        AUTH_JWT_SECRET,
        AUTH_JWT_SECRET_FILE,
    ]
}

/// Verifies bearer tokens; built once from the configuration.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

/// The verified caller of an API call, put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`, when it has one.
    pub subject: Option<String>,
    /// The token's `roles`.
    pub roles: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl Authenticator {
    /// Reads the `AUTH_JWT_*` variables: `None` when authentication is off,
    /// every inconsistency recorded as a problem.
    pub fn read(r: &mut EnvReader<'_>) -> Option<Option<Arc<Self>>> {
        let issuer = r.raw(&AUTH_JWT_ISSUER);
        let audience = r.raw(&AUTH_JWT_AUDIENCE);
        let public_key_file = r.raw(&AUTH_JWT_PUBLIC_KEY_FILE);
        let secret = secret::read(r, &AUTH_JWT_SECRET, &AUTH_JWT_SECRET_FILE);
        let key = match (public_key_file, secret) {
            (Some(_), Some(_)) => {
                r.problem(
                    &AUTH_JWT_PUBLIC_KEY_FILE,
                    "set a public key or a secret (AUTH_JWT_SECRET), not both",
                );
                return None;
            }
            (Some(path), None) => match public_key(path.trim()) {
                Ok(key) => Some(key),
                Err(message) => {
                    r.problem(&AUTH_JWT_PUBLIC_KEY_FILE, message);
                    return None;
                }
            },
            (None, Some(secret)) => {
                let secret = secret.expose_secret().as_bytes();
                if secret.len() < 32 {
                    r.problem(
                        &AUTH_JWT_SECRET,
                        "too short: use at least 32 bytes (e.g. `openssl rand -base64 48`)",
                    );
                    return None;
                }
                Some((
                    DecodingKey::from_secret(secret),
                    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                ))
            }
            (None, None) => None,
        };
        match (key, issuer, audience) {
            (None, None, None) => Some(None),
            (None, _, _) => {
                r.problem(
                    &AUTH_JWT_ISSUER,
                    "set AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWT_SECRET(_FILE) to verify tokens with",
                );
                None
            }
            (Some(_), None, _) => {
                r.problem(&AUTH_JWT_ISSUER, "required when a token key is set");
                None
            }
            (Some(_), _, None) => {
                r.problem(&AUTH_JWT_AUDIENCE, "required when a token key is set");
                None
            }
            (Some((key, algorithms)), Some(issuer), Some(audience)) => Some(Some(Arc::new(
                Self::new(key, algorithms, &issuer, &audience),
            ))),
        }
    }

    fn new(key: DecodingKey, algorithms: Vec<Algorithm>, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer.trim()]);
        validation.set_audience(&[audience.trim()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Self { key, validation }
    }

    /// Checks an `authorization` header value (`Bearer <jwt>`).
    ///
    /// The error is the message of the `UNAUTHENTICATED` answer; it never
    /// contains the token.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, String> {
        let header = authorization.ok_or_else(|| {
            String::from("missing bearer token: send metadata `authorization: Bearer <jwt>`")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| String::from("the authorization metadata is not `Bearer <jwt>`"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => String::from("the token has expired"),
                ErrorKind::ImmatureSignature => String::from("the token is not valid yet (nbf)"),
                ErrorKind::InvalidIssuer => String::from("the token's issuer is not accepted"),
                ErrorKind::InvalidAudience => {
                    String::from("the token is not meant for this service (aud)")
                }
                ErrorKind::InvalidAlgorithm => {
                    String::from("the token's algorithm does not match the configured key")
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the token has no `{claim}` claim")
                }
                ErrorKind::InvalidSignature => String::from("the token's signature is not valid"),
                _ => String::from("the token is malformed"),
            },
        )?;
        Ok(Caller {
            subject: data.claims.sub,
            roles: data.claims.roles,
        })
    }
}

/// Reads a PEM public key and the algorithms its type allows.
fn public_key(path: &str) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((
            key,
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err(format!(
        "{path:?} holds no PEM public key (RSA, EC or Ed25519 `-----BEGIN PUBLIC KEY-----`)"
    ))
}

/// What a service requires of its callers.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    /// `None`: calls are not authenticated.
    pub authenticator: Option<Arc<Authenticator>>,
    /// Method paths (`/pkg.Service/Method`) or service prefixes
    /// (`/pkg.Service/`) that need [`ADMIN_ROLE`].
    pub admin_only: &'static [&'static str],
}

impl AccessPolicy {
    fn needs_admin(&self, path: &str) -> bool {
        self.admin_only.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p)
            } else {
                path == *p
            }
        })
    }
}

/// Tower layer enforcing an [`AccessPolicy`] on every API call.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: Arc<AccessPolicy>,
}

impl AuthLayer {
    /// The layer for `policy`.
    pub fn new(policy: AccessPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    // No boxing: every API call passes through here, and with
    // authentication off this layer must cost nothing.
    type Future = Either<S::Future, Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(authenticator) = &self.policy.authenticator else {
            return Either::Left(self.inner.call(request));
        };
        let path = request.uri().path();
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let refusal = match authenticator.verify(header) {
            Ok(caller) if self.policy.needs_admin(path) && !caller.has_role(ADMIN_ROLE) => {
                Some(tonic::Status::permission_denied(format!(
                    "{path} needs the `{ADMIN_ROLE}` role; the caller's token has roles {:?}",
                    caller.roles
                )))
            }
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                None
            }
            Err(message) => Some(tonic::Status::unauthenticated(message)),
        };
        match refusal {
            None => Either::Left(self.inner.call(request)),
            Some(status) => {
                tracing::warn!(method = %request.uri().path(), code = ?status.code(), reason = status.message(), "call refused");
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-development-secret-of-at-least-32-bytes";

    fn authenticator() -> Arc<Authenticator> {
        let env = HashMap::from([
            ("AUTH_JWT_ISSUER", "https://issuer.test"),
            ("AUTH_JWT_AUDIENCE", "orderflow"),
            ("AUTH_JWT_SECRET", SECRET),
        ]);
        let mut r = EnvReader::new(&env);
        let auth = Authenticator::read(&mut r).flatten();
        match r.finish(auth) {
            Ok(auth) => auth,
            Err(e) => panic!("{e}"),
        }
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn a_valid_token_yields_the_caller_and_its_roles() {
        let jwt = token(json!({"iss": "https://issuer.test", "aud": "orderflow",
            "exp": now() + 60, "sub": "alice", "roles": ["admin"]}));
        let caller = authenticator().verify(Some(&format!("Bearer {jwt}")));
        assert_eq!(
            caller,
            Ok(Caller {
                subject: Some("alice".into()),
                roles: vec!["admin".into()]
            })
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason_that_never_holds_the_token() {
        let auth = authenticator();
        let cases = [
            (
                json!({"iss": "https://issuer.test", "aud": "orderflow", "exp": now() - 120}),
                "expired",
            ),
            (
                json!({"iss": "https://evil.test", "aud": "orderflow", "exp": now() + 60}),
                "issuer",
            ),
            (
                json!({"iss": "https://issuer.test", "aud": "other", "exp": now() + 60}),
                "aud",
            ),
            (
                json!({"iss": "https://issuer.test", "aud": "orderflow"}),
                "exp",
            ),
        ];
        for (claims, expected) in cases {
            let jwt = token(claims);
            let error = auth
                .verify(Some(&format!("Bearer {jwt}")))
                .err()
                .unwrap_or_default();
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
            assert!(!error.contains(&jwt));
        }
        assert!(auth.verify(None).is_err());
        assert!(auth.verify(Some("Basic abc")).is_err());
        // Signed with another secret.
        let forged = jsonwebtoken::encode(
            &Header::default(),
            &json!({"iss": "https://issuer.test", "aud": "orderflow", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
        )
        .unwrap_or_default();
        let error = auth.verify(Some(&format!("Bearer {forged}"))).err();
        assert_eq!(error.as_deref(), Some("the token's signature is not valid"));
    }

    #[test]
    fn configuration_problems_name_the_variable_and_never_the_secret() {
        let env = HashMap::from([("AUTH_JWT_SECRET", "short-secret")]);
        let mut r = EnvReader::new(&env);
        let auth = Authenticator::read(&mut r);
        let problems = r.finish(auth).err().map(|e| e.problems).unwrap_or_default();
        assert!(!problems.is_empty());
        assert!(
            problems.iter().all(|p| !p.contains("short-secret")),
            "{problems:?}"
        );
        assert!(problems[0].starts_with("AUTH_JWT_SECRET:"), "{problems:?}");

        let env = HashMap::from([("AUTH_JWT_SECRET", SECRET)]);
        let mut r = EnvReader::new(&env);
        let auth = Authenticator::read(&mut r);
        let problems = r.finish(auth).err().map(|e| e.problems).unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.starts_with("AUTH_JWT_ISSUER:")),
            "{problems:?}"
        );
    }

    #[test]
    fn admin_only_paths_match_methods_and_service_prefixes() {
        let policy = AccessPolicy {
            authenticator: None,
            admin_only: &["/p.S/Refund", "/p.Admin/"],
        };
        assert!(policy.needs_admin("/p.S/Refund"));
        assert!(policy.needs_admin("/p.Admin/Replay"));
        assert!(!policy.needs_admin("/p.S/RefundX"));
        assert!(!policy.needs_admin("/p.S/Get"));
    }
}
