//! `ingest-kafka`'s row: its flags ([`ingest_kafka::Args`]) to its source
//! ([`ingest_kafka::Config`]).

use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use futures::future::BoxFuture;

use crate::cli::Common;
use crate::exit::Result;
use crate::postgres::ConnectSpec;
use crate::stage::{ingest_kafka, Kind};

use super::{Command, Configured, Opened, Parsed};

pub static COMMAND: Command = Command {
    name: "ingest-kafka",
    kind: Kind::Source,
    binary: true,
    holds_events: true,
    // Not tame_malloc: librdkafka reads whole fetch responses (megabytes) into fresh
    // buffers, and mapping each one anew cost a page fault per 4 KiB.
    memory: None,
    knob: None,
    cli: ingest_kafka::Args::command,
    parse,
};

fn parse(m: &ArgMatches, common: &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error> {
    let mut args = ingest_kafka::Args::from_arg_matches(m)?;
    args.common = common.clone();
    Ok(Box::new(args))
}

impl Parsed for ingest_kafka::Args {
    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>> {
        Ok(Box::new(ingest_kafka::Config::from_args(&self)?))
    }
}

impl Configured for ingest_kafka::Config {
    fn explain(&self) -> Vec<String> {
        let mut lines = vec![
            format!("brokers {}", self.brokers),
            format!("topics {}", self.topics.join(",")),
        ];
        if let Some(g) = &self.group {
            lines.push(format!("group {g}"));
        }
        lines.push(match &self.offsets_from {
            Some(url) => format!(
                "acknowledges: exactly once, offsets in {} of {} with the rows",
                self.offsets_table,
                target(url, self.connect_timeout)
            ),
            None => "acknowledges: offsets committed to Kafka once the last stage has \
                     handled the events (at least once)"
                .to_owned(),
        });
        lines
    }

    /// Consumer lag for `/metrics`, from librdkafka's statistics every second (unless
    /// `-X statistics.interval.ms` says otherwise).
    fn serve_metrics(&mut self) {
        if !self
            .settings
            .iter()
            .any(|(k, _)| k == "statistics.interval.ms")
        {
            self.settings
                .push(("statistics.interval.ms".into(), "1000".into()));
        }
    }

    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>> {
        Box::pin(async move {
            Ok(Opened {
                stage: self,
                outcomes: None,
            })
        })
    }
}

/// The PostgreSQL server a URL names, for the explanation.
fn target(url: &str, timeout: Duration) -> String {
    match ConnectSpec::from_url(url, timeout, "ndpipe") {
        Ok(spec) => format!("PostgreSQL {}", spec.display()),
        Err(e) => format!("(invalid: {e})"),
    }
}
