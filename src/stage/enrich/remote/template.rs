//! `--http URL` and `--http-body TEXT` templates: `{path}` stands for an event field.
//!
//! In a URL a field's value is percent-encoded (a string by its characters, any other
//! value by its JSON text), so `/users/{name}` with `"a b/c"` asks for `/users/a%20b%2Fc`.
//! In a body the field's JSON text goes in as it is: `{"id": {user_id}}`. A placeholder
//! is `{` followed at once by a field path (no quote, space or `}` first) up to the next
//! `}`; every other brace is the text's own, so JSON bodies need no escaping. `{{` is a
//! literal `{` where one would otherwise start a placeholder.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::event::{Event, Reject};
use crate::json::FieldPath;

/// Characters left as they are in a URL's field values: RFC 3986's unreserved set.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldPath),
}

/// How a field's value is written into the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Percent-encoded: a string's characters, any other value's JSON text.
    Url,
    /// The value's JSON text as it is.
    Json,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('{') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('{') {
                literal.push('{');
                rest = tail;
                continue;
            }
            let starts_path = after
                .chars()
                .next()
                .is_some_and(|c| !matches!(c, '"' | '}' | '{') && !c.is_whitespace());
            let end = after.find('}');
            match (starts_path, end) {
                (true, Some(end)) if !after[..end].contains(['"', '{', ' ', '\n', '\t', ':']) => {
                    let path = FieldPath::parse(&after[..end])?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(path));
                    rest = &after[end + 1..];
                }
                _ => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The fields it reads, in order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldPath> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Text(_) => None,
        })
    }

    /// Whether it reads no field (the same text for every event).
    pub fn is_constant(&self) -> bool {
        self.fields().next().is_none()
    }

    /// The text before its first field: a URL's scheme and host when those are not
    /// templated.
    pub fn prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// The text with every field filled in by `value` as it is (to check what a
    /// template's literal parts make).
    pub fn sample(&self, value: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Field(_) => value,
            })
            .collect()
    }

    /// The text for `event`, appended to `out`; an event without one of the fields is a
    /// `missing_field` reject naming it.
    pub fn render(
        &self,
        event: &mut Event,
        meta: &str,
        fill: Fill,
        out: &mut String,
    ) -> Result<(), Reject> {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => {
                    let Some(raw) = event.get(path, meta) else {
                        return Err(Reject::new(
                            "missing_field",
                            format!("no field {path} for the lookup"),
                        ));
                    };
                    write_value(raw, fill, out);
                }
            }
        }
        Ok(())
    }
}

/// Writes the raw JSON text `raw` as `fill` says.
pub fn write_value(raw: &str, fill: Fill, out: &mut String) {
    match fill {
        Fill::Json => out.push_str(raw),
        Fill::Url => {
            // A string's text (as it is between its quotes when it holds no escape), or
            // any other value's JSON text: no copy in the common cases.
            let text: std::borrow::Cow<'_, str> = match raw.strip_prefix('"') {
                Some(inner) if !inner.contains('\\') => {
                    inner.strip_suffix('"').unwrap_or(inner).into()
                }
                Some(_) => serde_json::from_str::<String>(raw)
                    .unwrap_or_else(|_| raw.to_owned())
                    .into(),
                None => raw.into(),
            };
            out.extend(utf8_percent_encode(&text, KEEP));
        }
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => {
                    for c in t.chars() {
                        // A literal brace that would read as a placeholder is doubled.
                        if c == '{' {
                            f.write_str("{")?;
                        }
                        write!(f, "{c}")?;
                    }
                }
                Part::Field(p) => write!(f, "{{{p}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, event: &str, fill: Fill) -> Result<String, String> {
        let t = Template::parse(template).unwrap();
        let mut e = Event::from_json_text(event.to_owned(), 1);
        e.decode().unwrap();
        let mut out = String::new();
        t.render(&mut e, "_meta", fill, &mut out)
            .map(|()| out)
            .map_err(|r| format!("{}: {}", r.kind, r.reason))
    }

    #[test]
    fn url_values_are_percent_encoded_and_bodies_take_json_text() {
        let event = r#"{"name":"a b/c?d=é","n":42,"user":{"id":"x&y"}}"#;
        assert_eq!(
            render(
                "https://svc/users/{name}?n={n}&u={user.id}",
                event,
                Fill::Url
            )
            .unwrap(),
            "https://svc/users/a%20b%2Fc%3Fd%3D%C3%A9?n=42&u=x%26y"
        );
        assert_eq!(
            render(
                r#"{"id": {n}, "who": {user}, "lit": {"a":1}}"#,
                event,
                Fill::Json
            )
            .unwrap(),
            r#"{"id": 42, "who": {"id":"x&y"}, "lit": {"a":1}}"#
        );
        assert_eq!(render("a{{b}", event, Fill::Url).unwrap(), "a{b}");
        // A string with escapes is decoded first; an empty one is empty.
        let escaped = r#"{"s":"q\"\u00e9\\/","e":""}"#;
        assert_eq!(
            render("https://svc/{s}/{e}", escaped, Fill::Url).unwrap(),
            "https://svc/q%22%C3%A9%5C%2F/"
        );
    }

    #[test]
    fn a_missing_field_names_it() {
        assert_eq!(
            render("https://svc/{user.name}", r#"{"user":{}}"#, Fill::Url).unwrap_err(),
            "missing_field: no field user.name for the lookup"
        );
    }

    #[test]
    fn the_constant_prefix_and_the_fields_are_known_before_any_event() {
        let t = Template::parse("http://127.0.0.1:9/u/{id}/{kind}").unwrap();
        assert_eq!(t.prefix(), "http://127.0.0.1:9/u/");
        let fields: Vec<String> = t.fields().map(ToString::to_string).collect();
        assert_eq!(fields, ["id", "kind"]);
        assert!(Template::parse("http://h/x").unwrap().is_constant());
    }
}
