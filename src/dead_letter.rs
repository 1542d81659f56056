//! Dead letters: one NDJSON record per rejected input, with the reason.
//!
//! ```text
//! {"stage":"validate","kind":"schema","reason":"/amount type: \"lots\" is not of type \"number\"",
//!  "line":7,"source":"events.ndjson","raw":"{\"id\":…}","_meta":null}
//! ```
//!
//! `raw` is the rejected input as a string, cut to [`RAW_LIMIT`] bytes (then
//! `"raw_truncated":true` is added). The metadata field is copied as it stood (or `null`
//! when the input could not be read as an object). Several stages may share one file:
//! it is opened with `O_APPEND` and every record is one `write(2)`, so records from
//! concurrent processes never interleave. Without an output, rejects are only counted and
//! summarised on stderr (and the process exits 65).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::{Event, Reject};
use crate::json::quote;

/// The most bytes of a rejected input copied into `raw`.
pub const RAW_LIMIT: usize = 8 * 1024;

/// A shared handle to the dead-letter output and its counters.
#[derive(Clone)]
pub struct DeadLetters(Arc<Inner>);

struct Inner {
    out: Option<Mutex<Output>>,
    meta_field: String,
    total: AtomicU64,
    kinds: Mutex<BTreeMap<&'static str, KindCount>>,
}

struct KindCount {
    count: u64,
    example: String,
}

enum Output {
    File(File),
    Stderr,
}

impl DeadLetters {
    /// Opens `path` for appending (`-` means stderr); `None` only counts.
    pub fn open(path: Option<&str>, meta_field: &str) -> io::Result<DeadLetters> {
        let out = match path {
            None => None,
            Some("-") => Some(Output::Stderr),
            Some(p) => Some(Output::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open dead-letter file {p}: {e}"))
                    })?,
            )),
        };
        Ok(DeadLetters(Arc::new(Inner {
            out: out.map(Mutex::new),
            meta_field: meta_field.to_owned(),
            total: AtomicU64::new(0),
            kinds: Mutex::new(BTreeMap::new()),
        })))
    }

    /// A counter with no output (for tests and library use).
    pub fn counting(meta_field: &str) -> DeadLetters {
        DeadLetters::open(None, meta_field).expect("no file to open")
    }

    /// Whether `other` is this same output (clones share one).
    pub fn same(&self, other: &DeadLetters) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn has_output(&self) -> bool {
        self.0.out.is_some()
    }

    pub fn count(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
    }

    /// Records one rejected event, or ends the stage: a dead letter that cannot be kept
    /// fails the run with 74 (the record is either in the file or the run says it is
    /// not). Every stage keeps its rejects through this; ingest-http alone writes them
    /// with [`DeadLetters::write`], to fail just the request (500) and end with 74 later.
    pub fn keep(
        &self,
        stage: &str,
        source: &str,
        event: &mut Event,
        reject: &Reject,
    ) -> crate::exit::Result<()> {
        self.write(stage, source, event, reject).map_err(|e| {
            crate::exit::Error::new(
                crate::exit::Exit::IoErr,
                anyhow::Error::new(e).context("writing a dead letter"),
            )
        })
    }

    /// Records one rejected event.
    pub fn write(
        &self,
        stage: &str,
        source: &str,
        event: &mut Event,
        reject: &Reject,
    ) -> io::Result<()> {
        self.0.total.fetch_add(1, Ordering::Relaxed);
        {
            let mut kinds = self.0.kinds.lock().expect("not poisoned");
            let k = kinds.entry(reject.kind).or_insert_with(|| KindCount {
                count: 0,
                example: format!("{source}:{}: {}", event.line, reject.reason),
            });
            k.count += 1;
        }
        let Some(out) = &self.0.out else {
            return Ok(());
        };
        let meta = if event.is_decoded() {
            event.field(&self.0.meta_field).map(str::to_owned)
        } else {
            None
        };
        let record = self.record(stage, source, event, reject, meta.as_deref());
        let mut out = out.lock().expect("not poisoned");
        let written = match &mut *out {
            Output::File(f) => write_whole(f, &record),
            Output::Stderr => io::stderr().lock().write_all(&record),
        };
        if written.is_err() {
            // Not kept: the summary must not count it as being in the file.
            self.0.total.fetch_sub(1, Ordering::Relaxed);
        }
        written
    }

    fn record(
        &self,
        stage: &str,
        source: &str,
        event: &Event,
        reject: &Reject,
        meta: Option<&str>,
    ) -> Vec<u8> {
        let bytes = event.bytes();
        let mut cut = bytes.len().min(RAW_LIMIT);
        // Cut on a character boundary when the bytes are UTF-8.
        while cut < bytes.len() && cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        let raw = String::from_utf8_lossy(&bytes[..cut]);
        let mut rec = String::with_capacity(raw.len() + 200);
        rec.push_str("{\"stage\":");
        rec.push_str(&quote(stage));
        rec.push_str(",\"kind\":");
        rec.push_str(&quote(reject.kind));
        rec.push_str(",\"reason\":");
        rec.push_str(&quote(&reject.reason));
        rec.push_str(",\"line\":");
        rec.push_str(&event.line.to_string());
        rec.push_str(",\"source\":");
        rec.push_str(&quote(source));
        rec.push_str(",\"raw\":");
        rec.push_str(&quote(&raw));
        if cut < bytes.len() || event.is_truncated() {
            rec.push_str(",\"raw_truncated\":true");
        }
        rec.push(',');
        rec.push_str(&quote(&self.0.meta_field));
        rec.push(':');
        rec.push_str(meta.unwrap_or("null"));
        rec.push_str("}\n");
        rec.into_bytes()
    }

    /// Lines for the end-of-run summary: count per kind with the first example.
    pub fn summary(&self) -> Vec<String> {
        let kinds = self.0.kinds.lock().expect("not poisoned");
        kinds
            .iter()
            .map(|(kind, k)| {
                format!(
                    "{:>10} {kind} (first: {})",
                    crate::human::count(k.count),
                    k.example
                )
            })
            .collect()
    }
}

/// Appends one record, with one `write(2)` when it can. A write that fails part-way (a
/// full disk) leaves no torn record behind: the file is cut back to where the record
/// began, unless another process appended after it meanwhile (then the record is ended
/// with a newline if there is room, so that the next record still starts on a line).
fn write_whole(f: &mut File, record: &[u8]) -> io::Result<()> {
    let mut done = 0;
    let error = loop {
        if done == record.len() {
            return Ok(());
        }
        match f.write(&record[done..]) {
            Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    if done > 0 {
        // With O_APPEND the file offset is where our bytes end.
        let end = f.stream_position();
        let len = f.metadata().map(|m| m.len());
        match (end, len) {
            (Ok(end), Ok(len)) if end == len => {
                let _ = f.set_len(end - done as u64);
            }
            _ => {
                let _ = f.write_all(b"\n");
            }
        }
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_format_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.ndjson");
        let p = path.to_str().unwrap();
        let a = DeadLetters::open(Some(p), "_meta").unwrap();
        let b = DeadLetters::open(Some(p), "_meta").unwrap();
        let mut e = Event::from_line(b"{\"x\":1".to_vec(), 3);
        let r = e.decode().unwrap_err();
        a.write("validate", "in.ndjson", &mut e, &r).unwrap();
        let mut e = Event::from_line(br#"{"x":1,"_meta":{"k":2}}"#.to_vec(), 4);
        e.decode().unwrap();
        b.write("enrich", "in.ndjson", &mut e, &Reject::new("jq", "boom"))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["stage"], "validate");
        assert_eq!(first["kind"], "malformed_json");
        assert_eq!(first["line"], 3);
        assert_eq!(first["raw"], "{\"x\":1");
        assert!(first["_meta"].is_null());
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["_meta"]["k"], 2);
        assert_eq!(a.count(), 1);
    }

    #[test]
    fn raw_is_truncated_on_a_char_boundary() {
        let d = DeadLetters::counting("_meta");
        let mut line = vec![b'a'; RAW_LIMIT - 1];
        line.extend_from_slice("é".as_bytes());
        line.extend_from_slice(b"tail");
        let e = Event::from_line(line, 1);
        let rec = d.record("s", "src", &e, &Reject::new("k", "r"), None);
        let v: serde_json::Value = serde_json::from_slice(&rec).unwrap();
        assert_eq!(v["raw"].as_str().unwrap().len(), RAW_LIMIT - 1);
        assert_eq!(v["raw_truncated"], true);
    }
}
