//! What persist is asked to do, free of clap: resolved once from the flags, so that
//! anything (a command line, a `pipeline` stage) can open and run the sink.

use std::path::PathBuf;
use std::time::Duration;

use crate::json::FieldPath;
use crate::postgres::Table;

use super::version::VersionType;
use super::{Args, ColumnMap, OnConflict, Tombstones};

/// The settings of the flags of the same names in [`Args`] (see their `--help`).
#[derive(Clone, Debug)]
pub struct Options {
    pub database_url: Option<String>,
    pub sqlite: PathBuf,
    pub table: Table,
    pub create_table: bool,
    pub key: FieldPath,
    pub key_column: String,
    pub keep_meta: bool,
    pub columns: Vec<ColumnMap>,
    pub batch_size: u32,
    pub linger: Duration,
    pub version_field: Option<FieldPath>,
    pub version_type: VersionType,
    pub on_conflict: OnConflict,
    pub tombstones: Tombstones,
    pub connections: u32,
    pub offsets_table: Table,
    pub emit: bool,
    pub connect_timeout: Duration,
    /// The metadata field (`--meta-field`).
    pub meta_field: String,
    /// Only errors on stderr (`--quiet`).
    pub quiet: bool,
}

impl From<&Args> for Options {
    fn from(a: &Args) -> Options {
        Options {
            database_url: a.database_url.clone(),
            sqlite: a.sqlite.clone(),
            table: a.table.clone(),
            create_table: a.create_table,
            key: a.key.clone(),
            key_column: a.key_column.clone(),
            keep_meta: a.keep_meta,
            columns: a.columns.clone(),
            batch_size: a.batch_size,
            linger: a.linger,
            version_field: a.version_field.clone(),
            version_type: a.version_type,
            on_conflict: a.on_conflict,
            tombstones: a.tombstones,
            connections: a.connections,
            offsets_table: a.offsets_table.clone(),
            emit: a.emit,
            connect_timeout: a.connect_timeout,
            meta_field: a.common.meta_field.clone(),
            quiet: a.common.quiet,
        }
    }
}
