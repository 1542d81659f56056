//! Holding the fast path to jaq: programs of the fast path's grammar made from a source
//! of choices, and the comparison of both paths on one event. Used by the unit tests
//! (choices from a seeded generator) and by the `jq_fast_vs_jaq` fuzz target (choices
//! from the fuzzer's bytes).

use crate::jq::{attach_meta, Program};
use crate::json;
use crate::tape;

use super::{canonical_tape, Fast, Output};

/// What the fast path did with an event, when it agreed with jaq.
#[derive(Debug, PartialEq, Eq)]
pub enum Agreed {
    /// It answered, with jaq's output (or, like jaq, with none).
    Answered,
    /// It stepped aside: jaq runs this event.
    SteppedAside,
}

/// Runs `code` on `event` (a JSON object) both ways, the metadata field `meta` handled as
/// `enrich` handles it: `Err` describes a disagreement.
pub fn compare(fast: &Fast, program: &Program, event: &str, meta: &str) -> Result<Agreed, String> {
    let Ok(members) = json::scan_object(event) else {
        return Ok(Agreed::SteppedAside);
    };
    // Whether the text is what jaq prints, told by the tape (as `enrich` tells it of an
    // event it reads) or member by member (an event indexed before): the same outputs.
    let printed = tape::with_tape(event, |nodes| {
        canonical_tape(event, nodes.expect("scanned"))
    });
    let out = fast.run(event, &members, meta, false);
    if printed && out != fast.run(event, &members, meta, true) {
        return Err(format!(
            "on {event}: the fast path's output depends on how the text was checked"
        ));
    }
    let Ok(out) = out else {
        return Ok(Agreed::SteppedAside);
    };
    let meta_raw = json::find(event, &members, meta).map(|m| &event[m.value()]);
    let input = json::remove(event, &members, meta);
    let outputs = program
        .eval(&input, 1_000)
        .map_err(|e| format!("on {event}: jaq rejects it ({e}), the fast path gave {out:?}"))?;
    let expected = attach_meta(meta_raw, meta, outputs);
    let got: Vec<String> = match out {
        Output::One(one) => one.into_iter().collect(),
        Output::Many(many) => attach_meta(meta_raw, meta, many),
    };
    if got == expected {
        Ok(Agreed::Answered)
    } else {
        Err(format!(
            "on {event}: jaq gives {expected:?}, the fast path {got:?}"
        ))
    }
}

/// The fields the generated programs read and write (those of `gen_events.py`, and some
/// that events lack).
const FIELDS: &[&str] = &[
    "id", "type", "user_id", "amount", "currency", "tags", "meta", "name", "flag", "nope",
];

/// A program of the fast path's grammar; `choose(n)` picks a number below `n`.
pub fn program(choose: &mut dyn FnMut(u32) -> u32) -> String {
    let steps = 1 + choose(3);
    let mut program = (0..steps)
        .map(|_| step(choose, 2))
        .collect::<Vec<_>>()
        .join(" | ");
    // Sometimes one output per element of an array or object.
    let over = ["tags", "meta", "nope", "id"][choose(4) as usize];
    match choose(6) {
        0 => program.push_str(&format!(" | {{id, x: .{over}[], y: {}}}", expr(choose, 1))),
        1 => program.push_str(&format!(
            " | .{over}[] as $e | {{id, x: $e, y: ($e | {}), z: {}}}",
            ["tostring", "length", "not"][choose(3) as usize],
            expr(choose, 1)
        )),
        _ => {}
    }
    program
}

fn field(choose: &mut dyn FnMut(u32) -> u32) -> String {
    let f = FIELDS[choose(FIELDS.len() as u32) as usize];
    match choose(8) {
        0 => format!(".meta.{}", ["ip", "seq", "ua"][choose(3) as usize]),
        1 => format!(".[\"{f}\"]"),
        _ => format!(".{f}"),
    }
}

fn step(choose: &mut dyn FnMut(u32) -> u32, depth: u32) -> String {
    let key = FIELDS[choose(FIELDS.len() as u32) as usize];
    match choose(if depth == 0 { 7 } else { 9 }) {
        0 => format!(".{key} = {}", expr(choose, depth)),
        1 => format!(".{key} |= {}", expr(choose, depth)),
        2 => format!(
            ".{key} {}= {}",
            ["+", "-", "*", "/", "%", "//"][choose(6) as usize],
            expr(choose, depth)
        ),
        3 => format!("del({})", field(choose)),
        4 => format!("select({})", expr(choose, depth)),
        5 => format!("{{{key}, out: {}}}", expr(choose, depth)),
        6 => ".".to_owned(),
        7 => format!(
            "if {} then {} else {} end",
            expr(choose, depth - 1),
            step(choose, depth - 1),
            step(choose, depth - 1)
        ),
        _ => format!(
            "({} | {})",
            step(choose, depth - 1),
            step(choose, depth - 1)
        ),
    }
}

fn expr(choose: &mut dyn FnMut(u32) -> u32, depth: u32) -> String {
    let leaf = |choose: &mut dyn FnMut(u32) -> u32| match choose(9) {
        0 => ["null", "true", "false"][choose(3) as usize].to_owned(),
        1 => ["0", "1", "-2", "100", "1.5", "0.25", "1e3", "-0.5"][choose(8) as usize].to_owned(),
        2 => ["\"\"", "\"x\"", "\"a-b\"", "\"Tab\\t\"", "\"é\""][choose(5) as usize].to_owned(),
        3 => ".".to_owned(),
        _ => field(choose),
    };
    if depth == 0 {
        return leaf(choose);
    }
    let d = depth - 1;
    match choose(17) {
        0 => format!(
            "({} {} {})",
            expr(choose, d),
            ["+", "-", "*", "/", "%"][choose(5) as usize],
            expr(choose, d)
        ),
        1 => format!(
            "({} {} {})",
            expr(choose, d),
            ["==", "!=", "<", "<=", ">", ">="][choose(6) as usize],
            expr(choose, d)
        ),
        2 => format!(
            "({} {} {})",
            expr(choose, d),
            ["and", "or", "//"][choose(3) as usize],
            expr(choose, d)
        ),
        3 => format!(
            "({} | {})",
            expr(choose, d),
            [
                "floor",
                "round",
                "ceil",
                "tostring",
                "tonumber",
                "length",
                "ascii_downcase",
                "ascii_upcase",
                "not",
            ][choose(9) as usize]
        ),
        4 => format!(
            "(\"{}-\\({})\")",
            ["", "v", "é"][choose(3) as usize],
            expr(choose, d)
        ),
        5 => format!(
            "({} | has(\"{}\"))",
            expr(choose, d),
            FIELDS[choose(4) as usize]
        ),
        6 => format!(
            "({} | split(\"{}\"))",
            expr(choose, d),
            ["-", "", ","][choose(3) as usize]
        ),
        7 => format!(
            "({} | {})",
            expr(choose, d),
            [
                "join(\"+\")",
                "test(\"a\")",
                "test(\"^[a-z]+$\"; \"i\")",
                "test(\"\\\\d\")"
            ][choose(4) as usize]
        ),
        8 => format!("[{}, {}]", expr(choose, d), expr(choose, d)),
        9 => format!("{{a: {}, {}}}", expr(choose, d), FIELDS[choose(4) as usize]),
        10 => format!(
            "(if {} then {} else {} end)",
            expr(choose, d),
            expr(choose, d),
            expr(choose, d)
        ),
        11 => format!("(-{})", expr(choose, d)),
        13 => format!("({} as $v | [$v, {}])", expr(choose, d), expr(choose, d)),
        12 => format!("({} | select({}))", expr(choose, d), expr(choose, d)),
        _ => leaf(choose),
    }
}
