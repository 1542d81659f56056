//! `pipeline`: the shell pipe's text run in one process. The same input gives the same
//! stdout, dead letters and rows as the shell pipe; bad texts are refused before anything
//! runs; full channels block or drop as told.

use serde_json::Value;

use crate::persist::{pg_rows, sqlite_rows};
use std::os::unix::process::CommandExt;

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
        ("validate | enrch --id k", "stage 2 of 2: unknown command \"enrch\"; known: ingest-file, ingest-http, ingest-kafka, validate, enrich, persist, tee"),
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

/// A worker's panic ends no `pipeline` run: the batch is tried again event by event; the
/// event that panics is a dead letter of kind `panic` with the message, the others go on
/// in order. The single command still ends with exit 70. (The hook that panics is
/// compiled only with the `fault-injection` feature, which scripts/test enables.)
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection (scripts/test enables it)"
)]
fn a_panicking_event_is_a_dead_letter_and_the_rest_goes_on() {
    let dir = Dir::new();
    let mut text = String::new();
    for i in 0..3_000 {
        if i % 1_000 == 500 {
            text += &format!("{{\"id\":\"e{i}\",\"ndpipe_fault\":\"panic\"}}\n");
        } else {
            text += &format!("{{\"id\":\"e{i}\"}}\n");
        }
    }
    dir.create("ev.ndjson", &text);
    let o = dir
        .cmd("pipeline")
        .args([
            "--dead-letter",
            "dead.ndjson",
            r#"validate --require id | enrich --set 'ok=true'"#,
            "ev.ndjson",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let written: Vec<String> = values(&out(&o))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..3_000)
        .filter(|i| i % 1_000 != 500)
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(written, expected);
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 3);
    for d in &dead {
        assert_eq!(d["kind"], "panic");
        assert!(
            d["reason"].as_str().unwrap().contains("injected fault"),
            "{d}"
        );
    }
    assert!(err(&o).contains("3 panic"), "{}", err(&o));

    // The command alone: a panic is a bug, exit 70.
    let o = dir
        .cmd("validate")
        .args(["--require", "id", "ev.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(70), "{}", err(&o));
}

/// GET `path` on 127.0.0.1:`port`: status and body (None while nothing answers).
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let agent = crate::ingest_http::agent();
    let r = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.into_body().read_to_string().unwrap_or_default()))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `script` run by bash in a process group of its own, so that [`kill_group`] ends all
/// of it.
fn spawn_group(dir: &Dir, script: &str) -> std::process::Child {
    std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(dir.root())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn kill_group(sh: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", sh.id())])
        .status();
    let _ = sh.wait();
}

/// `buffer_events` of the channel into `component`, read off /metrics text.
fn depth(metrics: &str, component: &str) -> f64 {
    let series = format!("buffer_events{{component=\"{component}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The pid of the `pipeline` serving /metrics on `port` (not the shell that started it,
/// whose command line holds the same words).
fn pipeline_serving(port: u16) -> u32 {
    let o = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("^{} .*--metrics-listen 127.0.0.1:{port}", bin("pipeline")),
        ])
        .output()
        .unwrap();
    let pids: Vec<u32> = out(&o).lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 1, "one pipeline on port {port}: {pids:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap();
    assert_eq!(comm.trim(), "pipeline");
    pids[0]
}

/// Waits until the channel into `component` of the pipeline serving /metrics on `port`
/// holds 8,000 events, lets it stand 2 s, and returns that pipeline's peak RSS (MiB) and
/// its /metrics text then.
fn stalled_at(port: u16, component: &str) -> (u64, String) {
    eventually(&format!("the channel into {component} fills"), || {
        get(port, "/metrics").is_some_and(|(_, m)| depth(&m, component) >= 8_000.0)
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let rss = crate::faults::peak_rss_mib(pipeline_serving(port));
    let (_, metrics) = get(port, "/metrics").unwrap();
    (rss, metrics)
}

/// `pipeline --file etl.pipe` in `dir`, reading its stdin, writing out.ndjson and serving
/// /metrics on `port`.
pub(crate) fn file_pipeline_serving(
    dir: &Dir,
    port: u16,
) -> (std::process::Child, std::process::ChildStdin) {
    let out_file = std::fs::File::create(dir.path("out.ndjson")).unwrap();
    let mut child = std::process::Command::new(bin("pipeline"))
        .args(["--file", "etl.pipe", "--metrics-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir.root())
        .stdin(std::process::Stdio::piped())
        .stdout(out_file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Whether /metrics on `port` shows `n` validate workers.
fn validate_workers_shown(port: u16, n: u32) -> impl FnMut() -> bool {
    move || {
        get(port, "/metrics").is_some_and(|(_, m)| {
            m.contains(&format!(
                "ndpipe_stage_workers{{component=\"validate\"}} {n}"
            ))
        })
    }
}

/// SIGHUP to `child`: re-read its `--file`.
pub(crate) fn hup(child: &std::process::Child) {
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
}

/// Writes `lines` to a child's stdin, and flushes.
pub(crate) fn send_lines(stdin: &mut std::process::ChildStdin, lines: &[&str]) {
    try_send_lines(stdin, lines).unwrap();
}

/// [`send_lines`], saying whether the child took them (for a test to show its stderr).
fn try_send_lines(stdin: &mut std::process::ChildStdin, lines: &[&str]) -> std::io::Result<()> {
    use std::io::Write;
    for l in lines {
        writeln!(stdin, "{l}")?;
    }
    stdin.flush()
}

/// Polls until `f` holds, 30 s at most.
pub(crate) fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "waited 30 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Live scaling: the pipe file's `validate --workers 1` becomes `--workers 4` and a SIGHUP
/// (or the change itself) applies it mid-stream: /metrics shows 4 and the output is the
/// input, nothing lost or repeated. So does a channel capacity on a `pipeline` line. A
/// change beyond those is refused with one line, and the run carries on.
#[test]
fn sighup_raises_workers_mid_stream_without_losing_an_event() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 60_000, &[]);
    let input = dir.read("ev.ndjson");
    let lines: Vec<&str> = input.lines().collect();
    dir.create("etl.pipe", "validate --workers 1 --require id\n");
    let port = free_port();
    let (child, mut stdin) = file_pipeline_serving(&dir, port);
    let third = lines.len() / 3;
    send_lines(&mut stdin, &lines[..third]);
    let workers = |n| validate_workers_shown(port, n);
    eventually("1 worker on /metrics", workers(1));

    dir.create("etl.pipe", "validate --workers 4 --require id\n");
    hup(&child);
    eventually("4 workers on /metrics", workers(4));
    send_lines(&mut stdin, &lines[third..2 * third]);

    // Channel settings on a `pipeline` line change live too.
    dir.create(
        "etl.pipe",
        "pipeline --channel-capacity 500\nvalidate --workers 4 --require id\n",
    );
    hup(&child);
    eventually("a capacity of 500 on /metrics", || {
        get(port, "/metrics")
            .is_some_and(|(_, m)| m.contains("buffer_max_event_size{component=\"validate\"} 500"))
    });

    // Anything but workers and channels needs a restart: refused, and the run goes on.
    dir.create(
        "etl.pipe",
        "pipeline --channel-capacity 500\nvalidate --workers 4 --require id,type\n",
    );
    hup(&child);
    std::thread::sleep(std::time::Duration::from_millis(500));
    send_lines(&mut stdin, &lines[2 * third..]);
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("reload refused: stage 1 of 1 (validate) changed beyond --workers"),
        "{}",
        err(&o)
    );
    assert_eq!(dir.read("out.ndjson"), input);
}

/// Live scaling without a signal: rewriting the pipe file is enough (`notify` sees the
/// change). /metrics shows the new worker count, and the output is the input.
#[test]
fn a_change_to_the_pipe_file_applies_without_a_signal() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 20_000, &[]);
    let input = dir.read("ev.ndjson");
    let lines: Vec<&str> = input.lines().collect();
    dir.create("etl.pipe", "validate --workers 1 --require id\n");
    let port = free_port();
    let (child, mut stdin) = file_pipeline_serving(&dir, port);
    let half = lines.len() / 2;
    send_lines(&mut stdin, &lines[..half]);
    let workers = |n| validate_workers_shown(port, n);
    eventually("1 worker on /metrics", workers(1));
    dir.create("etl.pipe", "validate --workers 3 --require id\n");
    eventually("3 workers on /metrics, with no SIGHUP", workers(3));
    send_lines(&mut stdin, &lines[half..]);
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(dir.read("out.ndjson"), input);
}

/// An editor's save that replaces the pipe file (a new file renamed over it) applies too,
/// and so does the next one (the watch follows the path, not the file it first saw).
#[test]
fn a_pipe_file_replaced_by_a_rename_applies_and_is_watched_again() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 30_000, &[]);
    let input = dir.read("ev.ndjson");
    let lines: Vec<&str> = input.lines().collect();
    dir.create("etl.pipe", "validate --workers 1 --require id\n");
    let port = free_port();
    let (child, mut stdin) = file_pipeline_serving(&dir, port);
    let third = lines.len() / 3;
    send_lines(&mut stdin, &lines[..third]);
    let workers = |n| validate_workers_shown(port, n);
    eventually("1 worker on /metrics", workers(1));
    for (n, part) in [(3, &lines[third..2 * third]), (2, &lines[2 * third..])] {
        dir.create(
            ".etl.pipe.swp",
            format!("validate --workers {n} --require id\n"),
        );
        std::fs::rename(dir.path(".etl.pipe.swp"), dir.path("etl.pipe")).unwrap();
        eventually(
            &format!("{n} workers on /metrics, with no SIGHUP"),
            workers(n),
        );
        send_lines(&mut stdin, part);
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(dir.read("out.ndjson"), input);
    let log = err(&o);
    assert_eq!(log.matches("validate: --workers").count(), 2, "{log}");
}

/// Live scaling of the sink: the pipe file's `persist --connections 1` becomes 4, then 2,
/// mid-stream. /metrics and the server's own list of sessions show each count; the table
/// ends with every key's last event, nothing lost, and no key's older event stored over a
/// newer one (which two connections racing on one key would do).
#[test]
fn sighup_changes_persist_connections_mid_stream_without_losing_an_event() {
    let dir = Dir::new();
    let pg = Pg::new("pl_conns");
    gen_events(&dir, "ev.ndjson", 60_000, &["--dups", "0.3"]);
    let input = dir.read("ev.ndjson");
    let expected = last_by_id(&input);
    let lines: Vec<&str> = input.lines().collect();
    // The test's own application_name: its sessions are told apart from other tests'.
    let app = format!("ndpipe_conns_{}", std::process::id());
    let url = format!("{}&application_name={app}", pg.url());
    let pipe = |n: u32| {
        format!(
            "validate --require id\n\
             persist --database-url '{url}' --create-table --batch-size 100 --connections {n}\n"
        )
    };
    dir.create("etl.pipe", pipe(1));
    let port = free_port();
    let mut child = std::process::Command::new(bin("pipeline"))
        .args(["--file", "etl.pipe", "--metrics-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir.root())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let connections = |n: u32| {
        let (pg, app) = (&pg, &app);
        move || {
            let shown = get(port, "/metrics").is_some_and(|(_, m)| {
                m.contains(&format!(
                    "ndpipe_stage_workers{{component=\"persist\"}} {n}"
                ))
            });
            // Besides the loaders' sessions, /ready keeps one for its `SELECT 1`.
            shown
                && pg.sql(&format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
                )) == (n + 1).to_string()
        }
    };
    let third = lines.len() / 3;
    send_lines(&mut stdin, &lines[..third]);
    eventually("1 connection", connections(1));
    for (n, part) in [(4, &lines[third..2 * third]), (2, &lines[2 * third..])] {
        dir.create("etl.pipe", pipe(n));
        hup(&child);
        // Events keep coming while the loaders drain and the count changes.
        send_lines(&mut stdin, part);
        eventually(&format!("{n} connections"), connections(n));
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let log = err(&o);
    for line in ["persist: connections 1 → 4", "persist: connections 4 → 2"] {
        assert!(log.contains(line), "{log}");
    }
    assert!(!log.contains("reload refused"), "{log}");
    let stored = stored_payloads(&pg);
    assert_eq!(stored.len(), expected.len());
    assert!(
        stored == expected,
        "a key holds another than its last event"
    );
}

/// /ready while a channel stays over 80 % full: a stdout nobody reads stalls the pipe, the
/// channel into validate fills, and once it has been full for `--ready-window` /ready
/// answers 503 naming that channel; once stdout is read again, 200.
#[test]
fn ready_names_a_channel_full_for_the_window_and_recovers() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    let port = free_port();
    let mut child = std::process::Command::new(bin("pipeline"))
        .current_dir(dir.root())
        .args([
            "-q",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--ready-window",
            "1s",
            "--channel-capacity",
            "1000",
            "validate --require id",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    eventually("ready at start", || {
        get(port, "/ready").is_some_and(|(s, _)| s == 200)
    });
    // More than stdout's pipe and every channel hold, written while nobody reads.
    let feeding = std::thread::spawn(move || {
        let line = format!("{{\"id\":\"x\",\"pad\":\"{}\"}}\n", "p".repeat(100));
        for _ in 0..200_000 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        stdin
    });
    let mut last = None;
    eventually("503 naming the full channel", || {
        last = get(port, "/ready");
        last.as_ref().is_some_and(|(s, _)| *s == 503)
    });
    let (_, body) = last.unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(
        body["failing"],
        serde_json::json!(["channel validate"]),
        "{body}"
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("the channel into validate has been over 80 % full for "),
        "{body}"
    );
    // Read stdout again: the channels drain, and the pipe is ready while it runs on.
    let mut stdout = child.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0; 1 << 16];
        while let Ok(k) = stdout.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        n
    });
    let stdin = feeding.join().unwrap();
    eventually("200 once drained", || {
        get(port, "/ready").is_some_and(|(s, _)| s == 200)
    });
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(reading.join().unwrap(), 200_000);
}

/// /ready while PostgreSQL is stopped mid-run: 503 meanwhile, 200 once it is back; and
/// nothing is lost. /health stays 200; /metrics has the channel gauges.
#[test]
fn ready_follows_the_database_and_nothing_is_lost() {
    use std::io::Write;
    let dir = Dir::new();
    let cluster = crate::persist::Cluster::new();
    gen_events(&dir, "ev.ndjson", 40_000, &["--dups", "0.1"]);
    let input = dir.read("ev.ndjson");
    let expected = last_by_id(&input);
    let port = free_port();
    let text = format!(
        "validate --require id | persist --database-url '{}' --create-table --batch-size 500",
        cluster.url()
    );
    let mut child = std::process::Command::new(bin("pipeline"))
        .args([
            "-q",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            &text,
        ])
        .current_dir(dir.root())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = input.lines().map(str::to_owned).collect();
    let (first, rest) = lines.split_at(10_000);
    for l in first {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    eventually("ready", || {
        get(port, "/ready").is_some_and(|(s, _)| s == 200)
    });
    eventually("rows", || cluster.count() > 0);

    cluster.stop_immediate();
    eventually("not ready while the database is down", || {
        get(port, "/ready").is_some_and(|(s, b)| s == 503 && b.contains("does not answer"))
    });
    assert_eq!(get(port, "/health").map(|(s, _)| s), Some(200));
    let writer = {
        let rest = rest.to_vec();
        std::thread::spawn(move || {
            for l in rest {
                writeln!(stdin, "{l}").unwrap();
            }
            stdin // Kept open, and the run with it, until the checks below are done.
        })
    };
    cluster.start();
    let mut last = None;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        last = get(port, "/ready");
        if last.as_ref().is_some_and(|(s, _)| *s == 200) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        last.as_ref().map(|(s, _)| *s),
        Some(200),
        "ready again: {last:?}"
    );
    let (_, metrics) = get(port, "/metrics").unwrap();
    for series in [
        "buffer_events{component=\"persist\"}",
        "component_received_events_total{component=\"validate\"}",
        "ndpipe_persist_rows_total{component=\"persist\",outcome=\"inserted\"}",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    drop(writer.join().unwrap());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(cluster.count(), expected.len() as u64);
}

/// A stalled sink (a stdout nobody reads) while 1 GiB is offered on stdin: memory stays
/// bounded (<= 64 MiB), and the depth gauge of the channel in front of the stalled stage
/// shows where the stream stopped.
#[test]
fn a_stalled_sink_keeps_memory_bounded_and_the_gauge_shows_where() {
    let dir = Dir::new();
    let port = free_port();
    // 1 GiB of events on stdin; a stdout that is never read.
    let script = format!(
        "yes '{{\"id\":\"x\",\"pad\":\"{pad}\"}}' | head -c 1G \
         | {pipeline} -q --metrics-listen 127.0.0.1:{port} \
             'validate --require id | enrich --set tagged=true' \
         | sleep 600",
        pad = "p".repeat(200),
        pipeline = bin("pipeline"),
    );
    let mut sh = spawn_group(&dir, &script);
    let (rss, metrics) = stalled_at(port, "enrich");
    kill_group(&mut sh);
    eprintln!("peak RSS {rss} MiB");
    assert!(rss <= 64, "peak RSS {rss} MiB");
    assert!(depth(&metrics, "enrich") >= 8_000.0, "{metrics}");
    // The channel into validate is full too: back-pressure reached the reader.
    assert!(
        metrics.contains("buffer_events{component=\"validate\"}"),
        "{metrics}"
    );
}

/// A stalled database: the sink's PostgreSQL stops while 1 GiB of distinct events is
/// offered. persist waits and retries; back-pressure holds the rest in bounded channels:
/// RSS stays <= 64 MiB, and the channel into persist is the full one. When the server is
/// back, rows are stored again.
#[test]
fn a_stalled_database_keeps_memory_bounded_and_loading_resumes() {
    let dir = Dir::new();
    let cluster = crate::persist::Cluster::new();
    let port = free_port();
    // Distinct keys, so that every event is a row to write.
    dir.create(
        "gen.awk",
        format!(
            "{{ printf \"{{\\\"id\\\":\\\"%d\\\",\\\"pad\\\":\\\"{}\\\"}}\\n\", $1 }}\n",
            "p".repeat(200)
        ),
    );
    let script = format!(
        "seq 1 100000000 | awk -f gen.awk | head -c 1G \
         | {pipeline} -q --metrics-listen 127.0.0.1:{port} \
             'validate --require id | enrich --set tagged=true \
              | persist --database-url {url} --create-table'",
        pipeline = bin("pipeline"),
        url = cluster.url(),
    );
    let mut sh = spawn_group(&dir, &script);
    eventually("rows stored", || cluster.count() > 10_000);
    cluster.stop_immediate();
    let (rss, metrics) = stalled_at(port, "persist");
    cluster.start();
    let before = cluster.count();
    eventually("rows stored again", || cluster.count() > before + 10_000);
    kill_group(&mut sh);
    eprintln!("peak RSS {rss} MiB");
    assert!(rss <= 64, "peak RSS {rss} MiB");
    assert!(depth(&metrics, "persist") >= 8_000.0, "{metrics}");
    assert!(
        metrics.contains("ndpipe_persist_retries_total"),
        "persist retried while the server was down: {metrics}"
    );
}

/// Two sources into one hub (`ingest-http … & ingest-kafka …`) and a file given after
/// the text: every event of each is stored, each source keeping its acknowledgements;
/// SIGTERM ends the run with 0.
#[test]
fn several_sources_feed_one_hub() {
    use crate::ingest_kafka::{rows, topic_with_events, wait_until, Broker};
    use std::time::Duration;
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("pl_hub");
    let (topic, kafka_text) = topic_with_events(&dir, &broker, "pl-hub", 2, 3_000, &[]);
    let file: String = (0..2_000)
        .map(|i| format!("{{\"id\":\"file-{i}\"}}\n"))
        .collect();
    dir.create("backlog.ndjson", &file);
    let port = free_port();
    let text = format!(
        "ingest-http --listen 127.0.0.1:{port} --ack written \
         & ingest-kafka --brokers {b} --topic {topic} --group hub-{pid} \
         | validate --require id | persist --database-url '{url}' --create-table",
        b = broker.addr,
        pid = std::process::id(),
        url = pg.url(),
    );
    let metrics_port = free_port();
    let child = std::process::Command::new(bin("pipeline"))
        .args([
            "-q",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args([&text, "backlog.ndjson"])
        .current_dir(dir.root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the HTTP source listens", || get(port, "/health").is_some());
    let agent = crate::ingest_http::agent();
    for i in 0..10 {
        let body: String = (0..100)
            .map(|j| format!("{{\"id\":\"http-{i}-{j}\"}}\n"))
            .collect();
        let r = crate::ingest_http::post(
            &agent,
            &format!("http://127.0.0.1:{port}/events"),
            &[crate::ingest_http::NDJSON],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "answered once stored");
    }
    let all = 1_000 + 2_000 + last_by_id(&kafka_text).len() as u64;
    wait_until("every event", Duration::from_secs(60), || rows(&pg) >= all);
    // The Kafka source's lag per partition.
    eventually("the consumer lag on /metrics", || {
        get(metrics_port, "/metrics").is_some_and(|(_, m)| {
            m.contains(&format!(
                "kafka_consumer_lag{{topic_id=\"{topic}\",partition_id=\"1\"}} 0"
            ))
        })
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(rows(&pg), all);
    assert_eq!(
        pg.sql("SELECT count(*) FROM events WHERE key LIKE 'http-%'"),
        "1000"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM events WHERE key LIKE 'file-%'"),
        "2000"
    );
}

/// The first SIGTERM drains; a second one, while the drain waits on a stalled stdout,
/// exits 130 at once.
#[test]
fn a_second_signal_exits_130_at_once() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 200_000, &[]);
    let fifo = dir.path("out.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A reader that opens the fifo and never reads: stdout stalls once the pipe is full.
    let mut stall = std::process::Command::new("bash")
        .args(["-c", "exec 3< out.fifo; sleep 60"])
        .current_dir(dir.root())
        .spawn()
        .unwrap();
    let out = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut child = std::process::Command::new(bin("pipeline"))
        .args([
            "-q",
            "--shutdown-timeout",
            "60s",
            "validate --require id",
            "ev.ndjson",
        ])
        .current_dir(dir.root())
        .stdout(out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
    };
    signal("-TERM");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    let second = std::time::Instant::now();
    signal("-TERM");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            second.elapsed() < std::time::Duration::from_secs(5),
            "no exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = stall.kill();
    let _ = stall.wait();
    assert_eq!(status.code(), Some(130));
}

/// `enrich --jq` inside `pipeline` (#24: every event became a `jq` dead letter, since the
/// pipeline binary could not serve the helpers it started). Into PostgreSQL, from a pipe
/// file across a reload, and the jq examples of the README and of `enrich --help`: the
/// same events as the shell's `enrich`.
#[test]
fn jq_works_inside_pipeline() {
    let dir = Dir::new();
    let pg = Pg::new("pl_jq");
    gen_events(&dir, "ev.ndjson", 3_000, &[]);
    let input = dir.read("ev.ndjson");
    let text = format!(
        "validate --require id | enrich --jq '{{id, cents: (.amount * 100 | floor)}}' \
         | persist --database-url '{}' --create-table",
        pg.url()
    );
    let o = dir
        .cmd("pipeline")
        .args(["-q", &text, "ev.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let stored = stored_payloads(&pg);
    assert_eq!(stored.len(), 3_000);
    for v in values(&input) {
        let id = v["id"].as_str().unwrap();
        let cents = (v["amount"].as_f64().unwrap() * 100.0).floor();
        assert_eq!(stored[id]["cents"].as_f64(), Some(cents), "{id}");
        assert!(
            stored[id].get("amount").is_none(),
            "the program's output is stored"
        );
    }

    // The README's and enrich --help's jq examples: pipeline prints what enrich prints.
    crate::readme::fixtures(&dir);
    for program in [
        "--lookup users.csv --on user_id --prefix user. --jq '.tags[] as $t | {id, user, tag: $t}'",
        "--jq 'select(.type == \"payment\") | {id, cents: (.amount * 100 | floor)}'",
        "--jq '.tags[] as $t | {id, tag: $t}'",
    ] {
        let shell = sh(
            &dir,
            &format!(
                "{} {program} --dead-letter sh.dl < events.ndjson",
                bin("enrich")
            ),
        );
        assert!(shell.status.success(), "{}", err(&shell));
        let piped = sh(
            &dir,
            &format!(
                "{} --dead-letter pl.dl \"enrich {}\" events.ndjson",
                bin("pipeline"),
                program.replace('"', "\\\"").replace('$', "\\$")
            ),
        );
        assert!(piped.status.success(), "{program}: {}", err(&piped));
        assert!(out(&shell).lines().count() > 50, "{program}");
        assert_eq!(out(&piped), out(&shell), "{program}");
        // The same dead letters (the fixtures hold a few events jq fails on), and no
        // helper that could not serve.
        let kinds = |name: &str| {
            let mut k: Vec<String> = values(&dir.read(name))
                .iter()
                .map(|d| format!("{} {} {}", d["kind"], d["line"], d["reason"]))
                .collect();
            k.sort();
            k
        };
        assert_eq!(kinds("pl.dl"), kinds("sh.dl"), "{program}");
        assert!(!dir.read("pl.dl").contains("helper process"), "{program}");
        std::fs::remove_file(dir.path("pl.dl")).unwrap();
        std::fs::remove_file(dir.path("sh.dl")).unwrap();
    }

    // From a pipe file, across a reload of its workers.
    dir.create("etl.pipe", "enrich --workers 1 --jq '{id, n: .meta.seq}'\n");
    let port = free_port();
    let (child, mut stdin) = file_pipeline_serving(&dir, port);
    let lines: Vec<&str> = input.lines().collect();
    let mut sent = try_send_lines(&mut stdin, &lines[..1_500]);
    // Running (SIGHUP is caught from the start of a run with --file, not before).
    eventually("/metrics answers", || get(port, "/metrics").is_some());
    if sent.is_ok() {
        dir.create("etl.pipe", "enrich --workers 3 --jq '{id, n: .meta.seq}'\n");
        hup(&child);
        std::thread::sleep(std::time::Duration::from_millis(500));
        sent = try_send_lines(&mut stdin, &lines[1_500..]);
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{sent:?} {:?}: {}", o.status, err(&o));
    assert!(err(&o).contains("--workers 1 → 3"), "{}", err(&o));
    let expected: String = values(&input)
        .iter()
        .map(|v| format!("{{\"id\":{},\"n\":{}}}\n", v["id"], v["meta"]["seq"]))
        .collect();
    assert_eq!(dir.read("out.ndjson"), expected);
}

/// Drops are always reported (#24: with no sink and no rejects nothing was said, exit 0),
/// count toward exit 65 when there is no dead-letter output, and the summary adds up:
/// "in" is what the source read.
#[test]
fn drops_are_always_reported_and_the_summary_adds_up() {
    let dir = Dir::new();
    let n = 200_000;
    gen_events(&dir, "ev.ndjson", n, &[]);
    for kept in [false, true] {
        let dead = if kept {
            "--dead-letter dropped.ndjson"
        } else {
            ""
        };
        let o = sh(
            &dir,
            &format!(
                "set -o pipefail; {} --when-full drop-newest --channel-capacity 1000 {dead} \
                 'validate --require id' ev.ndjson | (sleep 2; cat > out.ndjson)",
                bin("pipeline")
            ),
        );
        let written = dir.read("out.ndjson").lines().count();
        let dropped = n as usize - written;
        assert!(dropped > 0, "nothing dropped");
        let summary = err(&o);
        let expected = format!(
            "pipeline: {} events in, {} out, 0 rejected{}, {} dropped by --when-full",
            thousands(n as usize),
            thousands(written),
            if kept {
                " (dead letters in dropped.ndjson)"
            } else {
                ""
            },
            thousands(dropped)
        );
        assert!(summary.contains(&expected), "{expected}\n{summary}");
        if kept {
            assert!(o.status.success(), "{summary}");
            assert_eq!(values(&dir.read("dropped.ndjson")).len(), dropped);
        } else {
            assert_eq!(o.status.code(), Some(65), "{summary}");
            assert!(
                summary.contains("(no --dead-letter output: not kept)"),
                "{summary}"
            );
        }
    }
}

/// `--explain` and the messages that quote a stage's words show no password (#24), also
/// one that only came from `$VAR`, nor an `--auth-token`.
#[test]
fn passwords_are_never_echoed() {
    let dir = Dir::new();
    let text = "ingest-http --auth-token hunter2-token \
                | persist --database-url 'host=db user=app password=hunter2-kv'";
    let o = dir
        .cmd("pipeline")
        .args(["--explain", text])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let explained = out(&o);
    assert!(explained.contains("--auth-token '***'"), "{explained}");
    assert!(explained.contains("password=***"), "{explained}");
    let o = dir
        .cmd("pipeline")
        .env(
            "PDB",
            "postgres://app:hunter2-url@db.internal/x?sslmode=disable",
        )
        .args(["--explain", "validate | persist --database-url $PDB"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("postgres://app:***@db.internal/x"),
        "{}",
        out(&o)
    );
    // An unquoted `&` in a URL: the rest is taken for a stage, and named in the 64.
    let o = dir
        .cmd("pipeline")
        .args([
            "--explain",
            "validate | persist --database-url postgres://app@db/x?sslmode=disable&password=hunter2-amp",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(err(&o).contains("password=***"), "{}", err(&o));
    for o in [out(&o), err(&o), explained] {
        assert!(!o.contains("hunter2"), "{o}");
    }
}

/// `--file` reads a pipe text, nothing else (#24: `--file /dev/zero` grew without bound):
/// a device, a FIFO, a directory or a file past the limit exit 66 with one line.
#[test]
fn the_pipe_file_must_be_a_small_regular_file() {
    let dir = Dir::new();
    let fifo = dir.path("etl.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    dir.create("big.pipe", "# padding\n".repeat(600_000));
    for (file, says) in [
        ("/dev/zero", "not a regular file"),
        ("etl.fifo", "not a regular file"),
        (".", "a directory"),
        ("big.pipe", "larger than 4 MiB"),
    ] {
        let o = dir
            .cmd("pipeline")
            .args(["--file", file])
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(66), "{file}: {}", err(&o));
        assert_eq!(err(&o).lines().count(), 1, "{file}: {}", err(&o));
        assert!(err(&o).contains(says), "{file}: {}", err(&o));
    }
}

/// One rule for counts (#24: `--workers 0` ran as 1, `--channel-capacity 0` too): 0 is
/// refused with 64 at start, and a reload to 0 is refused with a line, the run going on.
#[test]
fn a_count_of_zero_is_refused_at_start_and_on_reload() {
    let dir = Dir::new();
    for text in [
        "validate --workers 0",
        "enrich --workers 0",
        "persist --connections 0",
    ] {
        let o = dir.cmd("pipeline").args([text]).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{text}: {}", err(&o));
        assert!(err(&o).contains("0"), "{text}: {}", err(&o));
    }
    for flag in ["--channel-capacity", "--channel-bytes"] {
        let o = dir
            .cmd("pipeline")
            .args([flag, "0", "validate"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{flag}: {}", err(&o));
    }
    for command in ["validate", "enrich"] {
        let o = dir.cmd(command).args(["--workers", "0"]).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{command}: {}", err(&o));
    }
    // On reload: refused, and the run goes on with what it had.
    gen_events(&dir, "ev.ndjson", 2_000, &[]);
    let input = dir.read("ev.ndjson");
    dir.create("etl.pipe", "validate --workers 2 --require id\n");
    let port = free_port();
    let (child, mut stdin) = file_pipeline_serving(&dir, port);
    let lines: Vec<&str> = input.lines().collect();
    send_lines(&mut stdin, &lines[..1_000]);
    eventually("2 workers on /metrics", validate_workers_shown(port, 2));
    for bad in [
        "validate --workers 0 --require id\n",
        "pipeline --channel-capacity 0\nvalidate --workers 2 --require id\n",
    ] {
        dir.create("etl.pipe", bad);
        hup(&child);
        std::thread::sleep(std::time::Duration::from_millis(600));
    }
    send_lines(&mut stdin, &lines[1_000..]);
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // (A save is seen twice, by the watch and by SIGHUP: each reload is refused.)
    for refused in [
        "reload refused: stage 1 of 1 (validate): invalid value '0' for '--workers <N>': \
         must be 1 or more",
        "reload refused: the `pipeline` line: invalid value '0' for '--channel-capacity \
         <EVENTS>': must be 1 or more",
    ] {
        assert!(err(&o).contains(refused), "{refused}\n{}", err(&o));
    }
    assert_eq!(dir.read("out.ndjson"), input);
}

/// `pipeline` knows every path before it opens one (#24: a tee onto its own input
/// truncated it to 0 bytes, exit 0): a tee onto an input file, or two tees onto one
/// file, is refused with 64 and the input is untouched.
#[test]
fn a_tee_onto_an_input_or_another_tee_is_refused() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 100, &[]);
    let input = dir.read("ev.ndjson");
    std::fs::create_dir(dir.path("sub")).unwrap();
    for (text, says) in [
        ("validate | tee ev.ndjson", "is an input file"),
        ("validate | tee -a ./sub/../ev.ndjson", "is an input file"),
        (
            "validate | tee copy.ndjson | tee ./copy.ndjson",
            "already written by a tee",
        ),
        ("tee a.ndjson sub/../a.ndjson", "already written by a tee"),
    ] {
        let o = dir
            .cmd("pipeline")
            .args([text, "ev.ndjson"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{text}: {}", err(&o));
        assert!(err(&o).contains(says), "{text}: {}", err(&o));
        assert_eq!(dir.read("ev.ndjson"), input, "{text}");
    }
}

/// N `--set` flags cost N per event, not N² (#24: 100,000 of them took 331 s for 3
/// events; the limit is only there so that a regression fails rather than hangs). They
/// come in a pipe file: a command line holds 2 MiB at most.
#[test]
fn many_sets_cost_linear_time() {
    let dir = Dir::new();
    let mut text = String::from("enrich \\\n");
    for i in 0..100_000 {
        text += &format!("  --set f{i}={i} \\\n");
    }
    // Nested ones too, on one parent.
    for i in 0..20_000 {
        text += &format!("  --set nest.k{i}={i} \\\n");
    }
    text += "  --id key --id-from id\n";
    dir.create("many.pipe", &text);
    let input = "{\"id\":1}\n{\"id\":2,\"f7\":\"x\"}\n{\"id\":3,\"nest\":{\"a\":true}}\n";
    let started = std::time::Instant::now();
    let o = dir
        .cmd("pipeline")
        .args(["-q", "--file", "many.pipe"])
        .write_stdin(input)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let events = values(&out(&o));
    assert_eq!(events.len(), 3, "in {:?}", started.elapsed());
    for (i, v) in events.iter().enumerate() {
        assert_eq!(v["id"], i + 1);
        assert_eq!(v["f99999"], 99_999);
        assert_eq!(v["f7"], 7);
        assert_eq!(v["nest"]["k19999"], 19_999);
        assert_eq!(v.as_object().unwrap().len(), 100_003);
    }
    assert_eq!(events[2]["nest"]["a"], true);
}

/// Adding a command is its folder and one row of the table (`src/commands/`): the
/// planner, runner, `--explain`, reload and serving code under `src/pipeline/` name no
/// command, neither as a word (`"persist"`) nor as a module (`persist::`), so none of
/// them has a `match` a new command could fall through.
#[test]
fn pipeline_code_names_no_command() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pipeline");
    let mut named = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // A module's own tests may spell out pipe texts.
        let code_part = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code_part.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for c in ndpipe::commands::ALL {
                let module = c.name.replace('-', "_");
                if code.contains(&format!("\"{}\"", c.name))
                    || code.contains(&format!("{module}::"))
                    || code.contains(&format!("{module}}}"))
                    || code.contains(&format!("{module},"))
                {
                    named.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        named.is_empty(),
        "src/pipeline names commands:\n{}",
        named.join("\n")
    );
    // And the table is what a pipe text is checked against.
    let dir = Dir::new();
    let o = dir
        .cmd("pipeline")
        .arg("validate | frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let known: Vec<&str> = ndpipe::commands::ALL.iter().map(|c| c.name).collect();
    assert!(
        err(&o).contains(&format!("known: {}", known.join(", "))),
        "{}",
        err(&o)
    );
}
