//! `enrich --jq`'s fast path against jaq: a program generated from the fast path's
//! grammar (the fuzzer's bytes make its choices) run on an event both ways must give the
//! same bytes, or the fast path must step aside. Every generated program jaq accepts
//! must compile to the fast path.
//!
//! Input: the event (a JSON object) on the first line; the bytes after it choose the
//! program. `cargo +nightly fuzz run jq_fast_vs_jaq` (see README: Fuzzing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ndpipe::jq::fast::{check, Fast};
use ndpipe::jq::Program;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(event) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let mut choices = data.get(split + 1..).unwrap_or_default().iter();
    let code = check::program(&mut |n| choices.next().map_or(0, |&b| u32::from(b) % n));
    let Ok(program) = Program::compile(&code) else {
        return;
    };
    let fast = Fast::compile(&code).unwrap_or_else(|why| panic!("{code}: not fast: {why}"));
    if let Err(e) = check::compare(&fast, &program, event, "_meta") {
        panic!("{code} {e}");
    }
});
