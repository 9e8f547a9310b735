//! The live progress line on stderr, once a second.
//!
//! stdout carries only the result (the table, or one JSON object with
//! `--json`), so the progress line can never corrupt what a script parses.
//! On a terminal the line rewrites itself (`\r`); otherwise each second is a
//! line of its own, which reads well in CI logs.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use crate::{load::CreateStats, saga::SagaTracker};

/// A running progress line; stops (and ends its line) when dropped.
pub struct Progress {
    task: Option<JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    /// Starts printing the progress of phase `name`; does nothing when
    /// `quiet`.
    pub fn start(
        name: String,
        quiet: bool,
        stats: Arc<CreateStats>,
        tracker: Arc<SagaTracker>,
    ) -> Self {
        let terminal = std::io::stderr().is_terminal();
        if quiet {
            return Self {
                task: None,
                terminal,
            };
        }
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let (mut last_ok, mut last_sagas) = (stats.ok_total(), tracker.completed_total());
            loop {
                ticks.tick().await;
                let (ok, sagas) = (stats.ok_total(), tracker.completed_total());
                let line = format!(
                    "[{name} {:>4.0}s] create {:>7}/s ok {:>8} err {:>5} | sagas {:>7}/s pending {:>6}",
                    start.elapsed().as_secs_f64(),
                    ok - last_ok,
                    ok,
                    stats.errors_total(),
                    sagas - last_sagas,
                    tracker.pending(),
                );
                (last_ok, last_sagas) = (ok, sagas);
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
        });
        Self {
            task: Some(task),
            terminal,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.terminal {
                eprintln!();
            }
        }
    }
}
