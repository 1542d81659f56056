//! `--lookup`: a reference table (CSV or NDJSON) joined on a field.

use std::collections::HashMap;
use std::path::Path;

use crate::event::Event;
use crate::exit::{Error, Exit, Result};
use crate::json::{self, FieldPath};

use super::Config;

/// A reference table: join key → the fields to set.
pub(super) struct Lookup {
    pub(super) on: FieldPath,
    pub(super) rows: HashMap<String, Vec<(Vec<String>, String)>>,
}

/// The text a join key is matched by: a string's value, any other value's JSON text.
pub(super) fn lookup_key(raw: &str) -> std::borrow::Cow<'_, str> {
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

pub(super) fn load_lookup(file: &Path, on: &str, prefix: &str) -> Result<Lookup> {
    let (field, column) = on.split_once('=').unwrap_or((on, on));
    let on_path = FieldPath::parse(field).map_err(Error::usage)?;
    let text = std::fs::read(file)
        .map_err(|e| Error::unreadable(format!("--lookup {}", file.display()), &e, Exit::IoErr))?;
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
    pub(super) fn lookup_row(
        &self,
        event: &mut Event,
        meta: &str,
    ) -> Option<&[(Vec<String>, String)]> {
        let lookup = self.lookup.as_ref()?;
        let key = event.get(&lookup.on, meta).map(lookup_key)?;
        lookup.rows.get(key.as_ref()).map(Vec::as_slice)
    }
}
