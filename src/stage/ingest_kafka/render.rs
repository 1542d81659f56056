//! The rendering thread: raw batches into NDJSON lines (events with `_meta`, or kcat's
//! envelope), dead letters for payloads that are not objects, acknowledgements that
//! store offsets once lines are written.

use std::sync::Arc;

use base64::Engine as _;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message};
use tokio::sync::mpsc::Sender;

use crate::event::{Batch, Event, Reject};
use crate::exit::Result;
use crate::json;
use crate::stage::Ctx;

use super::callbacks::Callbacks;
use super::consume::{Positions, RawBatch, RawMsg};
use super::{Config, Format};

/// Turns the polled batches into events, in order, and sends them on; rejects become dead
/// letters. Each batch's lines share one buffer.
pub(super) fn render_batches(
    rx: std::sync::mpsc::Receiver<RawBatch<'_>>,
    consumer: &Arc<BaseConsumer<Callbacks>>,
    output: &Sender<Batch>,
    cfg: &Config,
    names: &Names,
    ctx: &Ctx,
) -> Result<()> {
    let source: Arc<str> = Arc::from("kafka");
    // About what a message's metadata object adds to its line.
    let extra = names.meta_key.len() + names.group.len() + 161;
    let mut meta = String::new();
    // Offsets read and not yet handed to a sent batch's acknowledgement.
    let mut read = Positions::default();
    for raw in rx {
        read.merge(&raw.positions);
        ctx.tally.consumed(raw.msgs.len() as u64, raw.bytes);
        let mut text = String::with_capacity(raw.bytes as usize + raw.msgs.len() * extra);
        let mut spans = Vec::with_capacity(raw.msgs.len());
        let with_meta = cfg.format == Format::Events && !cfg.no_meta;
        for m in &raw.msgs {
            let msg = &m.msg;
            let kcat;
            let body = if cfg.format == Format::Kcat {
                kcat = kcat_line(msg);
                kcat.as_bytes()
            } else {
                msg.payload().unwrap_or(b"{}")
            };
            let at = text.len();
            meta.clear();
            if with_meta {
                push_meta(&mut meta, m, &raw, names);
            }
            match render(body, &meta, cfg, names, &mut text) {
                Ok(()) => {
                    // Lines end with their newline: the writer takes them as they are.
                    spans.push(at..text.len());
                    text.push('\n');
                }
                Err(reject) => {
                    text.truncate(at);
                    let mut ev = Event::from_line(body.to_vec(), 0);
                    let r = Reject::new(
                        reject.kind,
                        format!(
                            "{}/{}@{}: {}",
                            raw.runs[m.run as usize].topic,
                            msg.partition(),
                            msg.offset(),
                            reject.reason
                        ),
                    );
                    ctx.dead.keep("ingest-kafka", &source, &mut ev, &r)?;
                    ctx.tally.rejected(1);
                }
            }
        }
        if spans.is_empty() {
            continue; // all dead letters: the next batch stores their offsets
        }
        let ack = read.ack(consumer);
        ctx.tally.sent(spans.len() as u64);
        let chunk = crate::event::chunk(text);
        let events = spans
            .into_iter()
            .map(|r| {
                let mut e = Event::from_chunk(chunk.clone(), r.start, r.end, 0);
                e.ack = ack.clone();
                e
            })
            .collect();
        let mut batch = Batch::new(source.clone(), events);
        let started = raw.started.unwrap_or_else(std::time::SystemTime::now);
        crate::trace::source("ingest-kafka", &mut batch, started, &raw.parents);
        if output.blocking_send(batch).is_err() {
            // stdout closed: these lines were not written, so their offsets stay unstored.
            if let Some(a) = ack {
                a.disarm();
            }
            break;
        }
    }
    Ok(())
}

/// Base64 (standard alphabet) of bytes that are not UTF-8.
pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// JSON texts that are the same for many messages, made once.
pub(super) struct Names {
    /// The group (or offsets name) as JSON, or `null`.
    pub(super) group: String,
    /// The metadata field's name, and as JSON.
    pub(super) meta_field: String,
    pub(super) meta_key: String,
}

/// Appends the output line of one message to `out`: `body` (the payload) with `meta` (its
/// metadata object, or empty for none) as the metadata field. Err is why the message is
/// a dead letter; `out` may then hold part of a line.
pub(super) fn render(
    body: &[u8],
    meta: &str,
    cfg: &Config,
    names: &Names,
    out: &mut String,
) -> std::result::Result<(), Reject> {
    if cfg.format == Format::Kcat {
        out.push_str(std::str::from_utf8(body).expect("kcat lines are JSON text"));
        return Ok(());
    }
    // The common case in one pass: a JSON object without the metadata field.
    if !cfg.no_meta {
        if let Ok(text) = std::str::from_utf8(body) {
            if json::append_member(text, &names.meta_field, &names.meta_key, meta, out) {
                return Ok(());
            }
        }
    }
    // The general way: rejects with their reasons, --wrap-non-json, a payload that has
    // the metadata field already.
    let mut event = Event::from_line(body.to_vec(), 0);
    if let Err(reject) = event.decode() {
        if !cfg.wrap_non_json {
            return Err(reject);
        }
        let wrapped = match std::str::from_utf8(body) {
            Ok(s) if serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() => {
                format!("{{\"value\":{}}}", s.trim())
            }
            Ok(s) => format!("{{\"value_text\":{}}}", json::quote(s)),
            Err(_) => format!("{{\"value_base64\":{}}}", json::quote(&b64(body))),
        };
        event = Event::from_line(wrapped.into_bytes(), 0);
        event.decode()?;
    }
    if !cfg.no_meta {
        event.set_field(&names.meta_field, meta)?;
    }
    out.push_str(event.text());
    Ok(())
}

/// Appends the metadata object of the message `m` of `raw` to `out`.
fn push_meta(out: &mut String, m: &RawMsg<'_>, raw: &RawBatch<'_>, names: &Names) {
    let (run, msg) = (&raw.runs[m.run as usize], &m.msg);
    let mut num = itoa::Buffer::new();
    out.push_str("{\"source\":\"kafka\",\"group\":");
    out.push_str(&names.group);
    out.push_str(",\"topic\":");
    out.push_str(&run.topic_json);
    out.push_str(",\"partition\":");
    out.push_str(num.format(msg.partition()));
    out.push_str(",\"offset\":");
    out.push_str(num.format(msg.offset()));
    if let Some(e) = run.epoch {
        out.push_str(",\"epoch\":");
        out.push_str(num.format(e));
    }
    out.push_str(",\"key\":");
    match msg.key() {
        None => out.push_str("null"),
        Some(k) => {
            if push_text_or_b64(out, k) {
                out.push_str(",\"key_encoding\":\"base64\"");
            }
        }
    }
    out.push_str(",\"timestamp\":");
    match msg.timestamp().to_millis() {
        Some(t) => out.push_str(num.format(t)),
        None => out.push_str("null"),
    }
    out.push_str(",\"headers\":");
    match msg.headers() {
        Some(h) => push_headers(out, h),
        None => out.push_str("[]"),
    }
    if msg.payload().is_none() {
        out.push_str(",\"tombstone\":true");
    }
    out.push('}');
}

/// Appends the headers of a message to `out` as a JSON array.
pub(super) fn push_headers<H: Headers + ?Sized>(out: &mut String, h: &H) {
    out.push('[');
    for i in 0..h.count() {
        let header = h.get(i);
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        json::push_quoted(out, header.key);
        match header.value {
            None => out.push_str(",\"value\":null"),
            Some(v) => {
                out.push_str(",\"value\":");
                if push_text_or_b64(out, v) {
                    out.push_str(",\"encoding\":\"base64\"");
                }
            }
        }
        out.push('}');
    }
    out.push(']');
}

/// Pushes `"text"` for UTF-8 bytes, else the quoted base64 text; true when base64.
pub(super) fn push_text_or_b64(out: &mut String, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            json::push_quoted(out, s);
            false
        }
        Err(_) => {
            json::push_quoted(out, &b64(bytes));
            true
        }
    }
}

/// kcat -J's envelope of a message.
pub(super) fn kcat_line<M: Message>(msg: &M) -> String {
    let text = |b: Option<&[u8]>| {
        let mut s = String::new();
        match b {
            Some(b) => {
                push_text_or_b64(&mut s, b);
            }
            None => s.push_str("null"),
        }
        s
    };
    format!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"tstype\":\"{}\",\"ts\":{},\"broker\":-1,\"headers\":{},\"key\":{},\"payload\":{}}}",
        json::quote(msg.topic()),
        msg.partition(),
        msg.offset(),
        match msg.timestamp() {
            rdkafka::Timestamp::CreateTime(_) => "create",
            rdkafka::Timestamp::LogAppendTime(_) => "logappend",
            rdkafka::Timestamp::NotAvailable => "none",
        },
        msg.timestamp().to_millis().unwrap_or(-1),
        kcat_headers(msg),
        text(msg.key()),
        text(msg.payload()),
    )
}

pub(super) fn kcat_headers<M: Message>(msg: &M) -> String {
    let mut s = String::from("[");
    if let Some(h) = msg.headers() {
        for (i, header) in h.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&json::quote(header.key));
            s.push(',');
            match header.value {
                None => s.push_str("null"),
                Some(v) => s.push_str(&json::quote(&String::from_utf8_lossy(v))),
            }
        }
    }
    s.push(']');
    s
}
