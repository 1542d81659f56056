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
        c
    }
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
