//! Whether jaq would print a JSON text exactly as it is.
//!
//! The fast path copies the bytes of the members a program does not touch; the jaq path
//! parses the event and prints it again. The two agree exactly when the text is already
//! in jaq's form: compact (no whitespace outside strings), strings escaped as jaq escapes
//! them, numbers as jaq prints them after serde_json read them, no key twice in an
//! object. Events from generators, from `ingest-*` and from most producers are; an event
//! that is not goes to jaq, so the output never depends on which path ran.

use smallvec::SmallVec;

/// Deeper than this, jaq runs the event (the check recurses).
const MAX_DEPTH: usize = 64;

/// Whether `text`, one valid JSON value, is printed back byte for byte by jaq.
pub fn canonical(text: &str) -> bool {
    let b = text.as_bytes();
    matches!(value(b, 0, 0), Some(end) if end == b.len())
}

/// Whether `text`, the inside of one valid JSON string (between its quotes), is written
/// back byte for byte by jaq.
pub fn canonical_string(text: &str) -> bool {
    let b = text.as_bytes();
    // `string` wants the opening quote: the caller's range starts after it.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            0x7f => return false,
            b'\\' => {
                if !escape_ok(b, i) {
                    return false;
                }
                i += if b[i + 1] == b'u' { 6 } else { 2 };
            }
            _ => i += 1,
        }
    }
    true
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
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            0x7f => return None,
            b'\\' => {
                if !escape_ok(b, j) {
                    return None;
                }
                j += if b[j + 1] == b'u' { 6 } else { 2 };
            }
            _ => j += 1,
        }
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

/// The end of the number at `i`, when jaq prints it back the same: integers of 64 bits
/// (not `-0`), and floats that ryu prints as written after serde_json read them.
fn number(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut float = false;
    while let Some(&c) = b.get(j) {
        match c {
            b'0'..=b'9' | b'-' | b'+' => {}
            b'.' | b'e' | b'E' => float = true,
            _ => break,
        }
        j += 1;
    }
    // Valid JSON: the text is a number.
    let t = std::str::from_utf8(&b[i..j]).ok()?;
    if !float {
        // serde_json reads integers of 64 bits; the rest become floats.
        return (t != "-0" && (t.parse::<i64>().is_ok() || t.parse::<u64>().is_ok())).then_some(j);
    }
    let f: f64 = serde_json::from_str(t).ok()?;
    (f.is_finite() && ryu::Buffer::new().format_finite(f) == t).then_some(j)
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
            "100000.0e0",
            "1E5",
            "18446744073709551616",
            " 1",
        ] {
            assert!(!canonical(t), "{t}");
        }
    }
}
