//! Raw JSON text: find fields without building a tree, and splice edits into the text.
//!
//! Stages pass valid input bytes through untouched. To read a field they scan the object
//! once with serde_json (which validates every byte) and keep the byte ranges of its
//! members; to change a field they splice new text into those ranges. Keys, spacing and
//! numbers a stage did not touch are never reformatted.
//!
//! Field paths have one syntax everywhere (flags of every stage): a dotted path `a.b.c`,
//! or, when a key itself holds a dot, a JSON pointer `/a.b/c` (RFC 6901, `~1` = `/`,
//! `~0` = `~`). A numeric segment indexes an array when reading.

use std::fmt;
use std::ops::Range;

use crate::tape::{self, Kind, TNode};

/// One member of a JSON object: byte ranges into the object's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The key between its quotes, still escaped.
    pub key: Range<usize>,
    /// Whether the key holds a backslash escape (then compare it unescaped).
    pub escaped: bool,
    /// The value, from its first to its last byte.
    pub value: Range<usize>,
    /// The key's first 8 bytes as a word ([`prefix`]): most lookups are settled by it
    /// and the length, without touching the text.
    prefix: u64,
}

/// The first 8 bytes of `b` as a little-endian word, zero-padded.
fn prefix(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// [`prefix`] of `text[range]`, read as one word when 8 bytes fit in `text` from its start.
#[inline(always)]
fn prefix_in(text: &[u8], range: &Range<usize>) -> u64 {
    match text.get(range.start..range.start + 8) {
        Some(word) => {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let n = range.len();
            if n >= 8 {
                w
            } else {
                w & ((1u64 << (8 * n)) - 1)
            }
        }
        None => prefix(&text[range.clone()]),
    }
}

impl Member {
    /// Whether this member's key equals `name`.
    #[inline]
    pub fn key_is(&self, text: &str, name: &str) -> bool {
        self.key_matches(text, &KeyProbe::new(name))
    }

    /// [`Member::key_is`] with the name's word made once, for scans over many members.
    #[inline(always)]
    fn key_matches(&self, text: &str, probe: &KeyProbe) -> bool {
        if !self.escaped {
            let name = probe.name.as_bytes();
            return self.key.len() == name.len()
                && self.prefix == probe.prefix
                && (name.len() <= 8
                    || text.as_bytes()[self.key.start + 8..self.key.end] == name[8..]);
        }
        let quoted = &text[self.key.start - 1..self.key.end + 1];
        serde_json::from_str::<String>(quoted).is_ok_and(|k| k == probe.name)
    }

    /// The key, unescaped.
    pub fn key_str<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        if !self.escaped {
            return text[self.key.clone()].into();
        }
        let quoted = &text[self.key.start - 1..self.key.end + 1];
        serde_json::from_str::<String>(quoted)
            .map(Into::into)
            .unwrap_or_else(|_| text[self.key.clone()].into())
    }
}

/// A key looked for, with its first bytes as a word (see [`Member::key_is`]).
struct KeyProbe<'n> {
    name: &'n str,
    prefix: u64,
}

impl KeyProbe<'_> {
    #[inline]
    fn new(name: &str) -> KeyProbe<'_> {
        KeyProbe {
            name,
            prefix: prefix(name.as_bytes()),
        }
    }
}

/// Why a text is not a JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON at all, or trailing bytes after the value.
    Malformed(String),
    /// Valid JSON, but not an object.
    NotObject(&'static str),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Malformed(m) => write!(f, "malformed JSON: {m}"),
            ScanError::NotObject(kind) => write!(f, "not a JSON object: found {kind}"),
        }
    }
}

/// The JSON type name of a value's text, judged by its first byte.
pub fn type_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// Scans a whole text that must be one JSON object, validating every byte, and returns
/// its members in order. Leading and trailing whitespace is allowed; anything else is not.
pub fn scan_object(text: &str) -> Result<Vec<Member>, ScanError> {
    tape::with_tape(text, |res| {
        members_of(text, res.map_err(|e| ScanError::Malformed(e.0))?)
    })
}

/// The top-level members of a parsed text, or why it is not an object.
pub fn members_of(text: &str, nodes: &[TNode]) -> Result<Vec<Member>, ScanError> {
    let root = &nodes[0];
    if root.kind != Kind::Object {
        return Err(ScanError::NotObject(root.kind.name()));
    }
    let mut out = Vec::with_capacity(root.len as usize);
    let mut at = 1;
    for _ in 0..root.len {
        let (k, v) = (&nodes[at], &nodes[at + 1]);
        let key = k.start as usize + 1..k.end as usize - 1;
        out.push(Member {
            prefix: prefix_in(text.as_bytes(), &key),
            key,
            escaped: k.escaped,
            value: v.start as usize..v.end as usize,
        });
        at = v.next as usize;
    }
    Ok(out)
}

/// Byte ranges of the elements of a JSON array text.
pub fn scan_array(text: &str) -> Option<Vec<Range<usize>>> {
    tape::with_tape(text, |res| {
        let nodes = res.ok()?;
        if nodes[0].kind != Kind::Array {
            return None;
        }
        let mut out = Vec::with_capacity(nodes[0].len as usize);
        let mut at = 1;
        for _ in 0..nodes[0].len {
            let n = &nodes[at];
            out.push(n.start as usize..n.end as usize);
            at = n.next as usize;
        }
        Some(out)
    })
}

/// A field path: `a.b.c` or `/a/b/c`. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    segs: Vec<String>,
    text: String,
}

impl FieldPath {
    pub fn parse(s: &str) -> Result<FieldPath, String> {
        let segs: Vec<String> = if let Some(ptr) = s.strip_prefix('/') {
            ptr.split('/')
                .map(|p| p.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            s.split('.').map(str::to_owned).collect()
        };
        if s.is_empty() || (!s.starts_with('/') && segs.iter().any(String::is_empty)) {
            return Err(format!(
                "invalid field path {s:?}: use a dotted path like a.b or a JSON pointer like /a/b"
            ));
        }
        Ok(FieldPath {
            segs,
            text: s.to_owned(),
        })
    }

    /// A path of one top-level key.
    pub fn key(name: &str) -> FieldPath {
        FieldPath {
            segs: vec![name.to_owned()],
            text: name.to_owned(),
        }
    }

    pub fn segments(&self) -> &[String] {
        &self.segs
    }

    pub fn first(&self) -> &str {
        &self.segs[0]
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for FieldPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FieldPath::parse(s)
    }
}

/// The last member named `key` (JSON parsers keep the last of duplicate keys).
pub fn find<'m>(text: &str, members: &'m [Member], key: &str) -> Option<&'m Member> {
    let probe = KeyProbe::new(key);
    members.iter().rev().find(|m| m.key_matches(text, &probe))
}

/// The raw text of the value at `rest` inside a value's text (already valid JSON).
pub fn get_in<'t>(value: &'t str, rest: &[String]) -> Option<&'t str> {
    let Some((seg, rest)) = rest.split_first() else {
        return Some(value);
    };
    let inner = match value.as_bytes().first()? {
        b'{' => {
            let members = scan_object(value).ok()?;
            let m = find(value, &members, seg)?;
            &value[m.value.clone()]
        }
        b'[' => {
            let idx: usize = seg.parse().ok()?;
            let elems = scan_array(value)?;
            &value[elems.get(idx)?.clone()]
        }
        _ => return None,
    };
    get_in(inner, rest)
}

/// One change to an object: set the value at a path (the value is JSON text).
#[derive(Clone, Debug)]
pub struct SetOp<'a> {
    pub path: &'a [String],
    pub value: &'a str,
}

/// Applies `ops` in order to the object `text` whose top-level `members` are known, and
/// returns the new text. Setting a key replaces its value in place (and removes later
/// duplicates of it); a missing key is appended; missing parents are created as objects.
/// Fails when a parent on the path exists but is not an object.
pub fn set_many(text: &str, members: &[Member], ops: &[SetOp]) -> Result<String, String> {
    let mut out = String::new();
    set_many_into(text, members, ops, &mut out)?;
    Ok(out)
}

/// [`set_many`], appending the new text to `out` (a buffer shared by many events).
pub fn set_many_into(
    text: &str,
    members: &[Member],
    ops: &[SetOp],
    out: &mut String,
) -> Result<(), String> {
    if ops.len() <= 64 && ops.iter().all(|op| op.path.len() == 1) {
        set_top_level(text, members, ops, out);
        return Ok(());
    }
    out.push_str(&set_nested(text, members, ops)?);
    Ok(())
}

fn set_nested(text: &str, members: &[Member], ops: &[SetOp]) -> Result<String, String> {
    // Group the operations by their first segment, keeping order inside each group.
    let mut groups: Vec<(&str, Vec<&SetOp>)> = Vec::new();
    for op in ops {
        let head = op.path[0].as_str();
        match groups.iter_mut().find(|(k, _)| *k == head) {
            Some((_, g)) => g.push(op),
            None => groups.push((head, vec![op])),
        }
    }
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut appended = String::new();
    for (key, group) in groups {
        let found: Vec<&Member> = members.iter().filter(|m| m.key_is(text, key)).collect();
        let mut current: Option<String> = found.first().map(|m| text[m.value.clone()].to_owned());
        for op in group {
            if op.path.len() == 1 {
                current = Some(op.value.to_owned());
                continue;
            }
            let base = current.as_deref().unwrap_or("{}");
            if type_of(base) != "object" {
                return Err(format!(
                    "cannot set {}: {key:?} is {}, not an object",
                    op.path.join("."),
                    type_of(base)
                ));
            }
            let inner = scan_object(base).map_err(|e| e.to_string())?;
            let sub = SetOp {
                path: &op.path[1..],
                value: op.value,
            };
            current = Some(set_many(base, &inner, &[sub])?);
        }
        let new_value = current.expect("every group sets a value");
        match found.split_first() {
            Some((first, dups)) => {
                edits.push((first.value.clone(), new_value));
                for d in dups {
                    edits.push((member_extent(text, members, d), String::new()));
                }
            }
            None => {
                if !members.is_empty() || !appended.is_empty() {
                    appended.push(',');
                }
                appended.push_str(&quote(key));
                appended.push(':');
                appended.push_str(&new_value);
            }
        }
    }
    if !appended.is_empty() {
        let close = text.trim_end().len() - 1;
        edits.push((close..close, appended));
    }
    Ok(splice(text, edits))
}

/// [`set_many`] when every path is one top-level key: one pass over the members, appended
/// to `out`. For several ops on one key the last wins.
fn set_top_level(text: &str, members: &[Member], ops: &[SetOp], out: &mut String) {
    debug_assert!(ops.len() <= 64);
    let close = text.trim_end().len() - 1;
    let extra: usize = ops
        .iter()
        .map(|o| o.path[0].len() + o.value.len() + 4)
        .sum();
    out.reserve(text.len() + extra);
    let mut done = 0u64; // ops whose key was found
    let mut at = 0;
    // The key lengths the ops name: most members are passed over on their length alone.
    let lens = ops
        .iter()
        .fold(0u64, |acc, op| acc | 1 << op.path[0].len().min(63));
    for m in members {
        if !m.escaped && lens & (1 << m.key.len().min(63)) == 0 {
            continue;
        }
        let Some(oi) = ops.iter().rposition(|op| m.key_is(text, &op.path[0])) else {
            continue;
        };
        if done & (1 << oi) == 0 {
            done |= 1 << oi;
            out.push_str(&text[at..m.value.start]);
            out.push_str(ops[oi].value);
            at = m.value.end;
        } else {
            let gone = member_extent(text, members, m);
            out.push_str(&text[at..gone.start]);
            at = gone.end;
        }
    }
    out.push_str(&text[at..close]);
    let mut empty = members.is_empty();
    for (oi, op) in ops.iter().enumerate() {
        let shadowed = ops[oi + 1..]
            .iter()
            .any(|later| later.path[0] == op.path[0]);
        if done & (1 << oi) != 0 || shadowed {
            continue;
        }
        if !empty {
            out.push(',');
        }
        empty = false;
        push_quoted(out, &op.path[0]);
        out.push(':');
        out.push_str(op.value);
    }
    out.push_str(&text[close..]);
}

/// Appends the JSON text of a string.
pub fn push_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serialises"));
    }
}

/// Removes every member named `key`; returns the text unchanged (borrowed) when absent.
pub fn remove<'t>(text: &'t str, members: &[Member], key: &str) -> std::borrow::Cow<'t, str> {
    let edits: Vec<_> = members
        .iter()
        .filter(|m| m.key_is(text, key))
        .map(|m| (member_extent(text, members, m), String::new()))
        .collect();
    if edits.is_empty() {
        text.into()
    } else {
        splice(text, edits).into()
    }
}

/// The bytes to delete to remove member `m` with one of its neighbouring commas.
fn member_extent(text: &str, members: &[Member], m: &Member) -> Range<usize> {
    let idx = members
        .iter()
        .position(|x| x == m)
        .expect("member of this object");
    let key_open = m.key.start - 1;
    if idx > 0 {
        // From the end of the previous value: removes `,"k":v`.
        members[idx - 1].value.end..m.value.end
    } else if let Some(next) = members.get(1) {
        // The first member: removes `"k":v,` up to the next key's quote.
        key_open..next.key.start - 1
    } else {
        let _ = text;
        key_open..m.value.end
    }
}

/// Applies non-overlapping edits to `text`.
pub fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let extra: usize = edits.iter().map(|(_, s)| s.len()).sum();
    let mut out = String::with_capacity(text.len() + extra);
    let mut at = 0;
    for (range, with) in edits {
        debug_assert!(range.start >= at, "overlapping edits");
        out.push_str(&text[at..range.start]);
        out.push_str(&with);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Appends `text` with the member `"key":value` added to `out`, when `text` is one JSON
/// object (validated in full) without a member `key`: one pass. `key_json` is `key`
/// quoted; `value` must be JSON text. False, with `out` untouched, for anything else (not
/// JSON, not an object, `key` present, or any key escaped), for the general path
/// ([`set_many`]).
pub fn append_member(text: &str, key: &str, key_json: &str, value: &str, out: &mut String) -> bool {
    tape::with_tape(text, |res| {
        let Ok(nodes) = res else {
            return false;
        };
        let root = &nodes[0];
        if root.kind != Kind::Object {
            return false;
        }
        let mut at = 1;
        for _ in 0..root.len {
            let k = &nodes[at];
            if k.escaped || &text[k.start as usize + 1..k.end as usize - 1] == key {
                return false;
            }
            at = nodes[at + 1].next as usize;
        }
        let (start, close) = (root.start as usize, root.end as usize - 1);
        out.reserve(close - start + key_json.len() + value.len() + 3);
        out.push_str(&text[start..close]);
        if root.len > 0 {
            out.push(',');
        }
        out.push_str(key_json);
        out.push(':');
        out.push_str(value);
        out.push('}');
        true
    })
}

/// JSON text of a string.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    push_quoted(&mut q, s);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_member_only_when_absent() {
        let add = |t: &str| {
            let mut out = String::from("before ");
            if append_member(t, "_m", "\"_m\"", "{\"a\":1}", &mut out) {
                return Some(out);
            }
            assert_eq!(out, "before ", "untouched when it says no");
            None
        };
        assert_eq!(
            add(" {\"x\":[1]} ").as_deref(),
            Some("before {\"x\":[1],\"_m\":{\"a\":1}}")
        );
        assert_eq!(add("{}").as_deref(), Some("before {\"_m\":{\"a\":1}}"));
        assert_eq!(add("{\"_m\":2}"), None);
        assert_eq!(add("{\"_\\u006d\":2}"), None);
        assert_eq!(add("[1]"), None);
        assert_eq!(add("{\"x\":"), None);
    }

    fn path(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    fn set(text: &str, ops: &[(&str, &str)]) -> Result<String, String> {
        let members = scan_object(text).unwrap();
        let paths: Vec<FieldPath> = ops.iter().map(|(p, _)| path(p)).collect();
        let ops: Vec<SetOp> = paths
            .iter()
            .zip(ops)
            .map(|(p, (_, v))| SetOp {
                path: p.segments(),
                value: v,
            })
            .collect();
        set_many(text, &members, &ops)
    }

    #[test]
    fn scan_finds_members_with_spacing_and_escapes() {
        let text = r#" { "a" : 1 , "b\"c":{"x":[1,2]}, "d":"s" } "#;
        let m = scan_object(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(&text[m[0].key.clone()], "a");
        assert_eq!(&text[m[0].value.clone()], "1");
        assert!(m[1].key_is(text, "b\"c"));
        assert!(m[1].escaped);
        assert_eq!(&text[m[1].value.clone()], r#"{"x":[1,2]}"#);
        assert_eq!(&text[m[2].value.clone()], r#""s""#);
    }

    #[test]
    fn find_takes_the_last_duplicate_and_handles_empty_and_escaped_keys() {
        let text = r#"{"ab":1,"":2,"a\u0062":3,"cb":4,"b":6}"#;
        let m = scan_object(text).unwrap();
        let get = |k| find(text, &m, k).map(|m| &text[m.value.clone()]);
        assert_eq!(get("ab"), Some("3"));
        assert_eq!(get(""), Some("2"));
        assert_eq!(get("cb"), Some("4"));
        assert_eq!(get("b"), Some("6"));
        assert_eq!(get("zb"), None);
        let text = r#"{"ab":1,"ab":5}"#;
        let m = scan_object(text).unwrap();
        assert_eq!(&text[find(text, &m, "ab").unwrap().value.clone()], "5");
        // Keys that share their first 8 bytes (the word compared first), or all of them.
        let text = r#"{"abcdefgh":1,"abcdefghi":2,"abcdefghj":3,"abcdefg":4,"abcdefghix":5}"#;
        let m = scan_object(text).unwrap();
        let get = |k| find(text, &m, k).map(|m| &text[m.value.clone()]);
        assert_eq!(get("abcdefgh"), Some("1"));
        assert_eq!(get("abcdefghi"), Some("2"));
        assert_eq!(get("abcdefghj"), Some("3"));
        assert_eq!(get("abcdefg"), Some("4"));
        assert_eq!(get("abcdefghix"), Some("5"));
        assert_eq!(get("abcdefghk"), None);
        assert_eq!(get("abcdefgi"), None);
    }

    #[test]
    fn scan_rejects_what_is_not_one_object() {
        assert!(matches!(
            scan_object("[1,2]"),
            Err(ScanError::NotObject("array"))
        ));
        assert!(matches!(
            scan_object("3"),
            Err(ScanError::NotObject("number"))
        ));
        assert!(matches!(
            scan_object(r#"{"a":1} x"#),
            Err(ScanError::Malformed(_))
        ));
        assert!(matches!(
            scan_object(r#"{"a":1"#),
            Err(ScanError::Malformed(_))
        ));
        assert!(matches!(
            scan_object(r#"{"a":tru}"#),
            Err(ScanError::Malformed(_))
        ));
        assert!(matches!(scan_object(""), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn paths_dotted_and_pointer() {
        assert_eq!(path("a.b").segments(), ["a", "b"]);
        assert_eq!(path("/a.b/c~1d~0").segments(), ["a.b", "c/d~"]);
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("").is_err());
        let text = r#"{"a":{"b":[10,{"c":true}]},"a.b":5}"#;
        let get = |p: &str| get_in(text, path(p).segments());
        assert_eq!(get("a.b.1.c"), Some("true"));
        assert_eq!(get("/a.b"), Some("5"));
        assert_eq!(get("a.x"), None);
        assert_eq!(get("a.b.7"), None);
    }

    #[test]
    fn set_replaces_in_place_and_appends() {
        assert_eq!(
            set(r#"{"a": 1, "b":2}"#, &[("a", "9")]).unwrap(),
            r#"{"a": 9, "b":2}"#
        );
        assert_eq!(
            set(r#"{"a":1}"#, &[("c", "\"x\"")]).unwrap(),
            r#"{"a":1,"c":"x"}"#
        );
        assert_eq!(set("{}", &[("c", "1")]).unwrap(), r#"{"c":1}"#);
        assert_eq!(
            set("{ }", &[("c", "1"), ("d", "2")]).unwrap(),
            r#"{ "c":1,"d":2}"#
        );
        assert_eq!(
            set(r#"{"a":{"x":1},"z":0}"#, &[("a.y", "2"), ("a.x", "3")]).unwrap(),
            r#"{"a":{"x":3,"y":2},"z":0}"#
        );
        assert_eq!(
            set(r#"{"z":0}"#, &[("a.b.c", "1")]).unwrap(),
            r#"{"z":0,"a":{"b":{"c":1}}}"#
        );
        assert!(set(r#"{"a":3}"#, &[("a.b", "1")]).is_err());
    }

    #[test]
    fn set_never_leaves_duplicate_keys() {
        assert_eq!(
            set(r#"{"a":1,"b":2,"a":3}"#, &[("a", "0")]).unwrap(),
            r#"{"a":0,"b":2}"#
        );
        assert_eq!(
            set(r#"{"a":1,"a":3}"#, &[("a", "0")]).unwrap(),
            r#"{"a":0}"#
        );
    }

    #[test]
    fn remove_member_anywhere() {
        let rm = |t: &str, k: &str| remove(t, &scan_object(t).unwrap(), k).into_owned();
        assert_eq!(
            rm(r#"{"a":1,"_meta":{},"b":2}"#, "_meta"),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(rm(r#"{"_meta":{},"b":2}"#, "_meta"), r#"{"b":2}"#);
        assert_eq!(rm(r#"{"_meta":{}}"#, "_meta"), r#"{}"#);
        assert_eq!(rm(r#"{"a":1}"#, "_meta"), r#"{"a":1}"#);
    }
}
