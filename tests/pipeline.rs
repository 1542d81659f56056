//! `pipeline`: the shell pipe's text run in one process. The same input gives the same
//! stdout, dead letters and rows as the shell pipe; bad texts are refused before anything
//! runs; full channels block or drop as told.

use serde_json::Value;

use crate::persist::{pg_rows, sqlite_rows};
use crate::util::*;

const VALIDATE: &str = "validate --require id,type --type amount=number";
const ENRICH: &str = r#"enrich --set 'env="prod"' --id key --id-from id"#;

/// The lines of a file, sorted: stages of a shell pipe append dead letters to one file
/// concurrently, so only the set of records (and each stage's order) is fixed.
fn sorted_lines(dir: &Dir, name: &str) -> Vec<String> {
    let mut l: Vec<String> = dir.read(name).lines().map(str::to_owned).collect();
    l.sort();
    l
}

/// `validate | enrich | tee | persist` as a shell pipe and as `pipeline`, into the tables
/// `persist_to` names: same tee copy, same dead letters, same rows.
fn shell_and_pipeline(dir: &Dir, persist_shell: &str, persist_pipeline: &str) {
    gen_events(
        dir,
        "ev.ndjson",
        20_000,
        &["--bad", "0.05", "--dups", "0.1"],
    );
    let (v, e, p) = (bin("validate"), bin("enrich"), bin("persist"));
    let o = sh(
        dir,
        &format!(
            "set -o pipefail; {v} {} --dead-letter dead.sh ev.ndjson \
             | {e} {} --dead-letter dead.sh \
             | tee seen.sh \
             | {p} {persist_shell} --dead-letter dead.sh -q",
            &VALIDATE["validate".len()..],
            &ENRICH["enrich".len()..],
        ),
    );
    assert!(o.status.success(), "{}", err(&o));

    let text = format!("{VALIDATE} | {ENRICH} | tee seen.pl | persist {persist_pipeline}");
    let o = dir
        .cmd("pipeline")
        .args(["--dead-letter", "dead.pl", &text, "ev.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(o.stdout.is_empty(), "persist last: nothing on stdout");
    // One summary line per stage, then the totals.
    let summary = err(&o);
    for stage in ["validate", "enrich", "tee", "persist"] {
        assert!(
            summary.contains(&format!("pipeline: {stage}: ")),
            "{stage}: {summary}"
        );
    }
    assert!(summary.contains("pipeline: 20,000 events in"), "{summary}");

    assert_eq!(dir.read("seen.sh"), dir.read("seen.pl"), "the tee copies");
    assert_eq!(sorted_lines(dir, "dead.sh"), sorted_lines(dir, "dead.pl"));
    assert!(dir.read("dead.pl").lines().count() > 500);
}

#[test]
fn the_same_pipe_in_the_shell_and_in_pipeline_sqlite() {
    let dir = Dir::new();
    shell_and_pipeline(
        &dir,
        "--sqlite sh.db --create-table",
        "--sqlite pl.db --create-table",
    );
    let (a, b) = (
        sqlite_rows(&dir.path("sh.db"), "events"),
        sqlite_rows(&dir.path("pl.db"), "events"),
    );
    assert!(a.len() > 15_000);
    assert_eq!(a, b);
}

#[test]
fn the_same_pipe_in_the_shell_and_in_pipeline_postgres() {
    let dir = Dir::new();
    let (shell, pipeline) = (Pg::new("pl_shell"), Pg::new("pl_pipeline"));
    shell_and_pipeline(
        &dir,
        &format!("--database-url '{}' --create-table", shell.url()),
        &format!("--database-url '{}' --create-table", pipeline.url()),
    );
    let (a, b) = (pg_rows(&shell, "events"), pg_rows(&pipeline, "events"));
    assert!(a.len() > 15_000);
    assert_eq!(a, b);
}

/// Without a sink, stdout is byte for byte the shell pipe's, from a file or from stdin.
#[test]
fn stdout_is_the_shell_pipes_byte_for_byte() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 30_000, &["--bad", "0.05"]);
    let o = sh(
        &dir,
        &format!(
            "{} {} --dead-letter d1 ev.ndjson | {} {} --dead-letter d1",
            bin("validate"),
            &VALIDATE["validate".len()..],
            bin("enrich"),
            &ENRICH["enrich".len()..],
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    let text = format!("{VALIDATE} | {ENRICH}");
    let from_file = dir
        .cmd("pipeline")
        .args(["--dead-letter", "d2", &text, "ev.ndjson"])
        .output()
        .unwrap();
    assert!(from_file.status.success(), "{}", err(&from_file));
    assert_eq!(from_file.stdout, o.stdout);
    assert_eq!(sorted_lines(&dir, "d1"), sorted_lines(&dir, "d2"));

    let from_stdin = dir
        .cmd("pipeline")
        .args(["-q", "--dead-letter", "d3", &text])
        .pipe_stdin(dir.path("ev.ndjson"))
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(from_stdin.stdout, o.stdout);
    // Without a dead-letter output, rejects make exit 65, as in the shell.
    let o = dir
        .cmd("pipeline")
        .args(["-q", &text, "ev.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65));
}

/// A text kept in a file: comments, continuations, one stage per line.
#[test]
fn a_pipe_file_with_comments_and_continuations() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 2_000, &["--bad", "0.05"]);
    dir.create(
        "etl.pipe",
        format!(
            "# checks first\n\
             {VALIDATE} \\\n    --dead-letter rejects.ndjson   # its own dead letters\n\
             | {ENRICH}\n\
             \n\
             tee copy.ndjson\n"
        ),
    );
    let o = dir
        .cmd("pipeline")
        .args(["-q", "--file", "etl.pipe", "ev.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let inline = dir
        .cmd("pipeline")
        .args([
            "-q",
            "--dead-letter",
            "inline-dead.ndjson",
            &format!("{VALIDATE} | {ENRICH}"),
            "ev.ndjson",
        ])
        .output()
        .unwrap();
    assert_eq!(o.stdout, inline.stdout);
    assert_eq!(dir.read("copy.ndjson").as_bytes(), &o.stdout[..]);
    assert_eq!(
        dir.read("rejects.ndjson"),
        dir.read("inline-dead.ndjson"),
        "the stage's own --dead-letter"
    );

    let o = dir
        .cmd("pipeline")
        .args(["--file", "missing.pipe"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", err(&o));
    assert!(err(&o).contains("missing.pipe"), "{}", err(&o));
}

/// Every bad text exits 64 with one line naming the stage and the problem, before
/// anything is read or written: no tee file, no SQLite file.
#[test]
fn bad_pipe_texts_exit_64_naming_the_stage() {
    let dir = Dir::new();
    dir.create("ev.ndjson", "{\"id\":\"a\"}\n");
    for (text, says) in [
        ("validate | enrch --id k", "stage 2 of 2: unknown command \"enrch\"; known: ingest-http, ingest-kafka, validate, enrich, persist, tee"),
        ("tee t.ndjson | validate --frobnicate", "stage 2 of 2 (validate): unexpected argument '--frobnicate' found"),
        ("tee t.ndjson | validate | ingest-kafka --brokers b --topic t", "stage 3 of 3 (ingest-kafka): a source must come first"),
        ("tee t.ndjson | persist --create-table | validate", "stage 2 of 3 (persist): persist passes nothing on without --emit"),
        ("", "the pipe text is empty"),
        ("  # only a comment\n", "the pipe text is empty"),
        ("tee t.ndjson | validate --jq '.a", "unbalanced `'`"),
        ("tee t.ndjson | | persist", "empty stage"),
        ("tee t.ndjson | validate & enrich", "`&` joins sources only"),
        ("tee t.ndjson | validate --quiet", "stage 2 of 2 (validate): --quiet applies to the whole pipeline"),
        ("tee t.ndjson | validate ev.ndjson", "input files go after the pipe text"),
        ("tee t.ndjson | persist --show", "--show reads a table"),
        ("tee t.ndjson | validate --schema nope.json", "stage 2 of 2 (validate)"),
        ("tee t.ndjson | enrich --id k --id-from $NDPIPE_TEST_UNSET", "$NDPIPE_TEST_UNSET is not set"),
    ] {
        let o = dir
            .cmd("pipeline")
            .args([text, "ev.ndjson"])
            .output()
            .unwrap();
        let code = if text.contains("nope.json") { 66 } else { 64 };
        assert_eq!(o.status.code(), Some(code), "{text}: {}", err(&o));
        assert!(err(&o).contains(says), "{text}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "{text}: {}", err(&o));
        assert!(o.stdout.is_empty());
        assert!(!dir.path("t.ndjson").exists(), "{text}: tee ran");
        assert!(!dir.path("ndpipe.db").exists(), "{text}: persist ran");
    }
}

/// `pipeline 'validate --help'` is validate's own help: the flags are the command's.
#[test]
fn a_stages_help_is_its_commands_help() {
    let dir = Dir::new();
    let o = dir
        .cmd("pipeline")
        .arg("tee x | validate --help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let own = dir.cmd("validate").arg("--help").output().unwrap();
    assert_eq!(out(&o), out(&own));
}

/// `--explain` shows workers, channels, the database and acknowledgements, and touches
/// nothing: the database named does not exist, nor does the input file.
#[test]
fn explain_prints_the_plan_and_touches_nothing() {
    let dir = Dir::new();
    let o = dir
        .cmd("pipeline")
        .args([
            "--explain",
            "--channel-capacity",
            "500",
            "--when-full",
            "drop-oldest",
            "ingest-kafka --brokers 127.0.0.1:1 --topic t --offsets-name n \
             --offsets-from postgres://app@127.0.0.1:1/db \
             | validate --workers 3 --require id \
             | tee copy.ndjson \
             | persist --database-url postgres://app@127.0.0.1:1/db --batch-size 700",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    for says in [
        "pipeline: 4 stages",
        "1/4 ingest-kafka --brokers 127.0.0.1:1",
        "exactly once, offsets in",
        "workers 3",
        "channel: 500 events or 4 MiB, when full: drop-oldest",
        "writes copy.ndjson",
        "database PostgreSQL app@127.0.0.1:1/db, table events",
        "batches of 700 rows",
        "output: none on stdout",
    ] {
        assert!(text.contains(says), "{says:?} in:\n{text}");
    }
    assert!(!dir.path("copy.ndjson").exists());
}

/// `| head` ends a pipeline quietly, as it ends a shell pipe.
#[test]
fn head_ends_a_pipeline_quietly() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 100_000, &[]);
    let o = sh(
        &dir,
        &format!(
            "set -o pipefail; {} '{VALIDATE} | tee copy.ndjson' ev.ndjson | head -3",
            bin("pipeline")
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 3);
    assert_eq!(err(&o), "");
}

/// Events of `ev.ndjson` by their `seq`, in order of appearance in `text`.
fn seqs(text: &str) -> Vec<u64> {
    values(text)
        .iter()
        .map(|v| v["meta"]["seq"].as_u64().unwrap())
        .collect()
}

/// A stdout that is not read for two seconds fills every channel. `drop-newest` keeps the
/// first events, `drop-oldest` the last; every event is either written or a dead letter
/// of kind `dropped`, and the summary counts the dropped ones.
#[test]
fn full_channels_drop_as_told_and_count_it() {
    let dir = Dir::new();
    let n = 200_000;
    gen_events(&dir, "ev.ndjson", n, &[]);
    for policy in ["drop-newest", "drop-oldest"] {
        let _ = std::fs::remove_file(dir.path("dropped.ndjson"));
        let o = sh(
            &dir,
            &format!(
                "{} --progress --when-full {policy} --channel-capacity 1000 \
                 --dead-letter dropped.ndjson 'validate --require id' ev.ndjson \
                 | (sleep 2; cat > out.ndjson)",
                bin("pipeline")
            ),
        );
        assert!(o.status.success(), "{}", err(&o));
        let written = seqs(&dir.read("out.ndjson"));
        let dropped: Vec<Value> = values(&dir.read("dropped.ndjson"));
        assert!(!dropped.is_empty(), "{policy}: nothing dropped");
        assert!(dropped.iter().all(|d| d["kind"] == "dropped"));
        assert_eq!(written.len() + dropped.len(), n as usize, "{policy}");
        // What was written is in input order, without duplicates.
        assert!(written.windows(2).all(|w| w[0] < w[1]), "{policy}: order");
        if policy == "drop-newest" {
            assert_eq!(written[0], 0);
        } else {
            assert_eq!(*written.last().unwrap(), n - 1);
        }
        assert!(
            err(&o).contains(&format!(
                "{} dropped by --when-full",
                thousands(dropped.len())
            )),
            "{}",
            err(&o)
        );
    }
}

/// The default, `block`, loses nothing however slow the reader.
#[test]
fn a_blocked_channel_waits_and_loses_nothing() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 100_000, &[]);
    let o = sh(
        &dir,
        &format!(
            "{} --channel-capacity 100 'validate --require id | tee copy.ndjson' ev.ndjson \
             | (sleep 1; cat > out.ndjson)",
            bin("pipeline")
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(dir.read("out.ndjson"), dir.read("ev.ndjson"));
    assert_eq!(dir.read("copy.ndjson"), dir.read("ev.ndjson"));
}

/// `1234567` as the summaries write it: `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Kafka → PostgreSQL exactly once, in one process: `pipeline` SIGKILLed three times
/// mid-stream and restarted each time, then run to the end of the topic. Rows = distinct
/// keys, each holding its key's last event, and the committed offsets add up to the
/// messages produced.
#[test]
fn kafka_to_postgres_exactly_once_through_three_kill_9s() {
    use crate::ingest_kafka::{assert_exactly_once, rows, topic_with_events, wait_until, Broker};
    use std::time::Duration;
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("pl_eo");
    let n = 100_000;
    let (topic, text) = topic_with_events(&dir, &broker, "pl-eo", 3, n, &["--dups", "0.05"]);
    let pipe = |exit_at_end: bool| {
        format!(
            "ingest-kafka --brokers {b} --topic {topic} --offsets-name eo \
               --offsets-from '{url}' {end} \
             | validate --require id \
             | persist --database-url '{url}' --create-table --version-field meta.seq \
               --batch-size 2000 --linger 20ms",
            b = broker.addr,
            url = pg.url(),
            end = if exit_at_end { "--exit-at-end" } else { "" },
        )
    };
    for at_least in [10_000, 35_000, 60_000] {
        let mut child = std::process::Command::new(bin("pipeline"))
            .args(["-q", "--channel-capacity", "2000", &pipe(false)])
            .current_dir(dir.root())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(
            &format!("{at_least} rows"),
            Duration::from_secs(120),
            || rows(&pg) >= at_least,
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let o = dir
        .cmd("pipeline")
        .args(["-q", &pipe(true)])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_exactly_once(&pg, "eo", &text, n, None);
}

/// Without `--offsets-from`, offsets go to Kafka only for events the sink has committed:
/// a kill -9 may replay, never lose.
#[test]
fn kafka_to_postgres_at_least_once_loses_nothing_on_kill_9() {
    use crate::ingest_kafka::{rows, topic_with_events, wait_until, Broker};
    use std::time::Duration;
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("pl_alo");
    let n = 60_000;
    let (topic, text) = topic_with_events(&dir, &broker, "pl-alo", 3, n, &[]);
    let group = format!("pl-alo-{}", std::process::id());
    let pipe = |exit_at_end: bool| {
        format!(
            "ingest-kafka --brokers {b} --topic {topic} --group {group} --offset stored {end} \
             | persist --database-url '{url}' --create-table --batch-size 2000 --linger 20ms",
            b = broker.addr,
            url = pg.url(),
            end = if exit_at_end { "--exit-at-end" } else { "" },
        )
    };
    let mut child = std::process::Command::new(bin("pipeline"))
        .args(["-q", &pipe(false)])
        .current_dir(dir.root())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("20,000 rows", Duration::from_secs(120), || {
        rows(&pg) >= 20_000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let o = dir
        .cmd("pipeline")
        .args(["-q", &pipe(true)])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(rows(&pg), last_by_id(&text).len() as u64);
}
