//! `pipeline --explain`: the plan with every stage's effective settings, printed without
//! touching any input, database or broker.

use std::fmt::Write;
use std::time::Duration;

use crate::cli::Common;
use crate::human;
use crate::postgres::ConnectSpec;
use crate::stage::ingest_http::AckMode;
use crate::wire::relay::Bounds;

use super::plan::{Plan, Planned, Spec};

/// The explanation, one line per stage and channel; passwords and tokens masked
/// ([`crate::redact`]).
pub fn explain(plan: &Plan, common: &Common, bounds: &Bounds) -> String {
    crate::redact::text(&unmasked(plan, common, bounds)).into_owned()
}

fn unmasked(plan: &Plan, common: &Common, bounds: &Bounds) -> String {
    let mut out = String::new();
    let total = plan.sources.len() + plan.stages.len();
    let channel = format!(
        "  │ channel: {} events or {}, when full: {}",
        human::count(bounds.events as u64),
        bytes(bounds.bytes),
        bounds.when_full.as_str()
    );
    let _ = writeln!(out, "pipeline: {total} stages");
    let files = || {
        if plan.inputs.is_empty() {
            "stdin".to_owned()
        } else {
            plan.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if plan.sources.is_empty() {
        let _ = writeln!(out, "input: NDJSON from {}", files());
    } else if !plan.inputs.is_empty() {
        let _ = writeln!(out, "input: NDJSON from {}, into the same hub", files());
    }
    for p in &plan.sources {
        stage(&mut out, p, total);
    }
    for p in &plan.stages {
        let _ = writeln!(out, "{channel}");
        stage(&mut out, p, total);
    }
    let output = match plan.stages.last().map(|p| &p.spec) {
        Some(Spec::Persist(o)) if !o.emit => "none on stdout (persist stores the rows)",
        _ => "NDJSON on stdout",
    };
    let _ = writeln!(out, "output: {output}");
    let dead = match &common.dead_letter {
        Some(p) if p == "-" => "stderr".to_owned(),
        Some(p) => p.clone(),
        None => "none (rejects are counted; exit 65 if any)".to_owned(),
    };
    let _ = writeln!(out, "dead letters: {dead}");
    out
}

fn stage(out: &mut String, p: &Planned, total: usize) {
    let _ = writeln!(
        out,
        "{}/{total} {}",
        p.position,
        crate::redact::words(&p.words)
            .iter()
            .map(|w| quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut settings: Vec<String> = Vec::new();
    match &p.spec {
        Spec::IngestHttp(c) => {
            settings.push(format!("listen {}", c.listen));
            settings.push(format!(
                "queue {} events",
                human::count(u64::from(c.queue_capacity))
            ));
            settings.push(match c.ack {
                AckMode::Queued => "acknowledges: 202 once queued".to_owned(),
                AckMode::Written => {
                    "acknowledges: 200 once the last stage has handled every event".to_owned()
                }
            });
        }
        Spec::IngestKafka(c) => {
            settings.push(format!("brokers {}", c.brokers));
            settings.push(format!("topics {}", c.topics.join(",")));
            if let Some(g) = &c.group {
                settings.push(format!("group {g}"));
            }
            settings.push(match &c.offsets_from {
                Some(url) => format!(
                    "acknowledges: exactly once, offsets in {} of {} with the rows",
                    c.offsets_table,
                    target(url, c.connect_timeout)
                ),
                None => "acknowledges: offsets committed to Kafka once the last stage has \
                         handled the events (at least once)"
                    .to_owned(),
            });
        }
        Spec::Validate(c) => settings.push(format!("workers {}", c.workers)),
        Spec::Enrich(c) => settings.push(format!("workers {}", c.workers)),
        Spec::Tee(c) => settings.push(format!(
            "{} {}",
            if c.append { "appends to" } else { "writes" },
            c.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Spec::Persist(o) => {
            // As persist resolves it: the URL, else the PG variables, else SQLite.
            let db =
                match ConnectSpec::from_env(o.database_url.as_deref(), o.connect_timeout, "ndpipe")
                {
                    Ok(Some(spec)) => format!("PostgreSQL {}", spec.display()),
                    Err(e) if o.database_url.is_some() => format!("(invalid: {e})"),
                    _ => format!("SQLite {}", o.sqlite.display()),
                };
            settings.push(format!("database {db}, table {}", o.table));
            settings.push(format!(
                "batches of {} rows, linger {}, {} connection(s)",
                human::count(u64::from(o.batch_size)),
                human::elapsed(o.linger),
                o.connections
            ));
            settings.push(if o.emit {
                "passes committed events on (--emit)".to_owned()
            } else {
                "passes nothing on".to_owned()
            });
        }
    }
    if let Some(d) = &p.common.dead_letter {
        settings.push(format!("dead letters {d}"));
    }
    for s in settings {
        let _ = writeln!(out, "      {s}");
    }
}

/// The PostgreSQL server a URL names, for the explanation.
fn target(url: &str, timeout: Duration) -> String {
    match ConnectSpec::from_url(url, timeout, "ndpipe") {
        Ok(spec) => format!("PostgreSQL {}", spec.display()),
        Err(e) => format!("(invalid: {e})"),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// A word as the shell would need it written.
fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}
