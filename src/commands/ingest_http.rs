//! `ingest-http`'s row: its flags ([`ingest_http::Args`]) to its source
//! ([`ingest_http::Config`]).

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::human;
use crate::stage::ingest_http::{self, AckMode};
use crate::stage::Kind;

use super::{Command, Configured, Opened, Parsed};

pub static COMMAND: Command = Command {
    name: "ingest-http",
    kind: Kind::Source,
    binary: true,
    holds_events: true,
    memory: Some(crate::memory::tame_malloc),
    knob: None,
    cli: ingest_http::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = ingest_http::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for ingest_http::Args {
    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(ingest_http::Config::from_args(&self)?))
    }
}

impl Configured for ingest_http::Config {
    fn explain(&self) -> Vec<String> {
        vec![
            format!("listen {}", self.listen),
            format!(
                "queue {} events",
                human::count(u64::from(self.queue_capacity))
            ),
            match self.ack {
                AckMode::Queued => "acknowledges: 202 once queued".to_owned(),
                AckMode::Written => {
                    "acknowledges: 200 once the last stage has handled every event".to_owned()
                }
            },
        ]
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move { Ok(Opened::stage(*self)) })
    }
}
