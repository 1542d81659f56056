//! `enrich`: add and change fields — constants, processing time, deterministic ids,
//! joins against a reference table — and arbitrary jq transforms (jaq).
//!
//! Per event, in this order: `--lookup`, `--jq`, `--set`, `--id`, `--timestamp` (a join
//! then a reshape: the jq program sees the joined fields). All
//! field changes of one event are spliced into its text in one pass; every byte the
//! stage did not change is passed through as it came. The metadata field is never
//! changed by these flags and is invisible to the jq program; after jq it is re-attached
//! to every output, and when one input gives several outputs each is stamped with
//! `"split":{"index":i,"count":n}` inside the metadata field.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::cli::Common;
use crate::event::{self, Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::jq;
use crate::json::{self, FieldPath, Member, SetOp};
use crate::pool::{self, Pooled};
use crate::shutdown::Shutdown;
use crate::stage::workers::{self, Worked};
use crate::stage::{Ctx, Ended, Kind, Stage};

const EXAMPLES: &str = "\
Examples:
  Stamp, tag and give every event a stable id:
    enrich --set env='\"prod\"' --timestamp received_at \\
      --id event_key --id-from user_id,ts \\
      --dead-letter rejects.ndjson < events.ndjson

  Join a CSV table (user_id,name,plan) under a prefix:
    enrich --lookup users.csv --on user_id --prefix user. \\
      --dead-letter rejects.ndjson < events.ndjson

  Reshape with jq; an event may give several, or none:
    enrich --jq 'select(.type == \"payment\")
      | {id, cents: (.amount * 100 | floor)}' \\
      --dead-letter rejects.ndjson < events.ndjson
    enrich --jq '.tags[] as $t | {id, tag: $t}' \\
      --dead-letter rejects.ndjson < events.ndjson";

/// Add or change fields of NDJSON events, join reference data, or transform with jq.
///
/// Per event, in this order: --lookup, --jq, --set, --id, --timestamp (so --jq sees the
/// joined fields). Unchanged bytes
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
    /// must be an object.
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
    pub common: Common,
}

#[derive(Clone, Debug)]
pub struct SetField {
    pub path: FieldPath,
    /// Compact JSON text of the value.
    pub value: String,
}

fn parse_set(s: &str) -> std::result::Result<SetField, String> {
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

/// A reference table: join key → the fields to set.
struct Lookup {
    on: FieldPath,
    rows: HashMap<String, Vec<(Vec<String>, String)>>,
}

/// What `enrich` does to each event.
pub struct Config {
    jq: Option<jq::Sandbox>,
    lookup: Option<Lookup>,
    set: Vec<SetField>,
    id: Option<(FieldPath, Vec<FieldPath>)>,
    timestamp: Option<FieldPath>,
    pub workers: usize,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let meta = args.common.meta_field.as_str();
        let targets = args
            .set
            .iter()
            .map(|s| &s.path)
            .chain(args.timestamp.iter())
            .chain(args.id.iter());
        let values = args
            .set
            .iter()
            .map(|s| s.value.as_str())
            .chain(args.timestamp.iter().map(|_| "\"\""))
            .chain(args.id.iter().map(|_| "\"\""));
        for (path, value) in targets.zip(values) {
            json::set_fits(path.segments(), value).map_err(Error::usage)?;
            if path.first() == meta {
                return Err(Error::usage(format!(
                    "{path}: the metadata field {meta} is not changed by enrich (see --meta-field)"
                )));
            }
        }
        let lookup = match (&args.lookup, &args.on) {
            (Some(file), Some(on)) => Some(load_lookup(file, on, &args.prefix)?),
            _ => None,
        };
        let limits = jq::Limits {
            timeout: args.jq_timeout,
            max_outputs: args.jq_max_outputs.max(1),
        };
        let jq = args
            .jq
            .as_deref()
            .map(|code| jq::Sandbox::new(code, limits))
            .transpose()?;
        Ok(Config {
            jq,
            lookup,
            set: args.set.clone(),
            id: args.id.clone().map(|f| (f, args.id_from.clone())),
            timestamp: args.timestamp.clone(),
            workers: args.workers.unwrap_or_else(workers::default_workers),
        })
    }

    /// About how many bytes an event grows by, for sizing a batch's [`TextArena`].
    fn growth(&self, now: &str) -> usize {
        let key = |p: &FieldPath| p.to_string().len() + 4;
        let set: usize = self.set.iter().map(|s| key(&s.path) + s.value.len()).sum();
        let id = self.id.as_ref().map_or(0, |(f, _)| key(f) + ID_LEN);
        let ts = self.timestamp.as_ref().map_or(0, |f| key(f) + now.len());
        let lookup = if self.lookup.is_some() { 128 } else { 0 };
        set + id + ts + lookup + 16
    }

    /// Enriches one event into zero or more events; `now` is the processing time as JSON
    /// text; `jq` is what the jq program gave for it (see [`Config::run_jq`]), when there
    /// is one.
    pub fn apply(
        &self,
        mut event: Event,
        jq: Option<jq::Outputs>,
        now: &str,
        meta: &str,
        out: &mut Vec<Event>,
        arena: &mut TextArena,
    ) -> std::result::Result<(), (Event, Reject)> {
        if let Err(r) = event.decode() {
            return Err((event, r));
        }
        let start = out.len();
        let spans = arena.spans.len();
        match jq {
            Some(Ok(outputs)) => out.extend(with_meta(&mut event, meta, outputs)),
            Some(Err(r)) => return Err((event, r)),
            None => out.push(event),
        }
        for i in start..out.len() {
            match self.edit(&mut out[i], now, meta, arena) {
                Ok(Some(span)) => arena.spans.push((i, span)),
                Ok(None) => {}
                Err(r) => {
                    // One derived event failing rejects the input whole, so a sink never
                    // holds part of what one input became.
                    arena.spans.truncate(spans);
                    let first = out.drain(start..).next().expect("at least one");
                    return Err((first, r));
                }
            }
        }
        Ok(())
    }

    /// Edits one event. Its new text is appended to `arena`, and its range there returned
    /// with its index (`None` when nothing was set); the event itself still holds its old
    /// text.
    fn edit(
        &self,
        event: &mut Event,
        now: &str,
        meta: &str,
        arena: &mut TextArena,
    ) -> std::result::Result<Option<Spliced>, Reject> {
        let id: [u8; ID_LEN];
        let mut values: SmallVec<[(&[String], Cow<str>); 8]> = SmallVec::new();
        // With a jq program the join ran before it (see `run_jq`): jq reshapes joined events.
        if self.jq.is_none() {
            if let Some(row) = self.lookup_row(event, meta) {
                values.extend(
                    row.iter()
                        .map(|(p, v)| (p.as_slice(), Cow::Borrowed(v.as_str()))),
                );
            }
        }
        values.extend(
            self.set
                .iter()
                .map(|s| (s.path.segments(), Cow::Borrowed(s.value.as_str()))),
        );
        if let Some((field, from)) = &self.id {
            // The id sees the fields set above: apply them first when it reads one of them.
            if values
                .iter()
                .any(|(p, _)| from.iter().any(|f| f.first() == p[0]))
            {
                // The id reads the new text at once: index it.
                let mut one = TextArena::with_capacity(0, 1, true);
                if let Some(spliced) = splice(event, &values, &mut one)? {
                    one.spans.push((0, spliced));
                    one.hand_out(std::slice::from_mut(event));
                }
                values.clear();
            }
            id = compute_id(event, from, meta)?;
            let id = std::str::from_utf8(&id).expect("ASCII");
            values.push((field.segments(), Cow::Borrowed(id)));
        }
        if let Some(field) = &self.timestamp {
            values.push((field.segments(), Cow::Borrowed(now)));
        }
        splice(event, &values, arena)
    }
}

/// The new text of an event: its range in a batch's text buffer, and the range of its
/// members in the batch's index buffer when the edit could move the old index onto it.
type Spliced = (Range<usize>, Option<Range<usize>>);

/// Sets every (path, JSON text) pair in one pass over the event's text, appending the new
/// text to the arena and, when it is indexed and the paths are top-level, its members too:
/// the next stage that looks inside (persist) reads them instead of scanning the text
/// again. Returns where they are (`None` when there is nothing to set); the event keeps
/// its old text.
fn splice(
    event: &mut Event,
    values: &[(&[String], Cow<str>)],
    arena: &mut TextArena,
) -> std::result::Result<Option<Spliced>, Reject> {
    if values.is_empty() {
        return Ok(None);
    }
    let ops: SmallVec<[SetOp; 8]> = values
        .iter()
        .map(|(path, value)| SetOp { path, value })
        .collect();
    let (text, members) = event.text_and_members();
    if arena.indexed && arena.index.capacity() == 0 {
        // Sized once, by the first event: the events of a batch tend to look alike (a
        // wrong guess leaves part of the block unused).
        arena.index = pool::INDEX.take((members.len() + ops.len()) * arena.events);
    }
    let first = arena.index.len();
    let index = arena.indexed.then_some(&mut arena.index);
    let out = &mut arena.text;
    let start = out.len();
    match json::set_many_into(text, members, &ops, out, index) {
        Ok(moved) => {
            let members = moved.then_some(first..arena.index.len());
            Ok(Some((start..out.len(), members)))
        }
        Err(e) => {
            out.truncate(start);
            Err(Reject::new("set", e))
        }
    }
}

/// The new texts of a batch's edited events, in one buffer, and their member indexes in
/// another: `spans` holds (index of the event in the output, where its text and members
/// are). Handing the buffers out once per batch saves two allocations per event, and the
/// next stage frees two blocks instead of thousands. (Index blocks of 48 KiB instead held
/// 3 MiB more at peak into PostgreSQL.)
#[derive(Default)]
pub struct TextArena {
    text: String,
    index: Vec<Member>,
    spans: Vec<(usize, Spliced)>,
    /// About how many events will be edited.
    events: usize,
    /// Whether the new texts are indexed too: a later stage in this process looks inside
    /// them (see [`Ctx::keep_index`]).
    indexed: bool,
}

impl TextArena {
    /// An arena sized for about `bytes` of new text from about `events` events; `indexed`:
    /// it indexes them too.
    pub fn with_capacity(bytes: usize, events: usize, indexed: bool) -> TextArena {
        TextArena {
            text: String::from_utf8(pool::TEXT.take(bytes)).expect("empty"),
            events,
            indexed,
            ..TextArena::default()
        }
    }

    /// Gives every edited event of `events` its new text and, when indexed, its index.
    pub fn hand_out(self, events: &mut [Event]) {
        let text = event::chunk(self.text);
        let index = self.indexed.then(|| Arc::new(Pooled::new(self.index)));
        for (i, (span, members)) in self.spans {
            let members = members.map(|r| (index.as_ref().expect("indexed").clone(), r));
            events[i].set_shared_text(text.clone(), span.start, span.end, members);
        }
    }
}

/// The text a join key is matched by: a string's value, any other value's JSON text.
fn lookup_key(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.starts_with('"') {
        if !raw.contains('\\') {
            return raw[1..raw.len() - 1].into();
        }
        if let Ok(s) = serde_json::from_str::<String>(raw) {
            return s.into();
        }
    }
    raw.into()
}

/// `sha256([v1,v2,...])` over canonical JSON, as a JSON string; see `--id`.
fn compute_id(
    event: &mut Event,
    from: &[FieldPath],
    meta: &str,
) -> std::result::Result<[u8; ID_LEN], Reject> {
    // The canonical text is hashed as it is produced, piece by piece.
    let mut hash = Sha256::new();
    hash.update(b"[");
    for (i, path) in from.iter().enumerate() {
        let raw = event.get(path, meta).ok_or_else(|| {
            Reject::new(
                "missing_field",
                format!("--id-from field {path} is missing"),
            )
        })?;
        if i > 0 {
            hash.update(b",");
        }
        if is_canonical_scalar(raw) {
            hash.update(raw.as_bytes());
        } else {
            let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
                Reject::new("malformed_json", format!("--id-from field {path}: {e}"))
            })?;
            let mut canon = String::new();
            write_canonical(&value, &mut canon);
            hash.update(canon.as_bytes());
        }
    }
    hash.update(b"]");
    let mut id = [b'"'; ID_LEN];
    for (pair, b) in id[1..ID_LEN - 1].chunks_exact_mut(2).zip(hash.finalize()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    Ok(id)
}

/// The two lowercase hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// The JSON text of an id: 64 hex digits in quotes.
const ID_LEN: usize = 66;

/// Raw JSON text that serde_json would print the same way: a string without escapes,
/// or an integer other than `-0`.
fn is_canonical_scalar(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => memchr::memchr(b'\\', raw.as_bytes()).is_none(),
        Some(b'-' | b'0'..=b'9') => {
            raw != "-0" && raw.len() < 19 && raw.bytes().skip(1).all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// Compact JSON with object keys sorted by their UTF-8 bytes, whatever the map order.
pub fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json::quote(k));
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn load_lookup(file: &Path, on: &str, prefix: &str) -> Result<Lookup> {
    let (field, column) = on.split_once('=').unwrap_or((on, on));
    let on_path = FieldPath::parse(field).map_err(Error::usage)?;
    let text = std::fs::read(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::no_input(format!("--lookup {}: no such file", file.display()))
        }
        _ => Error::new(
            Exit::IoErr,
            anyhow::anyhow!("--lookup {}: {e}", file.display()),
        ),
    })?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let ndjson = matches!(ext, "ndjson" | "jsonl" | "json")
        || (!matches!(ext, "csv" | "tsv")
            && text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'));
    let bad = |msg: String| Error::usage(format!("--lookup {}: {msg}", file.display()));
    let dest = |name: &str| -> Vec<String> {
        match prefix.strip_suffix('.') {
            Some(p) if !p.is_empty() => {
                let mut segs = FieldPath::parse(p)
                    .map(|p| p.segments().to_vec())
                    .unwrap_or_else(|_| vec![p.to_owned()]);
                segs.push(name.to_owned());
                segs
            }
            _ => vec![format!("{prefix}{name}")],
        }
    };
    let mut rows = HashMap::new();
    if ndjson {
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = std::str::from_utf8(line)
                .map_err(|_| bad(format!("line {}: invalid UTF-8", n + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            let members =
                json::scan_object(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
            let key = json::find(line, &members, column)
                .map(|m| lookup_key(&line[m.value()]).into_owned())
                .ok_or_else(|| bad(format!("line {}: no key field {column:?}", n + 1)))?;
            let fields = members
                .iter()
                .filter(|m| !m.key_is(line, column))
                .map(|m| (dest(&m.key_str(line)), line[m.value()].to_owned()))
                .collect();
            rows.insert(key, fields);
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(if ext == "tsv" { b'\t' } else { b',' })
            .from_reader(text.as_slice());
        let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
        let key_idx = headers.iter().position(|h| h == column).ok_or_else(|| {
            bad(format!(
                "no column {column:?} (columns: {})",
                headers.iter().collect::<Vec<_>>().join(",")
            ))
        })?;
        for record in reader.records() {
            let record = record.map_err(|e| bad(e.to_string()))?;
            let fields = headers
                .iter()
                .zip(record.iter())
                .enumerate()
                .filter(|(i, _)| *i != key_idx)
                .map(|(_, (h, v))| (dest(h), json::quote(v)))
                .collect();
            rows.insert(record.get(key_idx).unwrap_or("").to_owned(), fields);
        }
    }
    Ok(Lookup { on: on_path, rows })
}

impl Config {
    /// The lookup table's fields for `event`, when there is a table and a matching row.
    fn lookup_row(&self, event: &mut Event, meta: &str) -> Option<&[(Vec<String>, String)]> {
        let lookup = self.lookup.as_ref()?;
        let key = event.get(&lookup.on, meta).map(lookup_key)?;
        lookup.rows.get(key.as_ref()).map(Vec::as_slice)
    }

    /// Runs the jq program (when there is one) on a batch's events, in a helper process:
    /// one result per event, `None` for events that are not JSON objects (rejected later).
    /// Without a program: `None`, and nothing is allocated.
    fn run_jq(
        &self,
        events: &mut [Event],
        meta: &str,
        shutdown: &Shutdown,
    ) -> Option<Vec<Option<jq::Outputs>>> {
        let sandbox = self.jq.as_ref()?;
        // The program sees each event without its metadata field, and joined first
        // (`--lookup … --jq …` means "join, then reshape").
        let inputs: Vec<Option<String>> = events
            .iter_mut()
            .map(|e| {
                e.decode().ok()?;
                if let Some(row) = self.lookup_row(e, meta) {
                    let ops: SmallVec<[SetOp; 8]> = row
                        .iter()
                        .map(|(path, value)| SetOp { path, value })
                        .collect();
                    let (text, members) = e.text_and_members();
                    // A join that cannot be spliced (a prefix path through a non-object)
                    // leaves the event as it was, as without jq.
                    if let Ok(joined) = json::set_many(text, members, &ops) {
                        let members = json::scan_object(&joined).ok()?;
                        return Some(json::remove(&joined, &members, meta).into_owned());
                    }
                }
                let (text, members) = e.text_and_members();
                Some(json::remove(text, members, meta).into_owned())
            })
            .collect();
        let texts: Vec<&str> = inputs.iter().flatten().map(String::as_str).collect();
        let mut results = sandbox.eval_all(&texts, shutdown).into_iter();
        let results = inputs
            .iter()
            .map(|i| i.as_ref().and_then(|_| results.next()))
            .collect();
        Some(results)
    }
}

/// The events a jq program made of `event`, each with the event's metadata field
/// re-attached; when there are several, each carries `"split":{"index","count"}` in it.
fn with_meta(event: &mut Event, meta: &str, outputs: Vec<String>) -> Vec<Event> {
    let meta_raw = {
        let (text, members) = event.text_and_members();
        json::find(text, members, meta).map(|m| text[m.value()].to_owned())
    };
    let count = outputs.len();
    let mut events = Vec::with_capacity(count);
    for (index, text) in outputs.into_iter().enumerate() {
        let meta_text = match (&meta_raw, count) {
            (None, 1) => None,
            (Some(m), 1) => Some(m.clone()),
            (m, _) => {
                let base = m.as_deref().filter(|m| m.starts_with('{')).unwrap_or("{}");
                let stamp = format!("{{\"index\":{index},\"count\":{count}}}");
                let split = vec!["split".to_owned()];
                let members = json::scan_object(base).expect("metadata is an object");
                Some(
                    json::set_many(
                        base,
                        &members,
                        &[SetOp {
                            path: &split,
                            value: &stamp,
                        }],
                    )
                    .expect("object"),
                )
            }
        };
        let text = match meta_text {
            None => text,
            Some(m) => {
                // The helper checked that every output is a JSON object.
                let members = json::scan_object(&text).expect("jq outputs are JSON objects");
                let key = vec![meta.to_owned()];
                json::set_many(
                    &text,
                    &members,
                    &[SetOp {
                        path: &key,
                        value: &m,
                    }],
                )
                .expect("object")
            }
        };
        events.push(event.derive(text));
    }
    events
}

/// The stage: enriches up to `config.workers` batches at once, order kept.
pub async fn run(
    config: Arc<Config>,
    input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
) -> Result<Ended> {
    let meta = ctx.meta_field.clone();
    let workers = config.workers;
    let shutdown = ctx.shutdown.clone();
    let indexed = ctx.keep_index;
    // Only jq makes enrich wait (on its helper processes).
    let runs = match config.jq {
        Some(_) => workers::Runs::Blocking,
        None => workers::Runs::OnRuntime,
    };
    workers::map_ordered(
        "enrich",
        input,
        output,
        &ctx,
        workers,
        runs,
        move |mut batch| {
            let now = json::quote(&crate::human::timestamp_now());
            let mut kept = Vec::with_capacity(batch.len());
            let mut rejects = Vec::new();
            let growth = config.growth(&now);
            let bytes: usize = batch.events.iter().map(|e| e.bytes().len() + growth).sum();
            let mut arena = TextArena::with_capacity(bytes, batch.len(), indexed);
            let mut jq = config
                .run_jq(&mut batch.events, &meta, &shutdown)
                .map(Vec::into_iter);
            for event in batch.events {
                let jq = jq.as_mut().and_then(Iterator::next).flatten();
                if let Err(rejected) = config.apply(event, jq, &now, &meta, &mut kept, &mut arena) {
                    rejects.push(rejected);
                }
            }
            arena.hand_out(&mut kept);
            let mut batch = Batch::new(batch.source, kept);
            batch.pack();
            Worked { batch, rejects }
        },
    )
    .await
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "enrich"
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
    fn canonical_sorts_keys_and_compacts() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"d":1,"c":2}], "a": "x"}"#).unwrap();
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":"x","b":[1,{"c":2,"d":1}]}"#);
    }

    /// Events enriched for a later stage that looks inside carry the index of their new
    /// text: persist reads it instead of scanning the text again. For a pipe, none.
    #[test]
    fn edited_events_keep_an_index_only_for_a_later_stage_in_process() {
        use clap::Parser as _;
        let args = Args::parse_from([
            "enrich",
            "--set",
            "env=\"prod\"",
            "--set",
            "a=[1,2]",
            "--timestamp",
            "at",
        ]);
        let config = Arc::new(Config::from_args(&args).unwrap());
        let run_with = |keep_index: bool| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
                let mut ctx = Ctx::new(
                    crate::dead_letter::DeadLetters::counting("_meta"),
                    Shutdown::new(),
                    "_meta",
                );
                ctx.keep_index = keep_index;
                let lines = [
                    r#"{"a":1,"b":"x","a":2}"#,
                    r#" { "env" : "dev" , "k" : [] } "#,
                ];
                let mut events: Vec<Event> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Event::from_json_text(l.to_string(), i as u64 + 1))
                    .collect();
                for e in &mut events {
                    e.decode().unwrap();
                }
                tx.send(Batch::new("test".into(), events)).await.unwrap();
                drop(tx);
                run(config.clone(), rx, out_tx, ctx).await.unwrap();
                out_rx.recv().await.unwrap()
            })
        };
        let indexed = run_with(true);
        assert_eq!(indexed.len(), 2);
        // Lookups go through the carried index (debug builds also check it against a scan).
        for mut e in indexed.events {
            assert!(e.is_decoded(), "indexed: {}", e.text());
            assert_eq!(e.field("env"), Some("\"prod\""));
            assert_eq!(e.field("a"), Some("[1,2]"));
            assert!(e.field("at").is_some_and(|t| t.starts_with('"')));
        }
        for e in &run_with(false).events {
            assert!(!e.is_decoded(), "not indexed for a pipe");
        }
    }

    #[test]
    fn set_values_must_be_json() {
        assert_eq!(parse_set("a.b= [1, 2]").unwrap().value, "[1,2]");
        assert!(parse_set("env=prod").unwrap_err().contains("quotes"));
    }

    #[test]
    fn canonical_scalars_match_serde_json() {
        for raw in ["\"abc\"", "12", "-3", "0", "123456789012345678"] {
            assert!(is_canonical_scalar(raw), "{raw}");
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(v.to_string(), raw);
        }
        for raw in [
            "\"a\\u0041\"",
            "-0",
            "1.0",
            "1e2",
            "true",
            "12345678901234567890",
        ] {
            assert!(!is_canonical_scalar(raw), "{raw}");
        }
    }

    #[test]
    fn join_keys() {
        assert_eq!(lookup_key("\"u1\""), "u1");
        assert_eq!(lookup_key("\"u\\u0031\""), "u1");
        assert_eq!(lookup_key("42"), "42");
    }
}
