//! The view: from the last two scrapes, one row per stage and a few lines for persist,
//! Kafka lag and enrich's breakers, cut to the terminal's width. Rates are the change
//! between the two scrapes; the first frame has none yet (`–`).

use crate::human;

use super::sample::Sample;

/// What is known besides the scrapes.
pub struct Frame<'a> {
    /// Where the figures come from (`127.0.0.1:9598`, or `this pipeline`).
    pub source: &'a str,
    pub width: usize,
    pub colour: bool,
    /// Why there is no new scrape, if there is none.
    pub trouble: Option<&'a str>,
}

/// The lines of one frame.
pub fn draw(frame: &Frame<'_>, before: Option<&Sample>, now: &Sample) -> Vec<String> {
    let mut lines = Vec::new();
    let bold = |s: String| {
        if frame.colour {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s
        }
    };
    lines.push(format!(
        "ndpipe top · {} · {} · q quits",
        frame.source,
        jiff::Zoned::now().strftime("%H:%M:%S")
    ));
    if let Some(why) = frame.trouble {
        lines.push(format!("no new figures: {why}"));
    }
    lines.push(String::new());
    let header = format!(
        "{:<16} {:>11} {:>11} {:>10} {:>9} {:>15} {:>9} {:>7}",
        "STAGE", "IN/s", "OUT/s", "REJECTED", "DROPPED", "CHANNEL", "BATCH", "WORKERS"
    );
    lines.push(bold(header));
    let per_second = |name: &str, c: &str| -> String {
        let Some(before) = before else {
            return "–".into();
        };
        let secs = now.at.duration_since(before.at).as_secs_f64();
        let d = now.get(name, &[("component", c)]) - before.get(name, &[("component", c)]);
        if secs <= 0.0 {
            "–".into()
        } else {
            human::count((d.max(0.0) / secs).round() as u64)
        }
    };
    for c in &now.components {
        let total = |name: &str| human::count(now.get(name, &[("component", c)]) as u64);
        let channel = if now.has("buffer_events", &[("component", c)]) {
            let held = now.get("buffer_events", &[("component", c)]);
            let max = now.get("buffer_max_event_size", &[("component", c)]);
            let share = if max > 0.0 { 100.0 * held / max } else { 0.0 };
            format!("{} {share:>3.0}%", human::count(held as u64))
        } else {
            "".into()
        };
        let batch = mean_ms(before, now, "ndpipe_batch_duration_seconds", c);
        let workers = match now.get("ndpipe_stage_workers", &[("component", c)]) {
            w if w > 0.0 => format!("{w}"),
            _ => String::new(),
        };
        lines.push(format!(
            "{:<16} {:>11} {:>11} {:>10} {:>9} {:>15} {:>9} {:>7}",
            clip(c, 16),
            per_second("component_received_events_total", c),
            per_second("component_sent_events_total", c),
            total("component_rejected_events_total"),
            total("component_discarded_events_total"),
            channel,
            batch,
            workers
        ));
    }
    lines.push(String::new());
    persist_lines(&mut lines, before, now, &bold);
    kafka_lines(&mut lines, now, &bold);
    breaker_lines(&mut lines, now, &bold);
    lines
        .into_iter()
        .map(|l| clip_visible(&l, frame.width))
        .collect()
}

/// The mean of a histogram over the last interval, in ms (`–` without one, or no
/// observation in it).
fn mean_ms(before: Option<&Sample>, now: &Sample, histogram: &str, c: &str) -> String {
    let (sum, count) = (format!("{histogram}_sum"), format!("{histogram}_count"));
    let want = [("component", c)];
    let Some(before) = before else {
        return "–".into();
    };
    let n = now.get(&count, &want) - before.get(&count, &want);
    if n <= 0.0 {
        return "–".into();
    }
    let s = now.get(&sum, &want) - before.get(&sum, &want);
    format!("{:.1} ms", 1000.0 * s / n)
}

fn persist_lines(
    lines: &mut Vec<String>,
    before: Option<&Sample>,
    now: &Sample,
    bold: &dyn Fn(String) -> String,
) {
    let rows = "ndpipe_persist_rows_total";
    let mut sinks: Vec<&str> = Vec::new();
    for (labels, _) in now.matching(rows, &[]) {
        if let Some((_, c)) = labels.iter().find(|(k, _)| k == "component") {
            if !sinks.contains(&c.as_str()) {
                sinks.push(c);
            }
        }
    }
    for c in sinks {
        let outcome = |o: &str| now.get(rows, &[("component", c), ("outcome", o)]) as u64;
        let commits = |s: &Sample| s.get("ndpipe_persist_batches_total", &[("component", c)]);
        let rate = before.map(|b| {
            let secs = now.at.duration_since(b.at).as_secs_f64().max(1e-9);
            (commits(now) - commits(b)).max(0.0) / secs
        });
        let database = now
            .matching("ndpipe_persist_database_up", &[])
            .map(|(l, v)| {
                let name = l.iter().find(|(k, _)| k == "database").map(|(_, v)| v);
                let state = if v > 0.0 {
                    "answers"
                } else {
                    "DOES NOT ANSWER"
                };
                format!(" · {} {state}", name.map_or("", |n| n.as_str()))
            })
            .collect::<String>();
        lines.push(bold(format!("{c}:")));
        lines.push(format!(
            "  rows {} inserted · {} updated · {} unchanged · {} deleted · {} fenced",
            human::count(outcome("inserted")),
            human::count(outcome("updated")),
            human::count(outcome("unchanged")),
            human::count(outcome("deleted")),
            human::count(outcome("fenced")),
        ));
        lines.push(format!(
            "  commits {} ({}/s) · {} per commit · {} retries{database}",
            human::count(commits(now) as u64),
            rate.map_or("–".into(), |r| format!("{r:.1}")),
            mean_ms(before, now, "ndpipe_persist_commit_duration_seconds", c),
            human::count(now.get("ndpipe_persist_retries_total", &[("component", c)]) as u64),
        ));
    }
}

fn kafka_lines(lines: &mut Vec<String>, now: &Sample, bold: &dyn Fn(String) -> String) {
    let lag: Vec<(String, f64)> = now
        .matching("kafka_consumer_lag", &[])
        .map(|(l, v)| {
            let get = |k: &str| l.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v);
            (format!("{}/{}", get("topic_id"), get("partition_id")), v)
        })
        .collect();
    if lag.is_empty() {
        return;
    }
    let total: f64 = lag.iter().map(|(_, v)| v).sum();
    lines.push(bold(format!(
        "kafka lag: {} messages over {} partitions · {} rebalances",
        human::count(total as u64),
        lag.len(),
        human::count(now.get("ndpipe_kafka_rebalances_total", &[]) as u64)
    )));
    let parts: Vec<String> = lag
        .iter()
        .map(|(p, v)| format!("{p} {}", human::count(*v as u64)))
        .collect();
    lines.push(format!("  {}", parts.join(" · ")));
}

fn breaker_lines(lines: &mut Vec<String>, now: &Sample, bold: &dyn Fn(String) -> String) {
    let states: Vec<String> = now
        .matching("ndpipe_enrich_breaker_state", &[])
        .map(|(l, v)| {
            let service = l
                .iter()
                .find(|(k, _)| k == "service")
                .map_or("", |(_, v)| v);
            let state = match v as u8 {
                0 => "closed",
                1 => "OPEN",
                _ => "half-open",
            };
            format!("{service} {state}")
        })
        .collect();
    if !states.is_empty() {
        lines.push(bold("enrich breakers:".into()));
        lines.push(format!("  {}", states.join(" · ")));
    }
}

fn clip(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// `line` cut to `width` visible characters, escape sequences kept whole.
fn clip_visible(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut shown, mut escape) = (0, false);
    for ch in line.chars() {
        if ch == '\x1b' {
            escape = true;
        }
        if escape {
            out.push(ch);
            escape = !ch.is_ascii_alphabetic();
            continue;
        }
        if shown < width {
            out.push(ch);
            shown += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn rates_between_two_scrapes_and_a_plain_frame() {
        let t = Instant::now();
        let a = Sample::parse(
            "component_received_events_total{component=\"validate\"} 1000\n\
             component_sent_events_total{component=\"validate\"} 900\n\
             ndpipe_persist_rows_total{component=\"persist\",outcome=\"inserted\"} 500\n\
             ndpipe_persist_batches_total{component=\"persist\"} 5\n",
            t,
        );
        let b = Sample::parse(
            "component_received_events_total{component=\"validate\"} 3000\n\
             component_sent_events_total{component=\"validate\"} 2900\n\
             component_rejected_events_total{component=\"validate\"} 100\n\
             buffer_events{component=\"validate\"} 50\n\
             buffer_max_event_size{component=\"validate\"} 100\n\
             ndpipe_persist_rows_total{component=\"persist\",outcome=\"inserted\"} 2500\n\
             ndpipe_persist_batches_total{component=\"persist\"} 7\n",
            t + Duration::from_secs(2),
        );
        let frame = Frame {
            source: "here",
            width: 200,
            colour: false,
            trouble: None,
        };
        let lines = draw(&frame, Some(&a), &b);
        let row = lines.iter().find(|l| l.starts_with("validate")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..7],
            ["validate", "1,000", "1,000", "100", "0", "50", "50%"]
        );
        assert!(lines.iter().any(|l| l.contains("rows 2,500 inserted")));
        assert!(lines.iter().any(|l| l.contains("commits 7 (1.0/s)")));
        assert!(lines.iter().all(|l| !l.contains('\x1b')), "no colour");
        let narrow = Frame { width: 20, ..frame };
        assert!(draw(&narrow, None, &b)
            .iter()
            .all(|l| l.chars().count() <= 20));
    }
}
