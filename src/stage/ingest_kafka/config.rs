//! What ingest-kafka runs with: a plain config resolved from its flags once, so that
//! anything (a command line, a `pipeline` stage) can build the source.

use std::time::Duration;

use crate::exit::{Error, Result};
use crate::postgres::Table;

use super::{Args, Format, Start};

/// Settings fixed at start (see the flags of the same names in [`Args`]).
#[derive(Clone, Debug)]
pub struct Config {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: Option<String>,
    /// librdkafka settings (`-X key=value`), applied last.
    pub settings: Vec<(String, String)>,
    pub offset: Option<Start>,
    pub exit_at_end: bool,
    pub max_messages: Option<u64>,
    pub format: Format,
    pub wrap_non_json: bool,
    pub no_meta: bool,
    pub offsets_from: Option<String>,
    pub offsets_table: Table,
    pub offsets_name: Option<String>,
    pub connect_timeout: Duration,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        if args.offsets_from.is_some() {
            if args.group.is_none() && args.offsets_name.is_none() {
                return Err(Error::usage(
                    "--offsets-from needs --group or --offsets-name",
                ));
            }
            if args.no_meta || args.format == Format::Kcat {
                return Err(Error::usage(
                    "--offsets-from needs the metadata field: not with --no-meta or --format kcat",
                ));
            }
        }
        Ok(Config {
            brokers: args.brokers.clone(),
            topics: args.topics.clone(),
            group: args.group.clone(),
            settings: args.settings.clone(),
            offset: args.offset.clone(),
            exit_at_end: args.exit_at_end,
            max_messages: args.max_messages,
            format: args.format,
            wrap_non_json: args.wrap_non_json,
            no_meta: args.no_meta,
            offsets_from: args.offsets_from.clone(),
            offsets_table: args.offsets_table.clone(),
            offsets_name: args.offsets_name.clone(),
            connect_timeout: args.connect_timeout,
        })
    }
}
