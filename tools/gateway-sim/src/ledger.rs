//! The ledger: every operation the gateway accepted, one JSON object a line in
//! `<data dir>/ledger.jsonl`, appended and fsynced before the answer is sent,
//! and replayed on start so the idempotency map survives a restart.
//!
//! A SIGKILL can leave the last line half written. Replay ignores such a
//! line with a warning and cuts it off the file, so the next append starts on
//! a fresh line; an unreadable line before the last one is corruption, which
//! refuses to start instead of guessing.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The ledger's file name inside the data directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";

/// What kind of operation an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A charge (authorized or declined).
    Charge,
    /// A full refund of a charge.
    Refund,
}

/// How an accepted operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Money moved: a charge authorized, or a refund made.
    Succeeded,
    /// A charge refused (above the decline threshold); no money moved.
    Declined,
}

/// One accepted operation, as stored and as answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the ledger, from 1, never reused.
    pub seq: u64,
    /// When it was accepted, RFC 3339 in UTC.
    pub time: String,
    /// Charge or refund.
    pub operation: Operation,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: String,
    /// The gateway's id of this operation (`ch_…` or `re_…`).
    pub reference: String,
    /// The amount in minor units of `currency` (a refund's is its charge's).
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Succeeded or declined.
    pub outcome: Outcome,
    /// Why a charge was declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A refund's charge reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// The W3C `traceparent` the call carried, tying the operation to the
    /// caller's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Why the ledger could not be opened or appended to.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file system failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A line other than the last cannot be read: the file is damaged.
    #[error("ledger {path}: line {line} is not a ledger entry ({reason}); refusing to start")]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
}

/// A torn last line found (and cut off) by replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// 1-based line number of the torn line.
    pub line: usize,
    /// How many bytes were cut off.
    pub bytes: usize,
}

/// The ledger file and its in-memory indexes.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    len: u64,
    entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    by_reference: HashMap<String, usize>,
    refund_of_charge: HashMap<String, usize>,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`, replaying what it holds.
    pub fn open(dir: &Path) -> Result<(Self, Option<TornTail>), LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        let mut ledger = Self {
            path: path.clone(),
            file,
            len: 0,
            entries: Vec::new(),
            by_key: HashMap::new(),
            by_reference: HashMap::new(),
            refund_of_charge: HashMap::new(),
        };
        let mut torn = None;
        let mut offset = 0usize;
        let mut lines = text.split_inclusive(|b| *b == b'\n').enumerate().peekable();
        while let Some((n, line)) = lines.next() {
            let last = lines.peek().is_none();
            let parsed = if line.ends_with(b"\n") {
                serde_json::from_slice::<Entry>(line).map_err(|e| e.to_string())
            } else {
                Err(String::from("no end of line"))
            };
            match parsed {
                Ok(entry) => {
                    offset += line.len();
                    ledger.index(entry);
                }
                Err(_) if last => {
                    torn = Some(TornTail {
                        line: n + 1,
                        bytes: line.len(),
                    });
                }
                Err(reason) => {
                    return Err(LedgerError::Corrupt {
                        path,
                        line: n + 1,
                        reason,
                    });
                }
            }
        }
        ledger.len = offset as u64;
        if torn.is_some() {
            ledger.file.set_len(ledger.len).map_err(io)?;
            ledger.file.sync_data().map_err(io)?;
        }
        Ok((ledger, torn))
    }

    fn index(&mut self, entry: Entry) {
        let at = self.entries.len();
        self.by_key.insert(entry.idempotency_key.clone(), at);
        self.by_reference.insert(entry.reference.clone(), at);
        if let Some(charge) = &entry.charge {
            self.refund_of_charge.insert(charge.clone(), at);
        }
        self.entries.push(entry);
    }

    /// Every entry, in the order accepted.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry made under `key`, if any.
    pub fn by_key(&self, key: &str) -> Option<&Entry> {
        self.by_key.get(key).map(|&i| &self.entries[i])
    }

    /// The entry whose reference is `reference`, if any.
    pub fn by_reference(&self, reference: &str) -> Option<&Entry> {
        self.by_reference.get(reference).map(|&i| &self.entries[i])
    }

    /// The refund of charge `reference`, if any.
    pub fn refund_of(&self, reference: &str) -> Option<&Entry> {
        self.refund_of_charge
            .get(reference)
            .map(|&i| &self.entries[i])
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.entries.last().map_or(1, |e| e.seq + 1)
    }

    /// Appends `entry` and fsyncs it; only then is it part of the ledger.
    /// On failure the file is cut back to its previous length, so a failed
    /// write leaves no half line for the next one to follow.
    pub fn append(&mut self, entry: Entry) -> Result<&Entry, LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&entry).map_err(|e| io(io::Error::other(e)))?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // The file is in append mode: the next write lands at the new end.
            let _ = self.file.set_len(self.len);
            return Err(io(error));
        }
        self.len += line.len() as u64;
        self.index(entry);
        let at = self.entries.len() - 1;
        Ok(&self.entries[at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, key: &str) -> Entry {
        Entry {
            seq,
            time: String::from("2026-01-01T00:00:00Z"),
            operation: Operation::Charge,
            idempotency_key: key.into(),
            reference: format!("ch_{seq}"),
            amount_minor: 100,
            currency: String::from("EUR"),
            outcome: Outcome::Succeeded,
            reason: None,
            charge: None,
            traceparent: None,
        }
    }

    #[test]
    fn a_corrupt_line_before_the_last_refuses_to_open() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let good = serde_json::to_string(&entry(1, "k"))?;
        std::fs::write(
            dir.path().join(LEDGER_FILE),
            format!("{good}\nnot json\n{good}\n"),
        )?;
        let opened = Ledger::open(dir.path());
        assert!(
            matches!(opened, Err(LedgerError::Corrupt { line: 2, .. })),
            "{opened:?}"
        );
        Ok(())
    }
}
