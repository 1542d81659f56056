//! `validate`'s row: its flags ([`validate::Args`]) to its stage ([`validate::Config`]).

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::stage::{self, validate, Kind};

use super::{Command, Configured, Opened, Parsed};

pub static COMMAND: Command = Command {
    name: "validate",
    kind: Kind::Filter,
    binary: true,
    holds_events: false,
    memory: Some(crate::memory::reuse_malloc),
    knob: Some("--workers"),
    cli: validate::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = validate::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for validate::Args {
    fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    fn knob(&self) -> Option<usize> {
        Some(self.workers.unwrap_or_else(stage::workers::default_workers))
    }

    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(validate::Config::from_args(&self)?))
    }
}

impl Configured for validate::Config {
    fn explain(&self) -> Vec<String> {
        vec![format!("workers {}", self.workers)]
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move { Ok(Opened::stage(*self)) })
    }
}
