//! SQLite, the embedded default: the same observable behaviour as PostgreSQL with its own
//! SQL and one connection.
//!
//! SQLite has no COPY, no `DISTINCT ON` and one writer, so a batch is one `BEGIN
//! IMMEDIATE` transaction of prepared per-row statements: `INSERT … ON CONFLICT DO
//! NOTHING`, then, for a key already stored, an `UPDATE … WHERE` the stored version is not
//! newer and the content differs. JSON is stored as text; timestamps as RFC 3339 UTC text.
//! A refused row fails only its own statement, so it is dead-lettered and the rest
//! commits. The file runs in WAL mode with `synchronous=NORMAL`: a killed process loses
//! nothing committed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::event::Reject;
use crate::exit::{Error, Exit, Result};
use crate::postgres::{quote_ident, Table};

use super::layout::{create_table_sql, resolve_layout};
use super::offsets::{Commit, StreamKey};
use super::{Layout, LoadError, Loaded, OnConflict, Options, Row};

/// The SQLite connection and its statements' text.
pub struct SqliteConnection {
    conn: Arc<Mutex<Connection>>,
    sql: Arc<Sql>,
}

struct Sql {
    insert: String,
    update: Option<String>,
    /// Deletes a tombstone's row: ?1 key, and ?2 version when the table has one.
    delete: String,
    offsets: String,
    offsets_table: String,
    create_offsets: String,
    /// Per typed column: how its values are bound.
    kinds: Vec<Kind>,
    payload: bool,
    meta: bool,
}

/// How a typed column's value is checked and bound (SQLite's type affinity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Integer,
    Real,
    Numeric,
    Text,
}

impl Kind {
    fn of(ty: &str) -> Kind {
        let t = ty.to_ascii_uppercase();
        if t.contains("INT") {
            Kind::Integer
        } else if t.contains("CHAR")
            || t.contains("CLOB")
            || t.contains("TEXT")
            || t.contains("JSON")
            || t.contains("TIME")
            || t.contains("DATE")
            || t.contains("BLOB")
            || t.is_empty()
        {
            Kind::Text
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Kind::Real
        } else {
            Kind::Numeric
        }
    }

    fn bind(self, v: &str) -> Option<Value> {
        match self {
            Kind::Text => Some(Value::Text(v.to_owned())),
            Kind::Integer => v.trim().parse::<i64>().ok().map(Value::Integer),
            Kind::Real => v.trim().parse::<f64>().ok().map(Value::Real),
            Kind::Numeric => match v.trim().parse::<i64>() {
                Ok(i) => Some(Value::Integer(i)),
                Err(_) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Real),
            },
        }
    }
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        Exit::IoErr,
        anyhow::anyhow!("cannot open SQLite file {}: {e}", path.display()),
    )
}

/// Opens (creating) the file, creates and checks the table.
pub async fn open(path: &Path, opts: &Options) -> Result<(Layout, SqliteConnection)> {
    if opts.table.schema.as_deref().is_some_and(|s| s != "main") {
        return Err(Error::usage(format!(
            "--table {}: SQLite has no schemas (use a plain name, or main.NAME)",
            opts.table
        )));
    }
    let path: PathBuf = path.to_owned();
    let opts = opts.clone();
    let opened = tokio::task::spawn_blocking(move || open_blocking(&path, &opts)).await;
    Error::joined("SQLite setup", opened)?
}

fn open_blocking(path: &Path, opts: &Options) -> Result<(Layout, SqliteConnection)> {
    let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| open_error(path, e))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .map_err(|e| open_error(path, e))?;
    if opts.create_table {
        let version = match opts.version_type {
            super::VersionType::Bigint => "INTEGER",
            super::VersionType::Numeric => "NUMERIC",
            super::VersionType::Timestamptz => "TEXT",
        };
        let sql = create_table_sql(opts, "TEXT", "TEXT", version, "TEXT");
        conn.execute_batch(&sql)
            .map_err(|e| open_error(path, format!("creating table {}: {e}", opts.table)))?;
    }
    let columns = table_columns(&conn, &opts.table).map_err(|e| open_error(path, e))?;
    let unique =
        has_unique_index(&conn, &opts.table, &opts.key_column).map_err(|e| open_error(path, e))?;
    let shown = format!("SQLite file {}", path.display());
    let layout = resolve_layout(opts, &columns, unique, &shown)?;
    let sql = Arc::new(statements(&layout));
    // Prepare once now, so a statement SQLite refuses is an error at start.
    conn.prepare(&sql.insert)
        .map_err(|e| open_error(path, format!("preparing the insert: {e}")))?;
    if let Some(u) = &sql.update {
        conn.prepare(u)
            .map_err(|e| open_error(path, format!("preparing the update: {e}")))?;
    }
    Ok((
        layout,
        SqliteConnection {
            conn: Arc::new(Mutex::new(conn)),
            sql,
        },
    ))
}

fn table_columns(conn: &Connection, table: &Table) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT name, type FROM pragma_table_info(?1)")?;
    let rows = stmt.query_map([&table.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn has_unique_index(conn: &Connection, table: &Table, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(
        "SELECT count(*) FROM pragma_index_list(?1) AS l \
         WHERE l.\"unique\" AND l.partial = 0 \
         AND (SELECT count(*) FROM pragma_index_info(l.name)) = 1 \
         AND (SELECT name FROM pragma_index_info(l.name)) = ?2",
    )?;
    let n: i64 = stmt.query_row([&table.name, column], |r| r.get(0))?;
    Ok(n > 0)
}

fn statements(l: &Layout) -> Sql {
    let q = quote_ident;
    // Parameters: ?1 key, then payload, meta, version, typed columns, and last the time.
    let mut cols = vec![q(&l.key_column)];
    let mut compared = Vec::new();
    if l.payload {
        compared.push(q("payload"));
    }
    if l.meta {
        compared.push(q("meta"));
    }
    if l.version.is_some() {
        compared.push(q("version"));
    }
    for (name, _) in &l.columns {
        compared.push(q(name));
    }
    cols.extend(compared.iter().cloned());
    let now = cols.len() + 1;
    let mut values: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    if l.first_seen {
        cols.push(q("first_seen"));
        values.push(format!("?{now}"));
    }
    if l.updated_at {
        cols.push(q("updated_at"));
        values.push(format!("?{now}"));
    }
    let table = l.table.quoted();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING",
        cols.join(", "),
        values.join(", "),
        q(&l.key_column)
    );
    let update = (l.on_conflict == OnConflict::Update && !compared.is_empty()).then(|| {
        let mut sets: Vec<String> = compared
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 2))
            .collect();
        if l.updated_at {
            sets.push(format!("{} = ?{now}", q("updated_at")));
        }
        let differs: Vec<String> = compared
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} IS NOT ?{}", i + 2))
            .collect();
        let mut when = vec![format!("{} = ?1", q(&l.key_column))];
        if l.version.is_some() {
            let vi = 2 + usize::from(l.payload) + usize::from(l.meta);
            when.push(format!("(\"version\" IS NULL OR \"version\" <= ?{vi})"));
        }
        when.push(format!("({})", differs.join(" OR ")));
        format!(
            "UPDATE {table} SET {} WHERE {}",
            sets.join(", "),
            when.join(" AND ")
        )
    });
    let ot = l.offsets_table.quoted();
    let delete = if l.version.is_some() {
        format!(
            "DELETE FROM {table} WHERE {} = ?1 AND (\"version\" IS NULL OR \"version\" <= ?2)",
            q(&l.key_column)
        )
    } else {
        format!("DELETE FROM {table} WHERE {} = ?1", q(&l.key_column))
    };
    Sql {
        insert,
        update,
        delete,
        offsets: format!(
            "INSERT INTO {ot} (\"group\", topic, \"partition\", next_offset, epoch, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (\"group\", topic, \"partition\") \
             DO UPDATE SET next_offset = max(next_offset, excluded.next_offset), \
             updated_at = excluded.updated_at \
             WHERE excluded.epoch IS NULL OR epoch IS excluded.epoch RETURNING 1"
        ),
        create_offsets: format!(
            "CREATE TABLE IF NOT EXISTS {ot} (\"group\" TEXT NOT NULL, topic TEXT NOT NULL, \
             \"partition\" INTEGER NOT NULL, next_offset INTEGER NOT NULL, epoch INTEGER, \
             updated_at TEXT NOT NULL, PRIMARY KEY (\"group\", topic, \"partition\"))"
        ),
        offsets_table: ot,
        kinds: l.columns.iter().map(|(_, ty)| Kind::of(ty)).collect(),
        payload: l.payload,
        meta: l.meta,
    }
}

impl SqliteConnection {
    pub async fn load(
        &mut self,
        rows: &[&Row],
        commits: &[Commit],
        reject: &mut (dyn FnMut(usize, Reject) + Send),
    ) -> std::result::Result<Loaded, LoadError> {
        // Bind values are built here (rows are not 'static); the blocking thread gets them.
        let now = crate::human::timestamp_now();
        let mut refused = Vec::new();
        let mut batch = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if row.delete {
                // A row has a version exactly when the table has a version column.
                let mut v = vec![Value::Text(row.key.clone())];
                v.extend(
                    row.version
                        .as_ref()
                        .map(|ver| Value::Text(ver.text.clone())),
                );
                batch.push((i, true, v));
                continue;
            }
            match self.values(row, &now) {
                Ok(v) => batch.push((i, false, v)),
                Err(r) => refused.push((i, r)),
            }
        }
        let commits: Vec<Commit> = commits.to_vec();
        let conn = self.conn.clone();
        let sql = self.sql.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("not poisoned");
            transaction(&mut conn, &sql, &batch, &commits, &now)
        })
        .await
        .map_err(|e| LoadError::Fatal(anyhow::anyhow!("SQLite writer panicked: {e}")))?;
        let (loaded, db_refused) = out?;
        refused.extend(db_refused);
        refused.sort_by_key(|(i, _)| *i);
        for (i, r) in refused {
            reject(i, r);
        }
        Ok(loaded)
    }

    fn values(&self, row: &Row, now: &str) -> std::result::Result<Vec<Value>, Reject> {
        let s = &self.sql;
        let mut v = vec![Value::Text(row.key.clone())];
        if s.payload {
            v.push(Value::Text(row.payload().to_owned()));
        }
        if s.meta {
            v.push(row.meta.clone().map_or(Value::Null, Value::Text));
        }
        if let Some(ver) = &row.version {
            v.push(Value::Text(ver.text.clone()));
        }
        for (value, kind) in row.columns.iter().zip(&s.kinds) {
            v.push(match value {
                None => Value::Null,
                Some(text) => kind.bind(text).ok_or_else(|| {
                    Reject::new(
                        "database",
                        format!("value {text:?} does not fit a {kind:?} column"),
                    )
                })?,
            });
        }
        v.push(Value::Text(now.to_owned()));
        Ok(v)
    }
}

#[allow(clippy::type_complexity)]
fn transaction(
    conn: &mut Connection,
    sql: &Sql,
    batch: &[(usize, bool, Vec<Value>)],
    commits: &[Commit],
    now: &str,
) -> std::result::Result<(Loaded, Vec<(usize, Reject)>), LoadError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fault)?;
    if !commits.is_empty() {
        tx.execute_batch(&sql.create_offsets).map_err(fault)?;
        let mut fenced: Vec<(Arc<StreamKey>, i64)> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(&sql.offsets).map_err(fault)?;
            for c in commits {
                let done: Option<i64> = stmt
                    .query_row(
                        rusqlite::params![
                            c.part.scope,
                            c.part.stream,
                            c.part.partition,
                            c.next_offset,
                            c.epoch,
                            now
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(fault)?;
                if done.is_none() {
                    let epoch: Option<i64> = tx
                        .query_row(
                            &format!(
                                "SELECT epoch FROM {} WHERE \"group\" = ?1 AND topic = ?2 \
                                 AND \"partition\" = ?3",
                                sql.offsets_table
                            ),
                            rusqlite::params![c.part.scope, c.part.stream, c.part.partition],
                            |r| r.get(0),
                        )
                        .map_err(fault)?;
                    fenced.push((c.part.clone(), epoch.unwrap_or(0)));
                }
            }
        }
        if !fenced.is_empty() {
            tx.rollback().map_err(fault)?;
            return Err(LoadError::Fenced(fenced));
        }
    }
    let mut loaded = Loaded::default();
    let mut refused = Vec::new();
    {
        let mut insert = tx.prepare_cached(&sql.insert).map_err(fault)?;
        let mut update = match &sql.update {
            Some(u) => Some(tx.prepare_cached(u).map_err(fault)?),
            None => None,
        };
        let mut delete = tx.prepare_cached(&sql.delete).map_err(fault)?;
        for (i, is_delete, values) in batch {
            if *is_delete {
                loaded.deleted += delete
                    .execute(params_from_iter(values.iter()))
                    .map_err(fault)? as u64;
                continue;
            }
            let inserted = match insert.execute(params_from_iter(values.iter())) {
                Ok(n) => n,
                Err(e) => match row_or_fault(e) {
                    Ok(reason) => {
                        refused.push((*i, Reject::new("database", reason)));
                        continue;
                    }
                    Err(f) => return Err(f),
                },
            };
            if inserted == 1 {
                loaded.inserted += 1;
                continue;
            }
            let Some(update) = update.as_mut() else {
                loaded.unchanged += 1;
                continue;
            };
            match update.execute(params_from_iter(values.iter())) {
                Ok(1) => loaded.updated += 1,
                Ok(_) => loaded.unchanged += 1,
                Err(e) => match row_or_fault(e) {
                    Ok(reason) => refused.push((*i, Reject::new("database", reason))),
                    Err(f) => return Err(f),
                },
            }
        }
    }
    tx.commit().map_err(fault)?;
    Ok((loaded, refused))
}

/// A refused row (constraint, type mismatch) gives its reason; anything else is a fault.
fn row_or_fault(e: rusqlite::Error) -> std::result::Result<String, LoadError> {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            Ok(e.to_string())
        }
        _ => Err(fault(e)),
    }
}

fn fault(e: rusqlite::Error) -> LoadError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LoadError::Transient(e.into()),
        _ => LoadError::Fatal(e.into()),
    }
}
