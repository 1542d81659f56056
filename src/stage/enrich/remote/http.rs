//! `--http`: one call to an HTTP service (reqwest over rustls), its answer read as JSON.
//!
//! 2xx: the body must be JSON; it is compacted (keys in their order, whitespace out) so
//! that the event stays one line, and `--http-select PATH` keeps only that part of it
//! (`null` when absent). 404: not found. 429 and 503: the service is overloaded (its
//! `Retry-After`, in seconds or as an HTTP date, is kept). Any other status is a failure
//! with the status and the start of the body.

use std::time::Duration;

use super::io::IoThread;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};

use crate::exit::{Error, Result};
use crate::json::{self, FieldPath};
use crate::redact::{secret_header, MASK};

use super::{Answer, Failure};

/// The largest answer taken: it becomes part of every event it is set into, and an
/// event's line is bounded too (`--max-line-bytes`).
const MAX_ANSWER: usize = 1 << 20;
/// How much of a failing answer's body goes into the dead letter's reason.
const REASON_BODY: usize = 200;
/// Connections kept open per host between calls: as many as `auto` may have out, so a
/// steady load does not open and close connections.
const IDLE_PER_HOST: usize = super::concurrency::AUTO_MAX;

/// The HTTP client and what every call sends.
pub struct Http {
    client: reqwest::Client,
    /// Where the calls run (see [`super::io`]).
    pub(super) io: IoThread,
    pub method: Method,
    headers: HeaderMap,
    select: Option<FieldPath>,
}

impl Http {
    /// `headers` as `Name: value`, `$VAR` and `${VAR}` taken from the environment now;
    /// `ca`: PEM certificates trusted besides the system's.
    pub fn new(
        method: &str,
        headers: &[String],
        select: Option<FieldPath>,
        timeout: Duration,
        ca: Option<&std::path::Path>,
    ) -> Result<Http> {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::usage(format!("--http-method {method}: not a method")))?;
        let mut map = HeaderMap::new();
        for header in headers {
            let (name, value) = parse_header(header)?;
            map.append(name, value);
        }
        // reqwest is built without a crypto provider of its own: the process's (ring,
        // as ingest-http's server uses) is installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .tcp_nodelay(true)
            .user_agent(concat!("ndpipe-enrich/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::unreadable(
                    format!("--http-ca {}", ca.display()),
                    &e,
                    crate::exit::Exit::IoErr,
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::usage(format!("--http-ca {}: {e}", ca.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| Error::usage(format!("--http: {e}")))?;
        Ok(Http {
            client,
            io: IoThread::start()?,
            method,
            headers: map,
            select,
        })
    }

    /// The headers as `--explain` shows them: credentials redacted.
    pub fn shown_headers(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let shown = if secret_header(name.as_str()) {
                    MASK
                } else {
                    value.to_str().unwrap_or("[binary]")
                };
                format!("{name}: {shown}")
            })
            .collect()
    }

    /// One call. It runs where the batch's lookups run: the calls' own thread (see
    /// [`super::io`]), which owns the client's connections.
    pub async fn call(
        &self,
        url: &str,
        body: Option<&str>,
    ) -> std::result::Result<Answer, Failure> {
        let mut request = self
            .client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.map_err(failure)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = read_capped(response).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(REASON_BODY)]);
            return Err(Failure::Status {
                code: status.as_u16(),
                retry_after,
                reason: format!("{status}: {}", text.trim()),
            });
        }
        let compact = compact_json(&body)
            .map_err(|e| Failure::BadAnswer(format!("the answer is not JSON: {e}")))?;
        Ok(Answer::Found(match &self.select {
            None => compact.into(),
            Some(path) => json::get_in(&compact, path.segments())
                .unwrap_or("null")
                .into(),
        }))
    }
}

/// Reads a body, refusing one over [`MAX_ANSWER`].
async fn read_capped(mut response: reqwest::Response) -> std::result::Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failure)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Failure::BadAnswer(format!(
                "the answer is over {} KiB",
                MAX_ANSWER >> 10
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON text without its insignificant whitespace, keys in their order.
pub fn compact_json(text: &[u8]) -> std::result::Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(text.len());
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut out))?;
    de.end()?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

fn failure(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect(chain(&e))
    } else {
        Failure::Transport(chain(&e))
    }
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value.trim()).ok()?;
    let wait = at.timestamp().duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// `Name: value`, with `$VAR`/`${VAR}` expanded from the environment.
fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue)> {
    let bad = |why: &str| Error::usage(format!("--header {header:?}: {why}"));
    let (name, value) = header
        .split_once(':')
        .ok_or_else(|| bad("expected 'Name: value'"))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("not a header name"))?;
    let expanded = expand_env(value.trim())
        .map_err(|var| Error::usage(format!("--header {}: ${var} is not set", name.as_str())))?;
    let mut value = HeaderValue::from_str(&expanded).map_err(|_| bad("not a header value"))?;
    value.set_sensitive(secret_header(name.as_str()));
    Ok((name, value))
}

/// `$VAR` and `${VAR}` replaced by the variable's value; `$$` is a `$`. Err: the name of
/// a variable that is not set.
fn expand_env(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&std::env::var(name).map_err(|_| name.to_owned())?);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_compacted_keeping_key_order() {
        assert_eq!(
            compact_json(b"{ \"z\": 1,\n \"a\": [1, {\"y\" : \"a b\"}] }\n").unwrap(),
            r#"{"z":1,"a":[1,{"y":"a b"}]}"#
        );
        assert!(compact_json(b"{\"a\":1} x").is_err());
    }

    #[test]
    fn headers_expand_the_environment_and_hide_credentials() {
        std::env::set_var("NDPIPE_TEST_HEADER_TOKEN", "s3cret");
        let (name, value) =
            parse_header("Authorization: Bearer ${NDPIPE_TEST_HEADER_TOKEN}").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer s3cret")
        );
        let (_, value) = parse_header("X-Price: $$5 $NDPIPE_TEST_HEADER_TOKEN!").unwrap();
        assert_eq!(value.to_str().unwrap(), "$5 s3cret!");
        assert!(parse_header("X-A: $NDPIPE_TEST_UNSET_VAR_X").is_err());
        assert!(
            secret_header("X-Api-Key")
                && secret_header("Authorization")
                && !secret_header("Accept")
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
