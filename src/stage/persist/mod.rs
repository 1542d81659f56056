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
//! Files, one concern each: `args` (flags), `options` (the flags' settings free of
//! clap: what the rest is built from), `mapping` (event → row), `layout` (the table's
//! DDL and columns), `target` (PostgreSQL or SQLite), `load` (the router, the loaders
//! and their retries: the hot loop, over a [`Connection`] to either database);
//! [`sql_postgres`] and [`sql_sqlite`] hold each database's SQL and connection, and
//! `copy_in` PostgreSQL's fast path for new keys (binary COPY), `written` the keys a run
//! stored into a table empty at start (so that its batches need not look keys up);
//! [`offsets`] decides which source offsets may be recorded; [`version`] parses and
//! orders `--version-field` values; [`show`] is `--show`.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::Result;
use crate::stage::{Ctx, Ended, Kind, Stage};

mod args;
mod copy_in;
mod layout;
mod load;
mod mapping;
mod options;
mod target;
mod written;

pub use args::{Args, ColumnMap, OnConflict, Tombstones};
pub use layout::Layout;
pub use load::{Batching, Connection, Counts, LoadError, Loaded};
pub use mapping::{Mapping, Row};
pub use options::Options;
pub use target::{open, Target};

pub mod offsets;
pub mod show;
pub mod sql_postgres;
pub mod sql_sqlite;
pub mod version;

use load::run;
use version::VersionType;

/// The sink stage: how events map onto rows, how they are batched, its open
/// connections, and the counts it keeps.
pub struct Persist {
    pub mapping: Mapping,
    pub batching: Batching,
    pub connections: Vec<Connection>,
    pub counts: Arc<Counts>,
}

impl Persist {
    /// Opens the target (connections, the table and its layout) and builds the stage; the
    /// counts are shared with the caller, for the summary and metrics.
    pub async fn open(opts: &Options) -> Result<(Persist, Arc<Counts>)> {
        let (layout, connections) = open(opts).await?;
        let counts = Arc::new(Counts::default());
        let stage = Persist {
            mapping: Mapping::new(opts, &layout),
            batching: Batching::new(opts),
            connections,
            counts: counts.clone(),
        };
        Ok((stage, counts))
    }
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
    ) -> BoxFuture<'static, Result<Ended>> {
        let Persist {
            mapping,
            batching,
            connections,
            counts,
        } = *self;
        Box::pin(run(
            mapping,
            batching,
            connections,
            input,
            output,
            ctx,
            counts,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::args::*;
    use super::mapping::*;

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
