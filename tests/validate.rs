//! `validate`: schemas, quick rules, the metadata field, order with several workers.

use crate::util::*;

const SCHEMA_2020: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "amount"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string", "pattern": "^evt-"},
    "amount": {"type": "number", "minimum": 0},
    "tags": {"type": "array", "items": {"type": "string"}},
    "at": {"type": "string", "format": "date-time"}
  }
}"#;

const SCHEMA_7: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["id"],
  "properties": {"id": {"type": "string"}, "n": {"type": "integer", "exclusiveMaximum": 10}},
  "dependencies": {"n": ["id"]}
}"#;

#[test]
fn schema_2020_passes_valid_events_unchanged_and_explains_rejects() {
    let dir = Dir::new();
    dir.create("s.json", SCHEMA_2020);
    let input = concat!(
        "{\"id\":\"evt-1\",  \"amount\": 1.50, \"tags\":[\"a\"], \"_meta\":{\"offset\":1}}\n",
        "{\"id\":\"evt-2\",\"amount\":\"lots\"}\n",
        "{\"id\":\"evt-3\",\"amount\":-5}\n",
        "{\"id\":\"bad-4\",\"amount\":1}\n",
        "{\"amount\":1}\n",
        "{\"id\":\"evt-6\",\"amount\":1,\"extra\":true}\n",
        "{\"id\":\"evt-7\",\"amount\":1,\"tags\":[\"a\",2]}\n",
        "{\"id\":\"evt-8\",\"amount\":1,\"at\":\"yesterday\"}\n",
        "{\"id\":\"evt-9\",\"amount\":1,\"at\":\"2026-11-27T10:00:00Z\"}\n",
    );
    dir.cmd("validate")
        .args(["--schema", "s.json", "--dead-letter", "dl"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(concat!(
            "{\"id\":\"evt-1\",  \"amount\": 1.50, \"tags\":[\"a\"], \"_meta\":{\"offset\":1}}\n",
            "{\"id\":\"evt-9\",\"amount\":1,\"at\":\"2026-11-27T10:00:00Z\"}\n",
        ));
    let reasons: Vec<String> = values(&dir.read("dl"))
        .iter()
        .map(|r| format!("{} {}", r["line"], r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            "2 /amount type: \"lots\" is not of type \"number\"",
            "3 /amount minimum: -5 is less than the minimum of 0",
            "4 /id pattern: \"bad-4\" does not match \"^evt-\"",
            "5 / required: \"id\" is a required property",
            "6 / additionalProperties: Additional properties are not allowed ('extra' was unexpected)",
            "7 /tags/1 type: 2 is not of type \"string\"",
            "8 /at format: \"yesterday\" is not a \"date-time\"",
        ]
    );
}

#[test]
fn schema_draft_7() {
    let dir = Dir::new();
    dir.create("s7.json", SCHEMA_7);
    dir.cmd("validate")
        .args(["--schema", "s7.json", "--dead-letter", "dl"])
        .write_stdin("{\"id\":\"a\",\"n\":9}\n{\"id\":\"b\",\"n\":10}\n{\"n\":1.0}\n")
        .assert()
        .success()
        .stdout("{\"id\":\"a\",\"n\":9}\n");
    let kw: Vec<String> = values(&dir.read("dl"))
        .iter()
        .map(|r| {
            r["reason"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kw, ["/n exclusiveMaximum", "/ required"]);
}

#[test]
fn quick_rules_with_nested_paths() {
    let dir = Dir::new();
    let input = concat!(
        "{\"id\":1,\"amount\":2,\"meta\":{\"seq\":3}}\n",
        "{\"amount\":2}\n",
        "{\"id\":null,\"amount\":\"2\"}\n",
        "{\"id\":1,\"meta\":{\"seq\":3.5}}\n",
        "{\"id\":1,\"meta\":{\"seq\":4.0},\"a.b\":true}\n",
    );
    dir.cmd("validate")
        .args(["--require", "id", "--type", "amount=number", "--type", "meta.seq=integer"])
        .args(["--type", "/a.b=boolean", "--dead-letter", "dl"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout("{\"id\":1,\"amount\":2,\"meta\":{\"seq\":3}}\n{\"id\":1,\"meta\":{\"seq\":4.0},\"a.b\":true}\n");
    let reasons: Vec<String> = values(&dir.read("dl"))
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing required field id",
            "field amount: expected number, found string",
            "field meta.seq: expected integer, found number",
        ]
    );
}

#[test]
fn the_metadata_field_is_invisible_to_rules() {
    let dir = Dir::new();
    dir.create(
        "s.json",
        r#"{"type":"object","additionalProperties":false,"properties":{"id":{}},"maxProperties":1}"#,
    );
    let input = "{\"id\":1,\"_meta\":{\"offset\":3}}\n";
    dir.cmd("validate")
        .args(["--schema", "s.json"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(input);
    // --require cannot see into it either.
    dir.cmd("validate")
        .args(["--require", "_meta.offset"])
        .write_stdin(input)
        .assert()
        .code(65);
    // With another --meta-field, `_meta` is an ordinary field again.
    dir.cmd("validate")
        .args(["--schema", "s.json", "--meta-field", "origin"])
        .write_stdin(input)
        .assert()
        .code(65);
}

#[test]
fn four_workers_give_byte_identical_output_to_one_on_1m_lines() {
    let dir = Dir::new();
    let input = gen_events(
        &dir,
        "in.ndjson",
        1_000_000,
        &["--bad", "0.05", "--seed", "7"],
    );
    dir.create(
        "s.json",
        SCHEMA_2020.replace("\"additionalProperties\": false,", ""),
    );
    let run = |workers: &str, out: &str, dl: &str| {
        let o = sh(
            &dir,
            &format!(
                "{} --schema s.json --workers {workers} --dead-letter {dl} {} > {out}",
                bin("validate"),
                input.display()
            ),
        );
        assert!(o.status.success(), "{}", err(&o));
    };
    run("1", "one.out", "one.dl");
    run("4", "four.out", "four.dl");
    let one = std::fs::read(dir.path("one.out")).unwrap();
    assert!(one.len() > 100_000_000, "most lines pass");
    assert!(
        one == std::fs::read(dir.path("four.out")).unwrap(),
        "stdout differs"
    );
    assert!(
        dir.read("one.dl") == dir.read("four.dl"),
        "dead letters differ"
    );
    assert!(dir.read("one.dl").lines().count() > 40_000);
}
