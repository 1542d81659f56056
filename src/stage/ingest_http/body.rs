//! Request bodies into events: gzip inflating with a cap, JSON object, array or NDJSON
//! (framed as files are), and the summary answered to the client.

use std::io::Read;

use crate::event::{Event, Reject};
use crate::json;

use super::room::NoRoom;
use super::server::Answer;

/// Bytes inflated at a time, taking in-flight room for each step first.
pub(super) const INFLATE_STEP: usize = 256 * 1024;

pub(super) enum Inflate {
    TooLarge,
    NoRoom(NoRoom),
    Bad(std::io::Error),
}

/// Inflates gzip, refusing to produce more than `cap` bytes (a gzip bomb stops there).
/// `reserve(n)` takes in-flight room for `n` inflated bytes before each step, so that
/// many small bodies inflating at once stay within --max-inflight-bytes.
pub(super) fn inflate(
    raw: &[u8],
    cap: usize,
    reserve: &mut dyn FnMut(u64) -> std::result::Result<(), NoRoom>,
) -> std::result::Result<Vec<u8>, Inflate> {
    let mut out: Vec<u8> = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(raw);
    loop {
        let step = INFLATE_STEP.min(cap + 1 - out.len());
        // Grow by a quarter, not double: the room taken stays near what was inflated,
        // and the copies stay linear in all.
        out.reserve_exact(step.max(out.len() / 4));
        reserve(out.capacity() as u64).map_err(Inflate::NoRoom)?;
        let len = out.len();
        out.resize(len + step, 0);
        let n = match dec.read(&mut out[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                out.truncate(len);
                continue;
            }
            Err(e) => return Err(Inflate::Bad(e)),
        };
        out.truncate(len + n);
        if out.len() > cap {
            return Err(Inflate::TooLarge);
        }
        if n == 0 && step > 0 {
            return Ok(out);
        }
    }
}

/// Valid events of a body, and the malformed ones.
pub(super) struct Parsed {
    pub(super) events: Vec<Event>,
    pub(super) errors: Vec<Malformed>,
}

/// One malformed event of a body.
pub(super) struct Malformed {
    /// Its position as the answer reports it: the array index (from 0) or the line.
    pub(super) at: usize,
    /// The dead-letter kind, as the NDJSON framer and decoder name it.
    pub(super) kind: &'static str,
    pub(super) reason: String,
    /// The event as read (an over-long line holds only its start), for its dead letter.
    pub(super) event: Event,
}

/// Why a body was refused whole.
pub(super) enum Refused {
    /// Not JSON, an array, nor NDJSON (400).
    Bad(String),
    /// What `admit` answered.
    Answer(Answer),
}

/// Splits a body into events, each with the metadata field set. A body that is neither
/// an object, an array, nor NDJSON is an error for the whole request. `admit(n)` is asked
/// before any event is made, with how many the body holds at most.
pub(super) fn split_events(
    text: &str,
    ndjson: bool,
    max_line: usize,
    meta_field: &str,
    meta: &str,
    admit: &mut dyn FnMut(usize) -> std::result::Result<(), Answer>,
) -> std::result::Result<Parsed, Refused> {
    let mut parsed = Parsed {
        events: Vec::new(),
        errors: Vec::new(),
    };
    let body = text.trim_start_matches('\u{feff}');
    let trimmed = body.trim_ascii();
    let one = |mut event: Event, at: usize, parsed: &mut Parsed| match with_meta(
        &mut event, meta_field, meta,
    ) {
        Ok(()) => parsed.events.push(event),
        Err(r) => parsed.errors.push(Malformed {
            at,
            kind: r.kind,
            reason: r.reason,
            event,
        }),
    };
    if !ndjson && trimmed.starts_with('[') {
        let Some(elems) = json::scan_array(trimmed) else {
            return Err(Refused::Bad(
                "the body is not valid JSON (an array was expected)".into(),
            ));
        };
        admit(elems.len()).map_err(Refused::Answer)?;
        for (i, r) in elems.into_iter().enumerate() {
            let event = Event::from_line(trimmed[r].as_bytes().to_vec(), i as u64 + 1);
            one(event, i, &mut parsed);
        }
        return Ok(parsed);
    }
    if !ndjson {
        // One object; a body of several lines is taken as NDJSON all the same.
        let single = serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok();
        if single {
            admit(1).map_err(Refused::Answer)?;
            one(
                Event::from_line(trimmed.as_bytes().to_vec(), 1),
                0,
                &mut parsed,
            );
            return Ok(parsed);
        }
        if !trimmed.contains('\n') {
            let mut event = Event::from_line(trimmed.as_bytes().to_vec(), 0);
            let reason = event
                .decode()
                .err()
                .map_or("malformed JSON".into(), |r| r.reason);
            return Err(Refused::Bad(format!(
                "the body is not a JSON object: {reason}"
            )));
        }
    }
    // Counted before any event is made, so that a body too large for the queue is
    // refused without building its events.
    let lines = body
        .split('\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    admit(lines).map_err(Refused::Answer)?;
    // The same framer as files and stdin: BOM, CRLF, blank lines, over-long lines.
    let mut framer = crate::ndjson::Framer::new(max_line as u64);
    let mut events = Vec::with_capacity(lines);
    framer.feed(text.as_bytes(), &mut events);
    framer.finish(&mut events);
    for event in events {
        let at = event.line as usize;
        one(event, at, &mut parsed);
    }
    Ok(parsed)
}

/// Checks that an event is one JSON object and sets its metadata field.
pub(super) fn with_meta(
    event: &mut Event,
    meta_field: &str,
    meta: &str,
) -> std::result::Result<(), Reject> {
    event.decode()?;
    event.set_field(meta_field, meta)
}

pub(super) fn summary_json(
    accepted: usize,
    errors: &[Malformed],
    ndjson: bool,
    error: Option<&str>,
) -> String {
    let mut s = format!("{{\"accepted\":{accepted},\"rejected\":{}", errors.len());
    if let Some(e) = error {
        s.push_str(",\"error\":");
        s.push_str(&json::quote(e));
    }
    s.push_str(",\"errors\":[");
    // At most 100 explained; the count says how many there were.
    for (i, Malformed { at, reason, .. }) in errors.iter().take(100).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let key = if ndjson { "line" } else { "index" };
        s.push_str(&format!(
            "{{\"{key}\":{at},\"reason\":{}}}",
            json::quote(reason)
        ));
    }
    s.push_str("]}");
    s
}
