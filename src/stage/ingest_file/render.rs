//! Lines into events: each line's bytes with the metadata field added, in one pass for
//! the usual line (a JSON object without it); the reason for any other.

use crate::event::{Event, Reject};
use crate::json;
use crate::position;

use super::tail::{Line, Tailed};

/// The kind of source in `_meta` and in the offsets table's scope (`file:NAME`).
pub const SOURCE: &str = "file";

/// Names fixed for the run.
pub struct Names {
    /// The metadata field's name, and as JSON.
    pub meta_field: String,
    pub meta_key: String,
    /// `--positions-name` in exactly-once mode: each event then carries its position
    /// in the generic form, for persist to commit.
    pub positions_name: Option<String>,
    /// `--max-line-bytes`.
    pub max_line: u64,
}

impl Names {
    pub fn new(meta_field: &str, positions_name: Option<String>, max_line: u64) -> Names {
        Names {
            meta_field: meta_field.to_owned(),
            meta_key: json::quote(meta_field),
            positions_name,
            max_line,
        }
    }
}

/// What the metadata of a file's lines says of the file, as JSON: made once per read.
pub struct FileText {
    pub path: String,
    pub id: String,
    /// The identity as it is (the position's stream).
    pub id_text: String,
    pub epoch: Option<i64>,
}

impl FileText {
    pub fn new(t: &Tailed) -> FileText {
        let id_text = t.id.to_string();
        FileText {
            path: json::quote(&t.name),
            id: json::quote(&id_text),
            id_text,
            epoch: t.epoch,
        }
    }
}

/// The metadata object of `line` of `file`: `{"source":"file","path":…,"file_id":…,
/// "offset":…,"line":…}`, with `"position"` in exactly-once mode.
pub fn push_meta(out: &mut String, file: &FileText, line: &Line, names: &Names) {
    let mut num = itoa::Buffer::new();
    out.push_str("{\"source\":\"file\",\"path\":");
    out.push_str(&file.path);
    out.push_str(",\"file_id\":");
    out.push_str(&file.id);
    out.push_str(",\"offset\":");
    out.push_str(num.format(line.at));
    out.push_str(",\"line\":");
    out.push_str(num.format(line.number));
    if let Some(name) = &names.positions_name {
        out.push(',');
        // The offset of the line's last byte: persist commits the one after it, where
        // the next line starts.
        let last = i64::try_from(line.end).unwrap_or(i64::MAX) - 1;
        position::push_generic(out, SOURCE, name, &file.id_text, 0, last, file.epoch);
    }
    out.push('}');
}

/// Appends the event text of `line` with `meta` as the metadata field. Err is why the
/// line is a dead letter; `out` may then hold part of a line.
pub fn render(line: &Line, meta: &str, names: &Names, out: &mut String) -> Result<(), Reject> {
    if line.oversized.is_some() {
        return Err(dead_letter(line, names)
            .decode()
            .expect_err("an over-long line is refused"));
    }
    if let Ok(text) = std::str::from_utf8(line.bytes) {
        if json::append_member(text, &names.meta_field, &names.meta_key, meta, out) {
            return Ok(());
        }
    }
    // The general way: the reason for a reject, or a line that has the field already
    // (replaced, as every source does).
    let mut event = Event::from_line(line.bytes.to_vec(), line.number);
    event.decode()?;
    event.set_field(&names.meta_field, meta)?;
    out.push_str(event.text());
    Ok(())
}

/// The event a rejected line is kept as in the dead-letter output.
pub fn dead_letter(line: &Line, names: &Names) -> Event {
    match line.oversized {
        Some(len) => Event::oversized(line.bytes.to_vec(), len, names.max_line, line.number),
        None => Event::from_line(line.bytes.to_vec(), line.number),
    }
}
