//! README.md cannot drift: every ```sh block runs here as written, and so does
//! `scripts/demo`.
//!
//! The blocks run in order, in one directory holding the files the README names
//! (`events.ndjson` is `examples/events.ndjson`, plus `event.schema.json`, `users.csv`,
//! `order.schema.json` and the README's own `etl.pipe`), with our binaries first on PATH, `DATABASE_URL` pointing at
//! a schema of this test's own in the tests' PostgreSQL and `KAFKA_BROKERS` at the tests'
//! broker (holding a topic `orders`). Each command (lines joined by `\`) runs with bash
//! under `set -euo pipefail` and must exit 0. `export NAME=VALUE` lines set the
//! environment of the commands after them. A command that serves until stopped
//! (`ingest-http`, `ingest-kafka` without `--exit-at-end`) runs in the background, in a
//! process group of its own, while the rest of its block runs ("in another terminal");
//! then the whole group gets SIGTERM, as Ctrl-C would give it, and must exit 0. The one
//! liberty taken: `127.0.0.1:8080` becomes a free port.
//!
//! The set-up block is checked apart: `scripts/demo` runs twice with the binaries under
//! test (`NDPIPE_BIN_DIR`), the second run storing nothing new, and `.ci/run` calls
//! `scripts/test`.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command as Std, Stdio};
use std::time::{Duration, Instant};

use crate::ingest_kafka::{produce_lines, Broker};
use crate::util::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ```sh blocks of README.md: the line each starts on, and its commands.
fn sh_blocks() -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    let mut pending = String::new();
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some((i + 2, Vec::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => {
                assert!(
                    pending.is_empty(),
                    "README.md:{}: unfinished `\\` line",
                    i + 1
                );
                blocks.push(current.take().unwrap());
            }
            Some((_, commands)) => {
                if pending.is_empty()
                    && (line.trim().is_empty() || line.trim_start().starts_with('#'))
                {
                    continue;
                }
                pending.push_str(line);
                if line.ends_with('\\') {
                    pending.push('\n');
                } else {
                    commands.push(std::mem::take(&mut pending));
                }
            }
        }
    }
    assert!(current.is_none(), "README.md: unclosed ```sh block");
    blocks
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves until stopped: runs in the background.
fn serves(command: &str) -> bool {
    command.starts_with("ingest-http")
        || (command.starts_with("ingest-kafka") && !command.contains("--exit-at-end"))
}

struct Shell<'a> {
    dir: &'a Dir,
    env: HashMap<String, String>,
}

impl Shell<'_> {
    fn command(&self, command: &str) -> Std {
        let mut c = Std::new("bash");
        c.arg("-c")
            .arg(format!("set -euo pipefail\n{command}"))
            .current_dir(self.dir.root())
            .env_remove("NDPIPE_LOG");
        for var in DB_VARS {
            c.env_remove(var);
        }
        c.envs(&self.env);
        c
    }

    fn run(&self, at: usize, command: &str) {
        let o = self.command(command).output().unwrap();
        assert!(
            o.status.success(),
            "README.md block at line {at}: `{command}` exited {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            out(&o),
            err(&o)
        );
    }

    fn spawn(&self, command: &str) -> Child {
        // The shell itself outlives the signal, as an interactive one does, and reports
        // the pipe's exit status (children get the default action back on exec).
        let mut c = self.command(&format!("trap true TERM INT\n{command}"));
        c.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        c.spawn().unwrap()
    }
}

/// Waits until something listens on `addr`.
fn wait_listening(addr: &str, server: &mut Child) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            server.try_wait().unwrap().is_none(),
            "the server at {addr} ended early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the whole process group of `child` (a Ctrl-C to the pipe); its exit.
fn stop(child: Child, command: &str) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "`{command}` did not end cleanly on SIGTERM: {:?}\n{}",
        o.status.code(),
        err(&o)
    );
}

/// The files the README's examples read.
pub fn fixtures(dir: &Dir) {
    let events = std::fs::read_to_string(repo().join("examples/events.ndjson")).unwrap();
    dir.create("events.ndjson", &events);
    std::fs::copy(
        repo().join("examples/event.schema.json"),
        dir.path("event.schema.json"),
    )
    .unwrap();
    let users: BTreeSet<i64> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("user_id").and_then(|u| u.as_i64()))
        .collect();
    let mut csv = String::from("user_id,name,plan\n");
    for (i, u) in users.iter().enumerate() {
        csv += &format!("{u},user-{u},{}\n", ["free", "pro"][i % 2]);
    }
    dir.create("users.csv", csv);
    dir.create(
        "order.schema.json",
        r#"{"type":"object","required":["id","amount"],"properties":{"amount":{"type":"number"}}}"#,
    );
    dir.create("etl.pipe", etl_pipe());
}

/// The `etl.pipe` the README shows: its first ```text block.
fn etl_pipe() -> String {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = text.find("```text\n").expect("a ```text block") + "```text\n".len();
    let len = text[start..].find("```").unwrap();
    text[start..start + len].to_owned()
}

#[test]
fn every_readme_example_runs_as_written() {
    let dir = Dir::new();
    fixtures(&dir);
    let pg = Pg::new("readme");
    // `persist --table raw.events` makes a schema `raw` of its own: start without it.
    pg.sql("DROP SCHEMA IF EXISTS raw CASCADE");
    let broker = Broker::start();
    let orders: String = (0..50)
        .map(|i| format!("{{\"id\":\"o-{i}\",\"amount\":{}.5}}\n", i * 3))
        .collect();
    let p = broker.producer();
    produce_lines(&p, "orders", &orders);
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).unwrap();

    let bins = Path::new(&bin("validate")).parent().unwrap().to_owned();
    let mut shell = Shell {
        dir: &dir,
        env: HashMap::from([
            (
                "PATH".to_owned(),
                format!("{}:{}", bins.display(), std::env::var("PATH").unwrap()),
            ),
            ("DATABASE_URL".to_owned(), pg.url()),
            ("KAFKA_BROKERS".to_owned(), broker.addr.clone()),
        ]),
    };
    let blocks = sh_blocks();
    assert!(
        blocks.len() >= 4,
        "README.md has its examples in ```sh blocks"
    );
    let mut ran = 0;
    for (at, commands) in blocks {
        if commands.iter().any(|c| c.starts_with("scripts/test")) {
            continue; // The set-up block: see the test below.
        }
        let port = free_port().to_string();
        let mut servers = Vec::new();
        for command in commands {
            let command = command.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
            if let Some(assign) = command.strip_prefix("export ") {
                let (name, value) = assign.split_once('=').expect("export NAME=VALUE");
                shell
                    .env
                    .insert(name.to_owned(), value.trim_matches('"').to_owned());
                continue;
            }
            if serves(&command) {
                let mut child = shell.spawn(&command);
                if command.starts_with("ingest-http") {
                    wait_listening(&format!("127.0.0.1:{port}"), &mut child);
                }
                servers.push((child, command));
            } else {
                shell.run(at, &command);
            }
            ran += 1;
        }
        if !servers.is_empty() {
            // Give the stages time to take in what the block sent, then Ctrl-C.
            std::thread::sleep(Duration::from_secs(3));
            for (child, command) in servers {
                stop(child, &command);
            }
        }
    }
    assert!(ran >= 12, "only {ran} README commands ran");
    // What the examples promise, checked where a silent failure would pass unseen.
    let joined = out(&shell
        .command("enrich --lookup users.csv --on user_id --prefix user. --jq '{id, user}' < events.ndjson | head -1")
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(joined.trim()).unwrap();
    assert!(
        v["user"]["name"].is_string(),
        "the join ran before jq: {joined}"
    );
    assert!(
        pg.sql("SELECT count(*) FROM raw.events")
            .parse::<u64>()
            .unwrap()
            > 900
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM orders WHERE key LIKE 'o-%'"),
        "50"
    );
    // pipeline's Kafka → PostgreSQL example, and its shell-and-pipeline pair.
    assert_eq!(pg.sql("SELECT count(*) FROM orders_eo"), "50");
    assert!(
        pg.sql("SELECT count(*) FROM events")
            .parse::<u64>()
            .unwrap()
            > 900
    );
    pg.sql("DROP SCHEMA IF EXISTS raw CASCADE");
}

#[test]
fn the_demo_runs_and_a_second_run_stores_nothing_new() {
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test"),
        ".ci/run calls scripts/test: {ci}"
    );
    let bins = Path::new(&bin("validate")).parent().unwrap().to_owned();
    let demo = || {
        let mut c = Std::new(repo().join("scripts/demo"));
        c.env("NDPIPE_BIN_DIR", &bins).env_remove("NDPIPE_LOG");
        for var in DB_VARS {
            c.env_remove(var);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "scripts/demo: {}", err(&o));
        o
    };
    let _ = std::fs::remove_file(repo().join("examples/out/ndpipe.db"));
    let first = demo();
    let stderr = err(&first);
    assert!(stderr.contains("persist: "), "{stderr}");
    let stored = crate::persist::summary_count(&stderr, "inserted");
    assert!(stored > 900, "{stderr}");
    assert_eq!(out(&first).lines().count(), 2, "the first rows stored");
    let second = demo();
    let stderr = err(&second);
    assert_eq!(
        crate::persist::summary_count(&stderr, "inserted"),
        0,
        "{stderr}"
    );
    assert_eq!(
        crate::persist::summary_count(&stderr, "updated"),
        0,
        "{stderr}"
    );
    assert_eq!(
        crate::persist::summary_count(&stderr, "unchanged"),
        stored,
        "{stderr}"
    );
}

/// `scripts/demo` runs the binaries where cargo built them (#24: with `CARGO_TARGET_DIR`
/// set, it built and then ran `target/release/pipeline`, exit 127): it asks cargo.
#[test]
fn the_demo_asks_cargo_where_it_builds() {
    let elsewhere = Dir::new();
    let ask = |target: Option<&Path>| {
        let mut c = Std::new("bash");
        c.args(["-c", ". scripts/lib.sh && cargo_target_dir"])
            .current_dir(repo())
            .env_remove("CARGO_TARGET_DIR");
        if let Some(t) = target {
            c.env("CARGO_TARGET_DIR", t);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        out(&o).trim_end().to_owned()
    };
    assert_eq!(
        ask(Some(elsewhere.root())),
        elsewhere.root().display().to_string()
    );
    assert_eq!(ask(None), repo().join("target").display().to_string());
    let demo = std::fs::read_to_string(repo().join("scripts/demo")).unwrap();
    assert!(demo.contains("bin=$(cargo_target_dir)/release"), "{demo}");
    assert!(!demo.contains("target/release"), "{demo}");
}
