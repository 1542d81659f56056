//! `persist`: the sink. Idempotent, batched upserts of events into PostgreSQL, or into
//! the embedded SQLite default when no database is configured.
//!
//! The stage reads batches of events, turns each into a [`Row`] (key, payload without the
//! metadata field, metadata, version, typed columns, source position), routes rows by a
//! hash of their key to one of `--connections` loaders (so one key always takes the same
//! connection and per-key order holds), and flushes a loader's rows by `--batch-size` or
//! `--linger`. A loader picks one winner per key in its batch (highest version, else
//! the last in input order), then writes rows and source offsets in one transaction:
//!
//! - transient failures (connection lost, server restarting, serialization failures)
//!   replay the batch after a capped exponential backoff, forever: the process waits for
//!   the database rather than dropping data;
//! - a row the database refuses (a value that does not fit its column, a NUL in JSON)
//!   is isolated by splitting the batch, and goes to the dead-letter output; the rest
//!   commits;
//! - a partition whose owner moved on (a newer epoch in the offsets table) is fenced:
//!   the transaction is rolled back and redone without its events.
//!
//! Modules: [`postgres`] and [`sqlite`] hold each database's SQL; [`offsets`] decides which
//! source offsets may be recorded; [`version`] parses and orders `--version-field` values.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures::future::BoxFuture;
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::time::Instant;

use crate::cli::Common;
use crate::event::{Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json::{self, FieldPath};
use crate::postgres::{is_ident, parse_ident, quote_ident, ConnectSpec, Table};
use crate::progress::Progress;
use crate::stage::{Ctx, Kind, Stage, Stats};

pub mod offsets;
pub mod postgres;
pub mod show;
pub mod sqlite;
pub mod version;

use offsets::{Commit, PartKey, SourcePos, Tracker};
use version::{Version, VersionType};

const EXAMPLES: &str = "\
Examples:
  No database set up: rows go to the SQLite file ndpipe.db:
    persist --create-table --table events < events.ndjson

  PostgreSQL, monotonic on a version field, rejects kept:
    export DATABASE_URL=postgres://app@db.internal/events
    validate --require id | persist --table raw.events \\
      --version-field meta.seq --dead-letter rejects.ndjson

  Typed columns of an existing table; pass on what commits:
    persist --table orders --key-column order_id --key id \\
      --column amount=amount:numeric --column placed_at=ts \\
      --emit | tee committed.ndjson";

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

    /// Rows per transaction, at most.
    #[arg(long, value_name = "ROWS", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
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
    /// events stay in order. SQLite always uses one.
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

fn parse_column(s: &str) -> std::result::Result<ColumnMap, String> {
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
const MULTI_WORD_TYPES: [&str; 7] = [
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
fn is_type_name(t: &str) -> bool {
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

/// Which columns the target table has, resolved at start.
#[derive(Clone, Debug)]
pub struct Layout {
    pub table: Table,
    pub key_column: String,
    pub payload: bool,
    pub meta: bool,
    /// The version column's SQL type, with `--version-field`.
    pub version: Option<VersionType>,
    pub first_seen: bool,
    pub updated_at: bool,
    /// Typed columns: name and the type values are cast to.
    pub columns: Vec<(String, String)>,
    pub on_conflict: OnConflict,
    pub offsets_table: Table,
}

/// `CREATE TABLE IF NOT EXISTS` for `--create-table`, in one database's type names for
/// text, JSON, the version and timestamps; the `--column` columns carry their own types.
pub fn create_table_sql(args: &Args, text: &str, json: &str, version: &str, time: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} ({} {text} PRIMARY KEY NOT NULL, payload {json} NOT NULL, \
         meta {json}, version {version}, first_seen {time}, updated_at {time}",
        args.table.quoted(),
        quote_ident(&args.key_column),
    );
    for c in &args.columns {
        let ty =
            c.ty.as_deref()
                .expect("checked: --create-table needs types");
        sql.push_str(&format!(", {} {ty}", quote_ident(&c.column)));
    }
    sql.push(')');
    sql
}

/// Checks the table's columns (name, SQL type) against the flags and decides what to
/// write. `unique` says whether the key column has a unique index.
pub fn resolve_layout(
    args: &Args,
    columns: &[(String, String)],
    unique: bool,
    shown_db: &str,
) -> Result<Layout> {
    let table = &args.table;
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.to_ascii_lowercase())
    };
    if columns.is_empty() {
        return Err(Error::usage(format!(
            "table {table} does not exist in {shown_db} (add --create-table to create it)"
        )));
    }
    if type_of(&args.key_column).is_none() {
        return Err(Error::usage(format!(
            "table {table} has no key column {:?} (see --key-column)",
            args.key_column
        )));
    }
    if !unique {
        return Err(Error::usage(format!(
            "column {:?} of table {table} has no unique index: upserts need a primary key or \
             a unique constraint on it alone",
            args.key_column
        )));
    }
    let version = match &args.version_field {
        None => None,
        Some(_) => {
            let ty = type_of("version").ok_or_else(|| {
                Error::usage(format!(
                    "--version-field needs a \"version\" column in table {table}"
                ))
            })?;
            Some(match ty.as_str() {
                "bigint" | "integer" | "smallint" | "int" | "int8" | "int4" => VersionType::Bigint,
                t if t.starts_with("numeric") || t.starts_with("decimal") => VersionType::Numeric,
                "timestamp with time zone" | "timestamptz" => VersionType::Timestamptz,
                _ => args.version_type,
            })
        }
    };
    let mut typed = Vec::new();
    for c in &args.columns {
        let Some(ty) = type_of(&c.column) else {
            return Err(Error::usage(format!(
                "table {table} has no column {:?} (named by --column)",
                c.column
            )));
        };
        typed.push((c.column.clone(), c.ty.clone().unwrap_or(ty)));
    }
    Ok(Layout {
        table: table.clone(),
        key_column: args.key_column.clone(),
        payload: type_of("payload").is_some(),
        meta: type_of("meta").is_some(),
        version,
        first_seen: type_of("first_seen").is_some(),
        updated_at: type_of("updated_at").is_some(),
        columns: typed,
        on_conflict: args.on_conflict,
        offsets_table: args.offsets_table.clone(),
    })
}

/// One event ready to load.
pub struct Row {
    pub key: String,
    /// The event's JSON text without the metadata field, when it differs from the
    /// event's text (see [`Row::payload`]).
    payload: Option<String>,
    /// The metadata field's JSON text.
    pub meta: Option<String>,
    pub version: Option<Box<Version>>,
    /// Typed column values as text (JSON text for json/jsonb columns); None is NULL.
    pub columns: Box<[Option<String>]>,
    pub pos: Option<Box<SourcePos>>,
    pub event: Event,
    pub source: Arc<str>,
    /// A tombstone under `--tombstones delete`: the row of `key` is deleted.
    pub delete: bool,
}

impl Row {
    /// The JSON text stored as `payload`: the event without the metadata field (unless
    /// `--keep-meta`).
    pub fn payload(&self) -> &str {
        self.payload.as_deref().unwrap_or_else(|| self.event.text())
    }
}

/// The stage's settings, fixed before the first event.
pub struct Config {
    pub key: FieldPath,
    pub keep_meta: bool,
    pub columns: Vec<ColumnMap>,
    /// Per typed column: whether it takes JSON text (json/jsonb) rather than a scalar.
    pub column_json: Vec<bool>,
    pub version: Option<(FieldPath, VersionType)>,
    pub on_conflict: OnConflict,
    pub tombstones: Tombstones,
    /// `META.tombstone` and `META.key`: where a tombstone says so, and its key.
    tombstone_flag: FieldPath,
    tombstone_key: FieldPath,
    pub batch_size: usize,
    pub linger: Duration,
    pub emit: bool,
}

/// Counts the loaders keep, printed in the summary.
#[derive(Debug, Default)]
pub struct Counts {
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    pub unchanged: AtomicU64,
    /// Rows deleted by tombstones.
    pub deleted: AtomicU64,
    /// Events that lost to a later (or newer) event of the same key inside their batch.
    pub superseded: AtomicU64,
    pub rejected: AtomicU64,
    pub fenced: AtomicU64,
    pub retries: AtomicU64,
    pub batches: AtomicU64,
}

impl Counts {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// What follows "N out" in the summary: how the events handed on were stored, and
    /// the work it took. "Out" counts every event of a committed batch, as `--emit`
    /// writes them: superseded ones too (a later event of the same key in the same batch
    /// was stored instead, as if both had been written in turn).
    pub fn summary(&self) -> (String, String) {
        let n = |c: &AtomicU64| crate::human::count(Counts::get(c));
        (
            format!(
                " ({} inserted, {} updated, {} unchanged, {} deleted, {} superseded in their \
                 batch)",
                n(&self.inserted),
                n(&self.updated),
                n(&self.unchanged),
                n(&self.deleted),
                n(&self.superseded),
            ),
            format!(
                ", {} fenced, {} batches, {} retries",
                n(&self.fenced),
                n(&self.batches),
                n(&self.retries),
            ),
        )
    }
}

/// What one transaction did.
#[derive(Debug, Default)]
pub struct Loaded {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows deleted by tombstones.
    pub deleted: u64,
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum LoadError {
    /// Try again later (after reconnecting): nothing was committed.
    Transient(anyhow::Error),
    /// Partitions whose stored epoch is newer than the batch's: rolled back.
    Fenced(Vec<(Arc<PartKey>, i64)>),
    /// Retrying cannot help (table dropped, permission denied, ...).
    Fatal(anyhow::Error),
}

/// A database connection that can load batches: PostgreSQL or SQLite.
pub enum Loader {
    Postgres(Box<postgres::Loader>),
    Sqlite(sqlite::Loader),
}

impl Loader {
    /// Writes `rows` (one per key) and `commits` in one transaction. Rows the database
    /// refuses are passed to `reject` (before the commit) and left out.
    async fn load(
        &mut self,
        rows: &[&Row],
        commits: &[Commit],
        reject: &mut (dyn FnMut(usize, Reject) + Send),
    ) -> std::result::Result<Loaded, LoadError> {
        match self {
            Loader::Postgres(l) => l.load(rows, commits, reject).await,
            Loader::Sqlite(l) => l.load(rows, commits, reject).await,
        }
    }
}

impl Config {
    pub fn from_args(args: &Args, layout: &Layout) -> Config {
        Config {
            key: args.key.clone(),
            keep_meta: args.keep_meta,
            columns: args.columns.clone(),
            column_json: layout
                .columns
                .iter()
                .map(|(_, ty)| ty == "json" || ty == "jsonb")
                .collect(),
            version: args
                .version_field
                .clone()
                .map(|f| (f, layout.version.unwrap_or(args.version_type))),
            on_conflict: args.on_conflict,
            tombstones: args.tombstones,
            tombstone_flag: FieldPath::parse(&format!("{}.tombstone", args.common.meta_field))
                .expect("a field name and a plain segment"),
            tombstone_key: FieldPath::parse(&format!("{}.key", args.common.meta_field))
                .expect("a field name and a plain segment"),
            batch_size: args.batch_size as usize,
            linger: args.linger,
            emit: args.emit,
        }
    }

    /// Turns an event into a row, or says why it cannot be one.
    fn row(
        &self,
        mut event: Event,
        meta_field: &str,
        source: &Arc<str>,
        pos: Option<SourcePos>,
    ) -> std::result::Result<Row, (Event, Reject)> {
        match self.extract(&mut event, meta_field) {
            Ok((key, payload, meta, version, columns, delete)) => {
                // Rows wait for their transaction: keep them small.
                event.drop_index();
                Ok(Row {
                    key,
                    payload,
                    meta,
                    version: version.map(Box::new),
                    columns: columns.into_boxed_slice(),
                    pos: pos.map(Box::new),
                    event,
                    source: source.clone(),
                    delete,
                })
            }
            Err(r) => Err((event, r)),
        }
    }

    /// The key of an ordinary event: the `--key` field, a string or a number.
    fn key_of(&self, event: &mut Event, meta_field: &str) -> std::result::Result<String, Reject> {
        Ok(match event.get(&self.key, meta_field) {
            None | Some("null") => {
                return Err(Reject::new(
                    "missing_key",
                    format!("key field {} is missing", self.key),
                ))
            }
            Some(raw) => scalar_text(raw).ok_or_else(|| {
                Reject::new(
                    "bad_key",
                    format!(
                        "key field {} is {}, not a string or a number",
                        self.key,
                        json::type_of(raw)
                    ),
                )
            })?,
        })
    }

    #[allow(clippy::type_complexity)]
    fn extract(
        &self,
        event: &mut Event,
        meta_field: &str,
    ) -> std::result::Result<
        (
            String,
            Option<String>,
            Option<String>,
            Option<Version>,
            Vec<Option<String>>,
            bool,
        ),
        Reject,
    > {
        event.decode()?;
        let delete = event.get_with_meta(&self.tombstone_flag) == Some("true");
        if delete && self.tombstones == Tombstones::DeadLetter {
            return Err(Reject::new(
                "tombstone",
                "a tombstone (a message with a null payload); persist --tombstones delete \
                 deletes its key's row",
            ));
        }
        let key = if delete {
            let raw = event.get_with_meta(&self.tombstone_key).unwrap_or("null");
            scalar_text(raw).ok_or_else(|| {
                Reject::new(
                    "missing_key",
                    format!("a tombstone without a message key ({})", self.tombstone_key),
                )
            })?
        } else {
            self.key_of(event, meta_field)?
        };
        let version = match &self.version {
            None => None,
            Some((path, ty)) => {
                // The metadata is visible here: `_meta.offset` orders one partition's events.
                let raw = event.get_with_meta(path).ok_or_else(|| {
                    Reject::new(
                        "missing_version",
                        format!("version field {path} is missing"),
                    )
                })?;
                Some(Version::parse(raw, *ty).map_err(|e| {
                    Reject::new("bad_version", format!("version field {path}: {e}"))
                })?)
            }
        };
        let mut columns = Vec::with_capacity(self.columns.len());
        for (c, &as_json) in self.columns.iter().zip(&self.column_json) {
            columns.push(match event.get(&c.field, meta_field) {
                None | Some("null") => None,
                Some(raw) if as_json => Some(raw.to_owned()),
                Some(raw) => Some(scalar_text(raw).unwrap_or_else(|| raw.to_owned())),
            });
        }
        let (text, members) = event.text_and_members();
        let meta = json::find(text, members, meta_field).map(|m| text[m.value.clone()].to_owned());
        // PostgreSQL's jsonb refuses \u0000; both databases refuse it alike.
        if has_nul_escape(text) {
            return Err(Reject::new(
                "nul_in_json",
                "a string holds \\u0000, which jsonb cannot store",
            ));
        }
        let payload = match (self.keep_meta, json::remove(text, members, meta_field)) {
            (true, _) | (false, Cow::Borrowed(_)) => None,
            (false, Cow::Owned(p)) => Some(p),
        };
        Ok((key, payload, meta, version, columns, delete))
    }

    /// Whether `new` beats `old` for the same key inside one batch.
    fn wins(&self, new: &Row, old: &Row) -> bool {
        let by_version = match (&new.version, &old.version) {
            (Some(a), Some(b)) => a.order(b),
            _ => std::cmp::Ordering::Equal,
        };
        match by_version {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // Ties: the last in input order updates; with `ignore` the first stays.
            std::cmp::Ordering::Equal => self.on_conflict == OnConflict::Update,
        }
    }
}

/// A string's unescaped text, or a number's or boolean's text; None for objects, arrays
/// and null.
fn scalar_text(raw: &str) -> Option<String> {
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw).ok(),
        // Objects, arrays, null; and booleans, whose text would collide with the strings
        // "true" and "false".
        b'{' | b'[' | b'n' | b't' | b'f' => None,
        _ => Some(raw.to_owned()),
    }
}

/// Whether JSON text holds the escape `\u0000` (an even run of backslashes before `u0000`
/// is not an escape).
fn has_nul_escape(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memmem::find_iter(b, b"u0000").any(|i| {
        let slashes = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
        slashes % 2 == 1
    })
}

/// Reads the Kafka coordinates of the metadata field, when it has them all.
fn source_pos(meta: Option<&str>, parts: &mut HashMap<PartKey, Arc<PartKey>>) -> Option<SourcePos> {
    #[derive(serde::Deserialize)]
    struct Split {
        count: Option<u32>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        group: Option<String>,
        topic: Option<String>,
        partition: Option<i32>,
        offset: Option<i64>,
        epoch: Option<i64>,
        split: Option<Split>,
    }
    let meta = meta?;
    if !meta.contains("\"offset\"") {
        return None;
    }
    let m: Meta = serde_json::from_str(meta).ok()?;
    let key = PartKey {
        group: m.group?,
        topic: m.topic?,
        partition: m.partition?,
    };
    let part = match parts.get(&key) {
        Some(p) => p.clone(),
        None => {
            let p = Arc::new(key.clone());
            parts.insert(key, p.clone());
            p
        }
    };
    Some(SourcePos {
        part,
        offset: m.offset?,
        epoch: m.epoch,
        count: m.split.and_then(|s| s.count).unwrap_or(1),
    })
}

/// Shared between the router and the loaders.
struct Shared {
    config: Config,
    ctx: Ctx,
    tracker: Mutex<Tracker>,
    counts: Arc<Counts>,
    progress: Progress,
    /// The metrics facade's counters: received, sent (stored), rejected.
    counters: crate::metrics::StageCounters,
}

/// The stage: rows into the database through `loaders` (one per connection), events
/// passed on to `output` after commit when `--emit`.
pub async fn run(
    config: Config,
    loaders: Vec<Loader>,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
    counts: Arc<Counts>,
) -> Result<Stats> {
    let progress = ctx.progress.clone();
    let shared = Arc::new(Shared {
        config,
        ctx,
        tracker: Mutex::new(Tracker::default()),
        counts,
        progress,
        counters: crate::metrics::StageCounters::new("persist"),
    });
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let mut loaders = loaders;
    let last = loaders.pop().expect("at least one loader");
    let finisher = Arc::new(tokio::sync::Mutex::new(Some(last)));
    // Loader 0..n-1 own their connection; the last one is shared with the final offsets
    // transaction (it is idle by then).
    for loader in loaders {
        let (tx, rx) = mpsc::channel::<Vec<Row>>(1);
        senders.push(tx);
        let shared = shared.clone();
        let output = output.clone();
        tasks.push(tokio::spawn(async move {
            let mut loader = loader;
            load_loop(&shared, &mut loader, rx, output).await
        }));
    }
    {
        let (tx, rx) = mpsc::channel::<Vec<Row>>(1);
        senders.push(tx);
        let shared = shared.clone();
        let output = output.clone();
        let finisher = finisher.clone();
        tasks.push(tokio::spawn(async move {
            let mut guard = finisher.lock().await;
            let loader = guard.as_mut().expect("held until the end");
            load_loop(&shared, loader, rx, output).await
        }));
    }
    drop(output);

    let mut stats = Stats::default();
    let n = senders.len();
    let batch_size = shared.config.batch_size;
    let mut pending: Vec<Vec<Row>> = (0..n).map(|_| Vec::with_capacity(batch_size)).collect();
    let mut oldest: Option<Instant> = None;
    let mut parts = HashMap::new();
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let meta_field = shared.ctx.meta_field.clone();
    let mut open = true;
    while open {
        let deadline = oldest.map(|t| t + shared.config.linger);
        let got = tokio::select! {
            b = input.recv() => b,
            _ = sleep_until(deadline) => {
                if flush_all(&senders, &mut pending, &mut oldest).await.is_err() {
                    // A loader stopped: its own error, awaited below, says why.
                    open = false;
                }
                continue;
            }
        };
        let Some(batch) = got else {
            open = false;
            continue;
        };
        stats.events_in += batch.len() as u64;
        shared.counters.received.increment(batch.len() as u64);
        let source = batch.source.clone();
        for mut event in batch.events {
            let pos = match event.decode() {
                Ok(()) => source_pos(event.field(&meta_field), &mut parts),
                Err(_) => None,
            };
            if let Some(p) = &pos {
                let mut t = shared.tracker.lock().expect("not poisoned");
                if t.is_fenced(p) {
                    Counts::add(&shared.counts.fenced, 1);
                    continue;
                }
                t.receive(p);
            }
            match shared.config.row(event, &meta_field, &source, pos.clone()) {
                Ok(row) => {
                    // Rows with source offsets all take the first connection: each of its
                    // transactions then holds a contiguous stretch of the input, so the
                    // offsets it records cover exactly the rows committed, and a restart
                    // after a crash writes no message twice. Other rows go by key.
                    let i = if row.pos.is_some() {
                        0
                    } else {
                        (hasher.hash_one(&row.key) % n as u64) as usize
                    };
                    pending[i].push(row);
                    oldest.get_or_insert_with(Instant::now);
                    if pending[i].len() >= batch_size {
                        let rows =
                            std::mem::replace(&mut pending[i], Vec::with_capacity(batch_size));
                        if senders[i].send(rows).await.is_err() {
                            open = false;
                            break;
                        }
                        if pending.iter().all(Vec::is_empty) {
                            oldest = None;
                        }
                    }
                }
                Err((mut event, reject)) => {
                    stats.rejected += 1;
                    Counts::add(&shared.counts.rejected, 1);
                    shared.counters.rejected.increment(1);
                    shared
                        .ctx
                        .dead
                        .keep("persist", &source, &mut event, &reject)?;
                    if let Some(p) = &pos {
                        shared.tracker.lock().expect("not poisoned").handled(p);
                    }
                }
            }
        }
    }
    let senders_ok = flush_all(&senders, &mut pending, &mut oldest).await.is_ok()
        && senders.iter().all(|s| !s.is_closed());
    drop(senders);
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::from(anyhow::anyhow!("loader panicked: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if !senders_ok {
        return Err(Error::from(anyhow::anyhow!("a loader stopped early")));
    }
    // Offsets that became complete after the last batch (a final dead letter, say).
    let mut guard = finisher.lock().await;
    let loader = guard.as_mut().expect("loader kept for the end");
    commit_rows(&shared, loader, Vec::new(), None).await?;
    stats.events_out = Counts::get(&shared.counts.inserted)
        + Counts::get(&shared.counts.updated)
        + Counts::get(&shared.counts.unchanged)
        + Counts::get(&shared.counts.deleted)
        + Counts::get(&shared.counts.superseded);
    Ok(stats)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn flush_all(
    senders: &[Sender<Vec<Row>>],
    pending: &mut [Vec<Row>],
    oldest: &mut Option<Instant>,
) -> Result<()> {
    *oldest = None;
    for (tx, rows) in senders.iter().zip(pending.iter_mut()) {
        if !rows.is_empty() && tx.send(std::mem::take(rows)).await.is_err() {
            return Err(Error::from(anyhow::anyhow!("a loader stopped early")));
        }
    }
    Ok(())
}

async fn load_loop(
    shared: &Shared,
    loader: &mut Loader,
    mut rx: Receiver<Vec<Row>>,
    output: Sender<Batch>,
) -> Result<()> {
    while let Some(rows) = rx.recv().await {
        let out = if shared.config.emit {
            Some(&output)
        } else {
            None
        };
        commit_rows(shared, loader, rows, out).await?;
    }
    Ok(())
}

/// Commits one batch: winners per key, rows and offsets in one transaction, retried
/// until the database takes it.
async fn commit_rows(
    shared: &Shared,
    loader: &mut Loader,
    mut rows: Vec<Row>,
    output: Option<&Sender<Batch>>,
) -> Result<()> {
    let counts = &shared.counts;
    let mut delay = Duration::from_millis(100);
    let mut waiting_since: Option<std::time::Instant> = None;
    let mut fence_rounds = 0;
    loop {
        let winners = winners(&shared.config, &rows);
        let positions: Vec<&SourcePos> = rows.iter().filter_map(|r| r.pos.as_deref()).collect();
        let commits = shared
            .tracker
            .lock()
            .expect("not poisoned")
            .plan(&positions);
        if winners.is_empty() && commits.is_empty() {
            return Ok(());
        }
        let chosen: Vec<&Row> = winners.iter().map(|&i| &rows[i]).collect();
        let mut refused: Vec<(usize, Reject)> = Vec::new();
        let result = {
            let mut reject = |i: usize, r: Reject| refused.push((winners[i], r));
            loader.load(&chosen, &commits, &mut reject).await
        };
        drop(chosen);
        match result {
            Ok(loaded) => {
                // Dead letters before anything else, in input order.
                let mut refused_idx = Vec::with_capacity(refused.len());
                for (i, reject) in refused {
                    let row = &mut rows[i];
                    shared.ctx.dead.keep(
                        "persist",
                        &row.source.clone(),
                        &mut row.event,
                        &reject,
                    )?;
                    refused_idx.push(i);
                }
                Counts::add(&counts.rejected, refused_idx.len() as u64);
                Counts::add(&counts.inserted, loaded.inserted);
                Counts::add(&counts.updated, loaded.updated);
                Counts::add(&counts.unchanged, loaded.unchanged);
                Counts::add(&counts.deleted, loaded.deleted);
                Counts::add(&counts.superseded, (rows.len() - winners.len()) as u64);
                if !rows.is_empty() {
                    Counts::add(&counts.batches, 1);
                }
                let positions: Vec<&SourcePos> =
                    rows.iter().filter_map(|r| r.pos.as_deref()).collect();
                shared
                    .tracker
                    .lock()
                    .expect("not poisoned")
                    .committed(&positions, &commits);
                if let Some(since) = waiting_since {
                    tracing::info!(
                        "database is back after {:.1}s; batch of {} rows committed",
                        since.elapsed().as_secs_f64(),
                        rows.len()
                    );
                }
                let persisted = rows.len() - refused_idx.len();
                shared.counters.sent.increment(persisted as u64);
                shared.counters.rejected.increment(refused_idx.len() as u64);
                if shared.progress.is_shown() {
                    let extra = format!(
                        "{} batches · {} retries",
                        Counts::get(&counts.batches),
                        Counts::get(&counts.retries)
                    );
                    shared.progress.inc_with(persisted as u64, &extra);
                }
                if let Some(out) = output {
                    refused_idx.sort_unstable();
                    let source = rows.first().map(|r| r.source.clone());
                    let events: Vec<Event> = rows
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| refused_idx.binary_search(i).is_err())
                        .map(|(_, r)| r.event)
                        .collect();
                    if let (Some(source), false) = (source, events.is_empty()) {
                        // A closed stdout (`| head`) does not stop the loading.
                        let _ = out.send(Batch::new(source, events)).await;
                    }
                }
                return Ok(());
            }
            Err(LoadError::Fenced(parts)) => {
                fence_rounds += 1;
                if fence_rounds > 16 {
                    return Err(Error::from(anyhow::anyhow!(
                        "offsets table keeps fencing this batch; is another writer changing epochs?"
                    )));
                }
                let mut t = shared.tracker.lock().expect("not poisoned");
                for (part, epoch) in &parts {
                    tracing::warn!(
                        "fenced: {}/{}/{} now belongs to epoch {epoch}; dropping its events \
                         (the new owner reads them again)",
                        part.group,
                        part.topic,
                        part.partition
                    );
                    t.fence(part, *epoch);
                }
                let before = rows.len();
                rows.retain(|r| r.pos.as_deref().is_none_or(|p| !t.is_fenced(p)));
                Counts::add(&counts.fenced, (before - rows.len()) as u64);
            }
            Err(LoadError::Transient(e)) => {
                Counts::add(&counts.retries, 1);
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                tracing::warn!(
                    "database unavailable ({e:#}); waiting {:.1}s, then replaying the batch of \
                     {} rows (waiting for {:.0}s so far)",
                    delay.as_secs_f64(),
                    rows.len(),
                    since.elapsed().as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(LoadError::Fatal(e)) => {
                return Err(Error::new(
                    Exit::IoErr,
                    e.context("the database refused the batch"),
                ))
            }
        }
    }
}

/// Indices of the rows to load, in input order: one per key.
fn winners(config: &Config, rows: &[Row]) -> Vec<usize> {
    let mut best: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    let mut dups = false;
    for (i, row) in rows.iter().enumerate() {
        match best.entry(&row.key) {
            Entry::Vacant(v) => {
                v.insert(i);
            }
            Entry::Occupied(mut o) => {
                dups = true;
                if config.wins(row, &rows[*o.get()]) {
                    o.insert(i);
                }
            }
        }
    }
    if !dups {
        return (0..rows.len()).collect();
    }
    let mut w: Vec<usize> = best.into_values().collect();
    w.sort_unstable();
    w
}

/// Where rows go: resolved from the flags and the environment.
pub enum Target {
    Postgres(Box<ConnectSpec>),
    Sqlite(PathBuf),
}

impl Target {
    pub fn from_args(args: &Args) -> Result<Target> {
        match ConnectSpec::from_env(
            args.database_url.as_deref(),
            args.connect_timeout,
            "ndpipe persist",
        )? {
            Some(spec) => Ok(Target::Postgres(Box::new(spec))),
            None => Ok(Target::Sqlite(args.sqlite.clone())),
        }
    }
}

/// Opens the target, prepares the table and returns its layout and the loaders.
pub async fn open(args: &Args) -> Result<(Layout, Vec<Loader>)> {
    if args.create_table && args.columns.iter().any(|c| c.ty.is_none()) {
        return Err(Error::usage(
            "--create-table with --column needs a type for every column (COL=FIELD:TYPE)",
        ));
    }
    match Target::from_args(args)? {
        Target::Postgres(spec) => {
            let (layout, loaders) = postgres::open(&spec, args).await?;
            Ok((
                layout,
                loaders
                    .into_iter()
                    .map(|l| Loader::Postgres(Box::new(l)))
                    .collect(),
            ))
        }
        Target::Sqlite(path) => {
            if !args.common.quiet {
                crate::progress::eprint_line(&format!(
                    "persist: no database configured (--database-url, DATABASE_URL, PG*): \
                     writing to the SQLite file {}",
                    path.display()
                ));
            }
            let (layout, loader) = sqlite::open(&path, args).await?;
            Ok((layout, vec![Loader::Sqlite(loader)]))
        }
    }
}

/// The sink stage: a config, its open connections, and the counts it keeps.
pub struct Persist {
    pub config: Config,
    pub loaders: Vec<Loader>,
    pub counts: Arc<Counts>,
}

impl Stage for Persist {
    fn name(&self) -> &'static str {
        "persist"
    }

    fn kind(&self) -> Kind {
        Kind::Sink
    }

    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Stats>> {
        let Persist {
            config,
            loaders,
            counts,
        } = *self;
        Box::pin(run(config, loaders, input, output, ctx, counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_maps_and_types() {
        let c = parse_column("amount=amount:numeric(12,2)").unwrap();
        assert_eq!(
            (c.column.as_str(), c.ty.as_deref()),
            ("amount", Some("numeric(12,2)"))
        );
        assert!(parse_column("ts=meta.ts:timestamp with time zone").is_ok());
        assert!(parse_column("a=b:int; drop table x").is_err());
        assert!(parse_column("flag=f:bool or pg_terminate_backend(123)").is_err());
        assert!(parse_column("flag=f:bool or true").is_err());
        for ok in [
            "numeric(12,2)",
            "double precision",
            "text[]",
            "public.my_type",
            "timestamp with time zone",
            "varchar(20)[]",
        ] {
            assert!(parse_column(&format!("a=b:{ok}")).is_ok(), "{ok}");
        }
        assert!(parse_column("a b=c").is_err());
        assert!(parse_column("tags=tags:text[]").is_ok());
    }

    #[test]
    fn nul_escapes_are_found_exactly() {
        assert!(has_nul_escape(r#"{"a":"x\u0000"}"#));
        assert!(!has_nul_escape(r#"{"a":"x\\u0000"}"#));
        assert!(has_nul_escape(r#"{"a":"x\\\u0000"}"#));
        assert!(!has_nul_escape(r#"{"a":"u0000"}"#));
    }
}
