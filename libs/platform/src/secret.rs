//! Secrets from the environment or from files, held in types that never print.
//!
//! A secret (a NATS password, a JWT signing secret) is configured either as
//! `NAME` or as `NAME_FILE`, the path of a file holding it — the way
//! Kubernetes Secrets and Docker secrets are mounted, so the value need not
//! sit in the process environment. It is read into a
//! [`secrecy::SecretString`], whose `Debug` prints `[REDACTED]` and which has
//! no `Display`, so it cannot reach a log line, a span or a config error by
//! accident; code that needs the value calls
//! [`ExposeSecret::expose_secret`] at the one place it hands it to a library.
//!
//! Problems are reported by variable name and file path, never with the
//! value.

pub use secrecy::{ExposeSecret, SecretString};

use crate::config::{EnvReader, Var};

/// Reads a secret from `var` or from the file named by `file_var`
/// (trailing newlines trimmed). Both set, an unreadable or empty file, or
/// an empty value is a problem recorded in `r`; neither set is `None`.
pub fn read(r: &mut EnvReader<'_>, var: &Var, file_var: &Var) -> Option<SecretString> {
    let inline = raw_secret(r, var);
    let path = r.raw(file_var);
    match (inline, path) {
        (Some(_), Some(_)) => {
            r.problem(
                var,
                format!("set {} or {}, not both", var.name, file_var.name),
            );
            None
        }
        (Some(value), None) => Some(value),
        (None, Some(_)) => read_file(r, file_var),
        (None, None) => None,
    }
}

/// Reads a secret from the file named by `file_var` (trailing newlines
/// trimmed), for secrets that only come as files (an NKey seed, a `.creds`
/// file). An unreadable or empty file is a problem, named by the variable
/// and the path; unset is `None`.
pub fn read_file(r: &mut EnvReader<'_>, file_var: &Var) -> Option<SecretString> {
    let path = r.raw(file_var)?;
    match std::fs::read_to_string(path.trim()) {
        Ok(text) => {
            let value = text.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                r.problem(file_var, format!("the file {path:?} is empty"));
                None
            } else {
                Some(SecretString::from(value.to_owned()))
            }
        }
        Err(error) => {
            r.problem(file_var, format!("cannot read {path:?}: {error}"));
            None
        }
    }
}

/// The value of `var`, never echoed: unlike [`EnvReader::raw`] it is not
/// trimmed (a password may end in a space) and has no default.
fn raw_secret(r: &EnvReader<'_>, var: &Var) -> Option<SecretString> {
    r.lookup_raw(var.name)
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    const PASSWORD: Var = Var {
        name: "X_PASSWORD",
        default: None,
        help: "a password",
    };
    const PASSWORD_FILE: Var = Var {
        name: "X_PASSWORD_FILE",
        default: None,
        help: "a file holding the password",
    };

    fn read(env: &HashMap<&str, &str>) -> (Option<SecretString>, Vec<String>) {
        let mut r = EnvReader::new(env);
        let secret = super::read(&mut r, &PASSWORD, &PASSWORD_FILE);
        let problems = r
            .finish(Some(()))
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        (secret, problems)
    }

    #[test]
    fn a_secret_comes_from_the_variable_or_its_file_and_never_prints() {
        let (secret, problems) = read(&HashMap::from([("X_PASSWORD", "hunter2")]));
        assert!(problems.is_empty());
        let secret = secret.unwrap_or_else(|| SecretString::from(""));
        assert_eq!(secret.expose_secret(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));

        let mut file = tempfile_in_target();
        writeln!(file.1, "from-file").ok();
        let path = file.0.to_string_lossy().into_owned();
        let (secret, problems) = read(&HashMap::from([("X_PASSWORD_FILE", path.as_str())]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            secret.map(|s| s.expose_secret().to_owned()).as_deref(),
            Some("from-file")
        );
        std::fs::remove_file(&file.0).ok();
    }

    #[test]
    fn problems_name_the_variable_and_never_the_value() {
        let (_, problems) = read(&HashMap::from([
            ("X_PASSWORD", "hunter2"),
            ("X_PASSWORD_FILE", "/nonexistent"),
        ]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("X_PASSWORD:"));
        assert!(!problems[0].contains("hunter2"));

        let (_, problems) = read(&HashMap::from([("X_PASSWORD_FILE", "/nonexistent/pw")]));
        assert!(problems[0].starts_with("X_PASSWORD_FILE:"), "{problems:?}");
    }

    /// A scratch file under the target directory (no tempfile dependency).
    fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!(
            "orderflow-secret-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        (path, file)
    }
}
