//! jq at splice speed: the common shapes of jq programs run on the event's member index,
//! in the worker's own thread, with no value tree and no helper process.
//!
//! A program is compiled once at start ([`Fast::compile`], from jaq's own parse of it):
//! assignments and updates of object keys (`.a = e`, `.a |= e`, `+=` and the other
//! arithmetic updates, `//=`), `del(…)`, object and array constructors, `select(…)`,
//! `if … then … elif … else … end`, comparisons, `and`/`or`/`not`, arithmetic, `//`,
//! string interpolation, pipes, and the builtins `floor`, `round`, `ceil`, `tostring`,
//! `tonumber`, `length`, `ascii_downcase`, `ascii_upcase`, `has`, `split`, `join`,
//! `empty`. A program with anything else runs in jaq ([`super::Sandbox`]) whole; which
//! one, and why, is decided once and shown by `--explain`.
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

use crate::json::{self, Member};

mod canonical;
pub mod check;
mod compile;
mod eval;
mod value;

#[cfg(test)]
mod tests;

pub use value::Bail;

use compile::Expr;
use value::V;

/// A program compiled for the fast path.
#[derive(Debug)]
pub struct Fast {
    expr: Expr,
}

impl Fast {
    /// Compiles `code` (already accepted by jaq); `Err` says what keeps it on the jaq
    /// path.
    pub fn compile(code: &str) -> Result<Fast, String> {
        let term = jaq_core::load::parse(code, |p| p.term())
            .ok_or_else(|| "jaq's parser did not accept it alone".to_owned())?;
        let expr = compile::compile(&term).map_err(|what| format!("it uses {what}"))?;
        Ok(Fast { expr })
    }

    /// Runs the program on one event (`text`, an object indexed by `members`) without its
    /// metadata field `meta`, and re-attaches that field as the jaq path does (last): the
    /// output's text, `None` when the program gives no output, or [`Bail`] when jaq must
    /// run this event.
    pub fn run(&self, text: &str, members: &[Member], meta: &str) -> Result<Option<String>, Bail> {
        let mut meta_raw = None;
        let mut entries: Vec<(Cow<str>, V)> = Vec::with_capacity(members.len() + 4);
        for m in members {
            let key = &text[m.key()];
            if !canonical::canonical_string(key) {
                return Err(Bail);
            }
            let value = &text[m.value()];
            if m.key_is(text, meta) {
                if meta_raw.replace(value).is_some() {
                    return Err(Bail);
                }
                continue;
            }
            if !canonical::canonical(value) {
                return Err(Bail);
            }
            let key = if m.escaped() {
                m.key_str(text)
            } else {
                Cow::Borrowed(key)
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(Bail);
            }
            entries.push((key, V::Raw(value)));
        }
        let Some(out) = eval::run(&self.expr, V::Obj(entries))? else {
            return Ok(None);
        };
        let Some(out) = out.into_members()? else {
            // Not an object: the jaq path says why, as a dead letter.
            return Err(Bail);
        };
        let mut s = String::with_capacity(text.len() + 64);
        s.push('{');
        value::write_members(&out, &mut s)?;
        if let Some(raw) = meta_raw {
            if out.iter().any(|(k, _)| k == meta) {
                return Err(Bail);
            }
            if !out.is_empty() {
                s.push(',');
            }
            json::push_quoted(&mut s, meta);
            s.push(':');
            s.push_str(raw);
        }
        s.push('}');
        Ok(Some(s))
    }
}
