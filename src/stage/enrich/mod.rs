//! `enrich`: add and change fields — constants, processing time, deterministic ids,
//! joins against a reference table — and arbitrary jq transforms (jaq).
//!
//! Per event, in this order: `--http` (a lookup in an external service, see [`remote`]),
//! `--lookup`, `--jq`, `--set`, `--id`, `--timestamp` (a join then a reshape: the jq
//! program sees the joined fields; `--http` and `--jq` are two stages). All
//! field changes of one event are spliced into its text in one pass; every byte the
//! stage did not change is passed through as it came. The metadata field is never
//! changed by these flags and is invisible to the jq program; after jq it is re-attached
//! to every output, and when one input gives several outputs each is stamped with
//! `"split":{"index":i,"count":n}` inside the metadata field.
//!
//! Files, one concern each: `args` (flags), `config` (what to do, and the edit of one
//! event), `lookup` (`--lookup`), `remote` (`--http`: calls, cache, breaker,
//! concurrency), `reshape` (`--jq`), `id` (`--id`), `splice` (new values into the text,
//! one buffer per batch).

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::{Batch, Reject};
use crate::exit::Result;
use crate::json;
use crate::stage::workers::{self, Worked};
use crate::stage::{Ctx, Ended, Kind, Stage};

use remote::Looked;
use reshape::Reshaped;

mod args;
mod config;
mod id;
mod lookup;
pub mod remote;
mod reshape;
mod splice;

pub use args::{Args, SetField};
pub use config::Config;
pub use id::write_canonical;
pub use splice::TextArena;

/// The stage: enriches up to `config.workers` batches at once, order kept.
pub async fn run(
    config: Arc<Config>,
    input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
) -> Result<Ended> {
    if config.remote.is_some() {
        return run_looking_up(config, input, output, ctx).await;
    }
    let meta = ctx.meta_field.clone();
    let workers = config.workers;
    let shutdown = ctx.shutdown.clone();
    let indexed = ctx.keep_index;
    // Only jq makes enrich wait (on its helper processes). A program on the fast path
    // waits only for the few events it leaves to jaq, and then hands its thread's other
    // tasks on first (see `Config::run_jq`).
    let runs = match &config.jq {
        Some(jq) if !jq.is_fast() => workers::Runs::Blocking,
        _ => workers::Runs::OnRuntime,
    };
    workers::map_ordered(
        "enrich",
        input,
        output,
        &ctx,
        workers,
        runs,
        move |mut batch| {
            let mut jq = config
                .run_jq(&mut batch.events, &meta, &shutdown)
                .map(Vec::into_iter);
            let n = batch.len();
            let each = (0..n).map(|_| Ok((jq.as_mut().and_then(Iterator::next).flatten(), None)));
            edit(&config, batch, each, &meta, indexed)
        },
    )
    .await
}

/// Events taken in while lookups are out (whole batches, at least one): enough that
/// the limit on calls, not this one, bounds the work — four times the most calls that
/// may be out, and at least several read batches (a 256 KiB batch holds some 3,000 small
/// events): with room for one batch only, the thousands of cache hits of the next batch
/// waited for the few calls of this one (1-2 ms each) before theirs could start. Memory
/// stays bounded: 16 k events of 300 bytes are 5 MiB.
const LOOKUP_WINDOW: usize = 16 * 1024;

/// The stage with `--http`: each batch's lookups made (many at once, across batches),
/// then its events edited as without; output order kept.
async fn run_looking_up(
    config: Arc<Config>,
    input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
) -> Result<Ended> {
    let remote = config.remote.clone().expect("a lookup");
    let counts = Arc::new(remote::Counts::new(&ctx.tally));
    if remote.caches() {
        counts.cache_on();
    }
    let max_events = LOOKUP_WINDOW.max(4 * remote.limiter.ceiling());
    let (meta, shutdown, indexed) = (ctx.meta_field.clone(), ctx.shutdown.clone(), ctx.keep_index);
    workers::map_ordered_async(
        "enrich",
        input,
        output,
        &ctx,
        max_events,
        move |mut batch| {
            let (config, remote, counts) = (config.clone(), remote.clone(), counts.clone());
            let (meta, shutdown) = (meta.clone(), shutdown.clone());
            async move {
                let looked = remote
                    .look_up(&mut batch.events, &meta, &counts, &shutdown)
                    .await;
                // Editing a batch of thousands of events holds a thread for a millisecond
                // or more: the answers of other batches' calls are read meanwhile, so a
                // call's round trip (which `--concurrency auto` goes by) is the service's,
                // not this work's.
                workers::off_runtime(|| {
                    let each = looked.into_iter().map(|l| l.map(|l| (None, Some(l))));
                    edit(&config, batch, each, &meta, indexed)
                })
            }
        },
    )
    .await
}

/// Edits every event of `batch` with what its jq run or lookup gave it (`each`, in the
/// events' order; a reject where the lookup failed): the events kept, with their new texts
/// handed out, and the rejects.
fn edit(
    config: &Config,
    batch: Batch,
    each: impl Iterator<Item = std::result::Result<(Option<Reshaped>, Option<Looked>), Reject>>,
    meta: &str,
    indexed: bool,
) -> Worked {
    let now = json::quote(&crate::human::timestamp_now());
    let mut kept = Vec::with_capacity(batch.len());
    let mut rejects = Vec::new();
    let growth = config.growth(&now);
    let bytes: usize = batch.events.iter().map(|e| e.bytes().len() + growth).sum();
    let mut arena = TextArena::with_capacity(bytes, batch.len(), indexed);
    for (event, extra) in batch.events.into_iter().zip(each) {
        let applied = match extra {
            Ok((jq, looked)) => config.apply(
                event,
                jq,
                looked.as_ref(),
                &now,
                meta,
                &mut kept,
                &mut arena,
            ),
            Err(reject) => Err((event, reject)),
        };
        if let Err(rejected) = applied {
            rejects.push(rejected);
        }
    }
    arena.hand_out(&mut kept);
    let mut batch = Batch::new(batch.source, kept);
    batch.pack();
    Worked { batch, rejects }
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn kind(&self) -> Kind {
        Kind::Filter
    }

    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(run(Arc::new(*self), input, output, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::args::parse_set;
    use super::id::is_canonical_scalar;
    use super::lookup::lookup_key;
    use super::*;
    use crate::event::Event;
    use crate::shutdown::Shutdown;

    #[test]
    fn canonical_sorts_keys_and_compacts() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"d":1,"c":2}], "a": "x"}"#).unwrap();
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":"x","b":[1,{"c":2,"d":1}]}"#);
    }

    /// Events enriched for a later stage that looks inside carry the index of their new
    /// text: persist reads it instead of scanning the text again. For a pipe, none.
    #[test]
    fn edited_events_keep_an_index_only_for_a_later_stage_in_process() {
        use clap::Parser as _;
        let args = Args::parse_from([
            "enrich",
            "--set",
            "env=\"prod\"",
            "--set",
            "a=[1,2]",
            "--timestamp",
            "at",
        ]);
        let config = Arc::new(Config::from_args(&args).unwrap());
        let run_with = |keep_index: bool| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
                let mut ctx = Ctx::new(
                    crate::dead_letter::DeadLetters::counting("_meta"),
                    Shutdown::new(),
                    "_meta",
                );
                ctx.keep_index = keep_index;
                let lines = [
                    r#"{"a":1,"b":"x","a":2}"#,
                    r#" { "env" : "dev" , "k" : [] } "#,
                ];
                let mut events: Vec<Event> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Event::from_json_text(l.to_string(), i as u64 + 1))
                    .collect();
                for e in &mut events {
                    e.decode().unwrap();
                }
                tx.send(Batch::new("test".into(), events)).await.unwrap();
                drop(tx);
                run(config.clone(), rx, out_tx, ctx).await.unwrap();
                out_rx.recv().await.unwrap()
            })
        };
        let indexed = run_with(true);
        assert_eq!(indexed.len(), 2);
        // Lookups go through the carried index (debug builds also check it against a scan).
        for mut e in indexed.events {
            assert!(e.is_decoded(), "indexed: {}", e.text());
            assert_eq!(e.field("env"), Some("\"prod\""));
            assert_eq!(e.field("a"), Some("[1,2]"));
            assert!(e.field("at").is_some_and(|t| t.starts_with('"')));
        }
        for e in &run_with(false).events {
            assert!(!e.is_decoded(), "not indexed for a pipe");
        }
    }

    #[test]
    fn set_values_must_be_json() {
        assert_eq!(parse_set("a.b= [1, 2]").unwrap().value, "[1,2]");
        assert!(parse_set("env=prod").unwrap_err().contains("quotes"));
    }

    #[test]
    fn canonical_scalars_match_serde_json() {
        for raw in ["\"abc\"", "12", "-3", "0", "123456789012345678"] {
            assert!(is_canonical_scalar(raw), "{raw}");
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(v.to_string(), raw);
        }
        for raw in [
            "\"a\\u0041\"",
            "-0",
            "1.0",
            "1e2",
            "true",
            "12345678901234567890",
        ] {
            assert!(!is_canonical_scalar(raw), "{raw}");
        }
    }

    #[test]
    fn join_keys() {
        assert_eq!(lookup_key("\"u1\""), "u1");
        assert_eq!(lookup_key("\"u\\u0031\""), "u1");
        assert_eq!(lookup_key("42"), "42");
    }
}
