//! `ingest-file`'s row: its flags ([`ingest_file::Args`]) to its source
//! ([`ingest_file::Config`]).

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::postgres::ConnectSpec;
use crate::stage::ingest_file::{self, From, Positions};
use crate::stage::Kind;

use super::{Command, Configured, Opened, Parsed};

pub static COMMAND: Command = Command {
    name: "ingest-file",
    kind: Kind::Source,
    binary: true,
    // One reading thread, batches of one read each: nothing held across threads but
    // the channel's few batches.
    holds_events: false,
    memory: None,
    knob: None,
    cli: ingest_file::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = ingest_file::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for ingest_file::Args {
    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(ingest_file::Config::from_args(&self)?))
    }
}

impl Configured for ingest_file::Config {
    fn explain(&self) -> Vec<String> {
        let mut lines = vec![format!("files {}", self.globs.texts().join(" "))];
        lines.push(match (self.follow, self.poll) {
            (false, _) => "reads every file once, oldest first, then ends".to_owned(),
            (true, None) => "follows: change events from the kernel".to_owned(),
            (true, Some(p)) => format!("follows: looks every {}", crate::human::elapsed(p)),
        });
        if self.from == From::End {
            lines.push("files found at start and never read: from their end".to_owned());
        }
        lines.push(match &self.positions {
            Positions::None => "positions: not kept (every run starts over)".to_owned(),
            Positions::File { path, .. } => format!(
                "acknowledges: positions in {} once the last stage has handled the lines (at least once)",
                path.display()
            ),
            Positions::Database {
                url,
                name,
                table,
                connect_timeout,
            } => format!(
                "acknowledges: exactly once, positions of {name} in {} of {} with the rows",
                table,
                match ConnectSpec::from_url(url, *connect_timeout, "ndpipe") {
                    Ok(spec) => format!("PostgreSQL {}", spec.display()),
                    Err(e) => format!("(invalid: {e})"),
                }
            ),
        });
        lines
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move { Ok(Opened::stage(*self)) })
    }
}
