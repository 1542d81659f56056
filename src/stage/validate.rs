//! `validate`: pass events that satisfy a JSON Schema or quick field rules through
//! unchanged; send the rest to the dead-letter output with the reason.
//!
//! The schema is compiled once. With only `--require`/`--type` rules, events are never
//! turned into trees: the rules read the raw bytes of the fields they name. The metadata
//! field is invisible to both: the schema sees the event without it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::cli::Common;
use crate::event::{Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json::{self, FieldPath, Member, Names};
use crate::stage::workers::{self, Worked};
use crate::stage::{Ctx, Ended, Kind, Stage};
use crate::tape::{TapeJson, TapeNode};

const EXAMPLES: &str = "\
Examples:
  Check events against a schema, keeping the rejects:
    validate --schema event.schema.json \\
      --dead-letter rejects.ndjson events.ndjson

  Quick rules, no schema file:
    cat events.ndjson | validate --require id,type \\
      --type amount=number --type meta.seq=integer \\
      --dead-letter rejects.ndjson > checked.ndjson

  Look at the rejects while the valid events go on:
    validate --require id --dead-letter - \\
      < events.ndjson > valid.ndjson";

/// Check NDJSON events against a JSON Schema or quick field rules.
///
/// Valid events are written to stdout byte for byte as they came in; invalid ones go to
/// the dead-letter output with the reason (the instance path and the keyword that failed).
/// Lines that are not JSON objects are rejected the same way, and the stream goes on.
/// Field names are dotted paths (a.b.c) or JSON pointers (/a.b/c).
#[derive(Parser, Clone, Debug)]
#[command(name = "validate", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Input files, read in order. `-` or none means stdin.
    #[arg(value_name = "FILE")]
    pub inputs: Vec<PathBuf>,

    /// JSON Schema to check every event against (draft 2020-12 or draft 7, chosen by the
    /// schema's `$schema`; 2020-12 when absent). `format` is asserted. Compiled once.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// Fields that must be present (null counts as present), comma-separated or repeated.
    #[arg(long, value_name = "FIELD,...", value_delimiter = ',')]
    pub require: Vec<FieldPath>,

    /// A field's JSON type, when present: string, number, integer, boolean, object,
    /// array or null (integer accepts 1.0, as JSON Schema does). Repeatable.
    #[arg(long = "type", value_name = "FIELD=TYPE", value_parser = parse_type_rule)]
    pub types: Vec<TypeRule>,

    /// Batches checked at once, in parallel on one thread per core; output order is kept
    /// [default: twice the number of cores, so that a core always has a batch to work on
    /// while others wait to be sent on in order].
    #[arg(long, value_name = "N", value_parser = crate::cli::parse_count)]
    pub workers: Option<usize>,

    #[command(flatten)]
    pub common: Common,
}

/// A JSON type name for `--type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

#[derive(Clone, Debug)]
pub struct TypeRule {
    pub path: FieldPath,
    pub ty: JsonType,
}

fn parse_type_rule(s: &str) -> std::result::Result<TypeRule, String> {
    let (field, ty) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected FIELD=TYPE, e.g. amount=number"))?;
    Ok(TypeRule {
        path: FieldPath::parse(field)?,
        ty: JsonType::from_str(ty, true).map_err(|_| {
            format!(
                "{ty:?} is not a type: use string, number, integer, boolean, object, array or null"
            )
        })?,
    })
}

/// What `validate` checks.
pub struct Config {
    schema: Option<jsonschema::Validator<TapeJson>>,
    require: Vec<FieldPath>,
    types: Vec<TypeRule>,
    /// The top-level fields the rules read, found together.
    fields: Fields,
    pub workers: usize,
}

/// The top-level fields a validation reads, found in one pass over an event's members
/// (looking each up in turn cost more than the rest of the rules), and for each rule
/// the position of its field's name.
struct Fields {
    names: Names,
    require: Vec<usize>,
    types: Vec<usize>,
}

impl Fields {
    fn of(require: &[FieldPath], types: &[TypeRule]) -> Fields {
        let all = || require.iter().chain(types.iter().map(|t| &t.path));
        let names = Names::new(all().map(|p| p.first().to_owned()));
        let at = |p: &FieldPath| {
            names
                .names()
                .iter()
                .position(|n| n == p.first())
                .expect("named above")
        };
        Fields {
            require: require.iter().map(at).collect(),
            types: types.iter().map(|t| at(&t.path)).collect(),
            names,
        }
    }
}

/// The raw text at `path` in `text`, `found` its first segment's member (`None` for the
/// metadata field `meta`, which no rule sees).
fn field_at<'t>(
    text: &'t str,
    found: Option<&Member>,
    path: &FieldPath,
    meta: &str,
) -> Option<&'t str> {
    if path.first() == meta {
        return None;
    }
    json::get_in(&text[found?.value()], &path.segments()[1..])
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let schema = match &args.schema {
            None => None,
            Some(path) => Some(compile_schema(path)?),
        };
        let fields = Fields::of(&args.require, &args.types);
        Ok(Config {
            schema,
            require: args.require.clone(),
            types: args.types.clone(),
            fields,
            workers: args.workers.unwrap_or_else(workers::default_workers),
        })
    }

    /// Checks one event. The metadata field `meta` is invisible to every rule.
    pub fn check(&self, event: &mut Event, meta: &str) -> std::result::Result<(), Reject> {
        #[cfg(feature = "fault-injection")]
        workers::injected_fault(event);
        if let Some(schema) = &self.schema {
            event.decode_with(|text, nodes| {
                let root = TapeNode::root(text, nodes, Some(meta));
                if schema.is_valid(root) {
                    return Ok(());
                }
                Err(match schema.iter_errors(root).next() {
                    Some(e) => {
                        let path = e.instance_path().as_str();
                        let path = if path.is_empty() { "/" } else { path };
                        Reject::new("schema", format!("{path} {}: {e}", e.kind().keyword()))
                    }
                    None => Reject::new("schema", "does not match the schema"),
                })
            })??;
        }
        if self.require.is_empty() && self.types.is_empty() {
            return event.decode();
        }
        event.decode()?;
        let (text, members) = event.text_and_members();
        let found = self.fields.names.find_all(text, members);
        for (path, &at) in self.require.iter().zip(&self.fields.require) {
            if field_at(text, found[at], path, meta).is_none() {
                return Err(Reject::new(
                    "missing_field",
                    format!("missing required field {path}"),
                ));
            }
        }
        for (rule, &at) in self.types.iter().zip(&self.fields.types) {
            if let Some(raw) = field_at(text, found[at], &rule.path, meta) {
                if !is_type(raw, rule.ty) {
                    return Err(Reject::new(
                        "wrong_type",
                        format!(
                            "field {}: expected {}, found {}",
                            rule.path,
                            rule.ty.to_possible_value().expect("named").get_name(),
                            json::type_of(raw)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_type(raw: &str, ty: JsonType) -> bool {
    let first = raw.as_bytes().first().copied().unwrap_or(b' ');
    let number = first == b'-' || first.is_ascii_digit();
    match ty {
        JsonType::String => first == b'"',
        JsonType::Number => number,
        JsonType::Integer => {
            number
                && (!raw.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'))
                    || raw.parse::<f64>().is_ok_and(|f| f.fract() == 0.0))
        }
        JsonType::Boolean => first == b't' || first == b'f',
        JsonType::Object => first == b'{',
        JsonType::Array => first == b'[',
        JsonType::Null => first == b'n',
    }
}

fn compile_schema(path: &PathBuf) -> Result<jsonschema::Validator<TapeJson>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::unreadable(format!("--schema {}", path.display()), &e, Exit::IoErr))?;
    let schema: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::usage(format!("--schema {}: not JSON: {e}", path.display())))?;
    jsonschema::options_for::<TapeJson>()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| Error::usage(format!("--schema {}: invalid schema: {e}", path.display())))
}

/// The stage: checks up to `config.workers` batches at once, order kept.
pub async fn run(
    config: Arc<Config>,
    input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
) -> Result<Ended> {
    let meta = ctx.meta_field.clone();
    let workers = config.workers;
    workers::map_ordered(
        "validate",
        input,
        output,
        &ctx,
        // Checking only computes (a schema reads nothing from outside once compiled).
        workers,
        workers::Runs::OnRuntime,
        move |mut batch| {
            let mut kept = Vec::with_capacity(batch.len());
            let mut rejects = Vec::new();
            // A schema reads the tape of each event's scan, and indexes it in the same pass.
            let refused = match config.schema {
                None => Event::decode_all(&mut batch.events),
                Some(_) => Vec::new(),
            };
            let mut refused = refused.into_iter().peekable();
            for (i, mut event) in batch.events.into_iter().enumerate() {
                let checked = match refused.next_if(|(at, _)| *at == i) {
                    Some((_, r)) => Err(r),
                    None => config.check(&mut event, &meta),
                };
                match checked {
                    Ok(()) => kept.push(event),
                    Err(r) => rejects.push((event, r)),
                }
            }
            Worked {
                batch: Batch::new(batch.source, kept),
                rejects,
            }
        },
    )
    .await
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn kind(&self) -> Kind {
        Kind::Filter
    }

    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(run(Arc::new(*self), input, output, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_follows_json_schema() {
        assert!(is_type("1", JsonType::Integer));
        assert!(is_type("1.0", JsonType::Integer));
        assert!(is_type("1e3", JsonType::Integer));
        assert!(!is_type("1.5", JsonType::Integer));
        assert!(is_type("1.5", JsonType::Number));
        assert!(!is_type("\"1\"", JsonType::Number));
    }

    /// The rules read fields as `Event::get` does: the last of duplicate keys, paths
    /// into nested values, the metadata field invisible, names looked up together.
    #[test]
    fn rules_read_fields_as_get_does() {
        let args = Args::parse_from([
            "validate",
            "--require",
            "id,_meta,meta.seq",
            "--type",
            "n=integer",
            "--type",
            "meta.seq=integer",
        ]);
        let config = Config::from_args(&args).unwrap();
        let check = |text: &str| {
            let mut e = Event::from_json_text(text.to_owned(), 1);
            config.check(&mut e, "_m").map_err(|r| r.kind)
        };
        let ok = r#"{"id":1,"_meta":0,"meta":{"seq":2},"n":3}"#;
        assert_eq!(check(ok), Ok(()));
        assert_eq!(
            check(r#"{"_meta":0,"meta":{"seq":2}}"#),
            Err("missing_field")
        );
        assert_eq!(check(r#"{"id":1,"meta":{"seq":2}}"#), Err("missing_field"));
        assert_eq!(
            check(r#"{"id":1,"_meta":0,"meta":{}}"#),
            Err("missing_field")
        );
        // Duplicates: the last counts.
        assert_eq!(
            check(r#"{"id":1,"_meta":0,"meta":{"seq":2},"n":"x","n":3}"#),
            Ok(())
        );
        assert_eq!(
            check(r#"{"id":1,"_meta":0,"meta":{"seq":2},"n":3,"n":"x"}"#),
            Err("wrong_type")
        );
        assert_eq!(
            check(r#"{"id":1,"_meta":0,"meta":{"seq":2.5}}"#),
            Err("wrong_type")
        );
        // An escaped key is its unescaped name.
        assert_eq!(check(r#"{"i\u0064":1,"_meta":0,"meta":{"seq":2}}"#), Ok(()));
        // The metadata field is invisible: a rule naming it never finds it.
        let args = Args::parse_from(["validate", "--require", "_m"]);
        let config = Config::from_args(&args).unwrap();
        let mut e = Event::from_json_text(r#"{"_m":{"offset":1}}"#.to_owned(), 1);
        assert_eq!(
            config.check(&mut e, "_m").map_err(|r| r.kind),
            Err("missing_field")
        );
    }

    #[test]
    fn type_rules_parse() {
        let r = parse_type_rule("a.b=Integer").unwrap();
        assert_eq!(r.path.segments(), ["a", "b"]);
        assert_eq!(r.ty, JsonType::Integer);
        assert!(parse_type_rule("a=float").is_err());
        assert!(parse_type_rule("a").is_err());
    }
}
