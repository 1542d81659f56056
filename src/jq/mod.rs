//! jq programs (the jaq dialect), run in helper processes.
//!
//! A jq program is code from the command line run on data from anywhere. It may recurse
//! as deep as its data goes (a stack overflow aborts the process that runs it, taking the
//! good events of its batch along), loop forever, or grow without bound
//! (`[repeat(.)]`). None of that can be stopped from inside the thread running it. So
//! `enrich --jq` runs its program in helper processes: the same executable started in
//! helper mode ([`serve_if_helper`], called first thing by every binary through
//! [`crate::cli::parse`], so no binary can start a helper it cannot serve), one per worker
//! thread at most, kept between batches.
//!
//! A worker sends a helper a whole batch of events and reads back each event's outputs,
//! waiting at most `--jq-timeout` for each. A helper that crashes (deep recursion, or past
//! [`HELPER_MEMORY`]) or runs out of time is killed: that event becomes a dead letter of
//! kind `jq`, and a new helper goes on with the rest of the batch. Outputs past
//! `--jq-max-outputs`, and outputs that are not JSON (jq numbers may be NaN or infinite:
//! `.a / .b` with b = 0), are dead letters too. The first shutdown signal ends a program
//! still running: its event becomes a dead letter.
//!
//! Protocol, over the helper's stdin and stdout, integers little-endian: a batch is a
//! `u32` count, then that many `u32` lengths each followed by one event's JSON text. For
//! each event the helper answers `0u8`, a `u32` count and that many length-prefixed
//! outputs; or `1u8` and a length-prefixed reason. It ends at the end of its stdin.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx as JqCtx, Vars};
use jaq_json::Val;

use crate::event::Reject;
use crate::exit::{Error, Result};
use crate::json::{self, SetOp};
use crate::shutdown::Shutdown;

pub mod fast;

/// Set in a helper's environment: the program to run.
const HELPER_PROGRAM: &str = "NDPIPE_JQ_HELPER_PROGRAM";
/// Set in a helper's environment: --jq-max-outputs.
const HELPER_MAX_OUTPUTS: &str = "NDPIPE_JQ_HELPER_MAX_OUTPUTS";

/// The most address space a helper may map. A program that grows past it fails to
/// allocate and the helper aborts, instead of the machine swapping or the OOM killer
/// choosing a victim. 2 GiB is far beyond any sane per-event program, and leaves room for
/// the executable's own mappings.
pub const HELPER_MEMORY: u64 = 2 << 30;

/// How often a worker waiting on a helper looks at the shutdown signal.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// One event's result: its outputs (JSON objects as text), or why it is rejected.
pub type Outputs = std::result::Result<Vec<String>, Reject>;

/// A compiled program.
pub struct Program {
    filter: jaq_core::Filter<data::JustLut<Val>>,
    /// `$ENV`: the process's environment, as jq gives it.
    env: Val,
}

impl Program {
    /// Compiles `code`; errors are usage errors (exit 64).
    pub fn compile(code: &str) -> Result<Program> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let msgs: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, e)| match e {
                        jaq_core::load::Error::Io(v) => v
                            .into_iter()
                            .map(|(s, m)| format!("{s}: {m}"))
                            .collect::<Vec<_>>(),
                        jaq_core::load::Error::Lex(v) => v
                            .into_iter()
                            .map(|(exp, at)| near(exp.as_str(), at))
                            .collect(),
                        jaq_core::load::Error::Parse(v) => v
                            .into_iter()
                            .map(|(exp, at)| near(exp.as_str(), at))
                            .collect(),
                    })
                    .collect();
                Error::usage(format!("--jq: {}", msgs.join("; ")))
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(["$ENV"])
            .compile(modules)
            .map_err(|errs| {
                let msgs: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, v)| {
                        v.into_iter()
                            .map(|(name, what)| format!("undefined {what:?}: {name}"))
                    })
                    .collect();
                Error::usage(format!("--jq: {}", msgs.join("; ")))
            })?;
        // Variables whose name or value is not UTF-8 are left out, as jq does.
        let env: serde_json::Map<String, serde_json::Value> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?.into())))
            .collect();
        let env = serde_json::from_value(serde_json::Value::Object(env))
            .map_err(|e| Error::from(anyhow::anyhow!("--jq: $ENV: {e}")))?;
        Ok(Program { filter, env })
    }

    /// Runs the program on one JSON text, in this process: the outputs, each a JSON
    /// object, or why the event is rejected.
    pub fn eval(&self, input: &str, max_outputs: u64) -> std::result::Result<Vec<String>, String> {
        let input: Val = serde_json::from_str(input).map_err(|e| format!("jq input: {e}"))?;
        let ctx = JqCtx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([self.env.clone()]));
        let mut outputs = Vec::new();
        for out in self.filter.id.run((ctx, input)).map(jaq_core::unwrap_valr) {
            let v = out.map_err(|e| format!("jq error: {e}"))?;
            if outputs.len() as u64 >= max_outputs {
                return Err(format!(
                    "the jq program gave more than --jq-max-outputs {max_outputs} outputs"
                ));
            }
            if !matches!(v, Val::Obj(_)) {
                return Err(format!(
                    "jq output #{} is not an object: {}",
                    outputs.len(),
                    shorten(&v.to_string())
                ));
            }
            let text = v.to_string();
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                return Err(format!(
                    "jq output #{} is not valid JSON (a NaN or infinite number?): {}",
                    outputs.len(),
                    shorten(&text)
                ));
            }
            outputs.push(text);
        }
        Ok(outputs)
    }
}

/// The outputs of a jq program (JSON objects) with the event's metadata field `meta`
/// (its text `meta_raw`, when the event has one) re-attached, last unless the output has
/// that key already; when there are several, each carries `"split":{"index","count"}`
/// in it.
pub fn attach_meta(meta_raw: Option<&str>, meta: &str, outputs: Vec<String>) -> Vec<String> {
    let count = outputs.len();
    outputs
        .into_iter()
        .enumerate()
        .map(|(index, text)| {
            let meta_text = match (meta_raw, count) {
                (None, 1) => None,
                (Some(m), 1) => Some(m.to_owned()),
                (m, _) => {
                    let base = m.filter(|m| m.starts_with('{')).unwrap_or("{}");
                    let stamp = format!("{{\"index\":{index},\"count\":{count}}}");
                    let split = vec!["split".to_owned()];
                    let members = json::scan_object(base).expect("metadata is an object");
                    let op = SetOp {
                        path: &split,
                        value: &stamp,
                    };
                    Some(json::set_many(base, &members, &[op]).expect("object"))
                }
            };
            match meta_text {
                None => text,
                Some(m) => {
                    // Every output is a JSON object (checked where it was made).
                    let members = json::scan_object(&text).expect("jq outputs are JSON objects");
                    let key = vec![meta.to_owned()];
                    let op = SetOp {
                        path: &key,
                        value: &m,
                    };
                    json::set_many(&text, &members, &[op]).expect("object")
                }
            }
        })
        .collect()
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn near(expected: &str, at: &str) -> String {
    let at: String = at.chars().take(20).collect();
    if at.is_empty() {
        format!("expected {expected} at the end")
    } else {
        format!("expected {expected} near `{at}`")
    }
}

/// Per-event limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--jq-timeout`.
    pub timeout: Duration,
    /// `--jq-max-outputs`.
    pub max_outputs: u64,
}

/// A program run in helper processes, shared by a stage's workers.
pub struct Sandbox {
    code: String,
    limits: Limits,
    idle: Mutex<Vec<Helper>>,
}

struct Helper {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: ChildStdout,
    /// Bytes read from stdout and not yet used.
    buf: Vec<u8>,
}

/// Why a helper stopped answering.
enum Stop {
    Timeout,
    Shutdown,
    Gone,
}

impl Sandbox {
    /// Compiles `code` once here (a bad program is a usage error at start).
    pub fn new(code: &str, limits: Limits) -> Result<Sandbox> {
        Program::compile(code)?;
        Ok(Sandbox {
            code: code.to_owned(),
            limits,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The per-event limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs the program on each input, in order; one result per input.
    pub fn eval_all(&self, inputs: &[&str], shutdown: &Shutdown) -> Vec<Outputs> {
        let mut results: Vec<Outputs> = Vec::with_capacity(inputs.len());
        let mut helper = self.idle.lock().expect("not poisoned").pop();
        while results.len() < inputs.len() {
            let mut h = match helper.take() {
                Some(h) => h,
                None => match self.spawn() {
                    Ok(h) => h,
                    Err(e) => {
                        let why = format!("cannot start a jq helper process: {e}");
                        results.resize_with(inputs.len(), || Err(Reject::new("jq", why.clone())));
                        break;
                    }
                },
            };
            match self.exchange(&mut h, &inputs[results.len()..], shutdown, &mut results) {
                Ok(()) => helper = Some(h),
                Err(stop) => {
                    let why = self.end(h, stop);
                    results.push(Err(Reject::new("jq", why)));
                }
            }
        }
        if let Some(h) = helper {
            self.idle.lock().expect("not poisoned").push(h);
        }
        results
    }

    fn spawn(&self) -> io::Result<Helper> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(HELPER_PROGRAM, &self.code)
            .env(HELPER_MAX_OUTPUTS, self.limits.max_outputs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A helper that aborts says so there ("has overflowed its stack"): the dead
            // letter says it better.
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = child.stdout.take().expect("piped");
        Ok(Helper {
            child,
            stdin,
            stdout,
            buf: Vec::new(),
        })
    }

    /// Sends `inputs` and pushes their results until all are in, or the helper stops.
    fn exchange(
        &self,
        h: &mut Helper,
        inputs: &[&str],
        shutdown: &Shutdown,
        results: &mut Vec<Outputs>,
    ) -> std::result::Result<(), Stop> {
        // The helper reads the whole batch before answering: no deadlock on full pipes.
        let sent = (|| -> io::Result<()> {
            h.stdin.write_all(&(inputs.len() as u32).to_le_bytes())?;
            for input in inputs {
                h.stdin.write_all(&(input.len() as u32).to_le_bytes())?;
                h.stdin.write_all(input.as_bytes())?;
            }
            h.stdin.flush()
        })();
        if sent.is_err() {
            return Err(Stop::Gone);
        }
        for _ in inputs {
            let deadline = Instant::now() + self.limits.timeout;
            let tag = h.read(1, deadline, shutdown)?[0];
            let n = h.read_u32(deadline, shutdown)?;
            if tag == 0 {
                let mut outputs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let len = h.read_u32(deadline, shutdown)?;
                    let bytes = h.read(len as usize, deadline, shutdown)?;
                    outputs.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                results.push(Ok(outputs));
            } else {
                let reason = h.read(n as usize, deadline, shutdown)?;
                results.push(Err(Reject::new(
                    "jq",
                    String::from_utf8_lossy(&reason).into_owned(),
                )));
            }
        }
        Ok(())
    }

    /// Kills a helper that stopped answering; why, for the event it was on.
    fn end(&self, mut h: Helper, stop: Stop) -> String {
        let _ = h.child.kill();
        let status = h.child.wait();
        match stop {
            Stop::Timeout => format!(
                "the jq program ran longer than --jq-timeout {} on this event",
                humantime::format_duration(self.limits.timeout)
            ),
            Stop::Shutdown => "the jq program was still running at shutdown".to_owned(),
            Stop::Gone => {
                use std::os::unix::process::ExitStatusExt;
                match status.ok().and_then(|s| s.signal()) {
                    Some(sig) => format!(
                        "the jq program crashed on this event (signal {sig}: a stack overflow \
                         from deep recursion, or more than {} MiB of memory)",
                        HELPER_MEMORY >> 20
                    ),
                    None => "the jq helper process ended on this event".to_owned(),
                }
            }
        }
    }
}

impl Helper {
    fn read_u32(
        &mut self,
        deadline: Instant,
        shutdown: &Shutdown,
    ) -> std::result::Result<u32, Stop> {
        let b = self.read(4, deadline, shutdown)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `n` bytes, waiting until `deadline` at most.
    fn read(
        &mut self,
        n: usize,
        deadline: Instant,
        shutdown: &Shutdown,
    ) -> std::result::Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            if shutdown.is_triggered() {
                return Err(Stop::Shutdown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::Timeout);
            }
            let wait = left.min(POLL_EVERY);
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd that lives across the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().max(1) as i32) };
            if ready <= 0 {
                continue; // timed out (or EINTR): look at the clock and the signal again
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stdout.read(&mut chunk) {
                Ok(0) => return Err(Stop::Gone),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Stop::Gone),
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }
}

/// In a helper process (its environment says so): serves jq requests on stdin/stdout and
/// exits. Every binary calls this first ([`crate::cli::parse`]); elsewhere it returns at
/// once.
pub fn serve_if_helper() {
    let Some(code) = std::env::var_os(HELPER_PROGRAM) else {
        return;
    };
    let code = code.to_string_lossy().into_owned();
    let max_outputs = std::env::var(HELPER_MAX_OUTPUTS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    // SAFETY: plain libc calls on this process's own signal dispositions and limits.
    unsafe {
        // The worker that started it decides when it ends (Ctrl-C reaches the whole
        // process group).
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: HELPER_MEMORY as libc::rlim_t,
            rlim_max: HELPER_MEMORY as libc::rlim_t,
        };
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
    // It dies with the process that started it, even after kill -9 and even while a
    // program runs (an idle helper sees the end of its stdin anyway). Not
    // PR_SET_PDEATHSIG: that fires when the spawning *thread* ends, and the worker
    // threads of a pool come and go.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(1);
        }
    });
    let code = match Program::compile(&code) {
        Ok(p) => serve(&p, max_outputs).map_or(1, |()| 0),
        Err(_) => 2,
    };
    std::process::exit(code);
}

fn serve(program: &Program, max_outputs: u64) -> io::Result<()> {
    let mut input = BufReader::new(io::stdin().lock());
    let mut out = BufWriter::new(io::stdout().lock());
    let mut word = [0u8; 4];
    loop {
        match input.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let count = u32::from_le_bytes(word);
        let mut events = Vec::with_capacity(count as usize);
        for _ in 0..count {
            input.read_exact(&mut word)?;
            let mut text = vec![0u8; u32::from_le_bytes(word) as usize];
            input.read_exact(&mut text)?;
            events.push(
                String::from_utf8(text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            );
        }
        for event in &events {
            match program.eval(event, max_outputs) {
                Ok(outputs) => {
                    out.write_all(&[0])?;
                    out.write_all(&(outputs.len() as u32).to_le_bytes())?;
                    for o in &outputs {
                        out.write_all(&(o.len() as u32).to_le_bytes())?;
                        out.write_all(o.as_bytes())?;
                    }
                }
                Err(reason) => {
                    out.write_all(&[1])?;
                    out.write_all(&(reason.len() as u32).to_le_bytes())?;
                    out.write_all(reason.as_bytes())?;
                }
            }
            // Each event's answer leaves at once: if the next one crashes the helper, the
            // worker knows exactly which event did.
            out.flush()?;
        }
    }
}
