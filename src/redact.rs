//! Secrets kept out of what ndpipe echoes: `pipeline --explain`, usage errors that quote a
//! stage's words, log lines. A pipe text often holds a connection string, and `$VAR`
//! expansion puts what was only in the environment into the words.
//!
//! Redacted, wherever they stand in a text:
//! - the password of a URL's user information: `postgres://app:s3cret@db/x` →
//!   `postgres://app:***@db/x`;
//! - the value of any `…password=`, `…secret=`, `…token=` or `…api_key=` setting: a libpq
//!   keyword/value string (`host=db password='a b'`), a URL query (`?api_key=x&q=…`), a
//!   librdkafka setting (`-X sasl.password=p`);
//! - in a command's words, the value of a flag that is a secret itself
//!   ([`SECRET_FLAGS`]), and of a `--header 'Authorization: Bearer …'` whose name
//!   [`secret_header`] says carries a credential.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Flags whose value is a secret (`--auth-token T`, `--auth-token=T`).
pub const SECRET_FLAGS: [&str; 1] = ["--auth-token"];

/// Setting names whose value is a secret: a key ending in one of these (ASCII case
/// ignored), `password` also covering `sslpassword` and `sasl.password`. Not plain `key`:
/// `persist --key=id` names a field.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
];

/// Flags whose value is an HTTP header, `Name: value`: the value is masked when the name
/// is a [`secret_header`].
const HEADER_FLAGS: [&str; 1] = ["--header"];

/// Whether an HTTP header (or query parameter) of this name carries a credential:
/// `Authorization`, `Cookie`, or any name with `key`, `token`, `secret`, `password` or
/// `auth` in it (`X-Api-Key`, `X-Auth-Token`).
pub fn secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["key", "token", "secret", "password", "auth"]
        .iter()
        .any(|w| name.contains(w))
}

/// A header `Name: value` with the value masked if the name is a [`secret_header`].
fn header(word: &str) -> String {
    match word.split_once(':') {
        Some((name, _)) if secret_header(name.trim()) => format!("{name}: {MASK}"),
        _ => text(word).into_owned(),
    }
}

/// `text` with every secret in it masked.
pub fn text(text: &str) -> Cow<'_, str> {
    let urls = userinfo(text);
    match settings(&urls) {
        Cow::Borrowed(_) => urls,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// A command's words with every secret masked, also the values of [`SECRET_FLAGS`] and
/// credentials in [`HEADER_FLAGS`].
pub fn words(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut secret_next = false;
    let mut header_next = false;
    for w in words {
        if std::mem::take(&mut secret_next) {
            out.push(MASK.to_owned());
            continue;
        }
        if std::mem::take(&mut header_next) {
            out.push(header(w));
            continue;
        }
        if let Some(flag) = HEADER_FLAGS.iter().find(|f| w.starts_with(*f)) {
            match &w[flag.len()..] {
                "" => header_next = true,
                rest if rest.starts_with('=') => {
                    out.push(format!("{flag}={}", header(&rest[1..])));
                    continue;
                }
                _ => {}
            }
        }
        if let Some(flag) = SECRET_FLAGS.iter().find(|f| w.starts_with(*f)) {
            match &w[flag.len()..] {
                "" => secret_next = true,
                rest if rest.starts_with('=') => {
                    out.push(format!("{flag}={MASK}"));
                    continue;
                }
                _ => {}
            }
        }
        out.push(text(w).into_owned());
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn userinfo(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        // The authority ends at the path, query, fragment or the end of the word.
        let end = text[start..]
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"') || c.is_whitespace())
            .map_or(text.len(), |i| start + i);
        let authority = &text[start..end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                let (secret_start, secret_end) = (start + colon + 1, start + at);
                if text[secret_start..secret_end] != *MASK {
                    out.push_str(&text[copied..secret_start]);
                    out.push_str(MASK);
                    copied = secret_end;
                }
            }
        }
        from = end.max(start);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `…password=VALUE` → `…password=***`; VALUE ends at white space, `&` or a closing quote,
/// or is a `'quoted string'` (libpq's form, `\'` inside).
fn settings(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|k| i + k) {
        i = eq + 1;
        let key = &text[..eq];
        let key = key.trim_end();
        let secret = SECRET_KEYS.iter().any(|k| {
            key.len() >= k.len()
                && key.is_char_boundary(key.len() - k.len())
                && key[key.len() - k.len()..].eq_ignore_ascii_case(k)
        });
        if !secret {
            continue;
        }
        let mut start = eq + 1;
        while start < bytes.len() && bytes[start] == b' ' {
            start += 1;
        }
        let end = if bytes.get(start) == Some(&b'\'') {
            let mut j = start + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            text[start..]
                .find(|c: char| matches!(c, '&' | '\'' | '"') || c.is_whitespace())
                .map_or(text.len(), |k| start + k)
        };
        if end > start && text[start..end] != *MASK {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        i = end.max(i);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords() {
        assert_eq!(
            text("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(text("postgresql://:p@h/db"), "postgresql://:***@h/db");
        // A user without a password, or no user at all: nothing to hide.
        assert_eq!(text("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(text("https://host/a@b"), "https://host/a@b");
        assert_eq!(
            text("a postgres://u:p@h/d and mysql://v:q@k"),
            "a postgres://u:***@h/d and mysql://v:***@k"
        );
        // A password holding `:` (only the first `:` of the user information splits).
        assert_eq!(text("postgres://u:a:b@h"), "postgres://u:***@h");
    }

    #[test]
    fn setting_passwords() {
        assert_eq!(
            text("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            text("host=db password='a \\' b' dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert_eq!(
            text("postgres://db/x?user=u&password=p&sslmode=require"),
            "postgres://db/x?user=u&password=***&sslmode=require"
        );
        assert_eq!(text("sasl.password=p"), "sasl.password=***");
        assert_eq!(text("PASSWORD = p"), "PASSWORD = ***");
        assert_eq!(
            text("sasl.oauthbearer.client.secret=z"),
            "sasl.oauthbearer.client.secret=***"
        );
        assert_eq!(
            text("unknown command \"password=x\""),
            "unknown command \"password=***\""
        );
        assert_eq!(text("user=app dbname=x"), "user=app dbname=x");
        assert_eq!(
            text("https://svc/u/{id}?api_key=abc&q=1&access_token=t"),
            "https://svc/u/{id}?api_key=***&q=1&access_token=***"
        );
    }

    #[test]
    fn secret_flags() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            words(&w(&["ingest-http", "--auth-token", "t0k", "--listen", "x"])),
            w(&["ingest-http", "--auth-token", "***", "--listen", "x"])
        );
        assert_eq!(
            words(&w(&["ingest-http", "--auth-token=t0k"])),
            w(&["ingest-http", "--auth-token=***"])
        );
        assert_eq!(
            words(&w(&["persist", "--database-url", "postgres://u:p@h/d"])),
            w(&["persist", "--database-url", "postgres://u:***@h/d"])
        );
        assert_eq!(
            words(&w(&[
                "enrich",
                "--header",
                "Authorization: Bearer t",
                "--header=X-Trace: 1"
            ])),
            w(&[
                "enrich",
                "--header",
                "Authorization: ***",
                "--header=X-Trace: 1"
            ])
        );
        assert_eq!(
            words(&w(&["enrich", "--header=X-Api-Key: k", "--key=id"])),
            w(&["enrich", "--header=X-Api-Key: ***", "--key=id"])
        );
        // Masked text is left as it is.
        assert_eq!(text("postgres://u:***@h"), "postgres://u:***@h");
    }
}
