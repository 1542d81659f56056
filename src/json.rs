//! Raw JSON text: find fields without building a tree, and splice edits into the text.
//!
//! Stages pass valid input bytes through untouched. To read a field they scan the object
//! once with the tape scan ([`crate::tape`], which validates every byte as serde_json
//! would) and keep the byte ranges of its members; to change a field they splice new text
//! into those ranges. Keys, spacing and numbers a stage did not touch are never
//! reformatted.
//!
//! Field paths have one syntax everywhere (flags of every stage): a dotted path `a.b.c`,
//! or, when a key itself holds a dot, a JSON pointer `/a.b/c` (RFC 6901, `~1` = `/`,
//! `~0` = `~`). A numeric segment indexes an array when reading.

use std::fmt;
use std::ops::Range;

use smallvec::SmallVec;

use crate::tape::{self, Kind, TNode};

/// One member of a JSON object: byte ranges into the object's text, as 32-bit offsets
/// (the tape takes texts under 2 GiB). 24 bytes: an event's index is about as large as its
/// text, and `pipeline` carries it from stage to stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The key between its quotes, still escaped: its first byte, and its end with the
    /// top bit set when it holds a backslash escape (then it is compared unescaped).
    key: [u32; 2],
    /// The value, from its first to its last byte.
    value: [u32; 2],
    /// The key's first 8 bytes as a word ([`prefix`]): most lookups are settled by it
    /// and the length, without touching the text.
    prefix: u64,
}

/// The top bit of a key's end: the key holds an escape.
const ESCAPED: u32 = 1 << 31;

/// The first 8 bytes of `b` as a little-endian word, zero-padded.
fn prefix(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// [`prefix`] of `text[range]`, read as one word when 8 bytes fit in `text` from its start.
#[inline(always)]
pub(crate) fn prefix_in(text: &[u8], range: &Range<usize>) -> u64 {
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
    /// The member of `text` whose key (between its quotes) and value are these ranges.
    #[inline(always)]
    fn new(text: &[u8], key: Range<usize>, escaped: bool, value: Range<usize>) -> Member {
        debug_assert!(text.len() < tape::MAX_TEXT);
        Member {
            prefix: prefix_in(text, &key),
            key: [
                key.start as u32,
                key.end as u32 | if escaped { ESCAPED } else { 0 },
            ],
            value: [value.start as u32, value.end as u32],
        }
    }

    /// The key between its quotes, still escaped.
    #[inline(always)]
    pub fn key(&self) -> Range<usize> {
        self.key[0] as usize..(self.key[1] & !ESCAPED) as usize
    }

    /// The value, from its first to its last byte.
    #[inline(always)]
    pub fn value(&self) -> Range<usize> {
        self.value[0] as usize..self.value[1] as usize
    }

    /// Whether the key holds a backslash escape.
    #[inline(always)]
    pub fn escaped(&self) -> bool {
        self.key[1] & ESCAPED != 0
    }

    /// The same member in a text where it starts `by` bytes later (earlier when negative;
    /// wrapping arithmetic, as the sum stays in range).
    #[inline(always)]
    fn shifted(&self, by: u32) -> Member {
        Member {
            key: [self.key[0].wrapping_add(by), self.key[1].wrapping_add(by)],
            value: [
                self.value[0].wrapping_add(by),
                self.value[1].wrapping_add(by),
            ],
            prefix: self.prefix,
        }
    }

    /// Whether this member's key equals `name`.
    #[inline]
    pub fn key_is(&self, text: &str, name: &str) -> bool {
        self.key_matches(text, &KeyProbe::new(name))
    }

    /// Whether this member's key is written exactly as `other`'s (both of `text`): the
    /// same key, when neither holds an escape.
    #[inline(always)]
    pub fn same_raw_key(&self, other: &Member, text: &str) -> bool {
        let len = self.key[1].wrapping_sub(self.key[0]);
        len == other.key[1].wrapping_sub(other.key[0])
            && self.prefix == other.prefix
            && (len <= 8 || text[self.key()] == text[other.key()])
    }

    /// [`Member::key_is`] with the name's word made once, for scans over many members.
    #[inline(always)]
    pub fn key_matches(&self, text: &str, probe: &KeyProbe) -> bool {
        let name = probe.name.as_bytes();
        // An escaped key's end has its top bit set: this length is then never a name's.
        let raw_len = self.key[1].wrapping_sub(self.key[0]) as usize;
        if raw_len == name.len() && self.prefix == probe.prefix {
            let start = self.key[0] as usize;
            return name.len() <= 8 || text.as_bytes()[start + 8..start + name.len()] == name[8..];
        }
        if !self.escaped() {
            return false;
        }
        let key = self.key();
        let quoted = &text[key.start - 1..key.end + 1];
        serde_json::from_str::<String>(quoted).is_ok_and(|k| k == probe.name)
    }

    /// The key, unescaped.
    pub fn key_str<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let key = self.key();
        if !self.escaped() {
            return text[key].into();
        }
        let quoted = &text[key.start - 1..key.end + 1];
        serde_json::from_str::<String>(quoted)
            .map(Into::into)
            .unwrap_or_else(|_| text[key].into())
    }
}

/// A key looked for, with its first bytes as a word (see [`Member::key_is`]).
#[derive(Clone, Debug)]
pub struct KeyProbe<'n> {
    name: &'n str,
    prefix: u64,
}

impl<'n> KeyProbe<'n> {
    #[inline]
    pub fn new(name: &str) -> KeyProbe<'_> {
        KeyProbe {
            name,
            prefix: prefix(name.as_bytes()),
        }
    }

    /// A probe of `name` whose [`KeyProbe::prefix`] was made before (a name looked for
    /// in every event).
    #[inline]
    pub fn with_prefix(name: &'n str, prefix: u64) -> KeyProbe<'n> {
        debug_assert_eq!(prefix, KeyProbe::new(name).prefix);
        KeyProbe { name, prefix }
    }

    /// The name's first 8 bytes as a word.
    pub fn prefix(&self) -> u64 {
        self.prefix
    }
}

/// A few key names summed up in one word, by the length and first bytes of each: it rules
/// out most other keys without reading their text ([`KeySet::may_hold`]), so a scan for a
/// handful of names over an event's members compares names only where it may match.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeySet(u64);

impl KeySet {
    pub fn of<'n>(names: impl IntoIterator<Item = &'n str>) -> KeySet {
        KeySet(names.into_iter().fold(0, |set, n| {
            set | key_bit(n.len() as u32, prefix(n.as_bytes()))
        }))
    }

    /// Whether `m`'s key may be one of the names (always, for a key with an escape).
    #[inline(always)]
    pub fn may_hold(&self, m: &Member) -> bool {
        m.escaped() || self.0 & key_bit(m.key[1].wrapping_sub(m.key[0]), m.prefix) != 0
    }
}

/// A few key names looked up together: one pass over an object's members finds them all
/// ([`Names::find_all`]), where [`find`] takes a pass per name.
#[derive(Debug)]
pub struct Names {
    names: Vec<String>,
    /// Each name's first 8 bytes as a word ([`prefix`]).
    prefixes: Vec<u64>,
    set: KeySet,
}

/// Up to this many names are found without allocating.
pub const FEW_NAMES: usize = 8;

impl Names {
    /// `names`, each once.
    pub fn new(names: impl IntoIterator<Item = String>) -> Names {
        let mut unique: Vec<String> = Vec::new();
        for n in names {
            if !unique.contains(&n) {
                unique.push(n);
            }
        }
        Names {
            prefixes: unique.iter().map(|n| prefix(n.as_bytes())).collect(),
            set: KeySet::of(unique.iter().map(String::as_str)),
            names: unique,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// For each name (in order), its member in `members` of `text`: the last one, as
    /// [`find`] gives it.
    pub fn find_all<'m>(
        &self,
        text: &str,
        members: &'m [Member],
    ) -> SmallVec<[Option<&'m Member>; FEW_NAMES]> {
        let mut found = smallvec::smallvec![None; self.names.len()];
        for m in members.iter().filter(|m| self.set.may_hold(m)) {
            let hit = self
                .names
                .iter()
                .zip(&self.prefixes)
                .position(|(name, &prefix)| m.key_matches(text, &KeyProbe { name, prefix }));
            if let Some(i) = hit {
                found[i] = Some(m);
            }
        }
        found
    }
}

/// One of 64 bits for a key of `len` bytes starting with the word `prefix`.
#[inline(always)]
pub(crate) fn key_bit(len: u32, prefix: u64) -> u64 {
    let h = (prefix ^ u64::from(len) << 56).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    1 << (h >> 58)
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
    let mut out = Vec::new();
    scan_object_into(text, &mut out)?;
    Ok(out)
}

/// Like [`scan_object`], appending the members to `out` (nothing, on an error). The tape
/// scan checks every byte, but only the root's members are kept: no tape is written.
pub fn scan_object_into(text: &str, out: &mut Vec<Member>) -> Result<(), ScanError> {
    let before = out.len();
    let scanned = scan_root(
        text,
        Push {
            text: text.as_bytes(),
            out: &mut *out,
        },
    );
    let kept = match scanned {
        Err(e) => Err(ScanError::Malformed(e.0)),
        Ok((Kind::Object, _)) => return Ok(()),
        Ok((kind, _)) => Err(ScanError::NotObject(kind.name())),
    };
    out.truncate(before);
    kept
}

/// What [`scan_root`] does with each member of the root: its key between the quotes,
/// whether the key holds an escape, and its value. (A trait, not a closure: the call is
/// then always inlined into the parser.)
trait OnMember {
    fn member(&mut self, key: Range<usize>, escaped: bool, value: Range<usize>);
}

/// Members pushed on `out`.
struct Push<'a> {
    text: &'a [u8],
    out: &'a mut Vec<Member>,
}

impl OnMember for Push<'_> {
    #[inline(always)]
    fn member(&mut self, key: Range<usize>, escaped: bool, value: Range<usize>) {
        self.out.push(Member::new(self.text, key, escaped, value));
    }
}

/// Whether a key is `key` or holds an escape; how many members.
struct Clash<'a> {
    text: &'a [u8],
    key: &'a [u8],
    found: bool,
    members: usize,
}

impl OnMember for Clash<'_> {
    #[inline(always)]
    fn member(&mut self, key: Range<usize>, escaped: bool, _: Range<usize>) {
        self.found |= escaped || self.text[key] == *self.key;
        self.members += 1;
    }
}

/// Parses `text` (checking every byte as [`tape::parse`] does) and hands each member of
/// the root, when it is an object, to `member`: the members without a tape. Returns the
/// root's kind.
fn scan_root<M: OnMember>(text: &str, member: M) -> Result<(Kind, M), tape::SyntaxError> {
    let mut sink = RootSink {
        member,
        root: None,
        key: None,
        value_start: 0,
    };
    tape::parse_into(text, &mut sink)?;
    Ok((sink.root.expect("a value parsed"), sink.member))
}

/// A tape sink that hands on the members of the root (when it is an object).
struct RootSink<M> {
    member: M,
    /// The root's kind, once seen.
    root: Option<Kind>,
    /// The root member's key (its range between the quotes, and whether it holds an
    /// escape) whose value comes next.
    key: Option<(Range<usize>, bool)>,
    /// Where the value of `key` starts, when it is a container.
    value_start: usize,
}

impl<M: OnMember> RootSink<M> {
    #[inline(always)]
    fn member(&mut self, value: Range<usize>) {
        let (key, escaped) = self.key.take().expect("a key before its value");
        self.member.member(key, escaped, value);
    }
}

impl<M: OnMember> tape::Sink for RootSink<M> {
    #[inline(always)]
    fn open(&mut self, kind: Kind, start: usize, depth: u32) -> usize {
        match depth {
            1 => self.root = Some(kind),
            2 if self.root == Some(Kind::Object) => self.value_start = start,
            _ => {}
        }
        depth as usize
    }

    #[inline(always)]
    fn close(&mut self, handle: usize, end: usize, _len: u32) {
        if handle == 2 && self.root == Some(Kind::Object) {
            self.member(self.value_start..end);
        }
    }

    #[inline(always)]
    fn scalar(&mut self, kind: Kind, escaped: bool, start: usize, end: usize, depth: u32) {
        match depth {
            0 => self.root = Some(kind),
            1 if self.root == Some(Kind::Object) => {
                if self.key.is_none() {
                    self.key = Some((start + 1..end - 1, escaped));
                } else {
                    self.member(start..end);
                }
            }
            _ => {}
        }
    }
}

/// [`scan_object_into`], running `f` on the text's tape in the same pass.
pub fn scan_object_into_with<T>(
    text: &str,
    out: &mut Vec<Member>,
    f: impl FnOnce(&[TNode]) -> T,
) -> Result<T, ScanError> {
    tape::with_tape(text, |res| {
        let nodes = res.map_err(|e| ScanError::Malformed(e.0))?;
        members_into(text, nodes, out)?;
        Ok(f(nodes))
    })
}

/// The top-level members of a parsed text, or why it is not an object.
pub fn members_of(text: &str, nodes: &[TNode]) -> Result<Vec<Member>, ScanError> {
    let mut out = Vec::new();
    members_into(text, nodes, &mut out)?;
    Ok(out)
}

/// Appends the top-level members of a parsed text to `out` (nothing, when it is not an
/// object).
fn members_into(text: &str, nodes: &[TNode], out: &mut Vec<Member>) -> Result<(), ScanError> {
    let root = &nodes[0];
    if root.kind != Kind::Object {
        return Err(ScanError::NotObject(root.kind.name()));
    }
    out.reserve(root.len as usize);
    let mut at = 1;
    for _ in 0..root.len {
        let (k, v) = (&nodes[at], &nodes[at + 1]);
        let key = k.start as usize + 1..k.end as usize - 1;
        out.push(Member::new(
            text.as_bytes(),
            key,
            k.escaped,
            v.start as usize..v.end as usize,
        ));
        at = v.next as usize;
    }
    Ok(())
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
            &value[m.value()]
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
/// Whether setting `value` at `path` keeps a text within [`tape::MAX_DEPTH`]: the value
/// lands inside one object per segment of the path, so its depth is the path's length
/// plus the value's own nesting. A deeper result could not be read by the next stage, so
/// such a setting is refused where it is given.
pub fn set_fits(path: &[String], value: &str) -> Result<(), String> {
    let depth = path.len() as u32 + nesting(value);
    if depth > tape::MAX_DEPTH {
        return Err(format!(
            "setting {} would nest the event {depth} levels deep, past the {} that JSON \
             readers take",
            path.join("."),
            tape::MAX_DEPTH
        ));
    }
    Ok(())
}

/// How deep a valid JSON text nests: 0 for a scalar, 1 for `{}` or `[1]`.
fn nesting(text: &str) -> u32 {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0u32, 0u32, false, false);
    for b in text.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

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
    set_many_into(text, members, ops, &mut out, None)?;
    Ok(out)
}

/// [`set_many`], appending the new text to `out` (a buffer shared by many events) and, when
/// given an `index`, the new text's members to it, so that the next stage to look inside
/// the event need not scan it again. True when they were appended (offsets counted from
/// where the text starts in `out`); false, with `index` as it was, when none was given, a
/// path is nested, or the new text is too long for the index's offsets.
pub fn set_many_into(
    text: &str,
    members: &[Member],
    ops: &[SetOp],
    out: &mut String,
    index: Option<&mut Vec<Member>>,
) -> Result<bool, String> {
    if !top_level(ops) {
        out.push_str(&set_nested(text, members, ops)?);
        return Ok(false);
    }
    let Some(index) = index else {
        set_top_level(text, members, ops, out, &mut ());
        return Ok(false);
    };
    let start = out.len();
    let mut moves = Moves::default();
    set_top_level(text, members, ops, out, &mut moves);
    if out.len() - start >= tape::MAX_TEXT {
        return Ok(false); // Past what the index's offsets reach: the next look scans.
    }
    moves.apply(members, &out[start..], index);
    Ok(true)
}

/// Whether every path is one top-level key (and few enough for [`set_top_level`]'s masks).
fn top_level(ops: &[SetOp]) -> bool {
    ops.len() <= 64 && ops.iter().all(|op| op.path.len() == 1)
}

/// Linear in the number of ops (a hundred thousand `--set`s cost no more per op than
/// one): ops are grouped by their first segment through a hash map, and a group's nested
/// ops between two whole-value ops are applied to the value in one call. Ops apply in
/// order, as one at a time would: a nested op on a parent that is not an object fails,
/// even when a later op replaces that parent.
fn set_nested(text: &str, members: &[Member], ops: &[SetOp]) -> Result<String, String> {
    // Group the operations by their first segment, keeping order inside each group.
    let mut groups: Vec<(&str, Vec<&SetOp>)> = Vec::new();
    let mut group_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for op in ops {
        let head = op.path[0].as_str();
        let g = *group_of.entry(head).or_insert_with(|| {
            groups.push((head, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(op);
    }
    // The event's members by key (a key given twice: every place it stands).
    let mut found_of: std::collections::HashMap<std::borrow::Cow<'_, str>, Vec<&Member>> =
        std::collections::HashMap::new();
    for m in members {
        found_of.entry(m.key_str(text)).or_default().push(m);
    }
    let none: Vec<&Member> = Vec::new();
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut appended = String::new();
    for (key, group) in groups {
        let found = found_of.get(key).unwrap_or(&none);
        let mut current: Option<String> = found.first().map(|m| text[m.value()].to_owned());
        // Nested ops since the last whole-value op, applied together.
        let mut nested: Vec<SetOp> = Vec::new();
        for op in group {
            if op.path.len() == 1 {
                apply_nested(key, &mut current, &mut nested)?;
                current = Some(op.value.to_owned());
            } else {
                nested.push(SetOp {
                    path: &op.path[1..],
                    value: op.value,
                });
            }
        }
        apply_nested(key, &mut current, &mut nested)?;
        let new_value = current.expect("every group sets a value");
        match found.split_first() {
            Some((first, dups)) => {
                edits.push((first.value(), new_value));
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

/// Applies `nested` (paths below `key`) to `current`, the value of `key` (none: an empty
/// object), and empties it.
fn apply_nested(
    key: &str,
    current: &mut Option<String>,
    nested: &mut Vec<SetOp>,
) -> Result<(), String> {
    if nested.is_empty() {
        return Ok(());
    }
    let base = current.as_deref().unwrap_or("{}");
    if type_of(base) != "object" {
        return Err(format!(
            "cannot set {key}.{}: {key:?} is {}, not an object",
            nested[0].path.join("."),
            type_of(base)
        ));
    }
    let inner = scan_object(base).map_err(|e| e.to_string())?;
    *current = Some(set_many(base, &inner, nested)?);
    nested.clear();
    Ok(())
}

/// [`set_many`] when every path is one top-level key: one pass over the members, appended
/// to `out`. For several ops on one key the last wins. `moves` hears what became of the
/// members, for [`set_many_into`] to move their index.
fn set_top_level<T: Track>(
    text: &str,
    members: &[Member],
    ops: &[SetOp],
    out: &mut String,
    moves: &mut T,
) {
    debug_assert!(ops.len() <= 64);
    let close = text.trim_end().len() - 1;
    let extra: usize = ops
        .iter()
        .map(|o| o.path[0].len() + o.value.len() + 4)
        .sum();
    out.reserve(text.len() + extra);
    let base = out.len();
    let mut done = 0u64; // ops whose key was found
    let mut at = 0;
    // The key lengths the ops name: most members are passed over on their length alone.
    let lens = ops
        .iter()
        .fold(0u64, |acc, op| acc | 1 << op.path[0].len().min(63));
    for (i, m) in members.iter().enumerate() {
        if !m.escaped() && lens & (1 << m.key().len().min(63)) == 0 {
            continue;
        }
        let Some(oi) = ops.iter().rposition(|op| m.key_is(text, &op.path[0])) else {
            continue;
        };
        if done & (1 << oi) == 0 {
            done |= 1 << oi;
            out.push_str(&text[at..m.value().start]);
            out.push_str(ops[oi].value);
            at = m.value().end;
            moves.value(i, ops[oi].value.len());
        } else {
            let gone = member_extent(text, members, m);
            out.push_str(&text[at..gone.start]);
            at = gone.end;
            moves.gone(i, gone.len());
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
        let key = out.len() + 1 - base;
        push_quoted(out, &op.path[0]);
        let key = key..out.len() - 1 - base;
        out.push(':');
        let value = out.len() - base;
        out.push_str(op.value);
        moves.added(key, value..out.len() - base);
    }
    out.push_str(&text[close..]);
}

/// What [`set_top_level`] tells of the members it changes: nothing, or [`Moves`].
trait Track {
    /// Member `i`'s value was replaced by one of `len` bytes.
    fn value(&mut self, _i: usize, _len: usize) {}
    /// Member `i` was removed, with `len` bytes.
    fn gone(&mut self, _i: usize, _len: usize) {}
    /// A member was appended (its key between its quotes, and its value, in the new text).
    fn added(&mut self, _key: Range<usize>, _value: Range<usize>) {}
}

impl Track for () {}

impl Track for Moves {
    fn value(&mut self, i: usize, len: usize) {
        self.edits.push((i, Move::Value(len)));
    }
    fn gone(&mut self, i: usize, len: usize) {
        self.edits.push((i, Move::Gone(len)));
    }
    fn added(&mut self, key: Range<usize>, value: Range<usize>) {
        self.added.push((key, value));
    }
}

/// What [`set_top_level`] did to an object's members, to move their index onto the new
/// text without scanning it.
#[derive(Default)]
struct Moves {
    /// (member's position, what became of it), in member order.
    edits: smallvec::SmallVec<[(usize, Move); 4]>,
    /// Members appended: their key (between its quotes) and value in the new text.
    added: smallvec::SmallVec<[(Range<usize>, Range<usize>); 4]>,
}

enum Move {
    /// The value was replaced by one of this many bytes.
    Value(usize),
    /// The member was removed, with this many bytes.
    Gone(usize),
}

impl Moves {
    /// Appends to `index` the members of `new`, made from `members` of the old text: every
    /// member after an edit moves by what the edits before it added or removed.
    fn apply(&self, members: &[Member], new: &str, index: &mut Vec<Member>) {
        index.reserve(members.len() + self.added.len());
        // How far members move (wrapping: a u32 holding a signed shift).
        let mut by = 0u32;
        let mut from = 0;
        for (at, what) in &self.edits {
            index.extend(members[from..*at].iter().map(|m| m.shifted(by)));
            let m = &members[*at];
            match *what {
                Move::Value(len) => {
                    let mut moved = m.shifted(by);
                    moved.value[1] = moved.value[0] + len as u32;
                    by = by
                        .wrapping_add(len as u32)
                        .wrapping_sub(m.value().len() as u32);
                    index.push(moved);
                }
                Move::Gone(len) => by = by.wrapping_sub(len as u32),
            }
            from = at + 1;
        }
        index.extend(members[from..].iter().map(|m| m.shifted(by)));
        for (key, value) in &self.added {
            let escaped = new.as_bytes()[key.clone()].contains(&b'\\');
            index.push(Member::new(
                new.as_bytes(),
                key.clone(),
                escaped,
                value.clone(),
            ));
        }
    }
}

/// Appends the JSON text of a string.
pub fn push_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|c| !tape::STRING_STOP[usize::from(c)]) {
        out.reserve(s.len() + 2);
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
    let key_open = m.key().start - 1;
    if idx > 0 {
        // From the end of the previous value: removes `,"k":v`.
        members[idx - 1].value().end..m.value().end
    } else if let Some(next) = members.get(1) {
        // The first member: removes `"k":v,` up to the next key's quote.
        key_open..next.key().start - 1
    } else {
        let _ = text;
        key_open..m.value().end
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
    let clash = Clash {
        text: text.as_bytes(),
        key: key.as_bytes(),
        found: false,
        members: 0,
    };
    let members = match scan_root(text, clash) {
        Ok((Kind::Object, clash)) if !clash.found => clash.members,
        _ => return false,
    };
    // The object is the text without the whitespace around it.
    let json_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let start = text.len() - text.trim_start_matches(json_ws).len();
    let close = text.trim_end_matches(json_ws).len() - 1;
    out.reserve(close - start + key_json.len() + value.len() + 3);
    out.push_str(&text[start..close]);
    if members > 0 {
        out.push(',');
    }
    out.push_str(key_json);
    out.push(':');
    out.push_str(value);
    out.push('}');
    true
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

    /// The members-only scan gives what the tape gives, errors included.
    #[test]
    fn scan_object_agrees_with_the_tape() {
        for t in [
            r#"{"a":1,"b":[1,{"c":2}],"d":{"e":[]},"f":"x","g":null}"#,
            r#"  { "a" : { "b" : { "c" : 1 } } , "k\u0041" : [ ] }  "#,
            "{}",
            " {} ",
            r#"{"":""}"#,
            r#"[{"a":1}]"#,
            r#""{\"a\":1}""#,
            "12",
            "true",
            r#"{"a":1,}"#,
            r#"{"a":1"#,
            r#"{"a":[1,2}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\x"}"#,
            "",
        ] {
            let by_tape = tape::with_tape(t, |res| {
                members_of(t, res.map_err(|e| ScanError::Malformed(e.0))?)
            });
            assert_eq!(scan_object(t), by_tape, "{t}");
            let mut into = vec![Member::new(b"{}", 1..1, false, 0..0)];
            let ok = scan_object_into(t, &mut into).is_ok();
            assert_eq!(into.len(), 1 + by_tape.map_or(0, |m| m.len()), "{t}");
            assert_eq!(ok, into.len() > 1 || t.trim() == "{}", "{t}");
        }
    }

    #[test]
    fn a_key_set_holds_its_names_and_rules_out_most_others() {
        let names = ["amount", "user_id", "amount_cents", "a", ""];
        let set = KeySet::of(names);
        let text = r#"{"amount":1,"user_id":2,"amount_cents":3,"a":4,"":5,"\u0061":6}"#;
        let members = scan_object(text).unwrap();
        assert!(members.iter().all(|m| set.may_hold(m)));
        let others: String = (0..200).map(|i| format!(r#","k{i}":0"#)).collect();
        let text = format!(r#"{{"x":0{others}}}"#);
        let held = scan_object(&text)
            .unwrap()
            .iter()
            .filter(|m| set.may_hold(m))
            .count();
        // Five of 64 bits set: about 8 % of other keys pass.
        assert!(held < 40, "{held} of 201");
    }

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
        // Only the root's keys count.
        assert_eq!(
            add("{\"x\":{\"_m\":1},\"y\":[{\"_m\":2}]}").as_deref(),
            Some("before {\"x\":{\"_m\":1},\"y\":[{\"_m\":2}],\"_m\":{\"a\":1}}")
        );
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
    fn reindexed_members_are_those_a_scan_of_the_new_text_finds() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (r#"{"a":1,"b":"two","c":[3]}"#, &[("b", r#""zz""#)]),
            (
                r#" { "a" : 1 , "b" : 2 } "#,
                &[("a", "12345"), ("new", "true")],
            ),
            (r#"{}"#, &[("x", "1"), ("y", r#"{"z":[]}"#)]),
            (r#"{"k":1,"m":2,"k":3,"n":4}"#, &[("k", "0"), ("n", "5")]),
            (r#"{"a\"b":1,"c":2}"#, &[("a\"b", "9"), ("q\"r", "7")]),
            (r#"{"long_key_name":"v","x":1}"#, &[("long_key_name", "[]")]),
            (
                r#"{"a":1}"#,
                &[("a", "2"), ("a", "3"), ("b", "4"), ("b", "5")],
            ),
            (r#"{"a":1,"b":2}"#, &[("zzz", "\"\"")]),
        ];
        for (text, ops) in cases {
            let paths: Vec<Vec<String>> = ops.iter().map(|(k, _)| vec![k.to_string()]).collect();
            let set_ops: Vec<SetOp> = paths
                .iter()
                .zip(ops.iter())
                .map(|(p, (_, v))| SetOp { path: p, value: v })
                .collect();
            let members = scan_object(text).unwrap();
            let earlier = scan_object(r#"{"earlier":0}"#).unwrap();
            let (mut out, mut index) = (String::from("earlier text "), earlier);
            let start = out.len();
            assert!(set_many_into(text, &members, &set_ops, &mut out, Some(&mut index)).unwrap());
            let new = &out[start..];
            let expected = set_many(text, &members, &set_ops).unwrap();
            assert_eq!(new, expected, "same text as set_many for {text}");
            assert_eq!(index[1..], scan_object(new).unwrap(), "index of {new}");
        }
        // A nested path: nothing is indexed, and it says so.
        let text = r#"{"a":{"b":1}}"#;
        let members = scan_object(text).unwrap();
        let nested = ["a".to_string(), "c".to_string()];
        let op = [SetOp {
            path: &nested,
            value: "2",
        }];
        let (mut out, mut index) = (String::new(), Vec::new());
        assert!(!set_many_into(text, &members, &op, &mut out, Some(&mut index)).unwrap());
        assert_eq!(out, r#"{"a":{"b":1,"c":2}}"#);
        assert!(index.is_empty());
    }

    #[test]
    fn scan_finds_members_with_spacing_and_escapes() {
        let text = r#" { "a" : 1 , "b\"c":{"x":[1,2]}, "d":"s" } "#;
        let m = scan_object(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(&text[m[0].key()], "a");
        assert_eq!(&text[m[0].value()], "1");
        assert!(m[1].key_is(text, "b\"c"));
        assert!(m[1].escaped());
        assert_eq!(&text[m[1].value()], r#"{"x":[1,2]}"#);
        assert_eq!(&text[m[2].value()], r#""s""#);
    }

    #[test]
    fn find_takes_the_last_duplicate_and_handles_empty_and_escaped_keys() {
        let text = r#"{"ab":1,"":2,"a\u0062":3,"cb":4,"b":6}"#;
        let m = scan_object(text).unwrap();
        let get = |k| find(text, &m, k).map(|m| &text[m.value()]);
        assert_eq!(get("ab"), Some("3"));
        assert_eq!(get(""), Some("2"));
        assert_eq!(get("cb"), Some("4"));
        assert_eq!(get("b"), Some("6"));
        assert_eq!(get("zb"), None);
        let text = r#"{"ab":1,"ab":5}"#;
        let m = scan_object(text).unwrap();
        assert_eq!(&text[find(text, &m, "ab").unwrap().value()], "5");
        // Keys that share their first 8 bytes (the word compared first), or all of them.
        let text = r#"{"abcdefgh":1,"abcdefghi":2,"abcdefghj":3,"abcdefg":4,"abcdefghix":5}"#;
        let m = scan_object(text).unwrap();
        let get = |k| find(text, &m, k).map(|m| &text[m.value()]);
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

    /// Many ops at once give what applying them one at a time gives, errors included
    /// (the grouped path that keeps `--set` linear).
    #[test]
    fn ops_at_once_are_ops_one_at_a_time() {
        let one_by_one = |text: &str, ops: &[(&str, &str)]| -> Result<String, String> {
            let mut t = text.to_owned();
            for op in ops {
                t = set(&t, &[*op])?;
            }
            Ok(t)
        };
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                r#"{"a":{"x":0},"b":1}"#,
                &[("a.y", "1"), ("b", "2"), ("a.x", "3")],
            ),
            (r#"{"a":5}"#, &[("a.b", "1"), ("a", "2")]),
            (r#"{"a":5}"#, &[("a", "{}"), ("a.b", "1"), ("a.c.d", "2")]),
            (
                r#"{"a":{"b":1},"a":{"c":2}}"#,
                &[("a.d", "3"), ("z.y", "4")],
            ),
            (r#"{}"#, &[("a.b", "1"), ("a", "[]"), ("a.c", "2")]),
            (
                r#"{"a":{"b":{"c":1}}}"#,
                &[("a.b.d", "2"), ("a.b", "{}"), ("a.b.e", "3")],
            ),
        ];
        for (text, ops) in cases {
            assert_eq!(
                set(text, ops).is_ok(),
                one_by_one(text, ops).is_ok(),
                "{text} {ops:?}"
            );
            if let (Ok(a), Ok(b)) = (set(text, ops), one_by_one(text, ops)) {
                let (a, b): (serde_json::Value, serde_json::Value) = (
                    serde_json::from_str(&a).unwrap(),
                    serde_json::from_str(&b).unwrap(),
                );
                assert_eq!(a, b, "{text} {ops:?}");
            }
        }
        // Past 64 ops the same holds.
        let many: Vec<(String, String)> = (0..100)
            .map(|i| (format!("k{}.v{i}", i % 7), i.to_string()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
        let text = r#"{"k3":{"v3":"old"}}"#;
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&set(text, &many).unwrap()).unwrap(),
            serde_json::from_str(&one_by_one(text, &many).unwrap()).unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn settings_deeper_than_readers_take_are_refused() {
        let deep = |n: usize| vec!["a".to_owned(); n];
        assert!(set_fits(&deep(127), "1").is_ok());
        assert!(
            set_fits(&deep(127), "\"{[\"").is_ok(),
            "brackets in a string"
        );
        assert!(set_fits(&deep(126), "{}").is_ok());
        assert!(set_fits(&deep(126), "[{}]").is_err());
        assert!(set_fits(&deep(128), "1")
            .unwrap_err()
            .contains("128 levels deep"));
        // What fits reads back.
        let text = r#"{"z":0}"#;
        let path = deep(126);
        let out = set_many(
            text,
            &scan_object(text).unwrap(),
            &[SetOp {
                path: &path,
                value: "{}",
            }],
        )
        .unwrap();
        assert!(scan_object(&out).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }
}
