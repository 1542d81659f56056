//! `enrich`'s row: its flags ([`enrich::Args`]) to its stage ([`enrich::Config`]).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::operator::Check;
use crate::stage::enrich::remote::Remote;
use crate::stage::{self, enrich, Kind};

use super::{Command, Configured, Opened, Outcomes, Parsed};

pub static COMMAND: Command = Command {
    name: "enrich",
    kind: Kind::Filter,
    binary: true,
    holds_events: false,
    memory: Some(crate::memory::reuse_malloc),
    knob: Some("--workers"),
    cli: enrich::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = enrich::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for enrich::Args {
    fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    fn knob(&self) -> Option<usize> {
        Some(self.workers.unwrap_or_else(stage::workers::default_workers))
    }

    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(enrich::Config::from_args(&self)?))
    }
}

impl Configured for enrich::Config {
    fn explain(&self) -> Vec<String> {
        match &self.remote {
            // With a lookup the calls' limits, not workers, say how much is done at once.
            Some(remote) => remote.explain(),
            None => std::iter::once(format!("workers {}", self.workers))
                .chain(self.explain_jq())
                .collect(),
        }
    }

    fn checks(&self) -> Vec<Check> {
        let Some(remote) = self.remote.clone() else {
            return Vec::new();
        };
        let probe = move || match remote.open_breakers().as_slice() {
            [] => Ok(()),
            open => Err(format!(
                "the circuit breaker of {} is open: enrich makes no calls to it",
                open.join(", ")
            )),
        };
        vec![("breaker".to_owned(), Arc::new(probe))]
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move {
            if let Some(remote) = &self.remote {
                remote.check().await?;
            }
            let outcomes = self
                .remote
                .clone()
                .map(|remote| Arc::new(Lookups(remote)) as Arc<dyn Outcomes>);
            Ok(Opened {
                stage: Box::new(*self),
                outcomes,
            })
        })
    }
}

/// What a lookup stage's summary adds: the concurrency it ran at. (Its calls, hits and
/// breaker openings are figures of its tally, shown with the others.)
struct Lookups(Arc<Remote>);

impl Outcomes for Lookups {
    fn summary(&self) -> (String, String) {
        (String::new(), format!(", {}", self.0.concurrency_words()))
    }

    fn export(&self, _component: &'static str) {}
}
