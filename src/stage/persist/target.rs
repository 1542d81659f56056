//! Where rows go: PostgreSQL when one is configured, else the SQLite file.

use std::path::PathBuf;

use crate::exit::{Error, Result};
use crate::postgres::ConnectSpec;

use super::{sql_postgres, sql_sqlite, Connection, Layout, Options};

/// Where rows go: resolved from the flags and the environment.
pub enum Target {
    Postgres(Box<ConnectSpec>),
    Sqlite(PathBuf),
}

impl Target {
    pub fn from_options(opts: &Options) -> Result<Target> {
        match ConnectSpec::from_env(
            opts.database_url.as_deref(),
            opts.connect_timeout,
            "ndpipe persist",
        )? {
            Some(spec) => Ok(Target::Postgres(Box::new(spec))),
            None => Ok(Target::Sqlite(opts.sqlite.clone())),
        }
    }
}

/// Opens the target, prepares the table and returns its layout and the loaders.
pub async fn open(opts: &Options) -> Result<(Layout, Vec<Connection>)> {
    if opts.create_table && opts.columns.iter().any(|c| c.ty.is_none()) {
        return Err(Error::usage(
            "--create-table with --column needs a type for every column (COL=FIELD:TYPE)",
        ));
    }
    match Target::from_options(opts)? {
        Target::Postgres(spec) => {
            let (layout, loaders) = sql_postgres::open(&spec, opts).await?;
            Ok((
                layout,
                loaders
                    .into_iter()
                    .map(|l| Connection::Postgres(Box::new(l)))
                    .collect(),
            ))
        }
        Target::Sqlite(path) => {
            if !opts.quiet {
                crate::progress::eprint_line(&format!(
                    "persist: no database configured (--database-url, DATABASE_URL, PG*): \
                     writing to the SQLite file {}",
                    path.display()
                ));
            }
            let (layout, loader) = sql_sqlite::open(&path, opts).await?;
            Ok((layout, vec![Connection::Sqlite(loader)]))
        }
    }
}
