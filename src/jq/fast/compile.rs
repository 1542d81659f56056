//! From jaq's own syntax tree to the fast path's expressions, or why not.
//!
//! The program is parsed by jaq's parser (so both paths read it the same way); this file
//! accepts the shapes that give at most one output per event and that the fast path
//! evaluates exactly as jaq does, and names the first thing it does not accept.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::ops;
use jaq_core::path::{Opt, Part};

use super::value::Math;

/// A compiled expression: evaluated on one input, it gives one value or none.
#[derive(Debug)]
pub enum Expr {
    /// `.`
    Id,
    /// `null`, `true`, `false`
    Null,
    Bool(bool),
    Int(i64),
    /// A number literal kept as written (jaq prints it so).
    Dec(String),
    /// `"text \(e) text"`
    Str(Vec<Piece>),
    /// `E.a.b`
    Path(Box<Expr>, Vec<String>),
    /// `[e, f, …]`
    Arr(Vec<Expr>),
    /// `{k: v, …}`; `None`: `{k}`, the input's `.k`.
    Obj(Vec<(Expr, Option<Expr>)>),
    Neg(Box<Expr>),
    Math(Math, Box<Expr>, Box<Expr>),
    Cmp(ops::Cmp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `l // r`
    Alt(Box<Expr>, Box<Expr>),
    /// `l | r`
    Pipe(Box<Expr>, Box<Expr>),
    /// `.a.b = e` (e on the input)
    Assign(Vec<String>, Box<Expr>),
    /// `.a.b |= e` (e on the old value; no output deletes the key)
    Update(Vec<String>, Box<Expr>),
    /// `.a.b op= e` (e on the input)
    UpdateMath(Vec<String>, Math, Box<Expr>),
    /// `.a.b //= e`
    UpdateAlt(Vec<String>, Box<Expr>),
    /// `if c then a elif … else b end` (no `else`: `.`)
    If(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    /// `empty`
    Empty,
    /// A builtin of one input and no arguments.
    Call(Builtin),
    /// `has(k)`, `split(s)`, `join(s)`, `select(c)`
    Has(Box<Expr>),
    Split(Box<Expr>),
    Join(Box<Expr>),
    Select(Box<Expr>),
    /// `del(.a, .b.c)`
    Del(Vec<Vec<String>>),
    /// `test("re")`, `test("re"; "flags")`: a literal regex, built as jaq builds it.
    Test(regex_bites::bytes::Regex),
    /// `$x`, bound by an enclosing `as`.
    Var(String),
    /// `E as $x | BODY` (E one value; BODY runs on the same input as E).
    Bind {
        value: Box<Expr>,
        var: String,
        body: Box<Expr>,
    },
    /// `E[] as $x | BODY`: BODY once per element (only as a fan-out, see
    /// [`super::Fast`]).
    ForEach {
        over: Box<Expr>,
        var: String,
        body: Box<Expr>,
    },
    /// `E[]` as the value of a key in an object constructor (`{id, tag: .tags[]}`): one
    /// object per element (see [`super::Fast`]'s fan-out; nowhere else).
    Iter(Box<Expr>),
}

impl Expr {
    /// Whether an iteration (`E[]`) is anywhere in it.
    pub fn iterates(&self) -> bool {
        fn any<'e>(mut es: impl Iterator<Item = &'e Expr>) -> bool {
            es.any(Expr::iterates)
        }
        match self {
            Expr::Iter(_) | Expr::ForEach { .. } => true,
            Expr::Var(_) => false,
            Expr::Bind { value, body, .. } => value.iterates() || body.iterates(),
            Expr::Id
            | Expr::Null
            | Expr::Bool(_)
            | Expr::Int(_)
            | Expr::Dec(_)
            | Expr::Empty
            | Expr::Call(_)
            | Expr::Test(_)
            | Expr::Del(_) => false,
            Expr::Str(p) => any(p.iter().filter_map(|p| match p {
                Piece::Expr(e) => Some(e),
                Piece::Text(_) => None,
            })),
            Expr::Path(e, _)
            | Expr::Neg(e)
            | Expr::Assign(_, e)
            | Expr::Update(_, e)
            | Expr::UpdateMath(_, _, e)
            | Expr::UpdateAlt(_, e)
            | Expr::Has(e)
            | Expr::Split(e)
            | Expr::Join(e)
            | Expr::Select(e) => e.iterates(),
            Expr::Arr(items) => any(items.iter()),
            Expr::Obj(entries) => any(entries
                .iter()
                .flat_map(|(k, v)| [Some(k), v.as_ref()].into_iter().flatten())),
            Expr::Math(_, l, r)
            | Expr::Cmp(_, l, r)
            | Expr::And(l, r)
            | Expr::Or(l, r)
            | Expr::Alt(l, r)
            | Expr::Pipe(l, r) => l.iterates() || r.iterates(),
            Expr::If(branches, otherwise) => {
                any(branches.iter().flat_map(|(c, t)| [c, t]))
                    || otherwise.as_ref().is_some_and(|e| e.iterates())
            }
        }
    }
}

#[derive(Debug)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, Copy)]
pub enum Builtin {
    Floor,
    Round,
    Ceil,
    ToString,
    ToNumber,
    Length,
    AsciiDowncase,
    AsciiUpcase,
    Not,
}

type C = Result<Expr, String>;

/// Compiles a parsed program.
pub fn compile(t: &Term<&str>) -> C {
    Ok(match t {
        Term::Id => Expr::Id,
        Term::Num(n) => number(n, false)?,
        Term::Neg(inner) => match &**inner {
            Term::Num(n) => number(n, true)?,
            other => Expr::Neg(Box::new(compile(other)?)),
        },
        Term::Str(None, parts) => Expr::Str(pieces(parts)?),
        Term::Str(Some(fmt), _) => return Err(format!("the format {fmt}")),
        Term::Arr(None) => Expr::Arr(Vec::new()),
        Term::Arr(Some(items)) => {
            let mut out = Vec::new();
            commas(items, &mut out)?;
            Expr::Arr(out)
        }
        Term::Obj(entries) => Expr::Obj(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Term::Var(v) => return Err(format!("the variable {v}")),
                        k => compile(k)?,
                    };
                    Ok((key, v.as_ref().map(obj_value).transpose()?))
                })
                .collect::<Result<_, String>>()?,
        ),
        Term::Path(base, path) => {
            let keys = keys(path)?;
            match &**base {
                Term::Id => Expr::Path(Box::new(Expr::Id), keys),
                other => Expr::Path(Box::new(compile(other)?), keys),
            }
        }
        Term::BinOp(l, op, r) => binary(l, op, r)?,
        Term::IfThenElse(branches, otherwise) => Expr::If(
            branches
                .iter()
                .map(|(c, t)| Ok((compile(c)?, compile(t)?)))
                .collect::<Result<_, String>>()?,
            otherwise
                .as_ref()
                .map(|e| compile(e).map(Box::new))
                .transpose()?,
        ),
        Term::Call(name, args) => call(name, args)?,
        Term::Recurse => return Err("`..`".into()),
        Term::Label(..) | Term::Break(_) => return Err("label/break".into()),
        Term::Fold(kind, ..) => return Err(format!("`{kind}`")),
        Term::TryCatch(..) => return Err("try/catch".into()),
        Term::Def(..) => return Err("definitions (def)".into()),
        Term::Var(v) if matches!(*v, "$ENV" | "$__loc__") => return Err((*v).to_owned()),
        // Any other variable is bound by an `as` (jaq checked).
        Term::Var(v) => Expr::Var((*v).to_owned()),
    })
}

/// The value of a key in an object constructor: an expression, or `E[]`.
fn obj_value(t: &Term<&str>) -> C {
    match iteration(t)? {
        Some(over) => Ok(Expr::Iter(Box::new(over))),
        None => compile(t),
    }
}

/// `E` when `t` is `E[]` (a path of keys then `[]`).
fn iteration(t: &Term<&str>) -> Result<Option<Expr>, String> {
    if let Term::Path(base, path) = t {
        if let Some(((Part::Range(None, None), Opt::Essential), init)) = path.0.split_last() {
            let base = match &**base {
                Term::Id => Expr::Id,
                other => compile(other)?,
            };
            let keys = keys(&jaq_core::path::Path(init.to_vec()))?;
            return Ok(Some(if keys.is_empty() {
                base
            } else {
                Expr::Path(Box::new(base), keys)
            }));
        }
    }
    Ok(None)
}

/// A number literal as jaq reads it: a machine integer, or a decimal kept as written.
fn number(n: &str, negative: bool) -> C {
    let text = if negative {
        format!("-{n}")
    } else {
        n.to_owned()
    };
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Expr::Int(i));
    }
    if !n.contains(['.', 'e', 'E']) {
        return Err(format!("the big integer {text}"));
    }
    // jaq prints it as written; a text serde_json cannot read back (out of range) would
    // make the jaq path refuse the output, so leave those to it.
    match serde_json::from_str::<f64>(&text) {
        Ok(f) if f.is_finite() && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
            Ok(Expr::Dec(text))
        }
        _ => Err(format!("the number {text}")),
    }
}

fn pieces(parts: &[StrPart<&str, Term<&str>>]) -> Result<Vec<Piece>, String> {
    let mut out: Vec<Piece> = Vec::new();
    for p in parts {
        match p {
            StrPart::Str(s) => push_text(&mut out, s),
            StrPart::Char(c) => push_text(&mut out, c.encode_utf8(&mut [0; 4])),
            StrPart::Term(t) => out.push(Piece::Expr(compile(t)?)),
        }
    }
    Ok(out)
}

fn push_text(out: &mut Vec<Piece>, s: &str) {
    match out.last_mut() {
        Some(Piece::Text(t)) => t.push_str(s),
        _ => out.push(Piece::Text(s.to_owned())),
    }
}

/// `a, b, c` (inside `[…]`) as a list.
fn commas(t: &Term<&str>, out: &mut Vec<Expr>) -> Result<(), String> {
    match t {
        Term::BinOp(l, BinaryOp::Comma, r) => {
            commas(l, out)?;
            commas(r, out)
        }
        t => {
            out.push(compile(t)?);
            Ok(())
        }
    }
}

/// The keys of a path of plain object keys (`.a.b`, `."a b"`, `.["a"]`).
fn keys(path: &jaq_core::path::Path<Term<&str>>) -> Result<Vec<String>, String> {
    path.0
        .iter()
        .map(|(part, opt)| match (part, opt) {
            (Part::Index(t @ Term::Str(None, _)), Opt::Essential) => {
                literal(t).ok_or_else(|| "a computed key".to_owned())
            }
            (_, Opt::Optional) => Err("`?`".to_owned()),
            (Part::Index(_), _) => Err("an array index or computed key".to_owned()),
            (Part::Range(..), _) => Err("`[]` (iteration or slices)".to_owned()),
        })
        .collect()
}

/// The target of an assignment: a path from `.` of object keys.
fn target(t: &Term<&str>) -> Result<Vec<String>, String> {
    match t {
        Term::Path(base, path) if matches!(**base, Term::Id) => keys(path),
        _ => Err("an assignment to something other than a path of keys".into()),
    }
}

fn math(m: &ops::Math) -> Math {
    match m {
        ops::Math::Add => Math::Add,
        ops::Math::Sub => Math::Sub,
        ops::Math::Mul => Math::Mul,
        ops::Math::Div => Math::Div,
        ops::Math::Rem => Math::Rem,
    }
}

fn binary(l: &Term<&str>, op: &BinaryOp<&str>, r: &Term<&str>) -> C {
    let b = |t: &Term<&str>| compile(t).map(Box::new);
    Ok(match op {
        BinaryOp::Pipe(None) => Expr::Pipe(b(l)?, b(r)?),
        BinaryOp::Pipe(Some(Pattern::Var(x))) => {
            let var = (*x).to_owned();
            match iteration(l)? {
                Some(over) => Expr::ForEach {
                    over: Box::new(over),
                    var,
                    body: b(r)?,
                },
                None => Expr::Bind {
                    value: b(l)?,
                    var,
                    body: b(r)?,
                },
            }
        }
        BinaryOp::Pipe(Some(_)) => return Err("destructuring `as [$x, …]`".into()),
        BinaryOp::Comma => return Err("`,` (several outputs)".into()),
        BinaryOp::Alt => Expr::Alt(b(l)?, b(r)?),
        BinaryOp::Or => Expr::Or(b(l)?, b(r)?),
        BinaryOp::And => Expr::And(b(l)?, b(r)?),
        BinaryOp::Math(m) => Expr::Math(math(m), b(l)?, b(r)?),
        BinaryOp::Cmp(c) => Expr::Cmp(*c, b(l)?, b(r)?),
        BinaryOp::Assign => Expr::Assign(target(l)?, b(r)?),
        BinaryOp::Update => Expr::Update(target(l)?, b(r)?),
        BinaryOp::UpdateMath(m) => Expr::UpdateMath(target(l)?, math(m), b(r)?),
        BinaryOp::UpdateAlt => Expr::UpdateAlt(target(l)?, b(r)?),
    })
}

fn call(name: &str, args: &[Term<&str>]) -> C {
    let one = |what: fn(Box<Expr>) -> Expr| -> C { Ok(what(Box::new(compile(&args[0])?))) };
    Ok(match (name, args.len()) {
        ("null", 0) => Expr::Null,
        ("true", 0) => Expr::Bool(true),
        ("false", 0) => Expr::Bool(false),
        ("empty", 0) => Expr::Empty,
        ("floor", 0) => Expr::Call(Builtin::Floor),
        ("round", 0) => Expr::Call(Builtin::Round),
        ("ceil", 0) => Expr::Call(Builtin::Ceil),
        ("tostring", 0) => Expr::Call(Builtin::ToString),
        ("tonumber", 0) => Expr::Call(Builtin::ToNumber),
        ("length", 0) => Expr::Call(Builtin::Length),
        ("ascii_downcase", 0) => Expr::Call(Builtin::AsciiDowncase),
        ("ascii_upcase", 0) => Expr::Call(Builtin::AsciiUpcase),
        ("not", 0) => Expr::Call(Builtin::Not),
        ("has", 1) => one(Expr::Has)?,
        ("split", 1) => one(Expr::Split)?,
        ("join", 1) => one(Expr::Join)?,
        ("select", 1) => one(Expr::Select)?,
        ("test", 1 | 2) => Expr::Test(regex(&args[0], args.get(1))?),
        ("del", 1) => {
            let mut paths = Vec::new();
            let mut items = Vec::new();
            comma_terms(&args[0], &mut items);
            for t in items {
                paths.push(target(t)?);
            }
            Expr::Del(paths)
        }
        (name, n) => return Err(format!("the function {name}/{n}")),
    })
}

/// A literal string of the program, escapes applied.
fn literal(t: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = t else {
        return None;
    };
    let mut s = String::new();
    for p in parts {
        match p {
            StrPart::Str(t) => s.push_str(t),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(s)
}

/// The regex of `test(re; flags)`, built with jaq-std's settings for its flags.
fn regex(re: &Term<&str>, flags: Option<&Term<&str>>) -> Result<regex_bites::bytes::Regex, String> {
    let re = literal(re).ok_or("a computed regex")?;
    let flags = match flags {
        None => String::new(),
        Some(f) => literal(f).ok_or("computed regex flags")?,
    };
    let mut builder = regex_bites::bytes::RegexBuilder::new(&re);
    let (mut i, mut m, mut s, mut l, mut x) = (false, false, false, false, false);
    for flag in flags.chars() {
        match flag {
            // Global search changes nothing for test.
            'g' => {}
            'i' => i = true,
            'm' => m = true,
            's' => s = true,
            'l' => l = true,
            'x' => x = true,
            'p' => (m, s) = (true, true),
            f => return Err(format!("the regex flag {f:?}")),
        }
    }
    builder
        .case_insensitive(i)
        .multi_line(m)
        .dot_matches_new_line(s)
        .swap_greed(l)
        .ignore_whitespace(x)
        .build()
        .map_err(|_| "a regex jaq refuses".to_owned())
}

fn comma_terms<'t, 's>(t: &'t Term<&'s str>, out: &mut Vec<&'t Term<&'s str>>) {
    match t {
        Term::BinOp(l, BinaryOp::Comma, r) => {
            comma_terms(l, out);
            comma_terms(r, out);
        }
        t => out.push(t),
    }
}
