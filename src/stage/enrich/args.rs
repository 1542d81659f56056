//! enrich's flags, with the examples its --help shows.

use std::path::PathBuf;

use clap::Parser;

use crate::cli::Common;
use crate::json::FieldPath;

use super::remote::RemoteArgs;

pub(super) const EXAMPLES: &str = "\
Examples:
  Stamp, tag and give every event a stable id:
    enrich --set env='\"prod\"' --timestamp received_at \\
      --id event_key --id-from user_id,ts \\
      --dead-letter rejects.ndjson < events.ndjson

  Join a CSV table (user_id,name,plan) under a prefix:
    enrich --lookup users.csv --on user_id --prefix user. \\
      --dead-letter rejects.ndjson < events.ndjson

  Look users up in a service, answers kept 5 minutes:
    enrich --http 'http://127.0.0.1:8081/users/{user_id}' \\
      --into user --concurrency 64 \\
      --cache-size 10000 --cache-ttl 5m \\
      --dead-letter rejects.ndjson < events.ndjson

  Reshape with jq; an event may give several, or none:
    enrich --jq 'select(.type == \"payment\")
      | {id, cents: (.amount * 100 | floor)}' \\
      --dead-letter rejects.ndjson < events.ndjson
    enrich --jq '.tags[] as $t | {id, tag: $t}' \\
      --dead-letter rejects.ndjson < events.ndjson";

/// Add or change fields of NDJSON events, join reference data, or transform with jq.
///
/// Per event, in this order: --http, --lookup, --jq, --set, --id, --timestamp (so --jq
/// sees the joined fields; --http and --jq go in two stages). Unchanged bytes
/// are passed through as they came; the metadata field is kept and never shown to jq.
/// Events a step cannot handle (jq error, a parent on a path that is not an object, a
/// missing --id-from field) go to the dead-letter output. Field names are dotted paths
/// (a.b.c) or JSON pointers (/a.b/c); missing parents are created.
#[derive(Parser, Clone, Debug)]
#[command(name = "enrich", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Input files, read in order. `-` or none means stdin.
    #[arg(value_name = "FILE")]
    pub inputs: Vec<PathBuf>,

    /// Set FIELD to a JSON value, replacing it in place when present (strings need JSON
    /// quotes: env='"prod"'). Repeatable; applied in order.
    #[arg(long, value_name = "FIELD=JSON", value_parser = parse_set)]
    pub set: Vec<SetField>,

    /// Set FIELD to the processing time, RFC 3339 in UTC with microseconds.
    #[arg(long, value_name = "FIELD")]
    pub timestamp: Option<FieldPath>,

    /// Set FIELD to a deterministic id computed from the --id-from fields: the lowercase
    /// hex SHA-256 of their values as a canonical JSON array (no spaces, object keys
    /// sorted, numbers as printed by serde_json). An event missing one of them is rejected.
    #[arg(long, value_name = "FIELD", requires = "id_from")]
    pub id: Option<FieldPath>,

    /// The fields the --id is computed from, comma-separated, in this order.
    #[arg(long, value_name = "F1,F2,...", value_delimiter = ',', requires = "id")]
    pub id_from: Vec<FieldPath>,

    /// Reference table to join, loaded once: CSV with a header row (TSV for .tsv), or
    /// NDJSON objects (.ndjson, .jsonl, or content starting with `{`). Events without a
    /// matching row pass unchanged; of duplicate keys in the table the last row wins.
    #[arg(long, value_name = "FILE", requires = "on")]
    pub lookup: Option<PathBuf>,

    /// The join key: the event field, and the table column when named differently
    /// (user.id=id). Strings match by value, numbers by their text.
    #[arg(long, value_name = "FIELD[=COLUMN]", requires = "lookup")]
    pub on: Option<String>,

    /// Prefix for the joined fields' names; ending it with a dot nests them (user.).
    #[arg(long, value_name = "P", default_value = "", requires = "lookup")]
    pub prefix: String,

    /// A jq program (jaq dialect) run on each event without its metadata field. No output
    /// drops the event; several outputs become several events, in order. Every output
    /// must be an object. Programs built only from assignments and updates of keys
    /// (= |= += -= *= /= %= //=), del, object and array constructors (one key's value
    /// may be .a[]: an object per element), E as $x | …, .a[] as $x | … (an output per
    /// element), select, if/elif/else, comparisons,
    /// and/or/not, arithmetic, //, string interpolation, pipes, and floor, round, ceil,
    /// tostring, tonumber, length, ascii_downcase, ascii_upcase, has, split, join,
    /// test("literal regex"), empty run on the event's text in the worker (the fast
    /// path, 5-10x faster); any other program runs in jaq. Both give the same
    /// bytes; pipeline --explain says which path a program takes, and why.
    #[arg(long, value_name = "EXPR")]
    pub jq: Option<String>,

    /// The longest the jq program may run on one event; past it the event is a dead
    /// letter (kind jq). Programs run in helper processes, so a runaway one (or one that
    /// recurses too deep) costs its event only.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, requires = "jq")]
    pub jq_timeout: std::time::Duration,

    /// The most outputs the jq program may give for one event; past it the event is a
    /// dead letter (kind jq).
    #[arg(long, value_name = "N", default_value_t = 10_000, requires = "jq")]
    pub jq_max_outputs: u64,

    /// Batches enriched at once, in parallel on one thread per core (with --jq, on threads
    /// of their own, which wait for jq); output order is kept [default: twice the number
    /// of cores, so that a core always has a batch to work on while others wait to be sent
    /// on in order].
    #[arg(long, value_name = "N", value_parser = crate::cli::parse_count)]
    pub workers: Option<usize>,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Debug)]
pub struct SetField {
    pub path: FieldPath,
    /// Compact JSON text of the value.
    pub value: String,
}

pub(super) fn parse_set(s: &str) -> std::result::Result<SetField, String> {
    let (field, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected FIELD=JSON, e.g. env='\"prod\"' or retries=3"))?;
    let parsed: serde_json::Value = serde_json::from_str(value).map_err(|_| {
        format!(
            "--set {field}: {value:?} is not JSON (a string needs quotes: {field}='\"{value}\"')"
        )
    })?;
    Ok(SetField {
        path: FieldPath::parse(field)?,
        value: parsed.to_string(),
    })
}
