//! Exactly-once bookkeeping for the sources that resume from persist's offsets table
//! (`ingest-kafka --offsets-from`, `ingest-file --positions-from`): claiming a stream's
//! partitions with a new epoch, and reading the next offsets committed with the rows.
//!
//! A row of the table is (scope, stream, partition) → next_offset, epoch: a Kafka
//! consumer group (or offsets name), topic and partition; or `file:NAME`, a file's
//! identity and partition 0 (see [`crate::position`]). Claiming bumps the row's epoch;
//! the events read afterwards carry the new one, and persist commits a row only while
//! its epoch is unchanged, so a reader that has been replaced (a partition reassigned, a
//! second `ingest-file` of the same name) is fenced. `next_offset` is -1 for a row
//! claimed before anything of it was committed.

use std::collections::HashMap;
use std::time::Duration;

use crate::exit::{Error, Exit, Result};

use super::{create_if_absent, message, offsets_ddl, ConnectSpec, Table};

/// The offsets table, reached from a source's own thread (blocking calls on a private
/// runtime: sources read on threads of their own).
pub struct Claims {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    table: String,
    /// The flag that named the database, for messages (`--offsets-from`).
    flag: &'static str,
}

impl Claims {
    /// Connects as persist would (libpq's environment, password file, TLS modes: the
    /// offsets must live in the database persist writes to) and creates the table when
    /// it is missing. Exit 69 when the database cannot be reached within `timeout`.
    pub fn connect(
        url: &str,
        table: &Table,
        flag: &'static str,
        application: &str,
        timeout: Duration,
    ) -> Result<Claims> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(Exit::Software, e))?;
        let spec = ConnectSpec::from_url(url, timeout, application)
            .map_err(|e| Error::usage(format!("{flag}: {e}")))?;
        let client = rt
            .block_on(spec.connect())
            .map_err(|e| Error::unavailable(format!("{flag}: {}", spec.failure(&e))))?;
        let table = table.quoted();
        rt.block_on(create_if_absent(&client, &offsets_ddl(&table)))
            .map_err(|e| Error::unavailable(format!("{flag}: {}", message(&e))))?;
        Ok(Claims {
            rt,
            client,
            table,
            flag,
        })
    }

    /// Takes ownership of `partitions` of `stream` in `scope`: bumps their epochs and
    /// returns (the stored next offset when there is one, the new epoch) per partition.
    pub fn claim(
        &self,
        scope: &str,
        stream: &str,
        partitions: &[i32],
    ) -> Result<Vec<(Option<i64>, i64)>> {
        let sql = format!(
            "INSERT INTO {t} AS o (\"group\", topic, \"partition\", next_offset, epoch) \
             SELECT $1, $2, p, -1, 1 FROM unnest($3::int[]) AS p \
             ON CONFLICT (\"group\", topic, \"partition\") \
             DO UPDATE SET epoch = coalesce(o.epoch, 0) + 1, updated_at = now() \
             RETURNING \"partition\", next_offset, epoch",
            t = self.table
        );
        let rows = self
            .rt
            .block_on(self.client.query(&sql, &[&scope, &stream, &partitions]))
            .map_err(|e| self.failed(&e))?;
        let by: HashMap<i32, (i64, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, i32>(0), (r.get(1), r.get(2))))
            .collect();
        Ok(partitions
            .iter()
            .map(|p| {
                let (next, epoch) = by[p];
                ((next >= 0).then_some(next), epoch)
            })
            .collect())
    }

    /// The streams of `scope` with something committed: (stream, partition, next offset).
    pub fn committed(&self, scope: &str) -> Result<Vec<(String, i32, i64)>> {
        let sql = format!(
            "SELECT topic, \"partition\", next_offset FROM {t} \
             WHERE \"group\" = $1 AND next_offset >= 0",
            t = self.table
        );
        let rows = self
            .rt
            .block_on(self.client.query(&sql, &[&scope]))
            .map_err(|e| self.failed(&e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn failed(&self, e: &tokio_postgres::Error) -> Error {
        Error::new(
            Exit::IoErr,
            anyhow::anyhow!("{}: {}", self.flag, message(e)),
        )
    }
}
