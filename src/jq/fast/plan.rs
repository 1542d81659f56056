//! The commonest shape, run as edits: a pipe of assignments and updates of keys (and
//! `select`s) whose right-hand sides read named fields only. Such a program needs only the
//! fields it names: they are looked up in the event's member index, the steps run on
//! that handful, and the output is the event's text with the written members' values
//! replaced in place, new ones appended (in the order jaq appends them) and the metadata
//! field last — the members the program did not touch are copied as they are, never
//! decoded.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::json::{KeyProbe, KeySet, Member};

use super::compile::{Expr, Piece};
use super::eval;
use super::value::{self, Bail, Members, R, V};

/// A program of the shape, with the top-level keys it reads or writes.
#[derive(Debug)]
pub struct Plan {
    /// The program's steps (it is their pipe), run in turn on the named fields.
    steps: Vec<Expr>,
    /// Keys whose current value the program may read (writes included).
    keys: Vec<String>,
    /// For each of `keys`, whether the program may write it.
    written: Vec<bool>,
    /// `keys`, to pass over the other members quickly.
    set: KeySet,
    /// Each of `keys` as the member index compares it, made once.
    prefixes: Vec<u64>,
}

/// A member not among the plan's keys.
const OTHER: u8 = u8::MAX;

impl Plan {
    /// The plan of `expr`, when it has the shape.
    pub fn of(expr: Expr) -> Result<Plan, Expr> {
        let mut steps = Vec::new();
        flatten(&expr, &mut steps);
        let (mut keys, mut writes) = (Vec::new(), Vec::new());
        for step in steps {
            let ok = match step {
                Expr::Assign(path, e) | Expr::UpdateMath(path, _, e) | Expr::UpdateAlt(path, e) => {
                    writes.push(path[0].clone());
                    keys.push(path[0].clone());
                    doc_reads(e, &mut keys)
                }
                // The right-hand side runs on the old value, not on the event.
                Expr::Update(path, _) => {
                    writes.push(path[0].clone());
                    keys.push(path[0].clone());
                    true
                }
                Expr::Select(c) => doc_reads(c, &mut keys),
                _ => false,
            };
            if !ok {
                return Err(expr);
            }
        }
        dedup(&mut keys);
        if keys.len() >= usize::from(OTHER) {
            return Err(expr);
        }
        let written = keys.iter().map(|k| writes.contains(k)).collect();
        let set = KeySet::of(keys.iter().map(String::as_str));
        let prefixes = keys.iter().map(|k| KeyProbe::new(k).prefix()).collect();
        let mut steps = Vec::new();
        into_steps(expr, &mut steps);
        Ok(Plan {
            steps,
            keys,
            written,
            set,
            prefixes,
        })
    }

    /// Runs on one event: as [`super::Fast::run`]. The caller checked that the event's
    /// text is what jaq would print ([`super::canonical`]).
    pub fn run(
        &self,
        text: &str,
        members: &[Member],
        meta: Option<&Member>,
        meta_name: &str,
        out: &mut String,
    ) -> R<bool> {
        // Which of the plan's keys each member is (the metadata field: none).
        let mut which: SmallVec<[u8; 32]> = SmallVec::with_capacity(members.len());
        let mut named: Members = Vec::with_capacity(self.keys.len() + 2);
        for m in members {
            let k = match self
                .set
                .may_hold(m)
                .then(|| {
                    self.keys
                        .iter()
                        .zip(&self.prefixes)
                        .position(|(k, &p)| m.key_matches(text, &KeyProbe::with_prefix(k, p)))
                })
                .flatten()
            {
                Some(k) if !meta.is_some_and(|meta| std::ptr::eq(meta, m)) => k,
                _ => {
                    which.push(OTHER);
                    continue;
                }
            };
            which.push(k as u8);
            // Decoded once here, not at each read (`.amount * 100 … .amount > 50`).
            named.push((
                Cow::Borrowed(self.keys[k].as_str()),
                value::decode(&text[m.value()])?,
            ));
        }
        // The fields found stay first, in their order: an update replaces a value in its
        // place, a new key goes last, and a deleted key found in the event makes jaq move
        // its last member into the gap (left to jaq, below).
        let found = named.len();
        let mut result = named;
        for step in &self.steps {
            result = match step {
                // The commonest step, done in place: `.key = E`, E run on the whole input.
                Expr::Assign(path, e) if path.len() == 1 => {
                    let input = V::Obj(result);
                    let v = eval::eval(e, &input, &[])?;
                    let V::Obj(mut m) = input else {
                        unreachable!("made an object above")
                    };
                    let Some(v) = v else {
                        return Ok(false);
                    };
                    value::assign(&mut m, &path[0], v);
                    m
                }
                step => match eval::run(step, V::Obj(result), &[])? {
                    Some(v) => v.into_members()?.ok_or(Bail)?,
                    None => return Ok(false),
                },
            };
        }
        // The metadata field set by the program: the jaq path overwrites it in place.
        if result.len() < found
            || meta.is_some() && result[found..].iter().any(|(k, _)| k == meta_name)
        {
            return Err(Bail);
        }
        out.push('{');
        let mut first = true;
        let mut run: Option<(usize, usize)> = None;
        let flush = |run: &mut Option<(usize, usize)>, first: &mut bool, out: &mut String| {
            if let Some((start, end)) = run.take() {
                comma(first, out);
                out.push_str(&text[start..end]);
            }
        };
        for (m, &k) in members.iter().zip(&which) {
            if meta.is_some_and(|meta| std::ptr::eq(meta, m)) {
                continue;
            }
            let key = m.key();
            let (start, end) = (key.start - 1, m.value().end);
            match (k != OTHER && self.written[usize::from(k)]).then(|| &self.keys[usize::from(k)]) {
                Some(w) => {
                    flush(&mut run, &mut first, out);
                    // A key the program deleted moves another into its place in jaq.
                    let (_, v) = result[..found].iter().find(|(k, _)| k == w).ok_or(Bail)?;
                    comma(&mut first, out);
                    out.push_str(&text[start..key.end + 1]);
                    out.push(':');
                    value::write(v, out)?;
                }
                // Spaces around the colon (found by the fuzz target): jaq drops them.
                None if m.value().start != key.end + 2 => {
                    flush(&mut run, &mut first, out);
                    comma(&mut first, out);
                    write_member(text, m, out);
                }
                None => match &mut run {
                    Some((_, run_end))
                        if text.as_bytes()[*run_end] == b',' && *run_end + 1 == start =>
                    {
                        *run_end = end;
                    }
                    _ => {
                        flush(&mut run, &mut first, out);
                        run = Some((start, end));
                    }
                },
            }
        }
        flush(&mut run, &mut first, out);
        // New keys, in the order the program added them (after the ones it found).
        for (k, v) in &result[found..] {
            comma(&mut first, out);
            value::write_str(k, out);
            out.push(':');
            value::write(v, out)?;
        }
        if let Some(meta) = meta {
            comma(&mut first, out);
            write_member(text, meta, out);
        }
        out.push('}');
        Ok(true)
    }
}

/// A member of `text` as jaq writes it: its key (canonical, so as it is), a colon and its
/// value, with no space between.
pub fn write_member(text: &str, m: &Member, out: &mut String) {
    let key = m.key();
    out.push_str(&text[key.start - 1..key.end + 1]);
    out.push(':');
    out.push_str(&text[m.value()]);
}

/// A comma before every member but the first.
fn comma(first: &mut bool, out: &mut String) {
    if !std::mem::take(first) {
        out.push(',');
    }
}

/// [`flatten`], taking the steps.
fn into_steps(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::Pipe(l, r) => {
            into_steps(*l, out);
            into_steps(*r, out);
        }
        e => out.push(e),
    }
}

fn flatten<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Pipe(l, r) => {
            flatten(l, out);
            flatten(r, out);
        }
        e => out.push(e),
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = Vec::new();
    v.retain(|k| {
        let new = !seen.contains(k);
        seen.push(k.clone());
        new
    });
}

/// Whether `e`, run on the event, reads it only through named top-level fields (pushed
/// on `keys`): not as a whole (`.`, `length`, `has(…)`, …) and not by updating it.
fn doc_reads(e: &Expr, keys: &mut Vec<String>) -> bool {
    match e {
        Expr::Null | Expr::Bool(_) | Expr::Int(_) | Expr::Dec(_) | Expr::Empty | Expr::Var(_) => {
            true
        }
        Expr::Bind { value, body, .. } => doc_reads(value, keys) && doc_reads(body, keys),
        Expr::Str(pieces) => pieces.iter().all(|p| match p {
            Piece::Text(_) => true,
            Piece::Expr(e) => doc_reads(e, keys),
        }),
        Expr::Path(base, path) => match &**base {
            Expr::Id => {
                keys.push(path[0].clone());
                true
            }
            base => doc_reads(base, keys),
        },
        Expr::Arr(items) => items.iter().all(|i| doc_reads(i, keys)),
        Expr::Obj(entries) => entries.iter().all(|(k, v)| match v {
            Some(v) => doc_reads(k, keys) && doc_reads(v, keys),
            None => match k {
                Expr::Str(p) if matches!(&p[..], [Piece::Text(_)]) => {
                    let [Piece::Text(name)] = &p[..] else {
                        unreachable!()
                    };
                    keys.push(name.clone());
                    true
                }
                _ => false,
            },
        }),
        Expr::Neg(e) => doc_reads(e, keys),
        Expr::Math(_, l, r)
        | Expr::Cmp(_, l, r)
        | Expr::And(l, r)
        | Expr::Or(l, r)
        | Expr::Alt(l, r) => doc_reads(l, keys) && doc_reads(r, keys),
        // The right side runs on the left's output, not on the event.
        Expr::Pipe(l, _) => doc_reads(l, keys),
        Expr::If(branches, Some(otherwise)) => {
            branches
                .iter()
                .all(|(c, t)| doc_reads(c, keys) && doc_reads(t, keys))
                && doc_reads(otherwise, keys)
        }
        Expr::Id
        | Expr::If(_, None)
        | Expr::Assign(..)
        | Expr::Update(..)
        | Expr::UpdateMath(..)
        | Expr::UpdateAlt(..)
        | Expr::Call(_)
        | Expr::Has(_)
        | Expr::Split(_)
        | Expr::Join(_)
        | Expr::Test(_)
        | Expr::Iter(_)
        | Expr::ForEach { .. }
        | Expr::Select(_)
        | Expr::Del(_) => false,
    }
}
