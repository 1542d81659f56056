//! New keys into PostgreSQL by binary COPY: the fast path of a batch whose keys are mostly
//! not stored yet (a first load, a backfill, a stream of new ids).
//!
//! The upsert statement ([`super::sql_postgres`]) inserts row by row: the server looks
//! each key up in the index for the conflict check, inserts it speculatively and writes
//! one WAL record per row. COPY inserts pages of rows at once (one WAL record per page)
//! with no conflict check. So a batch first asks which of its keys are stored (one read
//! of the index per key, and the transaction's `now()` for the timestamps, in one round
//! trip); the rows of the others go in by COPY, and only the stored ones through the
//! upsert with its version rule. Into a table that was empty at start, the keys this run
//! stored answer that instead, with no lookup ([`super::written`]). Each connection
//! prepares the statements once ([`CopyStatements`]): prepared per batch, they cost a
//! round trip each while the server waited (2-3 % of a load).
//!
//! Every guarantee stays: the batch's winners were picked before, the rows and the
//! offsets share the transaction, and a COPY the server refuses (a row it cannot store,
//! or a key another writer stored since the lookup, which is a unique violation) fails
//! the transaction like a refused upsert does: it is redone through the upsert
//! statement, row errors isolated, see [`super::load`].
//!
//! Only for tables whose columns take the values as persist has them without a cast:
//! the key `text`/`varchar`, `payload`/`meta` `jsonb`, `version` `bigint`, the
//! timestamps `timestamptz`, and no `--column`s ([`Layout::binary_copy`]).

use std::collections::HashSet;
use std::time::SystemTime;

use smallvec::SmallVec;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use crate::postgres::quote_ident;

use super::sql_postgres::Jsonb;
use super::{Layout, Row};

/// The statements and column types of one table's COPY path (its columns are the
/// layout's, in [`CopyIn::copy`]'s order).
pub struct CopyIn {
    lookup: String,
    copy: String,
    types: Vec<Type>,
}

impl CopyIn {
    /// The COPY path for `l`, or None when its columns need casts (see the module).
    pub fn plan(l: &Layout) -> Option<CopyIn> {
        if !l.binary_copy {
            return None;
        }
        let q = quote_ident;
        let key = q(&l.key_column);
        let table = l.table.quoted();
        let mut cols = vec![key.clone()];
        let mut types = vec![Type::TEXT];
        for (present, name, ty) in [
            (l.payload, "payload", Type::JSONB),
            (l.meta, "meta", Type::JSONB),
            (l.version.is_some(), "version", Type::INT8),
            (l.first_seen, "first_seen", Type::TIMESTAMPTZ),
            (l.updated_at, "updated_at", Type::TIMESTAMPTZ),
        ] {
            if present {
                cols.push(q(name));
                types.push(ty);
            }
        }
        Some(CopyIn {
            lookup: format!(
                "SELECT now(), ARRAY(SELECT {key}::text FROM {table} WHERE {key} = ANY($1::text[]))"
            ),
            copy: format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                cols.join(", ")
            ),
            types,
        })
    }

    /// The statements, prepared on `client`.
    pub async fn prepare(&self, client: &Client) -> Result<CopyStatements, tokio_postgres::Error> {
        Ok(CopyStatements {
            lookup: client.prepare(&self.lookup).await?,
            copy: client.prepare(&self.copy).await?,
            now: client.prepare("SELECT now()").await?,
            types: self.types.clone(),
        })
    }
}

/// One connection's statements of the COPY path, prepared.
pub struct CopyStatements {
    lookup: Statement,
    copy: Statement,
    now: Statement,
    types: Vec<Type>,
}

impl CopyStatements {
    /// Which of `rows`' keys are stored, and the transaction's `now()` (what the upsert
    /// statement writes as first_seen and updated_at).
    pub async fn lookup(
        &self,
        tx: &Transaction<'_>,
        rows: &[&Row],
    ) -> Result<(HashSet<String>, SystemTime), tokio_postgres::Error> {
        // In byte order: the server sorts the array for its index scan with the column's
        // collation, and its sort finds presorted input in one pass — so under C or
        // C.UTF-8 (byte order) this spares it a sort of a batch of keys (4 % of the
        // server's time in a perf profile of bench/persist.sh). Other collations lose
        // nothing but that pass.
        let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        let row = tx.query_one(&self.lookup, &[&keys]).await?;
        let stored: Vec<String> = row.get(1);
        Ok((stored.into_iter().collect(), row.get(0)))
    }

    /// The transaction's `now()`, what the upsert statement writes as first_seen and
    /// updated_at (for a batch whose keys were not looked up).
    pub async fn now(&self, tx: &Transaction<'_>) -> Result<SystemTime, tokio_postgres::Error> {
        Ok(tx.query_one(&self.now, &[]).await?.get(0))
    }

    /// Inserts `rows` (none of whose keys is stored) into `l`'s table by COPY; returns how
    /// many.
    pub async fn copy(
        &self,
        tx: &Transaction<'_>,
        l: &Layout,
        rows: &[&Row],
        now: SystemTime,
    ) -> Result<u64, tokio_postgres::Error> {
        let sink = tx.copy_in(&self.copy).await?;
        let writer = BinaryCopyInWriter::new(sink, &self.types);
        let mut writer = std::pin::pin!(writer);
        for r in rows {
            let payload = Jsonb(r.payload());
            let meta = r.meta.as_deref().map(Jsonb);
            let version: Option<i64> = r.version.as_ref().and_then(|v| v.int());
            // Six columns at most: on the stack.
            let mut values: SmallVec<[&(dyn ToSql + Sync); 6]> = SmallVec::new();
            values.push(&r.key);
            for (present, value) in [
                (l.payload, &payload as &(dyn ToSql + Sync)),
                (l.meta, &meta),
                (l.version.is_some(), &version),
                (l.first_seen, &now),
                (l.updated_at, &now),
            ] {
                if present {
                    values.push(value);
                }
            }
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await
    }
}
