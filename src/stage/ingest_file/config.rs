//! What ingest-file runs with: a plain config resolved from its flags once, so that
//! anything (a command line, a `pipeline` stage) can build the source.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::exit::{Error, Result};
use crate::postgres::Table;

use super::discover::Globs;
use super::{Args, From, Order};

/// Settings fixed at start (see the flags of the same names in [`Args`]).
#[derive(Clone, Debug)]
pub struct Config {
    pub globs: Globs,
    pub follow: bool,
    pub poll: Option<Duration>,
    pub order: Order,
    pub from: From,
    pub rotate_wait: Duration,
    pub fingerprint_bytes: u64,
    pub exit_when_idle: Option<Duration>,
    pub positions: Positions,
    pub max_line_bytes: u64,
    /// Stored bytes read so far (the progress bar's position).
    pub consumed: Arc<AtomicU64>,
}

/// Where read positions are kept between runs.
#[derive(Clone, Debug)]
pub enum Positions {
    /// Nowhere: every run starts by `--from`.
    None,
    /// A checkpoint file (`--positions`).
    File {
        path: PathBuf,
        forget_after: Duration,
    },
    /// persist's offsets table (`--positions-from`): exactly once.
    Database {
        url: String,
        name: String,
        table: Table,
        connect_timeout: Duration,
    },
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let globs = Globs::new(&args.paths).map_err(Error::usage)?;
        let positions = match (&args.positions, &args.positions_from) {
            (Some(path), _) => Positions::File {
                path: path.clone(),
                forget_after: args.forget_after,
            },
            (None, Some(url)) => Positions::Database {
                url: url.clone(),
                name: args.positions_name.clone().expect("clap requires it"),
                table: args.positions_table.clone(),
                connect_timeout: args.connect_timeout,
            },
            (None, None) => Positions::None,
        };
        if args.positions_name.is_some() && args.positions_from.is_none() {
            return Err(Error::usage(
                "--positions-name names positions in --positions-from: give that too",
            ));
        }
        Ok(Config {
            globs,
            follow: args.follow,
            poll: args.poll,
            order: args.order,
            from: args.from,
            rotate_wait: args.rotate_wait,
            fingerprint_bytes: args.fingerprint_bytes,
            exit_when_idle: args.exit_when_idle,
            positions,
            max_line_bytes: args.common.max_line_bytes,
            consumed: Arc::default(),
        })
    }
}
