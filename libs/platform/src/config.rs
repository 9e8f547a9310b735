//! Configuration from environment variables, parsed once: the mechanism,
//! not the settings.
//!
//! Every variable is declared once as a [`Var`]: its name, default and
//! meaning. The same table parses the environment and prints `--help`, so the
//! two cannot drift. Variables are read through [`Lookup`], so tests pass a
//! map instead of mutating the process environment, and every bad variable is
//! collected before start-up fails, so an operator fixes them all in one go.
//!
//! This module is a leaf: it knows no setting. Each concern declares and
//! reads its own variables through [`EnvReader`] (`grpc_tls`, `auth`,
//! `nats_config`, `telemetry`, secrets through `secret`), and
//! `service_config` assembles them into what a service is configured with.
//!
//! clap is not used: it stops at the first bad value and parses flags, while
//! the contract of orderflow is environment variables reported all at once.

use std::{collections::HashMap, fmt::Display, str::FromStr};

/// One environment variable of a service.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, when it has one (shown by `--help`).
    pub default: Option<&'static str>,
    /// What it means, in one line.
    pub help: &'static str,
}

/// Where variables are read from.
pub trait Lookup {
    /// The value of `name`, when set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment (after `.env` was loaded by `dotenvy`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Lookup for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}\nRun with --help to see every variable, its default and its meaning.", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per bad variable, each starting with its name.
    pub problems: Vec<String>,
}

/// Reads variables and collects every problem.
pub struct EnvReader<'a> {
    lookup: &'a dyn Lookup,
    problems: Vec<String>,
}

impl<'a> EnvReader<'a> {
    /// A reader over `lookup`.
    pub fn new(lookup: &'a dyn Lookup) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The raw value of `var` (or its default); empty values count as unset.
    pub fn raw(&self, var: &Var) -> Option<String> {
        self.lookup
            .get(var.name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| var.default.map(str::to_owned))
    }

    /// The value of `name` exactly as set, for secrets (which are never
    /// echoed, trimmed or defaulted; see `secret`).
    pub(crate) fn lookup_raw(&self, name: &str) -> Option<String> {
        self.lookup.get(name)
    }

    /// Parses `var` (or its default) as `T`; a bad value is recorded and
    /// `None` returned.
    pub fn parse<T>(&mut self, var: &Var) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.raw(var)?;
        match raw.trim().parse::<T>() {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(var, format!("{error} (got {raw:?})"));
                None
            }
        }
    }

    /// Parses `var` with `parse`; an error is recorded and `None` returned.
    pub fn parse_with<T>(
        &mut self,
        var: &Var,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse_with_shown(var, str::to_owned, parse)
    }

    /// Like [`EnvReader::parse_with`], but a problem shows the value as
    /// `shown` renders it (a URL without its password, say).
    pub fn parse_with_shown<T>(
        &mut self,
        var: &Var,
        shown: impl Fn(&str) -> String,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw(var)?;
        match parse(raw.trim()) {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(var, format!("{error} (got {:?})", shown(&raw)));
                None
            }
        }
    }

    /// Records a problem with `var`.
    pub fn problem(&mut self, var: &Var, message: impl Display) {
        self.problems.push(format!("{}: {message}", var.name));
    }

    /// Ends reading: `value` when nothing was wrong, every problem otherwise.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) if self.problems.is_empty() => Ok(value),
            _ => Err(ConfigError {
                problems: if self.problems.is_empty() {
                    vec![String::from("a required variable is missing")]
                } else {
                    self.problems
                },
            }),
        }
    }
}

/// Parses `true`/`false` (and 1/0, yes/no).
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(String::from("expected true or false")),
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the service.
    Run,
    /// Move the events of the service's stream to the subject layout of
    /// this version, then exit (`migrate-subjects`).
    MigrateSubjects,
    /// Print this text and exit 0.
    Print(String),
    /// Print this text and exit 2.
    Usage(String),
}

/// Interprets the arguments: `--help`/`-h`, `--version`/`-V`,
/// `migrate-subjects`, or nothing.
pub fn command(
    args: impl IntoIterator<Item = String>,
    binary: &str,
    about: &str,
    vars: &[Var],
) -> Command {
    let args: Vec<String> = args.into_iter().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Command::Run,
        Some("migrate-subjects") if args.len() == 1 => Command::MigrateSubjects,
        Some("--help" | "-h" | "help") => Command::Print(help(binary, about, vars)),
        Some("--version" | "-V") => {
            Command::Print(format!("{binary} {}", env!("CARGO_PKG_VERSION")))
        }
        Some(other) => Command::Usage(format!(
            "{binary}: unexpected argument {other:?}; it is configured by environment variables.\nRun `{binary} --help` to see them."
        )),
    }
}

/// The `--help` text: every variable, its default and its meaning.
pub fn help(binary: &str, about: &str, vars: &[Var]) -> String {
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut out = format!(
        "{binary} {}\n{about}\n\nUsage: {binary} [--help | --version]\n       {binary} probe [--addr HOST:PORT] [--service NAME] [--timeout-ms N]   (gRPC health check: exit 0 only on SERVING)\n       {binary} migrate-subjects   (moves the service's events stored under the subjects of orderflow 0.1 to those of this version, then exits; docs/events.md)\n\nConfigured by environment variables (a .env file in the working directory is read when present):\n\n",
        env!("CARGO_PKG_VERSION")
    );
    for var in vars {
        let default = var
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        out.push_str(&format!("  {:width$}  {}{}\n", var.name, var.help, default));
    }
    out.push_str("\nBad or missing configuration stops start-up with one message naming every bad variable, and exit code 2.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let vars = [
            Var {
                name: "A_VAR",
                default: Some("1"),
                help: "a variable with a default",
            },
            Var {
                name: "B_VAR",
                default: None,
                help: "one without",
            },
        ];
        let text = help("svc", "about", &vars);
        let line = |name: &str| {
            text.lines()
                .filter(|line| line.split_whitespace().next() == Some(name))
                .collect::<Vec<_>>()
        };
        assert_eq!(line("A_VAR").len(), 1, "{text}");
        assert!(line("A_VAR")[0].ends_with("[default: 1]"), "{text}");
        assert_eq!(line("B_VAR").len(), 1, "{text}");
        assert!(!line("B_VAR")[0].contains("[default:"), "{text}");
    }

    #[test]
    fn unknown_arguments_are_a_usage_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command(args(&["svc"]), "svc", "", &[]), Command::Run);
        assert_eq!(
            command(args(&["svc", "migrate-subjects"]), "svc", "", &[]),
            Command::MigrateSubjects
        );
        assert!(matches!(
            command(args(&["svc", "migrate-subjects", "x"]), "svc", "", &[]),
            Command::Usage(_)
        ));
        assert!(matches!(
            command(args(&["svc", "--help"]), "svc", "", &[]),
            Command::Print(_)
        ));
        assert!(matches!(
            command(args(&["svc", "--port"]), "svc", "", &[]),
            Command::Usage(_)
        ));
    }
}
