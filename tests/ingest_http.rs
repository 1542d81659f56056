//! `ingest-http`: a real HTTP client against the real server on 127.0.0.1:0 — body forms,
//! status codes, back-pressure with a stalled stdout, `--ack written`, shutdown under load.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command as Std, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A running server; its stderr is collected in the background.
pub(crate) struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `ingest-http --listen 127.0.0.1:0 ARGS` with stdout going to `stdout`.
    pub(crate) fn start(dir: &Dir, args: &[&str], stdout: Stdio) -> Server {
        let mut child = Std::new(bin("ingest-http"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir.root())
            .env_remove("NDPIPE_LOG")
            .env_remove("NDPIPE_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("ingest-http exited before listening")
                .unwrap();
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_owned();
            }
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(|l| l.ok()) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server { child, url, stderr }
    }

    pub(crate) fn events_url(&self) -> String {
        format!("{}/events", self.url)
    }

    fn signal(&self, sig: &str) {
        let ok = Std::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(mut self) -> (i32, String) {
        self.signal("-TERM");
        let code = wait_for(&mut self.child, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        (code, err)
    }

    /// Peak RSS so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Server {
    /// A failed test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("ingest-http did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// One answer: status, Retry-After present, body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: bool,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{}: {e}", self.body))
    }
}

pub(crate) fn post(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("the request gets an answer");
    Reply {
        status: resp.status().as_u16(),
        retry_after: resp.headers().contains_key("retry-after"),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
pub(crate) const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn body_forms_partial_acceptance_and_status_codes() {
    let dir = Dir::new();
    let out = std::fs::File::create(dir.path("out.ndjson")).unwrap();
    let server = Server::start(
        &dir,
        &["--auth-token", "s3cret", "--dead-letter", "dead.ndjson"],
        Stdio::from(out),
    );
    let url = server.events_url();
    let a = agent();
    let auth = ("Authorization", "Bearer s3cret");

    // One object, an array with one bad element, NDJSON with one bad line, gzip.
    let r = post(&a, &url, &[JSON, auth], br#"{"id":"one"}"#);
    assert_eq!(
        (r.status, r.json()["accepted"].as_u64()),
        (202, Some(1)),
        "{}",
        r.body
    );
    let r = post(&a, &url, &[JSON, auth], br#"[{"id":"a0"}, 7, {"id":"a2"}]"#);
    assert_eq!(r.status, 202);
    assert_eq!(
        r.json(),
        serde_json::json!({"accepted":2,"rejected":1,"errors":[{"index":1,"reason":"not a JSON object: found number"}]})
    );
    let r = post(
        &a,
        &url,
        &[NDJSON, auth],
        b"{\"id\":\"n1\"}\n{oops\n\n{\"id\":\"n4\"}\r\n",
    );
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (202, Some(2)));
    assert_eq!(r.json()["errors"][0]["line"], 2);
    let r = post(
        &a,
        &url,
        &[NDJSON, auth, ("Content-Encoding", "gzip")],
        &gzip(b"{\"id\":\"g1\"}\n{\"id\":\"g2\"}\n"),
    );
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (202, Some(2)));

    // Nothing valid: 400, nothing queued.
    let r = post(&a, &url, &[NDJSON, auth], b"[1]\nnope\n");
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (400, Some(0)));
    let r = post(&a, &url, &[JSON, auth], b"{\"id\":");
    assert_eq!(r.status, 400);

    // Auth: none, wrong, right scheme with wrong token.
    for h in [None, Some("Bearer nope"), Some("Basic s3cret")] {
        let mut headers = vec![JSON];
        if let Some(v) = h {
            headers.push(("Authorization", v));
        }
        assert_eq!(
            post(&a, &url, &headers, b"{\"id\":\"x\"}").status,
            401,
            "{h:?}"
        );
    }
    // Method, media type, encoding.
    let mut resp = a.get(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let _ = resp.body_mut().read_to_string();
    assert_eq!(
        post(&a, &url, &[("Content-Type", "text/plain"), auth], b"{}").status,
        415
    );
    assert_eq!(
        post(&a, &url, &[JSON, auth, ("Content-Encoding", "br")], b"{}").status,
        415
    );

    // A 9 MiB body is accepted (axum's own limit is 2 MB); 11 MiB is not.
    let line = format!("{{\"id\":\"big\",\"pad\":\"{}\"}}\n", "x".repeat(1000));
    let big: String = line.repeat(9 * 1024 * 1024 / line.len());
    let r = post(&a, &url, &[NDJSON, auth], big.as_bytes());
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted_big = r.json()["accepted"].as_u64().unwrap();
    let too_big = line.repeat(11 * 1024 * 1024 / line.len());
    assert_eq!(
        post(&a, &url, &[NDJSON, auth], too_big.as_bytes()).status,
        413
    );

    // A gzip bomb: under 1 MiB on the wire, 200 MiB inflated.
    let bomb = gzip(&vec![b' '; 200 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = post(
        &a,
        &url,
        &[NDJSON, auth, ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(server.peak_rss_kib() < 256 * 1024);

    let (code, err) = server.stop();
    assert_eq!(code, 0, "{err}");
    let events = values(&dir.read("out.ndjson"));
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let expected_small = ["one", "a0", "a2", "n1", "n4", "g1", "g2"];
    assert_eq!(ids[..7], expected_small);
    assert_eq!(ids.len() as u64, 7 + accepted_big);
    let meta = &events[0]["_meta"];
    assert_eq!(meta["source"], "http");
    assert!(meta["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(meta["request_id"].is_string());
    assert!(meta["received_at"].as_str().unwrap().ends_with('Z'));
    // The events rejected from accepted requests are dead letters (a request refused
    // whole with 400 is the client's to fix).
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|d| d["stage"] == "ingest-http"));
    assert!(dead.iter().any(|d| d["raw"] == "{oops"));
}

#[test]
fn all_or_nothing_health_ready_and_metrics() {
    let dir = Dir::new();
    let out = std::fs::File::create(dir.path("out.ndjson")).unwrap();
    let server = Server::start(&dir, &["--all-or-nothing"], Stdio::from(out));
    let a = agent();
    let r = post(
        &a,
        &server.events_url(),
        &[NDJSON],
        b"{\"id\":1}\nbad\n{\"id\":3}\n",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["accepted"], 0);
    assert_eq!(r.json()["errors"][0]["line"], 2);
    let r = post(
        &a,
        &server.events_url(),
        &[NDJSON],
        b"{\"id\":1}\n{\"id\":3}\n",
    );
    assert_eq!(r.status, 202);
    for (path, want) in [("/health", 200), ("/ready", 200)] {
        let resp = a.get(format!("{}{path}", server.url)).call().unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
    }
    let mut resp = a.get(format!("{}/metrics", server.url)).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    for needle in [
        "ndpipe_http_requests_total{status=\"202\"} 1",
        "ndpipe_http_requests_total{status=\"400\"} 1",
        "ndpipe_http_events_accepted_total 2",
        "ndpipe_http_events_rejected_total 1",
        "ndpipe_http_hub_capacity_events 10000",
        "ndpipe_http_hub_depth_events",
        "ndpipe_http_request_duration_seconds_bucket",
        "ndpipe_http_events_lost_total 0",
        // The facade's counters every stage reports into.
        "component_received_events_total{component=\"ingest-http\"} 2",
        "component_rejected_events_total{component=\"ingest-http\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    let (code, err) = server.stop();
    // A refused request (400) is the client's to fix: no dead letters, exit 0.
    assert_eq!(code, 0, "{err}");
    assert_eq!(dir.read("out.ndjson").lines().count(), 2);
}

/// NDJSON body of `n` events with ids `{tag}-{i}`, each about `pad` bytes larger.
fn body(tag: &str, n: usize, pad: usize) -> Vec<u8> {
    let filler = "p".repeat(pad);
    let mut s = String::with_capacity(n * (pad + 40));
    for i in 0..n {
        s.push_str(&format!("{{\"id\":\"{tag}-{i}\",\"pad\":\"{filler}\"}}\n"));
    }
    s.into_bytes()
}

/// Reads event ids from the server's stdout until it closes.
fn read_ids(stdout: ChildStdout) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(&l.unwrap()).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    })
}

#[test]
fn back_pressure_503_bounded_memory_and_exactly_once() {
    let dir = Dir::new();
    let mut server = Server::start(&dir, &["--enqueue-timeout", "50ms"], Stdio::piped());
    // Nobody reads stdout yet: the pipe fills, then the queue.
    let stdout = server.child.stdout.take().unwrap();
    let url = server.events_url();
    let offered = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for t in 0..8 {
        let (url, offered, acked, refused) =
            (url.clone(), offered.clone(), acked.clone(), refused.clone());
        clients.push(std::thread::spawn(move || {
            let a = agent();
            let mut i = 0;
            while offered.load(Ordering::Relaxed) < 1 << 30 {
                let tag = format!("c{t}r{i}");
                let b = body(&tag, 2000, 450);
                offered.fetch_add(b.len() as u64, Ordering::Relaxed);
                let r = post(&a, &url, &[NDJSON], &b);
                match r.status {
                    202 => acked.lock().unwrap().push(tag),
                    503 => {
                        assert!(r.retry_after, "503 without Retry-After");
                        refused.lock().unwrap().push(tag);
                    }
                    s => panic!("unexpected {s}: {}", r.body),
                }
                i += 1;
            }
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    let rss = server.peak_rss_kib();
    assert!(rss <= 64 * 1024, "peak RSS {rss} KiB with 1 GiB offered");
    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(
        refused.len() > 100,
        "only {} requests refused",
        refused.len()
    );
    // /ready says the queue is full.
    let resp = agent().get(format!("{}/ready", server.url)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 503);

    // The reader resumes: every acknowledged event comes out once, no refused one does.
    let reader = read_ids(stdout);
    let (code, err) = server.stop();
    assert_eq!(code, 0, "{err}");
    let ids = reader.join().unwrap();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event came out twice");
    let tags: BTreeSet<String> = ids
        .iter()
        .map(|id| id.rsplit_once('-').unwrap().0.to_owned())
        .collect();
    let want: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(tags, want);
    assert_eq!(ids.len(), acked.len() * 2000);
    assert!(refused.iter().all(|t| !tags.contains(t)));
}

#[test]
fn ack_written_answers_only_once_written() {
    let dir = Dir::new();
    let mut server = Server::start(&dir, &["--ack", "written"], Stdio::piped());
    let stdout = server.child.stdout.take().unwrap();
    let url = server.events_url();
    // More than a pipe holds (the commands widen their stdout pipe to 1 MiB): stdout
    // stalls, so neither request can be answered.
    let answered = Arc::new(AtomicBool::new(false));
    let mut posts = Vec::new();
    for tag in ["big", "small"] {
        let (url, answered) = (url.clone(), answered.clone());
        let b = if tag == "big" {
            body(tag, 2000, 1200)
        } else {
            body(tag, 1, 0)
        };
        posts.push(std::thread::spawn(move || {
            let r = post(&agent(), &url, &[NDJSON], &b);
            answered.store(true, Ordering::SeqCst);
            r.status
        }));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !answered.load(Ordering::SeqCst),
        "answered before stdout was read"
    );
    let reader = read_ids(stdout);
    for p in posts {
        assert_eq!(p.join().unwrap(), 200);
    }
    let (code, err) = server.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(reader.join().unwrap().len(), 2001);
}

#[test]
fn shutdown_under_load_loses_no_acknowledged_event() {
    let dir = Dir::new();
    let mut server = Server::start(&dir, &[], Stdio::piped());
    let reader = read_ids(server.child.stdout.take().unwrap());
    let url = server.events_url();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for t in 0..4 {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let a = agent();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let tag = format!("c{t}r{i}");
                let mut req = a.post(&url).header("Content-Type", "application/x-ndjson");
                req = req.header("X-Request-Id", &tag);
                match req.send(&body(&tag, 50, 100)[..]) {
                    Ok(r) if r.status().as_u16() == 202 => acked.lock().unwrap().push(tag),
                    Ok(_) => {}
                    Err(_) => break, // The server has closed.
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    server.signal("-TERM");
    let code = wait_for(&mut server.child, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(code, 0, "{}", server.stderr.lock().unwrap());
    let ids = reader.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "load too light: {} requests", acked.len());
    let got: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got.len(), ids.len(), "an event came out twice");
    for tag in &acked {
        for i in 0..50 {
            assert!(
                got.contains(format!("{tag}-{i}").as_str()),
                "acknowledged {tag}-{i} lost"
            );
        }
    }
}

#[test]
fn tls_with_a_self_signed_certificate() {
    let dir = Dir::new();
    let o = Std::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.root())
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", err(&o));
    let file = std::fs::File::create(dir.path("out.ndjson")).unwrap();
    let server = Server::start(
        &dir,
        &["--tls-cert", "cert.pem", "--tls-key", "key.pem"],
        Stdio::from(file),
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let o = Std::new("curl")
        .args([
            "-sS",
            "--cacert",
            "cert.pem",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", "{\"id\":\"tls\"}", &server.events_url()])
        .current_dir(dir.root())
        .output()
        .expect("curl runs");
    assert_eq!(
        out(&o),
        "{\"accepted\":1,\"rejected\":0,\"errors\":[]}",
        "{}",
        err(&o)
    );
    let (code, e) = server.stop();
    assert_eq!(code, 0, "{e}");
    assert_eq!(values(&dir.read("out.ndjson"))[0]["id"], "tls");
}
