//! `pipeline --explain`: the plan with every stage's effective settings, printed without
//! touching any input, database or broker.

use std::fmt::Write;

use crate::cli::Common;
use crate::human;
use crate::wire::relay::Bounds;

use super::plan::{Plan, Planned};

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
    let output = match plan.stages.last() {
        Some(p) if p.config.ends_output() => {
            format!("none on stdout ({} stores the rows)", p.command.name)
        }
        _ => "NDJSON on stdout".to_owned(),
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
    let mut settings = p.config.explain();
    if let Some(d) = &p.common.dead_letter {
        settings.push(format!("dead letters {d}"));
    }
    for s in settings {
        let _ = writeln!(out, "      {s}");
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
