//! Counting once (#25): every stage counts into one tally, which the stand-alone summary,
//! `pipeline`'s summary and `/metrics` all read. These tests run real pipes and compare
//! what each of the three says.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::pipeline::{eventually, free_port, get};
use crate::util::*;

/// The numbers of the summary line (" in, ") that starts with `prefix`, in order ("20,000 events
/// in, 18,990 out, 1,010 rejected (dead letters in d.ndjson) · 0.2 s" → [20000, 18990,
/// 1010]); the time after "·" is left out.
fn numbers(summary: &str, prefix: &str) -> Vec<u64> {
    let line = summary
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(" in, "))
        .unwrap_or_else(|| panic!("no summary starting {prefix:?} in\n{summary}"));
    let counted = line[prefix.len()..].split(" · ").next().unwrap();
    counted
        .split(|c: char| !(c.is_ascii_digit() || c == ','))
        .map(|w| w.replace(',', ""))
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect()
}

/// The numbers of `pipeline`'s totals line ("pipeline: 20,000 events in, …").
fn totals(summary: &str) -> Vec<u64> {
    let line = summary
        .lines()
        .find(|l| l.starts_with("pipeline: ") && l.contains(" events in, "))
        .unwrap_or_else(|| panic!("no totals in\n{summary}"));
    numbers(line, "pipeline: ")
}

/// The value of one series in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// received, sent, rejected of `component` on /metrics.
fn component(text: &str, component: &str) -> Vec<u64> {
    ["received", "sent", "rejected"]
        .iter()
        .map(|what| {
            metric(
                text,
                &format!("component_{what}_events_total{{component=\"{component}\"}}"),
            )
        })
        .collect()
}

/// persist's outcome series on /metrics, in the summary's order.
fn persist_outcomes(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = ["inserted", "updated", "unchanged", "deleted", "superseded"]
        .iter()
        .map(|o| {
            metric(
                text,
                &format!("ndpipe_persist_rows_total{{component=\"persist\",outcome=\"{o}\"}}"),
            )
        })
        .collect();
    v.push(metric(
        text,
        "ndpipe_persist_rows_total{component=\"persist\",outcome=\"fenced\"}",
    ));
    v.push(metric(
        text,
        "ndpipe_persist_batches_total{component=\"persist\"}",
    ));
    v.push(metric(
        text,
        "ndpipe_persist_retries_total{component=\"persist\"}",
    ));
    v
}

/// `pipeline --metrics-listen` with `args` and `text`, its stdin and stdout piped.
pub(crate) fn serving_pipeline(
    dir: &Dir,
    port: u16,
    args: &[&str],
    text: &str,
) -> std::process::Child {
    Command::new(bin("pipeline"))
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .arg(text)
        .current_dir(dir.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// /metrics once two scrapes half a second apart read the same, and `settled` holds
/// (60 s at most).
fn settled_metrics(port: u16, settled: impl Fn(&str) -> bool) -> String {
    // The exporter prints labelled series in no fixed order.
    let counts = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .filter(|l| l.starts_with("component_") || l.starts_with("ndpipe_persist"))
            .map(str::to_owned)
            .collect()
    };
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = get(port, "/metrics").map(|(_, m)| m).unwrap_or_default();
        let same = !now.is_empty() && counts(&now) == counts(&last);
        last = now;
        if same && settled(&last) {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the counts did not settle:\n{last}"
        );
    }
}

/// `validate | persist` as a shell pipe, and as `pipeline` (with a `tee` between) scraped
/// at its end: the same events in, out and rejected in the shell's two summaries,
/// `pipeline`'s stage lines and /metrics; persist's breakdown, batches and retries the
/// same in `pipeline`'s line and on /metrics; tee, the reader and the writer on /metrics
/// too.
#[test]
fn the_shell_summaries_pipelines_summary_and_metrics_say_the_same() {
    let dir = Dir::new();
    let n = 20_000;
    gen_events(&dir, "ev.ndjson", n, &["--bad", "0.05", "--dups", "0.1"]);
    let validate = "validate --require id,type --type amount=number";
    let o = sh(
        &dir,
        &format!(
            "set -o pipefail; {} {} --dead-letter dead.sh ev.ndjson \
             | {} --sqlite sh.db --create-table --dead-letter dead.sh",
            bin("validate"),
            &validate["validate ".len()..],
            bin("persist"),
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    let shell = err(&o);
    let shell_validate = numbers(&shell, "validate: ");
    let shell_persist = numbers(&shell, "persist: ");
    assert_eq!(shell_validate[0], n);
    assert!(shell_validate[2] > 500, "{shell}");

    let port = free_port();
    let mut child = serving_pipeline(
        &dir,
        port,
        &["--dead-letter", "dead.pl"],
        &format!("{validate} | tee copy.pl | persist --sqlite pl.db --create-table"),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(dir.read("ev.ndjson").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let valid = shell_validate[1];
    let metrics = settled_metrics(port, |m| {
        let p = component(m, "persist");
        p[0] == valid && p[1] + p[2] == valid
    });
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let summary = err(&o);
    let pl_validate = numbers(&summary, "pipeline: validate: ");
    let pl_persist = numbers(&summary, "pipeline: persist: ");

    // validate: in, out, rejected.
    assert_eq!(pl_validate, shell_validate, "{summary}\n{shell}");
    assert_eq!(component(&metrics, "validate"), pl_validate, "{metrics}");
    // persist: in, out, rejected, wherever said.
    let in_out_rejected = |p: &[u64]| vec![p[0], p[1], p[7]];
    assert_eq!(
        in_out_rejected(&pl_persist),
        in_out_rejected(&shell_persist)
    );
    assert_eq!(
        component(&metrics, "persist"),
        in_out_rejected(&pl_persist),
        "{metrics}"
    );
    // Its breakdown and work (batching differs between two runs, not between two
    // readers of one run).
    let mut breakdown = pl_persist[2..7].to_vec();
    breakdown.extend(&pl_persist[8..11]);
    assert_eq!(persist_outcomes(&metrics), breakdown, "{metrics}");
    // tee, the NDJSON reader and the writer count too.
    assert_eq!(
        component(&metrics, "tee"),
        vec![valid, valid, 0],
        "{metrics}"
    );
    assert_eq!(component(&metrics, "reader"), vec![n, n, 0], "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "component_received_bytes_total{component=\"reader\"}"
        ),
        std::fs::metadata(dir.path("ev.ndjson")).unwrap().len(),
        "{metrics}"
    );
    assert!(
        metrics.contains("component_received_events_total{component=\"writer\"} 0"),
        "{metrics}"
    );
}

/// One run with rejects, drops (`--when-full drop-newest` in front of a stalled stdout)
/// and persist's outcomes: `pipeline`'s summary says what /metrics said at its end.
#[test]
fn drops_rejects_and_persist_outcomes_the_same_in_the_summary_and_on_metrics() {
    let dir = Dir::new();
    let n = 100_000;
    gen_events(&dir, "ev.ndjson", n, &["--bad", "0.05", "--dups", "0.1"]);
    let port = free_port();
    let mut child = serving_pipeline(
        &dir,
        port,
        &[
            "--when-full",
            "drop-newest",
            "--channel-capacity",
            "1000",
            "--dead-letter",
            "dead.ndjson",
        ],
        "validate --require id,type --type amount=number \
         | persist --sqlite pl.db --create-table --emit",
    );
    let mut stdin = child.stdin.take().unwrap();
    // Nobody reads stdout yet: persist stalls on it, and the channels in front drop.
    stdin.write_all(dir.read("ev.ndjson").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut all = String::new();
        stdout.read_to_string(&mut all).unwrap();
        all
    });
    let metrics = settled_metrics(port, |m| {
        let dropped = |c: &str| {
            metric(
                m,
                &format!("component_discarded_events_total{{component=\"{c}\"}}"),
            )
        };
        let (v, p) = (component(m, "validate"), component(m, "persist"));
        v[0] + dropped("validate") == n
            && p[0] + dropped("persist") == v[1]
            && component(m, "writer")[0] == p[1]
    });
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let written = reading.join().unwrap().lines().count() as u64;
    assert!(o.status.success(), "{}", err(&o));
    let summary = err(&o);

    let discarded = |c: &str| {
        metric(
            &metrics,
            &format!("component_discarded_events_total{{component=\"{c}\"}}"),
        )
    };
    let dropped = discarded("validate") + discarded("persist");
    assert!(dropped > 0, "nothing dropped: {metrics}");
    let v = numbers(&summary, "pipeline: validate: ");
    let p = numbers(&summary, "pipeline: persist: ");
    assert_eq!(component(&metrics, "validate"), v, "{summary}\n{metrics}");
    assert_eq!(
        component(&metrics, "persist"),
        vec![p[0], p[1], p[7]],
        "{summary}\n{metrics}"
    );
    let mut breakdown = p[2..7].to_vec();
    breakdown.extend(&p[8..11]);
    assert_eq!(
        persist_outcomes(&metrics),
        breakdown,
        "{summary}\n{metrics}"
    );
    assert!(v[2] > 0 && p[2] > 0, "rejects and inserts: {summary}");
    // The totals: in (what the source read), out (stored), rejected, dropped.
    assert_eq!(
        totals(&summary),
        vec![n, p[1], v[2] + p[7], dropped],
        "{summary}"
    );
    assert_eq!(written, p[1]);
    assert_eq!(
        values(&dir.read("dead.ndjson")).len() as u64,
        v[2] + p[7] + dropped
    );
}

/// A source counts what it consumed: ingest-http the events of the requests it took
/// (and the bytes of their bodies), a bad line as rejected, in `pipeline`'s summary and
/// on /metrics.
#[test]
fn ingest_http_counts_what_it_consumed() {
    let dir = Dir::new();
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(bin("pipeline"))
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--dead-letter", "dead.ndjson"])
        .arg(format!(
            "ingest-http --listen 127.0.0.1:{port} | validate --require id"
        ))
        .current_dir(dir.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the HTTP source listens", || get(port, "/health").is_some());
    let agent = crate::ingest_http::agent();
    let url = format!("http://127.0.0.1:{port}/events");
    let mut bodies: Vec<String> = (0..3)
        .map(|i| {
            (0..100)
                .map(|j| format!("{{\"id\":\"{i}-{j}\"}}\n"))
                .collect()
        })
        .collect();
    // A bad line is rejected, the good one beside it taken.
    bodies.push("{\"id\":\"x\"}\nnot json\n".into());
    for body in &bodies {
        let r =
            crate::ingest_http::post(&agent, &url, &[crate::ingest_http::NDJSON], body.as_bytes());
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let bytes: usize = bodies.iter().map(String::len).sum();
    let metrics = settled_metrics(metrics_port, |m| component(m, "validate")[0] == 301);
    assert_eq!(component(&metrics, "ingest-http"), vec![301, 301, 1]);
    assert_eq!(
        metric(
            &metrics,
            "component_received_bytes_total{component=\"ingest-http\"}"
        ),
        bytes as u64,
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 301);
    let summary = err(&o);
    assert_eq!(
        numbers(&summary, "pipeline: ingest-http: "),
        vec![301, 301, 1],
        "{summary}"
    );
}

/// ingest-kafka counts the messages it consumed, those it could not make events of as
/// rejected: in `pipeline`'s summary, in its own summary and on /metrics.
#[test]
fn ingest_kafka_counts_the_messages_it_consumed() {
    use crate::ingest_kafka::{topic_with_events, Broker};
    let dir = Dir::new();
    let broker = Broker::start();
    let (topic, _) = topic_with_events(&dir, &broker, "counted", 2, 2_000, &[]);
    {
        // Two payloads that are no JSON object: consumed, rejected.
        let p = broker.producer();
        for bad in [&b"not json"[..], b"[1,2]"] {
            crate::ingest_kafka::send(&p, &topic, Some(b"k"), Some(bad), None);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    }
    // Alone: its own summary.
    let o = sh(
        &dir,
        &format!(
            "{} --brokers {} --topic {topic} --exit-at-end --group alone-{} \
             --dead-letter dead.alone > alone.ndjson",
            bin("ingest-kafka"),
            broker.addr,
            std::process::id()
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        numbers(&err(&o), "ingest-kafka: "),
        vec![2_002, 2_000, 2],
        "{}",
        err(&o)
    );
    // In a pipeline: /metrics once it has consumed them all, then its summary line.
    let port = free_port();
    let mut child = serving_pipeline(
        &dir,
        port,
        &["--dead-letter", "dead.pl"],
        &format!(
            "ingest-kafka --brokers {} --topic {topic} --group piped-{} | validate --require id",
            broker.addr,
            std::process::id()
        ),
    );
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut all = String::new();
        stdout.read_to_string(&mut all).unwrap();
        all
    });
    let metrics = settled_metrics(port, |m| component(m, "validate")[1] == 2_000);
    assert_eq!(
        component(&metrics, "ingest-kafka"),
        vec![2_002, 2_000, 2],
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "component_received_bytes_total{component=\"ingest-kafka\"}"
        ) > 2_000 * 20,
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(reading.join().unwrap().lines().count(), 2_000);
    let summary = err(&o);
    assert_eq!(
        numbers(&summary, "pipeline: ingest-kafka: "),
        vec![2_002, 2_000, 2],
        "{summary}"
    );
}

/// The series of a scrape that belong to `component`, by name and label names (values
/// left out): `component_sent_events_total{component}`.
fn names(text: &str, component: &str) -> std::collections::BTreeSet<String> {
    let tag = format!("component=\"{component}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&tag))
        .map(|l| {
            let (name, rest) = l.split_once('{').unwrap();
            let labels: Vec<&str> = rest
                .split_once('}')
                .unwrap()
                .0
                .split(',')
                .map(|kv| kv.split_once('=').unwrap().0)
                .collect();
            format!("{name}{{{}}}", labels.join(","))
        })
        .collect()
}

/// `validate --metrics-listen A | persist --metrics-listen B` in the shell and the same
/// stages in `pipeline`: each command serves the series `pipeline` serves for its stage,
/// with the run's numbers.
#[test]
fn a_shell_commands_metrics_are_pipelines_names_and_numbers() {
    let dir = Dir::new();
    let n = 20_000;
    gen_events(&dir, "ev.ndjson", n, &["--bad", "0.05", "--dups", "0.1"]);
    let validate = "validate --require id,type --type amount=number";
    let (pv, pp) = (free_port(), free_port());
    let mut shell = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {v} {rules} --dead-letter dead.sh --metrics-listen 127.0.0.1:{pv} \
             | {p} --sqlite sh.db --create-table --dead-letter dead.sh --metrics-listen 127.0.0.1:{pp}",
            v = bin("validate"),
            rules = &validate["validate ".len()..],
            p = bin("persist"),
        ))
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(dir.read("ev.ndjson").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let shell_validate = settled_metrics(pv, |m| component(m, "validate")[0] == n);
    let valid = component(&shell_validate, "validate")[1];
    let shell_persist = settled_metrics(pp, |m| component(m, "persist")[0] == valid);
    for (port, ready) in [(pv, "validate"), (pp, "persist")] {
        let (code, body) = get(port, "/ready").unwrap();
        assert_eq!(code, 200, "{ready}: {body}");
        assert_eq!(get(port, "/health").unwrap().0, 200);
    }
    drop(stdin);
    let status = shell.wait().unwrap();
    let mut stderr = String::new();
    shell
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let summary_validate = numbers(&stderr, "validate: ");
    assert_eq!(component(&shell_validate, "validate"), summary_validate);
    let rows = persist_outcomes(&shell_persist);
    // inserted, updated, unchanged, deleted, superseded: every event stored has one.
    assert_eq!(rows[..5].iter().sum::<u64>(), valid, "{shell_persist}");

    let port = free_port();
    let mut child = serving_pipeline(
        &dir,
        port,
        &["--dead-letter", "dead.pl"],
        &format!("{validate} | persist --sqlite pl.db --create-table"),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(dir.read("ev.ndjson").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let pipeline = settled_metrics(port, |m| component(m, "persist")[0] == valid);
    drop(stdin);
    assert!(child.wait().unwrap().success());

    // The same names: what a command serves, pipeline serves for its stage.
    for (text, stage) in [(&shell_validate, "validate"), (&shell_persist, "persist")] {
        let alone = names(text, stage);
        let within = names(&pipeline, stage);
        assert!(alone.len() >= 4, "{alone:?}");
        let missing: Vec<_> = alone.difference(&within).collect();
        assert!(
            missing.is_empty(),
            "{stage}: {missing:?} not in pipeline's {within:?}"
        );
    }
    assert!(
        names(&shell_persist, "persist").contains("ndpipe_persist_rows_total{component,outcome}")
    );
    // And the same numbers: events, and rows by outcome (batching may differ).
    assert_eq!(
        component(&shell_validate, "validate"),
        component(&pipeline, "validate")
    );
    assert_eq!(
        component(&shell_persist, "persist"),
        component(&pipeline, "persist")
    );
    assert_eq!(
        persist_outcomes(&shell_persist)[..6],
        persist_outcomes(&pipeline)[..6]
    );
}
