//! `--sql QUERY --sql-args F1,F2`: a lookup in PostgreSQL.
//!
//! The query runs as a prepared statement, wrapped so that the server turns its rows into
//! JSON (`to_json` of each row, keeping the columns' order and every type PostgreSQL
//! knows): `--sql-rows first` sets the first row's object, `all` an array of them. No row
//! is a not-found answer. Each `$n` is bound to the n-th `--sql-args` field in text form,
//! so PostgreSQL reads it as whatever type the query gives `$n` (`id = $1` with an integer
//! `id` takes `42` or `"42"`; a JSON null is SQL NULL; an object or array its JSON text).
//!
//! Connections: [`POOL`] of them, opened at the first call that needs one and opened
//! again after the server closed them (a restart), each with the statement prepared.
//! tokio-postgres pipelines the queries of one connection, so many calls share one
//! without waiting for it: a pool crate's checkout of a connection per query would give
//! that up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::exit::{Error, Result};
use crate::postgres::ConnectSpec;

use super::{Answer, Failure};

/// Connections kept: each PostgreSQL backend runs its connection's queries one at a time,
/// so a few spread the work of many calls over the server's cores; more would only cost
/// the server memory (a backend each), as the calls out are bounded by `--concurrency`.
const POOL: usize = 4;

/// Which rows an answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rows {
    /// The first row, as an object.
    First,
    /// Every row, as an array of objects.
    All,
}

pub struct Sql {
    spec: ConnectSpec,
    /// The user's query, as given (for messages).
    pub query: String,
    /// The statement run: the query wrapped to answer JSON text.
    wrapped: String,
    pub rows: Rows,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

struct Conn {
    client: Client,
    statement: Statement,
}

impl Sql {
    pub fn new(spec: ConnectSpec, query: &str, rows: Rows) -> Result<Sql> {
        let query = query.trim().trim_end_matches(';').trim_end().to_owned();
        if query.is_empty() {
            return Err(Error::usage("--sql: an empty query"));
        }
        let wrapped = match rows {
            Rows::First => format!("SELECT to_json(q)::text FROM ({query}\n) AS q LIMIT 1"),
            Rows::All => format!("SELECT json_agg(q)::text FROM ({query}\n) AS q"),
        };
        Ok(Sql {
            spec,
            query,
            wrapped,
            rows,
            slots: (0..POOL).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// The database as messages and the breaker name it: `user@host:port/db`.
    pub fn service(&self) -> &str {
        self.spec.display()
    }

    /// Checks the query before the run: a query the server refuses (a syntax error, an
    /// unknown column, more `$n` than `--sql-args`) is a usage error. A database that
    /// cannot be reached now is not: the calls retry, and the breaker guards it.
    pub async fn check(&self, args: usize) -> Result<()> {
        match self.conn(0).await {
            Ok(conn) => {
                let wanted = conn.statement.params().len();
                if wanted != args {
                    return Err(Error::usage(format!(
                        "--sql takes {wanted} parameter{} ($1…), --sql-args gives {args}",
                        if wanted == 1 { "" } else { "s" }
                    )));
                }
                Ok(())
            }
            Err(Failure::Query { reason, .. }) => {
                Err(Error::usage(format!("--sql {:?}: {reason}", self.query)))
            }
            Err(e) => {
                tracing::warn!(
                    "enrich: {} cannot be reached now ({}); lookups will retry",
                    self.service(),
                    e.reason(std::time::Duration::ZERO)
                );
                Ok(())
            }
        }
    }

    /// A connection of slot `i`, opened (and the statement prepared) when there is none
    /// or the server closed it.
    async fn conn(&self, i: usize) -> std::result::Result<Arc<Conn>, Failure> {
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let client = self
            .spec
            .connect()
            .await
            .map_err(|e| Failure::Connect(self.spec.failure(&e)))?;
        let statement = client.prepare(&self.wrapped).await.map_err(failure)?;
        let conn = Arc::new(Conn { client, statement });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// One call: the query with `params` bound in text form.
    pub async fn call(&self, params: &[Option<String>]) -> std::result::Result<Answer, Failure> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % POOL;
        let conn = self.conn(i).await?;
        let params: Vec<TextParam> = params.iter().map(|p| TextParam(p.as_deref())).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let row = conn
            .client
            .query_opt(&conn.statement, &refs)
            .await
            .map_err(failure)?;
        match row.and_then(|r| r.get::<_, Option<String>>(0)) {
            None => Ok(Answer::NotFound),
            Some(text) => super::http::compact_json(text.as_bytes())
                .map(|t| Answer::Found(t.into()))
                .map_err(|e| Failure::BadAnswer(format!("not JSON: {e}"))),
        }
    }
}

/// A query's error: the server's own (with its SQLSTATE) or the connection's.
fn failure(e: tokio_postgres::Error) -> Failure {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: the connection closed or broke.
        return if e.is_closed() {
            Failure::Transport("the connection was closed".into())
        } else {
            Failure::Transport(crate::postgres::message(&e))
        };
    };
    let code = db.code().code();
    // Class 08 (connection), 57P0x (the server shutting down or starting), 53 (out of
    // resources), 40001/40P01 (serialization, deadlock), 57014 (statement_timeout):
    // asking again may succeed. Anything else is the query's or its arguments' fault.
    let retryable = code.starts_with("08")
        || code.starts_with("57P0")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57014");
    Failure::Query {
        reason: format!("{} (SQLSTATE {code})", db.message()),
        retryable,
    }
}

/// A parameter in PostgreSQL's text form, for any type the query gives it.
#[derive(Debug)]
struct TextParam<'a>(Option<&'a str>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A field's raw JSON value as a parameter: a string's characters, null as NULL, any other
/// value its JSON text.
pub fn param(raw: &str) -> Option<String> {
    if raw == "null" {
        None
    } else if raw.starts_with('"') {
        Some(serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned()))
    } else {
        Some(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_text() {
        assert_eq!(param("42"), Some("42".into()));
        assert_eq!(param("\"a \\\"b\\\"\""), Some("a \"b\"".into()));
        assert_eq!(param("null"), None);
        assert_eq!(param("{\"a\":1}"), Some("{\"a\":1}".into()));
    }
}
