//! `persist`: round trips into PostgreSQL and SQLite, replays, duplicate keys, versions,
//! bad rows, source offsets and fencing, a database restart mid-run, bad table names.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command as Std, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// `key → payload` of a PostgreSQL table.
pub(crate) fn pg_rows(pg: &Pg, table: &str) -> BTreeMap<String, Value> {
    pg.sql(&format!("SELECT key, payload::text FROM {table}"))
        .lines()
        .map(|l| {
            let (k, p) = l.split_once('\t').expect("two columns");
            (
                k.to_owned(),
                serde_json::from_str(p).expect("payload is JSON"),
            )
        })
        .collect()
}

/// `key → payload` of a SQLite table.
pub(crate) fn sqlite_rows(path: &std::path::Path, table: &str) -> BTreeMap<String, Value> {
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    let mut stmt = conn
        .prepare(&format!("SELECT key, payload FROM {table}"))
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query");
    rows.map(|r| {
        let (k, p) = r.expect("row");
        (k, serde_json::from_str(&p).expect("payload is JSON"))
    })
    .collect()
}

/// The number in `N <what>` of persist's summary line (`1,234 inserted` is 1234).
pub fn summary_count(stderr: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| {
            (l.starts_with("persist: ") || l.starts_with("pipeline: persist: "))
                && l.contains(" inserted, ")
        })
        .unwrap_or_else(|| panic!("no summary in: {stderr}"));
    let at = line
        .find(&format!(" {what}"))
        .unwrap_or_else(|| panic!("no {what:?} in {line}"));
    let digits: String = line[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().expect("a count")
}

#[test]
fn postgres_round_trip_and_replay_change_nothing() {
    let dir = Dir::new();
    let pg = Pg::new("round_trip");
    let input = gen_events(&dir, "events.ndjson", 100_000, &["--dups", "0.1"]);
    let text = std::fs::read_to_string(&input).unwrap();
    let expected = last_by_id(&text);

    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--create-table"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(summary_count(&err(&o), "inserted"), expected.len() as u64);
    assert_eq!(pg_rows(&pg, "events"), expected);
    let snapshot = "SELECT md5(string_agg(key || payload::text || coalesce(meta::text, '') \
                    || updated_at::text, ',' ORDER BY key)), count(*) FROM events";
    let before = pg.sql(snapshot);

    // Replaying the same file: same rows, same contents.
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url()])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(summary_count(&err(&o), "inserted"), 0);
    assert_eq!(pg_rows(&pg, "events"), expected);
    // Keys seen once were not even touched (updated_at kept).
    let once = pg.sql("SELECT count(*) FROM events WHERE updated_at = first_seen");
    assert!(once.parse::<u64>().unwrap() > 80_000, "{once}");
    // Nor locked: ON CONFLICT DO UPDATE locks a stored row even when its WHERE leaves it
    // be, and the lock writes the row's page (a full page image to the WAL after each
    // checkpoint). A locked row keeps the locker's transaction id in xmax.
    assert_eq!(
        pg.sql("SELECT count(*) FROM events WHERE updated_at = first_seen AND xmax::text <> '0'"),
        "0"
    );
    let after = pg.sql(snapshot);
    assert_eq!(before.split('\t').nth(1), after.split('\t').nth(1));
}

#[test]
fn sqlite_default_round_trip_and_replay() {
    let dir = Dir::new();
    let input = gen_events(&dir, "events.ndjson", 100_000, &["--dups", "0.1"]);
    let expected = last_by_id(&std::fs::read_to_string(&input).unwrap());
    for run in 0..2 {
        let mut cmd = dir.cmd("persist");
        if run == 0 {
            cmd.arg("--create-table");
        }
        let o = cmd.arg(&input).output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        assert!(
            err(&o).contains("writing to the SQLite file ndpipe.db"),
            "{}",
            err(&o)
        );
        let inserted = summary_count(&err(&o), "inserted");
        assert_eq!(inserted, if run == 0 { expected.len() as u64 } else { 0 });
        assert_eq!(sqlite_rows(&dir.path("ndpipe.db"), "events"), expected);
    }
}

/// Events with the same key, in one batch and across batches.
const VERSIONED: &str = concat!(
    "{\"id\":\"a\",\"v\":1,\"meta\":{\"seq\":3}}\n",
    "{\"id\":\"a\",\"v\":2,\"meta\":{\"seq\":1}}\n",
    "{\"id\":\"b\",\"v\":1,\"meta\":{\"seq\":5}}\n",
    "{\"id\":\"a\",\"v\":3,\"meta\":{\"seq\":2}}\n",
    "{\"id\":\"b\",\"v\":2,\"meta\":{\"seq\":5}}\n",
);

fn v_of(rows: &BTreeMap<String, Value>) -> Vec<(String, i64)> {
    rows.iter()
        .map(|(k, p)| (k.clone(), p["v"].as_i64().unwrap()))
        .collect()
}

#[test]
fn duplicate_keys_versions_and_ignore_on_both_databases() {
    let dir = Dir::new();
    let pg = Pg::new("versions");
    dir.create("in.ndjson", VERSIONED);
    type Case<'a> = (&'a str, &'a [&'a str], [(&'a str, i64); 2]);
    let cases: [Case; 5] = [
        // Last in input order wins, in one batch or one row per batch.
        ("last_one_batch", &[], [("a", 3), ("b", 2)]),
        (
            "last_many_batches",
            &["--batch-size", "1"],
            [("a", 3), ("b", 2)],
        ),
        // Highest version wins; ties go to the later event.
        (
            "version_one_batch",
            &["--version-field", "meta.seq"],
            [("a", 1), ("b", 2)],
        ),
        (
            "version_many_batches",
            &["--version-field", "meta.seq", "--batch-size", "1"],
            [("a", 1), ("b", 2)],
        ),
        // Ignore: the first stored event stays.
        (
            "ignore",
            &["--on-conflict", "ignore", "--batch-size", "2"],
            [("a", 1), ("b", 1)],
        ),
    ];
    for (table, flags, want) in cases {
        let want: Vec<(String, i64)> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let o = dir
            .cmd("persist")
            .args([
                "--database-url",
                &pg.url(),
                "--create-table",
                "--table",
                table,
            ])
            .args(flags)
            .arg("in.ndjson")
            .output()
            .unwrap();
        assert!(o.status.success(), "{table}: {}", err(&o));
        assert_eq!(v_of(&pg_rows(&pg, table)), want, "postgres {table}");
        let o = dir
            .cmd("persist")
            .args(["--create-table", "--table", table])
            .args(flags)
            .arg("in.ndjson")
            .output()
            .unwrap();
        assert!(o.status.success(), "{table}: {}", err(&o));
        assert_eq!(
            v_of(&sqlite_rows(&dir.path("ndpipe.db"), table)),
            want,
            "sqlite {table}"
        );
    }
    // An old event replayed later never overwrites a newer row.
    dir.create(
        "old.ndjson",
        "{\"id\":\"a\",\"v\":0,\"meta\":{\"seq\":0}}\n",
    );
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--table", "version_one_batch"])
        .args(["--version-field", "meta.seq", "old.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(summary_count(&err(&o), "unchanged"), 1);
    assert_eq!(
        v_of(&pg_rows(&pg, "version_one_batch")),
        [("a".into(), 1), ("b".into(), 2)]
    );
}

#[test]
fn bad_rows_go_to_dead_letters_and_the_rest_commits() {
    let dir = Dir::new();
    let pg = Pg::new("bad_rows");
    pg.sql(
        "CREATE TABLE typed (key text PRIMARY KEY, payload jsonb NOT NULL, meta jsonb, \
         n integer, at timestamptz)",
    );
    let input = concat!(
        "{\"id\":\"ok-1\",\"n\":1,\"at\":\"2026-11-01T00:00:00Z\"}\n",
        "{\"n\":2}\n",
        "{\"id\":\"bad-n\",\"n\":\"many\"}\n",
        "{\"id\":\"bad-nul\",\"s\":\"a\\u0000b\"}\n",
        "{\"id\":\"ok-2\",\"n\":2,\"s\":\"a\\\\u0000b\",\"_meta\":{\"source\":\"test\"}}\n",
        "{\"id\":\"bad-at\",\"at\":\"when?\"}\n",
        "{\"id\":[1]}\n",
        "not json\n",
        "{\"id\":7,\"n\":3}\n",
    );
    dir.create("in.ndjson", input);
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--table", "typed"])
        .args(["--column", "n=n", "--column", "at=at"])
        .args(["--dead-letter", "dead.ndjson", "in.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        pg.sql("SELECT key, n, meta FROM typed ORDER BY key"),
        "7\t3\t\nok-1\t1\t\nok-2\t2\t{\"source\": \"test\"}"
    );
    // The metadata field is stored apart from the payload.
    assert_eq!(
        pg.sql("SELECT payload ? '_meta' FROM typed WHERE key = 'ok-2'"),
        "f"
    );
    let dead = values(&dir.read("dead.ndjson"));
    let got: Vec<(u64, &str)> = dead
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        [
            (2, "missing_key"),
            (3, "database"),
            (4, "nul_in_json"),
            (6, "database"),
            (7, "bad_key"),
            (8, "malformed_json")
        ]
    );
    let n_reason = dead.iter().find(|d| d["line"] == 3).unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        n_reason.contains("invalid input syntax for type integer"),
        "{n_reason}"
    );
    assert!(dead.iter().all(|d| d["stage"] == "persist"));
    // Without --dead-letter, rejects make the exit code 65.
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--table", "typed", "in.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(65), "{}", err(&o));
}

fn kafka_event(id: &str, offset: i64, extra: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"_meta\":{{\"source\":\"kafka\",\"group\":\"g\",\"topic\":\"t\",\
         \"partition\":0,\"offset\":{offset}{extra}}}}}\n"
    )
}

#[test]
fn source_offsets_commit_with_the_rows() {
    let dir = Dir::new();
    let pg = Pg::new("offsets");
    let mut input = String::new();
    for o in 0..5 {
        input += &kafka_event(&format!("e{o}"), o, "");
    }
    // Offset 3 again without a key: a dead letter, still handled.
    input += &kafka_event("", 3, "").replace("\"id\":\"\",", "");
    // Offset 5 became three events; only two arrived and nothing later: not complete.
    for i in 0..2 {
        input += &kafka_event(
            &format!("s{i}"),
            5,
            &format!(",\"split\":{{\"index\":{i},\"count\":3}}"),
        );
    }
    dir.create("in.ndjson", &input);
    for (url, name) in [(Some(pg.url()), "postgres"), (None, "sqlite")] {
        let mut cmd = dir.cmd("persist");
        if let Some(u) = &url {
            cmd.args(["--database-url", u]);
        }
        let o = cmd
            .args(["--create-table", "--batch-size", "2", "--connections", "3"])
            .args(["--dead-letter", "dead.ndjson", "in.ndjson"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", err(&o));
        let next = match &url {
            Some(_) => {
                pg.sql("SELECT \"group\", topic, \"partition\", next_offset FROM ndpipe_offsets")
            }
            None => {
                let c = rusqlite::Connection::open(dir.path("ndpipe.db")).unwrap();
                c.query_row(
                    "SELECT \"group\" || '\t' || topic || '\t' || \"partition\" || '\t' || \
                     next_offset FROM ndpipe_offsets",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap()
            }
        };
        assert_eq!(next, "g\tt\t0\t5", "{name}");
    }
    // The third part of offset 5 arrives, then offset 6: everything is complete.
    let more =
        kafka_event("s2", 5, ",\"split\":{\"index\":2,\"count\":3}") + &kafka_event("e6", 6, "");
    dir.create("more.ndjson", more);
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "more.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(pg.sql("SELECT next_offset FROM ndpipe_offsets"), "7");
}

#[test]
fn a_newer_epoch_fences_an_old_writer() {
    let dir = Dir::new();
    let pg = Pg::new("fencing");
    pg.sql(
        "CREATE TABLE ndpipe_offsets (\"group\" text NOT NULL, topic text NOT NULL, \
         \"partition\" integer NOT NULL, next_offset bigint NOT NULL, epoch bigint, \
         updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (\"group\", topic, \"partition\"));
         INSERT INTO ndpipe_offsets VALUES ('g', 't', 0, 0, 7, now())",
    );
    let old = kafka_event("old", 0, ",\"epoch\":6") + &kafka_event("old2", 1, ",\"epoch\":6");
    dir.create("old.ndjson", old);
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--create-table", "old.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(summary_count(&err(&o), "fenced"), 2, "{}", err(&o));
    assert_eq!(pg.sql("SELECT count(*) FROM events"), "0");
    assert_eq!(
        pg.sql("SELECT next_offset, epoch FROM ndpipe_offsets"),
        "0\t7"
    );

    dir.create("new.ndjson", kafka_event("new", 0, ",\"epoch\":7"));
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "new.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(pg.sql("SELECT key FROM events"), "new");
    assert_eq!(
        pg.sql("SELECT next_offset, epoch FROM ndpipe_offsets"),
        "1\t7"
    );
}

#[test]
fn emit_passes_committed_events_on() {
    let dir = Dir::new();
    dir.create(
        "in.ndjson",
        "{\"id\":\"a\",  \"n\":1}\n{\"n\":2}\n{\"id\":\"b\",\"n\":3}\n",
    );
    let o = dir
        .cmd("persist")
        .args(["--create-table", "--emit", "--connections", "1", "-q"])
        .args(["--dead-letter", "dead.ndjson", "in.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "{\"id\":\"a\",  \"n\":1}\n{\"id\":\"b\",\"n\":3}\n"
    );
    assert_eq!(err(&o), "");
}

#[test]
fn table_names_outside_the_grammar_are_usage_errors() {
    let dir = Dir::new();
    let pg = Pg::new("names");
    pg.sql("CREATE TABLE y (key text PRIMARY KEY)");
    dir.create("in.ndjson", "{\"id\":\"a\"}\n");
    for bad in ["x; drop table y", "a.b.c", "y\"", "1y", "über", "events--"] {
        for flag in ["--table", "--offsets-table"] {
            let o = dir
                .cmd("persist")
                .args([
                    "--database-url",
                    &pg.url(),
                    "--create-table",
                    flag,
                    bad,
                    "in.ndjson",
                ])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(64), "{flag} {bad}: {}", err(&o));
            assert!(err(&o).contains("is not a table name"), "{}", err(&o));
        }
    }
    assert_eq!(pg.sql("SELECT count(*) FROM y"), "0");
    assert_eq!(
        pg.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ),
        "1"
    );
    assert!(!dir.path("ndpipe.db").exists());
}

#[test]
fn unreachable_database_and_missing_table_are_clear() {
    let dir = Dir::new();
    dir.create("in.ndjson", "{\"id\":\"a\"}\n");
    let start = Instant::now();
    let o = dir
        .cmd("persist")
        .args(["--database-url", "postgres://postgres@127.0.0.1:1/test"])
        .args(["--connect-timeout", "2s", "in.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert_eq!(
        err(&o),
        "persist: error: connection to server at \"127.0.0.1\", port 1 failed: Connection \
         refused. Is the server running on that host and accepting TCP/IP connections? \
         (database \"test\", role \"postgres\")\n"
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    let pg = Pg::new("missing");
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "in.ndjson"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    assert!(err(&o).contains("--create-table"), "{}", err(&o));
    pg.sql("CREATE TABLE nounique (key text, payload jsonb)");
    let o = dir
        .cmd("persist")
        .args([
            "--database-url",
            &pg.url(),
            "--table",
            "nounique",
            "in.ndjson",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    assert!(err(&o).contains("no unique index"), "{}", err(&o));
}

/// A PostgreSQL cluster of the test's own, in a temp dir on a free port.
pub(crate) struct Cluster {
    data: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new() -> Cluster {
        Cluster::build(false)
    }

    /// A cluster that accepts TLS connections only (`hostssl` in pg_hba.conf), with a
    /// self-signed certificate for `localhost` at [`Cluster::certificate`].
    pub(crate) fn tls_only() -> Cluster {
        Cluster::build(true)
    }

    fn build(tls: bool) -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("ndpipe-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // initdb refuses to run as root: the cluster belongs to the postgres user.
        let chown = Std::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Cluster {
            data,
            bin,
            port,
            _dir: dir,
        };
        c.as_postgres(&[
            c.bin.join("initdb").to_str().unwrap(),
            "-D",
            c.data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        if tls {
            let (crt, key) = (c.certificate(), c.data.join("server.key"));
            let o = Std::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl: {}", err(&o));
            std::fs::write(
                c.data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            let chown = Std::new("chown")
                .arg("postgres:postgres")
                .args([&crt, &key, &c.data.join("pg_hba.conf")])
                .status()
                .unwrap();
            assert!(chown.success());
            std::fs::write(c.data.join("postgresql.auto.conf"), "ssl = on\n").unwrap();
        }
        c.start();
        c
    }

    /// The server's self-signed certificate (TLS clusters only).
    pub(crate) fn certificate(&self) -> std::path::PathBuf {
        self.data.join("server.crt")
    }

    fn as_postgres(&self, args: &[&str]) {
        let o = Std::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}{}", out(&o), err(&o));
    }

    fn pg_ctl(&self, args: &[&str]) {
        let ctl = self.bin.join("pg_ctl");
        let mut all = vec![ctl.to_str().unwrap(), "-D", self.data.to_str().unwrap()];
        all.extend_from_slice(args);
        self.as_postgres(&all);
    }

    pub(crate) fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let log = self.data.join("log");
        self.pg_ctl(&["-w", "-l", log.to_str().unwrap(), "-o", &opts, "start"]);
    }

    pub(crate) fn stop_immediate(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub(crate) fn count(&self) -> u64 {
        let o = Std::new("psql")
            .args(["-X", "-A", "-t", &self.url(), "-c"])
            .arg("SELECT count(*) FROM events")
            .output()
            .unwrap();
        out(&o).trim().parse().unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ctl = self.bin.join("pg_ctl");
        let _ = Std::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(ctl)
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn a_database_restart_mid_run_loses_nothing() {
    let dir = Dir::new();
    let cluster = Cluster::new();
    let input = gen_events(&dir, "events.ndjson", 30_000, &["--dups", "0.1"]);
    let text = std::fs::read_to_string(&input).unwrap();
    let expected = last_by_id(&text);
    let lines: Vec<&str> = text.lines().collect();

    let mut child = Std::new(bin("persist"))
        .args(["--database-url", &cluster.url(), "--create-table"])
        .args(["--batch-size", "500", "--linger-ms", "20"])
        .current_dir(dir.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (first, rest) = lines.split_at(5_000);
    stdin
        .write_all((first.join("\n") + "\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.count() == 0 {
        assert!(Instant::now() < deadline, "no batch committed in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop_immediate();
    // The rest arrives while the database is down; persist must wait and replay. The
    // pipe fills up while it waits, so a thread of its own writes it.
    let rest = rest.join("\n") + "\n";
    let writer = std::thread::spawn(move || {
        stdin.write_all(rest.as_bytes()).unwrap();
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster.start();
    writer.join().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = err(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(summary_count(&stderr, "retries") >= 1, "{stderr}");
    assert!(stderr.contains("database unavailable"), "{stderr}");
    let got: BTreeMap<String, Value> = {
        let o = Std::new("psql")
            .args(["-X", "-A", "-t", "-F", "\t", &cluster.url(), "-c"])
            .arg("SELECT key, payload::text FROM events")
            .output()
            .unwrap();
        out(&o)
            .lines()
            .map(|l| {
                let (k, p) = l.split_once('\t').unwrap();
                (k.to_owned(), serde_json::from_str(p).unwrap())
            })
            .collect()
    };
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "stored contents differ from the last event per key"
    );
}

/// Timestamps that differ below a microsecond (which PostgreSQL keeps) are the same
/// version on both databases: each database ends with the same row, batch after batch.
#[test]
fn sub_microsecond_versions_agree_on_both_databases() {
    let dir = Dir::new();
    let pg = Pg::new("sub_us");
    dir.create(
        "in.ndjson",
        "{\"id\":\"k\",\"ts\":\"2026-11-01T00:00:00.0000014Z\",\"v\":1}\n\
         {\"id\":\"k\",\"ts\":\"2026-11-01T00:00:00.0000006Z\",\"v\":2}\n\
         {\"id\":\"k\",\"ts\":\"2026-11-01T00:00:00.0000001Z\",\"v\":3}\n",
    );
    let flags = [
        "--create-table",
        "--version-field",
        "ts",
        "--version-type",
        "timestamptz",
    ];
    let o = dir
        .cmd("persist")
        .args(["-q", "--database-url", &pg.url(), "--batch-size", "1"])
        .args(flags)
        .arg("in.ndjson")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let o = dir
        .cmd("persist")
        .args(["-q", "--sqlite", "db.sqlite", "--batch-size", "1"])
        .args(flags)
        .arg("in.ndjson")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // .0000014 and .0000006 are both .000001: the later one wins, as with equal versions;
    // .0000001 is .000000, older: it loses. The same on both.
    let pg_v = pg_rows(&pg, "events")["k"]["v"].clone();
    let lite_v = sqlite_rows(&dir.path("db.sqlite"), "events")["k"]["v"].clone();
    assert_eq!((pg_v, lite_v), (serde_json::json!(2), serde_json::json!(2)));
}

/// The README's advice for replays: with the Kafka offset in the metadata as the version,
/// a replay of a key's events split over batches writes nothing.
#[test]
fn a_replay_ordered_by_the_metadata_offset_writes_nothing() {
    let dir = Dir::new();
    dir.create(
        "in.ndjson",
        "{\"id\":\"k\",\"v\":1,\"_meta\":{\"offset\":7}}\n{\"id\":\"k\",\"v\":2,\"_meta\":{\"offset\":8}}\n",
    );
    let run = || {
        let o = dir
            .cmd("persist")
            .args(["--sqlite", "db", "--create-table", "--batch-size", "1"])
            .args(["--version-field", "_meta.offset", "in.ndjson"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        err(&o)
    };
    run();
    let again = run();
    assert_eq!(summary_count(&again, "updated"), 0, "{again}");
    assert_eq!(sqlite_rows(&dir.path("db"), "events")["k"]["v"], 2);
}

/// A `--column` type is a type name, nothing more: SQL in it is a usage error.
#[test]
fn column_types_outside_the_type_grammar_are_usage_errors() {
    let dir = Dir::new();
    dir.create("in.ndjson", "{\"id\":1,\"f\":true}\n");
    for ty in [
        "bool or pg_terminate_backend(1)",
        "bool) ; drop table x; --",
        "int default 1",
    ] {
        let o = dir
            .cmd("persist")
            .args(["--sqlite", "db", "--create-table", "--column"])
            .arg(format!("flag=f:{ty}"))
            .arg("in.ndjson")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{ty}: {}", err(&o));
    }
    assert!(
        !dir.path("db").exists(),
        "nothing is created on a usage error"
    );
}

/// Boolean keys are refused (`true` would collide with the string "true"); a schema named
/// in --table is created with it; a missing input exits 66 before anything is created.
#[test]
fn boolean_keys_new_schemas_and_missing_inputs() {
    let dir = Dir::new();
    let pg = Pg::new("keys_schema");
    dir.create("in.ndjson", "{\"id\":true}\n{\"id\":\"true\"}\n");
    let o = dir
        .cmd("persist")
        .args([
            "--database-url",
            &pg.url(),
            "--table",
            &format!("{}_raw.events", pg.schema),
        ])
        .args([
            "--create-table",
            "--dead-letter",
            "dead.ndjson",
            "in.ndjson",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["kind"], "bad_key");
    assert_eq!(
        pg.sql(&format!("SELECT key FROM {}_raw.events", pg.schema)),
        "true"
    );
    pg.sql(&format!("DROP SCHEMA {}_raw CASCADE", pg.schema));

    let o = dir.cmd("persist").arg("missing.ndjson").output().unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", err(&o));
    assert!(
        !dir.path("ndpipe.db").exists(),
        "no SQLite file before the inputs are checked"
    );
}

/// A loader failing on the linger path (the table dropped mid-run, input trickling in)
/// exits 74 with the server's message, as on the bulk path.
#[test]
fn a_table_dropped_mid_run_exits_74_with_the_servers_message() {
    let dir = Dir::new();
    let pg = Pg::new("dropped");
    let mut persist = Std::new(bin("persist"))
        .args([
            "--database-url",
            &pg.url(),
            "--create-table",
            "--linger-ms",
            "20",
        ])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = persist.stdin.take().unwrap();
    writeln!(stdin, "{{\"id\":\"a\"}}").unwrap();
    let start = Instant::now();
    while pg.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'events' AND table_schema = current_schema()") != "1"
        || pg.sql("SELECT count(*) FROM events") != "1"
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.sql("DROP TABLE events");
    for i in 0..50 {
        if writeln!(stdin, "{{\"id\":\"b{i}\"}}").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(stdin);
    let o = persist.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", err(&o));
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
}

/// Into a table empty at start, persist knows the keys it stored and looks none up: a key
/// seen again goes through the upsert (version rule and all), a new one by COPY. A key
/// another writer stores meanwhile meets the COPY's unique check: that batch is redone
/// through the upsert, keeping the other writer's newer version, and from then on keys
/// are looked up.
#[test]
fn keys_stored_by_this_run_and_by_another_writer_into_an_empty_table() {
    let dir = Dir::new();
    let pg = Pg::new("written");
    pg.sql(
        "CREATE TABLE events (key text PRIMARY KEY, payload jsonb NOT NULL, meta jsonb, \
         version bigint, first_seen timestamptz, updated_at timestamptz)",
    );
    let mut persist = Std::new(bin("persist"))
        .args(["--database-url", &pg.url(), "--version-field", "v"])
        .args(["--batch-size", "100", "--linger", "20ms"])
        .current_dir(dir.root())
        .env("NDPIPE_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = persist.stdin.take().unwrap();
    let mut send = |from: usize, to: usize, v: u32| {
        let lines: String = (from..to)
            .map(|i| format!("{{\"id\":\"k{i}\",\"v\":{v}}}\n"))
            .collect();
        stdin.write_all(lines.as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    let stored = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while pg.sql("SELECT count(*) FROM events") != want {
            assert!(Instant::now() < deadline, "{want} rows not stored in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // 1,000 new keys, then 500 of them again with a newer version: updates.
    send(0, 1000, 1);
    stored("1000");
    send(0, 500, 2);
    // Another writer stores k1000 (version 9) and k1001 (version 1) behind persist's back.
    std::thread::sleep(Duration::from_millis(300));
    pg.sql(
        "INSERT INTO events (key, payload, version) VALUES \
         ('k1000', '{\"id\":\"k1000\",\"v\":9}', 9), ('k1001', '{\"id\":\"k1001\",\"v\":1}', 1)",
    );
    send(1000, 1100, 3);
    drop(stdin);
    let o = persist.wait_with_output().unwrap();
    let stderr = err(&o);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(summary_count(&stderr, "inserted"), 1098, "{stderr}");
    assert_eq!(summary_count(&stderr, "updated"), 501, "{stderr}");
    assert_eq!(summary_count(&stderr, "unchanged"), 1, "{stderr}");
    assert!(
        stderr.contains("holds keys another writer stored"),
        "{stderr}"
    );
    assert_eq!(
        pg.sql(
            "SELECT count(*) FILTER (WHERE version = 1), count(*) FILTER (WHERE version = 2), \
             count(*) FILTER (WHERE version = 3), count(*) FILTER (WHERE version = 9), \
             count(*) FILTER (WHERE payload->>'v' = version::text) FROM events"
        ),
        "500\t500\t99\t1\t1100"
    );
}

/// Kafka deletes: `--tombstones delete` deletes a tombstone's key's row, in order with the
/// key's other events and under the version rule; by default a tombstone is a dead letter.
#[test]
fn tombstones_delete_rows_in_order_and_by_version_on_both_databases() {
    let dir = Dir::new();
    let pg = Pg::new("tombstones");
    let ev = |id: &str, off: u64| {
        format!("{{\"id\":\"{id}\",\"_meta\":{{\"key\":\"{id}\",\"offset\":{off}}}}}\n")
    };
    let tomb = |id: &str, off: u64| {
        format!("{{\"_meta\":{{\"key\":\"{id}\",\"offset\":{off},\"tombstone\":true}}}}\n")
    };
    let input = [
        ev("k1", 1),
        ev("k2", 2),
        tomb("k1", 3),
        ev("k3", 4),
        tomb("k3", 5),
        ev("k3", 6),
    ]
    .concat();
    dir.create("in.ndjson", &input);
    // The default: dead letters, nothing deleted.
    let o = dir
        .cmd("persist")
        .args([
            "--sqlite",
            "default.db",
            "--create-table",
            "--dead-letter",
            "dl",
            "in.ndjson",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let dl = values(&dir.read("dl"));
    assert_eq!(dl.len(), 2);
    assert_eq!(dl[0]["kind"], "tombstone");

    let keys = |rows: BTreeMap<String, Value>| rows.into_keys().collect::<Vec<_>>();
    for batch in ["5000", "1"] {
        for target in ["pg", "sqlite"] {
            let db: Vec<String> = match target {
                "pg" => vec![
                    "--database-url".into(),
                    pg.url(),
                    "--table".into(),
                    format!("t{batch}"),
                ],
                _ => vec!["--sqlite".into(), format!("b{batch}.db")],
            };
            let o = dir
                .cmd("persist")
                .args(&db)
                .args([
                    "--create-table",
                    "--tombstones",
                    "delete",
                    "--batch-size",
                    batch,
                ])
                .args(["--version-field", "_meta.offset", "in.ndjson"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", err(&o));
            let rows = match target {
                "pg" => pg_rows(&pg, &format!("t{batch}")),
                _ => sqlite_rows(&dir.path(&format!("b{batch}.db")), "events"),
            };
            assert_eq!(keys(rows), ["k2", "k3"], "{target}, batches of {batch}");
            // A stale tombstone (an older offset than the stored row) deletes nothing; a
            // newer one does.
            dir.create("late.ndjson", [tomb("k2", 1), tomb("k3", 7)].concat());
            let o = dir
                .cmd("persist")
                .args(&db)
                .args([
                    "--tombstones",
                    "delete",
                    "--version-field",
                    "_meta.offset",
                    "late.ndjson",
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", err(&o));
            assert_eq!(summary_count(&err(&o), "deleted"), 1, "{}", err(&o));
            let rows = match target {
                "pg" => pg_rows(&pg, &format!("t{batch}")),
                _ => sqlite_rows(&dir.path(&format!("b{batch}.db")), "events"),
            };
            assert_eq!(keys(rows), ["k2"], "{target}, batches of {batch}");
        }
    }
}

#[test]
fn connection_errors_name_the_server_database_and_role() {
    // As psql says them: which host, port, database and role, and the server's words.
    let dir = Dir::new();
    dir.create("in.ndjson", "{\"id\":\"a\"}\n");
    let base = std::env::var("NDPIPE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let _pg = Pg::new("errors"); // the server is up
    let (userinfo, rest) = base.split_once('@').expect("user@host in the test URL");
    let (hostport, _db) = rest.split_once('/').expect("a database in the test URL");
    let host = hostport.split(':').next().unwrap();
    let persist = |url: &str| {
        dir.cmd("persist")
            .args([
                "--database-url",
                url,
                "--connect-timeout",
                "5s",
                "in.ndjson",
            ])
            .output()
            .unwrap()
    };
    let o = persist(&format!("{userinfo}@{hostport}/no_such_db"));
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("connection to server at \"{host}\""))
            && err(&o).contains("FATAL: database \"no_such_db\" does not exist"),
        "{}",
        err(&o)
    );
    let o = persist(&format!("postgres://no_such_role@{hostport}/test"));
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(
        err(&o).contains("FATAL: role \"no_such_role\" does not exist"),
        "{}",
        err(&o)
    );
    let o = persist("postgres://postgres@no-such-host.invalid/test");
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(
        err(&o).contains("could not translate host name \"no-such-host.invalid\" to address"),
        "{}",
        err(&o)
    );
}

#[test]
fn show_prints_what_runs_stored_on_both_databases() {
    let dir = Dir::new();
    let pg = Pg::new("show");
    dir.create(
        "in.ndjson",
        "{\"id\":\"b\",\"n\":2}\n{\"id\":\"a\",\"n\":1,\"_meta\":{\"source\":\"x\"}}\n",
    );
    for db in [vec!["--sqlite", "s.db"], vec!["--database-url", &pg.url()]] {
        let o = dir
            .cmd("persist")
            .args(&db)
            .args(["--create-table", "-q", "in.ndjson"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let o = dir
            .cmd("persist")
            .args(&db)
            .args(["--show", "-q"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let rows = values(&out(&o));
        assert_eq!(rows.len(), 2, "{}", out(&o));
        assert_eq!(rows[0]["key"], "a", "ordered by key");
        assert_eq!(rows[0]["payload"], serde_json::json!({"id": "a", "n": 1}));
        assert_eq!(rows[0]["meta"], serde_json::json!({"source": "x"}));
        assert_eq!(rows[1]["payload"]["n"], 2);
        // `| head` ends it quietly.
        let o = sh(
            &dir,
            &format!(
                "{} {} --show -q | head -1",
                bin("persist"),
                db.iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        assert_eq!(out(&o).lines().count(), 1);
    }
    let o = dir
        .cmd("persist")
        .args(["--sqlite", "missing.db", "--show"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(66), "{}", err(&o));
}

#[test]
fn no_notices_on_a_second_run_with_offsets() {
    // CREATE … IF NOT EXISTS of tables that exist must not log NOTICEs on every run.
    let dir = Dir::new();
    let pg = Pg::new("notices");
    dir.create(
        "in.ndjson",
        kafka_event("a", 0, "") + &kafka_event("b", 1, ""),
    );
    for _ in 0..2 {
        let o = dir
            .cmd("persist")
            .args(["--database-url", &pg.url(), "--create-table", "in.ndjson"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let stderr = err(&o);
        assert!(
            !stderr.contains("NOTICE") && !stderr.contains("already exists"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "only the summary: {stderr}");
    }
}

#[test]
fn emit_and_the_summary_count_the_same_events() {
    // "a" twice in one batch: the first is superseded. --emit writes it (its batch
    // committed), and the summary's "out" counts it: both say 3.
    let dir = Dir::new();
    dir.create(
        "in.ndjson",
        "{\"id\":\"a\",\"n\":1}\n{\"id\":\"a\",\"n\":2}\n{\"id\":\"b\"}\n{\"n\":0}\n",
    );
    let o = dir
        .cmd("persist")
        .args(["--sqlite", "e.db", "--create-table", "--emit"])
        .args(["--dead-letter", "dl.ndjson", "in.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 3);
    let summary = err(&o);
    assert!(
        summary.contains(
            "persist: 4 events in, 3 out (2 inserted, 0 updated, 0 unchanged, 0 deleted, \
             1 superseded in their batch), 1 rejected (dead letters in dl.ndjson), 0 fenced, \
             1 batches, 0 retries · "
        ),
        "{summary}"
    );
}

#[test]
fn positions_of_any_source_commit_with_the_rows() {
    // persist commits positions it does not know the origin of: here a file source's,
    // in the generic form, beside Kafka's coordinates.
    let dir = Dir::new();
    let pg = Pg::new("positions");
    let event = |id: &str, offset: i64| {
        format!(
            "{{\"id\":\"{id}\",\"_meta\":{{\"position\":{{\"source\":\"file\",\"scope\":\"loader\",\
             \"stream\":\"dev8:ino42\",\"partition\":0,\"offset\":{offset}}}}}}}\n"
        )
    };
    dir.create(
        "in.ndjson",
        event("a", 0) + &event("b", 57) + &kafka_event("k", 4, ""),
    );
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--create-table", "in.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        pg.sql(
            "SELECT \"group\", topic, \"partition\", next_offset FROM ndpipe_offsets \
             ORDER BY 1"
        ),
        "file:loader\tdev8:ino42\t0\t58\ng\tt\t0\t5"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM events"), "3");
}

/// TLS as libpq does it, against a server that takes TLS connections only:
/// `disable` is refused by the server, `require` encrypts without checking the
/// certificate, `verify-ca` checks the chain but not the name, `verify-full` both.
#[test]
fn tls_modes_against_a_tls_only_server() {
    let dir = Dir::new();
    let cluster = Cluster::tls_only();
    let input = dir.create(
        "in.ndjson",
        "{\"id\":\"a\",\"n\":1}\n{\"id\":\"b\",\"n\":2}\n",
    );
    let root = cluster.certificate();
    let url = |query: &str| format!("{}?{query}", cluster.url());
    let persist = |url: &str| {
        dir.cmd("persist")
            .args(["--database-url", url, "--create-table", "-q"])
            .arg(&input)
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT")
            .output()
            .unwrap()
    };

    let o = persist(&url("sslmode=disable"));
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(err(&o).contains("no encryption"), "{}", err(&o));

    for query in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&sslrootcert={}", root.display()),
        // A root certificate alone makes `require` check the chain, as libpq does.
        format!("sslmode=require&sslrootcert={}", root.display()),
    ] {
        let o = persist(&url(&query));
        assert!(o.status.success(), "{query}: {}", err(&o));
    }
    assert_eq!(cluster.count(), 2);

    // The certificate names localhost, not 127.0.0.1: only verify-full looks.
    let o = persist(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        root.display()
    )));
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(
        err(&o).to_lowercase().contains("certificate"),
        "{}",
        err(&o)
    );

    // PGSSLROOTCERT is read as libpq reads it; the same file verifies for localhost.
    let o = dir
        .cmd("persist")
        .args([
            "--database-url",
            &url("sslmode=verify-full").replace("127.0.0.1", "localhost"),
        ])
        .args(["--create-table", "-q"])
        .arg(&input)
        .env("PGSSLROOTCERT", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));

    // A root certificate that did not sign the server's: the chain check fails.
    let other = Cluster::tls_only();
    let o = persist(&url(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        other.certificate().display()
    )));
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
}

/// New keys go in by binary COPY (the fast path of an empty table). A row the server
/// refuses there is isolated and dead-lettered as from the upsert; two persists loading
/// the same new keys at once (one's COPY meets rows the other has just stored: a unique
/// violation) both finish, every key stored once, inserted once between them.
#[test]
fn new_keys_by_copy_refused_rows_and_a_second_writer() {
    let dir = Dir::new();
    let pg = Pg::new("copy_in");
    pg.sql(
        "CREATE TABLE events (key text PRIMARY KEY, payload jsonb NOT NULL \
           CHECK (coalesce((payload->>'amount')::numeric, 0) >= 0), \
         meta jsonb, version bigint, first_seen timestamptz, updated_at timestamptz)",
    );
    dir.create(
        "in.ndjson",
        "{\"id\":\"ok-1\",\"amount\":5,\"seq\":1}\n\
         {\"id\":\"refused\",\"amount\":-1,\"seq\":1}\n\
         {\"id\":\"ok-2\",\"amount\":3,\"seq\":\"2\"}\n",
    );
    let o = dir
        .cmd("persist")
        .args(["--database-url", &pg.url(), "--version-field", "seq"])
        .args(["--dead-letter", "dead.ndjson", "in.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(summary_count(&err(&o), "inserted"), 2);
    assert_eq!(
        pg.sql(
            "SELECT key, version, first_seen = updated_at, updated_at > now() - interval '1 minute' \
             FROM events ORDER BY key"
        ),
        "ok-1\t1\tt\tt\nok-2\t2\tt\tt"
    );
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[0]["kind"], "database");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("check constraint"),
        "{dead:?}"
    );

    pg.sql("TRUNCATE events");
    let input = gen_events(&dir, "events.ndjson", 40_000, &[]);
    let writer = || {
        Std::new(bin("persist"))
            .args(["--database-url", &pg.url(), "--connections", "1"])
            .arg(&input)
            .current_dir(dir.root())
            .env_remove("NDPIPE_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (writer(), writer());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", err(&a));
    assert!(b.status.success(), "{}", err(&b));
    let text = std::fs::read_to_string(&input).unwrap();
    assert_eq!(pg_rows(&pg, "events"), last_by_id(&text));
    assert_eq!(
        summary_count(&err(&a), "inserted") + summary_count(&err(&b), "inserted"),
        40_000
    );
}
