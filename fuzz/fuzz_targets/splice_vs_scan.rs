//! The splicing of `enrich --set` (and `pipeline`'s moved index) against a fresh scan:
//! for an object and a list of `PATH=JSON` edits, [`ndpipe::json::set_many_into`] must give
//! a JSON object whose index, when it hands one back, is exactly what scanning the new
//! text finds; the last edit's value stands at its path; and top-level members no edit
//! names keep their bytes. (Its first run found `--set` paths deep enough to make an
//! event no reader takes: `json::set_fits` refuses them now; seed `deep_path`.)
//!
//! Input: the object on the first line, then one edit per line.
//! `cargo +nightly fuzz run splice_vs_scan` (see README: Fuzzing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ndpipe::json::{scan_object, set_fits, set_many_into, FieldPath, SetOp};

/// More edits than `set_many_into`'s one-pass limit (64) reach the grouped path too.
const MAX_EDITS: usize = 100;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = input.split('\n');
    let text = lines.next().unwrap_or_default();
    let Ok(members) = scan_object(text) else {
        return;
    };
    let edits: Vec<(FieldPath, String)> = lines
        .filter_map(|l| {
            let (path, value) = l.split_once('=')?;
            let path = FieldPath::parse(path).ok()?;
            let value = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(value).ok()?).ok()?;
            // enrich refuses, at start, a setting that would nest past what readers take.
            set_fits(path.segments(), &value).ok()?;
            Some((path, value))
        })
        .take(MAX_EDITS)
        .collect();
    if edits.is_empty() {
        return;
    }
    let ops: Vec<SetOp> = edits
        .iter()
        .map(|(p, v)| SetOp {
            path: p.segments(),
            value: v,
        })
        .collect();
    // Text before the event in the shared buffer: offsets count from the event's start.
    let mut out = String::from("{\"before\":1}");
    let start = out.len();
    let mut index = Vec::new();
    let indexed = match set_many_into(text, &members, &ops, &mut out, Some(&mut index)) {
        Ok(indexed) => indexed,
        Err(_) => return, // A parent on a path is not an object.
    };
    let new = &out[start..];
    let scanned = scan_object(new).unwrap_or_else(|e| panic!("not an object: {new:?}: {e}"));
    if indexed {
        assert_eq!(index, scanned, "moved index of {new:?}");
    }
    let value: serde_json::Value =
        serde_json::from_str(new).unwrap_or_else(|e| panic!("not JSON: {new:?}: {e}"));
    // The last edit wins at its own path.
    let (path, last) = edits.last().expect("edits");
    let mut at = &value;
    for seg in path.segments() {
        at = at.get(seg).unwrap_or_else(|| panic!("{path} missing in {new:?}"));
    }
    let last: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(*at, last, "{path} in {new:?}");
    // Members whose key no edit names keep their bytes, in order.
    let named = |m: &ndpipe::json::Member, t: &str| {
        edits.iter().any(|(p, _)| p.segments()[0] == m.key_str(t))
    };
    let kept: Vec<&str> = members
        .iter()
        .filter(|m| !named(m, text))
        .map(|m| &text[m.value()])
        .collect();
    let after: Vec<&str> = scanned
        .iter()
        .filter(|m| !named(m, new))
        .map(|m| &new[m.value()])
        .collect();
    assert_eq!(kept, after, "untouched members of {text:?} in {new:?}");
});
