//! `orderflow-test-pki DIR`: writes the tests' throwaway PKI
//! ([`orderflow_testkit::pki::TestPki`]) into DIR and keeps it, for scripts
//! that run a TLS deployment, e.g. `scripts/bench.sh --secure`. The same
//! code as the tests' certificates, so a script needs neither openssl nor a
//! second way of making them.
//!
//! DIR gets `ca.pem`, `server.pem` and `server-key.pem` (for `localhost` and
//! `127.0.0.1`), `client.pem` and `client-key.pem` (signed by the CA), and
//! `stranger.pem` and `stranger-key.pem` (signed by another CA). Keys are
//! written readable by the owner only.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, process::ExitCode};

use orderflow_testkit::pki::TestPki;

const USAGE: &str =
    "usage: orderflow-test-pki DIR (writes a throwaway CA and certificates into DIR)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        // An option is never a directory: `--help` must not become one.
        [dir] if !dir.starts_with('-') => dir,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&PathBuf::from(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("orderflow-test-pki: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let pki = TestPki::generate_in(dir)?;
    for key in [
        &pki.server.key_file,
        &pki.client.key_file,
        &pki.stranger.key_file,
    ] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", key.display()))?;
    }
    Ok(())
}
