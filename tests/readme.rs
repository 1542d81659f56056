//! README.md and every `--help` cannot drift: every ```sh block of the README and every
//! example of a command's help runs here as written, with what it promises checked; and
//! so does `scripts/demo`.
//!
//! The commands run in order, in one directory holding the files they name
//! (`events.ndjson` is `examples/events.ndjson`, plus `event.schema.json`, `users.csv`,
//! `order.schema.json`, `token.txt` and the README's own `etl.pipe`), with our binaries
//! first on PATH, `DATABASE_URL` pointing at a schema of the test's own in the tests'
//! PostgreSQL and `KAFKA_BROKERS` at the tests' broker (holding 50 orders). Each command
//! (lines joined by `\`) runs with bash under `set -euo pipefail` and must exit 0; a check
//! of its effect (files, rows, what it printed) must exist for it, or the test fails.
//! `export NAME=VALUE` lines set the environment of the commands after them. A command
//! that serves until stopped (`ingest-http`, `ingest-kafka` without `--exit-at-end`, a
//! pipeline with either) runs in the background, in a process group of its own, while the
//! rest of its block runs ("in another terminal"); then the whole group gets SIGTERM, as
//! Ctrl-C would give it, and must exit 0. The liberties taken: `127.0.0.1:8080` becomes a
//! free port, `127.0.0.1:9092` the test broker, `127.0.0.1:8081` a users service the test
//! starts (`GET /users/ID` answers `{"id":"ID","name":"user ID"}`), the topic `orders` one
//! of the test's own, and an exported `DATABASE_URL` or `KAFKA_BROKERS` the test's servers.
//!
//! The set-up block is checked apart: `scripts/demo` runs twice with the binaries under
//! test (`NDPIPE_BIN_DIR`), the second run storing nothing new, and `.ci/run` calls
//! `scripts/test`.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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

/// Serves until stopped (a server, a consumer without `--exit-at-end`, or a pipeline with
/// one as a source): runs in the background.
fn serves(command: &str) -> bool {
    !command.contains("--explain")
        && (command.contains("ingest-http")
            || (command.contains("ingest-kafka") && !command.contains("--exit-at-end"))
            || (command.contains("ingest-file") && command.contains("--follow")))
}

struct Shell {
    dir: PathBuf,
    env: HashMap<String, String>,
    /// The test's topic, standing for `orders`.
    topic: String,
    /// The test's users service (`/users/{id}`), standing for `127.0.0.1:8081`.
    users: String,
}

impl Shell {
    /// `command` with the liberties the tests take: `127.0.0.1:8080` is the free `port`,
    /// `127.0.0.1:9092` the test broker, the topic `orders` the test's own.
    fn literally(&self, command: &str, port: &str, broker: &str) -> String {
        command
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9092", broker)
            .replace("127.0.0.1:8081", &self.users)
            .replace("--topic orders", &format!("--topic {}", self.topic))
    }

    fn command(&self, command: &str) -> Std {
        let mut c = Std::new("bash");
        c.arg("-c")
            .arg(format!("set -euo pipefail\n{command}"))
            .current_dir(&self.dir)
            .env_remove("NDPIPE_LOG");
        for var in DB_VARS {
            c.env_remove(var);
        }
        c.envs(&self.env);
        c
    }

    /// Runs `command` to its end; its stdout. `at` says where it stands, for messages.
    fn run(&self, at: &str, command: &str) -> String {
        let o = self.command(command).output().unwrap();
        assert!(
            o.status.success(),
            "{at}: `{command}` exited {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            out(&o),
            err(&o)
        );
        out(&o)
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
    dir.create("token.txt", "change-me\n");
    // ingest-file's logs: the events that are JSON objects, as they are written, half in
    // logs/app-1.ndjson, half in logs/archive/app-0.ndjson.
    let lines: Vec<&str> = events
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()))
        .collect();
    let half = lines.len() / 2;
    std::fs::create_dir_all(dir.path("logs/archive")).unwrap();
    dir.create("logs/archive/app-0.ndjson", lines[half..].join("\n") + "\n");
    dir.create("logs/app-1.ndjson", lines[..half].join("\n") + "\n");
}

/// The events of the files under `logs/` that `glob_all` says (all of them, or only
/// logs/*.ndjson), and the bytes of those files.
fn logs(dir: &Path, glob_all: bool) -> (Vec<serde_json::Value>, u64) {
    let mut files = vec![dir.join("logs/app-1.ndjson")];
    if glob_all {
        files.push(dir.join("logs/archive/app-0.ndjson"));
    }
    let mut events = Vec::new();
    let mut bytes = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        bytes += text.len() as u64;
        events.extend(values(&text));
    }
    (events, bytes)
}

/// The `etl.pipe` the README shows: its first ```text block.
fn etl_pipe() -> String {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = text.find("```text\n").expect("a ```text block") + "```text\n".len();
    let len = text[start..].find("```").unwrap();
    text[start..start + len].to_owned()
}

/// What the README's and the helps' examples are run against: the fixtures, the test's
/// own PostgreSQL schema, and the test broker with a topic `orders` of 50 orders.
struct Setting {
    dir: Dir,
    pg: Pg,
    broker: Broker,
    shell: Shell,
    /// Kept for `shell.users`: serves until dropped.
    _users: crate::enrich_http::Service,
}

impl Setting {
    fn new(name: &str) -> Setting {
        let dir = Dir::new();
        fixtures(&dir);
        let pg = Pg::new(name);
        // `persist --table raw.events` makes a schema `raw` of its own: start without it.
        pg.sql("DROP SCHEMA IF EXISTS raw CASCADE");
        let broker = Broker::start();
        let topic = format!("orders-{name}-{}", std::process::id());
        let orders: String = (0..50)
            .map(|i| format!("{{\"id\":\"o-{i}\",\"amount\":{}.5}}\n", i * 3))
            .collect();
        let p = broker.producer();
        produce_lines(&p, &topic, &orders);
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).unwrap();
        let bins = Path::new(&bin("validate")).parent().unwrap().to_owned();
        let users = crate::enrich_http::Service::start();
        let shell = Shell {
            users: format!("127.0.0.1:{}", users.port),
            dir: dir.root().to_owned(),
            env: HashMap::from([(
                "PATH".to_owned(),
                format!("{}:{}", bins.display(), std::env::var("PATH").unwrap()),
            )]),
            topic,
        };
        Setting {
            dir,
            pg,
            broker,
            shell,
            _users: users,
        }
    }

    /// Runs `commands` in order as a user would in one shell session: `export` sets the
    /// environment of what follows, servers run in the background until the end, when
    /// their whole group gets SIGTERM. `check` is called with each command and what it
    /// printed once it has ended (servers: once stopped, with nothing), and says whether
    /// it checked that command's effect.
    fn session(
        &mut self,
        at: &str,
        commands: &[String],
        check: &mut dyn FnMut(&str, &str) -> bool,
    ) {
        let port = free_port().to_string();
        let mut servers = Vec::new();
        let mut unchecked = Vec::new();
        for command in commands {
            let command = self.shell.literally(command, &port, &self.broker.addr);
            if let Some(assign) = command.strip_prefix("export ") {
                let (name, value) = assign.split_once('=').expect("export NAME=VALUE");
                let value = match name {
                    // The reader's server names stand for the test's own.
                    "DATABASE_URL" => self.pg.url(),
                    "KAFKA_BROKERS" => self.broker.addr.clone(),
                    _ => value.trim_matches('"').to_owned(),
                };
                self.shell.env.insert(name.to_owned(), value);
                continue;
            }
            if serves(&command) {
                let mut child = self.shell.spawn(&command);
                if command.contains("ingest-http") {
                    wait_listening(&format!("127.0.0.1:{port}"), &mut child);
                }
                servers.push((child, command));
            } else {
                let stdout = self.shell.run(at, &command);
                if !check(&command, &stdout) {
                    unchecked.push(command);
                }
            }
        }
        if !servers.is_empty() {
            // Give the stages time to take in what the commands sent, then Ctrl-C.
            std::thread::sleep(Duration::from_secs(3));
            for (child, command) in servers {
                stop(child, &command);
                if !check(&command, "") {
                    unchecked.push(command);
                }
            }
        }
        assert!(
            unchecked.is_empty(),
            "{at}: no test checks what these do: {unchecked:#?}"
        );
    }
}

/// The fixture's events, parsed where they are JSON objects.
fn objects(dir: &Dir) -> Vec<serde_json::Value> {
    dir.read("events.ndjson")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// What `event.schema.json` accepts (required id, type, amount; their types; the
/// currency list; an integer user_id).
fn fits_schema(v: &serde_json::Value) -> bool {
    let currency = ["USD", "EUR", "GBP", "JPY", "CHF"];
    v["id"].is_string()
        && v.get("type").is_some()
        && v["amount"].as_f64().is_some_and(|a| a >= 0.0)
        && v.get("currency")
            .is_none_or(|c| c.as_str().is_some_and(|c| currency.contains(&c)))
        && v.get("user_id").is_none_or(|u| u.is_i64() || u.is_u64())
}

/// How many distinct ids the events `keep` lets through have.
fn distinct_ids(events: &[serde_json::Value], keep: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .iter()
        .filter(|v| keep(v))
        .map(|v| v["id"].to_string())
        .collect::<BTreeSet<_>>()
        .len()
}

fn count(pg: &Pg, sql: &str) -> usize {
    pg.sql(sql).parse().unwrap()
}

/// Every line of `text` as JSON.
fn lines_json(text: &str) -> Vec<serde_json::Value> {
    values(text)
}

#[test]
fn every_readme_example_runs_as_written() {
    let mut setting = Setting::new("readme");
    setting
        .shell
        .env
        .insert("DATABASE_URL".to_owned(), setting.pg.url());
    setting
        .shell
        .env
        .insert("KAFKA_BROKERS".to_owned(), setting.broker.addr.clone());
    let blocks = sh_blocks();
    assert!(
        blocks.len() >= 4,
        "README.md has its examples in ```sh blocks"
    );
    let dir_path = setting.dir.root().to_owned();
    let read = |name: &str| std::fs::read_to_string(dir_path.join(name)).unwrap();
    let events = objects(&setting.dir);
    let with_id = |v: &serde_json::Value| v.get("id").is_some();
    let with_id_type = |v: &serde_json::Value| v.get("id").is_some() && v.get("type").is_some();
    let pg = Pg {
        base: setting.pg.base.clone(),
        schema: setting.pg.schema.clone(),
    };
    // The rows of `events` the shell pipe stored, for pipeline to store the same.
    let mut shell_rows: Option<String> = None;
    let snapshot = |pg: &Pg| pg.sql("SELECT key, payload::text FROM events ORDER BY key");
    let mut ran = 0;
    let mut check = |command: &str, stdout: &str| -> bool {
        ran += 1;
        let c = |needle: &str| command.contains(needle);
        if c("cat events.ndjson | validate --schema") {
            let n = distinct_ids(&events, fits_schema);
            assert_eq!(count(&pg, "SELECT count(*) FROM events"), n);
            assert_eq!(
                count(
                    &pg,
                    "SELECT count(*) FROM events WHERE payload ? 'processed_at'"
                ),
                n
            );
        } else if c("--dead-letter rejects.ndjson events.ndjson > valid.ndjson") {
            let valid = lines_json(&read("valid.ndjson"));
            assert_eq!(
                valid.len(),
                events.iter().filter(|v| fits_schema(v)).count()
            );
            assert!(valid.iter().all(fits_schema));
        } else if c("> checked.ndjson") {
            let checked = lines_json(&read("checked.ndjson"));
            assert!(checked.len() > 900, "{}", checked.len());
            assert!(checked.iter().all(|v| with_id_type(v)
                && v.get("amount").is_none_or(|a| a.is_number())
                && v["meta"]
                    .get("seq")
                    .is_none_or(|s| s.is_u64() || s.is_i64())));
        } else if c("events.ndjson.gz | wc -l") {
            let n = events.iter().filter(|v| with_id(v)).count();
            assert_eq!(stdout.trim(), n.to_string());
        } else if c("> stamped.ndjson") {
            let stamped = lines_json(&read("stamped.ndjson"));
            assert_eq!(stamped.len(), events.iter().filter(|v| with_id(v)).count());
            assert_eq!(
                read("valid.ndjson").lines().count(),
                stamped.len(),
                "the tee copy"
            );
            assert!(stamped.iter().all(|v| v["env"] == "prod"
                && v["processed_at"].is_string()
                && v["key"].is_string()));
        } else if c("> with_users.ndjson") {
            let out = lines_json(&read("with_users.ndjson"));
            assert_eq!(out.len(), events.len(), "each event looked up");
            assert!(out
                .iter()
                .all(|v| v["user"]["name"] == format!("user {}", v["user_id"]).as_str()));
        } else if c("> with_rows.ndjson") {
            let out = lines_json(&read("with_rows.ndjson"));
            assert_eq!(out.len(), events.iter().filter(|v| with_id(v)).count());
            let stored = pg.sql("SELECT key FROM events");
            let stored: BTreeSet<&str> = stored.lines().collect();
            for v in &out {
                let key = match &v["id"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if stored.contains(key.as_str()) {
                    assert!(v["stored"]["first_seen"].is_string(), "{v}");
                } else {
                    assert!(v["stored"].is_null(), "{v}");
                }
            }
            assert!(out.iter().filter(|v| v["stored"].is_object()).count() > 900);
        } else if c("--jq '.tags[] as $t | {id, user, tag: $t}'") {
            let out = lines_json(stdout);
            assert_eq!(out.len(), 3);
            // One event per tag, each stamped with its place among them.
            assert!(out.iter().all(|v| v["user"]["name"].is_string()
                && v["tag"].is_string()
                && v["_meta"]["split"]["count"].is_u64()
                && v.as_object().unwrap().len() == 4));
        } else if c("persist --table raw.events") {
            let n = distinct_ids(&events, |v| {
                (v["id"].is_string() || v["id"].is_u64()) && v["meta"]["seq"].is_u64()
            });
            assert_eq!(count(&pg, "SELECT count(*) FROM raw.events"), n);
        } else if c("--emit < events.ndjson | tee committed.ndjson | wc -l") {
            let committed = read("committed.ndjson").lines().count();
            assert_eq!(stdout.trim(), committed.to_string());
            let rows = count(&pg, "SELECT count(*) FROM orders");
            assert!(
                rows > 900 && rows <= committed,
                "{rows} rows, {committed} committed"
            );
            assert_eq!(
                count(
                    &pg,
                    "SELECT count(*) FROM orders WHERE amount = (payload->>'amount')::numeric"
                ),
                rows
            );
        } else if c("persist --table orders --show | head -2") {
            let shown = lines_json(stdout);
            assert_eq!(shown.len(), 2);
            assert!(shown
                .iter()
                .all(|v| v["key"].is_string() && v["payload"].is_object()));
        } else if c("> enriched.ndjson") {
            let enriched = lines_json(&read("enriched.ndjson"));
            assert_eq!(enriched.len(), events.iter().filter(|v| with_id(v)).count());
            assert!(enriched.iter().all(|v| v["env"] == "prod"));
            let dl = lines_json(&read("dl.ndjson"));
            assert!(dl.iter().any(|d| d["stage"] == "validate"), "a shared file");
        } else if c("| persist --table events --create-table")
            && !c("pipeline")
            && !c("ingest-http")
        {
            // The shell half of the shell-and-pipeline pair.
            let n = distinct_ids(&events, with_id_type);
            assert_eq!(
                count(
                    &pg,
                    "SELECT count(*) FROM events WHERE payload->>'env' = 'prod'"
                ),
                n
            );
            shell_rows = Some(snapshot(&pg));
        } else if c("pipeline --dead-letter rejects.ndjson \"validate")
            || c("pipeline --file etl.pipe")
        {
            // pipeline stores what the shell pipe stored, row for row.
            assert_eq!(Some(snapshot(&pg)), shell_rows, "{command}");
        } else if c("pipeline --explain") {
            assert!(stdout.contains("pipeline: 3 stages"), "{stdout}");
            assert!(stdout.contains("writes seen.ndjson"), "{stdout}");
            assert!(
                !dir_path.join("seen.ndjson").exists(),
                "--explain touches nothing"
            );
        } else if c("--offsets-name orders-eo") {
            assert_eq!(count(&pg, "SELECT count(*) FROM orders_eo"), 50);
            assert_eq!(
                pg.sql("SELECT sum(next_offset) FROM ndpipe_offsets WHERE \"group\" = 'orders-eo'"),
                "50"
            );
        } else if c("ingest-http --listen") {
            // Every event the POST below gave was stored, without the earlier stamps.
            let n = distinct_ids(&events, fits_schema);
            assert_eq!(
                count(&pg, "SELECT count(*) FROM events WHERE NOT payload ? 'env'"),
                n
            );
        } else if c("curl ") {
            let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(answer["accepted"], events.len(), "{answer}");
            assert_eq!(answer["rejected"], 1000 - events.len(), "{answer}");
        } else if c("--offset beginning --exit-at-end > orders.ndjson") {
            let orders = lines_json(&read("orders.ndjson"));
            assert_eq!(orders.len(), 50);
            assert!(orders.iter().all(|o| o["_meta"]["source"] == "kafka"));
        } else if c("persist --table file_events") {
            let (logged, _) = logs(&dir_path, true);
            let n = distinct_ids(&logged, |v| v.get("id").is_some());
            assert_eq!(count(&pg, "SELECT count(*) FROM file_events"), n);
        } else if c("--positions-name loader") {
            let (logged, bytes) = logs(&dir_path, false);
            let n = distinct_ids(&logged, |v| v.get("id").is_some());
            assert_eq!(count(&pg, "SELECT count(*) FROM followed"), n);
            assert_eq!(
                pg.sql(
                    "SELECT sum(next_offset) FROM ndpipe_offsets WHERE \"group\" = 'file:loader'"
                ),
                bytes.to_string()
            );
        } else if c("--group loader --offsets-from") {
            assert_eq!(
                count(&pg, "SELECT count(*) FROM orders WHERE key LIKE 'o-%'"),
                50
            );
        } else {
            return false;
        }
        true
    };
    for (at, commands) in blocks {
        if commands.iter().any(|c| c.starts_with("scripts/test")) {
            continue; // The set-up block: see the test below.
        }
        setting.session(
            &format!("README.md block at line {at}"),
            &commands,
            &mut check,
        );
    }
    assert!(ran >= 19, "only {ran} README commands ran");
    setting.pg.sql("DROP SCHEMA IF EXISTS raw CASCADE");
    std::mem::forget(pg); // The same schema as setting.pg: dropped once, by it.
}

/// The examples of every command's `--help` (and so of its man page), by paragraph: each
/// paragraph's commands are the lines indented four spaces or more, joined as the shell
/// joins them (`\` continuations, newlines inside quotes).
fn help_examples(help: &str) -> Vec<Vec<String>> {
    let examples = &help[help.find("\nExamples:\n").expect("an Examples section") + 11..];
    let mut paragraphs = vec![Vec::new()];
    let mut pending = String::new();
    for line in examples.lines() {
        if !pending.is_empty() {
            pending.push('\n');
            pending.push_str(line);
        } else if line.trim().is_empty() {
            if !paragraphs.last().unwrap().is_empty() {
                paragraphs.push(Vec::new());
            }
            continue;
        } else if line.starts_with("    ") {
            pending.push_str(line.trim_start());
        } else {
            continue; // A title.
        }
        if !(pending.ends_with('\\') || open_quote(&pending)) {
            paragraphs
                .last_mut()
                .unwrap()
                .push(std::mem::take(&mut pending));
        }
    }
    assert!(pending.is_empty(), "an unfinished example: {pending}");
    paragraphs.retain(|p| !p.is_empty());
    paragraphs
}

/// Whether `text` ends inside a quoted string, as the shell reads it.
fn open_quote(text: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') | (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some()
}

/// Every example of every command's `--help` runs as a user would copy it (#24: three
/// helps' examples failed), each command's in one shell session, with the effect it
/// promises checked. The liberties taken are the README test's: `127.0.0.1:8080` is a
/// free port, `127.0.0.1:9092` and an exported `KAFKA_BROKERS` are the test broker, an
/// exported `DATABASE_URL` is the test's own database, and `orders` the test's topic.
#[test]
fn every_help_example_runs_as_written() {
    let mut total = 0;
    for name in [
        "validate",
        "enrich",
        "persist",
        "ingest-file",
        "ingest-http",
        "ingest-kafka",
        "pipeline",
    ] {
        let help = out(&Std::new(bin(name)).arg("--help").output().unwrap());
        let mut setting = Setting::new(&format!("help_{}", name.replace('-', "_")));
        let dir_path = setting.dir.root().to_owned();
        let read = |file: &str| std::fs::read_to_string(dir_path.join(file)).unwrap_or_default();
        let events = objects(&setting.dir);
        let pg = Pg {
            base: setting.pg.base.clone(),
            schema: setting.pg.schema.clone(),
        };
        let sqlite_rows = |table: &str| {
            let db = dir_path.join("ndpipe.db");
            crate::persist::sqlite_rows(&db, table).len()
        };
        let mut check = |command: &str, stdout: &str| -> bool {
            total += 1;
            let c = |needle: &str| command.contains(needle);
            match name {
                "validate" if c("--schema") => {
                    let valid = lines_json(stdout);
                    assert_eq!(
                        valid.len(),
                        events.iter().filter(|v| fits_schema(v)).count()
                    );
                    assert_eq!(read("rejects.ndjson").lines().count(), 1000 - valid.len());
                }
                "validate" if c("> checked.ndjson") => {
                    assert!(lines_json(&read("checked.ndjson")).len() > 900);
                }
                "validate" => {
                    let valid = lines_json(&read("valid.ndjson"));
                    assert_eq!(
                        valid.len(),
                        events.iter().filter(|v| v.get("id").is_some()).count()
                    );
                }
                "enrich" if c("--timestamp") => {
                    let out = lines_json(stdout);
                    assert_eq!(out.len(), events.len());
                    assert!(out.iter().all(|v| v["env"] == "prod"
                        && v["received_at"].is_string()
                        && v["event_key"].is_string()));
                }
                "enrich" if c("--lookup") => {
                    let out = lines_json(stdout);
                    assert!(
                        out.iter()
                            .filter(|v| v["user.name"].is_string() || v["user"]["name"].is_string())
                            .count()
                            > 900
                    );
                }
                "enrich" if c("--http") => {
                    let out = lines_json(stdout);
                    assert_eq!(out.len(), events.len(), "each looked up");
                    assert!(out
                        .iter()
                        .all(|v| v["user"]["name"] == format!("user {}", v["user_id"]).as_str()));
                }
                "enrich" if c("payment") => {
                    let out = lines_json(stdout);
                    let payments = events.iter().filter(|v| v["type"] == "payment").count();
                    assert!(out.len() + 2 >= payments && !out.is_empty());
                    assert!(out
                        .iter()
                        .all(|v| v["cents"].is_number() && v.as_object().unwrap().len() == 2));
                }
                "enrich" => {
                    let out = lines_json(stdout);
                    assert!(out.len() > events.len(), "several per event");
                    assert!(out.iter().all(|v| v["tag"].is_string()));
                }
                "persist" if c("raw.events") => {
                    let n = distinct_ids(&events, |v| {
                        (v["id"].is_string() || v["id"].is_u64()) && v["meta"]["seq"].is_u64()
                    });
                    assert_eq!(count(&pg, "SELECT count(*) FROM raw.events"), n);
                    pg.sql("DROP SCHEMA IF EXISTS raw CASCADE");
                }
                "persist" if c("--emit") => {
                    assert_eq!(
                        stdout.trim(),
                        read("committed.ndjson").lines().count().to_string()
                    );
                    let rows = count(
                        &pg,
                        "SELECT count(*) FROM orders WHERE placed_at IS NOT NULL",
                    );
                    assert!(rows > 900, "{rows}");
                }
                "persist" => {
                    let n = distinct_ids(&events, |v| v["id"].is_string() || v["id"].is_u64());
                    assert_eq!(sqlite_rows("events"), n);
                }
                "ingest-file" if c("--positions-from") => {
                    let (logged, bytes) = logs(&dir_path, false);
                    let n = distinct_ids(&logged, |v| v.get("id").is_some());
                    assert_eq!(count(&pg, "SELECT count(*) FROM orders"), n);
                    // The position committed with the rows: the file's size.
                    assert_eq!(
                        pg.sql(
                            "SELECT sum(next_offset) FROM ndpipe_offsets \
                             WHERE \"group\" = 'file:orders-loader'"
                        ),
                        bytes.to_string()
                    );
                }
                "ingest-file" if c("--positions positions.json") => {
                    let (logged, bytes) = logs(&dir_path, false);
                    let followed = lines_json(&read("followed.ndjson"));
                    assert_eq!(followed.len(), logged.len());
                    assert!(followed.iter().all(|v| v["_meta"]["source"] == "file"));
                    let pos: serde_json::Value =
                        serde_json::from_str(&read("positions.json")).unwrap();
                    assert_eq!(pos["files"][0]["offset"], bytes);
                }
                "ingest-file" => {
                    let (logged, _) = logs(&dir_path, true);
                    let n = distinct_ids(&logged, |v| v.get("id").is_some());
                    assert_eq!(sqlite_rows("events"), n);
                }
                "ingest-http" if c("> received.ndjson") => {
                    assert!(dir_path.join("received.ndjson").exists());
                }
                "ingest-http" if c("curl") => {
                    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
                    assert_eq!(answer["accepted"], events.len(), "{answer}");
                }
                "ingest-http" => {
                    let n = distinct_ids(&events, fits_schema);
                    assert_eq!(sqlite_rows("events"), n);
                }
                "ingest-kafka" if c("--format kcat") => {
                    let out = lines_json(&read("kcat.ndjson"));
                    assert_eq!(out.len(), 50);
                    assert!(out
                        .iter()
                        .all(|v| v["payload"].is_string() && v["offset"].is_number()));
                }
                "ingest-kafka" if c("--group loader") => {
                    assert_eq!(count(&pg, "SELECT count(*) FROM orders"), 50);
                }
                "ingest-kafka" => {
                    assert_eq!(lines_json(&read("orders.ndjson")).len(), 50);
                }
                "pipeline" if c("--explain") => {
                    assert!(stdout.starts_with("pipeline: 3 stages"), "{stdout}");
                }
                "pipeline" if c("--file etl.pipe") => {
                    let n = distinct_ids(&events, |v| {
                        v.get("id").is_some() && v.get("type").is_some()
                    });
                    assert_eq!(
                        count(
                            &pg,
                            "SELECT count(*) FROM events WHERE payload->>'env' = 'prod'"
                        ),
                        n
                    );
                }
                "pipeline" if c("--offsets-name loader") => {
                    assert_eq!(count(&pg, "SELECT count(*) FROM orders"), 50);
                }
                "pipeline" if c("ingest-http") => {
                    assert_eq!(
                        read("seen.ndjson").lines().count(),
                        50,
                        "the orders, seen by tee"
                    );
                }
                "pipeline" => {
                    let n = distinct_ids(&events, fits_schema);
                    assert_eq!(sqlite_rows("events"), n);
                }
                _ => return false,
            }
            true
        };
        let examples = help_examples(&help);
        assert!(examples.len() >= 2, "{name} --help has examples");
        for (i, commands) in examples.iter().enumerate() {
            setting.session(
                &format!("{name} --help, example {}", i + 1),
                commands,
                &mut check,
            );
        }
        std::mem::forget(pg); // setting.pg's schema: dropped once, by it.
    }
    assert!(total >= 20, "only {total} help examples ran");
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
