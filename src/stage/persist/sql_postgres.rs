//! PostgreSQL as the sink: table set-up and checks, and the loading SQL (connections:
//! [`crate::postgres`]).
//!
//! One statement loads a batch: the rows travel as binary arrays, one per column, and
//! `INSERT … SELECT … FROM unnest(…) ON CONFLICT (key) DO UPDATE … WHERE …` upserts them.
//! Duplicate keys were already resolved in Rust (one winner per key), so the statement
//! never touches a row twice. The update only happens when the stored version is not
//! newer and the content differs, so replays write nothing. Measured against COPY into
//! an unlogged staging table followed by `INSERT … SELECT DISTINCT ON`, this form is
//! faster here (no second pass over the rows, no staging table) — see
//! `bench/persist.sh`, which runs that COPY path as the peer.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::event::Reject;
use crate::exit::{Error, Exit, Result};
use crate::postgres::{create_if_absent, message, offsets_ddl, quote_ident, ConnectSpec, Table};

use super::copy_in::{CopyIn, CopyStatements};
use super::layout::{create_table_sql, resolve_layout};
use super::offsets::{Commit, StreamKey};
use super::written::Written;
use super::{Layout, LoadError, Loaded, OnConflict, Options, Row};

/// Connects `--connections` times, creates and checks the table, prepares statements.
pub async fn open(spec: &ConnectSpec, opts: &Options) -> Result<(Layout, Vec<PostgresConnection>)> {
    let client = spec
        .connect()
        .await
        .map_err(|e| Error::unavailable(spec.failure(&e)))?;
    let table = opts.table.quoted();
    if opts.create_table {
        if let Some(schema) = &opts.table.schema {
            create_if_absent(
                &client,
                &format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
            )
            .await
            .map_err(|e| setup_error(&opts.table, "cannot create the schema of", e))?;
        }
        let sql = create_table_sql(
            opts,
            "text",
            "jsonb",
            opts.version_type.sql(),
            "timestamptz",
        );
        create_if_absent(&client, &sql)
            .await
            .map_err(|e| setup_error(&opts.table, "cannot create", e))?;
    }
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
             AND NOT a.attisdropped",
            &[&table],
        )
        .await
        .map_err(|e| setup_error(&opts.table, "cannot read", e))?;
    let columns: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let unique: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 \
             AND i.indpred IS NULL AND a.attname = $2)",
            &[&table, &opts.key_column],
        )
        .await
        .map_err(|e| setup_error(&opts.table, "cannot read", e))?
        .get(0);
    let layout = resolve_layout(opts, &columns, unique, spec.display())?;
    // A table empty at start holds only what this run stores: batches need not look
    // their keys up (see [`super::written`]).
    let written = if layout.binary_copy {
        let empty: bool = client
            .query_one(&format!("SELECT NOT EXISTS (SELECT FROM {table})"), &[])
            .await
            .map_err(|e| setup_error(&opts.table, "cannot read", e))?
            .get(0);
        empty.then(|| Arc::new(Written::new()))
    } else {
        None
    };
    let mut loaders = vec![PostgresConnection::new(spec.clone(), client, &layout, written).await?];
    for _ in 1..opts.connections {
        loaders.push(loaders[0].another().await?);
    }
    Ok((layout, loaders))
}

/// A failure while setting the table up: 74 with the server's message when the server
/// refused (permissions, a bad definition), 69 when it could not be reached.
fn setup_error(table: &Table, what: &str, e: tokio_postgres::Error) -> Error {
    let exit = if e.as_db_error().is_some() {
        Exit::IoErr
    } else {
        Exit::Unavailable
    };
    Error::new(
        exit,
        anyhow::anyhow!("{what} table {table}: {}", message(&e)),
    )
}

/// The server's message for a database error ("db error" is all `Display` says).
/// JSON text sent as `jsonb` in binary form (version byte 1, then the text): the server
/// parses it once, we never build a tree.
#[derive(Debug)]
pub(super) struct Jsonb<'a>(pub(super) &'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// One connection and its statements.
pub struct PostgresConnection {
    spec: ConnectSpec,
    client: Option<Client>,
    load_sql: String,
    offsets_sql: String,
    offsets_table: String,
    load: Option<Statement>,
    /// The COPY path's statements, prepared once a connection (each batch would
    /// otherwise prepare them anew: a round trip apiece, while the server idles).
    copy_stmts: Option<CopyStatements>,
    offsets_ready: bool,
    layout: Layout,
    /// New keys by COPY, when the table allows it ([`CopyIn::plan`]).
    copy_in: Option<CopyIn>,
    /// Most keys of the last batch were new: the next batch tries the COPY path (looking
    /// its keys up first); otherwise it goes straight to the upsert, which counts the new
    /// keys too, so a stream turning new again is noticed.
    mostly_new: bool,
    /// The keys this run stored, when the table was empty at start (shared by the
    /// connections): while trusted, batches go by it instead of looking their keys up.
    written: Option<Arc<Written>>,
}

/// Run on every connection persist loads through. A load's transaction never waits on
/// persist between its statements for longer than a round trip, so one idle for 5 s has a
/// client that is frozen (SIGSTOP, a stalled VM) or cut off the network. Its transaction
/// holds the offsets rows of its partitions, which the partitions' new owner must update
/// to claim them: without this, the new owner's claim (and so the group's rebalance) waits
/// until the server's TCP gives up on the client, hours later. The server ends such a
/// session instead; the client, should it come back, finds its connection closed,
/// reconnects, and is fenced. (Found by tests/cluster.rs: a host frozen mid-transaction.)
const SESSION_SETUP: &str = "SET idle_in_transaction_session_timeout = '5s'";

impl PostgresConnection {
    async fn new(
        spec: ConnectSpec,
        client: Client,
        layout: &Layout,
        written: Option<Arc<Written>>,
    ) -> Result<PostgresConnection> {
        client
            .batch_execute(SESSION_SETUP)
            .await
            .map_err(|e| Error::unavailable(message(&e)))?;
        let mut l = PostgresConnection {
            spec,
            client: Some(client),
            load_sql: load_sql(layout),
            offsets_sql: offsets_sql(&layout.offsets_table),
            offsets_table: layout.offsets_table.quoted(),
            load: None,
            copy_stmts: None,
            offsets_ready: false,
            layout: layout.clone(),
            copy_in: CopyIn::plan(layout),
            mostly_new: true,
            written,
        };
        // Prepare now, so a statement the server refuses is an error at start.
        l.prepare().await.map_err(|e| match e {
            LoadError::Fatal(e) | LoadError::Transient(e) => Error::new(
                Exit::Unavailable,
                e.context(format!("preparing the upsert into {}", layout.table)),
            ),
            LoadError::Fenced(_) => unreachable!("no offsets at start"),
        })?;
        Ok(l)
    }

    /// One more connection to the same table, its statements prepared (at start, and
    /// when `--connections` is raised while `pipeline` runs).
    pub async fn another(&self) -> Result<PostgresConnection> {
        let client = self
            .spec
            .connect()
            .await
            .map_err(|e| Error::unavailable(self.spec.failure(&e)))?;
        PostgresConnection::new(
            self.spec.clone(),
            client,
            &self.layout,
            self.written.clone(),
        )
        .await
    }

    async fn prepare(&mut self) -> std::result::Result<(), LoadError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.load = None;
            self.copy_stmts = None;
            let c = self.spec.connect().await.map_err(|e| {
                LoadError::Transient(anyhow::anyhow!("{}: {e}", self.spec.display()))
            })?;
            c.batch_execute(SESSION_SETUP).await.map_err(fault)?;
            self.client = Some(c);
        }
        if self.load.is_none() {
            let client = self.client.as_ref().expect("connected above");
            self.load = Some(client.prepare(&self.load_sql).await.map_err(fault)?);
        }
        if let (None, Some(copy_in)) = (&self.copy_stmts, &self.copy_in) {
            let client = self.client.as_ref().expect("connected above");
            self.copy_stmts = Some(copy_in.prepare(client).await.map_err(fault)?);
        }
        Ok(())
    }

    pub async fn load(
        &mut self,
        rows: &[&Row],
        commits: &[Commit],
        reject: &mut (dyn FnMut(usize, Reject) + Send),
    ) -> std::result::Result<Loaded, LoadError> {
        self.prepare().await?;
        if !commits.is_empty() && !self.offsets_ready {
            self.create_offsets_table().await?;
        }
        // Tombstones' deletes apart: they go after the upserts, in the same transaction
        // (their keys differ: a batch holds one winner per key).
        let (mut deletes, mut upserts, mut at) = (Vec::new(), Vec::new(), Vec::new());
        for (i, row) in rows.iter().copied().enumerate() {
            if row.delete {
                deletes.push(row);
            } else {
                upserts.push(row);
                at.push(i);
            }
        }
        let mut reject_upsert = |i: usize, r: Reject| reject(at[i], r);
        // First try the whole batch; when a row is refused, redo it with savepoints,
        // splitting until each refused row stands alone.
        match self.transaction(&upserts, &deletes, commits, None).await {
            Err(LoadError::Fatal(e)) if is_row_error(&e) => {
                if is_unique_violation(&e) {
                    // A key this run did not store was (another writer's): look keys up
                    // from now on.
                    if let Some(w) = self.written.as_ref().filter(|w| w.trusted()) {
                        tracing::info!(
                            "persist: {} holds keys another writer stored: batches look \
                             their keys up from now on",
                            self.layout.table
                        );
                        w.distrust();
                    }
                }
                self.transaction(&upserts, &deletes, commits, Some(&mut reject_upsert))
                    .await
            }
            other => other,
        }
    }

    async fn create_offsets_table(&mut self) -> std::result::Result<(), LoadError> {
        let client = self.client.as_ref().expect("connected");
        create_if_absent(client, &offsets_ddl(&self.offsets_table))
            .await
            .map_err(fault)?;
        self.offsets_ready = true;
        Ok(())
    }

    async fn transaction(
        &mut self,
        rows: &[&Row],
        deletes: &[&Row],
        commits: &[Commit],
        isolate: Option<&mut (dyn FnMut(usize, Reject) + Send)>,
    ) -> std::result::Result<Loaded, LoadError> {
        let client = self.client.as_mut().expect("connected");
        let stmt = self.load.as_ref().expect("prepared");
        let mut tx = client.transaction().await.map_err(fault)?;
        if !commits.is_empty() {
            let fenced =
                write_offsets(&tx, &self.offsets_sql, &self.offsets_table, commits).await?;
            if !fenced.is_empty() {
                tx.rollback().await.map_err(fault)?;
                return Err(LoadError::Fenced(fenced));
            }
        }
        let mut loaded = Loaded::default();
        // The rows' key hashes in one place, read twice: before (which keys are new) and
        // after the commit (the keys stored), when the rows themselves are long out of
        // the cache.
        let written = self.written.as_deref().filter(|w| w.trusted());
        let hashes: Vec<u64> = match written {
            Some(_) => rows.iter().map(|r| r.key_hash).collect(),
            None => Vec::new(),
        };
        match isolate {
            None => {
                if !rows.is_empty() {
                    let (ins, touched) = match (self.copy_stmts.as_ref(), written) {
                        (Some(c), Some(w)) => {
                            let stored = w.may_hold(hashes.iter().copied());
                            copy_then_upsert(&tx, c, stmt, &self.layout, rows, Some(stored)).await?
                        }
                        (Some(c), None) if self.mostly_new => {
                            copy_then_upsert(&tx, c, stmt, &self.layout, rows, None).await?
                        }
                        _ => {
                            let up = upsert(&tx, stmt, &self.layout, rows).await?;
                            (up.inserted, up.touched)
                        }
                    };
                    self.mostly_new = ins * 2 >= rows.len() as u64;
                    loaded.inserted = ins;
                    loaded.updated = touched - ins;
                    loaded.unchanged = rows.len() as u64 - touched;
                }
            }
            Some(reject) => {
                let mut stack: Vec<std::ops::Range<usize>> = Vec::new();
                stack.push(0..rows.len());
                while let Some(range) = stack.pop() {
                    if range.is_empty() {
                        continue;
                    }
                    let sp = tx.savepoint("ndpipe_rows").await.map_err(fault)?;
                    match upsert(&sp, stmt, &self.layout, &rows[range.clone()]).await {
                        Ok(up) => {
                            sp.commit().await.map_err(fault)?;
                            loaded.inserted += up.inserted;
                            loaded.updated += up.touched - up.inserted;
                            loaded.unchanged += range.len() as u64 - up.touched;
                        }
                        Err(LoadError::Fatal(e)) if is_row_error(&e) => {
                            sp.rollback().await.map_err(fault)?;
                            if range.len() == 1 {
                                reject(range.start, Reject::new("database", db_reason(&e)));
                            } else {
                                let mid = range.start + range.len() / 2;
                                stack.push(mid..range.end);
                                stack.push(range.start..mid);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if !deletes.is_empty() {
            loaded.deleted = delete(&tx, &self.layout, deletes).await?;
        }
        tx.commit().await.map_err(fault)?;
        if let Some(w) = written.filter(|w| w.trusted()) {
            w.add(hashes.into_iter());
        }
        Ok(loaded)
    }
}

/// Deletes the rows of tombstones' keys (under the version rule); returns how many.
async fn delete(
    tx: &tokio_postgres::Transaction<'_>,
    l: &Layout,
    rows: &[&Row],
) -> std::result::Result<u64, LoadError> {
    let q = quote_ident;
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let sql = match l.version {
        None => format!(
            "DELETE FROM {} WHERE {} = ANY($1::text[])",
            l.table.quoted(),
            q(&l.key_column)
        ),
        Some(vt) => format!(
            "DELETE FROM {table} AS t USING unnest($1::text[], $2::text[]) AS d(k, v) \
             WHERE t.{key} = d.k AND (t.\"version\" IS NULL OR t.\"version\" <= d.v::{ty})",
            table = l.table.quoted(),
            key = q(&l.key_column),
            ty = vt.sql()
        ),
    };
    let n = match l.version {
        None => tx.execute(&sql, &[&keys]).await,
        Some(_) => {
            let versions: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.version.as_ref().map(|v| v.text.as_str()))
                .collect();
            tx.execute(&sql, &[&keys, &versions]).await
        }
    };
    n.map_err(fault)
}

/// The rows whose keys are not stored by COPY, the others by the upsert; returns
/// (inserted, inserted + updated). Which keys are stored is `stored` when given (a flag
/// a row: whether this run may have written its key, see [`super::written`]), else the
/// server's answer.
async fn copy_then_upsert(
    tx: &tokio_postgres::Transaction<'_>,
    copy_in: &CopyStatements,
    stmt: &Statement,
    layout: &Layout,
    rows: &[&Row],
    stored: Option<Vec<bool>>,
) -> std::result::Result<(u64, u64), LoadError> {
    // The lookup gives the transaction's `now()` too; without it, it is asked for when
    // there are rows to COPY.
    let (stored, mut now) = match stored {
        Some(stored) => (stored, None),
        None => {
            let (keys, now) = copy_in.lookup(tx, rows).await.map_err(fault)?;
            (
                rows.iter().map(|r| keys.contains(&r.key)).collect(),
                Some(now),
            )
        }
    };
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for (row, stored) in rows.iter().copied().zip(stored) {
        if stored {
            old.push(row)
        } else {
            new.push(row)
        }
    }
    // The stored keys first: the upsert gives the transaction's now() too, which the
    // COPY then writes, without asking for it (a round trip while the server waits: 3 %
    // of its time in bench/persist.sh). The keys of the two parts differ, so their order
    // changes nothing in the table.
    let (mut ins, mut touched) = (0, 0);
    if !old.is_empty() {
        let up = upsert(tx, stmt, layout, &old).await?;
        (ins, touched) = (up.inserted, up.touched);
        now.get_or_insert(up.now);
    }
    let copied = if new.is_empty() {
        0
    } else {
        let now = match now {
            Some(now) => now,
            None => copy_in.now(tx).await.map_err(fault)?,
        };
        copy_in.copy(tx, layout, &new, now).await.map_err(fault)?
    };
    Ok((copied + ins, copied + touched))
}

/// Runs the upsert for `rows`.
async fn upsert(
    tx: &tokio_postgres::Transaction<'_>,
    stmt: &Statement,
    layout: &Layout,
    rows: &[&Row],
) -> std::result::Result<Upserted, LoadError> {
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let payloads: Vec<Jsonb> = rows.iter().map(|r| Jsonb(r.payload())).collect();
    let metas: Vec<Option<Jsonb>> = rows.iter().map(|r| r.meta.as_deref().map(Jsonb)).collect();
    let versions: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.version.as_ref().map(|v| v.text.as_str()))
        .collect();
    let columns: Vec<Vec<Option<&str>>> = (0..layout.columns.len())
        .map(|c| rows.iter().map(|r| r.columns[c].as_deref()).collect())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&keys];
    if layout.payload {
        params.push(&payloads);
    }
    if layout.meta {
        params.push(&metas);
    }
    if layout.version.is_some() {
        params.push(&versions);
    }
    for c in &columns {
        params.push(c);
    }
    let row = tx.query_one(stmt, &params).await.map_err(fault)?;
    let ins: i64 = row.get(0);
    let touched: i64 = row.get(1);
    Ok(Upserted {
        inserted: ins as u64,
        touched: touched as u64,
        now: row.get(2),
    })
}

/// What the upsert statement did: rows inserted, and inserted or updated; and the
/// transaction's `now()`, what it wrote as first_seen and updated_at.
struct Upserted {
    inserted: u64,
    touched: u64,
    now: SystemTime,
}

/// Upserts the offsets rows; returns the partitions fenced by a newer epoch, with it.
async fn write_offsets(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    table: &str,
    commits: &[Commit],
) -> std::result::Result<Vec<(Arc<StreamKey>, i64)>, LoadError> {
    let groups: Vec<&str> = commits.iter().map(|c| c.part.scope.as_str()).collect();
    let topics: Vec<&str> = commits.iter().map(|c| c.part.stream.as_str()).collect();
    let parts: Vec<i32> = commits.iter().map(|c| c.part.partition).collect();
    let nexts: Vec<i64> = commits.iter().map(|c| c.next_offset).collect();
    let epochs: Vec<Option<i64>> = commits.iter().map(|c| c.epoch).collect();
    let written = tx
        .query(sql, &[&groups, &topics, &parts, &nexts, &epochs])
        .await
        .map_err(fault)?;
    if written.len() == commits.len() {
        return Ok(Vec::new());
    }
    let done: std::collections::HashSet<(String, String, i32)> = written
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut fenced = Vec::new();
    for c in commits {
        let k = (
            c.part.scope.clone(),
            c.part.stream.clone(),
            c.part.partition,
        );
        if done.contains(&k) {
            continue;
        }
        let row = tx
            .query_one(
                &format!(
                    "SELECT coalesce(epoch, 0) FROM {table} WHERE \"group\" = $1 AND topic = $2 \
                     AND \"partition\" = $3"
                ),
                &[&k.0, &k.1, &k.2],
            )
            .await
            .map_err(fault)?;
        fenced.push((c.part.clone(), row.get::<_, i64>(0)));
    }
    Ok(fenced)
}

fn load_sql(l: &Layout) -> String {
    let q = quote_ident;
    // Per column: its quoted name, the parameter's array type, a cast of the value.
    let mut spec: Vec<(String, &str, String)> = vec![(q(&l.key_column), "text[]", String::new())];
    if l.payload {
        spec.push((q("payload"), "jsonb[]", String::new()));
    }
    if l.meta {
        spec.push((q("meta"), "jsonb[]", String::new()));
    }
    // Which compared column (after the key) holds the version.
    let mut version = None;
    if let Some(vt) = l.version {
        version = Some(spec.len() - 1);
        spec.push((q("version"), "text[]", format!("::{}", vt.sql())));
    }
    for (name, ty) in &l.columns {
        spec.push((q(name), "text[]", format!("::{ty}")));
    }
    let mut cols = Vec::new();
    let mut select = Vec::new();
    let mut args = Vec::new();
    let mut names = Vec::new();
    for (i, (col, ty, cast)) in spec.iter().enumerate() {
        cols.push(col.clone());
        select.push(format!("s.c{i}{cast}"));
        args.push(format!("${}::{ty}", i + 1));
        names.push(format!("c{i}"));
    }
    let compared: Vec<&String> = spec[1..].iter().map(|s| &s.0).collect();
    let mut updates: Vec<String> = compared
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    if l.first_seen {
        cols.push(q("first_seen"));
        select.push("now()".into());
    }
    if l.updated_at {
        cols.push(q("updated_at"));
        select.push("now()".into());
        updates.push(format!("{0} = EXCLUDED.{0}", q("updated_at")));
    }
    // Rows the update would leave as they are (the same content, or an older version)
    // are left out before the INSERT: ON CONFLICT DO UPDATE locks the stored row before
    // it reads the WHERE, and the lock writes the row's page (a full page image to the
    // WAL once per page after a checkpoint): replaying 500 k stored events wrote 229 MiB
    // of WAL, the size of the table, to change nothing.
    let mut unchanged = String::new();
    let conflict = if l.on_conflict == OnConflict::Ignore || compared.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        // The update's condition on the stored row `t` and the new values, `new(i)` for
        // the i-th compared column.
        let when = |new: &dyn Fn(usize) -> String| {
            let mut when = Vec::new();
            if let Some(v) = version {
                when.push(format!(
                    r#"(t."version" IS NULL OR t."version" <= {})"#,
                    new(v)
                ));
            }
            let t: Vec<String> = compared.iter().map(|c| format!("t.{c}")).collect();
            let e: Vec<String> = (0..compared.len()).map(new).collect();
            when.push(format!(
                "({}) IS DISTINCT FROM ({})",
                row_expr(&t),
                row_expr(&e)
            ));
            when.join(" AND ")
        };
        // Before the INSERT the new values are the row as it selects them (cast).
        unchanged = format!(
            " WHERE NOT EXISTS (SELECT FROM {table} AS t WHERE t.{key} = s.c0 AND ({when}) IS NOT TRUE)",
            table = l.table.quoted(),
            key = q(&l.key_column),
            when = when(&|i| format!("({})", select[i + 1])),
        );
        format!(
            "DO UPDATE SET {} WHERE {}",
            updates.join(", "),
            when(&|i| format!("EXCLUDED.{}", compared[i]))
        )
    };
    format!(
        "WITH up AS (INSERT INTO {table} AS t ({cols}) SELECT {select} FROM unnest({args}) \
         AS s({names}){unchanged} ON CONFLICT ({key}) {conflict} RETURNING (xmax = 0) AS ins) \
         SELECT count(*) FILTER (WHERE ins), count(*), now() FROM up",
        table = l.table.quoted(),
        cols = cols.join(", "),
        select = select.join(", "),
        args = args.join(", "),
        names = names.join(", "),
        key = q(&l.key_column),
    )
}

/// `ROW(a)` for one column (a bare parenthesised column is not a row).
fn row_expr(cols: &[String]) -> String {
    if cols.len() == 1 {
        format!("ROW({})", cols[0])
    } else {
        cols.join(", ")
    }
}

/// The offsets upsert. A commit lands only while the row's epoch is the writer's (else
/// the writer is fenced); it writes that epoch again, a no-op that leaves the writer's epoch
/// in the row's change for an audit trigger to see (the cluster tests keep such a log).
fn offsets_sql(table: &Table) -> String {
    format!(
        "INSERT INTO {t} AS o (\"group\", topic, \"partition\", next_offset, epoch, updated_at) \
         SELECT g, tp, p, n, e, now() FROM unnest($1::text[], $2::text[], $3::int[], \
         $4::bigint[], $5::bigint[]) AS s(g, tp, p, n, e) \
         ON CONFLICT (\"group\", topic, \"partition\") DO UPDATE \
         SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now(), \
         epoch = coalesce(EXCLUDED.epoch, o.epoch) \
         WHERE EXCLUDED.epoch IS NULL OR o.epoch IS NOT DISTINCT FROM EXCLUDED.epoch \
         RETURNING \"group\", topic, \"partition\"",
        t = table.quoted()
    )
}

/// Sorts a driver error into retry-later, refused-row (isolate) or fatal.
fn fault(e: tokio_postgres::Error) -> LoadError {
    let transient = match e.code() {
        None => !e.to_string().starts_with("error serializing"),
        Some(c) => {
            let c = c.code();
            c.starts_with("08")
                || matches!(
                    c,
                    "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300" | "25P03"
                )
        }
    };
    if transient {
        LoadError::Transient(e.into())
    } else {
        LoadError::Fatal(e.into())
    }
}

/// A key stored twice (SQLSTATE 23505): by COPY, a key that was stored after all.
fn is_unique_violation(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Whether a refused statement is about the data of some row (isolate it), not about the
/// table or the session: data exceptions (22), integrity violations (23), limits (54).
fn is_row_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            let c = c.code();
            c.starts_with("22") || c.starts_with("23") || c.starts_with("54")
        })
}

fn db_reason(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tokio_postgres::Error>() {
        Some(e) => message(e),
        None => e.to_string(),
    }
}
