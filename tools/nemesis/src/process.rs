//! The processes of a run, each restartable with the same command, and the
//! signals the nemesis sends them.
//!
//! Signals other than SIGKILL go through `kill(1)`, so the crate needs
//! neither `unsafe` nor a libc binding for four signal numbers.

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command as AsyncCommand};

/// Why a process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Start {
        /// The process's name in the run.
        name: String,
        /// What was run.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its log file could not be opened.
    #[error("cannot open {path}: {source}")]
    Log {
        /// The log's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One process of the run: how to start it, and the running child if any.
#[derive(Debug)]
pub struct Proc {
    /// Its name in the fault log (`nats-1`, `order-0`, `gateway`).
    pub name: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Stopped by SIGSTOP and not continued yet.
    paused: bool,
}

impl Proc {
    /// A process that runs `argv` with `env`, appending both output
    /// streams to `log`. Not started yet.
    pub fn new(name: &str, argv: Vec<String>, env: Vec<(String, String)>, log: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            argv,
            env,
            log,
            child: None,
            paused: false,
        }
    }

    /// Starts it (again).
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let log = |path: &PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ProcessError::Log {
                    path: path.clone(),
                    source,
                })
        };
        let (out, err) = (log(&self.log)?, log(&self.log)?);
        let (program, args) = self.argv.split_first().ok_or_else(|| ProcessError::Start {
            name: self.name.clone(),
            program: String::new(),
            source: std::io::Error::other("empty command"),
        })?;
        let child = AsyncCommand::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Start {
                name: self.name.clone(),
                program: program.clone(),
                source,
            })?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Whether it runs (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether it is stopped by SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGKILL, and waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.paused = false;
    }

    /// SIGTERM, and waits up to `grace` for the exit (then SIGKILL).
    /// Returns the exit code when it exited by itself.
    pub async fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        if self.paused {
            self.signal_pid(&child, "CONT");
            self.paused = false;
        }
        self.signal_pid(&child, "TERM");
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// SIGSTOP: the process holds its sockets and its messages, and answers
    /// nothing.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            self.signal_pid(child, "STOP");
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            self.signal_pid(child, "CONT");
        }
        self.paused = false;
    }

    /// The process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn signal_pid(&self, child: &Child, signal: &str) {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }
}
