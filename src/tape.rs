//! The tape: one validating pass over a JSON text into a flat array of nodes that point
//! into the text. Nothing is copied or allocated per value.
//!
//! The member index of every event comes from it, and JSON Schema validation reads it
//! directly through jsonschema's `Json` trait, so an event is never turned into a
//! `serde_json::Value` tree on the hot path.
//!
//! The scanner is at least as strict as serde_json: RFC 8259 grammar, no control
//! characters in strings, paired surrogate escapes, finite numbers, at most 127 levels of
//! nesting. (The text was already checked as UTF-8.)

use std::borrow::Cow;
use std::cell::RefCell;

use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::Value;

/// How deep a text may nest (objects and arrays): what serde_json's recursion limit of 128
/// lets through, 127 levels (the splice_vs_scan fuzz target found a text 128 deep that
/// this scan took and serde_json, so jq and persist, refused). Deeper texts are refused,
/// so no stage recurses without bound on hostile input.
pub const MAX_DEPTH: u32 = 127;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    True,
    False,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::True | Kind::False => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }
}

/// One value on the tape. Object children come as key, value, key, value, ...
#[derive(Clone, Copy, Debug)]
pub struct TNode {
    pub kind: Kind,
    /// A string (or key) holding a backslash escape.
    pub escaped: bool,
    /// Byte range in the text; for strings it includes the quotes.
    pub start: u32,
    pub end: u32,
    /// Members (objects) or elements (arrays).
    pub len: u32,
    /// Index of the node after this one's subtree.
    pub next: u32,
}

impl TNode {
    /// The bytes of the text this node writes itself, whitespace aside: a scalar its
    /// text; a container its brackets and commas (an object its colons too), its
    /// children counted apart. A text whose nodes' bytes add up to its length has no
    /// whitespace between its tokens. (`jq::fast::canonical::tape` counts the same in
    /// the one match it makes a node: calling this there cost enrich --jq 0.8 % more
    /// instructions.)
    #[inline]
    pub fn own_bytes(&self) -> usize {
        let len = self.len as usize;
        match self.kind {
            Kind::Array => 2 + len.saturating_sub(1),
            Kind::Object => 2 + len + len.saturating_sub(1),
            _ => (self.end - self.start) as usize,
        }
    }
}

/// Texts this long or longer are refused: offsets into them must fit in 31 bits.
pub const MAX_TEXT: usize = 1 << 31;

/// Why a text is not valid JSON: a message with the 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

/// What a parse hands on, value by value: the whole tape ([`TNode`]s, for `Vec<TNode>`),
/// or only what its caller keeps (an object's members, `json::scan_object`). The
/// checking is the same whatever the sink: one parser, monomorphized per sink.
pub trait Sink {
    /// A container of `kind` opens at `start`, `depth` levels deep (the root is 1). The
    /// handle comes back to [`Sink::close`].
    fn open(&mut self, kind: Kind, start: usize, depth: u32) -> usize;
    /// The container of `handle` closes before `end`, with `len` members or elements.
    fn close(&mut self, handle: usize, end: usize, len: u32);
    /// A scalar or a key spans `start..end` in a container `depth` deep (0: at the root).
    fn scalar(&mut self, kind: Kind, escaped: bool, start: usize, end: usize, depth: u32);
}

impl Sink for Vec<TNode> {
    #[inline(always)]
    fn open(&mut self, kind: Kind, start: usize, _depth: u32) -> usize {
        let idx = self.len();
        self.push(TNode {
            kind,
            escaped: false,
            start: start as u32,
            end: start as u32,
            len: 0,
            next: 0,
        });
        idx
    }

    #[inline(always)]
    fn close(&mut self, handle: usize, end: usize, len: u32) {
        let next = self.len() as u32;
        let n = &mut self[handle];
        n.end = end as u32;
        n.len = len;
        n.next = next;
    }

    #[inline(always)]
    fn scalar(&mut self, kind: Kind, escaped: bool, start: usize, end: usize, _depth: u32) {
        let next = self.len() as u32 + 1;
        self.push(TNode {
            kind,
            escaped,
            start: start as u32,
            end: end as u32,
            len: 0,
            next,
        });
    }
}

/// Parses `text` (valid UTF-8) as one JSON value with optional surrounding whitespace.
pub fn parse(text: &str, tape: &mut Vec<TNode>) -> Result<(), SyntaxError> {
    tape.clear();
    parse_into(text, tape)
}

/// [`parse`], handing the values to `sink`.
pub fn parse_into<S: Sink>(text: &str, sink: &mut S) -> Result<(), SyntaxError> {
    // Offsets are 32-bit here, and 31-bit in a member index (see `json::Member`).
    if text.len() >= MAX_TEXT {
        return Err(SyntaxError("text longer than 2 GiB".into()));
    }
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
        sink,
        error: ("", 0),
    };
    let res = (|| {
        p.ws();
        p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(p.fail("trailing characters"));
        }
        Ok(())
    })();
    res.map_err(|Fail| p.syntax_error())
}

thread_local! {
    static SCRATCH: RefCell<Vec<TNode>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the tape of `text`, in a buffer reused by this thread.
pub fn with_tape<T>(text: &str, f: impl FnOnce(Result<&[TNode], SyntaxError>) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut tape) => {
            let res = parse(text, &mut tape).map(|()| tape.as_slice());
            f(res)
        }
        Err(_) => {
            let mut tape = Vec::new();
            let res = parse(text, &mut tape).map(|()| tape.as_slice());
            f(res)
        }
    })
}

struct Parser<'a, S> {
    b: &'a [u8],
    i: usize,
    sink: &'a mut S,
    /// What failed and where, set with [`Fail`].
    error: (&'static str, usize),
}

/// A parse failed; the parser holds the details. One byte wide, so results stay in
/// registers on the hot path.
struct Fail;

type Parsed = Result<(), Fail>;

/// Bytes that end a run of plain string characters: quote, backslash, control chars.
pub(crate) static STRING_STOP: [bool; 256] = string_stops(false);

/// A table of the bytes a JSON string cannot hold as they are (quote, backslash, control
/// characters), and DEL too when `del`.
pub const fn string_stops(del: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = del;
    t
}

/// A word with the high bit set in (at least) the first byte that is a quote, a
/// backslash or a control character; zero when there is none. Bits above the first hit
/// may be spurious (borrows), so only the lowest one is meaningful.
#[inline]
fn stop_mask(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (LO * u64::from(b'"'));
    let slash = x ^ (LO * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    zero(quote) | zero(slash) | (x.wrapping_sub(LO * 0x20) & !x & HI)
}

/// One bit per byte of the 16 at `p`: set for a quote, a backslash or a control character.
///
/// # Safety
/// `p..p + 16` must be readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stop_bits(p: *const u8) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86_64; the caller vouches for the 16 bytes.
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        let quote = _mm_set1_epi8(b'"' as i8);
        let slash = _mm_set1_epi8(b'\\' as i8);
        let ctrl = _mm_set1_epi8(0x1f);
        // A byte is a control character when max(byte, 0x1f) is 0x1f.
        let stops = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
            _mm_cmpeq_epi8(_mm_max_epu8(v, ctrl), ctrl),
        );
        _mm_movemask_epi8(stops) as u32
    }
}

/// The index of the first quote, backslash or control character in `b` from `i` on, or
/// `b.len()`. Plain characters are the common case: they are skipped 16 (SSE2) or 8
/// (SWAR) at a time.
#[inline(always)]
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        while i + 16 <= b.len() {
            // SAFETY: the load reads b[i..i + 16].
            let mask = unsafe { stop_bits(b.as_ptr().add(i)) };
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while let Some(word) = b.get(i..i + 8) {
        let stops = stop_mask(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !STRING_STOP[b[i] as usize] {
        i += 1;
    }
    i
}

impl<S: Sink> Parser<'_, S> {
    #[cold]
    fn fail(&mut self, what: &'static str) -> Fail {
        self.error = (what, self.i);
        Fail
    }

    fn syntax_error(&self) -> SyntaxError {
        let (what, at) = self.error;
        let found = match self.b.get(at) {
            None => "the end of the line".to_owned(),
            Some(c) if c.is_ascii_graphic() => format!("'{}'", *c as char),
            Some(c) => format!("byte 0x{c:02x}"),
        };
        SyntaxError(format!("{what} at column {} (found {found})", at + 1))
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// A value in a container `depth` deep (0: the root).
    fn value(&mut self, depth: u32) -> Parsed {
        match self.b.get(self.i) {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(depth),
            Some(b't') => self.literal(b"true", Kind::True, depth),
            Some(b'f') => self.literal(b"false", Kind::False, depth),
            Some(b'n') => self.literal(b"null", Kind::Null, depth),
            Some(b'-' | b'0'..=b'9') => self.number(depth),
            _ => Err(self.fail("expected a value")),
        }
    }

    /// A value in a container `depth` deep, after optional whitespace: strings and
    /// numbers, most of an event's values, are read here, without the call into
    /// [`Parser::value`] (which containers and literals take). Whitespace is looked for
    /// only when no value starts at once (compact text has none).
    #[inline(always)]
    fn member_value(&mut self, depth: u32) -> Parsed {
        match self.b.get(self.i) {
            Some(b'"') => self.string(depth),
            Some(b'-' | b'0'..=b'9') => self.number(depth),
            _ => {
                self.ws();
                self.value(depth)
            }
        }
    }

    /// Hands on a scalar that spans `start..self.i`.
    #[inline(always)]
    fn scalar(&mut self, kind: Kind, escaped: bool, start: usize, depth: u32) {
        self.sink.scalar(kind, escaped, start, self.i, depth);
    }

    fn literal(&mut self, word: &[u8], kind: Kind, depth: u32) -> Parsed {
        if !self.b[self.i..].starts_with(word) {
            return Err(self.fail("invalid literal"));
        }
        let start = self.i;
        self.i += word.len();
        self.scalar(kind, false, start, depth);
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    #[inline(always)]
    fn number(&mut self, depth: u32) -> Parsed {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.fail("invalid number")),
        }
        let mut exponent = false;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.fail("expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            exponent = true;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.fail("expected a digit in the exponent"));
            }
        }
        // Only an exponent (or a very long number) can leave the range of f64.
        if exponent || self.i - start > 300 {
            let text = std::str::from_utf8(&self.b[start..self.i]).expect("ASCII");
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                self.i = start;
                return Err(self.fail("number out of range"));
            }
        }
        self.scalar(Kind::Number, false, start, depth);
        Ok(())
    }

    /// A string at `self.i` (its opening quote). Most strings are short and plain: when the
    /// first quote, backslash or control character of the next 32 bytes is the closing
    /// quote, that settles it inline; anything else takes [`Parser::string_slow`].
    #[inline(always)]
    fn string(&mut self, depth: u32) -> Parsed {
        #[cfg(target_arch = "x86_64")]
        {
            let (b, start) = (self.b, self.i);
            let mut at = start + 1;
            while at + 16 <= b.len() && at <= start + 17 {
                // SAFETY: the load reads b[at..at + 16].
                let mask = unsafe { stop_bits(b.as_ptr().add(at)) };
                if mask != 0 {
                    let end = at + mask.trailing_zeros() as usize;
                    if b[end] != b'"' {
                        break;
                    }
                    self.i = end + 1;
                    self.scalar(Kind::String, false, start, depth);
                    return Ok(());
                }
                at += 16;
            }
        }
        self.string_slow(depth)
    }

    #[inline(never)]
    fn string_slow(&mut self, depth: u32) -> Parsed {
        let start = self.i;
        let mut escaped = false;
        self.i += 1;
        let b = self.b;
        loop {
            self.i = skip_plain(b, self.i);
            match b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    self.scalar(Kind::String, escaped, start, depth);
                    return Ok(());
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.fail("control character in a string")),
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Parsed {
        self.i += 1;
        match self.b.get(self.i) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                let cp = self.hex4()?;
                match cp {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i) != Some(&b'\\')
                            || self.b.get(self.i + 1) != Some(&b'u')
                        {
                            return Err(self.fail("lone leading surrogate in a \\u escape"));
                        }
                        self.i += 1;
                        if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                            return Err(self.fail("invalid surrogate pair in a \\u escape"));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.fail("lone trailing surrogate in a \\u escape")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.fail("invalid escape")),
        }
    }

    /// At the `u` of `\uXXXX`: reads the four hex digits.
    fn hex4(&mut self) -> Result<u32, Fail> {
        self.i += 1;
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.b.get(self.i) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.fail("invalid \\u escape")),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    /// After an element or member: a comma (true: more follow; whitespace after it is
    /// the next element's or key's to skip) or the closing `close`.
    fn more(&mut self, close: u8, expected: &'static str) -> Result<bool, Fail> {
        self.ws();
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(&c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(self.fail(expected)),
        }
    }

    fn array(&mut self, depth: u32) -> Parsed {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deep"));
        }
        let idx = self.sink.open(Kind::Array, self.i, depth);
        self.i += 1;
        self.ws();
        let mut n = 0;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
        } else {
            loop {
                self.member_value(depth)?;
                n += 1;
                if !self.more(b']', "expected ',' or ']'")? {
                    break;
                }
            }
        }
        self.sink.close(idx, self.i, n);
        Ok(())
    }

    fn object(&mut self, depth: u32) -> Parsed {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deep"));
        }
        let idx = self.sink.open(Kind::Object, self.i, depth);
        self.i += 1;
        self.ws();
        let mut n = 0;
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                if self.b.get(self.i) != Some(&b'"') {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(self.fail("expected a key"));
                    }
                }
                self.string(depth)?;
                // Compact text first: the colon right after the key, a comma or the
                // brace right after the value.
                if self.b.get(self.i) != Some(&b':') {
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(self.fail("expected ':'"));
                    }
                }
                self.i += 1;
                self.member_value(depth)?;
                n += 1;
                match self.b.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => {
                        if !self.more(b'}', "expected ',' or '}'")? {
                            break;
                        }
                    }
                }
            }
        }
        self.sink.close(idx, self.i, n);
        Ok(())
    }
}

/// A node of a parsed text, as jsonschema reads it. At the root, the member named by
/// `hide` (the metadata field) is invisible.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    text: &'a str,
    nodes: &'a [TNode],
    idx: u32,
    /// Tape index of the hidden member's key (root only), or `u32::MAX`.
    hide: u32,
}

impl<'a> TapeNode<'a> {
    pub fn root(text: &'a str, nodes: &'a [TNode], hide: Option<&str>) -> TapeNode<'a> {
        let mut root = TapeNode {
            text,
            nodes,
            idx: 0,
            hide: u32::MAX,
        };
        if let (Some(name), Kind::Object) = (hide, nodes[0].kind) {
            let mut at = 1;
            for _ in 0..nodes[0].len {
                if root.at(at).key_is(name) {
                    root.hide = at;
                }
                at = nodes[at as usize + 1].next;
            }
        }
        root
    }

    fn node(&self) -> &'a TNode {
        &self.nodes[self.idx as usize]
    }

    fn at(&self, idx: u32) -> TapeNode<'a> {
        TapeNode {
            text: self.text,
            nodes: self.nodes,
            idx,
            hide: u32::MAX,
        }
    }

    fn raw(&self) -> &'a str {
        let n = self.node();
        &self.text[n.start as usize..n.end as usize]
    }

    fn string(&self) -> Cow<'a, str> {
        let raw = self.raw();
        if self.node().escaped {
            Cow::Owned(serde_json::from_str(raw).expect("validated string"))
        } else {
            Cow::Borrowed(&raw[1..raw.len() - 1])
        }
    }

    /// Whether this string node equals `s`, without unescaping when it has no escapes.
    fn key_is(&self, s: &str) -> bool {
        let raw = self.raw();
        if self.node().escaped {
            self.string() == s
        } else {
            &raw[1..raw.len() - 1] == s
        }
    }

    /// (key, value) index pairs of an object node, honouring `hide`.
    fn pairs(&self) -> MemberIter<'a> {
        MemberIter {
            node: *self,
            at: self.idx + 1,
            left: self.node().len,
        }
    }
}

pub struct MemberIter<'a> {
    node: TapeNode<'a>,
    at: u32,
    left: u32,
}

impl<'a> Iterator for MemberIter<'a> {
    type Item = (Cow<'a, str>, TapeNode<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            let key = self.node.at(self.at);
            let value = self.node.at(self.at + 1);
            self.at = value.node().next;
            if key.idx == self.node.hide {
                continue;
            }
            return Some((key.string(), value));
        }
    }
}

pub struct ElemIter<'a> {
    node: TapeNode<'a>,
    at: u32,
    left: u32,
}

impl<'a> Iterator for ElemIter<'a> {
    type Item = TapeNode<'a>;
    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let n = self.node.at(self.at);
        self.at = n.node().next;
        Some(n)
    }
}

/// jsonschema's view of the tape.
pub struct TapeJson;

/// Scratch for `propertyNames`: a one-string document.
#[derive(Default)]
pub struct StringDoc {
    text: String,
    nodes: Vec<TNode>,
}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = StringDoc;
    /// `get` is a linear scan, so one pass over the members beats a lookup per property.
    const KEYS_PER_LOOKUP: usize = 64;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        buffer: &mut StringDoc,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        // Any valid escaping will do: the text is only parsed back into one node.
        buffer.text = serde_json::to_string(string).expect("a string serialises");
        parse(&buffer.text, &mut buffer.nodes).expect("a quoted string parses");
        f(TapeNode::root(&buffer.text, &buffer.nodes, None))
    }
}

pub struct Num<'a>(&'a str);

impl JsonNumber for Num<'_> {
    fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
    fn as_i64(&self) -> Option<i64> {
        self.0.parse().ok()
    }
    fn as_f64(&self) -> Option<f64> {
        self.0.parse().ok()
    }
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.0)
    }
    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(serde_json::from_str(self.0).expect("validated number"))
    }
    fn is_integer(&self) -> bool {
        !self.0.contains(['.', 'e', 'E']) || self.0.parse::<f64>().is_ok_and(|f| f.fract() == 0.0)
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeNode<'a>;
    type Array = TapeNode<'a>;
    type Number = Num<'a>;

    fn as_object(&self) -> Option<TapeNode<'a>> {
        (self.node().kind == Kind::Object).then_some(*self)
    }
    fn as_array(&self) -> Option<TapeNode<'a>> {
        (self.node().kind == Kind::Array).then_some(*self)
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        (self.node().kind == Kind::String).then(|| self.string())
    }
    fn as_number(&self) -> Option<Num<'a>> {
        (self.node().kind == Kind::Number).then(|| Num(self.raw()))
    }
    fn as_boolean(&self) -> Option<bool> {
        match self.node().kind {
            Kind::True => Some(true),
            Kind::False => Some(false),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        self.node().kind == Kind::Null
    }
    fn is_number(&self) -> bool {
        self.node().kind == Kind::Number
    }
    fn json_type(&self) -> JsonType {
        match self.node().kind {
            Kind::Null => JsonType::Null,
            Kind::True | Kind::False => JsonType::Boolean,
            Kind::Number => JsonType::Number,
            Kind::String => JsonType::String,
            Kind::Array => JsonType::Array,
            Kind::Object => JsonType::Object,
        }
    }
    fn equals_value(&self, expected: &Value) -> bool {
        match (self.node().kind, expected) {
            (Kind::String, Value::String(s)) => self.string() == s.as_str(),
            (Kind::String, _) | (_, Value::String(_)) => false,
            (Kind::Null, e) => e.is_null(),
            (Kind::True, e) => e.as_bool() == Some(true),
            (Kind::False, e) => e.as_bool() == Some(false),
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        if self.hide != u32::MAX {
            let map: serde_json::Map<String, Value> = self
                .pairs()
                .map(|(k, v)| (k.into_owned(), v.to_value().into_owned()))
                .collect();
            return Cow::Owned(Value::Object(map));
        }
        Cow::Owned(serde_json::from_str(self.raw()).expect("validated JSON"))
    }
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(self.nodes.as_ptr() as usize, self.idx))
    }
}

impl<'a> Object<'a, TapeJson> for TapeNode<'a> {
    type Node = TapeNode<'a>;
    type MemberName = Cow<'a, str>;
    type MembersIter = MemberIter<'a>;

    fn len(&self) -> usize {
        self.node().len as usize - usize::from(self.hide != u32::MAX)
    }
    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        // Last duplicate wins, as in serde_json.
        let mut found = None;
        let mut at = self.idx + 1;
        for _ in 0..self.node().len {
            let k = self.at(at);
            let v = self.at(at + 1);
            if k.key_is(key) && k.idx != self.hide {
                found = Some(v);
            }
            at = v.node().next;
        }
        found
    }
    fn members(&self) -> MemberIter<'a> {
        self.pairs()
    }
}

impl<'a> Array<'a, TapeJson> for TapeNode<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = ElemIter<'a>;

    fn len(&self) -> usize {
        self.node().len as usize
    }
    fn elements(&self) -> ElemIter<'a> {
        ElemIter {
            node: *self,
            at: self.idx + 1,
            left: self.node().len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_plain_stops_at_the_first_stop_byte_wherever_it_is() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| STRING_STOP[b[j] as usize])
                .unwrap_or(b.len())
        };
        for len in 0..50 {
            for pos in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0xe9] {
                    let mut b = vec![b'a'; len];
                    if pos < len {
                        b[pos] = stop;
                    }
                    for start in [0, 1, 3].into_iter().filter(|&s| s <= len) {
                        assert_eq!(
                            skip_plain(&b, start),
                            naive(&b, start),
                            "len {len} stop {stop:#x} at {pos} from {start}"
                        );
                    }
                }
            }
        }
    }

    fn ok(s: &str) -> bool {
        parse(s, &mut Vec::new()).is_ok()
    }

    /// Agrees with serde_json on accept/reject for a corpus of tricky inputs.
    #[test]
    fn as_strict_as_serde_json() {
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":[1,2,{"b":null}],"c":"\u00e9\n"}"#,
            r#" {"a" : 1 } "#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"01"#,
            r#"-"#,
            r#"1."#,
            r#"1e"#,
            r#".5"#,
            r#"1.5e+3"#,
            r#"-0"#,
            r#"1e400"#,
            r#"-1e-400"#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\x""#,
            "\"a\tb\"",
            r#""abc"#,
            r#"tru"#,
            r#"true false"#,
            r#"nul"#,
            r#"{"a":1}}"#,
            r#"[[[[]]]]"#,
            r#""\u12G4""#,
            "",
            r#"123456789012345678901234567890"#,
            r#"{"a":"\/"}"#,
            // Whitespace wherever the grammar lets it stand, and where it does not help.
            " [ 1 , \"x\" ,\t{ } ,[ ] , true ] ",
            "{ \"a\" :\n[ 1 ,2 ] ,\r\n \"b\" : { \"c\" : null } }",
            r#"[1 ,]"#,
            r#"[1, ]"#,
            r#"{"a":1, }"#,
            r#"{"a":1 , "b":2 }"#,
            r#"{ , "a":1}"#,
            r#"[ , 1]"#,
            r#"[1 2]"#,
            r#"{"a":1 "b":2}"#,
        ];
        for c in cases {
            let serde = serde_json::from_str::<serde_json::Value>(c).is_ok();
            assert_eq!(ok(c), serde, "disagree on {c:?}");
        }
        // serde_json's recursion limit of 128 lets 127 levels through: so does the scan.
        let deep = "[".repeat(128) + &"]".repeat(128);
        assert!(!ok(&deep));
        let fine = "[".repeat(127) + &"]".repeat(127);
        assert!(ok(&fine));
        for text in [&deep, &fine] {
            let serde = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(ok(text), serde, "disagree at {} levels", text.len() / 2);
        }
    }

    #[test]
    fn tape_shape() {
        let text = r#"{"a":[1,{"b":2}],"c":"x"}"#;
        let mut t = Vec::new();
        parse(text, &mut t).unwrap();
        assert_eq!(t[0].kind, Kind::Object);
        assert_eq!(t[0].len, 2);
        assert_eq!(t[0].next as usize, t.len());
        let root = TapeNode::root(text, &t, Some("c"));
        let names: Vec<String> = root.pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn schema_on_the_tape_hides_meta() {
        let schema = serde_json::json!({
            "type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "integer"}, "s": {"enum": ["x", "y"]}, "t": {"type": "array", "minItems": 2}}
        });
        let v = jsonschema::options_for::<TapeJson>()
            .build(&schema)
            .unwrap();
        let check = |text: &str| {
            let mut t = Vec::new();
            parse(text, &mut t).unwrap();
            v.is_valid(TapeNode::root(text, &t, Some("_meta")))
        };
        assert!(check(r#"{"a":1,"s":"x","t":[1,2],"_meta":{"z":1}}"#));
        assert!(check(r#"{"a":1.0}"#));
        assert!(!check(r#"{"a":1.5}"#));
        assert!(!check(r#"{"s":"q"}"#));
        assert!(!check(r#"{"t":[1]}"#));
        assert!(!check(r#"{"other":1}"#));
        assert!(check(r#"{"s":"\u0078"}"#));
    }
}
