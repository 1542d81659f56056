//! Events, batches of events, and acknowledgement handles.
//!
//! An [`Event`] starts as the raw bytes of one input line. The first stage that needs to
//! look inside it *decodes* it: checks UTF-8, scans the object once (validating every
//! byte) and keeps the byte ranges of its top-level members. Later stages in the same
//! process reuse that scan; the text itself is only rewritten where a stage changes a
//! field, and a stage that rewrites it moves the index onto the new text when a later
//! stage will look inside (see [`crate::json::set_many_into`]). No stage builds a
//! `serde_json::Value` tree on the hot path: JSON Schema reads the scan's tape directly
//! (see [`crate::tape`]).
//!
//! Events travel in [`Batch`]es through bounded `tokio::sync::mpsc` channels.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::Receiver;

use crate::json::{self, FieldPath, Member, ScanError};
use crate::pool::Pooled;
use crate::tape::{self, TNode};

/// A block of UTF-8 text whose lines (or stretches) are the texts of a batch's events: a
/// read chunk, or the new texts a stage wrote. It goes back to [`crate::pool`] when the
/// last of them is dropped.
pub type Chunk = Arc<Pooled<String>>;

/// The member indexes of a batch's events, in one block (see [`Event::decode_all`] and
/// [`Event::set_shared_text`]).
pub type SharedIndex = Arc<Pooled<Vec<Member>>>;

/// A [`Chunk`] of `text`.
pub fn chunk(text: String) -> Chunk {
    Arc::new(Pooled::new(text))
}

/// A batch of events from one source, in input order.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Where the events came from: a file name, `stdin`, `kafka`, `http`.
    pub source: Arc<str>,
    /// The bytes of its events' lines (newlines included), when the thread that made the
    /// batch measured them while they were in its cache; `pipeline`'s channels take it
    /// (once) instead of walking the events again. See [`Batch::size`].
    pub bytes: Option<u64>,
    /// The span of the source that made the batch, when traces are exported and the batch
    /// is sampled ([`crate::trace`]): the stages' spans are its children. Before a source
    /// has made its span (ingest-http's requests), the parent the events came with.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

impl Batch {
    pub fn new(source: Arc<str>, events: Vec<Event>) -> Batch {
        Batch {
            events,
            source,
            bytes: None,
            trace: None,
        }
    }

    /// What its events hold in memory: their lines (newlines included) and, for decoded
    /// events, their member index (often larger than the line). `pipeline`'s byte bound
    /// counts this, so that it bounds memory, not only text.
    pub fn size(&self) -> u64 {
        self.events.iter().map(Event::held_bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Moves every decoded event's text into one buffer shared by the batch and drops the
    /// per-event allocations here, on the calling thread. The next thread to own the batch
    /// then frees one buffer instead of thousands of small blocks it did not allocate
    /// (cross-thread frees are the slow path of most allocators). Indexes are dropped: a
    /// later stage in the same process scans again. When no event owns its text (all
    /// share read chunks or a stage's batch buffer), there is nothing to gain: the batch is
    /// left as it is, indexes included.
    pub fn pack(&mut self) {
        let owned = |e: &Event| {
            matches!(
                &e.body,
                Body::Json(Json {
                    text: Text::Owned(_),
                    ..
                })
            )
        };
        if !self.events.iter().any(owned) {
            return; // Only shared buffers: nothing to gather.
        }
        let total: usize = self.events.iter().map(|e| e.bytes().len() + 1).sum();
        let mut buf = String::with_capacity(total);
        let mut spans = Vec::with_capacity(self.events.len());
        for e in &self.events {
            let start = buf.len();
            if let Body::Json(j) = &e.body {
                buf.push_str(j.text.as_str());
            }
            spans.push(start..buf.len());
            // Each line with its newline: a writer takes them as they are
            // ([`Event::contiguous_lines`]).
            buf.push('\n');
        }
        let chunk = chunk(buf);
        for (e, span) in self.events.iter_mut().zip(spans) {
            if matches!(e.body, Body::Json(_)) {
                e.body = Body::Json(Json {
                    text: Text::Shared {
                        chunk: chunk.clone(),
                        start: span.start,
                        end: span.end,
                    },
                    members: None,
                });
            }
        }
    }
}

/// Why a record was rejected: a short machine-readable kind and a human reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// A stable category for summaries, e.g. `malformed_json`, `schema`.
    pub kind: &'static str,
    pub reason: String,
}

impl Reject {
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Reject {
        Reject {
            kind,
            reason: reason.into(),
        }
    }
}

/// Marks events that can never be handled as lost: their acknowledgements never fire, so
/// their sources count them as lost (Kafka stores no offset, HTTP answers no 2xx).
pub fn lose(events: &[Event]) {
    for ack in events.iter().filter_map(|e| e.ack.as_ref()) {
        ack.disarm();
    }
}

/// A stage that failed to pass events on: `held` and everything still queued on `rx` are
/// lost ([`lose`]); the channel is closed so that nothing more arrives.
pub fn lose_queued(rx: &mut Receiver<Batch>, held: Vec<Event>) {
    rx.close();
    let mut lost = held;
    while let Ok(b) = rx.try_recv() {
        lost.extend(b.events);
    }
    lose(&lost);
}

/// A handle that fires a callback once every event holding a clone of it is gone.
///
/// Sources that must answer late (HTTP `--ack written`, Kafka offsets) attach one to the
/// events of a request or message. Each event derived from it (a jq split) carries a
/// clone; the final stage drops events only after writing or committing them, and
/// rejected or filtered events are dropped once handled, so the callback runs exactly
/// when everything derived from the origin has been dealt with.
#[derive(Clone)]
pub struct Ack(Arc<AckInner>);

struct AckInner {
    on_done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Runs instead of `on_done` when the events were lost (see [`Ack::disarm`]).
    on_lost: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let f = self.on_done.get_mut().ok().and_then(Option::take);
        if let Some(f) = f {
            f();
        }
    }
}

impl Ack {
    pub fn new(on_done: impl FnOnce() + Send + 'static) -> Ack {
        Ack(Arc::new(AckInner {
            on_done: Mutex::new(Some(Box::new(on_done))),
            on_lost: Mutex::new(None),
        }))
    }

    /// Like [`Ack::new`], with a callback for when the events are lost instead.
    pub fn with_loss(
        on_done: impl FnOnce() + Send + 'static,
        on_lost: impl FnOnce() + Send + 'static,
    ) -> Ack {
        let ack = Ack::new(on_done);
        *ack.0.on_lost.lock().expect("new") = Some(Box::new(on_lost));
        ack
    }

    /// Makes sure the done callback never runs (its events were lost, not handled), and
    /// runs the lost callback, once. Whatever the done callback held is released now.
    pub fn disarm(&self) {
        let done = self.0.on_done.lock().ok().and_then(|mut f| f.take());
        if done.is_some() {
            let lost = self.0.on_lost.lock().ok().and_then(|mut f| f.take());
            drop(done);
            if let Some(lost) = lost {
                lost();
            }
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// One event: a JSON object, with its input line number and an optional ack handle.
#[derive(Debug)]
pub struct Event {
    body: Body,
    /// 1-based line number in its source (0 when the source has no lines).
    pub line: u64,
    pub ack: Option<Ack>,
}

#[derive(Debug)]
enum Body {
    /// Bytes of an input line, not looked at yet.
    Raw(Vec<u8>),
    /// A line longer than `--max-line-bytes`: its first bytes and its full length.
    Oversized { prefix: Vec<u8>, len: u64, max: u64 },
    /// UTF-8 text; a checked JSON object once `members` is set.
    Json(Json),
}

#[derive(Debug)]
struct Json {
    text: Text,
    members: Option<Index>,
}

/// An event's member index: its own, or its stretch of one buffer shared by a batch (a
/// stage that decodes a batch at once, or rewrites its texts into one buffer, writes their
/// indexes into one too: no allocation per event, and one block to free).
#[derive(Debug)]
enum Index {
    Own(Vec<Member>),
    Shared {
        all: SharedIndex,
        range: std::ops::Range<usize>,
    },
}

impl std::ops::Deref for Index {
    type Target = [Member];

    fn deref(&self) -> &[Member] {
        match self {
            Index::Own(m) => m,
            Index::Shared { all, range } => &all[range.clone()],
        }
    }
}

/// An event's text: its own string, or a line of a read chunk shared by a batch (the
/// reader checks a whole chunk's UTF-8 at once and copies no line).
#[derive(Debug)]
enum Text {
    Owned(String),
    Shared {
        chunk: Chunk,
        start: usize,
        end: usize,
    },
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Owned(s) => s,
            Text::Shared { chunk, start, end } => &chunk[*start..*end],
        }
    }
}

impl Json {
    fn new(text: String) -> Json {
        Json {
            text: Text::Owned(text),
            members: None,
        }
    }
}

impl Event {
    /// An event from the bytes of one line (no line ending, no BOM).
    pub fn from_line(bytes: Vec<u8>, line: u64) -> Event {
        Event {
            body: Body::Raw(bytes),
            line,
            ack: None,
        }
    }

    /// An event from text known to be one JSON object (it is not checked again).
    pub fn from_json_text(text: String, line: u64) -> Event {
        Event {
            body: Body::Json(Json::new(text)),
            line,
            ack: None,
        }
    }

    /// Line `start..end` of a chunk of UTF-8 text (no line ending, no BOM).
    pub fn from_chunk(chunk: Chunk, start: usize, end: usize, line: u64) -> Event {
        debug_assert!(chunk.is_char_boundary(start) && chunk.is_char_boundary(end));
        Event {
            body: Body::Json(Json {
                text: Text::Shared { chunk, start, end },
                members: None,
            }),
            line,
            ack: None,
        }
    }

    /// A line that was too long to keep: only its first bytes are held.
    pub fn oversized(prefix: Vec<u8>, len: u64, max: u64, line: u64) -> Event {
        Event {
            body: Body::Oversized { prefix, len, max },
            line,
            ack: None,
        }
    }

    /// A copy of the event as it stands, without its index (a later look inside scans
    /// again): a line of a shared chunk is shared, not copied. What a worker keeps to try
    /// an event again after a panic (a whole batch: [`Replay`]).
    pub fn snapshot(&self) -> Event {
        let body = match &self.body {
            Body::Raw(b) => Body::Raw(b.clone()),
            Body::Oversized { prefix, len, max } => Body::Oversized {
                prefix: prefix.clone(),
                len: *len,
                max: *max,
            },
            Body::Json(j) => Body::Json(Json {
                text: match &j.text {
                    Text::Owned(s) => Text::Owned(s.clone()),
                    Text::Shared { chunk, start, end } => Text::Shared {
                        chunk: chunk.clone(),
                        start: *start,
                        end: *end,
                    },
                },
                members: None,
            }),
        };
        Event {
            body,
            line: self.line,
            ack: self.ack.clone(),
        }
    }

    /// Its line and newline, plus its member index when it has one.
    pub fn held_bytes(&self) -> u64 {
        let index = match &self.body {
            Body::Json(Json {
                members: Some(m), ..
            }) => std::mem::size_of_val(&**m),
            _ => 0,
        };
        (self.bytes().len() + 1 + index) as u64
    }

    /// The event's bytes as they stand (for output and dead letters).
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Raw(b) => b,
            Body::Oversized { prefix, .. } => prefix,
            Body::Json(j) => j.text.as_str().as_bytes(),
        }
    }

    /// The text of `events` when they lie back to back in one shared chunk, each followed
    /// by a newline: their output lines, newlines included, as they are (a writer need not
    /// copy them one by one). `None` for any other layout.
    pub fn contiguous_lines(events: &[Event]) -> Option<&str> {
        fn shared(e: &Event) -> Option<(&Chunk, usize, usize)> {
            match &e.body {
                Body::Json(Json {
                    text: Text::Shared { chunk, start, end },
                    ..
                }) => Some((chunk, *start, *end)),
                _ => None,
            }
        }
        let (chunk, first, mut end) = shared(events.first()?)?;
        for e in &events[1..] {
            let (c, start, next_end) = shared(e)?;
            if start != end + 1 || !Arc::ptr_eq(c, chunk) || chunk.as_bytes()[end] != b'\n' {
                return None;
            }
            end = next_end;
        }
        (chunk.as_bytes().get(end) == Some(&b'\n')).then(|| &chunk[first..=end])
    }

    /// Whether the event holds only the start of its line (it was over-long).
    pub fn is_truncated(&self) -> bool {
        matches!(&self.body, Body::Oversized { prefix, len, .. } if (prefix.len() as u64) < *len)
    }

    /// Whether the event is known to be one JSON object.
    pub fn is_decoded(&self) -> bool {
        matches!(&self.body, Body::Json(j) if j.members.is_some())
    }

    fn check_utf8(&mut self) -> Result<(), Reject> {
        if matches!(self.body, Body::Json(_)) {
            return Ok(()); // The usual case: moving the body out and back was 1.5 % of validate.
        }
        match std::mem::replace(&mut self.body, Body::Raw(Vec::new())) {
            Body::Raw(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    self.body = Body::Json(Json::new(text));
                    Ok(())
                }
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    self.body = Body::Raw(e.into_bytes());
                    Err(Reject::new(
                        "invalid_utf8",
                        format!("invalid UTF-8 at byte {at}"),
                    ))
                }
            },
            Body::Oversized { prefix, len, max } => {
                self.body = Body::Oversized { prefix, len, max };
                Err(Reject::new(
                    "line_too_long",
                    format!("line of {len} bytes exceeds --max-line-bytes {max}"),
                ))
            }
            json => {
                self.body = json;
                Ok(())
            }
        }
    }

    /// Checks that the event is one JSON object and indexes its top-level members.
    /// Cheap when already done.
    pub fn decode(&mut self) -> Result<(), Reject> {
        self.check_utf8()?;
        let Body::Json(j) = &mut self.body else {
            unreachable!("checked above")
        };
        if j.members.is_none() {
            j.members = Some(Index::Own(
                json::scan_object(j.text.as_str()).map_err(scan_reject)?,
            ));
        }
        Ok(())
    }

    /// Decodes every event of a batch that is not decoded yet, as [`Event::decode`] does,
    /// writing their member indexes into one block shared by the batch: no allocation
    /// per event (malloc and free were 8 % of the CPU time of a pipeline to stdout).
    /// Returns the events refused, by their position in `events`, in order.
    pub fn decode_all(events: &mut [Event]) -> Vec<(usize, Reject)> {
        Event::decode_all_by(events, |_, text, out| json::scan_object_into(text, out))
    }

    /// [`Event::decode_all`], running `f` on each event it decodes (its position in
    /// `events`, its text and its tape) in the same pass.
    pub fn decode_all_with(
        events: &mut [Event],
        mut f: impl FnMut(usize, &str, &[TNode]),
    ) -> Vec<(usize, Reject)> {
        Event::decode_all_by(events, |i, text, out| {
            json::scan_object_into_with(text, out, |nodes| f(i, text, nodes))
        })
    }

    /// [`Event::decode_all`] with `scan` appending an event's members (position, text).
    fn decode_all_by(
        events: &mut [Event],
        mut scan: impl FnMut(usize, &str, &mut Vec<Member>) -> Result<(), ScanError>,
    ) -> Vec<(usize, Reject)> {
        let mut refused = Vec::new();
        let mut all = Vec::new();
        let mut spans = Vec::with_capacity(events.len());
        let n = events.len();
        for (i, e) in events.iter_mut().enumerate() {
            if e.is_decoded() {
                continue;
            }
            if let Err(r) = e.check_utf8() {
                refused.push((i, r));
                continue;
            }
            let Body::Json(j) = &e.body else {
                unreachable!("checked above")
            };
            let start = all.len();
            match scan(i, j.text.as_str(), &mut all) {
                Ok(()) => {
                    if spans.is_empty() {
                        // The block is sized by the first event, as enrich sizes its own:
                        // the events of a batch tend to look alike (one too small grows).
                        let mut block = crate::pool::INDEX.take(all.len() * (n - i));
                        block.extend_from_slice(&all);
                        all = block;
                    }
                    spans.push((i, start..all.len()));
                }
                Err(err) => refused.push((i, scan_reject(err))),
            }
        }
        if spans.is_empty() {
            return refused;
        }
        let all: SharedIndex = Arc::new(Pooled::new(all));
        for (i, range) in spans {
            if let Body::Json(j) = &mut events[i].body {
                j.members = Some(Index::Shared {
                    all: all.clone(),
                    range,
                });
            }
        }
        refused
    }

    /// Decodes the event and runs `f` on its tape (see [`crate::tape`]) in the same pass.
    pub fn decode_with<T>(&mut self, f: impl FnOnce(&str, &[TNode]) -> T) -> Result<T, Reject> {
        self.check_utf8()?;
        let Body::Json(j) = &mut self.body else {
            unreachable!("checked above")
        };
        let text = j.text.as_str();
        tape::with_tape(text, |res| {
            let nodes = res.map_err(|e| scan_reject(ScanError::Malformed(e.0)))?;
            if j.members.is_none() {
                j.members = Some(Index::Own(
                    json::members_of(text, nodes).map_err(scan_reject)?,
                ));
            }
            Ok(f(text, nodes))
        })
    }

    fn json(&self) -> &Json {
        match &self.body {
            Body::Json(j) => j,
            _ => panic!("event used before decode()"),
        }
    }

    /// The JSON text of a decoded event.
    pub fn text(&self) -> &str {
        self.json().text.as_str()
    }

    /// The top-level members of a decoded event.
    pub fn members(&mut self) -> &[Member] {
        let Body::Json(j) = &mut self.body else {
            panic!("event used before decode()")
        };
        if j.members.is_none() {
            j.members = Some(Index::Own(
                json::scan_object(j.text.as_str()).expect("decoded text scans"),
            ));
        }
        j.members.as_deref().expect("set above")
    }

    /// Text and members together, for splicing.
    pub fn text_and_members(&mut self) -> (&str, &[Member]) {
        self.members();
        let j = self.json();
        (
            j.text.as_str(),
            j.members.as_deref().expect("indexed by members()"),
        )
    }

    /// The raw JSON text of the value at `path`, if present. `meta` names the metadata
    /// field, which is invisible here: a path through it finds nothing.
    pub fn get(&mut self, path: &FieldPath, meta: &str) -> Option<&str> {
        if path.first() == meta {
            return None;
        }
        let (text, members) = self.text_and_members();
        let m = json::find(text, members, path.first())?;
        json::get_in(&text[m.value()], &path.segments()[1..])
    }

    /// Like [`Event::get`], with the metadata field visible too (`_meta.offset`): for a
    /// sink, which may order rows by where they came from.
    pub fn get_with_meta(&mut self, path: &FieldPath) -> Option<&str> {
        let (text, members) = self.text_and_members();
        let m = json::find(text, members, path.first())?;
        json::get_in(&text[m.value()], &path.segments()[1..])
    }

    /// The raw text of the top-level field `key`.
    pub fn field(&mut self, key: &str) -> Option<&str> {
        let (text, members) = self.text_and_members();
        json::find(text, members, key).map(|m| &text[m.value()])
    }

    /// Frees the member index of a decoded event (it is rebuilt when needed): for events
    /// held a long time, such as rows waiting for their transaction.
    pub fn drop_index(&mut self) {
        if let Body::Json(j) = &mut self.body {
            j.members = None;
        }
    }

    /// Sets the top-level field `key` of a decoded event to the JSON text `value`,
    /// replacing it in place when present (the rest of the text is kept as it is).
    pub fn set_field(&mut self, key: &str, value: &str) -> Result<(), Reject> {
        let (text, members) = self.text_and_members();
        let path = [key.to_owned()];
        let new = json::set_many(text, members, &[json::SetOp { path: &path, value }])
            .map_err(|e| Reject::new("set", e))?;
        self.set_text(new);
        Ok(())
    }

    /// Replaces the event's text (which must be a JSON object); caches are dropped.
    pub fn set_text(&mut self, text: String) {
        self.body = Body::Json(Json::new(text));
    }

    /// Replaces the event's text with `chunk[start..end]` (a JSON object), the way a stage
    /// that writes the new texts of a whole batch into one buffer hands them out; `index`,
    /// when given, is where the new text's members are in a buffer of the batch's indexes
    /// (see [`json::set_many_into`]): no later stage then scans the text again.
    pub fn set_shared_text(
        &mut self,
        chunk: Chunk,
        start: usize,
        end: usize,
        index: Option<(SharedIndex, std::ops::Range<usize>)>,
    ) {
        let members = index.map(|(all, range)| Index::Shared { all, range });
        debug_assert!(members
            .as_deref()
            .is_none_or(|m| json::scan_object(&chunk[start..end]).as_deref() == Ok(m)));
        self.body = Body::Json(Json {
            text: Text::Shared { chunk, start, end },
            members,
        });
    }

    /// A new event from text known to be one JSON object, sharing this one's line and ack.
    pub fn derive(&self, text: String) -> Event {
        Event {
            body: Body::Json(Json::new(text)),
            line: self.line,
            ack: self.ack.clone(),
        }
    }
}

fn scan_reject(e: ScanError) -> Reject {
    let kind = match e {
        ScanError::Malformed(_) => "malformed_json",
        ScanError::NotObject(_) => "not_object",
    };
    Reject::new(kind, e.to_string())
}

/// What it takes to make a batch's events again, as they stood, after a worker panicked
/// on them: taken before the work, so that the batch can be tried event by event. Most
/// events are lines of a shared chunk, and only their range is kept (each chunk is held
/// once): a per-event copy moved a reference count on the chunk, one cache line that
/// every worker and the reader touch, for each event of every batch.
pub struct Replay {
    chunks: Vec<Chunk>,
    events: Vec<Again>,
}

enum Again {
    /// `chunks[chunk][start..end]`, with the event's line and acknowledgement.
    Line {
        chunk: usize,
        start: usize,
        end: usize,
        line: u64,
        ack: Option<Ack>,
    },
    /// An event with text of its own: a copy ([`Event::snapshot`]).
    Copy(Event),
}

impl Replay {
    pub fn of(events: &[Event]) -> Replay {
        let mut chunks: Vec<Chunk> = Vec::new();
        let events = events
            .iter()
            .map(|e| match &e.body {
                Body::Json(Json {
                    text: Text::Shared { chunk, start, end },
                    ..
                }) => {
                    if !chunks.last().is_some_and(|c| Arc::ptr_eq(c, chunk)) {
                        chunks.push(chunk.clone());
                    }
                    Again::Line {
                        chunk: chunks.len() - 1,
                        start: *start,
                        end: *end,
                        line: e.line,
                        ack: e.ack.clone(),
                    }
                }
                _ => Again::Copy(e.snapshot()),
            })
            .collect();
        Replay { chunks, events }
    }

    /// The events again, in order, as [`Event::snapshot`] would have copied them.
    pub fn events(self) -> impl Iterator<Item = Event> {
        let chunks = self.chunks;
        self.events.into_iter().map(move |a| match a {
            Again::Line {
                chunk,
                start,
                end,
                line,
                ack,
            } => {
                let mut e = Event::from_chunk(chunks[chunk].clone(), start, end, line);
                e.ack = ack;
                e
            }
            Again::Copy(e) => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Decoding a batch at once refuses what decoding each event would, for the same
    /// reasons, and indexes the rest as a scan of each would.
    #[test]
    fn decoding_a_batch_is_decoding_each_event() {
        let lines: [&[u8]; 6] = [
            br#"{"a":1,"b":{"c":[2]}}"#,
            br#"{"a":"#,
            b"[1,2]",
            b"{\"bad\":\"\xff\"}",
            br#"{"k\u0041":true,"a":null}"#,
            br#"{}"#,
        ];
        let events = || -> Vec<Event> {
            let mut v: Vec<Event> = (0..6)
                .map(|i| Event::from_line(lines[i].to_vec(), i as u64 + 1))
                .collect();
            v.insert(1, Event::from_json_text(r#"{"x":0}"#.to_owned(), 9));
            v[1].decode().unwrap();
            v
        };
        let mut one = events();
        let each: Vec<Option<Reject>> = one.iter_mut().map(|e| e.decode().err()).collect();
        let mut all = events();
        let refused = Event::decode_all(&mut all);
        let at: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [2, 3, 4]);
        for (i, r) in refused {
            let want = each[i].as_ref().expect("refused one by one too");
            assert_eq!((r.kind, &r.reason), (want.kind, &want.reason));
        }
        for (i, e) in all.iter_mut().enumerate() {
            if each[i].is_none() {
                let text = e.text().to_owned();
                assert_eq!(e.members(), json::scan_object(&text).unwrap(), "event {i}");
                assert_eq!(one[i].members(), e.members());
            }
        }
    }

    /// A replay gives back every event as it stood: lines of two chunks, an event with
    /// text of its own, and a raw line not looked at yet.
    #[test]
    fn a_replay_gives_the_events_back_as_they_stood() {
        let (a, b) = (
            chunk(r#"{"a":1}{"b":2}"#.to_owned()),
            chunk(r#"{"c":3}"#.to_owned()),
        );
        let mut events = vec![
            Event::from_chunk(a.clone(), 0, 7, 1),
            Event::from_chunk(a.clone(), 7, 14, 2),
            Event::from_json_text(r#"{"own":true}"#.to_owned(), 3),
            Event::from_chunk(b.clone(), 0, 7, 4),
            Event::from_line(br#"{"raw":1}"#.to_vec(), 5),
        ];
        events[1].decode().unwrap();
        let replay = Replay::of(&events);
        assert_eq!(replay.chunks.len(), 2, "each chunk held once");
        drop(events);
        let again: Vec<(String, u64)> = replay
            .events()
            .map(|e| (String::from_utf8(e.bytes().to_vec()).unwrap(), e.line))
            .collect();
        let want = [
            (r#"{"a":1}"#, 1),
            (r#"{"b":2}"#, 2),
            (r#"{"own":true}"#, 3),
            (r#"{"c":3}"#, 4),
            (r#"{"raw":1}"#, 5),
        ];
        assert_eq!(again, want.map(|(t, l)| (t.to_owned(), l)));
    }

    #[test]
    fn decode_kinds() {
        let reject = |b: &[u8]| Event::from_line(b.to_vec(), 1).decode().unwrap_err().kind;
        assert_eq!(reject(b"{\"a\":1"), "malformed_json");
        assert_eq!(reject(b"{\"a\":1} {}"), "malformed_json");
        assert_eq!(reject(b"[1]"), "not_object");
        assert_eq!(reject(b"\"x\""), "not_object");
        assert_eq!(reject(b"{\"a\":\"\xff\"}"), "invalid_utf8");
        let mut e = Event::oversized(b"{".to_vec(), 100, 10, 3);
        assert_eq!(e.decode().unwrap_err().kind, "line_too_long");
        let mut e = Event::from_line(br#"{"a":{"b":2},"_meta":{"x":1}}"#.to_vec(), 1);
        e.decode().unwrap();
        assert_eq!(e.get(&FieldPath::parse("a.b").unwrap(), "_meta"), Some("2"));
        assert_eq!(e.get(&FieldPath::parse("_meta.x").unwrap(), "_meta"), None);
        assert_eq!(e.field("_meta"), Some(r#"{"x":1}"#));
    }

    #[test]
    fn decode_with_rejects_like_decode() {
        let mut e = Event::from_line(b"[1]".to_vec(), 1);
        assert_eq!(e.decode_with(|_, _| ()).unwrap_err().kind, "not_object");
        let mut e = Event::from_line(b"{\"a\":".to_vec(), 1);
        assert_eq!(e.decode_with(|_, _| ()).unwrap_err().kind, "malformed_json");
        let mut e = Event::from_line(b"{\"a\":1}".to_vec(), 1);
        assert_eq!(e.decode_with(|_, t| t.len()).unwrap(), 3);
        assert_eq!(e.field("a"), Some("1"));
    }

    #[test]
    fn ack_fires_once_when_last_clone_drops() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let ack = Ack::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        let mut a = Event::from_line(b"{}".to_vec(), 1);
        a.ack = Some(ack);
        a.decode().unwrap();
        let b = a.derive("{\"x\":1}".into());
        drop(a);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(n.load(Ordering::SeqCst), 1);

        // Disarmed: it never fires.
        let n2 = n.clone();
        let ack = Ack::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        let kept = ack.clone();
        ack.disarm();
        drop(ack);
        drop(kept);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
