//! Where rows go: PostgreSQL when one is configured, else the SQLite file.

use super::*;

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
