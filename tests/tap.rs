//! `GET /tap` (#28): the events passing a point of a running `pipeline` or command,
//! sampled and limited, and a tap client that stops reading cut off without holding the
//! run up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::pipeline::{free_port, get};
use crate::util::*;

/// The lines of `GET /tap?{query}` until the response ends, read on a thread; returns
/// once the response has started (the listener is in place).
fn tap(port: u16, query: &str) -> std::thread::JoinHandle<Vec<String>> {
    let r = crate::ingest_http::agent()
        .get(&format!("http://127.0.0.1:{port}/tap?{query}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.into_body();
    std::thread::spawn(move || {
        BufReader::new(body.into_reader())
            .lines()
            .map(Result::unwrap)
            .collect()
    })
}

fn serving(dir: &Dir, port: u16, text: &str) -> std::process::Child {
    crate::counts::serving_pipeline(dir, port, &[], text)
}

/// Writes `text` to `child`'s stdin (then closes it) and reads its stdout, both on threads
/// of their own, so that neither pipe can stall the other; the handle gives the stdout.
fn feed(child: &mut std::process::Child, text: String) -> std::thread::JoinHandle<String> {
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
    std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        feeder.join().unwrap();
        s
    })
}

fn wait_for_endpoint(port: u16) {
    crate::pipeline::eventually("the endpoint", || get(port, "/health").is_some());
}

/// A running `pipeline 'validate | enrich'`: `after=validate` shows validated events before
/// enrich touched them, limited; `after=enrich` shows them enriched, sampled; an unknown
/// point is a 404 naming the points; stdout is the whole run either way.
#[test]
fn tap_shows_the_events_after_a_stage_sampled_and_limited() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 40_000, &["--bad", "0.1"]);
    let input = dir.read("ev.ndjson");
    let port = free_port();
    let mut child = serving(
        &dir,
        port,
        "validate --require id,type --type amount=number --dead-letter dl.ndjson \
         | enrich --set tapped=true",
    );
    wait_for_endpoint(port);
    let (code, body) = get(port, "/tap?after=persist").unwrap();
    assert_eq!(code, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no tap point after=persist");
    assert_eq!(
        body["points"],
        serde_json::json!(["reader", "validate", "enrich"])
    );
    assert_eq!(get(port, "/tap?after=enrich&sample=2").unwrap().0, 400);

    let validated = tap(port, "after=validate&limit=100");
    let sampled = tap(port, "after=enrich&sample=0.1");
    let stdout = feed(&mut child, input).join().unwrap();
    assert!(child.wait().unwrap().success());
    let out: Vec<serde_json::Value> = values(&stdout);
    let passed: std::collections::BTreeSet<String> =
        out.iter().map(|e| e["id"].to_string()).collect();

    let validated = values(&validated.join().unwrap().join("\n"));
    assert_eq!(validated.len(), 100, "the limit");
    for e in &validated {
        assert!(
            passed.contains(&e["id"].to_string()),
            "only what validate passed"
        );
        assert!(e.get("tapped").is_none(), "before enrich: {e}");
    }
    // The first 100 of validate's output, in order.
    let first: Vec<&serde_json::Value> = out.iter().take(100).map(|e| &e["id"]).collect();
    assert_eq!(
        validated.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
        first
    );

    let sampled = values(&sampled.join().unwrap().join("\n"));
    let share = sampled.len() as f64 / out.len() as f64;
    assert!(
        (0.07..0.13).contains(&share),
        "{} of {}",
        sampled.len(),
        out.len()
    );
    for e in &sampled {
        assert_eq!(e["tapped"], true);
        assert!(passed.contains(&e["id"].to_string()));
    }
}

/// A tap client that connects and never reads: the run goes on at its pace and ends with
/// every event out; the client is cut off, logged and counted.
#[test]
fn a_tap_client_that_stops_reading_is_cut_off_and_the_run_goes_on() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 200_000, &[]);
    let port = free_port();
    let mut child = serving(&dir, port, "validate --require id | enrich --set x=1");
    wait_for_endpoint(port);
    let mut stuck = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stuck,
        "GET /tap?after=validate HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    // The listener is in place once the response has begun.
    let mut head = [0u8; 12];
    stuck.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let reader = feed(&mut child, dir.read("ev.ndjson"));
    // Scraped while the run is still going (the endpoint goes with the process).
    crate::pipeline::eventually("the tap client cut off", || {
        get(port, "/metrics").is_some_and(|(_, m)| m.contains("ndpipe_tap_cut_total 1"))
    });
    let out = reader.join().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert_eq!(out.lines().count(), 200_000);
    assert!(
        stderr.contains("reads slower than the pipeline runs: cut off"),
        "{stderr}"
    );
    drop(stuck);
}

/// The shell form serves taps too: `validate --metrics-listen` after its reader (its
/// input, bad lines and all) and after itself (its stdout).
#[test]
fn a_shell_command_serves_its_tap_points() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 20_000, &["--bad", "0.2"]);
    let port = free_port();
    let mut child = Command::new(bin("validate"))
        .args(["--require", "id,type", "--type", "amount=number"])
        .args(["--dead-letter", "dl.ndjson"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_endpoint(port);
    let input = tap(port, "after=reader");
    let output = tap(port, "after=validate");
    let stdout = feed(&mut child, dir.read("ev.ndjson")).join().unwrap();
    assert!(child.wait().unwrap().success());
    let (input, output) = (input.join().unwrap(), output.join().unwrap());
    assert_eq!(input, dir.read("ev.ndjson").lines().collect::<Vec<_>>());
    assert_eq!(output, stdout.lines().collect::<Vec<_>>());
    assert!(output.len() < input.len());
}
