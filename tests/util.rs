//! Helpers: each test gets its own directory; commands run like in a shell session.

use std::path::{Path, PathBuf};
use std::process::Output;

pub use assert_cmd::Command;

/// A temporary working directory for one test.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            dir: tempfile::Builder::new()
                .prefix("ndpipe-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file and returns its path.
    pub fn create(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read test file")
    }

    /// A command of ours, run in this directory.
    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::cargo_bin(bin).expect("binary built");
        c.current_dir(self.root()).env_remove("NDPIPE_LOG");
        // The user's database settings must not leak into tests.
        for var in DB_VARS {
            c.env_remove(var);
        }
        c
    }
}

/// Environment variables that choose a database.
pub const DB_VARS: [&str; 7] = [
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
];

/// A schema of its own in the test database, dropped at the end; tests run in parallel.
/// The server is `NDPIPE_TEST_DATABASE_URL`, else the local one at 127.0.0.1:5432.
pub struct Pg {
    pub base: String,
    pub schema: String,
}

impl Pg {
    pub fn new(test: &str) -> Pg {
        let base = std::env::var("NDPIPE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("t_{test}_{}", std::process::id());
        let pg = Pg { base, schema };
        let o = pg.psql_raw(&format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            pg.schema
        ));
        assert!(
            o.status.success(),
            "PostgreSQL at {} is not usable ({}). scripts/test starts the tests' server; \
             start it by hand with: scripts/test-postgres",
            pg.base,
            err(&o).trim()
        );
        pg
    }

    /// The URL persist gets: its search_path is this test's schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.schema)
    }

    fn psql_raw(&self, sql: &str) -> Output {
        std::process::Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\t"])
            .arg(&self.base)
            .arg("-c")
            .arg(sql)
            .env("PGOPTIONS", format!("-c search_path={}", self.schema))
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("psql runs")
    }

    /// Runs SQL in this schema; returns psql's unaligned, tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        let o = self.psql_raw(sql);
        assert!(o.status.success(), "psql failed: {sql}: {}", err(&o));
        out(&o).trim_end().to_owned()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.psql_raw(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// The payload stored per key in the table `events` of `pg`.
pub fn stored_payloads(pg: &Pg) -> std::collections::BTreeMap<String, serde_json::Value> {
    pg.sql("SELECT key, payload::text FROM events")
        .lines()
        .map(|l| {
            let (k, p) = l.split_once('\t').unwrap();
            (k.to_owned(), serde_json::from_str(p).unwrap())
        })
        .collect()
}

/// The last event per `id` in `ndjson` (what a last-wins upsert must leave stored).
pub fn last_by_id(ndjson: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    values(ndjson)
        .into_iter()
        .map(|v| (v["id"].as_str().expect("id").to_owned(), v))
        .collect()
}

/// The path of one of our binaries, for shell pipelines.
pub fn bin(name: &str) -> String {
    assert_cmd::cargo::cargo_bin(name).display().to_string()
}

/// Runs a bash pipeline in `dir`; returns its output whatever the status.
pub fn sh(dir: &Dir, script: &str) -> Output {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.root())
        .output()
        .expect("bash runs")
}

/// stdout as a string.
pub fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

/// stderr as a string.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the shared event generator: `gen_events.py N [args]` into `dir/name`.
pub fn gen_events(dir: &Dir, name: &str, n: u64, args: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/gen_events.py");
    assert!(
        script.exists(),
        "missing {} (the shared event generator)",
        script.display()
    );
    let path = dir.path(name);
    let file = std::fs::File::create(&path).expect("create");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(n.to_string())
        .args(args)
        .stdout(file)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "gen_events.py failed");
    path
}

/// Parses NDJSON text into values.
pub fn values(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}
