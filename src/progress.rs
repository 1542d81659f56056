//! What a command shows on stderr: the progress line while it runs (indicatif), the
//! summary when it ends, and log lines that do not tear the progress line.
//!
//! One pipe on a terminal shows one display. Every command of `a | b | c` shares the
//! terminal as stderr, so only one of them draws: the last one, the command whose stdout
//! is not a pipe (the terminal, a file, `/dev/null`). A command in the middle of a pipe
//! stays silent unless `--progress` asks for its line. Nothing is drawn when stderr is
//! not a terminal (unless `--progress`), or with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::dead_letter::DeadLetters;
use crate::human::{count, rate};
use crate::tally::Tally;

/// How often the line is redrawn: often enough to look alive, rarely enough to cost
/// nothing (indicatif redraws on its own thread).
const TICK: Duration = Duration::from_millis(200);

/// What this process draws, so that log lines can clear it first.
static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

#[derive(Clone)]
enum Active {
    Bar(ProgressBar),
    /// `pipeline`: one line per stage.
    Lines(MultiProgress),
    /// A full-screen view (`pipeline --top`) owns the terminal: log lines wait.
    Held(Arc<Mutex<Vec<Vec<u8>>>>),
}

/// Log lines held while a full-screen view draws ([`hold`]); at most this many, the
/// oldest dropped first: a view may run for hours.
const HELD_LINES: usize = 1000;

/// Holds every log line until the returned guard is dropped, then prints them: a
/// full-screen view redraws the whole terminal, and a log line there would be torn.
pub fn hold() -> Held {
    let lines = Arc::new(Mutex::new(Vec::new()));
    *ACTIVE.lock().expect("not poisoned") = Some(Active::Held(lines.clone()));
    Held(lines)
}

/// See [`hold`].
pub struct Held(Arc<Mutex<Vec<Vec<u8>>>>);

impl Held {
    /// The last `n` lines held, for the view to show.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.0.lock().expect("not poisoned");
        let from = lines.len().saturating_sub(n);
        lines[from..]
            .iter()
            .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
            .collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        ACTIVE.lock().expect("not poisoned").take();
        let lines = std::mem::take(&mut *self.0.lock().expect("not poisoned"));
        let mut err = std::io::stderr().lock();
        for line in lines {
            let _ = err.write_all(&line);
        }
    }
}

/// What `pipeline` draws: one line per stage ([`Progress::line`]).
#[derive(Clone)]
pub struct Lines(MultiProgress);

impl Lines {
    /// The lines of a pipeline, when this process draws (see [`draws`]).
    pub fn new(forced: bool, quiet: bool) -> Option<Lines> {
        if !draws(forced, quiet) {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        *ACTIVE.lock().expect("not poisoned") = Some(Active::Lines(multi.clone()));
        Some(Lines(multi))
    }

    /// Clears every line; the summary that follows says how the run ended.
    pub fn finish(&self) {
        let _ = self.0.clear();
        ACTIVE.lock().expect("not poisoned").take();
    }
}

/// What is known about the input: its size (all of it regular files) and the bytes
/// read so far, for %, bytes and ETA.
#[derive(Clone, Default)]
pub struct InputSize {
    pub total: Option<u64>,
    pub consumed: Vec<Arc<AtomicU64>>,
}

impl InputSize {
    fn consumed(&self) -> u64 {
        self.consumed
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[derive(Clone)]
pub struct Progress {
    shown: Option<Arc<Shown>>,
}

struct Shown {
    bar: ProgressBar,
}

/// Whether this process draws the progress line (see the module notes).
pub fn draws(forced: bool, quiet: bool) -> bool {
    !quiet && (forced || (std::io::stderr().is_terminal() && !stdout_is_pipe()))
}

/// True when stdout is a pipe: another command reads it, and that one draws.
fn stdout_is_pipe() -> bool {
    // SAFETY: fstat only reads the descriptor's metadata into a zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(libc::STDOUT_FILENO, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
    }
}

impl Progress {
    /// A progress line for `stage`, drawn when [`draws`] says so, showing what `tally`
    /// passed on. With an input of known size it shows a bar with %, bytes and ETA.
    pub fn new(
        stage: &str,
        forced: bool,
        quiet: bool,
        dead: &DeadLetters,
        input: InputSize,
        tally: &Tally,
    ) -> Progress {
        if !draws(forced, quiet) {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(input.total, ProgressDrawTarget::stderr());
        let template = if input.total.is_some() {
            format!(
                "{{spinner}} {stage}: {{events}} events ({{rate}}) [{{bar:10}}] {{percent}}% \
                 of {{total_bytes}} · ETA {{eta}} {{rejected}}{{msg}}"
            )
        } else {
            format!("{{spinner}} {stage}: {{events}} events ({{rate}}) {{rejected}}{{msg}}· {{elapsed}}")
        };
        let style = counting(&template, tally, dead).progress_chars("=> ");
        bar.set_style(style);
        if input.total.is_some() {
            // The bar's position is the bytes read: moved along at each tick.
            let ticked = bar.clone();
            let _ = std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !ticked.is_finished() {
                        ticked.set_position(input.consumed());
                        std::thread::sleep(TICK);
                    }
                });
        }
        bar.enable_steady_tick(TICK);
        *ACTIVE.lock().expect("not poisoned") = Some(Active::Bar(bar.clone()));
        Progress {
            shown: Some(Arc::new(Shown { bar })),
        }
    }

    /// One line of a pipeline's display: `label`, the events the stage passed on (its
    /// `tally`) with their rate, then `extra()` (the fill of the channel in front of it).
    pub fn line(
        lines: &Lines,
        label: &str,
        dead: &DeadLetters,
        tally: &Tally,
        extra: impl Fn() -> String + Send + Sync + 'static,
    ) -> Progress {
        let extra = Arc::new(extra);
        let bar = lines.0.add(ProgressBar::no_length());
        let template = format!(
            "{{spinner}} {label}: {{events}} events ({{rate}}) · {{extra}} {{rejected}}{{msg}}"
        );
        let style = counting(&template, tally, dead).with_key(
            "extra",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&extra());
            },
        );
        bar.set_style(style);
        bar.enable_steady_tick(TICK);
        Progress {
            shown: Some(Arc::new(Shown { bar })),
        }
    }

    pub fn hidden() -> Progress {
        Progress { shown: None }
    }

    /// Shows `note` (such as "12 batches · 1 retry") after the reject count.
    pub fn note(&self, note: &str) {
        if let Some(s) = &self.shown {
            s.bar.set_message(format!("· {note} "));
        }
    }

    pub fn is_shown(&self) -> bool {
        self.shown.is_some()
    }

    /// Clears the line; the summary that follows says how it ended.
    pub fn finish(&self) {
        if let Some(s) = &self.shown {
            s.bar.finish_and_clear();
            let mut active = ACTIVE.lock().expect("not poisoned");
            if matches!(*active, Some(Active::Bar(_))) {
                active.take();
            }
        }
    }
}

/// A style of `template` whose `{events}` and `{rate}` are what `tally` passed on,
/// rounded, and whose `{rejected}` is "· N rejected " once `dead` has kept some.
fn counting(template: &str, tally: &Tally, dead: &DeadLetters) -> ProgressStyle {
    let (t1, t2, dead) = (tally.clone(), tally.clone(), dead.clone());
    ProgressStyle::with_template(template)
        .expect("valid template")
        .with_key(
            "events",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&count(t1.sent_so_far()));
            },
        )
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate(t2.sent_so_far(), s.elapsed()));
            },
        )
        .with_key(
            "rejected",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let rejected = dead.count();
                if rejected > 0 {
                    let _ = write!(w, "· {} rejected ", count(rejected));
                }
            },
        )
}

/// Writes log lines to stderr without tearing a progress line: the line this process
/// draws is hidden while a log line is written, and on a terminal every log line first
/// clears the line it starts on (another command of the pipe may be drawing there).
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// One log line, written to stderr when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            print_line(std::mem::take(&mut self.0));
        }
    }
}

/// Prints one line (with its `\n`) on stderr the way log lines are: the summary of a
/// command in the middle of a pipe must not land inside the last command's progress line.
pub fn eprint_line(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    print_line(bytes);
}

fn print_line(line: Vec<u8>) {
    let active = ACTIVE.lock().expect("not poisoned").clone();
    if let Some(Active::Held(held)) = &active {
        let mut held = held.lock().expect("not poisoned");
        if held.len() >= HELD_LINES {
            held.remove(0);
        }
        held.push(line);
        return;
    }
    let emit = move || {
        let mut err = std::io::stderr().lock();
        if err.is_terminal() {
            let _ = err.write_all(b"\r\x1b[K");
        }
        let _ = err.write_all(&line);
    };
    match active {
        Some(Active::Bar(bar)) => bar.suspend(emit),
        Some(Active::Lines(multi)) => multi.suspend(emit),
        Some(Active::Held(_)) | None => emit(),
    }
}
