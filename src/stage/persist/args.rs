//! persist's flags (clap), column maps and type names, and the examples its `--help`
//! ends with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::cli::Common;
use crate::json::FieldPath;
use crate::postgres::{is_ident, parse_ident, Table};

use super::version::VersionType;

pub(super) const EXAMPLES: &str = "\
Examples:
  No database set up: rows go to the SQLite file ndpipe.db:
    persist --create-table --table events \\
      --dead-letter rejects.ndjson < events.ndjson

  PostgreSQL, monotonic on a version field, rejects kept:
    export DATABASE_URL=postgres://app@db.internal/events
    validate --require id --dead-letter rejects.ndjson \\
      < events.ndjson \\
      | persist --table raw.events --create-table \\
        --version-field meta.seq \\
        --dead-letter rejects.ndjson

  Typed columns; pass on what commits:
    persist --table orders --create-table \\
      --key-column order_id --key id \\
      --column amount=amount:numeric \\
      --column placed_at=ts:timestamptz \\
      --dead-letter rejects.ndjson --emit < events.ndjson \\
      | tee committed.ndjson | wc -l";

/// Upsert NDJSON events into PostgreSQL (or a local SQLite file), idempotently.
///
/// Every event becomes one row keyed by --key. Replaying the same events changes nothing;
/// with --version-field an older event never overwrites a newer row. Rows are written in
/// batches, one transaction each, together with the Kafka offsets the events came from.
/// The database is chosen by --database-url, else DATABASE_URL, else the libpq variables
/// PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE; with none of them set, rows go
/// to the SQLite file --sqlite. Events without a key, and rows the database refuses, go to
/// the dead-letter output; the rest of their batch commits. When the database goes away,
/// persist waits for it and replays the batch.
#[derive(Parser, Clone, Debug)]
#[command(name = "persist", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Input files, read in order. `-` or none means stdin.
    #[arg(value_name = "FILE")]
    pub inputs: Vec<PathBuf>,

    /// PostgreSQL connection: a URL (postgres://user:pass@host:port/db?sslmode=require) or
    /// libpq key=value pairs. sslmode: disable, prefer, require (encrypted, certificate not
    /// checked), verify-ca or verify-full (checked against the system's roots).
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The SQLite file used when no PostgreSQL connection is configured.
    #[arg(long, value_name = "PATH", default_value = "ndpipe.db")]
    pub sqlite: PathBuf,

    /// Table to write, NAME or SCHEMA.NAME; each part matches [A-Za-z_][A-Za-z0-9_]{0,62}.
    #[arg(long, value_name = "NAME", default_value = "events", value_parser = Table::parse)]
    pub table: Table,

    /// Create the table when missing: key text primary key, payload jsonb not null, meta
    /// jsonb, version (--version-type), first_seen and updated_at timestamptz, plus the
    /// --column columns (which then need a type).
    #[arg(long)]
    pub create_table: bool,

    /// The event field holding the row key (a string or a number). Events without it are
    /// dead letters.
    #[arg(long, value_name = "FIELD", default_value = "id")]
    pub key: FieldPath,

    /// The table column holding the key; it needs a unique index (primary key).
    #[arg(long, value_name = "COLUMN", default_value = "key", value_parser = parse_ident)]
    pub key_column: String,

    /// Keep the metadata field inside `payload` too (it is always stored in `meta`).
    #[arg(long)]
    pub keep_meta: bool,

    /// Also write FIELD into the typed column COL of the table, cast to TYPE (default: the
    /// column's own type). A value that does not fit is a dead letter for that row only.
    /// Repeatable.
    #[arg(long = "column", value_name = "COL=FIELD[:TYPE]", value_parser = parse_column)]
    pub columns: Vec<ColumnMap>,

    /// Rows per transaction, at most. Each connection holds two batches (one committing,
    /// one filling): at the default, 8,000 rows with two connections. 5,000 was no faster
    /// into an empty table (alone: ±3 % either way between runs; in a pipeline: the same)
    /// and held 12 MiB more.
    #[arg(long, value_name = "ROWS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Longest time a row waits for its batch to fill before it is written anyway: a
    /// duration (100ms, 1s). The old spelling `--linger-ms N` (milliseconds) still works.
    #[arg(long, alias = "linger-ms", value_name = "DURATION", default_value = "100ms", value_parser = crate::cli::parse_duration)]
    pub linger: Duration,

    /// Event field holding a version: a stored row is only replaced by an event whose
    /// version is not older, so replaying old events never overwrites newer data. Inside
    /// one batch the highest version wins. Events without it are dead letters.
    #[arg(long, value_name = "FIELD")]
    pub version_field: Option<FieldPath>,

    /// SQL type of the version column.
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = VersionType::Bigint)]
    pub version_type: VersionType,

    /// What a row whose key is already stored does: update it (when the content differs
    /// and the version is not older), or leave the stored row alone.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OnConflict::Update)]
    pub on_conflict: OnConflict,

    /// What a tombstone does: an event whose metadata field says "tombstone":true (a Kafka
    /// message with a null payload, as ingest-kafka writes it: a delete on a compacted
    /// topic, or from CDC). dead-letter rejects it (kind tombstone); delete deletes the row
    /// of its message key (the metadata's "key"), in order with that key's other events
    /// and under the --version-field rule (a tombstone older than the stored row deletes
    /// nothing).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Tombstones::DeadLetter)]
    pub tombstones: Tombstones,

    /// Database connections loading batches at once; rows are routed by key, so each key's
    /// events stay in order. SQLite always uses one. In `pipeline --file`, a new count
    /// takes effect on reload.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,

    /// Table of source offsets (group, topic, partition → next_offset, epoch), written in
    /// the same transaction as the rows of events that carry Kafka metadata.
    #[arg(long, value_name = "NAME", default_value = "ndpipe_offsets", value_parser = Table::parse)]
    pub offsets_table: Table,

    /// Write every event of a committed batch to stdout once its transaction has
    /// committed: stored ones, unchanged ones, and those superseded in their batch by a
    /// later event of the same key (the summary counts the same events as "out").
    #[arg(long)]
    pub emit: bool,

    /// Print the table's rows as NDJSON on stdout (ordered by key, every column) and
    /// exit, instead of loading: a quick look at what runs stored, in SQLite too.
    #[arg(long, conflicts_with_all = ["create_table", "emit"])]
    pub show: bool,

    /// How long to wait for the database at start before giving up (exit 69). Later
    /// outages are waited out without limit.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub common: Common,
}

/// What a tombstone does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tombstones {
    DeadLetter,
    Delete,
}

/// What to do with a row whose key is already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    Update,
    Ignore,
}

/// `--column COL=FIELD[:TYPE]`.
#[derive(Clone, Debug)]
pub struct ColumnMap {
    pub column: String,
    pub field: FieldPath,
    pub ty: Option<String>,
}

pub(super) fn parse_column(s: &str) -> std::result::Result<ColumnMap, String> {
    let (column, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected COL=FIELD[:TYPE]"))?;
    let column = parse_ident(column.trim())?;
    let (field, ty) = match rest.rsplit_once(':') {
        Some((f, t)) => (f, Some(t.trim())),
        None => (rest, None),
    };
    if let Some(t) = ty {
        if !is_type_name(t) {
            return Err(format!(
                "{t:?} is not a SQL type name (examples: bigint, numeric(12,2), timestamptz, text[])"
            ));
        }
    }
    Ok(ColumnMap {
        column,
        field: FieldPath::parse(field.trim())?,
        ty: ty.map(|t| t.to_ascii_lowercase()),
    })
}

/// SQL's type names of more than one word; any other type name is one identifier, with
/// an optional schema (`public.mytype`).
pub(super) const MULTI_WORD_TYPES: [&str; 7] = [
    "double precision",
    "character varying",
    "bit varying",
    "timestamp with time zone",
    "timestamp without time zone",
    "time with time zone",
    "time without time zone",
];

/// A strict type-name grammar (the name is written into SQL as it is): a type name as
/// above, an optional `(n)` or `(n,m)`, optional `[]`s. Nothing else gets through, so a
/// "type" such as `bool or pg_terminate_backend(123)` is refused.
pub(super) fn is_type_name(t: &str) -> bool {
    let mut body = t.trim();
    while let Some(b) = body.strip_suffix("[]") {
        body = b.trim_end();
    }
    let (base, args) = match body.find('(') {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    let words: Vec<&str> = base.split_ascii_whitespace().collect();
    let base_ok = match words.as_slice() {
        [] => false,
        [one] => {
            let mut parts = one.splitn(2, '.');
            parts.all(is_ident)
        }
        many => MULTI_WORD_TYPES.contains(&many.join(" ").to_ascii_lowercase().as_str()),
    };
    let args_ok = args.is_empty()
        || args
            .strip_prefix('(')
            .and_then(|a| a.strip_suffix(')'))
            .is_some_and(|inner| {
                let nums: Vec<&str> = inner.split(',').map(str::trim).collect();
                nums.len() <= 2
                    && nums.iter().all(|n| {
                        !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit())
                    })
            });
    base_ok && args_ok
}
