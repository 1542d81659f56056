//! `ingest-file`: files read once and followed — appends, partial lines, rotation by
//! rename, copytruncate, truncation, inode reuse, equal first lines, new files, gzip and
//! zstd, empty files that grow, nested globs; the checkpoint file across kill -9; bad
//! input of every kind.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as Std, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// `ingest-file ARGS` running in `dir`, its stdout in `name.out`, its stderr in
/// `name.err`.
pub(crate) struct Follow {
    pub(crate) child: Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Follow {
    pub(crate) fn start(dir: &Dir, name: &str, args: &[&str]) -> Follow {
        let (out, err) = (
            dir.path(&format!("{name}.out")),
            dir.path(&format!("{name}.err")),
        );
        let child = Std::new(bin("ingest-file"))
            .args(args)
            .current_dir(dir.root())
            .env_remove("NDPIPE_LOG")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Follow { child, out, err }
    }

    /// The complete lines written so far, parsed.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `n` events are out (30 s at most).
    pub(crate) fn wait_events(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} of {n} events after 30 s; stderr: {}",
                events.len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(mut self) -> (i32, Vec<serde_json::Value>, String) {
        let _ = Std::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.events(), self.stderr())
    }
}

/// Appends `text` to `path` (created when missing).
fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The `n` field of each event.
fn ns(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["n"].as_u64().unwrap()).collect()
}

fn lines_n(range: std::ops::Range<u64>) -> String {
    range.map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

#[test]
fn a_backfill_reads_every_match_oldest_first_with_where_each_line_came_from() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("logs/2026/12")).unwrap();
    dir.create("logs/2026/12/new.ndjson", "{\"n\":3}\n{\"n\":4}");
    // Older by modification time, though its name sorts last.
    dir.create("logs/z-old.ndjson", "{\"n\":1}\n\n{\"n\":2}\n");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path("logs/z-old.ndjson"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    dir.create("logs/skip.txt", "{\"n\":99}\n");
    let o = dir
        .cmd("ingest-file")
        .arg("logs/**/*.ndjson")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let events = values(&out(&o));
    assert_eq!(ns(&events), [1, 2, 3, 4]);
    let m = &events[1]["_meta"];
    assert_eq!(m["source"], "file");
    assert_eq!(m["path"], "logs/z-old.ndjson");
    // The byte offset of the line's first byte, and its line number (a blank line between).
    assert_eq!(
        (m["offset"].as_u64(), m["line"].as_u64()),
        (Some(9), Some(3))
    );
    let ino = std::fs::metadata(dir.path("logs/z-old.ndjson"))
        .unwrap()
        .ino();
    let id = m["file_id"].as_str().unwrap();
    assert!(
        id.split(':').nth(1) == Some(ino.to_string().as_str()),
        "{id}"
    );
    // The last line, without its newline, is a line at the end of a backfill.
    assert_eq!(events[3]["_meta"]["offset"], 8);
    // --order name: by path.
    let o = dir
        .cmd("ingest-file")
        .args(["--order", "name", "logs/**/*.ndjson"])
        .output()
        .unwrap();
    assert_eq!(ns(&values(&out(&o))), [3, 4, 1, 2]);
}

#[test]
fn gzip_and_zstd_files_are_read_like_plain_ones_and_a_corrupt_stream_is_a_dead_letter() {
    let dir = Dir::new();
    dir.create("a.ndjson", lines_n(0..2));
    std::fs::write(dir.path("b.ndjson.gz"), gzip(lines_n(2..4).as_bytes())).unwrap();
    std::fs::write(
        dir.path("c.ndjson.zst"),
        zstd::encode_all(lines_n(4..5).as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let o = dir
        .cmd("ingest-file")
        .args(["--order", "name", "*.ndjson*"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let events = values(&out(&o));
    assert_eq!(ns(&events), [0, 1, 2, 3, 4]);
    // Offsets of a compressed file are of its text.
    assert_eq!(events[3]["_meta"]["offset"], 8);
    // A gzip stream cut short: what decompresses is read, the rest is one dead letter.
    let big: String = lines_n(0..20_000);
    let gz = dir.path("cut.ndjson.gz");
    let mut enc = gzip(big.as_bytes());
    enc.truncate(enc.len() / 2);
    std::fs::write(&gz, enc).unwrap();
    let o = dir
        .cmd("ingest-file")
        .args(["--dead-letter", "dl.ndjson", "cut.ndjson.gz"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let got = ns(&values(&out(&o)));
    assert!(!got.is_empty() && got.len() < 20_000, "{}", got.len());
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    let dl = values(&dir.read("dl.ndjson"));
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["kind"], "corrupt_compression");
    assert_eq!(dl[0]["source"], "cut.ndjson.gz");
}

/// gzip of `bytes`.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn bad_input_is_skipped_counted_and_ends_the_run_with_its_code() {
    let dir = Dir::new();
    dir.create("good.ndjson", "{\"n\":1}\nnot json\n[1]\n{\"n\":2}\n");
    dir.create("secret.ndjson", "{\"n\":9}\n");
    std::fs::set_permissions(
        dir.path("secret.ndjson"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let fifo = sh(&dir, "mkfifo pipe.ndjson");
    assert!(fifo.status.success());
    let o = dir
        .cmd("ingest-file")
        .args(["--dead-letter", "dl.ndjson", "*.ndjson"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let running_as_root = sh(&dir, "cat secret.ndjson").status.success();
    // The FIFO is refused, not waited on; unreadable files make 74 at the end.
    assert_eq!(o.status.code(), Some(74), "{}", err(&o));
    assert!(
        err(&o).contains("pipe.ndjson: not a regular file"),
        "{}",
        err(&o)
    );
    let got = ns(&values(&out(&o)));
    if running_as_root {
        assert_eq!(got, [1, 2, 9]);
    } else {
        assert_eq!(got, [1, 2]);
        assert!(
            err(&o).contains("secret.ndjson: Permission denied"),
            "{}",
            err(&o)
        );
    }
    // Malformed lines are dead letters with their path and line.
    let dl = values(&dir.read("dl.ndjson"));
    let at: Vec<_> = dl
        .iter()
        .map(|d| (d["source"].as_str().unwrap(), d["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [("good.ndjson", 2), ("good.ndjson", 3)]);
    // A glob that matches nothing: 66 before anything is read.
    let o = dir
        .cmd("ingest-file")
        .args(["good.ndjson", "nothing-*.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", err(&o));
    assert_eq!(out(&o), "");
    // `| head` ends it quietly.
    dir.create("many.ndjson", lines_n(0..200_000));
    let o = sh(
        &dir,
        &format!(
            "set -o pipefail; {} many.ndjson | head -n 2",
            bin("ingest-file")
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 2);
    assert_eq!(err(&o), "");
}

#[test]
fn following_reads_appends_and_holds_a_partial_line_until_its_newline() {
    let dir = Dir::new();
    let log = dir.create("app.log", lines_n(0..3));
    let f = Follow::start(&dir, "f", &["--follow", "app.log"]);
    f.wait_events(3);
    append(&log, "{\"n\":3}\n{\"n\"");
    f.wait_events(4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(f.events().len(), 4, "a partial line was emitted");
    append(&log, ":4}\n");
    let events = f.wait_events(5);
    assert_eq!(events[4]["_meta"]["offset"], 32);
    let (code, events, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ns(&events), [0, 1, 2, 3, 4]);
}

#[test]
fn rotation_by_rename_while_writing_loses_and_repeats_nothing() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, "");
    let f = Follow::start(
        &dir,
        "f",
        &[
            "--follow",
            "--rotate-wait",
            "2s",
            "--fingerprint-bytes",
            "16",
            "app.log",
        ],
    );
    // A writer appends 6,000 lines, rotating app.log → app.log.1 → app.log.2 every 2,000
    // as logrotate's `create` mode does; the writer keeps writing to its open file a
    // little after each rename.
    let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for n in 0..6_000u64 {
        writeln!(w, "{{\"n\":{n}}}").unwrap();
        if n % 2_000 == 1_999 {
            let k = n / 2_000 + 1;
            std::fs::rename(&log, dir.path(&format!("app.log.{k}"))).unwrap();
            writeln!(w, "{{\"late\":{k}}}").unwrap();
            w = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
        }
        if n % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(w);
    let events = f.wait_events(6_003);
    let (code, events_after, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        events_after.len(),
        events.len(),
        "events after the expected ones"
    );
    let mut got: Vec<u64> = events.iter().filter_map(|e| e["n"].as_u64()).collect();
    got.sort();
    assert_eq!(got, (0..6_000).collect::<Vec<_>>());
    let late = events.iter().filter(|e| e.get("late").is_some()).count();
    assert_eq!(late, 3, "lines written to a renamed file are read");
    assert!(stderr.contains("rotated"), "{stderr}");
}

#[test]
fn copytruncate_and_truncation_read_the_new_content_from_its_start() {
    let dir = Dir::new();
    let log = dir.create("app.log", lines_n(0..100));
    let f = Follow::start(
        &dir,
        "f",
        &["--follow", "--fingerprint-bytes", "8", "app.log"],
    );
    f.wait_events(100);
    // logrotate's copytruncate: copy aside (not matched by the glob), truncate in place.
    std::fs::copy(&log, dir.path("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&log, &lines_n(100..150));
    f.wait_events(150);
    // Truncated and rewritten past the old length before ingest-file looks: told apart
    // by the first bytes.
    let long: String = (150..300)
        .map(|n| format!("{{\"n\":{n},\"pad\":\"xxxxxxxxxxxxxxxxxx\"}}\n"))
        .collect();
    std::fs::write(&log, &long).unwrap();
    let events = f.wait_events(300);
    let (code, after, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(after.len(), 300);
    assert_eq!(ns(&events), (0..300).collect::<Vec<_>>());
    assert!(stderr.matches("truncated").count() >= 2, "{stderr}");
    // The new content is another file: another identity, offsets from 0.
    assert_ne!(
        events[0]["_meta"]["file_id"],
        events[100]["_meta"]["file_id"]
    );
    assert_eq!(events[100]["_meta"]["offset"], 0);
    assert_eq!(events[150]["_meta"]["offset"], 0);
}

/// Creates `name` in `dir` holding `text` on the inode `ino`, by creating files until
/// the filesystem hands that inode out again; false when it does not within 200 tries.
fn create_on_inode(dir: &Dir, name: &str, text: &str, ino: u64) -> bool {
    for i in 0..200 {
        let tmp = dir.path(&format!(".try{i}"));
        std::fs::write(&tmp, text).unwrap();
        if std::fs::metadata(&tmp).unwrap().ino() == ino {
            std::fs::rename(&tmp, dir.path(name)).unwrap();
            for j in 0..i {
                let _ = std::fs::remove_file(dir.path(&format!(".try{j}")));
            }
            return true;
        }
    }
    false
}

#[test]
fn a_new_file_on_a_deleted_files_inode_is_read_from_its_start() {
    let dir = Dir::new();
    let log = dir.create("app.log", lines_n(0..100));
    let ino = std::fs::metadata(&log).unwrap().ino();
    let o = dir
        .cmd("ingest-file")
        .args(["--positions", "pos.json", "app.log"])
        .output()
        .unwrap();
    assert_eq!(values(&out(&o)).len(), 100);
    std::fs::remove_file(&log).unwrap();
    // Longer than the old file, so a tailer trusting the inode would skip 100 lines.
    let text = lines_n(1000..1300);
    assert!(
        create_on_inode(&dir, "app.log", &text, ino),
        "the filesystem did not reuse inode {ino}"
    );
    assert_eq!(std::fs::metadata(dir.path("app.log")).unwrap().ino(), ino);
    let o = dir
        .cmd("ingest-file")
        .args(["--positions", "pos.json", "app.log"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(ns(&values(&out(&o))), (1000..1300).collect::<Vec<_>>());
    // And a third run reads nothing again.
    let o = dir
        .cmd("ingest-file")
        .args(["--positions", "pos.json", "app.log"])
        .output()
        .unwrap();
    assert_eq!(out(&o), "");
}

#[test]
fn two_files_with_the_same_first_line_are_two_files_across_restarts() {
    let dir = Dir::new();
    let head = "{\"header\":\"the same first line in both, longer than the fingerprint\"}\n";
    dir.create("a.ndjson", format!("{head}{}", lines_n(0..10)));
    dir.create("b.ndjson", format!("{head}{}", lines_n(10..15)));
    let run = || {
        let o = dir
            .cmd("ingest-file")
            .args(["--positions", "pos.json", "--order", "name", "*.ndjson"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        values(&out(&o))
    };
    let first = run();
    assert_eq!(first.len(), 17);
    assert_ne!(first[0]["_meta"]["file_id"], first[11]["_meta"]["file_id"]);
    append(&dir.path("b.ndjson"), &lines_n(15..17));
    assert_eq!(ns(&run()), [15, 16]);
}

#[test]
fn new_files_empty_files_that_grow_and_nested_directories_are_followed() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("spool/a")).unwrap();
    dir.create("spool/a/first.ndjson", lines_n(0..2));
    dir.create("spool/empty.ndjson", "");
    let f = Follow::start(
        &dir,
        "f",
        &["--follow", "--rotate-wait", "500ms", "spool/**/*.ndjson"],
    );
    f.wait_events(2);
    // A new file, in a directory made after the start.
    std::fs::create_dir_all(dir.path("spool/b/c")).unwrap();
    dir.create("spool/b/c/new.ndjson", lines_n(2..4));
    f.wait_events(4);
    // The empty file grows: shorter than the fingerprint, identified once quiet.
    append(&dir.path("spool/empty.ndjson"), &lines_n(4..5));
    f.wait_events(5);
    let (code, events, stderr) = f.stop();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ns(&events), [0, 1, 2, 3, 4]);
    assert_eq!(events[4]["_meta"]["path"], "spool/empty.ndjson");
}

#[test]
fn from_end_exit_when_idle_and_poll() {
    let dir = Dir::new();
    let log = dir.create("app.log", lines_n(0..5));
    let f = Follow::start(
        &dir,
        "f",
        &[
            "--follow",
            "--from",
            "end",
            "--poll",
            "100ms",
            "--exit-when-idle",
            "1500ms",
            "app.log",
        ],
    );
    // Appended only once ingest-file holds the file open (it has found it at start, so
    // --from end applies), however slow the machine.
    let fds = format!("/proc/{}/fd", f.child.id());
    crate::pipeline::eventually("app.log open", || {
        std::fs::read_dir(&fds).is_ok_and(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|target| target == log)
        })
    });
    append(&log, &lines_n(5..7));
    let mut child = f.child;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "--exit-when-idle did not end it"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let events = values(&std::fs::read_to_string(dir.path("f.out")).unwrap());
    assert_eq!(ns(&events), [5, 6]);
    // The line numbers count the lines skipped.
    assert_eq!(events[0]["_meta"]["line"], 6);
}

#[test]
fn a_checkpoint_file_survives_kill_9_with_every_line_at_least_once_and_no_gap() {
    let dir = Dir::new();
    let n = 200_000u64;
    let log = dir.create("app.log", "");
    // A writer appends 50,000 lines a second while ingest-file is killed and restarted.
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            for chunk in 0..n / 1000 {
                w.write_all(lines_n(chunk * 1000..(chunk + 1) * 1000).as_bytes())
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut seen = vec![0u32; n as usize];
    let mut count = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        // A kill may tear the last line.
        let torn = !text.is_empty() && !text.ends_with('\n');
        let whole = lines.len() - usize::from(torn);
        let mut first = None;
        for l in &lines[..whole] {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            first.get_or_insert(v["_meta"]["offset"].as_u64().unwrap());
            seen[v["n"].as_u64().unwrap() as usize] += 1;
        }
        first
    };
    let stored = |dir: &Dir| -> Option<u64> {
        let text = std::fs::read_to_string(dir.path("pos.json")).ok()?;
        let pos: serde_json::Value = serde_json::from_str(&text).unwrap();
        pos["files"][0]["offset"].as_u64()
    };
    let args = ["--follow", "--positions", "pos.json", "app.log"];
    for round in 0..5u64 {
        let resume = stored(&dir);
        let f = Follow::start(&dir, &format!("r{round}"), &args);
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        let _ = Std::new("kill")
            .args(["-KILL", &f.child.id().to_string()])
            .status();
        let mut child = f.child;
        child.wait().unwrap();
        let text = std::fs::read_to_string(dir.path(&format!("r{round}.out"))).unwrap();
        // Each run starts where the checkpoint stood: none starts over.
        if let Some(first) = count(&text) {
            assert_eq!(first, resume.unwrap_or(0), "run {round}");
        }
    }
    writer.join().unwrap();
    let last = dir
        .cmd("ingest-file")
        .args([
            "--follow",
            "--exit-when-idle",
            "1s",
            "--positions",
            "pos.json",
            "app.log",
        ])
        .output()
        .unwrap();
    assert!(last.status.success(), "{}", err(&last));
    count(&out(&last));
    let missing: Vec<usize> = (0..n as usize).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} lines never emitted, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(stored(&dir), Some(std::fs::metadata(&log).unwrap().len()));
}

/// `pipeline 'ingest-file --follow … & ingest-http … | validate | persist'`: both sources
/// feed one hub into SQLite; /metrics and the summary say ingest-file's lines, bytes,
/// files, rotations and truncations; SIGTERM ends it with everything stored.
#[test]
fn in_pipeline_files_and_http_feed_one_hub_and_metrics_count_rotations_and_truncations() {
    use crate::pipeline::{eventually, free_port, get};
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    let log = dir.create("logs/app.ndjson", "");
    let with_ids = |r: std::ops::Range<u64>| -> String {
        r.map(|n| format!("{{\"id\":\"f-{n}\",\"n\":{n}}}\n"))
            .collect()
    };
    append(&log, &with_ids(0..100));
    let (http, metrics) = (free_port(), free_port());
    let text = format!(
        "ingest-file --follow --rotate-wait 500ms --fingerprint-bytes 16 'logs/app.ndjson*' \
         & ingest-http --listen 127.0.0.1:{http} | validate --require id | persist --create-table"
    );
    let mut child = Std::new(bin("pipeline"))
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}"), &text])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rows = || crate::persist::sqlite_rows(&dir.path("ndpipe.db"), "events").len();
    eventually("the file's 100 rows", || {
        dir.path("ndpipe.db").exists() && rows() >= 100
    });
    // A rotation (renamed, still matched), then more lines in a new file, then a
    // truncation of that file and new content.
    std::fs::rename(&log, dir.path("logs/app.ndjson.1")).unwrap();
    append(&log, &with_ids(100..150));
    eventually("150 rows", || rows() >= 150);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&log, &with_ids(150..160));
    let agent = crate::ingest_http::agent();
    let body: String = (0..40).map(|n| format!("{{\"id\":\"h-{n}\"}}\n")).collect();
    let r = crate::ingest_http::post(
        &agent,
        &format!("http://127.0.0.1:{http}/events"),
        &[("content-type", "application/x-ndjson")],
        body.as_bytes(),
    );
    assert!(r.status < 300, "{}", r.body);
    eventually("200 rows", || rows() >= 200);
    let (_, text) = get(metrics, "/metrics").unwrap();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("component_received_events_total{component=\"ingest-file\"}"),
        160
    );
    let bytes: u64 = std::fs::read_dir(dir.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum::<u64>()
        + with_ids(100..150).len() as u64; // truncated away, but read
    assert_eq!(
        value("component_received_bytes_total{component=\"ingest-file\"}"),
        bytes
    );
    assert_eq!(
        value("ndpipe_file_rotations_total{component=\"ingest-file\"}"),
        1
    );
    assert_eq!(
        value("ndpipe_file_truncations_total{component=\"ingest-file\"}"),
        1
    );
    assert_eq!(
        value("ndpipe_files_opened_total{component=\"ingest-file\"}"),
        3
    );
    assert_eq!(value("ndpipe_files_open{component=\"ingest-file\"}"), 2);
    let _ = Std::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(rows(), 200);
    assert!(
        stderr.contains("pipeline: ingest-file: 160 in, 160 out, 0 rejected, 3 files, 1 rotations, 1 truncations"),
        "{stderr}"
    );
}

/// In `pipeline`, `--positions FILE` advances only once the sink has committed: while
/// another session locks the table, ingest-file has read every line but the checkpoint
/// stays put; once the lock goes, the rows commit and the checkpoint reaches the end.
#[test]
fn in_pipeline_the_checkpoint_waits_for_the_sinks_commit() {
    let dir = Dir::new();
    let pg = Pg::new("file_ack");
    let log = dir.create("app.ndjson", "{\"id\":\"first\"}\n");
    let setup = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--create-table", "app.ndjson"])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", err(&setup));
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let stored = || -> Option<u64> {
        let text = std::fs::read_to_string(dir.path("pos.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["files"][0]["offset"].as_u64()
    };
    // Another session holds the table for 4 s.
    let mut locker = Std::new("psql")
        .args(["-X", "-q", &pg.base, "-c"])
        .arg("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        .env("PGOPTIONS", format!("-c search_path={}", pg.schema))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(
        &log,
        &(0..1000)
            .map(|n| format!("{{\"id\":\"e-{n}\"}}\n"))
            .collect::<String>(),
    );
    let text = format!(
        "ingest-file --follow --positions pos.json app.ndjson | persist --database-url '{}'",
        pg.url()
    );
    let mut child = Std::new(bin("pipeline"))
        .arg(&text)
        .current_dir(dir.root())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // Everything is read (the channels hold it), nothing is committed: no position yet.
    assert_eq!(stored(), None, "the checkpoint moved before the commit");
    locker.wait().unwrap();
    crate::pipeline::eventually("the checkpoint at the end", || stored() == Some(size(&log)));
    assert_eq!(pg.sql("SELECT count(*) FROM events"), "1001");
    let _ = Std::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// A second reader of the same `--positions-name` claims each file with a newer epoch:
/// the first one's later lines are fenced by persist, the second one's stored, and the
/// stored position is the file's size.
#[test]
fn a_second_reader_of_the_same_name_fences_the_first() {
    let dir = Dir::new();
    let pg = Pg::new("file_fence");
    let log = dir.create("app.ndjson", "");
    let ids = |r: std::ops::Range<u64>| -> String {
        r.map(|n| format!("{{\"id\":\"e-{n}\",\"n\":{n}}}\n"))
            .collect()
    };
    append(&log, &ids(0..100));
    let reader = |name: &str| {
        let script = format!(
            "trap true TERM; {ingest} --follow --positions-from '{url}' --positions-name x \
               app.ndjson | {persist} --database-url '{url}' --create-table 2> {name}.err",
            ingest = bin("ingest-file"),
            persist = bin("persist"),
            url = pg.url(),
        );
        Std::new("bash")
            .args(["-c", &script])
            .current_dir(dir.root())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let rows = || crate::ingest_kafka::rows(&pg);
    let mut first = reader("first");
    crate::pipeline::eventually("100 rows", || rows() == 100);
    let mut second = reader("second");
    // The second one has claimed the file (epoch 2) once it is connected and reading.
    crate::pipeline::eventually("the second claim", || {
        pg.sql("SELECT max(epoch) FROM ndpipe_offsets WHERE \"group\" = 'file:x'") == "2"
    });
    append(&log, &ids(100..200));
    crate::pipeline::eventually("200 rows", || rows() == 200);
    let size = std::fs::metadata(&log).unwrap().len();
    crate::pipeline::eventually("the position at the end", || {
        pg.sql("SELECT next_offset FROM ndpipe_offsets WHERE \"group\" = 'file:x'")
            == size.to_string()
    });
    for child in [&mut first, &mut second] {
        let _ = Std::new("kill")
            .args(["-TERM", "--", &format!("-{}", child.id())])
            .status();
        child.wait().unwrap();
    }
    let fenced = |name: &str| -> u64 {
        let err = dir.read(&format!("{name}.err"));
        crate::persist::summary_count(&err, "fenced")
    };
    assert_eq!(fenced("first"), 100, "{}", dir.read("first.err"));
    assert_eq!(fenced("second"), 0, "{}", dir.read("second.err"));
}
