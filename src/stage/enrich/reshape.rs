//! `--jq`: the program run on a batch's events in a helper process, and the metadata
//! field re-attached to its outputs.

use smallvec::SmallVec;

use crate::event::Event;
use crate::jq::{self, fast::canonical_tape, fast::Fast, fast::Output};
use crate::json::{self, SetOp};
use crate::shutdown::Shutdown;

use super::Config;

/// `--jq`: the program, run on the fast path when it compiles to it (see
/// [`jq::fast`]), else (and for the events the fast path steps aside from) in jaq's
/// helper processes.
pub struct Reshape {
    sandbox: jq::Sandbox,
    /// The program on the fast path, or why it is not.
    fast: std::result::Result<Fast, String>,
}

impl Reshape {
    pub fn new(code: &str, limits: jq::Limits) -> crate::exit::Result<Reshape> {
        let sandbox = jq::Sandbox::new(code, limits)?;
        Ok(Reshape {
            sandbox,
            fast: Fast::compile(code),
        })
    }

    /// Whether the program compiled to the fast path.
    pub fn is_fast(&self) -> bool {
        self.fast.is_ok()
    }

    /// Which path runs the program, and why, as `--explain` shows it.
    pub fn explain(&self) -> String {
        match &self.fast {
            Ok(_) => {
                "jq: fast path (edits on the event's text; jaq for events it steps aside from)"
                    .to_owned()
            }
            Err(why) => format!("jq: jaq in helper processes ({why})"),
        }
    }
}

/// What the jq program made of one event.
pub enum Reshaped {
    /// Outputs without the metadata field (from jaq, or the fast path's fan-out); or why
    /// the event is rejected.
    Outputs(jq::Outputs),
    /// From the fast path: the one output with its metadata field, or none.
    Fast(Option<String>),
}

impl Config {
    /// Runs the jq program (when there is one) on a batch's events: one result per event,
    /// `None` for events that are not JSON objects (rejected later). Without a program:
    /// `None`, and nothing is allocated.
    pub(super) fn run_jq(
        &self,
        events: &mut [Event],
        meta: &str,
        shutdown: &Shutdown,
    ) -> Option<Vec<Option<Reshaped>>> {
        let reshape = self.jq.as_ref()?;
        let mut results: Vec<Option<Reshaped>> = Vec::with_capacity(events.len());
        // Events for jaq: their index in `results` and their text without the metadata.
        let mut slow: Vec<(usize, String)> = Vec::new();
        // Events read here are decoded with their tape at hand, which tells at little cost
        // whether jaq prints an event's text as it is (else the fast path checks it member
        // by member). Those refused are refused again below.
        let mut as_printed = vec![false; events.len()];
        if reshape.is_fast() {
            Event::decode_all_with(events, |i, text, nodes| {
                as_printed[i] = canonical_tape(text, nodes)
            });
        }
        for (e, printed) in events.iter_mut().zip(as_printed) {
            if e.decode().is_err() {
                results.push(None);
                continue;
            }
            // The program sees each event joined first (`--lookup … --jq …` means "join,
            // then reshape"). A join that cannot be spliced (a prefix path through a
            // non-object) leaves the event as it was, as without jq.
            let joined = self.lookup_row(e, meta).and_then(|row| {
                let ops: SmallVec<[SetOp; 8]> = row
                    .iter()
                    .map(|(path, value)| SetOp { path, value })
                    .collect();
                let (text, members) = e.text_and_members();
                let joined = json::set_many(text, members, &ops).ok()?;
                let members = json::scan_object(&joined).ok()?;
                Some((joined, members))
            });
            let (text, members, printed) = match &joined {
                Some((t, m)) => (t.as_str(), m.as_slice(), false),
                None => {
                    let (t, m) = e.text_and_members();
                    (t, m, printed)
                }
            };
            if let Ok(fast) = &reshape.fast {
                match fast.run(text, members, meta, printed) {
                    Ok(Output::One(out)) => {
                        results.push(Some(Reshaped::Fast(out)));
                        continue;
                    }
                    // Past --jq-max-outputs, jaq's path makes the dead letter.
                    Ok(Output::Many(outs))
                        if outs.len() as u64 <= reshape.sandbox.limits().max_outputs =>
                    {
                        results.push(Some(Reshaped::Outputs(Ok(outs))));
                        continue;
                    }
                    _ => {}
                }
            }
            slow.push((
                results.len(),
                json::remove(text, members, meta).into_owned(),
            ));
            results.push(None);
        }
        if !slow.is_empty() {
            let texts: Vec<&str> = slow.iter().map(|(_, t)| t.as_str()).collect();
            let eval = || reshape.sandbox.eval_all(&texts, shutdown);
            // On a runtime thread (a fast-path program), the wait must not hold the
            // thread's other tasks.
            let outputs = if reshape.is_fast() {
                crate::stage::workers::off_runtime(eval)
            } else {
                eval()
            };
            for ((i, _), out) in slow.iter().zip(outputs) {
                results[*i] = Some(Reshaped::Outputs(out));
            }
        }
        Some(results)
    }
}

/// The events a jq program made of `event`, each with the event's metadata field
/// re-attached (see [`jq::attach_meta`]).
pub(super) fn with_meta(event: &mut Event, meta: &str, outputs: Vec<String>) -> Vec<Event> {
    let meta_raw = {
        let (text, members) = event.text_and_members();
        json::find(text, members, meta).map(|m| text[m.value()].to_owned())
    };
    jq::attach_meta(meta_raw.as_deref(), meta, outputs)
        .into_iter()
        .map(|text| event.derive(text))
        .collect()
}
