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
    let bins = Path::new(&bin("validate")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap());
    // A terminal of 100 columns (a pseudo-terminal has none of its own without one).
    let command = format!("stty cols 100 rows 30; {command}");
    let o = Std::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(dir.root())
        .env("PATH", path)
        .env("TERM", "xterm")
        .env_remove("NDPIPE_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .expect("script(1) from util-linux runs");
    assert!(o.status.success(), "{command}: {}", err(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
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
