//! Evaluating a compiled expression on one value: one output, none, or [`Bail`].
//!
//! Where an operand gives no output the expression gives none, as jq's cartesian
//! products do; every operand is still evaluated first, so an error anywhere sends the
//! event to jaq (which then decides between the error and no output).

use std::borrow::Cow;
use std::cmp::Ordering;

use jaq_core::ops::Cmp;

use super::compile::{Builtin, Expr, Piece};
use super::value::{self, Bail, R, V};

/// One value, or none (`empty`, a failed `select`).
pub type Out<'a> = R<Option<V<'a>>>;

/// The variables bound where an expression runs (`E as $x | …`), innermost last.
pub type Env<'e, 'a> = &'e [(&'a str, V<'a>)];

/// Evaluates `e` on `input`, consuming it: an update changes the input itself rather
/// than a copy of it (a pipe of assignments never copies the event's members).
pub fn run<'a>(e: &'a Expr, input: V<'a>, env: Env<'_, 'a>) -> Out<'a> {
    Ok(Some(match e {
        Expr::Id => input,
        Expr::Pipe(l, r) => match run(l, input, env)? {
            Some(v) => return run(r, v, env),
            None => return Ok(None),
        },
        Expr::Assign(path, e) => match eval(e, &input, env)? {
            // `set` calls back once (its path has no iteration): the value moves.
            Some(v) => {
                let mut v = Some(v);
                set(input, path, &mut |_| Ok(v.take()))?
            }
            None => return Ok(None),
        },
        Expr::Update(path, e) => set(input, path, &mut |old| run(e, old, env))?,
        Expr::UpdateMath(path, op, e) => match eval(e, &input, env)? {
            Some(v) => set(input, path, &mut |old| {
                Ok(Some(value::math(
                    *op,
                    old.decoded()?,
                    v.clone().decoded()?,
                )?))
            })?,
            None => return Ok(None),
        },
        Expr::UpdateAlt(path, e) => match eval(e, &input, env)? {
            Some(v) => set(input, path, &mut |old| {
                Ok(Some(if old.truthy() { old } else { v.clone() }))
            })?,
            None => return Ok(None),
        },
        Expr::If(branches, otherwise) => {
            for (c, then) in branches {
                match eval(c, &input, env)? {
                    Some(c) if c.truthy() => return run(then, input, env),
                    Some(_) => {}
                    None => return Ok(None),
                }
            }
            match otherwise {
                Some(e) => return run(e, input, env),
                None => input,
            }
        }
        Expr::Select(c) => match eval(c, &input, env)? {
            Some(c) if c.truthy() => input,
            _ => return Ok(None),
        },
        Expr::Del(paths) => {
            let mut v = input;
            for p in paths {
                v = set(v, p, &mut |_| Ok(None))?;
            }
            v
        }
        Expr::Bind { value, var, body } => match eval(value, &input, env)? {
            Some(v) => return run(body, input, &bound(env, var, v)),
            None => return Ok(None),
        },
        e => return eval(e, &input, env),
    }))
}

/// `env` with `var` bound to `v`.
fn bound<'a>(env: Env<'_, 'a>, var: &'a str, v: V<'a>) -> Vec<(&'a str, V<'a>)> {
    let mut env = env.to_vec();
    env.push((var, v));
    env
}

/// Evaluates `e` on `input`, left as it is.
pub fn eval<'a>(e: &'a Expr, input: &V<'a>, env: Env<'_, 'a>) -> Out<'a> {
    Ok(Some(match e {
        // What changes or passes on the input itself needs its own copy.
        Expr::Id
        | Expr::Assign(..)
        | Expr::Update(..)
        | Expr::UpdateMath(..)
        | Expr::UpdateAlt(..)
        | Expr::Select(..)
        | Expr::Del(..) => return run(e, input.clone(), env),
        Expr::Pipe(l, r) => match eval(l, input, env)? {
            Some(v) => return run(r, v, env),
            None => return Ok(None),
        },
        Expr::Bind { value, var, body } => match eval(value, input, env)? {
            Some(v) => return eval(body, input, &bound(env, var, v)),
            None => return Ok(None),
        },
        // Bound by the program (jaq checked that it is).
        Expr::Var(name) => match env.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v.clone(),
            None => return Err(Bail),
        },
        Expr::If(branches, otherwise) => {
            for (c, then) in branches {
                match eval(c, input, env)? {
                    Some(c) if c.truthy() => return eval(then, input, env),
                    Some(_) => {}
                    None => return Ok(None),
                }
            }
            match otherwise {
                Some(e) => return eval(e, input, env),
                None => input.clone(),
            }
        }
        Expr::Null => V::Null,
        Expr::Bool(b) => V::Bool(*b),
        Expr::Int(i) => V::Int(*i),
        Expr::Dec(d) => V::Dec(Cow::Borrowed(d)),
        Expr::Str(pieces) => {
            let mut s = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Expr(e) => match eval(e, input, env)? {
                        Some(v) => s.push_str(&value::to_string(v)?),
                        None => return Ok(None),
                    },
                }
            }
            V::Str(Cow::Owned(s))
        }
        Expr::Path(base, keys) => {
            // From `.`, only the member read is copied, not the input.
            let (mut v, keys) = match &**base {
                Expr::Id => (value::index_ref(input, &keys[0])?, &keys[1..]),
                base => match eval(base, input, env)? {
                    Some(v) => (v, &keys[..]),
                    None => return Ok(None),
                },
            };
            for k in keys {
                v = value::index(v, k)?;
            }
            v
        }
        Expr::Arr(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                if let Some(v) = eval(i, input, env)? {
                    out.push(v);
                }
            }
            V::Arr(out)
        }
        Expr::Obj(entries) => {
            let mut members: Vec<(Cow<str>, V)> = Vec::with_capacity(entries.len());
            let mut none = false;
            for (k, v) in entries {
                let key = match eval(k, input, env)?.map(V::decoded).transpose()? {
                    Some(V::Str(s)) => s,
                    Some(_) => return Err(Bail),
                    None => {
                        none = true;
                        continue;
                    }
                };
                let val = match v {
                    Some(v) => eval(v, input, env)?,
                    None => Some(value::index_ref(input, &key)?),
                };
                let Some(val) = val else {
                    none = true;
                    continue;
                };
                // A key given twice keeps its first place and its last value.
                match members.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = val,
                    None => members.push((key, val)),
                }
            }
            if none {
                return Ok(None);
            }
            V::Obj(members)
        }
        Expr::Neg(e) => match eval(e, input, env)? {
            Some(v) => value::neg(v.decoded()?)?,
            None => return Ok(None),
        },
        Expr::Math(op, l, r) => {
            let (l, r) = (eval(l, input, env)?, eval(r, input, env)?);
            match (l, r) {
                (Some(l), Some(r)) => value::math(*op, l.decoded()?, r.decoded()?)?,
                _ => return Ok(None),
            }
        }
        Expr::Cmp(op, l, r) => {
            let (l, r) = (eval(l, input, env)?, eval(r, input, env)?);
            match (l, r) {
                (Some(l), Some(r)) => V::Bool(cmp(*op, &l.decoded()?, &r.decoded()?)?),
                _ => return Ok(None),
            }
        }
        Expr::And(l, r) => match eval(l, input, env)? {
            None => return Ok(None),
            Some(l) if !l.truthy() => V::Bool(false),
            Some(_) => match eval(r, input, env)? {
                Some(r) => V::Bool(r.truthy()),
                None => return Ok(None),
            },
        },
        Expr::Or(l, r) => match eval(l, input, env)? {
            None => return Ok(None),
            Some(l) if l.truthy() => V::Bool(true),
            Some(_) => match eval(r, input, env)? {
                Some(r) => V::Bool(r.truthy()),
                None => return Ok(None),
            },
        },
        Expr::Alt(l, r) => match eval(l, input, env)? {
            Some(l) if l.truthy() => l,
            _ => return eval(r, input, env),
        },
        Expr::Empty => return Ok(None),
        Expr::Call(b) => builtin(*b, input.clone().decoded()?)?,
        Expr::Has(k) => match eval(k, input, env)? {
            Some(k) => has(input, k.decoded()?)?,
            None => return Ok(None),
        },
        Expr::Split(sep) => match eval(sep, input, env)? {
            Some(sep) => match (input.clone().decoded()?, sep.decoded()?) {
                (V::Str(s), V::Str(sep)) => split(&s, &sep),
                _ => return Err(Bail),
            },
            None => return Ok(None),
        },
        // Only where a fan-out is run (see `fanout`, `Fast`).
        Expr::Iter(_) | Expr::ForEach { .. } => return Err(Bail),
        Expr::Test(re) => match input.clone().decoded()? {
            V::Str(s) => V::Bool(re.is_match(s.as_bytes())),
            _ => return Err(Bail),
        },
        Expr::Join(sep) => match eval(sep, input, env)? {
            Some(sep) => join(input.clone(), sep.decoded()?)?,
            None => return Ok(None),
        },
    }))
}

/// `path |= f` on `v`, path of object keys: `f` gets the old value (`null` when absent)
/// and gives the new one, or none to delete the key.
fn set<'a>(v: V<'a>, path: &'a [String], f: &mut dyn FnMut(V<'a>) -> Out<'a>) -> R<V<'a>> {
    let (first, rest) = path.split_first().expect("a path has a key");
    if rest.is_empty() {
        return value::update(v, first, f);
    }
    value::update(v, first, |old| Ok(Some(set(old, rest, f)?)))
}

fn cmp(op: Cmp, l: &V, r: &V) -> R<bool> {
    let o = value::compare(l, r)?;
    Ok(match op {
        Cmp::Eq => o == Ordering::Equal,
        Cmp::Ne => o != Ordering::Equal,
        Cmp::Lt => o == Ordering::Less,
        Cmp::Le => o != Ordering::Greater,
        Cmp::Gt => o == Ordering::Greater,
        Cmp::Ge => o != Ordering::Less,
    })
}

fn builtin(b: Builtin, v: V<'_>) -> R<V<'_>> {
    Ok(match b {
        Builtin::Floor => value::round(v, f64::floor)?,
        Builtin::Round => value::round(v, f64::round)?,
        Builtin::Ceil => value::round(v, f64::ceil)?,
        Builtin::ToString => V::Str(value::to_string(v)?),
        Builtin::ToNumber => match v {
            n @ (V::Int(_) | V::Float(_) | V::Dec(_)) => n,
            // jaq reads the string as JSON: a machine integer, or a decimal kept as
            // written. Anything less plain (spaces, big integers, `nan`) goes to jaq.
            V::Str(s) => number_text(s)?,
            _ => return Err(Bail),
        },
        Builtin::Length => value::length(v)?,
        Builtin::AsciiDowncase => match v {
            V::Str(s) => V::Str(Cow::Owned(s.to_ascii_lowercase())),
            _ => return Err(Bail),
        },
        Builtin::AsciiUpcase => match v {
            V::Str(s) => V::Str(Cow::Owned(s.to_ascii_uppercase())),
            _ => return Err(Bail),
        },
        Builtin::Not => V::Bool(!v.truthy()),
    })
}

fn has<'a>(v: &V<'a>, k: V<'a>) -> R<V<'a>> {
    let V::Str(k) = k else {
        return Err(Bail);
    };
    match v {
        V::Obj(m) => Ok(V::Bool(m.iter().any(|(key, _)| *key == k))),
        v => match v.clone().decoded()?.into_members()? {
            Some(m) => Ok(V::Bool(m.iter().any(|(key, _)| *key == k))),
            None => Err(Bail),
        },
    }
}

/// `split(s)`: jaq's `. / $sep`, an empty separator splitting into characters.
fn split<'a>(s: &str, sep: &str) -> V<'a> {
    let parts: Vec<V> = if s.is_empty() {
        Vec::new()
    } else if sep.is_empty() {
        s.chars()
            .map(|c| V::Str(Cow::Owned(c.to_string())))
            .collect()
    } else {
        s.split(sep)
            .map(|p| V::Str(Cow::Owned(p.to_owned())))
            .collect()
    };
    V::Arr(parts)
}

/// `join(s)`: jaq's `.[] |= tostring | .[:-1][] += $s | reduce .[] as $x (""; . + $x)`.
fn join<'a>(v: V<'a>, sep: V<'a>) -> R<V<'a>> {
    let V::Str(sep) = sep else {
        return Err(Bail);
    };
    let items = value::elements(v.decoded()?)?;
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(&sep);
        }
        out.push_str(&value::to_string(item)?);
    }
    Ok(V::Str(Cow::Owned(out)))
}

/// `tonumber` of a string that is a plain JSON number.
fn number_text(s: Cow<'_, str>) -> R<V<'_>> {
    let b = s.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let plain_int = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0');
    if plain_int {
        return s.parse::<i64>().map(V::Int).map_err(|_| Bail);
    }
    match serde_json::from_str::<f64>(&s) {
        Ok(f)
            if f.is_finite()
                && b.first().is_some_and(|c| *c == b'-' || c.is_ascii_digit())
                && b.last().is_some_and(u8::is_ascii_digit) =>
        {
            Ok(V::Dec(s))
        }
        _ => Err(Bail),
    }
}

/// An object constructor whose entry `at` iterates (`{id, tag: .tags[]}`) on `input`: one
/// object per element of the iterated array (or value of the iterated object), in order;
/// none when any entry gives none.
pub fn fanout<'a>(
    entries: &'a [(Expr, Option<Expr>)],
    at: usize,
    input: &V<'a>,
    env: Env<'_, 'a>,
) -> R<Vec<V<'a>>> {
    let mut keys = Vec::with_capacity(entries.len());
    let mut values = Vec::with_capacity(entries.len());
    let mut elements = Vec::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        let key = match eval(k, input, env)?.map(V::decoded).transpose()? {
            Some(V::Str(s)) => s,
            Some(_) => return Err(Bail),
            None => return Ok(Vec::new()),
        };
        let value = match v {
            Some(Expr::Iter(base)) if i == at => {
                let Some(over) = eval(base, input, env)? else {
                    return Ok(Vec::new());
                };
                elements = elements_of(over)?;
                V::Null
            }
            Some(v) => match eval(v, input, env)? {
                Some(v) => v,
                None => return Ok(Vec::new()),
            },
            None => value::index_ref(input, &key)?,
        };
        keys.push(key);
        values.push(value);
    }
    Ok(elements
        .into_iter()
        .map(|element| {
            let mut members: value::Members = Vec::with_capacity(keys.len());
            for (i, (key, value)) in keys.iter().zip(&values).enumerate() {
                let value = if i == at {
                    element.clone()
                } else {
                    value.clone()
                };
                // A key given twice keeps its first place and its last value.
                match members.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = value,
                    None => members.push((key.clone(), value)),
                }
            }
            V::Obj(members)
        })
        .collect())
}

/// The elements `E[]` goes over: an array's, or an object's values, in order.
pub fn elements_of(v: V<'_>) -> R<Vec<V<'_>>> {
    match v.decoded()? {
        V::Arr(a) => Ok(a),
        v @ V::Raw(t) if t.starts_with('[') => value::elements(v),
        v => match v.into_members()? {
            Some(m) => m.into_iter().map(|(_, v)| v.decoded()).collect(),
            None => Err(Bail),
        },
    }
}
