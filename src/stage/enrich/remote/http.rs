//! `--http`: one call to an HTTP service, its answer read as JSON.
//!
//! Calls go straight to the service on hyper's HTTP/1.1 connections, kept open between
//! calls ([`super::pool`]), over rustls with the platform's roots (and `--http-ca`'s).
//! Not on reqwest, which is built on hyper-util's pooled client: it parsed every call's
//! URL twice with the `url` crate (IDNA host mapping included) and passed it through its
//! redirect and retry layers, some 30 k instructions a call, 40 % of a call's cost on
//! our side (callgrind, 95 % cache hits). When the environment names a proxy
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, lower case too), calls go through reqwest, whose proxy support (`NO_PROXY`, CONNECT tunnels, proxy
//! credentials) is the one users know from curl. Either way, redirects are not
//! followed (a 3xx is a failure, as every status but 2xx and 404), and credentials in the
//! URL (`https://user:pass@host/…`) are sent as basic authentication.
//!
//! 2xx: the body must be JSON; it is compacted (keys in their order, whitespace out) so
//! that the event stays one line, and `--http-select PATH` keeps only that part of it
//! (`null` when absent). 404: not found. 429 and 503: the service is overloaded (its
//! `Retry-After`, in seconds or as an HTTP date, is kept). Any other status is a failure
//! with the status and the start of the body.

use std::sync::Arc;
use std::time::Duration;

use super::io::IoThread;
use super::pool::Pool;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
    USER_AGENT,
};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::exit::{Error, Result};
use crate::json::{self, FieldPath};
use crate::redact::{secret_header, MASK};
use crate::tape::{self, Kind};

use super::{Answer, Failure};

/// The largest answer taken: it becomes part of every event it is set into, and an
/// event's line is bounded too (`--max-line-bytes`).
const MAX_ANSWER: usize = 1 << 20;
/// How much of a failing answer's body goes into the dead letter's reason.
const REASON_BODY: usize = 200;
/// Connections kept open per host between calls: as many as `auto` may have out, so a
/// steady load does not open and close connections.
const IDLE_PER_HOST: usize = super::concurrency::AUTO_MAX;
/// The variables that name a proxy, as curl reads them.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// How calls reach the service.
enum Transport {
    /// Straight to the services.
    Direct(Pool),
    /// Through the proxy the environment names.
    Proxied(reqwest::Client),
}

/// The HTTP client and what every call sends.
pub struct Http {
    transport: Transport,
    /// Where the calls run (see [`super::io`]).
    pub(super) io: IoThread,
    pub method: Method,
    /// `--header`s, then `Accept` and `User-Agent` unless given.
    headers: HeaderMap,
    select: Option<FieldPath>,
    timeout: Duration,
}

/// A service's answer, read whole.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
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
        if !map.contains_key(ACCEPT) {
            map.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if !map.contains_key(USER_AGENT) {
            map.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("ndpipe-enrich/", env!("CARGO_PKG_VERSION"))),
            );
        }
        // One crypto provider for the process (ring, as ingest-http's server uses).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let extra_roots = match ca {
            None => Vec::new(),
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::unreadable(
                        format!("--http-ca {}", ca.display()),
                        &e,
                        crate::exit::Exit::IoErr,
                    )
                })?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::usage(format!("--http-ca {}: {e}", ca.display())))?;
                if certs.is_empty() {
                    return Err(Error::usage(format!(
                        "--http-ca {}: no certificate in it",
                        ca.display()
                    )));
                }
                certs
            }
        };
        let proxied = PROXY_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
        let transport = if proxied {
            Transport::Proxied(reqwest_client(extra_roots)?)
        } else {
            Transport::Direct(direct_client(extra_roots)?)
        };
        Ok(Http {
            transport,
            io: IoThread::start()?,
            method,
            headers: map,
            select,
            timeout,
        })
    }

    /// Whether calls go through a proxy the environment names.
    pub fn proxied(&self) -> bool {
        matches!(self.transport, Transport::Proxied(_))
    }

    /// The headers as `--explain` shows them (those given): credentials redacted.
    pub fn shown_headers(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(name, value)| {
                !(*name == ACCEPT && value.as_bytes() == b"*/*"
                    || *name == USER_AGENT && value.as_bytes().starts_with(b"ndpipe-enrich/"))
            })
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

    /// One call, bounded by the timeout. It runs where the batch's lookups run: the
    /// calls' own thread (see [`super::io`]), which owns the client's connections.
    pub async fn call(
        &self,
        url: &str,
        body: Option<&str>,
    ) -> std::result::Result<Answer, Failure> {
        let exchange = async {
            match &self.transport {
                Transport::Direct(client) => self.direct(client, url, body).await,
                Transport::Proxied(client) => self.proxied_call(client, url, body).await,
            }
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if !reply.status.is_success() {
            let body = &reply.body[..reply.body.len().min(REASON_BODY)];
            let text = String::from_utf8_lossy(body);
            return Err(Failure::Status {
                code: reply.status.as_u16(),
                retry_after: reply.retry_after,
                reason: format!("{}: {}", reply.status, text.trim()),
            });
        }
        let compact = compact_json(&reply.body)
            .map_err(|e| Failure::BadAnswer(format!("the answer is not JSON: {e}")))?;
        Ok(Answer::Found(match &self.select {
            None => compact.into(),
            Some(path) => json::get_in(&compact, path.segments())
                .unwrap_or("null")
                .into(),
        }))
    }

    async fn direct(
        &self,
        pool: &Pool,
        url: &str,
        body: Option<&str>,
    ) -> std::result::Result<Reply, Failure> {
        let mut uri = Uri::try_from(url)
            .map_err(|e| Failure::Transport(format!("not a URL: {url:?}: {e}")))?;
        let mut headers = self.headers.clone();
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            uri = with_credentials(uri, &mut headers)?;
        }
        let payload = match body {
            Some(body) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::copy_from_slice(body.as_bytes()))
            }
            None => Full::new(Bytes::new()),
        };
        let mut request = Request::new(payload);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let (response, lease) = pool.send(request).await?;
        let (parts, mut incoming) = response.into_parts();
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| Failure::Transport(chain(&e)))?;
            if let Ok(chunk) = frame.into_data() {
                take_chunk(&mut body, &chunk)?;
            }
        }
        pool.done(lease);
        Ok(Reply {
            status: parts.status,
            retry_after: retry_after_of(&parts.headers),
            body,
        })
    }

    async fn proxied_call(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: Option<&str>,
    ) -> std::result::Result<Reply, Failure> {
        let mut request = client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let mut response = request.send().await.map_err(reqwest_failure)?;
        let (status, retry_after) = (response.status(), retry_after_of(response.headers()));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(reqwest_failure)? {
            take_chunk(&mut body, &chunk)?;
        }
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
}

/// Checks that `url` (a `--http` template with each field filled in) is a URL the calls
/// can be made to: absolute, http or https, ASCII (a host in its punycode form).
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let uri = Uri::try_from(url).map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err("the URL must start with http:// or https:// and name a host".into()),
    }
}

/// Connections straight to the services.
fn direct_client(extra_roots: Vec<CertificateDer<'static>>) -> Result<Pool> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
    }
    .map_err(|e| Error::usage(format!("--http: the system's certificates: {e}")))?;
    // ALPN (http/1.1) is the connector's to set.
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::usage(format!("--http: TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Pool::new(connector, IDLE_PER_HOST))
}

/// reqwest's client, for calls through a proxy.
fn reqwest_client(extra_roots: Vec<CertificateDer<'static>>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if !extra_roots.is_empty() {
        let certs = extra_roots
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::usage(format!("--http-ca: {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| Error::usage(format!("--http: {e}")))
}

/// `uri` without its credentials, which go into `headers` as basic authentication
/// (unless an `Authorization` header was given).
fn with_credentials(uri: Uri, headers: &mut HeaderMap) -> std::result::Result<Uri, Failure> {
    use base64::Engine as _;
    let authority = uri.authority().expect("checked").as_str();
    let (userinfo, host) = authority.rsplit_once('@').expect("checked");
    if !headers.contains_key(AUTHORIZATION) {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
        let mut pair = decode(user);
        pair.push(b':');
        pair.extend(decode(password));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            .map_err(|e| Failure::Transport(format!("the URL's credentials: {e}")))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let host = host
        .parse()
        .map_err(|e| Failure::Transport(format!("not a URL: {e}")))?;
    let mut parts = uri.into_parts();
    parts.authority = Some(host);
    Uri::from_parts(parts).map_err(|e| Failure::Transport(format!("not a URL: {e}")))
}

/// Adds a chunk of an answer to `body`, refusing an answer over [`MAX_ANSWER`].
fn take_chunk(body: &mut Vec<u8>, chunk: &[u8]) -> std::result::Result<(), Failure> {
    if body.len() + chunk.len() > MAX_ANSWER {
        return Err(Failure::BadAnswer(format!(
            "the answer is over {} KiB",
            MAX_ANSWER >> 10
        )));
    }
    body.extend_from_slice(chunk);
    Ok(())
}

fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after)
}

/// A JSON text without its insignificant whitespace, keys in their order.
pub fn compact_json(text: &[u8]) -> std::result::Result<String, serde_json::Error> {
    if let Some(compact) = compact_already(text) {
        return Ok(compact.to_owned());
    }
    let mut out = Vec::with_capacity(text.len());
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut out))?;
    de.end()?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// The text, trimmed, when [`compact_json`]'s transcoding would give it back byte for
/// byte (a fifth of the cost: 1.9 k instructions a call through serde, callgrind): valid
/// JSON with no whitespace between its tokens, no escape in its strings (serde_json
/// rewrites `\u00e9` as `é`), no number but integers of at most 18 digits (it rewrites
/// `1e2` as `100.0` and reads larger integers as floats), not `-0` (`-0.0`), and fewer
/// containers than serde_json's nesting limit (128).
fn compact_already(text: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(text)
        .ok()?
        .trim_matches([' ', '\t', '\n', '\r']);
    tape::with_tape(text, |nodes| {
        let (mut tokens, mut containers) = (0, 0);
        for n in nodes.ok()? {
            tokens += n.own_bytes();
            match n.kind {
                Kind::String if n.escaped => return None,
                Kind::Number => {
                    let number = &text[n.start as usize..n.end as usize];
                    let digits = number.strip_prefix('-').unwrap_or(number);
                    if digits.len() > 18
                        || !digits.bytes().all(|c| c.is_ascii_digit())
                        || number == "-0"
                    {
                        return None;
                    }
                }
                Kind::Array | Kind::Object => {
                    containers += 1;
                    if containers >= 128 {
                        return None;
                    }
                }
                Kind::String | Kind::Null | Kind::True | Kind::False => {}
            }
        }
        (tokens == text.len()).then_some(text)
    })
}

fn reqwest_failure(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect(chain(&e))
    } else {
        Failure::Transport(chain(&e))
    }
}

/// An error with its causes ("error sending request: connection refused").
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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

    /// Answers taken as they are come out as serde's transcoding gives them, and those it
    /// would change are not taken as they are.
    #[test]
    fn answers_already_compact_are_what_the_transcoder_gives() {
        let transcoded = |t: &str| {
            let mut out = Vec::new();
            let mut de = serde_json::Deserializer::from_str(t);
            serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut out))
                .and_then(|()| de.end())
                .map(|()| String::from_utf8(out).unwrap())
        };
        let as_is = [
            r#"{"id":1,"name":"user 1","tags":["a","b"],"x":null,"t":true,"f":false}"#,
            "{\"id\":-12,\"n\":123456789012345678,\"o\":{},\"a\":[]}\n",
            " [1,\"é\",\"a/b\",\"\u{7f}\"] ",
            "0",
            r#"{"a":1,"a":2}"#,
            r#""just a string""#,
        ];
        for t in as_is {
            assert!(compact_already(t.as_bytes()).is_some(), "{t}");
            assert_eq!(
                compact_json(t.as_bytes()).unwrap(),
                transcoded(t).unwrap(),
                "{t}"
            );
        }
        let deep = "[".repeat(128) + &"]".repeat(128);
        let changed = [
            r#"{"a": 1}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":1.50}"#,
            r#"{"a":1e2}"#,
            r#"{"a":-0}"#,
            r#"{"a":1234567890123456789012}"#,
            r#"{"a":1,"a":2"#, // not JSON
            deep.as_str(),
        ];
        for t in changed {
            assert!(compact_already(t.as_bytes()).is_none(), "{t}");
            assert_eq!(compact_json(t.as_bytes()).ok(), transcoded(t).ok(), "{t}");
        }
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
