//! What a user sees on a terminal, captured from a pseudo-terminal with `script(1)`: one
//! progress display for a whole pipe, rounded numbers, summaries on lines of their own,
//! and log lines without colour under `NO_COLOR`.

use std::path::Path;
use std::process::Command as Std;

use crate::util::*;

/// Runs `command` with bash on a pseudo-terminal (stdin, stdout and stderr all the
/// terminal, as in an interactive shell) in `dir`, our binaries first on PATH; returns
/// everything the terminal received.
fn on_terminal(dir: &Dir, env: &[(&str, &str)], command: &str) -> String {
    // A terminal of 100 columns (a pseudo-terminal has none of its own without one).
    let o = script(dir, env, &format!("stty cols 100 rows 30; {command}"))
        .output()
        .expect("script(1) from util-linux runs");
    assert!(o.status.success(), "{command}: {}", err(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `script(1)` running `command` with bash on a pseudo-terminal in `dir`, our binaries
/// first on PATH, `TERM=xterm`, no `NDPIPE_LOG` or `NO_COLOR` unless `env` sets them.
fn script(dir: &Dir, env: &[(&str, &str)], command: &str) -> Std {
    let bins = Path::new(&bin("validate")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap());
    let mut script = Std::new("script");
    script
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .current_dir(dir.root())
        .env("PATH", path)
        .env("TERM", "xterm")
        .env_remove("NDPIPE_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied());
    script
}

/// The lines the terminal showed one after the other: the text between carriage
/// returns and newlines, without the clear-line sequences.
fn frames(screen: &str) -> Vec<String> {
    screen
        .split(['\r', '\n'])
        .map(|f| f.replace("\x1b[2K", "").replace("\x1b[K", ""))
        .map(|f| f.trim_end().to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

fn matches(re: &str, s: &str) -> bool {
    predicates::str::is_match(re).unwrap().eval(s)
}

use predicates::Predicate;

/// A progress frame of `stage` reading a pipe: spinner, events, rounded rate, the
/// optional rejects and extras, elapsed.
fn pipe_frame(stage: &str) -> String {
    format!(
        r"^. {stage}: [0-9,]+ events \(([0-9,]+|–)/s\) (· [0-9,]+ rejected )?(· [0-9,]+ batches · [0-9,]+ retries )?· [0-9]+s$"
    )
}

#[test]
fn a_three_stage_pipe_draws_one_progress_line() {
    let dir = Dir::new();
    gen_events(&dir, "in.ndjson", 200_000, &["--bad", "0.01"]);
    let screen = on_terminal(
        &dir,
        &[],
        "validate --require id --dead-letter dl.ndjson in.ndjson | enrich --set a=1 \
         | persist --sqlite x.db --create-table --dead-letter dl.ndjson",
    );
    let frames = frames(&screen);
    let progress: Vec<&String> = frames.iter().filter(|f| f.contains(" events (")).collect();
    assert!(!progress.is_empty(), "no progress drawn: {screen:?}");
    // Only the last command draws; its every frame is whole and rounded.
    for f in &progress {
        assert!(
            matches(&pipe_frame("persist"), f),
            "frame {f:?} in {screen:?}"
        );
    }
    // The summaries: each on a line of its own, the same words, thousands separators,
    // elapsed time; the last one ends the screen.
    let summaries: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains(" events in, "))
        .collect();
    assert_eq!(summaries.len(), 2, "{frames:#?}");
    assert!(
        matches(
            r"^validate: 200,000 events in, [0-9,]+ out, [0-9,]+ rejected \(dead letters in dl.ndjson\) · [0-9]+\.[0-9] s$",
            summaries[0]
        ),
        "{:?}",
        summaries[0]
    );
    assert!(
        matches(
            r"^persist: [0-9,]+ events in, [0-9,]+ out \([0-9,]+ inserted, 0 updated, 0 unchanged, 0 deleted, [0-9,]+ superseded in their batch\), [0-9,]+ rejected \(dead letters in dl.ndjson\), 0 fenced, [0-9,]+ batches, 0 retries · [0-9]+\.[0-9] s$",
            summaries[1]
        ),
        "{:?}",
        summaries[1]
    );
    assert_eq!(frames.last(), Some(summaries[1]), "{frames:#?}");
}

#[test]
fn a_file_of_known_size_shows_percent_bytes_and_eta() {
    let dir = Dir::new();
    gen_events(&dir, "in.ndjson", 300_000, &[]);
    let screen = on_terminal(&dir, &[], "validate --require id in.ndjson > out.ndjson");
    let frames = frames(&screen);
    let progress: Vec<&String> = frames.iter().filter(|f| f.contains(" events (")).collect();
    assert!(!progress.is_empty(), "no progress drawn: {screen:?}");
    for f in &progress {
        assert!(
            matches(
                r"^. validate: [0-9,]+ events \(([0-9,]+|–)/s\) \[[=> ]{10}\] [0-9]+% of [0-9.]+ [KMG]iB · ETA [0-9]+s$",
                f
            ),
            "frame {f:?}"
        );
    }
    assert!(
        matches(
            r"^validate: 300,000 events in, 300,000 out, 0 rejected · [0-9]+\.[0-9] s$",
            frames.last().unwrap()
        ),
        "{frames:#?}"
    );
}

/// ingest-file's backfill: a bar over the bytes of every file it matched.
#[test]
fn an_ingest_file_backfill_shows_a_bar_over_the_files_bytes() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    gen_events(&dir, "logs/a.ndjson", 300_000, &[]);
    gen_events(&dir, "logs/b.ndjson", 100_000, &[]);
    let screen = on_terminal(&dir, &[], "ingest-file 'logs/*.ndjson' > out.ndjson");
    let frames = frames(&screen);
    let progress: Vec<&String> = frames.iter().filter(|f| f.contains(" events (")).collect();
    assert!(!progress.is_empty(), "no progress drawn: {screen:?}");
    for f in &progress {
        assert!(
            matches(
                r"^. ingest-file: [0-9,]+ events \(([0-9,]+|–)/s\) \[[=> ]{10}\] [0-9]+% of [0-9.]+ [KMG]iB · ETA [0-9]+s$",
                f
            ),
            "frame {f:?}"
        );
    }
    assert!(
        matches(
            r"^ingest-file: 400,000 events in, 400,000 out, 0 rejected, 2 files · [0-9]+\.[0-9] s$",
            frames.last().unwrap()
        ),
        "{frames:#?}"
    );
}

#[test]
fn log_lines_have_no_colour_under_no_color() {
    let dir = Dir::new();
    let run = |env: &[(&str, &str)]| {
        on_terminal(
            &dir,
            env,
            "timeout -s TERM 2 ingest-http --listen 127.0.0.1:0 > /dev/null; true",
        )
    };
    // Colours on a terminal by default (so this test can fail)...
    let coloured = run(&[]);
    assert!(coloured.contains("listening on"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b[32m") || coloured.contains("\x1b[2m"),
        "{coloured:?}"
    );
    // ...and none with NO_COLOR: only the clear-line sequence before each line remains.
    let plain = run(&[("NO_COLOR", "1")]);
    assert!(plain.contains("listening on"), "{plain:?}");
    let without_clears = plain.replace("\x1b[K", "").replace("\x1b[2K", "");
    assert!(!without_clears.contains('\x1b'), "{plain:?}");
}

/// `pipeline` on a terminal: one line per stage, with its rate and the fill of the
/// channel in front of it; then a summary line per stage and the totals.
#[test]
fn pipeline_draws_one_line_per_stage() {
    let dir = Dir::new();
    gen_events(&dir, "in.ndjson", 20_000, &[]);
    let screen = on_terminal(
        &dir,
        &[],
        "(for i in 1 2 3 4 5; do cat in.ndjson; sleep 0.3; done) \
         | pipeline 'validate --require id | enrich --set a=1' > out.ndjson",
    );
    // Lines redrawn in place: drop the cursor moves between them.
    // indicatif pads every line to the terminal's width and lets the terminal wrap it:
    // a run of spaces ends a line too.
    let cursor = regex_lite(&screen);
    let frames: Vec<String> = frames(&cursor)
        .iter()
        .flat_map(|f| {
            f.split("   ")
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty())
        .collect();
    let progress: Vec<&String> = frames.iter().filter(|f| f.contains(" events (")).collect();
    for stage in ["1/2 validate", "2/2 enrich"] {
        assert!(
            progress.iter().any(|f| f.contains(stage)),
            "no line of {stage}: {frames:#?}"
        );
    }
    for f in &progress {
        assert!(
            matches(
                r"^. [12]/2 (validate|enrich): [0-9,]+ events \(([0-9,]+|–)/s\) · channel [0-9,]+ of 10,000$",
                f
            ),
            "frame {f:?}"
        );
    }
    let n = frames.len();
    assert!(n >= 3, "{frames:#?}");
    assert!(
        matches(
            r"^pipeline: validate: 100,000 in, 100,000 out, 0 rejected$",
            &frames[n - 3]
        ),
        "{frames:#?}"
    );
    assert!(
        matches(
            r"^pipeline: 100,000 events in, 100,000 out, 0 rejected · [0-9]+\.[0-9] s$",
            &frames[n - 1]
        ),
        "{frames:#?}"
    );
}

/// The screen without cursor-up/down sequences: each redrawn line becomes a frame.
fn regex_lite(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut rest = screen;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        match tail[digits..].chars().next() {
            Some('A') | Some('B') => {
                out.push('\n');
                rest = &tail[digits + 1..];
            }
            _ => {
                out.push_str("\x1b[");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs `command` as [`on_terminal`] does, and types `key` once the terminal has shown
/// `frames` frames of the live view ("q quits" in their title); returns the exit status
/// of `command` and everything the terminal received.
fn on_terminal_pressing(
    dir: &Dir,
    env: &[(&str, &str)],
    command: &str,
    key: &str,
    frames: usize,
) -> (i32, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let mut child = script(dir, env, &format!("stty cols 120 rows 40; {command}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs");
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || {
        String::from_utf8_lossy(&screen.lock().unwrap())
            .matches("q quits")
            .count()
    };
    let start = std::time::Instant::now();
    while shown() < frames {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no {frames} frames: {:?}",
            String::from_utf8_lossy(&screen.lock().unwrap())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(key.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let screen = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    (status.code().unwrap_or(-1), screen)
}

/// A steady trickle of `ev.ndjson`'s first 1,000 lines, 20 times a second for 20 s.
const TRICKLE: &str = "for i in $(seq 400); do head -n 1000 ev.ndjson || break; sleep 0.05; done";

/// The frames of the live view in what the terminal received: the text from each
/// return-to-top-left to the next, split in lines.
fn view_frames(screen: &str) -> Vec<Vec<String>> {
    screen
        .split("\x1b[H")
        .skip(1)
        .map(|f| {
            f.split("\r\n")
                .map(|l| l.replace("\x1b[K", "").replace("\x1b[J", ""))
                .collect()
        })
        .collect()
}

/// `pipeline --top` on a terminal: the view takes the alternate screen, shows a row per
/// stage with rates from the run's own counts, the channel fill and persist's commits;
/// q ends the run as Ctrl-C would (the summary after the view, exit 130, everything read
/// handled), and the terminal is given back.
#[test]
fn pipeline_top_draws_every_stage_and_q_ends_the_run() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 1000, &[]);
    let (code, screen) = on_terminal_pressing(
        &dir,
        &[],
        &format!(
            "{TRICKLE} | pipeline --top --shutdown-timeout 1s \
             'validate --require id | enrich --set top=true | persist --sqlite top.db --create-table --emit' \
             > out.ndjson"
        ),
        "q",
        3,
    );
    assert_eq!(code, 130, "{screen:?}");
    let enter = screen.find("\x1b[?1049h").expect("the alternate screen");
    let leave = screen.rfind("\x1b[?1049l").expect("the screen given back");
    assert!(enter < leave);
    let frames = view_frames(&screen[enter..leave]);
    let last = frames.last().unwrap();
    assert!(
        last[0].starts_with("ndpipe top · this pipeline · "),
        "{last:?}"
    );
    assert!(
        last.iter().any(|l| l.contains("\x1b[1mSTAGE")),
        "bold header: {last:?}"
    );
    for stage in ["reader", "validate", "enrich", "persist"] {
        let row = last
            .iter()
            .find(|l| l.starts_with(&format!("{stage} ")))
            .unwrap_or_else(|| panic!("no {stage} row in {last:?}"));
        let in_rate: u64 = row
            .split_whitespace()
            .nth(1)
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap();
        assert!(in_rate > 1000, "{row}");
    }
    assert!(
        last.iter()
            .any(|l| l.contains("commits ") && l.contains(" per commit")),
        "{last:?}"
    );
    // After the view: the summary, with what was written.
    let after = &screen[leave..];
    let written = std::fs::read_to_string(dir.path("out.ndjson"))
        .unwrap()
        .lines()
        .count();
    let n = ndpipe::human::count(written as u64);
    let summary = format!("pipeline: persist: {n} in, {n} out");
    assert!(after.contains(&summary), "{summary} in {after:?}");
    assert!(
        after.contains("pipeline: interrupted: stopped after line"),
        "{after:?}"
    );
}

/// `pipeline top ADDR` watches a command already running with `--metrics-listen`; q
/// leaves it (exit 0) and the command runs on. Under NO_COLOR nothing is coloured.
#[test]
fn pipeline_top_watches_a_running_command_over_its_address() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 1000, &[]);
    let port = crate::pipeline::free_port();
    let (code, screen) = on_terminal_pressing(
        &dir,
        &[("NO_COLOR", "1")],
        &format!(
            "{TRICKLE} | validate --require id --metrics-listen 127.0.0.1:{port} > out.ndjson & \
             until curl -s 127.0.0.1:{port}/health > /dev/null; do sleep 0.1; done; \
             pipeline top 127.0.0.1:{port}; echo top ended $?; \
             curl -s 127.0.0.1:{port}/health > /dev/null && echo validate runs on; kill $!"
        ),
        "q",
        3,
    );
    assert!(screen.contains("top ended 0"), "{screen:?}");
    assert_eq!(code, 0);
    let frames = view_frames(&screen);
    let last = frames.last().unwrap();
    assert!(last[0].starts_with(&format!("ndpipe top · 127.0.0.1:{port} · ")));
    assert!(last.iter().any(|l| l.starts_with("STAGE")), "{last:?}");
    let row = last.iter().find(|l| l.starts_with("validate ")).unwrap();
    let out_rate: u64 = row
        .split_whitespace()
        .nth(2)
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(out_rate > 1000, "{row}");
    assert!(!screen.contains("\x1b[1m"), "NO_COLOR: {screen:?}");
    // The command was not stopped by the view.
    assert!(screen.contains("validate runs on"), "{screen:?}");
}

/// `pipeline --top` and `pipeline top ADDR` need a terminal to draw on: without one on
/// stderr they are refused at once (64), before anything is read.
#[test]
fn top_without_a_terminal_is_refused_before_anything_runs() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 100, &[]);
    for args in [
        vec!["--top", "validate --require id", "ev.ndjson"],
        vec!["top", "127.0.0.1:9"],
    ] {
        let o = Std::new(bin("pipeline"))
            .args(&args)
            .current_dir(dir.root())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", err(&o));
        assert!(
            err(&o).contains("top needs a terminal on stderr"),
            "{}",
            err(&o)
        );
        assert!(o.stdout.is_empty(), "nothing ran: {}", out(&o));
    }
}
