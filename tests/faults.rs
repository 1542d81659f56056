//! The standing fault suite: the promises of "nothing acknowledged is ever lost", held
//! under faults injected for real — a signal to a whole pipe's process group, a closed or
//! stalled stdout, a database stopped mid-run, kill -9 of either end of an exactly-once
//! pipe while files are written and rotated, a pipe signalled while enrich's lookups hang,
//! enrich's lookup database restarted. Every new source, stage or sink joins it.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as Std, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::persist::Cluster;
use crate::util::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child`, `limit` at most (then kills it and fails).
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} later");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(sig: &str, target: &str) {
    assert!(Std::new("kill")
        .args([sig, "--", target])
        .status()
        .unwrap()
        .success());
}

/// stderr of a finished child, read to the end.
fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// Stops the clients of [`post_until_stopped`]; the ids answered 2xx.
fn stop_posting(
    stop: &AtomicBool,
    clients: Vec<std::thread::JoinHandle<Vec<String>>>,
) -> Vec<String> {
    stop.store(true, Ordering::Relaxed);
    clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect()
}

/// POSTs NDJSON bodies of 50 events with unique ids from `clients` threads until `stop`,
/// or until the server refuses connections; returns the ids answered 2xx (202 once
/// queued, 200 with `--ack written`).
fn post_until_stopped(
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = crate::ingest_http::agent();
                let url = format!("http://127.0.0.1:{port}/events");
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..50).map(|i| format!("c{c}-{n}-{i}")).collect();
                    n += 1;
                    let body: String = ids
                        .iter()
                        .map(|id| format!("{{\"id\":\"{id}\",\"n\":{n}}}\n"))
                        .collect();
                    let Ok(resp) = agent
                        .post(&url)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                    else {
                        break; // refused: the server is gone
                    };
                    if resp.status().is_success() {
                        acked.extend(ids);
                    }
                }
                acked
            })
        })
        .collect()
}

/// The first finding: `ingest-http | validate | enrich | persist` in one process
/// group, eight clients posting, one `kill -TERM -- -PGID`. Every event answered 202 must
/// be stored, and every command must exit 0.
#[test]
fn sigterm_to_a_whole_pipe_keeps_every_acknowledged_event() {
    let dir = Dir::new();
    let pg = Pg::new("fault_pipe_term");
    let port = free_port();
    // The trap keeps bash itself alive until the pipe has ended (its children get the
    // default action back).
    let script = format!(
        "trap true TERM; set -o pipefail
         {http} -q --listen 127.0.0.1:{port} | {validate} -q --require id \
           | {enrich} -q --set stage='\"e\"' \
           | {persist} -q --database-url '{url}' --create-table --batch-size 500",
        http = bin("ingest-http"),
        validate = bin("validate"),
        enrich = bin("enrich"),
        persist = bin("persist"),
        url = pg.url(),
    );
    let mut pipe = Std::new("bash")
        .args(["-c", &script])
        .current_dir(dir.root())
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = post_until_stopped(port, 8, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    kill("-TERM", &format!("-{}", pipe.id()));
    let status = wait_exit(&mut pipe, Duration::from_secs(60));
    let acked = stop_posting(&stop, clients);
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut pipe));
    assert!(
        acked.len() >= 1_000,
        "only {} events acknowledged",
        acked.len()
    );
    let stored: HashSet<String> = pg
        .sql("SELECT key FROM events")
        .lines()
        .map(str::to_owned)
        .collect();
    let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events are not stored",
        acked.len()
    );
}

/// persist, reading a file into a database that is down, is signalled; the database comes
/// back. Everything it had taken is stored; it stops reading the file, says after which
/// line, and exits 143 (it did not reach the end of its input).
#[test]
fn persist_signalled_with_the_database_down_stores_everything_it_took() {
    let dir = Dir::new();
    let cluster = Cluster::new();
    let input = gen_events(&dir, "in.ndjson", 200_000, &[]);
    let mut persist = Std::new(bin("persist"))
        .args(["--database-url", &cluster.url(), "--create-table"])
        .args(["--batch-size", "500", "--linger-ms", "20"])
        .arg(&input)
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while cluster.count() < 5_000 {
        assert!(start.elapsed() < Duration::from_secs(60), "no rows in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.stop_immediate();
    std::thread::sleep(Duration::from_millis(700));
    kill("-TERM", &persist.id().to_string());
    std::thread::sleep(Duration::from_millis(700));
    cluster.start();
    let status = wait_exit(&mut persist, Duration::from_secs(60));
    let stderr = stderr_of(&mut persist);
    assert_eq!(status.code(), Some(143), "{stderr}");
    let after = stderr
        .split("stopped after line ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no 'stopped after line N': {stderr}"));
    assert!(after < 200_000, "{stderr}");
    let text = std::fs::read_to_string(&input).unwrap();
    let taken: HashSet<String> = values(&text.lines().take(after).collect::<Vec<_>>().join("\n"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cluster.count(), taken.len() as u64, "{stderr}");
}

/// `persist --emit | head -1`: the closed stdout must not stop the loading.
#[test]
fn persist_emit_into_head_still_loads_everything() {
    let dir = Dir::new();
    let pg = Pg::new("fault_emit_head");
    gen_events(&dir, "in.ndjson", 100_000, &["--dups", "0.1"]);
    let o = sh(
        &dir,
        &format!(
            "{} -q --database-url '{}' --create-table --emit in.ndjson | head -1",
            bin("persist"),
            pg.url()
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 1);
    let expected = last_by_id(&dir.read("in.ndjson")).len();
    assert_eq!(pg.sql("SELECT count(*) FROM events"), expected.to_string());
}

/// ingest-http whose downstream is gone (the next command died at start): it stops
/// accepting, says how many acknowledged events it could not write, and exits 74.
#[test]
fn ingest_http_whose_stdout_closes_says_what_it_lost() {
    let dir = Dir::new();
    let port = free_port();
    let mut server = Std::new(bin("ingest-http"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(server.stdout.take()); // the reading end closes: as when `| persist` dies
    wait_listening(port);
    let agent = crate::ingest_http::agent();
    let body: String = (0..100).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..50 {
        match agent
            .post(&format!("http://127.0.0.1:{port}/events"))
            .header("Content-Type", "application/x-ndjson")
            .send(body.as_bytes())
        {
            Ok(r) if r.status().as_u16() == 202 => accepted += 1,
            Ok(r) if r.status().as_u16() == 503 => refused += 1,
            Ok(r) => panic!("unexpected status {}", r.status()),
            Err(_) => break,
        }
    }
    assert!(accepted >= 1);
    let status = wait_exit(&mut server, Duration::from_secs(30));
    let stderr = stderr_of(&mut server);
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("acknowledged events are lost: stdout was closed"),
        "{stderr}"
    );
    let _ = refused;
}

/// ingest-http with a stdout nobody reads, SIGTERM: --shutdown-timeout bounds the whole
/// shutdown; what was queued is counted as lost and the exit code is 74.
#[test]
fn ingest_http_shutdown_timeout_bounds_a_stalled_stdout() {
    let dir = Dir::new();
    let (mut server, port) = http_with_stalled_stdout(
        &dir,
        &["--shutdown-timeout", "2s", "--enqueue-timeout", "100ms"],
    );
    let agent = crate::ingest_http::agent();
    let body: String = (0..1000)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(100)))
        .collect();
    let mut full = false;
    for _ in 0..200 {
        let r = agent
            .post(&format!("http://127.0.0.1:{port}/events"))
            .header("Content-Type", "application/x-ndjson")
            .send(body.as_bytes())
            .unwrap();
        if r.status().as_u16() == 503 {
            full = true;
            break;
        }
    }
    assert!(full, "the queue never filled up");
    let start = Instant::now();
    kill("-TERM", &server.id().to_string());
    let status = wait_exit(&mut server, Duration::from_secs(20));
    let stderr = stderr_of(&mut server);
    assert!(start.elapsed() < Duration::from_secs(10), "{stderr}");
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("acknowledged events are lost"), "{stderr}");
    drop(server.stdout.take());
}

/// Ctrl-C on a backfill from a file: what was read is handled, the exit code is 130 and
/// stderr says where to resume; a pipe read to its end exits 0.
#[test]
fn an_interrupted_backfill_says_where_it_stopped() {
    let dir = Dir::new();
    gen_events(&dir, "in.ndjson", 300_000, &[]);
    let mut validate = Std::new(bin("validate"))
        .args(["--require", "id", "in.ndjson"])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little of its output, then interrupt it (stdout left unread: it stalls).
    let mut first = vec![0u8; 1 << 16];
    std::io::Read::read_exact(validate.stdout.as_mut().unwrap(), &mut first).unwrap();
    kill("-INT", &validate.id().to_string());
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    let mut stdout = validate.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut rest);
        sink.lock().unwrap().extend(rest);
    });
    let status = wait_exit(&mut validate, Duration::from_secs(30));
    reader.join().unwrap();
    let stderr = stderr_of(&mut validate);
    assert_eq!(status.code(), Some(130), "{stderr}");
    let after: usize = stderr
        .split("stopped after line ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(stderr.contains("tail -n +"), "{stderr}");
    // Every line up to it was written, none after.
    let written = first.len() + output.lock().unwrap().len();
    let text = dir.read("in.ndjson");
    let upto: usize = text.lines().take(after).map(|l| l.len() + 1).sum();
    assert_eq!(written, upto, "{stderr}");
}

/// Peak RSS of a process so far, in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// ingest-http with a stdout that is read into a file, on a free port.
fn start_http(dir: &Dir, args: &[&str]) -> (Child, u16) {
    let out = std::fs::File::create(dir.path("out.ndjson")).unwrap();
    http_onto(dir, args, out.into())
}

/// ingest-http on a free port whose stdout is a pipe kept open and never read.
fn http_with_stalled_stdout(dir: &Dir, args: &[&str]) -> (Child, u16) {
    http_onto(dir, args, Stdio::piped())
}

/// ingest-http on a free port with `args`, writing to `stdout`, once it listens.
fn http_onto(dir: &Dir, args: &[&str], stdout: Stdio) -> (Child, u16) {
    let port = free_port();
    let child = Std::new(bin("ingest-http"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    (child, port)
}

/// A raw HTTP/1.1 request head on a new connection.
fn raw_request(port: u16, head: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// The status line's code of what a raw connection got back (waits up to `limit`).
fn raw_status(s: &mut std::net::TcpStream, limit: Duration) -> Option<u16> {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Three connections announcing 8 MiB bodies and going quiet, and two endless chunked
/// bodies trickling a byte at a time, must not make other POSTs answer 503; the slow ones
/// get 408 once under --min-body-rate.
#[test]
fn idle_and_trickling_bodies_do_not_block_other_posts() {
    let dir = Dir::new();
    let (mut server, port) = start_http(&dir, &["--dead-letter", "dead.ndjson"]);
    let mut idle: Vec<_> = (0..3)
        .map(|_| {
            raw_request(
                port,
                "POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n\
                 Content-Length: 8388608\r\n\r\n{\"id\":",
            )
        })
        .collect();
    let mut trickle: Vec<_> = (0..2)
        .map(|_| {
            raw_request(
                port,
                "POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n\
                 Transfer-Encoding: chunked\r\n\r\n",
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut conns: Vec<_> = trickle.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            use std::io::Write;
            while !stop.load(Ordering::Relaxed) {
                for c in &mut conns {
                    let _ = c.write_all(b"1\r\n \r\n");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let agent = crate::ingest_http::agent();
    let url = format!("http://127.0.0.1:{port}/events");
    for i in 0..20 {
        let r = crate::ingest_http::post(
            &agent,
            &url,
            &[crate::ingest_http::NDJSON],
            format!("{{\"id\":{i}}}\n").as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // The idle and trickling ones are cut off after the 5 s grace.
    for s in idle.iter_mut().chain(trickle.iter_mut()) {
        assert_eq!(raw_status(s, Duration::from_secs(20)), Some(408));
    }
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    kill("-TERM", &server.id().to_string());
    let status = wait_exit(&mut server, Duration::from_secs(30));
    assert!(status.success(), "{}", stderr_of(&mut server));
    assert_eq!(dir.read("out.ndjson").lines().count(), 20);
}

/// Memory stays bounded when bodies are small on the wire and large in memory: gzip
/// bodies inflating to 60 MiB while the queue is full, and 10 MB bodies of 3.4 M tiny
/// events. Both are refused (413) without ever being held whole.
#[test]
fn bodies_that_grow_in_memory_stay_within_the_budgets() {
    use std::io::Write;
    let dir = Dir::new();
    let (mut server, port) = start_http(&dir, &[]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let line = b"{\"id\":\"x\",\"pad\":\"                                        \"}\n";
    for _ in 0..(60 << 20) / line.len() {
        enc.write_all(line).unwrap();
    }
    let gz = Arc::new(enc.finish().unwrap());
    assert!(gz.len() < 1 << 20, "{}", gz.len());
    let tiny = Arc::new(b"{}\n".repeat(3_400_000));
    let url = format!("http://127.0.0.1:{port}/events");
    let clients: Vec<_> = (0..14)
        .map(|i| {
            let (gz, tiny, url) = (gz.clone(), tiny.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = crate::ingest_http::agent();
                let (body, gzip): (&[u8], bool) = if i < 12 { (&gz, true) } else { (&tiny, false) };
                let mut req = agent
                    .post(&url)
                    .header("Content-Type", "application/x-ndjson");
                if gzip {
                    req = req.header("Content-Encoding", "gzip");
                }
                req.send(body).map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak = peak_rss_mib(server.id());
    for s in &statuses {
        assert!([413, 503].contains(s), "{statuses:?}");
    }
    // 24 MiB in flight, 16 MiB of queue, the program itself: far from 728 MB or 1.5 GB.
    assert!(peak <= 128, "peak RSS {peak} MiB");
    kill("-TERM", &server.id().to_string());
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
}

/// A small tmpfs mounted on a folder of the test, unmounted at the end: a disk that fills
/// up for real. Needs root (CI runs as root; elsewhere the test says so and passes only
/// outside CI).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Dir, size: &str) -> Option<SmallDisk> {
        let path = dir.path("small");
        std::fs::create_dir_all(&path).unwrap();
        let ok = Std::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs (the full-disk tests need root)"
            );
            eprintln!("skipped outside CI: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Std::new("umount").arg(&self.path).status();
    }
}

/// ingest-http with its dead-letter file on a disk that fills up: a request whose
/// malformed events cannot be kept gets 500 and nothing of it is queued; no dead letter
/// is torn; the exit code is 74.
#[test]
fn dead_letters_on_a_full_disk_fail_the_request_and_are_never_torn() {
    let dir = Dir::new();
    let Some(disk) = SmallDisk::mount(&dir, "64k") else {
        return;
    };
    std::fs::write(disk.path.join("filler"), vec![b'x'; 56 * 1024]).unwrap();
    let dead = disk.path.join("dead.ndjson");
    let (mut server, port) = start_http(&dir, &["--dead-letter", dead.to_str().unwrap()]);
    let agent = crate::ingest_http::agent();
    let url = format!("http://127.0.0.1:{port}/events");
    let (mut accepted, mut failed) = (0, 0);
    for i in 0..40 {
        let body = format!("{{\"id\":{i}}}\n{{not json {}\n", "y".repeat(700));
        let r =
            crate::ingest_http::post(&agent, &url, &[crate::ingest_http::NDJSON], body.as_bytes());
        match r.status {
            202 => accepted += 1,
            500 => failed += 1,
            s => panic!("status {s}: {}", r.body),
        }
    }
    assert!(
        accepted > 0 && failed > 0,
        "{accepted} accepted, {failed} failed"
    );
    kill("-TERM", &server.id().to_string());
    let status = wait_exit(&mut server, Duration::from_secs(30));
    let stderr = stderr_of(&mut server);
    assert_eq!(status.code(), Some(74), "{stderr}");
    let text = std::fs::read_to_string(&dead).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn record");
    assert_eq!(
        values(&text).len(),
        accepted,
        "one dead letter per accepted request"
    );
    assert_eq!(
        dir.read("out.ndjson").lines().count(),
        accepted,
        "refused requests queue nothing"
    );
}

/// A request refused whole (413: more events than the queue holds) is the client's to
/// resend: it leaves no dead letters.
#[test]
fn refused_requests_leave_no_dead_letters() {
    let dir = Dir::new();
    let (mut server, port) = start_http(
        &dir,
        &["--queue-capacity", "2", "--dead-letter", "dead.ndjson"],
    );
    let agent = crate::ingest_http::agent();
    let url = format!("http://127.0.0.1:{port}/events");
    for _ in 0..3 {
        let r = crate::ingest_http::post(
            &agent,
            &url,
            &[crate::ingest_http::NDJSON],
            b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}\nnope\n",
        );
        assert_eq!(r.status, 413, "{}", r.body);
    }
    let r = crate::ingest_http::post(
        &agent,
        &url,
        &[crate::ingest_http::NDJSON],
        b"{\"id\":1}\nnope\n",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    kill("-TERM", &server.id().to_string());
    assert!(wait_exit(&mut server, Duration::from_secs(30)).success());
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 1, "only the accepted request's reject");
    assert_eq!(
        (dead[0]["kind"].as_str(), dead[0]["line"].as_u64()),
        (Some("malformed_json"), Some(2))
    );
}

/// `pipeline` with an HTTP source answering only once the sink has committed
/// (`--ack written`), signalled as a whole process group (`sig`: SIGTERM drains, SIGKILL
/// ends it at once). Either way, every event answered 2xx is in the table.
fn pipeline_http_to_postgres_keeps_every_answered_event(sig: &str, name: &str) {
    let dir = Dir::new();
    let pg = Pg::new(name);
    let port = free_port();
    let text = format!(
        "ingest-http --listen 127.0.0.1:{port} --ack written \
         | validate --require id | enrich --set stage='\"e\"' \
         | persist --database-url '{url}' --create-table --batch-size 500",
        url = pg.url(),
    );
    let mut pipe = Std::new(bin("pipeline"))
        .args(["-q", &text])
        .current_dir(dir.root())
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(port);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = post_until_stopped(port, 8, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    kill(sig, &format!("-{}", pipe.id()));
    let status = wait_exit(&mut pipe, Duration::from_secs(60));
    let acked = stop_posting(&stop, clients);
    if sig == "-TERM" {
        assert!(status.success(), "{status:?}: {}", stderr_of(&mut pipe));
    }
    assert_all_stored(&pg, &acked);
}

/// Asserts that at least 1,000 events were answered and every one of them is in the
/// table `events` of `pg`; the keys stored.
fn assert_all_stored(pg: &Pg, acked: &[String]) -> HashSet<String> {
    assert!(acked.len() >= 1_000, "only {} events answered", acked.len());
    let stored: HashSet<String> = pg
        .sql("SELECT key FROM events")
        .lines()
        .map(str::to_owned)
        .collect();
    let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} answered events are not stored",
        acked.len()
    );
    stored
}

#[test]
fn pipeline_sigterm_keeps_every_event_answered_written() {
    pipeline_http_to_postgres_keeps_every_answered_event("-TERM", "fault_pl_term");
}

#[test]
fn pipeline_sigkill_keeps_every_event_answered_written() {
    pipeline_http_to_postgres_keeps_every_answered_event("-KILL", "fault_pl_kill");
}

/// `pipeline` loading a file into a database that is stopped mid-run and started again:
/// every event is stored once it is back, and the run ends 0.
#[test]
fn pipeline_survives_a_database_restart_mid_run() {
    let dir = Dir::new();
    let cluster = Cluster::new();
    let input = gen_events(&dir, "events.ndjson", 100_000, &["--dups", "0.1"]);
    let expected = last_by_id(&std::fs::read_to_string(&input).unwrap());
    let text = format!(
        "validate --require id | enrich --set stage='\"e\"' \
         | persist --database-url '{}' --create-table --batch-size 1000",
        cluster.url()
    );
    let mut run = Std::new(bin("pipeline"))
        .args(["-q", "--channel-capacity", "2000", &text, "events.ndjson"])
        .current_dir(dir.root())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while cluster.count() < 5_000 {
        assert!(start.elapsed() < Duration::from_secs(60), "no rows stored");
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.stop_immediate();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start();
    let status = wait_exit(&mut run, Duration::from_secs(120));
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut run));
    assert_eq!(cluster.count(), expected.len() as u64);
}

/// A fan-in whose file input breaks mid-stream (a corrupt gzip member) while clients
/// POST (#24: the run exited 74 at once, and 9,800 events answered 202 were not stored):
/// input stops everywhere, everything the HTTP source acknowledged is stored, and the
/// exit is 74 naming the gzip.
#[test]
fn a_failing_input_in_a_fan_in_keeps_what_the_other_source_acknowledged() {
    use std::io::Write;
    let dir = Dir::new();
    let pg = Pg::new("fault_fan_in");
    let lines: String = (0..1_000)
        .map(|i| format!("{{\"id\":\"file-{i}\"}}\n"))
        .collect();
    dir.create("part.ndjson", &lines);
    assert!(sh(&dir, "gzip -c part.ndjson > part.gz && mkfifo input.gz")
        .status
        .success());
    let port = free_port();
    let text = format!(
        "ingest-http --listen 127.0.0.1:{port} \
         | validate --require id \
         | persist --database-url '{url}' --create-table --batch-size 500",
        url = pg.url(),
    );
    let mut pipe = Std::new(bin("pipeline"))
        .args(["-q", &text, "input.gz"])
        .current_dir(dir.root())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The input is a FIFO: one good gzip member now, a broken one while clients post.
    let mut input = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path("input.gz"))
        .unwrap();
    input
        .write_all(&std::fs::read(dir.path("part.gz")).unwrap())
        .unwrap();
    wait_listening(port);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = post_until_stopped(port, 8, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    input.write_all(b"this is no gzip member").unwrap();
    drop(input);
    let status = wait_exit(&mut pipe, Duration::from_secs(60));
    let acked = stop_posting(&stop, clients);
    let stderr = stderr_of(&mut pipe);
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("input.gz"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let stored = assert_all_stored(&pg, &acked);
    let from_file = stored.iter().filter(|k| k.starts_with("file-")).count();
    assert_eq!(from_file, 1_000, "the good member's events are stored too");
}

/// Live reload with the pipe file replaced by a FIFO (#24: reading it blocked a runtime
/// thread for good, and later saves and SIGHUPs were ignored without a word): refused
/// with a line, and the next save of a regular file applies.
#[test]
fn a_pipe_file_replaced_by_a_fifo_is_refused_and_reload_goes_on() {
    use crate::pipeline::{file_pipeline_serving, hup, send_lines};
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 4_000, &[]);
    let input = dir.read("ev.ndjson");
    let lines: Vec<&str> = input.lines().collect();
    dir.create("etl.pipe", "validate --workers 1 --require id\n");
    let (mut pipe, mut stdin) = file_pipeline_serving(&dir, free_port());
    send_lines(&mut stdin, &lines[..2_000]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(dir.path("etl.pipe")).unwrap();
    assert!(sh(&dir, "mkfifo etl.pipe").status.success());
    hup(&pipe);
    std::thread::sleep(Duration::from_secs(1));
    // Back to a regular file: the change (seen, and signalled) applies.
    std::fs::remove_file(dir.path("etl.pipe")).unwrap();
    dir.create("etl.pipe", "validate --workers 3 --require id\n");
    hup(&pipe);
    std::thread::sleep(Duration::from_secs(1));
    send_lines(&mut stdin, &lines[2_000..]);
    drop(stdin);
    let status = wait_exit(&mut pipe, Duration::from_secs(30));
    let stderr = stderr_of(&mut pipe);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("reload refused: --file etl.pipe: is not a regular file"),
        "{stderr}"
    );
    assert!(stderr.contains("validate: --workers 1 → 3"), "{stderr}");
    assert_eq!(dir.read("out.ndjson"), input);
}

/// `--ack written`: events still unwritten when the shutdown timeout ends were never
/// acknowledged, and the message says so (#24: it said "acknowledged events are lost").
#[test]
fn ack_written_unwritten_at_the_timeout_are_said_not_acknowledged() {
    let dir = Dir::new();
    let (mut server, port) =
        http_with_stalled_stdout(&dir, &["--ack", "written", "--shutdown-timeout", "2s"]);
    let body: String = (0..1000)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    // Clients wait for their answers; the pipe to stdout fills and stalls.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let agent = crate::ingest_http::agent();
                let mut answers = Vec::new();
                for _ in 0..20 {
                    // 0: cut off without an answer.
                    let status = agent
                        .post(&format!("http://127.0.0.1:{port}/events"))
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                        .map_or(0, |r| r.status().as_u16());
                    answers.push(status);
                    if status != 200 {
                        break;
                    }
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    kill("-TERM", &server.id().to_string());
    let status = wait_exit(&mut server, Duration::from_secs(20));
    let stderr = stderr_of(&mut server);
    let answers: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(!stderr.contains("acknowledged events are lost"), "{stderr}");
    assert!(
        stderr.contains(
            "events could not be written: they were not written within the shutdown timeout of 2s"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("their requests were not acknowledged"),
        "{stderr}"
    );
    // The requests those events came in were not answered 200.
    assert!(answers.iter().any(|&s| s != 200), "{answers:?}");
    drop(server.stdout.take());
}

/// Files written and rotated while an exactly-once reader runs: `logs/app.ndjson` gets
/// the events of `text` appended in chunks, and is renamed to `app.ndjson.K` (still
/// matched by the glob `logs/app.ndjson*`) every `rotate_every` lines, as logrotate's
/// `create` mode does. Returns when everything is written.
fn write_rotating(dir: &std::path::Path, text: &str, rotate_every: usize) {
    use std::io::Write;
    let live = dir.join("logs/app.ndjson");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&live)
            .unwrap()
    };
    let mut w = open();
    let lines: Vec<&str> = text.lines().collect();
    for (i, chunk) in lines.chunks(300).enumerate() {
        let mut bytes = chunk.join("\n");
        bytes.push('\n');
        w.write_all(bytes.as_bytes()).unwrap();
        if (i + 1) * 300 % rotate_every == 0 {
            let k = (i + 1) * 300 / rotate_every;
            std::fs::rename(&live, dir.join(format!("logs/app.ndjson.{k}"))).unwrap();
            w = open();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The exactly-once file pipe as a bash script in the test's directory, with its pids
/// and logs under `{name}`: `ingest-file --follow --positions-from | tee -a emitted |
/// validate | persist --version-field meta.seq`, or the same as one `pipeline` (its pid
/// as both). `idle` ends it once the files are quiet that long.
fn file_pipe(pg: &Pg, name: &str, one_process: bool, idle: Option<&str>) -> String {
    let url = pg.url();
    let idle = idle.map_or(String::new(), |i| format!("--exit-when-idle {i}"));
    let ingest = format!(
        "ingest-file --follow {idle} --rotate-wait 1s --positions-from '{url}' \
         --positions-name eo 'logs/app.ndjson*'"
    );
    let persist = format!(
        "persist --database-url '{url}' --create-table --version-field meta.seq \
         --batch-size 2000 --linger-ms 20"
    );
    if one_process {
        return format!(
            "{pipeline} -q \"{ingest} | tee {name}emitted.ndjson | validate --require id | {persist}\" \
               2>> {name}persist.log &
             echo $! > {name}ingest.pid; echo $! > {name}persist.pid
             wait $! || {{ tail -n 5 {name}persist.log >&2; false; }}",
            pipeline = bin("pipeline"),
        );
    }
    format!(
        "rm -f {name}fifo; mkfifo {name}fifo
         {bins}/{ingest} > {name}fifo 2>> {name}ingest.log &
         echo $! > {name}ingest.pid; ingest=$!
         tee -a {name}emitted.ndjson < {name}fifo | {bins}/validate -q --require id \
           | {bins}/{persist} 2>> {name}persist.log &
         echo $! > {name}persist.pid; persist=$!
         wait $ingest; a=$?; wait $persist; b=$?
         [ $a = 0 ] && [ $b = 0 ] || {{ tail -n 5 {name}ingest.log {name}persist.log >&2; false; }}",
        bins = std::path::Path::new(&bin("persist")).parent().unwrap().display(),
    )
}

/// Committed next offsets of the file reader `eo`, by file identity.
fn file_positions(pg: &Pg) -> std::collections::BTreeMap<String, u64> {
    if pg.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ndpipe_offsets' AND table_schema = current_schema()") != "1" {
        return Default::default();
    }
    pg.sql("SELECT topic, greatest(next_offset, 0) FROM ndpipe_offsets WHERE \"group\" = 'file:eo'")
        .lines()
        .map(|l| {
            let (id, o) = l.split_once('\t').unwrap();
            (id.to_owned(), o.parse().unwrap())
        })
        .collect()
}

/// The offset of the first line of each file in an emitted NDJSON text (whose last line
/// may be torn by a kill).
fn first_file_offsets(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut first = std::collections::BTreeMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let m = &v["_meta"];
        first
            .entry(m["file_id"].as_str().unwrap().to_owned())
            .or_insert(m["offset"].as_u64().unwrap());
    }
    first
}

/// The sizes of the files under `logs/` that hold something, by inode (an empty file
/// has no position: there is nothing to identify it by yet).
fn log_sizes(dir: &Dir) -> std::collections::BTreeMap<u64, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.path("logs"))
        .unwrap()
        .map(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.ino(), m.len())
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// Files appended and rotated while the file pipe runs; `victim` ("ingest", "persist",
/// or the one `pipeline`) SIGKILLed twice; then a last run until the files are quiet.
/// Every run resumes where the committed rows end; at the end rows = distinct keys, each
/// holding its last event, and each file's stored position is its size.
fn files_exactly_once_with_kills(victim: &str, one_process: bool, name: &str) {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    let pg = Pg::new(name);
    let n = 60_000;
    let text =
        std::fs::read_to_string(gen_events(&dir, "all.ndjson", n, &["--dups", "0.05"])).unwrap();
    let writer = {
        let (root, text) = (dir.root().to_owned(), text.clone());
        std::thread::spawn(move || write_rotating(&root, &text, 15_000))
    };
    for (i, at_least) in [8_000, 20_000].into_iter().enumerate() {
        let run = format!("run{i}-");
        let resume = file_positions(&pg);
        let mut child = Std::new("bash")
            .args(["-c", &file_pipe(&pg, &run, one_process, None)])
            .current_dir(dir.root())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::ingest_kafka::wait_until(
            &format!("{at_least} rows"),
            Duration::from_secs(120),
            || crate::ingest_kafka::rows(&pg) >= at_least,
        );
        let pid = dir.read(&format!("{run}{victim}.pid"));
        let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        std::thread::sleep(Duration::from_millis(500));
        for other in ["ingest", "persist"] {
            let pid = dir.read(&format!("{run}{other}.pid"));
            let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        }
        child.wait().unwrap();
        for (id, first) in first_file_offsets(&dir.read(&format!("{run}emitted.ndjson"))) {
            assert_eq!(
                first,
                resume.get(&id).copied().unwrap_or(0),
                "run {i}, file {id}"
            );
        }
    }
    writer.join().unwrap();
    let resume = file_positions(&pg);
    let o = Std::new("bash")
        .args(["-c", &file_pipe(&pg, "last-", one_process, Some("2s"))])
        .current_dir(dir.root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    for (id, first) in first_file_offsets(&dir.read("last-emitted.ndjson")) {
        assert_eq!(
            first,
            resume.get(&id).copied().unwrap_or(0),
            "last run, file {id}"
        );
    }
    let expected = last_by_id(&text);
    assert_eq!(crate::ingest_kafka::rows(&pg), expected.len() as u64);
    assert!(
        stored_payloads(&pg) == expected,
        "stored rows differ from the last event per key"
    );
    // Each file's committed position is its size: every line is in, none is pending.
    let sizes = log_sizes(&dir);
    let stored = file_positions(&pg);
    assert_eq!(stored.len(), sizes.len(), "{stored:?}");
    for (id, next) in stored {
        let ino: u64 = id.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(Some(&next), sizes.get(&ino), "file {id}");
    }
}

#[test]
fn files_exactly_once_when_ingest_file_is_killed_twice() {
    files_exactly_once_with_kills("ingest", false, "file_eo_ingest");
}

#[test]
fn files_exactly_once_when_persist_is_killed_twice() {
    files_exactly_once_with_kills("persist", false, "file_eo_persist");
}

#[test]
fn files_exactly_once_when_one_pipeline_is_killed_twice() {
    files_exactly_once_with_kills("persist", true, "file_eo_pipeline");
}

/// SIGTERM to the whole pipe's process group while a writer appends: every command exits
/// 0, and every line before each file's stored position is in the table.
#[test]
fn sigterm_to_a_file_pipe_keeps_every_line_up_to_the_stored_positions() {
    use std::os::unix::fs::MetadataExt;
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    let pg = Pg::new("file_sigterm");
    let text = std::fs::read_to_string(gen_events(&dir, "all.ndjson", 40_000, &[])).unwrap();
    let writer = {
        let (root, text) = (dir.root().to_owned(), text.clone());
        std::thread::spawn(move || write_rotating(&root, &text, 12_000))
    };
    // The trap keeps bash itself alive until the pipe has ended (its children get the
    // default action back).
    let script = format!(
        "trap true TERM; set -o pipefail
         {ingest} --follow --positions-from '{url}' --positions-name eo 'logs/app.ndjson*' \
           | {validate} -q --require id \
           | {persist} -q --database-url '{url}' --create-table --version-field meta.seq \
               --batch-size 500",
        ingest = bin("ingest-file"),
        validate = bin("validate"),
        persist = bin("persist"),
        url = pg.url(),
    );
    let mut pipe = Std::new("bash")
        .args(["-c", &script])
        .current_dir(dir.root())
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::ingest_kafka::wait_until("5,000 rows", Duration::from_secs(120), || {
        crate::ingest_kafka::rows(&pg) >= 5_000
    });
    kill("-TERM", &format!("-{}", pipe.id()));
    let status = wait_exit(&mut pipe, Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut pipe));
    writer.join().unwrap();
    let stored = file_positions(&pg);
    let in_table: HashSet<String> = pg
        .sql("SELECT key FROM events")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!stored.is_empty());
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path("logs")).unwrap() {
        let path = entry.unwrap().path();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let Some((_, &next)) = stored
            .iter()
            .find(|(id, _)| id.split(':').nth(1) == Some(ino.to_string().as_str()))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let before = std::str::from_utf8(&bytes[..next as usize]).unwrap();
        assert!(
            before.is_empty() || before.ends_with('\n'),
            "a position inside a line"
        );
        for v in values(before) {
            let id = v["id"].as_str().unwrap();
            assert!(
                in_table.contains(id),
                "{id} of {} is before its position",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5_000, "{checked}");
}

/// `validate | enrich --http | persist` while the service never answers: 64 lookups hang,
/// then one SIGTERM reaches the whole pipe. The calls out time out, the breaker opens, no
/// call is retried, and every event enrich read is stored or a dead letter: none dropped,
/// none twice, exactly the lines validate says it passed on.
#[test]
fn sigterm_while_64_lookups_hang_drops_nothing_read() {
    let dir = Dir::new();
    let service = crate::enrich_http::Service::start();
    service.s.hang.store(true, Ordering::SeqCst);
    // More than the pipe holds between validate's reading and enrich's calls (batches of
    // 256 KiB in channels of four): validate is still reading when the signal comes.
    let input: String = (0..1_000_000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"user\":{i}}}\n"))
        .collect();
    dir.create("in.ndjson", input);
    let script = format!(
        "trap true TERM
         {validate} --require id in.ndjson \
           | {enrich} --http '{url}' --into profile --concurrency 64 --timeout 2s --retries 3 \
               --dead-letter dl.ndjson \
           | {persist} -q --key id --table t --create-table --sqlite out.db
         echo \"exits ${{PIPESTATUS[*]}}\" >&2",
        validate = bin("validate"),
        enrich = bin("enrich"),
        persist = bin("persist"),
        url = service.url("/users/{user}"),
    );
    let mut pipe = Std::new("bash")
        .args(["-c", &script])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::ingest_kafka::wait_until("64 calls out", Duration::from_secs(30), || {
        service.s.out.load(Ordering::SeqCst) == 64
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        service.s.most_out.load(Ordering::SeqCst),
        64,
        "--concurrency 64"
    );
    let calls_at_signal = service.calls();
    let signalled = Instant::now();
    kill("-TERM", &format!("-{}", pipe.id()));
    let status = wait_exit(&mut pipe, Duration::from_secs(60));
    let took = signalled.elapsed();
    let stderr = stderr_of(&mut pipe);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains("exits 143 0 0"),
        "validate stopped early, the rest ended: {stderr}"
    );
    // The 64 calls out were given their timeout, not cut short, nor waited for longer.
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(12),
        "{took:?}"
    );
    // The breaker opens after 5 failures in a row: at most 4 more calls, none retried.
    let after = service.calls() - calls_at_signal;
    assert!(after <= 4, "{after} calls after the signal: {stderr}");

    let passed: usize = stderr
        .split("stopped after line ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("validate says where it stopped: {stderr}"));
    let stored = crate::persist::sqlite_rows(&dir.path("out.db"), "t");
    let dead = values(&dir.read("dl.ndjson"));
    let mut seen = HashSet::new();
    for id in stored.keys().cloned().chain(dead.iter().map(|d| {
        let raw: serde_json::Value = serde_json::from_str(d["raw"].as_str().unwrap()).unwrap();
        raw["id"].as_str().unwrap().to_owned()
    })) {
        assert!(seen.insert(id.clone()), "{id} twice");
    }
    let expected: HashSet<String> = (0..passed).map(|i| format!("e{i}")).collect();
    assert_eq!(seen.len(), passed, "{stderr}");
    assert_eq!(
        seen, expected,
        "stored or dead: exactly what validate passed on"
    );
    assert!(passed > 64, "{stderr}");
    assert!(stored.is_empty(), "the service never answered");
    let timeouts = dead
        .iter()
        .filter(|d| {
            d["reason"]
                .as_str()
                .unwrap()
                .ends_with("timed out after 2s")
        })
        .count();
    let open = dead.iter().filter(|d| d["kind"] == "circuit_open").count();
    assert!((64..=68).contains(&timeouts), "{timeouts} timed out");
    assert_eq!(
        timeouts + open,
        passed,
        "every dead letter is a timeout or circuit_open"
    );
}

/// The database is stopped mid-run and started again 3 s later. With `--on-failure
/// block` every event waits for it: all come out enriched, in order, and no dead letter
/// is written. The breaker opened while it was down, and closed again.
#[test]
fn a_database_restart_mid_run_with_block_loses_nothing() {
    let dir = Dir::new();
    let cluster = Cluster::new();
    let psql = |sql: &str| {
        let o = std::process::Command::new("psql")
            .args([&cluster.url(), "-qAtc", sql])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
    };
    psql("CREATE TABLE users AS SELECT i AS id, 'user ' || i AS name FROM generate_series(0, 999) AS i");
    let mut child = crate::enrich_http::spawn_enrich(
        &dir,
        &[
            "--database-url",
            &cluster.url(),
            "--sql",
            "SELECT name FROM users WHERE id = $1",
            "--sql-args",
            "n",
            "--into",
            "user",
            "--on-failure",
            "block",
            "--timeout",
            "1s",
            "--breaker-cooldown",
            "500ms",
            "--dead-letter",
            "dl.ndjson",
        ],
    );
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut text).unwrap();
        text
    });
    let started = Instant::now();
    for n in 0..1000 {
        writeln!(stdin, "{{\"id\":\"e{n}\",\"n\":{n}}}").unwrap();
        if n == 300 {
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            cluster.stop_immediate();
        }
        if n == 600 {
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            cluster.start();
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let got = values(&text);
    assert_eq!(got.len(), 1000, "{stderr}");
    for (n, v) in got.iter().enumerate() {
        assert_eq!(v["id"], format!("e{n}").as_str());
        assert_eq!(v["user"], serde_json::json!({"name": format!("user {n}")}));
    }
    assert!(
        !dir.path("dl.ndjson").exists() || dir.read("dl.ndjson").is_empty(),
        "{}",
        dir.read("dl.ndjson")
    );
    assert!(stderr.contains("is open: no calls"), "{stderr}");
    assert!(stderr.contains("is closed again"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// `persist --metrics-listen` on its own while its database is stopped: `/ready` says 503
/// naming the database, then 200 once it is back; every event is stored.
#[test]
fn persist_alone_is_not_ready_while_its_database_is_down() {
    let dir = Dir::new();
    let cluster = Cluster::new();
    let port = free_port();
    let mut persist = Std::new(bin("persist"))
        .args(["-q", "--database-url", &cluster.url(), "--create-table"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = persist.stdin.take().unwrap();
    let ready = || crate::pipeline::get(port, "/ready");
    crate::ingest_kafka::wait_until("/ready 200", Duration::from_secs(30), || {
        ready().is_some_and(|(c, _)| c == 200)
    });
    for i in 0..1000 {
        writeln!(stdin, "{{\"id\":\"a{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    crate::ingest_kafka::wait_until("1,000 rows", Duration::from_secs(30), || {
        cluster.count() == 1000
    });
    cluster.stop_immediate();
    crate::ingest_kafka::wait_until("/ready 503", Duration::from_secs(30), || {
        ready().is_some_and(|(c, _)| c == 503)
    });
    let (_, body) = ready().unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failing = body["failing"][0].as_str().unwrap();
    assert!(
        failing.starts_with("database postgres@127.0.0.1:"),
        "{body}"
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .ends_with("does not answer"),
        "{body}"
    );
    // The gauge says the same, for a dashboard.
    let up = |m: &str| -> Option<String> {
        m.lines()
            .find(|l| l.starts_with("ndpipe_persist_database_up{database=\"postgres@127.0.0.1:"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    let metrics = || crate::pipeline::get(port, "/metrics").unwrap().1;
    assert_eq!(up(&metrics()).as_deref(), Some("0"), "{}", metrics());
    for i in 0..1000 {
        writeln!(stdin, "{{\"id\":\"b{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    cluster.start();
    crate::ingest_kafka::wait_until("/ready 200 again", Duration::from_secs(60), || {
        ready().is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(up(&metrics()).as_deref(), Some("1"));
    // Every committed batch's transaction was timed.
    crate::ingest_kafka::wait_until("2,000 rows", Duration::from_secs(60), || {
        cluster.count() == 2000
    });
    let m = metrics();
    let series = |name: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    let batches = series("ndpipe_persist_batches_total{");
    assert!(batches >= 2);
    assert_eq!(
        series("ndpipe_persist_commit_duration_seconds_count{component=\"persist\"}"),
        batches
    );
    drop(stdin);
    let status = wait_exit(&mut persist, Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut persist));
    assert_eq!(cluster.count(), 2000);
}

/// Traces go to a collector that takes connections and never answers (a hostile socket),
/// and to one that is not there: the pipeline is not held up by either. Every event
/// comes out, and the run ends within the exporter's bounds (a 5 s export timeout, a 5 s
/// flush at the end), not when the collector decides.
#[test]
fn a_collector_that_never_answers_does_not_hold_a_pipeline_up() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 100_000, &[]);
    // Connections wait in its backlog; nothing is ever read or answered.
    let hostile = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://127.0.0.1:{}", hostile.local_addr().unwrap().port());
    let absent = format!("http://127.0.0.1:{}", crate::pipeline::free_port());
    for collector in [silent, absent] {
        let started = Instant::now();
        let o = Std::new(bin("pipeline"))
            .args(["--otlp-endpoint", &collector])
            .arg("validate --require id | enrich --set traced=true")
            .arg("ev.ndjson")
            .current_dir(dir.root())
            .env("OTEL_TRACES_SAMPLER", "always_on")
            .output()
            .unwrap();
        assert!(o.status.success(), "{collector}: {}", err(&o));
        assert_eq!(out(&o).lines().count(), 100_000, "{collector}");
        // Said once, not once per export.
        let said = err(&o).matches("traces: ").count();
        assert_eq!(said, 1, "{collector}: {}", err(&o));
        assert!(err(&o).contains(&collector), "{}", err(&o));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{collector}: {took:?}");
    }
    drop(hostile);
}
