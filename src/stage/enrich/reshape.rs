//! `--jq`: the program run on a batch's events in a helper process, and the metadata
//! field re-attached to its outputs.

use smallvec::SmallVec;

use crate::event::Event;
use crate::jq;
use crate::json::{self, SetOp};
use crate::shutdown::Shutdown;

use super::Config;

impl Config {
    /// Runs the jq program (when there is one) on a batch's events, in a helper process:
    /// one result per event, `None` for events that are not JSON objects (rejected later).
    /// Without a program: `None`, and nothing is allocated.
    pub(super) fn run_jq(
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
pub(super) fn with_meta(event: &mut Event, meta: &str, outputs: Vec<String>) -> Vec<Event> {
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
