//! jq at splice speed: the common shapes of jq programs run on the event's member index,
//! in the worker's own thread, with no value tree and no helper process.
//!
//! A program is compiled once at start ([`Fast::compile`], from jaq's own parse of it):
//! assignments and updates of object keys (`.a = e`, `.a |= e`, `+=` and the other
//! arithmetic updates, `//=`), `del(…)`, object and array constructors (one key's value
//! may be `.a[]`: one object per element), `E as $x | …` and `.a[] as $x | …` (one
//! output per element), `select(…)`, `if … then … elif … else … end`, comparisons,
//! `and`/`or`/`not`, arithmetic, `//`, string interpolation, pipes, and the builtins
//! `floor`, `round`, `ceil`, `tostring`, `tonumber`, `length`, `ascii_downcase`,
//! `ascii_upcase`, `has`, `split`, `join`, `test` (a literal regex, with jaq's regex
//! engine), `empty`. A program with anything else runs in jaq ([`super::Sandbox`])
//! whole; which one, and why, is decided once and shown by `--explain`.
//!
//! Per event the fast path gives what the jaq path gives, byte for byte, or steps aside:
//! an event jaq would print differently from its input ([`canonical`]), or one on which
//! the program reaches something the fast path does not model (an error, a big integer,
//! a NaN: [`value::Bail`]) is run by jaq. The differential tests hold both paths to that.
//!
//! Files: `compile` (jaq's syntax tree → expressions), `check` (both paths compared, and
//! programs of the grammar generated for it), `eval` (an expression on a value),
//! `value` (values with jaq's arithmetic, order and printing), `canonical` (whether jaq
//! prints an event's bytes back as they are).

use std::borrow::Cow;

use crate::json::{KeyProbe, Member};

mod canonical;
pub mod check;
mod compile;
mod eval;
mod plan;
mod value;

#[cfg(test)]
mod tests;

pub use canonical::tape as canonical_tape;
pub use value::Bail;

use compile::Expr;
use plan::Plan;
use value::{R, V};

/// A program compiled for the fast path.
#[derive(Debug)]
pub struct Fast {
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    /// Edits of named fields ([`plan`]).
    Plan(Plan),
    /// Anything else of the grammar, run on all members.
    General(Expr),
    /// `[PREFIX |] {…, k: E[], …}`: one output per element ([`eval::fanout`]).
    Fanout {
        prefix: Option<Expr>,
        entries: Vec<(Expr, Option<Expr>)>,
        at: usize,
    },
    /// `[PREFIX |] E[] as $x | BODY`: BODY once per element.
    ForEach {
        prefix: Option<Expr>,
        over: Expr,
        var: String,
        body: Expr,
    },
}

/// What the fast path made of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// At most one output, its metadata field re-attached.
    One(Option<String>),
    /// Any number of outputs, without the metadata field (see [`super::attach_meta`]).
    Many(Vec<String>),
}

impl Fast {
    /// Compiles `code` (already accepted by jaq); `Err` says what keeps it on the jaq
    /// path.
    pub fn compile(code: &str) -> Result<Fast, String> {
        let term = jaq_core::load::parse(code, |p| p.term())
            .ok_or_else(|| "jaq's parser did not accept it alone".to_owned())?;
        let expr = compile::compile(&term).map_err(|what| format!("it uses {what}"))?;
        let shape = if expr.iterates() {
            fanout(expr)
                .ok_or("it uses `[]` other than as one key's value in the object it outputs")?
        } else {
            match Plan::of(expr) {
                Ok(plan) => Shape::Plan(plan),
                Err(expr) => Shape::General(expr),
            }
        };
        Ok(Fast { shape })
    }

    /// Runs the program on one event (`text`, an object indexed by `members`) without its
    /// metadata field `meta`, and re-attaches that field as the jaq path does (last): the
    /// output's text, `None` when the program gives no output, or [`Bail`] when jaq must
    /// run this event. `as_printed`: the text is known to be what jaq prints
    /// ([`canonical_tape`]); else it is checked here, member by member.
    pub fn run(
        &self,
        text: &str,
        members: &[Member],
        meta: &str,
        as_printed: bool,
    ) -> Result<Output, Bail> {
        let mut meta_member = None;
        let meta_probe = KeyProbe::new(meta);
        if as_printed {
            // No key twice: at most one is the metadata field.
            meta_member = members.iter().find(|m| m.key_matches(text, &meta_probe));
        }
        // Jaq prints the event's members back as they are only when they are in its form:
        // keys and values canonical, no key twice.
        for (i, m) in members.iter().enumerate().filter(|_| !as_printed) {
            // A key with no escape is written back as it is, unless it holds DEL.
            let key = m.key();
            let quoted = &text[key.start - 1..key.end + 1];
            let plain = !m.escaped() && !quoted.bytes().any(|c| c == 0x7f);
            if !plain && !canonical::canonical(quoted) {
                return Err(Bail);
            }
            if m.key_matches(text, &meta_probe) {
                if meta_member.replace(m).is_some() {
                    return Err(Bail);
                }
                continue;
            }
            if !canonical::canonical(&text[m.value()]) {
                return Err(Bail);
            }
            // Canonical keys are equal exactly when their texts are.
            if members[..i].iter().any(|o| o.same_raw_key(m, text)) {
                return Err(Bail);
            }
        }
        let mut out = String::with_capacity(text.len() + 64);
        match &self.shape {
            Shape::Plan(plan) => Ok(Output::One(
                plan.run(text, members, meta_member, meta, &mut out)?
                    .then_some(out),
            )),
            Shape::General(expr) => {
                let entries = all_members(text, members, meta_member);
                let Some(result) = eval::run(expr, V::Obj(entries), &[])? else {
                    return Ok(Output::One(None));
                };
                let Some(result) = result.into_members()? else {
                    // Not an object: the jaq path says why, as a dead letter.
                    return Err(Bail);
                };
                out.push('{');
                value::write_members(&result, &mut out)?;
                if let Some(m) = meta_member {
                    if result.iter().any(|(k, _)| k == meta) {
                        return Err(Bail);
                    }
                    if !result.is_empty() {
                        out.push(',');
                    }
                    plan::write_member(text, m, &mut out);
                }
                out.push('}');
                Ok(Output::One(Some(out)))
            }
            Shape::Fanout {
                prefix,
                entries,
                at,
            } => {
                let Some(input) = prefixed(prefix, all_members(text, members, meta_member))? else {
                    return Ok(Output::Many(Vec::new()));
                };
                let outputs = eval::fanout(entries, *at, &input, &[])?;
                Ok(Output::Many(outputs.iter().map(printed).collect::<R<_>>()?))
            }
            Shape::ForEach {
                prefix,
                over,
                var,
                body,
            } => {
                let Some(input) = prefixed(prefix, all_members(text, members, meta_member))? else {
                    return Ok(Output::Many(Vec::new()));
                };
                let Some(over) = eval::eval(over, &input, &[])? else {
                    return Ok(Output::Many(Vec::new()));
                };
                let mut outputs = Vec::new();
                for element in eval::elements_of(over)? {
                    let env = [(var.as_str(), element)];
                    let Some(o) = eval::eval(body, &input, &env)? else {
                        continue;
                    };
                    // Not an object: the jaq path says why, as a dead letter.
                    if o.clone().into_members()?.is_none() {
                        return Err(Bail);
                    }
                    outputs.push(printed(&o)?);
                }
                Ok(Output::Many(outputs))
            }
        }
    }
}

/// The input after a fan-out's prefix (the steps before it), or none.
fn prefixed<'a>(prefix: &'a Option<Expr>, members: value::Members<'a>) -> R<Option<V<'a>>> {
    match prefix {
        Some(p) => eval::run(p, V::Obj(members), &[]),
        None => Ok(Some(V::Obj(members))),
    }
}

/// A value's JSON text, as jaq prints it.
fn printed(v: &V) -> R<String> {
    let mut text = String::new();
    value::write(v, &mut text)?;
    Ok(text)
}

/// Every member of the event but the metadata field, values still as text.
fn all_members<'a>(text: &'a str, members: &[Member], meta: Option<&Member>) -> value::Members<'a> {
    members
        .iter()
        .filter(|m| !meta.is_some_and(|meta| std::ptr::eq(meta, *m)))
        .map(|m| {
            let key = if m.escaped() {
                m.key_str(text)
            } else {
                Cow::Borrowed(&text[m.key()])
            };
            (key, V::Raw(&text[m.value()]))
        })
        .collect()
}

/// `outer | inner`.
fn join(outer: Expr, inner: Option<Expr>) -> Expr {
    match inner {
        Some(inner) => Expr::Pipe(Box::new(outer), Box::new(inner)),
        None => outer,
    }
}

/// The fan-out shape of `expr`, when it has it: an object constructor, alone or last in a
/// pipe, with one key's value `E[]`, and no other iteration anywhere.
fn fanout(expr: Expr) -> Option<Shape> {
    let (prefix, last) = match expr {
        Expr::Pipe(l, r) => (Some(*l), *r),
        e => (None, e),
    };
    // `a | b | {…}` is `a | (b | {…})`: take the innermost pipe's right side.
    if let (Some(_), Expr::Pipe(..)) = (&prefix, &last) {
        let outer = prefix?;
        return match fanout(last)? {
            Shape::Fanout {
                prefix: inner,
                entries,
                at,
            } => Some(Shape::Fanout {
                prefix: Some(join(outer, inner)),
                entries,
                at,
            }),
            Shape::ForEach {
                prefix: inner,
                over,
                var,
                body,
            } => Some(Shape::ForEach {
                prefix: Some(join(outer, inner)),
                over,
                var,
                body,
            }),
            _ => None,
        };
    }
    if prefix.as_ref().is_some_and(Expr::iterates) {
        return None;
    }
    let entries = match last {
        Expr::ForEach { over, var, body } => {
            return (!over.iterates() && !body.iterates()).then_some(Shape::ForEach {
                prefix,
                over: *over,
                var,
                body: *body,
            });
        }
        Expr::Obj(entries) => entries,
        _ => return None,
    };
    let at: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| matches!(v, Some(Expr::Iter(_))))
        .map(|(i, _)| i)
        .collect();
    let [at] = at[..] else {
        return None;
    };
    let clean = entries.iter().enumerate().all(|(i, (k, v))| {
        !k.iterates()
            && match v {
                Some(Expr::Iter(base)) if i == at => !base.iterates(),
                Some(v) => !v.iterates(),
                None => true,
            }
    });
    clean.then_some(Shape::Fanout {
        prefix,
        entries,
        at,
    })
}
