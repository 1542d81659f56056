//! Framing and shared conventions, seen through `validate` with no rules (which passes
//! every JSON object and rejects everything else).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn passes_objects_byte_for_byte_bom_crlf_blank_lines() {
    let dir = Dir::new();
    let input = "\u{feff}{\"b\": 1,  \"a\":1.50}\r\n\n   \r\n{\"x\":[1e3, 2]}\n{\"last\":true}";
    dir.cmd("validate")
        .write_stdin(input)
        .assert()
        .success()
        .stdout("{\"b\": 1,  \"a\":1.50}\n{\"x\":[1e3, 2]}\n{\"last\":true}\n")
        .stderr("");
}

#[test]
fn every_bad_input_kind_is_a_dead_letter_and_the_stream_goes_on() {
    let dir = Dir::new();
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    let input = [
        "{\"ok\":1}",         // 1
        "{\"truncated\":",    // 2 malformed
        "{\"a\":1} trailing", // 3 trailing bytes
        "[1,2,3]",            // 4 not an object
        "not json at all",    // 5
        long.as_str(),        // 6 too long
        "{\"ok\":2}",         // 7
    ]
    .join("\n");
    let mut input = input.into_bytes();
    input.extend_from_slice(b"\n{\"bad\":\"\xff\"}\n{\"ok\":3}\n"); // 8 invalid UTF-8, 9 ok
    dir.create("in.ndjson", &input);
    dir.cmd("validate")
        .args([
            "--max-line-bytes",
            "100",
            "--dead-letter",
            "dl.ndjson",
            "in.ndjson",
        ])
        .assert()
        .success()
        .stdout("{\"ok\":1}\n{\"ok\":2}\n{\"ok\":3}\n");
    let dl = values(&dir.read("dl.ndjson"));
    let got: Vec<(u64, &str)> = dl
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "malformed_json"),
            (3, "malformed_json"),
            (4, "not_object"),
            (5, "malformed_json"),
            (6, "line_too_long"),
            (8, "invalid_utf8"),
        ]
    );
    for r in &dl {
        assert_eq!(r["stage"], "validate");
        assert_eq!(r["source"], "in.ndjson");
        assert!(r["_meta"].is_null());
    }
    assert_eq!(dl[0]["raw"], "{\"truncated\":");
    assert_eq!(
        dl[0]["reason"],
        "malformed JSON: expected a value at column 14 (found the end of the line)"
    );
    assert_eq!(dl[2]["reason"], "not a JSON object: found array");
    assert_eq!(
        dl[4]["reason"],
        "line of 210 bytes exceeds --max-line-bytes 100"
    );
    assert_eq!(dl[5]["raw"], "{\"bad\":\"\u{fffd}\"}");
}

#[test]
fn dead_letter_record_is_exact() {
    let dir = Dir::new();
    dir.cmd("validate")
        .args(["--require", "id", "--dead-letter", "-"])
        .write_stdin("{\"x\":1,\"_meta\":{\"source\":\"kafka\",\"offset\":7}}\n")
        .assert()
        .success()
        .stdout("")
        .stderr(predicates::str::is_match(concat!(
            r#"^\{"stage":"validate","kind":"missing_field","reason":"missing required field id","line":1,"#,
            r#""source":"stdin","raw":"\{\\"x\\":1,\\"_meta\\":\{\\"source\\":\\"kafka\\",\\"offset\\":7\}\}","#,
            r#""_meta":\{"source":"kafka","offset":7\}\}"#,
            "\n",
            r"validate: 1 events in, 0 out, 1 rejected \(dead letters on stderr\) · \d+\.\d s\n",
            r"validate:          1 missing_field \(first: stdin:1: missing required field id\)\n$",
        )).unwrap());
}

#[test]
fn raw_is_cut_at_8_kib_in_dead_letters() {
    let dir = Dir::new();
    let line = format!("{{\"a\":\"{}\"", "y".repeat(20_000));
    dir.create("in.ndjson", format!("{line}\n"));
    dir.cmd("validate")
        .args(["--dead-letter", "dl", "in.ndjson"])
        .assert()
        .success();
    let dl = values(&dir.read("dl"));
    assert_eq!(dl[0]["raw"].as_str().unwrap().len(), 8192);
    assert_eq!(dl[0]["raw_truncated"], true);

    // A line over --max-line-bytes keeps only its start: raw_truncated says so too.
    dir.cmd("validate")
        .args([
            "--max-line-bytes",
            "10K",
            "--dead-letter",
            "dl2",
            "in.ndjson",
        ])
        .assert()
        .success();
    let dl = values(&dir.read("dl2"));
    assert_eq!(dl[0]["kind"], "line_too_long");
    assert_eq!(dl[0]["raw"].as_str().unwrap().len(), 8192);
    assert_eq!(dl[0]["raw_truncated"], true);
}

#[test]
fn several_stages_append_to_one_dead_letter_file() {
    let dir = Dir::new();
    dir.create("in.ndjson", "{\"id\":1}\n{\"x\":2}\nnope\n");
    let o = sh(
        &dir,
        &format!(
            "{v} --dead-letter dl.ndjson in.ndjson | {e} --id-from id --id k --dead-letter dl.ndjson",
            v = bin("validate"),
            e = bin("enrich")
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    let dl = values(&dir.read("dl.ndjson"));
    let stages: Vec<&str> = dl.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.len(), 2);
    assert!(stages.contains(&"validate") && stages.contains(&"enrich"));
}

#[test]
fn exit_codes() {
    let dir = Dir::new();
    // 65: rejects with nowhere to go; the summary names them.
    dir.cmd("validate")
        .write_stdin("{}\n[1]\n")
        .assert()
        .code(65)
        .stdout("{}\n")
        .stderr(predicates::str::contains("1 not_object"));
    // 0: the same rejects written to a dead-letter output count as handled.
    dir.cmd("validate")
        .args(["--dead-letter", "dl"])
        .write_stdin("{}\n[1]\n")
        .assert()
        .code(0);
    // 66: input not found.
    dir.cmd("validate")
        .arg("missing.ndjson")
        .assert()
        .code(66)
        .stderr("validate: error: missing.ndjson: no such file\n");
    dir.cmd("validate")
        .args(["--schema", "nope.json"])
        .write_stdin("")
        .assert()
        .code(66);
    // 64: usage errors, from clap and from our own checks.
    dir.cmd("validate").arg("--no-such-flag").assert().code(64);
    dir.cmd("validate")
        .args(["--type", "a=float"])
        .assert()
        .code(64);
    dir.create("bad-schema.json", "{\"type\": 12}");
    dir.cmd("validate")
        .args(["--schema", "bad-schema.json"])
        .write_stdin("")
        .assert()
        .code(64);
    dir.cmd("enrich")
        .args(["--jq", ".a |||"])
        .write_stdin("")
        .assert()
        .code(64);
    dir.cmd("enrich")
        .args(["--set", "_meta.x=1"])
        .write_stdin("")
        .assert()
        .code(64);
    // --help and --version are not errors.
    dir.cmd("validate").arg("--help").assert().code(0);
    dir.cmd("enrich").arg("--version").assert().code(0);
}

#[test]
fn head_on_a_100_mb_file_ends_quietly() {
    let dir = Dir::new();
    let line = "{\"id\":\"evt-000000000001\",\"type\":\"payment\",\"amount\":12.5,\"pad\":\""
        .to_owned()
        + &"p".repeat(160)
        + "\"}\n";
    let big = line.repeat(100 * 1024 * 1024 / line.len() + 1);
    dir.create("big.ndjson", &big);
    drop(big);
    let start = Instant::now();
    let o = sh(
        &dir,
        &format!(
            "{} --require id big.ndjson | head -1; echo \"status=${{PIPESTATUS[0]}}\" >&2",
            bin("validate")
        ),
    );
    assert_eq!(out(&o), line);
    assert_eq!(err(&o), "status=0\n", "no panic, no error, exit 0");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn head_on_an_endless_stream_stops_without_reading_it_all() {
    let dir = Dir::new();
    // `yes` never ends: if validate kept reading, this would never finish.
    let o = sh(
        &dir,
        &format!(
            "timeout 20 bash -c 'yes \"{{\\\"id\\\":1}}\" | {} | head -1; echo \"status=${{PIPESTATUS[1]}}\" >&2'",
            bin("validate")
        ),
    );
    assert_eq!(out(&o), "{\"id\":1}\n");
    assert_eq!(err(&o), "status=0\n");
}

/// Spawns a command with piped stdin/stdout.
fn spawn(name: &str, args: &[&str]) -> std::process::Child {
    StdCommand::new(bin(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

#[test]
fn output_is_flushed_when_input_goes_idle() {
    let mut child = spawn("validate", &[]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap(); // would hang if held back
        assert_eq!(line, format!("{{\"n\":{i}}}\n"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

fn kill(child: &std::process::Child, sig: i32) {
    let ok = unsafe { libc::kill(child.id() as i32, sig) } == 0;
    assert!(ok, "kill failed");
}

/// SIGTERM reaches every command of a pipe at once: a command reading a pipe reads on to
/// its end (what its upstream writes out while shutting down still comes through), then
/// exits 0; an upstream that never ends is given up on after --shutdown-timeout (143).
#[test]
fn first_sigterm_reads_a_pipe_to_its_end() {
    let mut child = spawn("enrich", &["--set", "x=1"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "{{\"n\":1}}").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"n\":1,\"x\":1}\n");
    kill(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    writeln!(stdin, "{{\"n\":2}}").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "{\"n\":2,\"x\":1}\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let mut child = spawn("enrich", &["--set", "x=1", "--shutdown-timeout", "1s"]);
    let stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = std::time::Instant::now();
    kill(&child, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(143));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("did not end within 1s"), "{stderr}");
    assert!(stderr.contains("stopped after line 0 of stdin"), "{stderr}");
    drop(stdin);
}

#[test]
fn second_signal_exits_130_at_once() {
    // stdout is never read, so the process blocks writing and cannot finish draining.
    let mut child = spawn("validate", &[]);
    let mut stdin = child.stdin.take().unwrap();
    let chunk = "{\"k\":\"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\"}\n".repeat(1000);
    // Feeds until every buffer is full; ends when the child has gone.
    let feeder = std::thread::spawn(move || while stdin.write_all(chunk.as_bytes()).is_ok() {});
    // Long enough for the signal handler to be installed and every buffer to fill.
    std::thread::sleep(Duration::from_millis(1000));
    kill(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining into a full pipe"
    );
    kill(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    feeder.join().unwrap();
}

#[test]
fn gzip_and_zstd_inputs_are_read_transparently() {
    // Recognised by their first bytes, whatever the name: files and stdin, several gzip
    // members and zstd frames one after the other (as `cat a.gz b.gz` makes).
    let dir = Dir::new();
    let plain = "{\"n\":1}\n{\"n\":2}\nnot json\n{\"n\":3}\n";
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let zst = |text: &str| zstd::encode_all(text.as_bytes(), 3).unwrap();
    let (a, b) = plain.split_at(16);
    dir.create("in.ndjson.gz", [gz(a), gz(b)].concat());
    dir.create("in.zst", [zst(a), zst(b)].concat());
    dir.create("gz-named-plain.gz", plain);
    for file in ["in.ndjson.gz", "in.zst", "gz-named-plain.gz"] {
        let o = dir
            .cmd("validate")
            .args(["--dead-letter", "dl.ndjson", file])
            .output()
            .unwrap();
        assert!(o.status.success(), "{file}: {}", err(&o));
        assert_eq!(out(&o), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n", "{file}");
    }
    // The bad line is named by its line number in the decompressed text.
    let dead = values(&dir.read("dl.ndjson"));
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d["line"] == 3), "{dead:?}");
    dir.cmd("validate")
        .write_stdin(gz(plain))
        .args(["--dead-letter", "dl.ndjson"])
        .assert()
        .success()
        .stdout("{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    // A truncated gzip file is an input error (74), not a stream of garbage lines.
    let mut cut = gz(&plain.repeat(100));
    cut.truncate(cut.len() / 2);
    dir.create("cut.gz", cut);
    let o = dir.cmd("validate").arg("cut.gz").output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", err(&o));
}

#[test]
fn an_interrupted_compressed_backfill_says_how_to_resume() {
    let dir = Dir::new();
    gen_events(&dir, "in.ndjson", 300_000, &[]);
    let text = std::fs::read(dir.path("in.ndjson")).unwrap();
    dir.create("in.ndjson.gz", {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&text).unwrap();
        e.finish().unwrap()
    });
    let mut child = StdCommand::new(bin("validate"))
        .args(["--require", "id", "in.ndjson.gz"])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = vec![0u8; 1 << 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    kill(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let after: u64 = stderr
        .split("stopped after line ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        stderr.contains(&format!(
            "(to resume: zcat in.ndjson.gz | tail -n +{})",
            after + 1
        )),
        "{stderr}"
    );
}
