//! `tee`'s row: a stage of `pipeline` only (in a shell, the system's `tee` does).

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::stage::{tee, Kind};

use super::{Command, Configured, Opened, Parsed};

pub static COMMAND: Command = Command {
    name: "tee",
    kind: Kind::Filter,
    binary: false,
    holds_events: false,
    // No binary of its own.
    memory: None,
    knob: None,
    cli: tee::Args::command,
    parse,
};

fn parse(m: &ArgMatches, _: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    Ok(Box::new(tee::Args::from_arg_matches(m)?))
}

impl Parsed for tee::Args {
    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(tee::Config::from_args(&self)))
    }
}

impl Configured for tee::Config {
    fn explain(&self) -> Vec<String> {
        vec![format!(
            "{} {}",
            if self.append { "appends to" } else { "writes" },
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )]
    }

    fn looks_inside(&self) -> bool {
        false
    }

    fn writes(&self) -> &[PathBuf] {
        &self.files
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move { Ok(Opened::stage(*self)) })
    }
}
