//! `enrich --http`: lookups in a real HTTP service, started by each test on 127.0.0.1:0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::util::*;

/// A test service. Paths:
/// - `/users/{id}`: `{"id":…,"name":"user …"}` (the id percent-decoded), after `delay_ms`.
/// - `/status/{code}/{key}?fails=N`: `code` for the first N calls of `key`, then as
///   `/users/{key}`; a 429 or 503 says `Retry-After: 1`.
/// - `/echo`: the request's body, as JSON, under `got`, and its Authorization header.
/// - `/slots/{id}`: 32 slots of 20 ms each; calls beyond 32 queue for one.
/// - `/redirect/{key}`: 302 to `/users/{key}`.
///
/// While `hang` is set, every call waits forever (until the client gives up).
pub struct Service {
    pub port: u16,
    pub s: Arc<Seen>,
}

#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    pub out: AtomicUsize,
    pub most_out: AtomicUsize,
    pub hang: AtomicBool,
    pub delay_ms: AtomicU64,
    /// Each call's path and query, and when it came.
    pub log: Mutex<Vec<(Instant, String)>>,
    by_key: Mutex<HashMap<String, u32>>,
    slots: Slots,
}

/// `/slots/`' 32 slots.
struct Slots(tokio::sync::Semaphore);

impl Default for Slots {
    fn default() -> Slots {
        Slots(tokio::sync::Semaphore::new(32))
    }
}

impl Service {
    pub fn start() -> Service {
        let seen = Arc::new(Seen::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Service {
            port: port_ready(port),
            s: seen,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn calls(&self) -> usize {
        self.s.calls.load(Ordering::SeqCst)
    }
}

fn port_ready(port: u16) -> u16 {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return port;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the test service did not start");
}

struct Out<'a>(&'a Seen);

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.0.out.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(
    State(s): State<Arc<Seen>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let out = s.out.fetch_add(1, Ordering::SeqCst) + 1;
    let _out = Out(&s);
    s.most_out.fetch_max(out, Ordering::SeqCst);
    let path = uri.path().to_owned();
    let shown = uri.path_and_query().map_or(path.clone(), |p| p.to_string());
    s.log.lock().unwrap().push((Instant::now(), shown));
    if s.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let json = |code: StatusCode, body: String| {
        (code, [("content-type", "application/json")], body).into_response()
    };
    let user = |id: &str| {
        let id = percent_decode(id);
        json(
            StatusCode::OK,
            serde_json::json!({"id": id, "name": format!("user {id}")}).to_string(),
        )
    };
    match segs.as_slice() {
        ["users", id] => {
            let delay = s.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            user(id)
        }
        ["status", code, key] => {
            let fails: u32 = uri
                .query()
                .and_then(|q| q.strip_prefix("fails="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            let seen = {
                let mut by_key = s.by_key.lock().unwrap();
                let n = by_key.entry(key.to_string()).or_default();
                *n += 1;
                *n
            };
            if seen > fails {
                return user(key);
            }
            let code = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            let mut r = json(
                code,
                format!("{{\"error\":\"told to answer {}\"}}", code.as_u16()),
            );
            if matches!(code.as_u16(), 429 | 503) {
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
            }
            r
        }
        ["echo"] => {
            let got: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            json(
                StatusCode::OK,
                // Pretty-printed, keys out of order: enrich compacts it, order kept.
                format!(
                    "{{\n  \"z\": 1,\n  \"method\": \"{method}\",\n  \"got\": {got},\n  \"auth\": \"{auth}\"\n}}\n"
                ),
            )
        }
        ["redirect", key] => {
            let mut r = json(StatusCode::FOUND, "{}".into());
            let to = format!("/users/{key}").parse().unwrap();
            r.headers_mut().insert("location", to);
            r
        }
        ["slots", id] => {
            let _slot = s.slots.0.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            user(id)
        }
        _ => json(StatusCode::NOT_FOUND, "{}".into()),
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

/// `enrich ARGS` with its stdin and stdout piped, stderr kept.
pub(crate) fn spawn_enrich(dir: &Dir, args: &[&str]) -> Child {
    std::process::Command::new(bin("enrich"))
        .args(args)
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The dead letters' kinds and reasons.
pub(crate) fn dead_letters(dir: &Dir, name: &str) -> Vec<(String, String)> {
    values(&dir.read(name))
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn answers_are_set_in_input_order_with_64_calls_out_and_fields_percent_encoded() {
    let dir = Dir::new();
    let service = Service::start();
    service.s.delay_ms.store(5, Ordering::SeqCst);
    // Names needing encoding: a space, a slash, a question mark, non-ASCII.
    let input: String = (0..2000)
        .map(|i| format!("{{\"n\":{i}, \"who\":\"u {i}/?é\"}}\n"))
        .collect();
    let url = service.url("/users/{who}");
    let o = dir
        .cmd("enrich")
        .args(["--http", &url, "--into", "user", "--concurrency", "64"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let stdout = out(&o);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2000);
    for (i, line) in lines.iter().enumerate() {
        // The event's own bytes kept (the space after the comma too), the answer added.
        let expected = format!(
            "{{\"n\":{i}, \"who\":\"u {i}/?é\",\"user\":{{\"id\":\"u {i}/?é\",\"name\":\"user u {i}/?é\"}}}}"
        );
        assert_eq!(*line, expected);
    }
    assert_eq!(
        service.s.most_out.load(Ordering::SeqCst),
        64,
        "64 calls at once"
    );
    assert_eq!(service.calls(), 2000);
    let first = service.s.log.lock().unwrap()[0].1.clone();
    assert!(first.starts_with("/users/u%20"), "{first}");
    assert!(first.contains("%2F%3F%C3%A9"), "{first}");
}

#[test]
fn a_post_body_template_headers_from_the_environment_and_a_selected_part() {
    let dir = Dir::new();
    let service = Service::start();
    let url = service.url("/echo");
    let o = dir
        .cmd("enrich")
        .env("SVC_TOKEN", "t0ken")
        .args([
            "--http",
            &url,
            "--http-method",
            "POST",
            "--http-body",
            r#"{"ids": [{id}], "who": {user}}"#,
            "--header",
            "Authorization: Bearer $SVC_TOKEN",
            "--into",
            "x.echo",
        ])
        .write_stdin("{\"id\":7,\"user\":{\"a\":\"b\"}}\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "{\"id\":7,\"user\":{\"a\":\"b\"},\"x\":{\"echo\":{\"z\":1,\"method\":\"POST\",\"got\":{\"ids\":[7],\"who\":{\"a\":\"b\"}},\"auth\":\"Bearer t0ken\"}}}\n"
    );
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &url,
            "--http-method",
            "POST",
            "--http-body",
            "{\"k\":{id}}",
        ])
        .args(["--http-select", "got.k", "--into", "k2"])
        .write_stdin("{\"id\":\"a\"}\n{\"nope\":1}\n")
        .args(["--dead-letter", "dl.ndjson"])
        .output()
        .unwrap();
    assert_eq!(out(&o), "{\"id\":\"a\",\"k2\":\"a\"}\n");
    assert_eq!(
        dead_letters(&dir, "dl.ndjson"),
        [(
            "missing_field".to_owned(),
            "no field id for the lookup".to_owned()
        )]
    );
}

/// Credentials in the URL go as basic authentication; a redirect is a failure, not
/// followed; a URL the calls cannot use is refused at the start; a proxy the environment
/// names is used, except for hosts in NO_PROXY.
#[test]
fn url_credentials_redirects_bad_urls_and_a_proxy_from_the_environment() {
    let dir = Dir::new();
    let service = Service::start();
    let with_credentials = format!("http://u%40x:p%20w@127.0.0.1:{}/echo", service.port);
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &with_credentials,
            "--into",
            "x",
            "--http-select",
            "auth",
        ])
        .write_stdin("{\"id\":1}\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // base64("u@x:p w")
    assert_eq!(out(&o), "{\"id\":1,\"x\":\"Basic dUB4OnAgdw==\"}\n");

    let redirect = service.url("/redirect/{id}");
    let before = service.calls();
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &redirect,
            "--into",
            "x",
            "--dead-letter",
            "dl.ndjson",
        ])
        .write_stdin("{\"id\":1}\n")
        .output()
        .unwrap();
    assert_eq!(out(&o), "");
    let dl = dead_letters(&dir, "dl.ndjson");
    assert!(
        dl.len() == 1 && dl[0].0 == "enrich_http" && dl[0].1.contains("302 Found"),
        "{dl:?}"
    );
    assert_eq!(service.calls() - before, 1, "the redirect is not followed");

    let o = dir
        .cmd("enrich")
        .args(["--http", "http://127.0.0.1/a b/{id}", "--into", "x"])
        .write_stdin("{\"id\":1}\n")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    assert!(err(&o).contains("not a URL"), "{}", err(&o));

    // The proxy is a second service: it answers what it is asked for (absolute-form
    // requests), so an answer from the closed port 1 came through it.
    let proxy = Service::start();
    let unreachable = "http://127.0.0.1:1/users/{id}";
    let lookup = |no_proxy: &str| {
        dir.cmd("enrich")
            .env("HTTP_PROXY", proxy.url(""))
            .env("NO_PROXY", no_proxy)
            .args(["--http", unreachable, "--into", "u", "--retries", "0"])
            .args(["--dead-letter", "proxy-dl.ndjson"])
            .write_stdin("{\"id\":5}\n")
            .output()
            .unwrap()
    };
    let o = lookup("");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "{\"id\":5,\"u\":{\"id\":\"5\",\"name\":\"user 5\"}}\n"
    );
    assert_eq!(proxy.calls(), 1);
    let o = lookup("127.0.0.1");
    assert_eq!(out(&o), "");
    let dl = dead_letters(&dir, "proxy-dl.ndjson");
    assert!(dl[0].1.contains("no connection"), "{dl:?}");
    assert_eq!(proxy.calls(), 1, "NO_PROXY is honoured");
    let explain = |proxy_url: &str| {
        let o = dir
            .cmd("pipeline")
            .env("HTTP_PROXY", proxy_url)
            .args([
                "--explain",
                &format!("enrich --http '{unreachable}' --into u"),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        out(&o) + &err(&o)
    };
    assert!(explain(&proxy.url("")).contains("through the proxy the environment names"));
    assert!(!explain("").contains("proxy"));
}

#[test]
fn a_hanging_service_times_out_opens_the_breaker_and_one_probe_closes_it() {
    let dir = Dir::new();
    let service = Service::start();
    service.s.hang.store(true, Ordering::SeqCst);
    let url = service.url("/users/{id}");
    let mut child = spawn_enrich(
        &dir,
        &[
            "--http",
            &url,
            "--into",
            "user",
            "--concurrency",
            "1",
            "--timeout",
            "200ms",
            "--retries",
            "0",
            "--breaker-failures",
            "5",
            "--breaker-cooldown",
            "2s",
            "--dead-letter",
            "dl.ndjson",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    for id in 0..10 {
        writeln!(stdin, "{{\"id\":{id}}}").unwrap();
    }
    stdin.flush().unwrap();
    wait_for("10 dead letters", || {
        std::fs::read_to_string(dir.path("dl.ndjson")).is_ok_and(|t| t.lines().count() == 10)
    });
    let dl = dead_letters(&dir, "dl.ndjson");
    assert!(
        dl[..5]
            .iter()
            .all(|(k, r)| k == "enrich_http" && r.ends_with("timed out after 200ms")),
        "{dl:?}"
    );
    assert!(
        dl[5..]
            .iter()
            .all(|(k, r)| k == "circuit_open" && r.contains("is open")),
        "{dl:?}"
    );
    assert_eq!(service.calls(), 5, "no call while open");

    // The service recovers; within the cooldown the breaker stays open.
    service.s.hang.store(false, Ordering::SeqCst);
    writeln!(stdin, "{{\"id\":10}}").unwrap();
    stdin.flush().unwrap();
    wait_for("11 dead letters", || {
        dir.read("dl.ndjson").lines().count() == 11
    });
    assert_eq!(service.calls(), 5);
    std::thread::sleep(Duration::from_millis(2100));
    for id in 11..16 {
        writeln!(stdin, "{{\"id\":{id}}}").unwrap();
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let ids: Vec<i64> = values(&out(&o))
        .iter()
        .map(|v| v["user"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [11, 12, 13, 14, 15], "the probe's event and the rest");
    assert_eq!(service.calls(), 10, "one probe, then the rest");
    for said in ["is open: no calls", "is half-open", "is closed again"] {
        assert_eq!(stderr.matches(said).count(), 1, "{said} once in: {stderr}");
    }
    assert!(stderr.contains("1 breaker openings"), "{stderr}");
}

#[test]
fn server_errors_and_429_are_retried_honouring_retry_after_and_other_4xx_are_not() {
    let dir = Dir::new();
    let service = Service::start();
    let url = service.url("/status/{code}/{key}?fails={fails}");
    let input = "{\"code\":503,\"key\":\"a\",\"fails\":2}\n{\"code\":429,\"key\":\"b\",\"fails\":1}\n{\"code\":400,\"key\":\"c\",\"fails\":1}\n{\"code\":500,\"key\":\"d\",\"fails\":9}\n";
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &url,
            "--into",
            "u",
            "--retries",
            "2",
            "--concurrency",
            "1",
        ])
        .args(["--dead-letter", "dl.ndjson"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let got: Vec<String> = values(&out(&o))
        .iter()
        .map(|v| v["u"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["a", "b"]);
    let dl = dead_letters(&dir, "dl.ndjson");
    assert_eq!(dl.len(), 2, "{dl:?}");
    assert!(
        dl[0].0 == "enrich_http" && dl[0].1.contains("400 Bad Request"),
        "{dl:?}"
    );
    assert!(dl[1].1.contains("500 Internal Server Error"), "{dl:?}");
    let log = service.s.log.lock().unwrap().clone();
    let calls = |key: &str| -> Vec<Instant> {
        log.iter()
            .filter(|(_, p)| p.contains(&format!("/{key}?")))
            .map(|(t, _)| *t)
            .collect()
    };
    assert_eq!(calls("a").len(), 3, "503 twice, then answered");
    assert_eq!(calls("c").len(), 1, "a 400 is not retried");
    assert_eq!(calls("d").len(), 3, "--retries 2");
    let b = calls("b");
    assert_eq!(b.len(), 2);
    assert!(
        b[1] - b[0] >= Duration::from_millis(950),
        "Retry-After: 1 honoured: {:?}",
        b[1] - b[0]
    );
}

#[test]
fn on_failure_pass_marks_the_event_and_block_waits_for_the_service() {
    let dir = Dir::new();
    let service = Service::start();
    let url = service.url("/status/500/{k}?fails=99");
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &url,
            "--into",
            "u",
            "--retries",
            "0",
            "--on-failure",
            "pass",
        ])
        .write_stdin("{\"k\":\"x\",\"_meta\":{\"line\":1}}\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let v = &values(&out(&o))[0];
    assert!(v.get("u").is_none(), "{v}");
    assert_eq!(v["_meta"]["line"], 1);
    let why = v["_meta"]["enrich_failed"].as_str().unwrap();
    assert!(
        why.contains("/status/500/x") && why.contains("500 Internal Server Error"),
        "{why}"
    );

    // block: the service hangs for a while; no event is lost or dead, all wait.
    service.s.hang.store(true, Ordering::SeqCst);
    let url = service.url("/users/{id}");
    let mut child = spawn_enrich(
        &dir,
        &[
            "--http",
            &url,
            "--into",
            "u",
            "--timeout",
            "100ms",
            "--on-failure",
            "block",
            "--breaker-cooldown",
            "300ms",
            "--dead-letter",
            "block-dl.ndjson",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    for id in 0..20 {
        writeln!(stdin, "{{\"id\":{id}}}").unwrap();
    }
    drop(stdin);
    wait_for("the breaker to open", || service.calls() >= 5);
    std::thread::sleep(Duration::from_millis(1500));
    service.s.hang.store(false, Ordering::SeqCst);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let ids: Vec<String> = values(&out(&o))
        .iter()
        .map(|v| v["u"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(!dir.path("block-dl.ndjson").exists() || dir.read("block-dl.ndjson").is_empty());
}

#[test]
fn a_hot_key_is_called_once_kept_answers_expire_and_404_maps_to_null() {
    let dir = Dir::new();
    let service = Service::start();
    service.s.delay_ms.store(100, Ordering::SeqCst);
    let url = service.url("/users/{u}");
    // Single flight: 100 events of one user at once, nothing kept: one call.
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &url,
            "--into",
            "x",
            "--concurrency",
            "64",
            "--progress",
        ])
        .write_stdin("{\"u\":\"hot\"}\n".repeat(100))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 100);
    assert_eq!(service.calls(), 1, "single flight");
    assert!(err(&o).contains("99 shared calls"), "{}", err(&o));

    // A cache of 100: 1,000 events over 10 users, 10 calls; the rest hits or shared.
    service.s.delay_ms.store(0, Ordering::SeqCst);
    let input: String = (0..1000)
        .map(|i| format!("{{\"u\":\"u{}\"}}\n", i % 10))
        .collect();
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &url,
            "--into",
            "x",
            "--cache-size",
            "100",
            "--progress",
        ])
        .write_stdin(input)
        .output()
        .unwrap();
    assert_eq!(service.calls(), 11);
    let summary = err(&o);
    let said = |word: &str| -> u64 {
        summary
            .split(" · ")
            .next()
            .unwrap()
            .split(", ")
            .find_map(|p| {
                p.strip_suffix(word)
                    .map(|n| n.trim().replace(',', "").parse().unwrap())
            })
            .unwrap_or(0)
    };
    assert_eq!(
        said(" cache hits") + said(" shared calls"),
        990,
        "{summary}"
    );
    assert_eq!(said(" calls answered"), 10, "{summary}");

    // TTL: kept 300 ms; a second wave after 500 ms calls again.
    let mut child = spawn_enrich(
        &dir,
        &[
            "--http",
            &url,
            "--into",
            "x",
            "--cache-size",
            "10",
            "--cache-ttl",
            "300ms",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let before = service.calls();
    let mut line = String::new();
    for _ in 0..3 {
        writeln!(stdin, "{{\"u\":\"t\"}}").unwrap();
        stdin.flush().unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
    }
    assert_eq!(service.calls() - before, 1, "kept");
    std::thread::sleep(Duration::from_millis(500));
    writeln!(stdin, "{{\"u\":\"t\"}}").unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(service.calls() - before, 2, "expired");
    child.wait().unwrap();

    // 404: a dead letter by default, null when told.
    let missing = service.url("/nowhere/{u}");
    let o = dir
        .cmd("enrich")
        .args(["--http", &missing, "--into", "x", "--not-found", "null"])
        .write_stdin("{\"u\":1}\n")
        .output()
        .unwrap();
    assert_eq!(out(&o), "{\"u\":1,\"x\":null}\n");
    let o = dir
        .cmd("enrich")
        .args([
            "--http",
            &missing,
            "--into",
            "x",
            "--dead-letter",
            "nf.ndjson",
        ])
        .write_stdin("{\"u\":1}\n")
        .output()
        .unwrap();
    assert_eq!(out(&o), "");
    let dl = dead_letters(&dir, "nf.ndjson");
    assert!(
        dl[0].0 == "enrich_http" && dl[0].1.ends_with("404 Not Found"),
        "{dl:?}"
    );
}

#[test]
fn auto_concurrency_settles_near_what_the_service_bears() {
    let dir = Dir::new();
    let service = Service::start();
    let url = service.url("/slots/{n}");
    // 32 slots of 20 ms: 1,600 calls/s at most; 8,000 events take 5 s or more.
    let input: String = (0..8000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let o = dir
        .cmd("enrich")
        .args(["--http", &url, "--into", "x", "--progress"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 8000);
    let summary = err(&o);
    let settled: u64 = summary
        .split("settled at ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no settled concurrency in {summary}"));
    assert!(
        (24..=40).contains(&settled),
        "settled at {settled} (32 ± 25 %): {summary}"
    );
}

#[test]
fn metrics_and_ready_name_an_open_breaker_and_explain_hides_credentials() {
    let dir = Dir::new();
    let service = Service::start();
    service.s.hang.store(true, Ordering::SeqCst);
    let port = crate::pipeline::free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = service.url("/users/{id}");
    let mut child = spawn_enrich(
        &dir,
        &[
            "--http",
            &url,
            "--into",
            "u",
            "--timeout",
            "100ms",
            "--retries",
            "0",
            "--breaker-failures",
            "3",
            "--breaker-cooldown",
            "1h",
            "--metrics-listen",
            &listen,
            "--dead-letter",
            "dl.ndjson",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    wait_for("/ready", || {
        crate::pipeline::get(port, "/ready").is_some_and(|(c, _)| c == 200)
    });
    for id in 0..5 {
        writeln!(stdin, "{{\"id\":{id}}}").unwrap();
    }
    stdin.flush().unwrap();
    wait_for("5 dead letters", || {
        std::fs::read_to_string(dir.path("dl.ndjson")).is_ok_and(|t| t.lines().count() == 5)
    });
    let (code, body) = crate::pipeline::get(port, "/ready").unwrap();
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["failing"], serde_json::json!(["breaker"]));
    let reason = ready["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("127.0.0.1:{}", service.port)),
        "{reason}"
    );
    let (_, metrics) = crate::pipeline::get(port, "/metrics").unwrap();
    for line in [
        "ndpipe_enrich_calls_total{component=\"enrich\",outcome=\"timeout\"} 3".to_owned(),
        "ndpipe_enrich_short_circuited_total{component=\"enrich\"} 2".to_owned(),
        "ndpipe_enrich_breaker_opened_total{component=\"enrich\"} 1".to_owned(),
        "component_rejected_events_total{component=\"enrich\"} 5".to_owned(),
        format!(
            "ndpipe_enrich_breaker_state{{component=\"enrich\",service=\"127.0.0.1:{}\"}} 2",
            service.port
        ),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("ndpipe_enrich_call_duration_seconds_bucket{component=\"enrich\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("ndpipe_enrich_concurrency{component=\"enrich\"}"),
        "{metrics}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());

    let o = dir
        .cmd("pipeline")
        .env("TOKEN", "hunter2")
        .args(["--explain", &format!(
            "enrich --http '{}?api_key=k3y&q={{id}}' --into u --header 'Authorization: Bearer $TOKEN' --cache-size 100"
            , service.url("/users/{id}"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let explained = out(&o) + &err(&o);
    assert!(
        explained.contains("header authorization: ***"),
        "{explained}"
    );
    assert!(explained.contains("api_key=***"), "{explained}");
    assert!(
        !explained.contains("hunter2") && !explained.contains("k3y"),
        "{explained}"
    );
    assert!(explained.contains("concurrency auto"), "{explained}");
}

#[test]
fn in_a_pipeline_lookups_feed_persist() {
    let dir = Dir::new();
    let service = Service::start();
    let input: String = (0..500)
        .map(|i| format!("{{\"id\":\"e{i}\",\"user\":\"u{}\"}}\n", i % 50))
        .collect();
    dir.create("ev.ndjson", input);
    let text = format!(
        "validate --require id,user | enrich --http '{}' --into profile --cache-size 1000 | persist --key id --table t --create-table --sqlite out.db",
        service.url("/users/{user}")
    );
    let o = dir
        .cmd("pipeline")
        .args([&text, "ev.ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let rows = crate::persist::sqlite_rows(&dir.path("out.db"), "t");
    assert_eq!(rows.len(), 500);
    let names: std::collections::BTreeSet<&str> = rows
        .values()
        .map(|v| v["profile"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 50, "{names:?}");
    assert_eq!(
        rows["e7"]["profile"],
        serde_json::json!({"id": "u7", "name": "user u7"})
    );
    assert!(service.calls() <= 500 && service.calls() >= 50);
}

/// HTTPS with rustls, trusting the service's own certificate with --http-ca. The service
/// is our ingest-http with TLS and a token: each lookup POSTs the event's id, ingest-http
/// prints it, and the part of its answer selected (how many it accepted) is set.
#[test]
fn https_with_a_ca_file_and_a_token_from_the_environment() {
    let dir = Dir::new();
    let o = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir.root())
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", err(&o));
    let received = std::fs::File::create(dir.path("received.ndjson")).unwrap();
    let server = crate::ingest_http::Server::start(
        &dir,
        &[
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--auth-token",
            "t0k",
        ],
        Stdio::from(received),
    );
    let url = server.events_url();
    assert!(url.starts_with("https://"), "{url}");
    let lookup = |extra: &[&str]| {
        dir.cmd("enrich")
            .env("TOKEN", "t0k")
            .args(["--http", &url, "--http-method", "POST"])
            .args(["--http-body", r#"{"id": {id}, "from": "enrich"}"#])
            .args(["--header", "Authorization: Bearer $TOKEN", "--retries", "0"])
            .args(["--into", "ack", "--http-select", "accepted"])
            .args(extra)
            .write_stdin("{\"id\":\"a\"}\n{\"id\":\"b\"}\n")
            .output()
            .unwrap()
    };
    let o = lookup(&["--http-ca", "cert.pem"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "{\"id\":\"a\",\"ack\":1}\n{\"id\":\"b\",\"ack\":1}\n"
    );
    // Without it the certificate is not trusted: no lookup succeeds, none is received.
    let o = lookup(&["--dead-letter", "dl.ndjson"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "");
    let dl = dead_letters(&dir, "dl.ndjson");
    assert!(
        dl.len() == 2
            && dl
                .iter()
                .all(|(k, r)| k == "enrich_http" && r.contains("certificate")),
        "{dl:?}"
    );
    let (code, e) = server.stop();
    assert_eq!(code, 0, "{e}");
    let got = values(&dir.read("received.ndjson"));
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(got.iter().all(|v| v["from"] == "enrich"));
}

/// `--rate-limit 10/s`: a burst of one second's calls, then one every 100 ms, however
/// many calls the concurrency limit would let out.
#[test]
fn the_rate_limit_spaces_calls_out() {
    let dir = Dir::new();
    let service = Service::start();
    let input: String = (0..30).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let o = dir
        .cmd("enrich")
        .args(["--http", &service.url("/users/{id}"), "--into", "u"])
        .args(["--rate-limit", "10/s", "--concurrency", "64"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(values(&out(&o)).len(), 30);
    let log = service.s.log.lock().unwrap().clone();
    let first = log[0].0;
    let span = log.last().unwrap().0 - first;
    assert!(
        span >= Duration::from_millis(1800) && span < Duration::from_secs(4),
        "30 calls at 10/s after a burst of 10 took {span:?}"
    );
    let early = log
        .iter()
        .filter(|(t, _)| *t - first < Duration::from_millis(500))
        .count();
    assert!(
        (10..=15).contains(&early),
        "{early} calls in the first 500 ms"
    );
}

/// How [`RawService`] ends its connections.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ending {
    /// Kept open between calls (HTTP/1.1's default).
    KeepAlive,
    /// Each answer says `Connection: close`, and the connection ends after it.
    SaysClose,
    /// Kept open, then closed without a word after 50 ms idle (a keep-alive timeout).
    ClosesWhenIdle,
}

/// A service on bare sockets, to see connections: each call's request head (the
/// connection it came on first), answered `{"id":N}` for `/users/N`.
struct RawService {
    port: u16,
    heads: Arc<Mutex<Vec<(usize, String)>>>,
}

impl RawService {
    fn start(ending: Ending) -> RawService {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let seen = heads.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let (Ok(conn), seen) = (conn, seen.clone()) else {
                    continue;
                };
                std::thread::spawn(move || serve_raw(n, conn, ending, &seen));
            }
        });
        RawService { port, heads }
    }
}

fn serve_raw(
    n: usize,
    conn: std::net::TcpStream,
    ending: Ending,
    seen: &Mutex<Vec<(usize, String)>>,
) {
    if ending == Ending::ClosesWhenIdle {
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
    }
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return, // the client left, or idle too long
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let id = head
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/users/"))
            .unwrap_or("0")
            .to_owned();
        seen.lock().unwrap().push((n, head));
        let body = format!("{{\"id\":{id}}}");
        let close = if ending == Ending::SaysClose {
            "Connection: close\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() || ending == Ending::SaysClose {
            return;
        }
    }
}

/// Calls one after another share a connection while the service keeps it; one the service
/// closed (saying so, or silently after an idle while) is not sent on again: with no
/// retries allowed, every event still gets its answer. Each request names its host.
#[test]
fn connections_are_kept_between_calls_and_not_reused_once_the_service_closes_them() {
    let dir = Dir::new();
    for (ending, connections) in [
        (Ending::KeepAlive, 1),
        (Ending::SaysClose, 5),
        (Ending::ClosesWhenIdle, 5),
    ] {
        let service = RawService::start(ending);
        let url = format!("http://127.0.0.1:{}/users/{{user_id}}", service.port);
        let o = sh(
            &dir,
            &format!(
                "for i in 1 2 3 4 5; do echo \"{{\\\"user_id\\\":$i}}\"; sleep 0.2; done \
                 | {enrich} --http '{url}' --into user --concurrency 1 --retries 0",
                enrich = bin("enrich")
            ),
        );
        assert!(o.status.success(), "{ending:?}: {}", err(&o));
        let got: Vec<_> = values(&out(&o))
            .iter()
            .map(|e| e["user"]["id"].clone())
            .collect();
        assert_eq!(
            got,
            (1..=5).map(serde_json::Value::from).collect::<Vec<_>>(),
            "{ending:?}: {}",
            err(&o)
        );
        let heads = service.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 5, "{ending:?}: one call an event");
        let mut used: Vec<usize> = heads.iter().map(|(n, _)| *n).collect();
        used.dedup();
        assert_eq!(
            used.len(),
            connections,
            "{ending:?}: connections used {used:?}"
        );
        for (i, (_, head)) in heads.iter().enumerate() {
            assert!(
                head.starts_with(&format!("GET /users/{} HTTP/1.1\r\n", i + 1)),
                "{head}"
            );
            let host = format!("host: 127.0.0.1:{}\r\n", service.port);
            assert!(head.to_ascii_lowercase().contains(&host), "{head}");
        }
    }
}
