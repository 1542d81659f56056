//! `ingest-http`: an HTTP ingest server that pushes back instead of falling over.
//!
//! `POST /events` takes one JSON object, a JSON array of objects, or an NDJSON body
//! (gzip allowed, with a cap on the inflated size). Every valid event gets the metadata
//! field `{"source":"http","received_at":…,"request_id":…,"remote_addr":…}` and goes
//! into the *hub*: a queue bounded both in events (`--queue-capacity`) and in bytes
//! (`--queue-bytes`). A request reserves room for all of its events before any is queued,
//! so it is taken whole or not at all; when there is no room within `--enqueue-timeout`
//! it gets 503 with `Retry-After`. The room is given back when the events have been
//! written (each event carries an [`Ack`] that fires then), so the hub measures what is
//! really in flight. Request bodies being read are bounded too (`--max-inflight-bytes`),
//! and past `--max-open-requests` new requests are shed at once with 503.
//!
//! `--ack written` answers only after the request's events have been written to stdout.
//! `GET /health`, `GET /ready` (503 above 80 % of the hub or while shutting down) and
//! `GET /metrics` (Prometheus text) serve operators.
//!
//! Files, one concern each: `args` (flags), `config`, `run` (bind, serve until shutdown,
//! forward the hub to the output, drain, account for what was lost), `server` (routes,
//! the POST handler step by step, reading bodies within their limits, answers, the
//! operator endpoint's checks), `body` (bodies into events), `room` (the in-flight
//! budget), `telemetry` (its Prometheus series).

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::event::Batch;
use crate::exit::Result;
use crate::stage::{Ctx, Ended, Kind, Stage};

mod args;
mod body;
mod config;
mod room;
mod run;
mod server;
mod telemetry;

pub use args::{AckMode, Args};
pub use config::Config;
pub use run::run;

impl Stage for Config {
    fn name(&self) -> &'static str {
        "ingest-http"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn run(
        self: Box<Self>,
        _input: mpsc::Receiver<Batch>,
        output: mpsc::Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            run(*self, output, ctx).await?;
            Ok(Ended::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::body::{inflate, split_events, Inflate, INFLATE_STEP};
    use super::room::NoRoom;
    use super::server::Answer;

    #[test]
    fn bodies_split_into_events_with_meta() {
        let meta = r#"{"source":"http"}"#;
        let ok = &mut |_: usize| Ok(());
        let p = split_events(
            r#"[{"a":1}, 2, {"b":"x"}]"#,
            false,
            1 << 20,
            "_meta",
            meta,
            ok,
        )
        .ok()
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!((p.errors[0].at, p.errors[0].kind), (1, "not_object"));
        assert_eq!(p.events[0].text(), r#"{"a":1,"_meta":{"source":"http"}}"#);
        let p = split_events(
            "{\"a\":1}\n\nnope\n{\"_meta\":5}\r\n",
            true,
            1 << 20,
            "_meta",
            meta,
            ok,
        )
        .ok()
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].text(), r#"{"_meta":{"source":"http"}}"#);
        assert_eq!(
            (p.errors[0].at, p.errors[0].event.line, p.errors[0].kind),
            (3, 3, "malformed_json")
        );
        assert!(split_events("nope", false, 1 << 20, "_meta", meta, ok).is_err());
        let mut counted = 0;
        let mut count = |n: usize| {
            counted = n;
            Err(Answer::busy("no"))
        };
        assert!(split_events(
            "{}\n\n{}\r\n {} \n",
            true,
            1 << 20,
            "_meta",
            meta,
            &mut count
        )
        .is_err());
        assert_eq!(counted, 3);
    }

    #[test]
    fn gzip_bombs_stop_at_the_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 64 << 10);
        let all = &mut |_: u64| Ok(());
        assert!(matches!(inflate(&gz, 1 << 20, all), Err(Inflate::TooLarge)));
        assert_eq!(
            inflate(&gz, 10 << 20, all).ok().map(|v| v.len()),
            Some(10 << 20)
        );
        // Room is asked before each step, never for more than what was inflated plus one.
        let mut most = 0;
        let mut track = |n: u64| {
            most = most.max(n);
            Ok(())
        };
        assert!(inflate(&gz, 10 << 20, &mut track).is_ok());
        assert!(
            most <= (10 << 20) * 5 / 4 + 2 * INFLATE_STEP as u64,
            "{most}"
        );
        let mut refuse = |n: u64| {
            if n > 1 << 20 {
                Err(NoRoom::Busy)
            } else {
                Ok(())
            }
        };
        assert!(matches!(
            inflate(&gz, 10 << 20, &mut refuse),
            Err(Inflate::NoRoom(NoRoom::Busy))
        ));
    }
}
