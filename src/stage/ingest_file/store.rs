//! Where read positions are kept between runs: nowhere, a checkpoint file
//! ([`Checkpoint`]), or persist's offsets table ([`Claims`], exactly once). Recognises
//! the files a past run read, and says where each resumes.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::event::Ack;
use crate::exit::Result;
use crate::postgres::Claims;

use super::checkpoint::{self, Checkpoint, Entry};
use super::config::Positions;
use super::identity::FileId;
use super::render::SOURCE;

/// Where a known file resumes.
pub struct Known {
    pub id: FileId,
    pub offset: u64,
    /// Lines before `offset`, when stored (the offsets table keeps none).
    pub line: Option<u64>,
}

pub enum Store {
    None,
    File(Arc<Checkpoint>),
    Database {
        /// Boxed: a connection and its runtime are large beside the other variants.
        claims: Box<Claims>,
        /// `--positions-name`, and the table's scope for it (`file:NAME`).
        name: String,
        scope: String,
        /// Files with a committed next offset.
        committed: Vec<(FileId, u64)>,
    },
}

impl Store {
    /// Reads the checkpoint file, or connects to the database and reads what this
    /// name's readers committed.
    pub fn open(positions: &Positions) -> Result<Store> {
        Ok(match positions {
            Positions::None => Store::None,
            Positions::File { path, forget_after } => {
                Store::File(Checkpoint::load(path, *forget_after)?)
            }
            Positions::Database {
                url,
                name,
                table,
                connect_timeout,
            } => {
                let claims = Box::new(Claims::connect(
                    url,
                    table,
                    "--positions-from",
                    "ndpipe ingest-file",
                    *connect_timeout,
                )?);
                let scope = format!("{SOURCE}:{name}");
                let committed = claims
                    .committed(&scope)?
                    .into_iter()
                    .filter_map(|(stream, _, next)| {
                        Some((FileId::parse(&stream)?, u64::try_from(next).ok()?))
                    })
                    .collect();
                Store::Database {
                    claims,
                    name: name.clone(),
                    scope,
                    committed,
                }
            }
        })
    }

    /// The name positions are stamped with in exactly-once mode.
    pub fn positions_name(&self) -> Option<String> {
        match self {
            Store::Database { name, .. } => Some(name.clone()),
            _ => None,
        }
    }

    /// Which known file the open file `f` is, and where it resumes.
    pub fn recognise(&self, f: &File) -> io::Result<Option<Known>> {
        match self {
            Store::None => Ok(None),
            Store::File(c) => {
                for e in c.entries() {
                    if let Some(id) = FileId::parse(&e.file_id) {
                        if id.matches(f)? {
                            return Ok(Some(Known {
                                id,
                                offset: e.offset,
                                line: Some(e.line),
                            }));
                        }
                    }
                }
                Ok(None)
            }
            Store::Database { committed, .. } => {
                for (id, next) in committed {
                    if id.matches(f)? {
                        return Ok(Some(Known {
                            id: id.clone(),
                            offset: *next,
                            line: None,
                        }));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Takes ownership of `id` before its lines are read (exactly-once mode): its
    /// committed next offset, if any, and the epoch its events carry.
    pub fn claim(&self, id: &FileId) -> Result<(Option<u64>, Option<i64>)> {
        match self {
            Store::Database { claims, scope, .. } => {
                let (next, epoch) = claims.claim(scope, &id.to_string(), &[0])?[0];
                Ok((next.and_then(|n| u64::try_from(n).ok()), Some(epoch)))
            }
            _ => Ok((None, None)),
        }
    }

    /// The acknowledgement of a batch after which the files stand at `after`
    /// (`--positions`); none otherwise: the offsets table is written by persist.
    pub fn ticket(&self, after: Vec<Entry>) -> Option<Ack> {
        match self {
            Store::File(c) => Some(c.ticket(after)),
            _ => None,
        }
    }

    /// Positions reached with nothing sent (dead letters, blank lines).
    pub fn reached(&self, after: Vec<Entry>) {
        if let Store::File(c) = self {
            c.reached(after);
        }
    }

    pub fn seen(&self, id: &FileId) {
        if let Store::File(c) = self {
            c.seen(&id.to_string());
        }
    }

    /// Rewrites the checkpoint file when positions moved.
    pub fn write(&self) -> Result<()> {
        match self {
            Store::File(c) => c.write(),
            _ => Ok(()),
        }
    }

    /// The end of the run: waits (`timeout` at most) for the batches still out to be
    /// handled, then writes the last positions.
    pub fn finish(&self, timeout: Duration) -> Result<()> {
        if let Store::File(c) = self {
            c.settle(timeout);
        }
        self.write()
    }
}

/// A checkpoint entry: `file` stands at `offset` after `line` lines.
pub fn entry(id: &FileId, path: &str, offset: u64, line: u64) -> Entry {
    Entry {
        file_id: id.to_string(),
        path: path.to_owned(),
        offset,
        line,
        seen: checkpoint::now(),
    }
}
