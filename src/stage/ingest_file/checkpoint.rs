//! `--positions FILE`: read positions kept in a checkpoint file between runs.
//!
//! A batch's lines carry one [`Ack`]; when it fires (the lines were written to stdout,
//! or in `pipeline` the last stage handled them) the positions after those lines are
//! recorded, in the order the batches were read: a batch handled early waits for the
//! ones before it, so a recorded position never passes a line not yet handled. A batch
//! that is lost (the run failed downstream) stops the positions where it starts. The
//! file is rewritten atomically (write a temporary file, fsync, rename, fsync the
//! directory) at most every [`WRITE_INTERVAL`] and at the end: after a crash, lines
//! since the last write are read again; no line is skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::event::Ack;
use crate::exit::{Error, Exit, Result};

/// How often, at most, the checkpoint file is rewritten while lines flow: each rewrite
/// is two fsyncs (a few milliseconds on a disk), and a crash re-reads at most this much.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// What is known of one file: where its next unread line starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file_id: String,
    pub path: String,
    /// The offset of the first byte not yet handled (of the decompressed text, for a
    /// compressed file).
    pub offset: u64,
    /// Lines before `offset`.
    pub line: u64,
    /// When the file was last seen (unix seconds), for `--forget-after`.
    pub seen: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<Entry>,
}

/// The checkpoint file and the positions handled so far.
pub struct Checkpoint {
    path: PathBuf,
    forget_after: Duration,
    state: Mutex<State>,
    settled: Condvar,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    dirty: bool,
    /// The sequence number the next batch gets.
    next: u64,
    /// Batches before this one are recorded.
    applied: u64,
    /// Batches handled out of order, waiting for earlier ones.
    waiting: BTreeMap<u64, Vec<Entry>>,
    /// A batch was lost: nothing after it may be recorded.
    lost: bool,
}

impl Checkpoint {
    /// Reads `path` (none yet: no positions). Exit 65 for a file that is not a
    /// checkpoint, 74 for one that cannot be read.
    pub fn load(path: &Path, forget_after: Duration) -> Result<Arc<Checkpoint>> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::new(
                        Exit::DataErr,
                        anyhow::anyhow!(
                            "--positions {}: not a positions file: {e}",
                            path.display()
                        ),
                    )
                })?;
                stored
                    .files
                    .into_iter()
                    .map(|e| (e.file_id.clone(), e))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::unreadable(
                    format!("--positions {}", path.display()),
                    &e,
                    Exit::IoErr,
                ))
            }
        };
        Ok(Arc::new(Checkpoint {
            path: path.to_owned(),
            forget_after,
            state: Mutex::new(State {
                entries,
                ..State::default()
            }),
            settled: Condvar::new(),
        }))
    }

    /// Every entry, for recognising files.
    pub fn entries(&self) -> Vec<Entry> {
        let s = self.state.lock().expect("not poisoned");
        s.entries.values().cloned().collect()
    }

    /// The acknowledgement of a batch that ends the files it read at `after`.
    pub fn ticket(self: &Arc<Self>, after: Vec<Entry>) -> Ack {
        let seq = {
            let mut s = self.state.lock().expect("not poisoned");
            s.next += 1;
            s.next - 1
        };
        let (done, lost) = (self.clone(), self.clone());
        Ack::with_loss(
            move || done.handled(seq, after),
            move || {
                lost.state.lock().expect("not poisoned").lost = true;
                lost.settled.notify_all();
            },
        )
    }

    /// Records positions reached with nothing sent (only dead letters or blank lines):
    /// in order behind the batches still out.
    pub fn reached(self: &Arc<Self>, after: Vec<Entry>) {
        drop(self.ticket(after));
    }

    fn handled(&self, seq: u64, after: Vec<Entry>) {
        let mut s = self.state.lock().expect("not poisoned");
        s.waiting.insert(seq, after);
        while !s.lost {
            let applied = s.applied;
            let Some(entries) = s.waiting.remove(&applied) else {
                break;
            };
            for e in entries {
                s.entries.insert(e.file_id.clone(), e);
            }
            s.applied += 1;
            s.dirty = true;
        }
        self.settled.notify_all();
    }

    /// Notes that the file `file_id` still exists (its entry is not forgotten).
    pub fn seen(&self, file_id: &str) {
        let mut s = self.state.lock().expect("not poisoned");
        if let Some(e) = s.entries.get_mut(file_id) {
            e.seen = now();
        }
    }

    /// Waits until every batch handed out is handled or lost, `timeout` at most.
    pub fn settle(&self, timeout: Duration) {
        let s = self.state.lock().expect("not poisoned");
        let _ = self
            .settled
            .wait_timeout_while(s, timeout, |s| !s.lost && s.applied < s.next);
    }

    /// Rewrites the file when positions changed, first dropping entries of files gone
    /// longer than `--forget-after`.
    pub fn write(&self) -> Result<()> {
        let stored = {
            let mut s = self.state.lock().expect("not poisoned");
            let horizon = now().saturating_sub(self.forget_after.as_secs());
            let before = s.entries.len();
            s.entries.retain(|_, e| e.seen >= horizon);
            if !s.dirty && s.entries.len() == before {
                return Ok(());
            }
            s.dirty = false;
            Stored {
                version: 1,
                files: s.entries.values().cloned().collect(),
            }
        };
        write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(&stored).expect("plain data"),
        )
        .map_err(|e| {
            Error::new(
                Exit::IoErr,
                anyhow::anyhow!("--positions {}: {e}", self.path.display()),
            )
        })
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or("positions".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, offset: u64) -> Entry {
        Entry {
            file_id: id.into(),
            path: "p".into(),
            offset,
            line: offset,
            seen: now(),
        }
    }

    #[test]
    fn positions_advance_in_read_order_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        let c = Checkpoint::load(&path, Duration::from_secs(3600)).unwrap();
        let first = c.ticket(vec![entry("a", 10)]);
        let second = c.ticket(vec![entry("a", 20)]);
        drop(second); // handled before the first: waits for it
        assert!(c.entries().is_empty());
        drop(first);
        assert_eq!(c.entries()[0].offset, 20);
        c.settle(Duration::from_secs(1));
        c.write().unwrap();
        let again = Checkpoint::load(&path, Duration::from_secs(3600)).unwrap();
        assert_eq!(again.entries(), c.entries());
    }

    #[test]
    fn a_lost_batch_stops_the_positions_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::load(&dir.path().join("pos.json"), Duration::from_secs(60)).unwrap();
        let lost = c.ticket(vec![entry("a", 10)]);
        let later = c.ticket(vec![entry("a", 20)]);
        lost.disarm();
        drop(lost);
        drop(later);
        assert!(c.entries().is_empty());
        c.settle(Duration::from_secs(1));
    }

    #[test]
    fn entries_of_files_gone_too_long_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        let c = Checkpoint::load(&path, Duration::from_secs(60)).unwrap();
        let mut old = entry("old", 5);
        old.seen -= 120;
        c.reached(vec![old, entry("new", 7)]);
        c.write().unwrap();
        let again = Checkpoint::load(&path, Duration::from_secs(60)).unwrap();
        let ids: Vec<_> = again.entries().into_iter().map(|e| e.file_id).collect();
        assert_eq!(ids, ["new"]);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"version\": 1"));
    }
}
