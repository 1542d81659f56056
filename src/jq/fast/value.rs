//! Values of the fast path, with jaq's arithmetic, order and printing.
//!
//! Every rule here copies jaq-json 2 (the crate the helper processes run): integers and
//! floats are distinct (`4 / 2` is `2.0`), `null` is neutral for `+`, number literals the
//! program wrote that are not integers print as written, strings print with jaq's escapes.
//! Where jaq would go somewhere this file does not (big integers, an error, a NaN), the
//! operation answers [`Bail`] and the event is run by jaq itself.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::json;

/// The fast path cannot answer this one exactly: jaq runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

pub type R<T> = Result<T, Bail>;

/// An object's members, in order.
pub type Members<'a> = Vec<(Cow<'a, str>, V<'a>)>;

/// A value. `'a` is the life of the event's text and of the program.
#[derive(Clone, Debug)]
pub enum V<'a> {
    Null,
    Bool(bool),
    /// An integer that fits a machine word (jaq's `Int`).
    Int(i64),
    /// A float computed by the program (jaq's `Float`, printed by ryu).
    Float(f64),
    /// A number literal of the program that is not a machine integer, printed as written
    /// (jaq's `Dec`); read as a float by arithmetic.
    Dec(Cow<'a, str>),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A value of the event, still as its text: printed verbatim (the event was checked
    /// to be printed by jaq exactly so, see [`super::canonical`]), decoded when read.
    Raw(&'a str),
    Arr(Vec<V<'a>>),
    /// An object: members in jaq's order (insertion order; see [`set`] and [`remove`]).
    Obj(Members<'a>),
}

impl<'a> V<'a> {
    /// The value behind a [`V::Raw`]: scalars decoded as jaq reads them (through
    /// serde_json), arrays and objects left as text.
    pub fn decoded(self) -> R<V<'a>> {
        match self {
            V::Raw(t) => decode(t),
            v => Ok(v),
        }
    }

    pub fn truthy(&self) -> bool {
        !matches!(self, V::Null | V::Bool(false))
            && !matches!(self, V::Raw(t) if *t == "null" || *t == "false")
    }

    /// The members of an object, decoding one still in text; `None` for other values.
    pub fn into_members(self) -> R<Option<Members<'a>>> {
        match self {
            V::Obj(m) => Ok(Some(m)),
            V::Raw(t) if t.starts_with('{') => Ok(Some(members_of(t)?)),
            _ => Ok(None),
        }
    }

    fn type_rank(&self) -> u8 {
        match self {
            V::Null => 0,
            V::Bool(false) => 1,
            V::Bool(true) => 2,
            V::Int(_) | V::Float(_) | V::Dec(_) => 3,
            V::Str(_) => 4,
            V::Arr(_) => 5,
            V::Obj(_) => 6,
            V::Raw(t) if t.starts_with('[') => 5,
            V::Raw(_) => 6,
        }
    }
}

/// Decodes one JSON value of an event's text (valid, canonical).
pub fn decode(t: &str) -> R<V<'_>> {
    Ok(match t.as_bytes()[0] {
        b'n' => V::Null,
        b't' => V::Bool(true),
        b'f' => V::Bool(false),
        b'"' => {
            let inner = &t[1..t.len() - 1];
            if inner.contains('\\') {
                V::Str(Cow::Owned(serde_json::from_str(t).map_err(|_| Bail)?))
            } else {
                V::Str(Cow::Borrowed(inner))
            }
        }
        b'[' | b'{' => V::Raw(t),
        _ => number(t)?,
    })
}

/// A number of an event as serde_json gives it to jaq: an integer when it fits 64 bits
/// signed (larger ones are jaq's big integers: [`Bail`]), else a float.
fn number(t: &str) -> R<V<'static>> {
    if !t.contains(['.', 'e', 'E']) {
        return match t.parse::<i64>() {
            Ok(i) => Ok(V::Int(i)),
            Err(_) => Err(Bail),
        };
    }
    // serde_json's reading, which jaq's input went through. A plain decimal of at most 15
    // digits reads the same with the standard library's (both exact), which is faster.
    if super::canonical::plain_decimal(t.as_bytes()) {
        return t.parse().map(V::Float).map_err(|_| Bail);
    }
    let f: f64 = serde_json::from_str(t).map_err(|_| Bail)?;
    Ok(V::Float(f))
}

/// The members of an object's text (valid, canonical: no duplicate keys).
pub fn members_of(t: &str) -> R<Members<'_>> {
    let members = json::scan_object(t).map_err(|_| Bail)?;
    Ok(members
        .iter()
        .map(|m| (m.key_str(t), V::Raw(&t[m.value()])))
        .collect())
}

/// `.key` of a value (jaq: objects by key, `null` gives `null`, others fail).
pub fn index<'a>(v: V<'a>, key: &str) -> R<V<'a>> {
    match v {
        V::Null => Ok(V::Null),
        V::Obj(m) => match m.into_iter().find(|(k, _)| k == key) {
            Some((_, v)) => v.decoded(),
            None => Ok(V::Null),
        },
        V::Raw(t) if t.starts_with('{') => {
            let members = json::scan_object(t).map_err(|_| Bail)?;
            match json::find(t, &members, key) {
                Some(m) => decode(&t[m.value()]),
                None => Ok(V::Null),
            }
        }
        V::Raw("null") => Ok(V::Null),
        _ => Err(Bail),
    }
}

/// [`index`] of a value left as it is: only the member read is copied.
pub fn index_ref<'a>(v: &V<'a>, key: &str) -> R<V<'a>> {
    match v {
        V::Obj(m) => match m.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v.clone().decoded(),
            None => Ok(V::Null),
        },
        v => index(v.clone(), key),
    }
}

/// `. | .key |= f`: jaq's update of an object member (a new key goes last; `None` from
/// `f` removes the key, moving the last member into its place, as IndexMap's
/// `swap_remove` does). On anything but an object jaq fails, `null` included.
pub fn update<'a>(v: V<'a>, key: &'a str, f: impl FnOnce(V<'a>) -> R<Option<V<'a>>>) -> R<V<'a>> {
    let mut m = v.into_members()?.ok_or(Bail)?;
    match m.iter().position(|(k, _)| k == key) {
        Some(i) => {
            let old = std::mem::replace(&mut m[i].1, V::Null).decoded()?;
            match f(old)? {
                Some(new) => m[i].1 = new,
                None => {
                    m.swap_remove(i);
                }
            }
        }
        None => {
            if let Some(new) = f(V::Null)? {
                m.push((Cow::Borrowed(key), new));
            }
        }
    }
    Ok(V::Obj(m))
}

/// `.key = v` on an object's members: [`update`] with a new value, the old one unread.
pub fn assign<'a>(m: &mut Members<'a>, key: &'a str, v: V<'a>) {
    match m.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => *old = v,
        None => m.push((Cow::Borrowed(key), v)),
    }
}

/// A float result: jaq would print NaN or an infinity, which the jaq path turns into a
/// dead letter; let it.
fn float(f: f64) -> R<V<'static>> {
    if f.is_finite() {
        Ok(V::Float(f))
    } else {
        Err(Bail)
    }
}

fn as_f64(v: &V) -> Option<f64> {
    match v {
        V::Int(i) => Some(*i as f64),
        V::Float(f) => Some(*f),
        V::Dec(d) => d.parse().ok(),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Math {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// `l op r` on decoded values.
pub fn math<'a>(op: Math, l: V<'a>, r: V<'a>) -> R<V<'a>> {
    use V::*;
    match (op, l, r) {
        (Math::Add, Null, x) | (Math::Add, x, Null) => Ok(x),
        (Math::Add, Str(a), Str(b)) => Ok(Str(Cow::Owned(a.into_owned() + &b))),
        (Math::Add, Arr(mut a), Arr(b)) => {
            a.extend(b);
            Ok(Arr(a))
        }
        (op, Int(a), Int(b)) => match op {
            Math::Add => a.checked_add(b).map(Int).ok_or(Bail),
            Math::Sub => a.checked_sub(b).map(Int).ok_or(Bail),
            Math::Mul => a.checked_mul(b).map(Int).ok_or(Bail),
            Math::Div => float(a as f64 / b as f64),
            Math::Rem if b == 0 => Err(Bail),
            Math::Rem => Ok(Int(a.checked_rem(b).unwrap_or(0))),
        },
        (op, a, b) => {
            let (x, y) = (as_f64(&a).ok_or(Bail)?, as_f64(&b).ok_or(Bail)?);
            float(match op {
                Math::Add => x + y,
                Math::Sub => x - y,
                Math::Mul => x * y,
                Math::Div => x / y,
                Math::Rem => x % y,
            })
        }
    }
}

/// `-v`.
pub fn neg(v: V<'_>) -> R<V<'_>> {
    match v {
        V::Int(i) => i.checked_neg().map(V::Int).ok_or(Bail),
        V::Float(f) => Ok(V::Float(-f)),
        _ => Err(Bail),
    }
}

/// jaq's total order, for the values the fast path compares (numbers with numbers as
/// floats unless both are integers, strings by bytes; containers: [`Bail`]).
pub fn compare(l: &V, r: &V) -> R<Ordering> {
    let (a, b) = (l.type_rank(), r.type_rank());
    if a != b {
        return Ok(a.cmp(&b));
    }
    match (l, r) {
        (V::Null, V::Null) | (V::Bool(_), V::Bool(_)) => Ok(Ordering::Equal),
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::Str(x), V::Str(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (x, y) if a == 3 => {
            let (x, y) = (as_f64(x).ok_or(Bail)?, as_f64(y).ok_or(Bail)?);
            Ok(float_cmp(x, y))
        }
        _ => Err(Bail),
    }
}

/// jaq-json's `float_cmp`: both zeros equal, otherwise the total order.
fn float_cmp(x: f64, y: f64) -> Ordering {
    if x == 0.0 && y == 0.0 {
        Ordering::Equal
    } else {
        f64::total_cmp(&x, &y)
    }
}

/// `floor`, `round`, `ceil`: integers stay; a float becomes an integer when it fits.
pub fn round(v: V<'_>, f: fn(f64) -> f64) -> R<V<'static>> {
    match v {
        V::Int(i) => Ok(V::Int(i)),
        v => {
            let x = f(as_f64(&v).ok_or(Bail)?);
            if x.is_finite() && (isize::MIN as f64) <= x && x <= isize::MAX as f64 {
                Ok(V::Int(x as i64))
            } else {
                Err(Bail)
            }
        }
    }
}

/// `length`.
pub fn length(v: V<'_>) -> R<V<'static>> {
    Ok(match v {
        V::Null => V::Int(0),
        V::Int(i) => V::Int(i.checked_abs().ok_or(Bail)?),
        V::Float(f) => V::Float(f.abs()),
        V::Dec(d) => float(d.parse::<f64>().map_err(|_| Bail)?.abs())?,
        V::Str(s) => V::Int(s.chars().count() as i64),
        V::Arr(a) => V::Int(a.len() as i64),
        V::Obj(m) => V::Int(m.len() as i64),
        V::Raw(t) if t.starts_with('{') => {
            V::Int(json::scan_object(t).map_err(|_| Bail)?.len() as i64)
        }
        V::Raw(t) if t.starts_with('[') => V::Int(json::scan_array(t).ok_or(Bail)?.len() as i64),
        _ => return Err(Bail),
    })
}

/// The elements of an array.
pub fn elements(v: V<'_>) -> R<Vec<V<'_>>> {
    match v {
        V::Arr(a) => Ok(a),
        V::Raw(t) if t.starts_with('[') => json::scan_array(t)
            .ok_or(Bail)?
            .into_iter()
            .map(|r| decode(&t[r]))
            .collect(),
        _ => Err(Bail),
    }
}

/// `tostring`: a string as it is, anything else as its JSON text.
pub fn to_string(v: V<'_>) -> R<Cow<'_, str>> {
    match v {
        V::Str(s) => Ok(s),
        V::Raw(t) if t.starts_with('"') => match decode(t)? {
            V::Str(s) => Ok(s),
            _ => Err(Bail),
        },
        v => {
            // Room for what is often added next (`tostring + "-suffix"`): one allocation.
            let mut out = String::with_capacity(32);
            write(&v, &mut out)?;
            Ok(Cow::Owned(out))
        }
    }
}

/// Writes `v` as jaq prints it, compact.
pub fn write(v: &V, out: &mut String) -> R<()> {
    match v {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        V::Float(f) => {
            if !f.is_finite() {
                return Err(Bail);
            }
            out.push_str(ryu::Buffer::new().format_finite(*f));
        }
        V::Dec(d) => out.push_str(d),
        V::Str(s) => write_str(s, out),
        V::Raw(t) => out.push_str(t),
        V::Arr(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out)?;
            }
            out.push(']');
        }
        V::Obj(m) => {
            out.push('{');
            write_members(m, out)?;
            out.push('}');
        }
    }
    Ok(())
}

/// An object's members, comma-separated, without the braces.
pub fn write_members(m: &[(Cow<str>, V)], out: &mut String) -> R<()> {
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(k, out);
        out.push(':');
        write(x, out)?;
    }
    Ok(())
}

/// The bytes jaq writes escaped: `"`, `\\`, control characters and DEL.
static ESCAPED: [bool; 256] = crate::tape::string_stops(true);

/// A string as jaq-json writes it: `"` and `\` escaped, `\t \n \r \b \f` by name, other
/// control characters and DEL as `\u00xx`; everything else as it is.
pub fn write_str(s: &str, out: &mut String) {
    out.push('"');
    if !s.bytes().any(|c| ESCAPED[usize::from(c)]) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{c:04x}"));
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}
