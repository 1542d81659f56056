//! `enrich`: set, timestamp, id, lookup, jq.

use crate::util::*;

#[test]
fn set_replaces_in_place_adds_nested_and_never_duplicates_keys() {
    let dir = Dir::new();
    dir.cmd("enrich")
        .args(["--set", "env=\"prod\"", "--set", "a.b=[1, 2]", "--set", "n=3"])
        .write_stdin("{\"n\": 1,  \"x\":1.50,\"n\":2}\n{\"a\":{\"c\":0}}\n")
        .assert()
        .success()
        .stdout("{\"n\": 3,  \"x\":1.50,\"env\":\"prod\",\"a\":{\"b\":[1,2]}}\n{\"a\":{\"c\":0,\"b\":[1,2]},\"env\":\"prod\",\"n\":3}\n");
}

#[test]
fn timestamp_is_rfc3339_utc() {
    let dir = Dir::new();
    let o = dir
        .cmd("enrich")
        .args(["--timestamp", "at"])
        .write_stdin("{}\n")
        .output()
        .unwrap();
    let v = &values(&out(&o))[0];
    let at = v["at"].as_str().unwrap();
    assert_eq!(at.len(), "2026-11-27T10:00:00.123456Z".len(), "{at}");
    assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
    assert!(humantime::parse_rfc3339(at).is_ok());
}

#[test]
fn id_is_sha256_of_the_canonical_array_and_stable() {
    let dir = Dir::new();
    let input = "{\"user\":\"u1\",\"o\":{\"b\":2, \"a\":1},\"amt\":12.5}\n{\"amt\":12.5,\"o\":{\"a\":1,\"b\":2},\"user\":\"\\u0075\\u0031\"}\n";
    let o = dir
        .cmd("enrich")
        .args(["--id", "key", "--id-from", "user,o,amt"])
        .write_stdin(input)
        .output()
        .unwrap();
    let vals = values(&out(&o));
    let canonical = "[\"u1\",{\"a\":1,\"b\":2},12.5]";
    let sha = sha256_hex(canonical.as_bytes());
    assert_eq!(vals[0]["key"], sha.as_str());
    assert_eq!(
        vals[1]["key"],
        sha.as_str(),
        "same values, other spelling, same id"
    );
    // A missing --id-from field rejects the event rather than inventing an id.
    dir.cmd("enrich")
        .args(["--id", "key", "--id-from", "user,nope"])
        .write_stdin(input)
        .assert()
        .code(65)
        .stdout("");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

#[test]
fn lookup_joins_csv_and_ndjson_tables() {
    let dir = Dir::new();
    dir.create(
        "users.csv",
        "user_id,name,plan\n1,Ada,pro\n2,\"Bob, Jr\",free\n",
    );
    dir.create(
        "users.ndjson",
        "{\"id\":1,\"name\":\"Ada\",\"limits\":{\"rps\":10}}\n{\"id\":\"2\",\"name\":\"Bob\"}\n",
    );
    let input = "{\"user_id\":1}\n{\"user_id\":\"2\"}\n{\"user_id\":3}\n";
    dir.cmd("enrich")
        .args([
            "--lookup",
            "users.csv",
            "--on",
            "user_id",
            "--prefix",
            "user_",
        ])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(concat!(
            "{\"user_id\":1,\"user_name\":\"Ada\",\"user_plan\":\"pro\"}\n",
            "{\"user_id\":\"2\",\"user_name\":\"Bob, Jr\",\"user_plan\":\"free\"}\n",
            "{\"user_id\":3}\n",
        ));
    dir.cmd("enrich")
        .args([
            "--lookup",
            "users.ndjson",
            "--on",
            "user_id=id",
            "--prefix",
            "user.",
        ])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(concat!(
            "{\"user_id\":1,\"user\":{\"name\":\"Ada\",\"limits\":{\"rps\":10}}}\n",
            "{\"user_id\":\"2\",\"user\":{\"name\":\"Bob\"}}\n",
            "{\"user_id\":3}\n",
        ));
    dir.cmd("enrich")
        .args(["--lookup", "nope.csv", "--on", "id"])
        .write_stdin("")
        .assert()
        .code(66);
}

#[test]
fn jq_splits_drops_and_stamps_metadata() {
    let dir = Dir::new();
    let input = concat!(
        "{\"id\":1,\"tags\":[\"a\",\"b\"],\"_meta\":{\"offset\":5}}\n",
        "{\"id\":2,\"tags\":[]}\n",
        "{\"id\":3,\"tags\":[\"c\"],\"_meta\":{\"offset\":7}}\n",
    );
    dir.cmd("enrich")
        .args(["--jq", ".tags[] as $t | {id, tag: $t, saw_meta: has(\"_meta\")}"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(concat!(
            "{\"id\":1,\"tag\":\"a\",\"saw_meta\":false,\"_meta\":{\"offset\":5,\"split\":{\"index\":0,\"count\":2}}}\n",
            "{\"id\":1,\"tag\":\"b\",\"saw_meta\":false,\"_meta\":{\"offset\":5,\"split\":{\"index\":1,\"count\":2}}}\n",
            "{\"id\":3,\"tag\":\"c\",\"saw_meta\":false,\"_meta\":{\"offset\":7}}\n",
        ));
}

#[test]
fn jq_errors_and_non_objects_are_dead_letters() {
    let dir = Dir::new();
    dir.cmd("enrich")
        .args(["--jq", ".a + 1", "--dead-letter", "dl"])
        .write_stdin("{\"a\":\"x\"}\n{\"a\":1}\n")
        .assert()
        .success()
        .stdout("");
    let dl = values(&dir.read("dl"));
    assert_eq!(dl.len(), 2);
    assert_eq!(dl[0]["kind"], "jq");
    assert!(
        dl[0]["reason"].as_str().unwrap().starts_with("jq error:"),
        "{}",
        dl[0]["reason"]
    );
    assert_eq!(dl[1]["reason"], "jq output #0 is not an object: 2");
}

#[test]
fn steps_run_in_the_documented_order() {
    let dir = Dir::new();
    dir.create("t.csv", "k,v\nx,joined\n");
    let o = dir
        .cmd("enrich")
        .args([
            "--jq",
            "{k: .key}",
            "--lookup",
            "t.csv",
            "--on",
            "k",
            "--set",
            "v=\"set\"",
        ])
        .args(["--id", "id", "--id-from", "v", "--timestamp", "ts"])
        .write_stdin("{\"key\":\"x\"}\n")
        .output()
        .unwrap();
    let v = &values(&out(&o))[0];
    assert_eq!(v["v"], "set", "--set after --lookup");
    assert_eq!(
        v["id"],
        sha256_hex(b"[\"set\"]").as_str(),
        "--id after --set"
    );
    assert!(v["ts"].is_string());
}

#[test]
fn order_is_kept_with_several_workers() {
    let dir = Dir::new();
    let input = gen_events(&dir, "in.ndjson", 200_000, &["--bad", "0.05"]);
    let run = |w: &str| {
        let o = sh(
            &dir,
            &format!(
                "{} --workers {w} --jq 'select(.type != \"login\") | .tags[] as $t | {{id, t: $t}}' --set x=1 --dead-letter dl{w} {}",
                bin("enrich"),
                input.display()
            ),
        );
        assert!(o.status.success(), "{}", err(&o));
        o.stdout
    };
    let one = run("1");
    assert!(one.len() > 10_000_000);
    assert!(one == run("3"));
    assert_eq!(dir.read("dl1"), dir.read("dl3"));
}

/// The dead letters of a run: (kind, reason) each.
fn kinds_and_reasons(dir: &Dir, name: &str) -> Vec<(String, String)> {
    values(&dir.read(name))
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// NaN and infinite numbers are not JSON: the event is a dead letter, with or without a
/// metadata field (one used to panic enrich, the other to write `Infinity`).
#[test]
fn jq_outputs_with_non_finite_numbers_are_dead_letters() {
    let dir = Dir::new();
    let o = dir
        .cmd("enrich")
        .args(["--jq", ".r = (.a / .b)", "--dead-letter", "dl"])
        .write_stdin(
            "{\"a\":1,\"b\":0}\n{\"a\":1,\"b\":0,\"_meta\":{\"offset\":1}}\n{\"a\":1,\"b\":2}\n",
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "{\"a\":1,\"b\":2,\"r\":0.5}\n");
    let dl = kinds_and_reasons(&dir, "dl");
    assert_eq!(dl.len(), 2, "{dl:?}");
    for (kind, reason) in dl {
        assert_eq!(kind, "jq");
        assert!(reason.contains("not valid JSON"), "{reason}");
    }
}

/// A recursion as deep as the data goes overflows the stack of the helper running the
/// program, not enrich's: that event is a dead letter, the good events of the same batch
/// go on.
#[test]
fn deep_jq_recursion_is_a_dead_letter_not_a_crash() {
    let dir = Dir::new();
    let o = dir
        .cmd("enrich")
        .args([
            "--jq",
            "def f: if . > 0 then [(. - 1 | f)] else 0 end; .d = (.n | f | length)",
            "--dead-letter",
            "dl",
        ])
        .write_stdin("{\"n\":3}\n{\"n\":100000000}\n{\"n\":1}\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "{\"n\":3,\"d\":1}\n{\"n\":1,\"d\":1}\n");
    let dl = kinds_and_reasons(&dir, "dl");
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0].0, "jq");
    assert!(dl[0].1.contains("crashed"), "{}", dl[0].1);
}

/// --jq-timeout and --jq-max-outputs bound what one event may cost.
#[test]
fn jq_time_and_output_limits_make_dead_letters() {
    let dir = Dir::new();
    let o = dir
        .cmd("enrich")
        .args(["--jq", "if .spin then last(range(1e15)) else . end"])
        .args(["--jq-timeout", "1s", "--dead-letter", "dl"])
        .write_stdin("{\"spin\":true}\n{\"spin\":false}\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "{\"spin\":false}\n");
    let dl = kinds_and_reasons(&dir, "dl");
    assert!(dl[0].1.contains("--jq-timeout 1s"), "{dl:?}");

    let o = dir
        .cmd("enrich")
        .args([
            "--jq",
            "repeat(.)",
            "--jq-max-outputs",
            "100",
            "--dead-letter",
            "dl2",
        ])
        .write_stdin("{\"a\":1}\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "");
    let dl = kinds_and_reasons(&dir, "dl2");
    assert!(dl[0].1.contains("--jq-max-outputs 100"), "{dl:?}");
}

/// The first signal ends a runaway program: its event is a dead letter, the rest goes on
/// and the run ends.
#[test]
fn the_first_signal_ends_a_runaway_jq_program() {
    use std::io::Write;
    let dir = Dir::new();
    let mut child = std::process::Command::new(bin("enrich"))
        .args(["--jq", "if .spin then last(range(1e15)) else . end"])
        .args(["--jq-timeout", "1h", "--dead-letter", "dl"])
        .current_dir(dir.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"spin\":true}\n").unwrap();
    drop(stdin);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let start = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(0));
    let dl = kinds_and_reasons(&dir, "dl");
    assert!(dl[0].1.contains("still running at shutdown"), "{dl:?}");
}

/// Processes whose environment holds `marker` (jq helpers started with a program that
/// mentions it).
fn helpers_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .count()
}

/// A jq helper outlives idle gaps in the input (worker threads come and go), and dies
/// with enrich, even when enrich is killed with SIGKILL in the middle of a program.
#[test]
fn jq_helpers_outlive_idle_gaps_and_die_with_enrich() {
    use std::io::{BufRead, Write};
    let dir = Dir::new();
    let marker = format!("helper-marker-{}", std::process::id());
    let program = format!("if .spin then last(range(1e15)) else .m = \"{marker}\" end");
    let mut child = std::process::Command::new(bin("enrich"))
        .args(["--jq", &program, "--dead-letter", "dl"])
        .current_dir(dir.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for i in 0..2 {
        writeln!(stdin, "{{\"i\":{i}}}").unwrap();
        stdin.flush().unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains(&marker), "{line}");
        if i == 0 {
            // Longer than tokio's blocking threads live idle (10 s).
            std::thread::sleep(std::time::Duration::from_secs(12));
        }
    }
    assert_eq!(dir.read("dl"), "", "no dead letter after the idle gap");
    writeln!(stdin, "{{\"spin\":true}}").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(helpers_with(&marker) >= 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let start = std::time::Instant::now();
    while helpers_with(&marker) > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "a jq helper outlived enrich"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_join_then_a_reshape_and_env_in_jq() {
    // `--lookup … --jq …` means "join, then reshape": the program sees the joined fields.
    let dir = Dir::new();
    dir.create("users.csv", "user_id,name,plan\n7,ann,pro\n");
    let o = dir
        .cmd("enrich")
        .args(["--lookup", "users.csv", "--on", "user_id", "--prefix", "user."])
        .args(["--jq", ".tags[] as $t | {id, user, tag: $t, env: $ENV.DEPLOY_ENV}"])
        .env("DEPLOY_ENV", "staging")
        .write_stdin("{\"id\":\"e1\",\"user_id\":7,\"tags\":[\"a\",\"b\"]}\n{\"id\":\"e2\",\"user_id\":8,\"tags\":[\"c\"]}\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        concat!(
            r#"{"id":"e1","user":{"name":"ann","plan":"pro"},"tag":"a","env":"staging","_meta":{"split":{"index":0,"count":2}}}"#,
            "\n",
            r#"{"id":"e1","user":{"name":"ann","plan":"pro"},"tag":"b","env":"staging","_meta":{"split":{"index":1,"count":2}}}"#,
            "\n",
            r#"{"id":"e2","user":null,"tag":"c","env":"staging"}"#,
            "\n",
        )
    );
}

/// A setting that would nest an event deeper than JSON readers take (127 levels, as
/// serde_json and validate allow) is refused at start: every event it made would be
/// unreadable by the next command (found by the `splice_vs_scan` fuzz target, #24).
#[test]
fn a_setting_nested_past_what_readers_take_is_refused() {
    let dir = Dir::new();
    let path = |n: usize| vec!["a"; n].join(".");
    let o = dir
        .cmd("enrich")
        .args(["--set", &format!("{}=1", path(128))])
        .write_stdin("{\"id\":1}\n")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    assert!(err(&o).contains("128 levels deep"), "{}", err(&o));
    let o = dir
        .cmd("enrich")
        .args(["--timestamp", &path(128)])
        .write_stdin("{\"id\":1}\n")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    // At the limit, the event is one the next command reads.
    let o = sh(
        &dir,
        &format!(
            "echo '{{\"id\":1}}' | {} --set '{}={{}}' | {} --require id",
            bin("enrich"),
            path(126),
            bin("validate")
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 1);
}

/// The jq fast path and jaq give the same bytes: the same program as it is (the fast
/// path) and wrapped in a definition (which keeps it on jaq), on generated events with
/// bad ones among them, the dead letters too; `pipeline --explain` says which path each
/// takes.
#[test]
fn jq_fast_path_gives_jaqs_bytes() {
    let dir = Dir::new();
    gen_events(
        &dir,
        "ev.ndjson",
        20_000,
        &["--bad", "0.05", "--dups", "0.1"],
    );
    let programs = [
        r#".amount_cents = ((.amount * 100) | floor) | .tag = (.user_id | tostring) + "-t" | .big = (.amount > 50)"#,
        r#"select(.type == "payment") | {id, cents: (.amount * 100 | floor)}"#,
        r#"del(.meta) | .currency |= ascii_downcase | .n = (.tags | length) | .t = (.tags | join(","))"#,
        r#"if .amount > 1000 then .size = "big" else .size = "\(.type)/\(.currency)" end"#,
        r#"select(.type != "login" and (.type | test("^p"))) | {id, t: .tags[]}"#,
        ".tags[] as $t | {id, tag: $t}",
    ];
    for program in programs {
        let run = |code: &str, dl: &str| {
            let o = dir
                .cmd("enrich")
                .args(["--jq", code, "--dead-letter", dl, "ev.ndjson"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", err(&o));
            (out(&o), dir.read(dl))
        };
        let (fast, fast_dl) = run(program, "fast-dl.ndjson");
        let (slow, slow_dl) = run(&format!("def f: {program}; f"), "jaq-dl.ndjson");
        assert!(
            fast.lines().count() > 1_000,
            "{program}: {}",
            fast.lines().count()
        );
        assert_eq!(fast, slow, "{program}");
        assert_eq!(fast_dl, slow_dl, "{program}: dead letters");

        let explain = |code: &str| {
            let o = dir
                .cmd("pipeline")
                .args(["--explain", &format!("enrich --jq '{code}'")])
                .output()
                .unwrap();
            out(&o)
        };
        let said = explain(program);
        assert!(said.contains("jq: fast path"), "{said}");
    }
    let said = dir
        .cmd("pipeline")
        .args([
            "--explain",
            "enrich --jq 'reduce .tags[] as $t (0; . + 1) as $n | {id, n: $n}'",
        ])
        .output()
        .unwrap();
    assert!(
        out(&said).contains("jq: jaq in helper processes (it uses `reduce`)"),
        "{}",
        out(&said)
    );
}
