//! The fast path against jaq itself, in this process: for every program and event, the
//! fast path gives jaq's output byte for byte (with the metadata field re-attached as
//! the jaq path re-attaches it), gives none where jaq gives none, or steps aside.

use crate::jq::Program;
use crate::json;

use super::check::{self, Agreed};
use super::Fast;

const META: &str = "_meta";

/// Runs `code` on every event both ways; the number of events the fast path answered.
fn differential(code: &str, events: &[String]) -> usize {
    let fast = Fast::compile(code).unwrap_or_else(|why| panic!("{code}: not fast: {why}"));
    let program = Program::compile(code).unwrap();
    let mut answered = 0;
    for event in events {
        match check::compare(&fast, &program, event, META) {
            Ok(Agreed::Answered) => answered += 1,
            Ok(Agreed::SteppedAside) => {}
            Err(e) => panic!("{code} {e}"),
        }
    }
    answered
}

/// Events like the generator's, compact, with the variety a program meets: missing and
/// null fields, floats and integers, strings with escapes, nested objects, metadata.
fn events(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let types = ["payment", "login", "refund", "PAGE_View", ""];
    let strings = [
        "plain",
        "tab\\there",
        "quote\\\"d",
        "é ü",
        "line\\nbreak",
        "a-b-c",
        "12",
        "3.5",
        "  7",
        "x,y,z",
        "",
    ];
    let numbers = [
        "0",
        "-3",
        "42",
        "2721.15",
        "0.1",
        "1e20",
        "1.5e-7",
        "9007199254740993",
        "-0.0",
        "100",
        "5e-324",
        "123456789012",
    ];
    (0..n)
        .map(|i| {
            let mut fields: Vec<String> = Vec::new();
            if rng.u8(..10) > 0 {
                fields.push(format!("\"id\":\"evt-{i:06}\""));
            }
            if rng.u8(..10) > 1 {
                fields.push(format!("\"type\":\"{}\"", types[rng.usize(..types.len())]));
            }
            match rng.u8(..10) {
                0 => fields.push("\"user_id\":null".into()),
                1 => {}
                2 => fields.push(format!("\"user_id\":\"{}\"", strings[rng.usize(..strings.len())])),
                _ => fields.push(format!("\"user_id\":{}", rng.u32(..1_000_000))),
            }
            match rng.u8(..10) {
                0 => {}
                1 => fields.push("\"amount\":\"7.5\"".into()),
                _ => fields.push(format!("\"amount\":{}", numbers[rng.usize(..numbers.len())])),
            }
            if rng.bool() {
                fields.push(format!("\"name\":\"{}\"", strings[rng.usize(..strings.len())]));
            }
            if rng.bool() {
                fields.push("\"tags\":[\"vip\",\"us\"]".into());
            }
            if rng.bool() {
                fields.push(format!(
                    "\"meta\":{{\"ip\":\"10.0.0.{}\",\"seq\":{i},\"deep\":{{\"x\":[1,{{\"y\":null}}]}}}}",
                    rng.u8(..)
                ));
            }
            if rng.u8(..4) == 0 {
                fields.push("\"flag\":true".into());
            }
            if rng.u8(..3) == 0 {
                let at = rng.usize(..=fields.len());
                fields.insert(at, format!("\"{META}\":{{\"line\":{i}}}"));
            }
            format!("{{{}}}", fields.join(","))
        })
        .collect()
}

/// Programs of the shapes the fast path takes, including every jq program of the
/// README, the help texts and the benchmarks that compiles to it.
const PROGRAMS: &[&str] = &[
    // bench/enrich-jq.sh, issue #29
    r#".amount_cents = ((.amount * 100) | floor) | .tag = (.user_id | tostring) + "-t" | .big = (.amount > 50)"#,
    // enrich --help, README
    r#"select(.type == "payment") | {id, cents: (.amount * 100 | floor)}"#,
    "{id, cents: (.amount * 100 | floor)}",
    "{id, n: .meta.seq}",
    "{k: .key}",
    ".r = (.amount / .user_id)",
    ".",
    ".a = 1",
    ".amount |= . * 2",
    ".amount += 1",
    ".amount -= 0.5",
    ".amount *= 3",
    ".amount /= 4",
    ".user_id %= 7",
    ".name //= \"anon\"",
    "del(.meta)",
    "del(.id, .type)",
    "del(.meta.ip)",
    "del(.nope)",
    ".meta.seq = 0",
    ".meta.new = {deep: [1, \"x\", null]}",
    "{id, type, when: .meta.seq}",
    "{(.type): .amount}",
    "{\"user \\(.user_id)\": true}",
    "{a: 1, b: 2, a: 3}",
    "{}",
    "select(.amount > 100 and .type != \"login\")",
    "select(has(\"name\") or (.flag // false))",
    "select(.user_id == null | not)",
    "select(.amount >= 42.0)",
    "select(.type < \"m\")",
    "if .amount > 1000 then .size = \"big\" elif .amount > 10 then .size = \"mid\" else .size = \"small\" end",
    "if .flag then del(.flag) end",
    ".label = \"\\(.type)/\\(.user_id) costs \\(.amount)\"",
    ".t = (.type | ascii_downcase) | .u = (.type | ascii_upcase)",
    ".n = (.name | length) | .k = length | .m = (.meta | length)",
    ".parts = (.name // \"\" | split(\"-\"))",
    ".chars = (.id // \"\" | split(\"\"))",
    ".joined = (.tags // [] | join(\"+\"))",
    ".num = (.name | tonumber)",
    ".s = (.amount | tostring)",
    ".r = (.amount | round) | .c = (.amount | ceil) | .f = (.amount | floor)",
    ".x = .amount % 7",
    ".neg = -.amount",
    ".d = 1.50 | .e = -2.5 | .f = 1e3",
    ".sum = .amount + .user_id",
    ".cat = .id + \"-\" + .type",
    ".arr = [.id, .type, 1]",
    ".arr = ([.tags] | length)",
    ".same = (.amount == .user_id)",
    ".id = .type | .type = .id",
    ".a = {b: {c: 1}} | .a.b.d = .a.b.c + 1",
    ".meta |= {seq}",
    ".tags |= . + [\"new\"]",
    ".id |= empty",
    ".h = has(\"_meta\")",
    "select(.type | test(\"pay\"))",
    "{id, tag: .tags[]}",
    "select(.type != \"login\") | {id, t: .tags[]}",
    "{id, k: .meta[]}",
    "{tag: .tags[], id, tag2: .type}",
    ".x = 1 | .y = (.amount // 0) | {x, y, t: .tags[]}",
    "{a: .tags[], a: 1}",
    "{id, e: [][]}",
    ".tags[] as $t | {id, tag: $t}",
    "select(.type != \"login\") | .tags[] as $t | {id, user_id, t: $t}",
    ".meta[] as $v | {v: $v, n: ($v | tostring)}",
    ".tags[] as $t | .tag = $t",
    ".tags[] as $t | if $t == \"vip\" then {id, t: $t} else empty end",
    ".amount as $a | .double = $a * 2 | .same = ($a == .amount)",
    ".type as $t | .id as $i | {k: \"\\($t)/\\($i)\"}",
    ".m = (.name // \"\" | test(\"^a-\"; \"i\")) | .u = (.id // \"\" | test(\"\\\\d{6}$\"))",
    ".t = (.type // \"x\" | test(\"view\"; \"ix\"))",
    ".[\"_meta\"] = 1 | .x = 2",
    ".[\"_meta\"] = 1 | .x = (.meta | length)",
    ".e = (.meta | has(\"ip\"))",
];

#[test]
fn every_program_gives_jaqs_output_on_generated_events() {
    let events = events(3_000, 29);
    for code in PROGRAMS {
        let answered = differential(code, &events);
        // Not vacuous: the fast path answers most events (the rest: non-canonical ones,
        // errors, values it leaves to jaq).
        assert!(answered > 0, "{code}: the fast path answered no event");
    }
}

/// The benchmark's program runs every canonical event of the generator on the fast path.
#[test]
fn the_three_assignments_never_step_aside_on_canonical_events() {
    let code = PROGRAMS[0];
    let events: Vec<String> = events(2_000, 7)
        .into_iter()
        // (1e20 * 100 | floor is a big integer: jaq's.)
        .filter(|e| !e.contains("\"amount\":\"") && e.contains("\"amount\"") && !e.contains("1e20"))
        .collect();
    let answered = differential(code, &events);
    assert_eq!(answered, events.len());
}

/// Events jaq would print differently (spaces, escapes it writes otherwise, numbers it
/// reformats, a key twice) are left to it.
#[test]
fn events_jaq_reformats_step_aside() {
    let fast = Fast::compile(".x = 1").unwrap();
    for e in [
        r#"{"a":[1, 2]}"#,
        r#"{"a":"\u0041"}"#,
        r#"{"a":"\/"}"#,
        r#"{"a":1.50}"#,
        r#"{"a":1E5}"#,
        r#"{"a":-0}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"b":{"a":1,"a":2}}"#,
        r#"{"a":123456789012345678901234}"#,
        r#"{"_meta":1,"_meta":2}"#,
    ] {
        let members = json::scan_object(e).unwrap();
        assert!(fast.run(e, &members, META, false).is_err(), "{e}");
    }
}

/// Where jaq fails or prints what is not JSON, the fast path steps aside: the jaq path
/// makes the dead letter and its reason.
#[test]
fn errors_step_aside() {
    for (code, event) in [
        (".x = (.amount / 0)", r#"{"amount":1}"#),
        (".x = .a + 1", r#"{"a":"s"}"#),
        (".a.b = 1", "{}"),
        (".x = (.a | length)", r#"{"a":true}"#),
        (".x = (.a * 100 | floor)", r#"{"a":1e300}"#),
        (".x = .a + 1", r#"{"a":9223372036854775807}"#),
        (".a", r#"{"a":1}"#),
    ] {
        let fast = Fast::compile(code).unwrap();
        let members = json::scan_object(event).unwrap();
        assert!(
            fast.run(event, &members, META, false).is_err(),
            "{code} on {event}"
        );
    }
}

/// Spaces around a colon or after a comma, and the metadata field written with them:
/// jaq prints none (the fuzz target's first find: the fast path copied them).
#[test]
fn spaces_between_members_are_not_copied() {
    let events: Vec<String> = [
        "{\"useSHLLr_user_id\":\t235513}",
        "{\"a\" : 1, \"b\":2 ,\"c\": \"x\"}",
        "{ \"a\":1,\"_meta\" :  {\"line\":1} , \"b\":[1,2] }",
        "{\"_meta\": {\"line\":2},\"a\": null}",
    ]
    .map(String::from)
    .to_vec();
    for code in [
        ".",
        ".c = 1",
        ".a = 2",
        "del(.a)",
        "select(.a != 5) | .d = .b",
        "{a, c}",
    ] {
        assert_eq!(differential(code, &events), events.len(), "{code}");
    }
}

#[test]
fn programs_it_does_not_take_say_why() {
    for (code, why) in [
        (". as [$a] | {a: $a}", "destructuring"),
        (".x = $__loc__", "$__loc__"),
        ("def f: 1; .a = f", "definitions"),
        (".a, .b", "`,`"),
        (".tags[0]", "array index"),
        (".tags[]", "`[]` (iteration or slices)"),
        ("{a: .tags[], b: .tags[]}", "`[]` other than"),
        ("to_entries", "to_entries/0"),
        (".a?", "`?`"),
        ("reduce .[] as $x (0; . + $x)", "`reduce`"),
        ("@base64", "@base64"),
        (".x = $ENV.HOME", "$ENV"),
    ] {
        let err = Fast::compile(code).unwrap_err();
        assert!(err.contains(why), "{code}: {err}");
    }
}

/// The jq manual's examples on objects (tests/data): the ones the fast path takes give
/// jaq's answer, and the share it takes is reported (`--nocapture`).
#[test]
fn jq_manual_object_examples() {
    let data: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/data/jq-manual-object-examples.json"
    ))
    .unwrap();
    let examples = data["examples"].as_array().unwrap();
    let (mut compiled, mut answered) = (0, 0);
    for ex in examples {
        let code = ex["program"].as_str().unwrap();
        let input = ex["input"].as_str().unwrap().to_owned();
        if Fast::compile(code).is_ok() {
            compiled += 1;
            answered += differential(code, std::slice::from_ref(&input));
        }
    }
    eprintln!(
        "jq manual, {} examples on objects: {compiled} compile to the fast path, \
         {answered} answered by it (the rest give no object, which the jaq path reports)",
        examples.len()
    );
    assert!(
        compiled >= examples.len() / 3,
        "{compiled} of {}",
        examples.len()
    );
}

/// Programs generated from the fast path's grammar (a seeded sample of what the
/// `jq_fast_vs_jaq` fuzz target explores): every one jaq accepts compiles to the fast
/// path, and gives jaq's output on every event it answers.
#[test]
fn generated_programs_agree_with_jaq() {
    let events = events(200, 11);
    let mut rng = fastrand::Rng::with_seed(29);
    let (mut programs, mut answered) = (0, 0);
    for _ in 0..1_500 {
        let code = check::program(&mut |n| rng.u32(..n));
        let Ok(program) = Program::compile(&code) else {
            continue;
        };
        let fast = Fast::compile(&code).unwrap_or_else(|why| panic!("{code}: not fast: {why}"));
        programs += 1;
        for event in &events {
            match check::compare(&fast, &program, event, META) {
                Ok(Agreed::Answered) => answered += 1,
                Ok(Agreed::SteppedAside) => {}
                Err(e) => panic!("{code} {e}"),
            }
        }
    }
    eprintln!("{programs} generated programs, {answered} answers compared");
    assert!(
        programs > 1_000 && answered > 50_000,
        "{programs} programs, {answered} answers"
    );
}
