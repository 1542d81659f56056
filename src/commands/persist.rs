//! `persist`'s row: its flags ([`persist::Args`]) to its sink ([`persist::Options`],
//! opened as [`persist::Persist`]); or with `--show`, the table's rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::{BoxFuture, LocalBoxFuture};

use crate::cli::Common;
use crate::exit::{Error, Exit, Result};
use crate::human;
use crate::postgres::ConnectSpec;
use crate::stage::{persist, Kind};

use super::{Command, Configured, Opened, Outcomes, Parsed};

pub static COMMAND: Command = Command {
    name: "persist",
    kind: Kind::Sink,
    binary: true,
    holds_events: true,
    memory: Some(crate::memory::sink_malloc),
    knob: Some("--connections"),
    cli: persist::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = persist::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for persist::Args {
    fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    fn not_a_stage(&self) -> Option<String> {
        self.show.then(|| {
            "--show reads a table and is not a stage: run 'persist --show' alone".to_owned()
        })
    }

    fn passes_on(&self) -> bool {
        self.emit
    }

    fn knob(&self) -> Option<usize> {
        Some(self.connections as usize)
    }

    fn alone(&self) -> Option<LocalBoxFuture<'static, Result<Exit>>> {
        if !self.show {
            return None;
        }
        if !self.inputs.is_empty() {
            let refused = Err(Error::usage("--show reads the table, not input files"));
            return Some(Box::pin(async move { refused }));
        }
        let opts = persist::Options::from(self);
        Some(Box::pin(async move { persist::show::run(&opts).await }))
    }

    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(persist::Options::from(&*self)))
    }
}

impl Configured for persist::Options {
    fn explain(&self) -> Vec<String> {
        // As persist resolves it: the URL, else the PG variables, else SQLite.
        let db = match ConnectSpec::from_env(
            self.database_url.as_deref(),
            self.connect_timeout,
            "ndpipe",
        ) {
            Ok(Some(spec)) => format!("PostgreSQL {}", spec.display()),
            Err(e) if self.database_url.is_some() => format!("(invalid: {e})"),
            _ => format!("SQLite {}", self.sqlite.display()),
        };
        vec![
            format!("database {db}, table {}", self.table),
            format!(
                "batches of {} rows, linger {}, {} connection(s)",
                human::count(u64::from(self.batch_size)),
                human::elapsed(self.linger),
                self.connections
            ),
            if self.emit {
                "passes committed events on (--emit)".to_owned()
            } else {
                "passes nothing on".to_owned()
            },
        ]
    }

    fn databases(&self) -> Vec<ConnectSpec> {
        ConnectSpec::from_env(
            self.database_url.as_deref(),
            self.connect_timeout,
            "ndpipe-ready",
        )
        .ok()
        .flatten()
        .into_iter()
        .collect()
    }

    fn ends_output(&self) -> bool {
        !self.emit
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move {
            let (stage, counts) = persist::Persist::open(&self).await?;
            Ok(Opened {
                stage: Box::new(stage),
                outcomes: Some(counts),
            })
        })
    }
}

impl Outcomes for persist::Counts {
    fn summary(&self) -> (String, String) {
        persist::Counts::summary(self)
    }

    fn export(&self, component: &'static str) {
        let rows = |outcome: &'static str, n: &AtomicU64| {
            metrics::counter!("ndpipe_persist_rows_total", "component" => component, "outcome" => outcome)
                .absolute(n.load(Ordering::Relaxed));
        };
        rows("inserted", &self.inserted);
        rows("updated", &self.updated);
        rows("unchanged", &self.unchanged);
        rows("deleted", &self.deleted);
        rows("superseded", &self.superseded);
        rows("fenced", &self.fenced);
        metrics::counter!("ndpipe_persist_retries_total", "component" => component)
            .absolute(self.retries.load(Ordering::Relaxed));
        metrics::counter!("ndpipe_persist_batches_total", "component" => component)
            .absolute(self.batches.load(Ordering::Relaxed));
    }
}
