//! Help texts, man pages and completions.

use crate::util::*;

/// The docs generator (`examples/gen_docs`), with its unit tests.
#[path = "../examples/gen_docs/docs.rs"]
mod generator;

const BINARIES: &[&str] = &["validate", "enrich"];

#[test]
fn every_binary_has_help_with_an_example() {
    let dir = Dir::new();
    for b in BINARIES {
        let o = dir.cmd(b).arg("--help").output().unwrap();
        let help = out(&o);
        assert!(help.contains("Examples:"), "{b} --help has no example");
        assert!(
            help.contains("Common options:"),
            "{b} --help lacks the common block"
        );
        assert!(help.contains("--dead-letter"), "{b}");
    }
}

/// Renders man pages and completions in memory and compares them with the committed
/// files. Regenerate with `scripts/gen-docs`.
#[test]
fn committed_man_pages_and_completions_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (path, bytes) in generator::render() {
        match std::fs::read(root.join(&path)) {
            Ok(committed) if committed == bytes => {}
            _ => stale.push(path),
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing (run scripts/gen-docs): {stale:?}"
    );
}
