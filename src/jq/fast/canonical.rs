//! Whether jaq would print a JSON text exactly as it is.
//!
//! The fast path copies the bytes of the members a program does not touch; the jaq path
//! parses the event and prints it again. The two agree exactly when the text is already
//! in jaq's form: compact (no whitespace outside strings), strings escaped as jaq escapes
//! them, numbers as jaq prints them after serde_json read them, no key twice in an
//! object. Events from generators, from `ingest-*` and from most producers are; an event
//! that is not goes to jaq, so the output never depends on which path ran.

use smallvec::SmallVec;

use crate::json;
use crate::tape::{Kind, TNode};

/// Deeper than this, jaq runs the event (the check recurses).
const MAX_DEPTH: usize = 64;

/// Whether jaq prints the whole `text` back byte for byte, known from its tape (`nodes`,
/// [`crate::tape::parse`] of it): what [`canonical`] tells of each member, and more (no
/// whitespace anywhere, no key twice at any level), at a fraction of the cost — the tape
/// already holds where each string, number and member is, and which strings hold an
/// escape, so only numbers and escaped strings are read again. `false` says only that
/// this quick check cannot tell: the member by member check decides then.
pub fn tape(text: &str, nodes: &[TNode]) -> bool {
    let b = text.as_bytes();
    // DEL is the one character jaq escapes that the tape lets through unmarked.
    if memchr::memchr(0x7f, b).is_some() {
        return false;
    }
    // No whitespace: the text is exactly its tokens and the punctuation the grammar puts
    // between them (two brackets a container, a colon a member, a comma between two).
    let mut tokens = 0;
    for (i, n) in nodes.iter().enumerate() {
        let (start, end) = (n.start as usize, n.end as usize);
        let len = n.len as usize;
        let ok = match n.kind {
            Kind::String => {
                tokens += end - start;
                !n.escaped || string(b, start) == Some(end)
            }
            Kind::Number => {
                tokens += end - start;
                number_text(&b[start..end])
            }
            Kind::Null | Kind::True | Kind::False => {
                tokens += end - start;
                true
            }
            Kind::Array => {
                tokens += 2 + len.saturating_sub(1);
                true
            }
            Kind::Object => {
                tokens += 2 + len + len.saturating_sub(1);
                unique_keys(b, nodes, i)
            }
        };
        if !ok {
            return false;
        }
    }
    tokens == b.len()
}

/// Whether no key of the object at `nodes[i]` is there twice. Keys are hashed into 64
/// buckets: only a key whose bucket is taken is compared with the ones before it
/// (canonical keys are equal exactly when their texts are; an escaped key's text is
/// checked as it comes up on the tape).
fn unique_keys(b: &[u8], nodes: &[TNode], i: usize) -> bool {
    let key = |n: &TNode| &b[n.start as usize..n.end as usize];
    let (first, mut j, mut seen) = (i + 1, i + 1, 0u64);
    for _ in 0..nodes[i].len {
        let mine = key(&nodes[j]);
        let bit = bucket(b, &nodes[j]);
        if seen & bit != 0 {
            let mut at = first;
            while at < j {
                if key(&nodes[at]) == mine {
                    return false;
                }
                at = nodes[at + 1].next as usize;
            }
        }
        seen |= bit;
        j = nodes[j + 1].next as usize;
    }
    true
}

/// One of 64 bits for a key (quotes included), by its length and first 8 bytes, as
/// [`json::KeySet`] sums names up.
fn bucket(b: &[u8], key: &TNode) -> u64 {
    let range = key.start as usize..key.end as usize;
    json::key_bit(range.len() as u32, json::prefix_in(b, &range))
}

/// Whether `text`, one valid JSON value, is printed back byte for byte by jaq.
pub fn canonical(text: &str) -> bool {
    let b = text.as_bytes();
    matches!(value(b, 0, 0), Some(end) if end == b.len())
}

/// The end of the canonical value starting at `i`, or `None`.
fn value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'{' => object(b, i, depth + 1),
        b'[' => array(b, i, depth + 1),
        b'"' => string(b, i),
        b't' => b[i..].starts_with(b"true").then_some(i + 4),
        b'f' => b[i..].starts_with(b"false").then_some(i + 5),
        b'n' => b[i..].starts_with(b"null").then_some(i + 4),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => None,
    }
}

fn object(b: &[u8], mut i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    i += 1;
    if *b.get(i)? == b'}' {
        return Some(i + 1);
    }
    let mut keys: SmallVec<[&[u8]; 16]> = SmallVec::new();
    loop {
        let end = string(b, i)?;
        let key = &b[i..end];
        // Canonical keys are equal exactly when their texts are.
        if keys.contains(&key) {
            return None;
        }
        keys.push(key);
        if *b.get(end)? != b':' {
            return None;
        }
        i = value(b, end + 1, depth)?;
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

fn array(b: &[u8], mut i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    i += 1;
    if *b.get(i)? == b']' {
        return Some(i + 1);
    }
    loop {
        i = value(b, i, depth)?;
        match *b.get(i)? {
            b',' => i += 1,
            b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The end of the string at `i` (after its closing quote), when jaq writes it so.
fn string(b: &[u8], i: usize) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        // Most strings hold no escape: jump to the closing quote (DEL, which jaq escapes,
        // stops the jump too).
        j += memchr::memchr3(b'"', b'\\', 0x7f, b.get(j..)?)?;
        match b[j] {
            b'"' => return Some(j + 1),
            0x7f => return None,
            _ => {}
        }
        if !escape_ok(b, j) {
            return None;
        }
        j += if b[j + 1] == b'u' { 6 } else { 2 };
    }
}

/// Whether the escape at `b[i]` (a backslash) is one jaq writes: `\" \\ \t \n \r \b \f`,
/// or `\u00xx` in lower case for the other control characters and DEL.
fn escape_ok(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b't' | b'n' | b'r' | b'b' | b'f') => true,
        Some(b'u') => {
            let Some(hex) = b.get(i + 2..i + 6) else {
                return false;
            };
            let lower = hex
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
            let Some(code) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            lower
                && (code < 0x20 || code == 0x7f)
                && !matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
        }
        _ => false,
    }
}

/// The end of the number at `i`, when jaq prints it back the same (see [`number_text`]).
fn number(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = b.get(j) {
        j += 1;
    }
    number_text(&b[i..j]).then_some(j)
}

/// Whether jaq prints the number `n` (valid JSON) back the same: integers of 64 bits (not
/// `-0`), and floats that ryu prints as written after serde_json read them.
fn number_text(n: &[u8]) -> bool {
    let float = n.iter().any(|&c| matches!(c, b'.' | b'e' | b'E'));
    if !float {
        // serde_json reads integers of 64 bits (up to 18 digits always fit); the rest
        // become floats.
        let digits = n.strip_prefix(b"-").unwrap_or(n);
        if n == b"-0" {
            return false;
        }
        if digits.len() <= 18 {
            return true;
        }
    } else if plain_decimal(n) {
        return true;
    }
    // Valid JSON, so ASCII: the text is a number.
    let Ok(t) = std::str::from_utf8(n) else {
        return false;
    };
    if !float {
        return t.parse::<i64>().is_ok() || t.parse::<u64>().is_ok();
    }
    serde_json::from_str::<f64>(t)
        .is_ok_and(|f| f.is_finite() && ryu::Buffer::new().format_finite(f) == t)
}

/// Whether ryu prints the float `t` back as it is, known without printing it: a plain
/// decimal `I.F` of at most 15 significant digits (so it is the shortest text that reads
/// back as its double: no two such decimals share a double), with no trailing zero in
/// `F` but for `I.0`, and a magnitude ryu writes without an exponent (1e-4 <= |x| < 1e15).
pub fn plain_decimal(t: &[u8]) -> bool {
    let t = t.strip_prefix(b"-").unwrap_or(t);
    let Some(dot) = t.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (int, frac) = (&t[..dot], &t[dot + 1..]);
    if frac.is_empty()
        || !frac.iter().all(u8::is_ascii_digit)
        || !int.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    if frac.len() > 1 && frac.ends_with(b"0") {
        return false;
    }
    let significant = if int == b"0" {
        let zeros = frac.iter().take_while(|&&c| c == b'0').count();
        if zeros >= 4 || zeros == frac.len() {
            return false;
        }
        frac.len() - zeros
    } else {
        if int.len() > 15 {
            return false;
        }
        int.len() + if frac == b"0" { 0 } else { frac.len() }
    };
    significant <= 15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaq_form() {
        for t in [
            r#"{"a":1,"b":[1,2.5,"x"],"c":{"d":null,"e":true}}"#,
            r#""tab\there \u001f \u007f é""#,
            "-12",
            "18446744073709551615",
            "0.1",
            "2721.15",
            "-0.5",
            "1.0",
            "0.0001",
            "123456789012345.0",
            "0.00001",
            "1e20",
            "1.5e-7",
            "[]",
            "{}",
        ] {
            assert!(canonical(t), "{t}");
        }
        for t in [
            r#"{"a": 1}"#,
            r#"{"a":1,"a":2}"#,
            r#""\/""#,
            r#""\u0041""#,
            r#""\u000a""#,
            r#""\u001F""#,
            "\"\u{7f}\"",
            "-0",
            "1.50",
            "12345678901234567.0",
            "100000.0e0",
            "1E5",
            "18446744073709551616",
            " 1",
        ] {
            assert!(!canonical(t), "{t}");
        }
    }

    fn by_tape(t: &str) -> bool {
        let mut nodes = Vec::new();
        crate::tape::parse(t, &mut nodes).unwrap();
        tape(t, &nodes)
    }

    /// The tape's verdict agrees with the text's wherever the text has no whitespace and
    /// no key twice at the top (which the member by member check leaves to its caller).
    #[test]
    fn tape_agrees_with_the_text() {
        for t in [
            r#"{"a":1,"b":[1,2.5,"x"],"c":{"d":null,"e":true}}"#,
            r#"{"s":"tab\there \u001f é","k\n":[[],{},[{}]]}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"[1,{"x":[2,{"y":"\/"}]}]"#,
            r#"{"n":[-0]}"#,
            r#"{"n":1.50}"#,
            r#"{"n":[1E5,2]}"#,
            r#"{"k\u0041":1}"#,
            "{\"d\":\"\u{7f}\"}",
            "[]",
            "{}",
            "\"x\"",
            "12",
        ] {
            assert_eq!(by_tape(t), canonical(t), "{t}");
        }
        // Whitespace anywhere: the tape cannot tell.
        for t in [
            r#"{"a": 1}"#,
            r#"{"a":1 }"#,
            r#"{ }"#,
            r#"[1, 2]"#,
            " {}",
            "{}\n",
        ] {
            assert!(!by_tape(t), "{t:?}");
        }
    }

    /// Objects with more keys than buckets: every duplicate is found, at any place.
    #[test]
    fn tape_finds_every_key_twice() {
        let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
        let object = |keys: &[&String]| {
            let members: Vec<String> = keys.iter().map(|k| format!(r#""{k}":1"#)).collect();
            format!("{{{}}}", members.join(","))
        };
        let all: Vec<&String> = keys.iter().collect();
        assert!(by_tape(&object(&all)));
        for (i, j) in [(0, 1), (0, 99), (50, 51), (98, 99), (3, 77)] {
            let mut twice = all.clone();
            twice[j] = all[i];
            assert!(!by_tape(&object(&twice)), "{i} {j}");
            assert!(
                !by_tape(&format!(r#"{{"x":[{}]}}"#, object(&twice))),
                "{i} {j}"
            );
        }
    }
}

/// The quick check agrees with ryu wherever it says yes.
#[test]
fn plain_decimals_are_what_ryu_prints() {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut yes = 0;
    for _ in 0..200_000 {
        let int = match rng.u8(..4) {
            0 => "0".to_owned(),
            _ => {
                let digits = rng.u32(1..16);
                rng.u64(..10u64.pow(digits)).to_string()
            }
        };
        let frac: String = (0..rng.usize(1..16))
            .map(|_| char::from(b'0' + rng.u8(..10)))
            .collect();
        let t = format!("{}{int}.{frac}", if rng.bool() { "-" } else { "" });
        if plain_decimal(t.as_bytes()) {
            yes += 1;
            let f: f64 = serde_json::from_str(&t).unwrap();
            assert_eq!(ryu::Buffer::new().format_finite(f), t);
        }
    }
    assert!(yes > 50_000, "{yes}");
}
