//! What `enrich` does to each event, built from its flags, and the edit of one event:
//! every field change spliced in one pass.

use std::borrow::Cow;

use std::sync::Arc;

use smallvec::SmallVec;

use crate::event::{Event, Reject};
use crate::exit::{Error, Result};
use crate::jq;
use crate::json::{self, FieldPath};
use crate::stage::workers;

use super::id::{compute_id, ID_LEN};
use super::lookup::{load_lookup, Lookup};
use super::remote::{Looked, Remote};
use super::reshape::{with_meta, Reshape, Reshaped};
use super::splice::{splice, Spliced};
use super::{Args, SetField, TextArena};

/// What `enrich` does to each event.
pub struct Config {
    /// `--http`: the lookup in an external service, first of the steps.
    pub remote: Option<Arc<Remote>>,
    pub(super) jq: Option<Reshape>,
    pub(super) lookup: Option<Lookup>,
    pub(super) set: Vec<SetField>,
    pub(super) id: Option<(FieldPath, Vec<FieldPath>)>,
    pub(super) timestamp: Option<FieldPath>,
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
            .map(|code| Reshape::new(code, limits))
            .transpose()?;
        let remote = Remote::from_args(&args.remote, meta)?.map(Arc::new);
        if remote.is_some() && jq.is_some() {
            return Err(Error::usage(
                "--jq with --http: run them as two stages, the lookup first \
                 (enrich --http … | enrich --jq …, or the same in one pipeline)",
            ));
        }
        if let Some(into) = remote.as_ref().map(|r| &r.into) {
            json::set_fits(into.segments(), "\"\"").map_err(Error::usage)?;
        }
        Ok(Config {
            remote,
            jq,
            lookup,
            set: args.set.clone(),
            id: args.id.clone().map(|f| (f, args.id_from.clone())),
            timestamp: args.timestamp.clone(),
            workers: args.workers.unwrap_or_else(workers::default_workers),
        })
    }

    /// Which path runs `--jq`, and why (see [`jq::fast`]).
    pub fn explain_jq(&self) -> Option<String> {
        self.jq.as_ref().map(Reshape::explain)
    }

    /// About how many bytes an event grows by, for sizing a batch's [`TextArena`].
    pub(super) fn growth(&self, now: &str) -> usize {
        let key = |p: &FieldPath| p.to_string().len() + 4;
        let set: usize = self.set.iter().map(|s| key(&s.path) + s.value.len()).sum();
        let id = self.id.as_ref().map_or(0, |(f, _)| key(f) + ID_LEN);
        let ts = self.timestamp.as_ref().map_or(0, |f| key(f) + now.len());
        let lookup = if self.lookup.is_some() { 128 } else { 0 };
        let remote = self.remote.as_ref().map_or(0, |r| key(&r.into) + 128);
        set + id + ts + lookup + remote + 16
    }

    /// Enriches one event into zero or more events; `now` is the processing time as JSON
    /// text; `jq` is what the jq program gave for it (see [`Config::run_jq`]), when there
    /// is one; `looked` what its lookup in an external service came to (`--http`).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        mut event: Event,
        jq: Option<Reshaped>,
        looked: Option<&Looked>,
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
            Some(Reshaped::Outputs(Ok(outputs))) => {
                out.extend(with_meta(&mut event, meta, outputs))
            }
            Some(Reshaped::Outputs(Err(r))) => return Err((event, r)),
            Some(Reshaped::Fast(Some(text))) => out.push(event.derive(text)),
            Some(Reshaped::Fast(None)) => {}
            None => out.push(event),
        }
        for i in start..out.len() {
            match self.edit(&mut out[i], looked, now, meta, arena) {
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
    pub(super) fn edit(
        &self,
        event: &mut Event,
        looked: Option<&Looked>,
        now: &str,
        meta: &str,
        arena: &mut TextArena,
    ) -> std::result::Result<Option<Spliced>, Reject> {
        let id: [u8; ID_LEN];
        let failed_at: [String; 2];
        let mut values: SmallVec<[(&[String], Cow<str>); 8]> = SmallVec::new();
        match (looked, &self.remote) {
            (Some(Looked::Set(answer)), Some(remote)) => {
                values.push((remote.into.segments(), Cow::Borrowed(answer)));
            }
            (Some(Looked::Failed(why)), Some(_)) => {
                failed_at = [meta.to_owned(), "enrich_failed".to_owned()];
                values.push((&failed_at, Cow::Owned(json::quote(why))));
            }
            _ => {}
        }
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
