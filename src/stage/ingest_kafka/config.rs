//! What ingest-kafka runs with, resolved from its flags.

use super::*;

/// Settings fixed at start.
pub struct Config {
    pub(super) args: Args,
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
        Ok(Config { args: args.clone() })
    }
}
