//! A throwaway certificate authority for TLS and mutual-TLS tests.
//!
//! Certificates are generated per test run with rcgen (no `openssl` on the
//! machine needed, nothing committed that could expire): a CA, a server
//! certificate for `localhost`/`127.0.0.1` and a client certificate it
//! signed, plus a second, unrelated CA whose client certificate a server must
//! refuse. Everything is written as PEM files into a temporary directory
//! deleted on drop, because the services read their certificates from files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A certificate and its private key, as PEM text and as files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
    /// Where the certificate was written.
    pub cert_file: PathBuf,
    /// Where the key was written.
    pub key_file: PathBuf,
}

/// A test PKI: one trusted CA with a server and a client certificate, and a
/// stranger CA with a client certificate of its own.
#[derive(Debug)]
pub struct TestPki {
    /// The trusted CA certificate (PEM).
    pub ca_pem: String,
    /// The trusted CA certificate's file.
    pub ca_file: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server: Issued,
    /// Client certificate signed by the trusted CA.
    pub client: Issued,
    /// Client certificate signed by a CA the server does not trust.
    pub stranger: Issued,
    /// The temporary directory of [`TestPki::generate`], deleted on drop.
    _dir: Option<tempfile::TempDir>,
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestPki {
    /// Generates the whole PKI into a fresh temporary directory.
    ///
    /// # Panics
    ///
    /// When generation or writing fails: the test cannot run.
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("orderflow-pki-")
            .tempdir()
            .expect("a temporary directory for certificates");
        let mut pki = Self::generate_in(dir.path())
            .unwrap_or_else(|e| panic!("the test PKI cannot be written: {e}"));
        pki._dir = Some(dir);
        pki
    }

    /// Generates the whole PKI into `dir` (which must exist), and leaves the
    /// files there: for scripts, through `orderflow-test-pki`. The files are
    /// `ca.pem`, and `server`, `client` and `stranger` with `.pem` and
    /// `-key.pem`.
    ///
    /// # Errors
    ///
    /// When a file cannot be written, naming it.
    pub fn generate_in(dir: &Path) -> Result<Self, String> {
        let ca = authority("orderflow test CA");
        let stranger_ca = authority("stranger CA");
        let ca_file = write(dir, "ca.pem", &ca.cert.pem())?;
        let server = issue(
            dir,
            "server",
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = issue(
            dir,
            "client",
            &ca,
            &["client.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let stranger = issue(
            dir,
            "stranger",
            &stranger_ca,
            &["stranger.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Self {
            ca_pem: ca.cert.pem(),
            ca_file,
            server,
            client,
            stranger,
            _dir: None,
        })
    }
}

#[allow(clippy::expect_used)]
fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("a self-signed CA");
    Authority { cert, key }
}

#[allow(clippy::expect_used)]
fn issue(
    dir: &Path,
    name: &str,
    ca: &Authority,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<Issued, String> {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<Vec<String>>(),
    )
    .expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("a signed certificate");
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    Ok(Issued {
        cert_file: write(dir, &format!("{name}.pem"), &cert_pem)?,
        key_file: write(dir, &format!("{name}-key.pem"), &key_pem)?,
        cert_pem,
        key_pem,
    })
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
