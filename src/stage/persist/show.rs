//! `persist --show`: the rows of the table as NDJSON on stdout, to see what runs stored
//! (in the SQLite default too, without a sqlite3 shell).
//!
//! One object per row, ordered by key, with every column: `payload` and `meta` as JSON,
//! other columns as their values (timestamps as text). `| head` ends it quietly.

use std::io::{BufWriter, Write};

use futures::{pin_mut, TryStreamExt};

use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::postgres::{self, quote_ident, Table};

use super::{Options, Target};

/// Prints the table; the exit code is 0 (also when stdout closed early).
pub async fn run(opts: &Options) -> Result<Exit> {
    let table = opts.table.quoted();
    let key = quote_ident(&opts.key_column);
    let written = match Target::from_options(opts)? {
        Target::Postgres(spec) => {
            let client = spec
                .connect()
                .await
                .map_err(|e| Error::unavailable(spec.failure(&e)))?;
            let sql = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY {key}");
            let rows = client
                .query_raw(&sql, std::iter::empty::<&str>())
                .await
                .map_err(|e| shown_error(&opts.table, postgres::message(&e)))?;
            pin_mut!(rows);
            let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            let mut result = Ok(());
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| shown_error(&opts.table, postgres::message(&e)))?
            {
                let line: &str = row.get(0);
                result = writeln!(out, "{line}");
                if result.is_err() {
                    break;
                }
            }
            result.and_then(|()| out.flush())
        }
        Target::Sqlite(path) => {
            if !path.exists() {
                return Err(Error::no_input(format!(
                    "{}: no such SQLite file (no run has written to it)",
                    path.display()
                )));
            }
            let t = opts.table.clone();
            let read = tokio::task::spawn_blocking(move || sqlite_rows(&path, &t, &table, &key));
            Error::joined("--show", read.await)??
        }
    };
    match written {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
        Err(e) => Err(Error::new(
            Exit::IoErr,
            anyhow::anyhow!("writing output: {e}"),
        )),
    }
}

fn shown_error(table: &Table, msg: String) -> Error {
    Error::new(
        Exit::IoErr,
        anyhow::anyhow!("--show: cannot read {table}: {msg}"),
    )
}

/// Writes the rows of an SQLite table; the outer result is the database's, the inner
/// one stdout's.
fn sqlite_rows(
    path: &std::path::Path,
    t: &Table,
    table: &str,
    key: &str,
) -> Result<std::io::Result<()>> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| shown_error(t, e.to_string()))?;
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY {key}"))
        .map_err(|e| shown_error(t, e.to_string()))?;
    let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    let mut rows = stmt.query([]).map_err(|e| shown_error(t, e.to_string()))?;
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = String::new();
    while let Some(row) = rows.next().map_err(|e| shown_error(t, e.to_string()))? {
        line.clear();
        line.push('{');
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&json::quote(name));
            line.push(':');
            match row.get_ref(i).map_err(|e| shown_error(t, e.to_string()))? {
                ValueRef::Null => line.push_str("null"),
                ValueRef::Integer(n) => line.push_str(&n.to_string()),
                ValueRef::Real(f) => line.push_str(&serde_json::Value::from(f).to_string()),
                ValueRef::Text(b) => {
                    let text = String::from_utf8_lossy(b);
                    // JSON columns hold JSON text: show it as JSON, not as a string.
                    let is_json = matches!(name.as_str(), "payload" | "meta")
                        && serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok();
                    if is_json {
                        line.push_str(&text);
                    } else {
                        line.push_str(&json::quote(&text));
                    }
                }
                ValueRef::Blob(b) => line.push_str(&json::quote(&format!("<{} bytes>", b.len()))),
            }
        }
        line.push_str("}\n");
        if let Err(e) = out.write_all(line.as_bytes()) {
            return Ok(Err(e));
        }
    }
    Ok(out.flush())
}
