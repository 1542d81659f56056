//! Splicing new field values into an event's text, into one buffer per batch.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::event::{self, Event, Reject};
use crate::json::{self, Member, SetOp};
use crate::pool::{self, Pooled};

/// The new text of an event: its range in a batch's text buffer, and the range of its
/// members in the batch's index buffer when the edit could move the old index onto it.
pub(super) type Spliced = (Range<usize>, Option<Range<usize>>);

/// Sets every (path, JSON text) pair in one pass over the event's text, appending the new
/// text to the arena and, when it is indexed and the paths are top-level, its members too:
/// the next stage that looks inside (persist) reads them instead of scanning the text
/// again. Returns where they are (`None` when there is nothing to set); the event keeps
/// its old text.
pub(super) fn splice(
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
            let end = out.len();
            // Each new text with its newline: when every event of the batch is edited,
            // a writer takes them as they are ([`Event::contiguous_lines`]).
            out.push('\n');
            Ok(Some((start..end, members)))
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
    pub(super) text: String,
    pub(super) index: Vec<Member>,
    pub(super) spans: Vec<(usize, Spliced)>,
    /// About how many events will be edited.
    pub(super) events: usize,
    /// Whether the new texts are indexed too: a later stage in this process looks inside
    /// them (see [`Ctx::keep_index`]).
    pub(super) indexed: bool,
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
