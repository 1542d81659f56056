//! NDJSON framing: a line reader that never buffers a whole over-long line, and a writer
//! that block-buffers but never holds events back.
//!
//! Reading: lines are numbered from 1 per input; a leading UTF-8 BOM and `\r\n` endings
//! are accepted; blank lines are skipped; a line longer than `--max-line-bytes` is kept
//! only as its first bytes and becomes a dead letter. Everything else about a line
//! (UTF-8, JSON, object-ness) is checked by the stage that decodes it, on its workers.
//!
//! Writing: output is each event's bytes plus `\n`. Batches are gathered into one
//! `write(2)` while more are ready, and flushed whenever input goes idle, when the buffer
//! is full, and at least every [`FLUSH_INTERVAL`]. A closed pipe ends the writer with
//! `BrokenPipe`, which the binaries treat as a clean exit.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError, Receiver, Sender};

use crate::dead_letter::RAW_LIMIT;
use crate::event::{Batch, Event};
use crate::exit::{Error, Result};
use crate::shutdown::Shutdown;
use crate::tally::Tally;

/// How long output may sit in the buffer while input keeps coming.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes asked of each `read(2)`; a batch holds the lines of one read.
const READ_CHUNK: usize = 256 * 1024;
/// Output gathered before a `write(2)` while more batches are ready.
const WRITE_BUFFER: usize = 256 * 1024;
/// A batch whose lines lie back to back in memory and take at least this much is
/// written without being copied into the buffer: a write of 64 KiB or more costs a
/// system call either way, while a smaller one is better gathered with its neighbours.
const DIRECT_WRITE: usize = 64 * 1024;

/// An opened input: its name (for dead letters), its reader, and whether it is a pipe or
/// a socket, whose writer is another process (see [`read`] for why that matters).
pub struct Input {
    pub name: Arc<str>,
    reader: Box<dyn Read + Send>,
    pub stream: bool,
    /// The input's size in bytes when it is a regular file (as stored: compressed bytes
    /// for a compressed file), for the progress display's %, bytes and ETA.
    pub size: Option<u64>,
    /// Bytes of the input read so far (as stored), counted as they are read.
    pub consumed: Arc<AtomicU64>,
    /// How the input is compressed, when that was known at open (files; stdin is
    /// decompressed just the same, but recognised only once it is read).
    pub compression: Option<Compression>,
}

impl Input {
    pub fn new(name: &str, reader: impl Read + Send + 'static) -> Input {
        Input {
            name: name.into(),
            reader: Box::new(reader),
            stream: false,
            size: None,
            consumed: Arc::default(),
            compression: None,
        }
    }

    /// An input read from a descriptor: counted, and decompressed when its first bytes
    /// say it is gzip or zstd.
    fn of_fd(name: &str, reader: impl Read + AsRawFd + Send + 'static) -> io::Result<Input> {
        let stream = is_stream(reader.as_raw_fd());
        let consumed = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner: reader,
            count: consumed.clone(),
        };
        Ok(Input {
            stream,
            consumed,
            ..Input::new(name, Decompressed::new(counted))
        })
    }

    /// The command that prints this input from line `line` on, for "to resume" hints.
    pub fn resume_hint(name: &str, compression: Option<Compression>, line: u64) -> String {
        let from = line + 1;
        match compression {
            None => format!("tail -n +{from} {name}"),
            Some(Compression::Gzip) => format!("zcat {name} | tail -n +{from}"),
            Some(Compression::Zstd) => format!("zstdcat {name} | tail -n +{from}"),
        }
    }
}

/// A compressed input format, recognised by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// What the first bytes of an input say it is. Neither magic can begin an NDJSON
    /// line (`1f` is a control byte, `28 b5` not UTF-8 after `(`), so plain input is
    /// never mistaken for compressed.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An input after its first bytes were read to recognise it: those bytes, then the rest.
type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads an input as plain text, or decompresses it when its first bytes are gzip's
/// or zstd's magic (concatenated gzip members and zstd frames are read to the end,
/// as `zcat` does). The first read decides, so opening never blocks on a pipe.
enum Decompressed<R: Read> {
    Unknown(Option<R>),
    Plain(Sniffed<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Sniffed<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Sniffed<R>>>>),
}

impl<R: Read> Decompressed<R> {
    fn new(inner: R) -> Decompressed<R> {
        Decompressed::Unknown(Some(inner))
    }
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self {
                Decompressed::Plain(r) => return r.read(buf),
                Decompressed::Gzip(r) => return r.read(buf),
                Decompressed::Zstd(r) => return r.read(buf),
                Decompressed::Unknown(inner) => {
                    let mut r = inner.take().expect("an input is sniffed once");
                    // Up to 4 bytes decide; a shorter input is plain text.
                    let mut head = Vec::with_capacity(4);
                    while head.len() < 4 {
                        let mut b = [0u8; 4];
                        match r.read(&mut b[..4 - head.len()]) {
                            Ok(0) => break,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                *inner = Some(r);
                                return Err(e);
                            }
                        }
                    }
                    let kind = Compression::sniff(&head);
                    let chained = io::Cursor::new(head).chain(r);
                    *self = match kind {
                        None => Decompressed::Plain(chained),
                        Some(Compression::Gzip) => {
                            Decompressed::Gzip(Box::new(flate2::read::MultiGzDecoder::new(chained)))
                        }
                        Some(Compression::Zstd) => {
                            Decompressed::Zstd(Box::new(zstd::stream::read::Decoder::new(chained)?))
                        }
                    };
                }
            }
        }
    }
}

/// True when `fd` is a pipe (FIFO) or a socket.
fn is_stream(fd: i32) -> bool {
    // SAFETY: fstat only reads the descriptor's metadata into a zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0
            && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)
    }
}

/// Asks for a 1 MiB buffer when `fd` is a pipe (Linux; best effort). A stage between two
/// others then reads and writes in chunks of hundreds of KiB instead of the default
/// 64 KiB, with a quarter of the wake-ups.
pub fn widen_pipe(fd: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: fstat and fcntl only read or tune the descriptor; errors are ignored.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Standard output, its pipe widened (see [`widen_pipe`]).
pub fn stdout() -> io::Stdout {
    widen_pipe(libc::STDOUT_FILENO);
    io::stdout()
}

/// Opens every input up front, so a missing file fails before anything is written.
/// No paths, or `-`, mean stdin.
pub fn open_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    if paths.is_empty() || paths.iter().any(|p| p.as_os_str() == "-") {
        widen_pipe(libc::STDIN_FILENO);
    }
    let stdin = || {
        Input::of_fd("stdin", io::stdin())
            .map_err(|e| Error::new(crate::exit::Exit::IoErr, anyhow::anyhow!("stdin: {e}")))
    };
    if paths.is_empty() {
        return Ok(vec![stdin()?]);
    }
    paths
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                return stdin();
            }
            let failed =
                |e: io::Error| Error::unreadable(p.display(), &e, crate::exit::Exit::NoInput);
            let mut f = File::open(p).map_err(failed)?;
            let meta = f.metadata().map_err(failed)?;
            let (size, compression) = if meta.is_file() {
                // A regular file: its size is known, and its first bytes can be read
                // now and read again (a pipe's only once: stdin is sniffed as read).
                let mut head = [0u8; 4];
                let n = read_head(&mut f, &mut head).map_err(failed)?;
                f.seek(io::SeekFrom::Start(0)).map_err(failed)?;
                (Some(meta.len()), Compression::sniff(&head[..n]))
            } else {
                (None, None)
            };
            let mut input = Input::of_fd(&p.display().to_string(), f).map_err(failed)?;
            input.size = size;
            input.compression = compression;
            Ok(input)
        })
        .collect()
}

/// Reads up to `head.len()` bytes from the start of `f`.
fn read_head(f: &mut File, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Splits bytes into line events. Feed it chunks in order; call `finish` at the end.
///
/// Complete lines of a chunk that is valid UTF-8 (the usual case) become events that share
/// the chunk: no line is copied. A chunk holding invalid UTF-8 is split into owned lines,
/// so only the bad lines are rejected.
pub struct Framer {
    max: usize,
    line: u64,
    /// The start of a line that continues in the next chunk.
    carry: Vec<u8>,
    /// How many bytes at the start of the buffer last handed out by `next_buffer` (or
    /// `next_read_buffer`) were carried over: they hold no newline, so framing looks only
    /// at the bytes after them.
    /// (Searching and copying the carried part again on every read made a line spanning
    /// many reads quadratic: 10.8 s for a 50 MB line.)
    carried: usize,
    /// Inside an over-long line: its kept prefix and length so far.
    skipping: Option<(Vec<u8>, u64)>,
}

impl Framer {
    pub fn new(max_line_bytes: u64) -> Framer {
        Framer {
            max: usize::try_from(max_line_bytes).unwrap_or(usize::MAX),
            line: 0,
            carry: Vec::new(),
            carried: 0,
            skipping: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        let mut buf = self.next_buffer(chunk.len());
        buf.extend_from_slice(chunk);
        self.feed_buffer(buf, out);
    }

    /// A buffer to read the next bytes into: it starts with the unfinished line carried
    /// over from the last one, and has room for `room` more bytes. Reading into it and
    /// passing it to [`Framer::feed_buffer`] copies no input byte.
    pub fn next_buffer(&mut self, room: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.carry);
        self.carried = buf.len();
        buf.reserve(room);
        buf
    }

    /// Like [`Framer::next_buffer`], for reading into: `room` bytes follow the carried line
    /// at once, with unspecified contents (only the bytes read into them count: truncate
    /// the buffer to them). The buffer is a recycled block (see [`crate::pool`]): its
    /// pages are not faulted in again, and mostly not zeroed again. A carried line too
    /// long to copy (one that spans reads) keeps its own buffer, grown.
    pub fn next_read_buffer(&mut self, room: usize) -> Vec<u8> {
        if self.carry.len() >= room / 4 {
            let mut buf = self.next_buffer(room);
            buf.resize(buf.len() + room, 0);
            return buf;
        }
        let carry = std::mem::take(&mut self.carry);
        self.carried = carry.len();
        let mut buf = crate::pool::TEXT.take_filled(carry.len() + room);
        buf[..carry.len()].copy_from_slice(&carry);
        // The carry may be a whole block: a read that held no line end.
        crate::pool::TEXT.put(carry);
        buf
    }

    /// Frames `buf`, which must come from [`Framer::next_buffer`] with the new bytes added
    /// (or from [`Framer::next_read_buffer`], truncated to the bytes read).
    pub fn feed_buffer(&mut self, mut buf: Vec<u8>, out: &mut Vec<Event>) {
        // The carried bytes come first and hold no newline (the carry is empty while
        // skipping an over-long line).
        let fresh = std::mem::take(&mut self.carried).min(buf.len());
        if let Some((prefix, len)) = &mut self.skipping {
            let Some(nl) = memchr::memchr(b'\n', &buf) else {
                *len += buf.len() as u64;
                let keep = RAW_LIMIT.saturating_sub(prefix.len()).min(buf.len());
                prefix.extend_from_slice(&buf[..keep]);
                return;
            };
            *len += nl as u64;
            let keep = RAW_LIMIT.saturating_sub(prefix.len()).min(nl);
            prefix.extend_from_slice(&buf[..keep]);
            self.end_skipping(out);
            buf.drain(..=nl);
        }
        let complete = memchr::memrchr(b'\n', &buf[fresh..]).map_or(0, |nl| fresh + nl + 1);
        if complete == 0 && buf.len() <= self.max + 1 {
            // No line ends here: all of it is the start of one line; keep it as it is.
            self.carry = buf;
            return;
        }
        let tail = &buf[complete..];
        if tail.len() > self.max + 1 {
            // +1: a `\r` before the newline is not part of the line.
            let keep = tail.len().min(RAW_LIMIT);
            self.skipping = Some((tail[..keep].to_vec(), tail.len() as u64));
        } else {
            self.carry.extend_from_slice(tail);
        }
        buf.truncate(complete);
        self.lines(buf, out);
    }

    /// Ends the input: a last line without a newline still counts.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if self.skipping.is_some() {
            self.end_skipping(out);
        } else if !self.carry.is_empty() {
            let mut last = std::mem::take(&mut self.carry);
            last.push(b'\n');
            self.lines(last, out);
        }
    }

    fn end_skipping(&mut self, out: &mut Vec<Event>) {
        let (prefix, len) = self.skipping.take().expect("skipping");
        self.line += 1;
        let len = if prefix.last() == Some(&b'\r') && prefix.len() as u64 == len {
            len - 1
        } else {
            len
        };
        out.push(Event::oversized(prefix, len, self.max as u64, self.line));
    }

    /// Splits `buf`, which ends with a newline (or is empty), into events.
    fn lines(&mut self, buf: Vec<u8>, out: &mut Vec<Event>) {
        match String::from_utf8(buf) {
            Ok(text) => {
                let chunk = crate::event::chunk(text);
                let mut start = 0;
                for nl in memchr::memchr_iter(b'\n', chunk.as_bytes()) {
                    if let Some((s, e)) = self.line_bounds(chunk.as_bytes(), start, nl, out) {
                        out.push(Event::from_chunk(chunk.clone(), s, e, self.line));
                    }
                    start = nl + 1;
                }
            }
            Err(e) => {
                let bytes = e.into_bytes();
                let mut start = 0;
                for nl in memchr::memchr_iter(b'\n', &bytes) {
                    if let Some((s, e)) = self.line_bounds(&bytes, start, nl, out) {
                        out.push(Event::from_line(bytes[s..e].to_vec(), self.line));
                    }
                    start = nl + 1;
                }
                crate::pool::TEXT.put(bytes);
            }
        }
    }

    /// Numbers the line `buf[start..nl]` and trims it; `None` when it is blank or was
    /// pushed as over-long.
    fn line_bounds(
        &mut self,
        buf: &[u8],
        mut start: usize,
        nl: usize,
        out: &mut Vec<Event>,
    ) -> Option<(usize, usize)> {
        self.line += 1;
        let mut end = nl;
        if end > start && buf[end - 1] == b'\r' {
            end -= 1;
        }
        if self.line == 1 && buf[start..end].starts_with(b"\xEF\xBB\xBF") {
            start += 3;
        }
        let line = &buf[start..end];
        if line.first().is_none_or(u8::is_ascii_whitespace)
            && line.iter().all(u8::is_ascii_whitespace)
        {
            return None;
        }
        if line.len() > self.max {
            let keep = line.len().min(RAW_LIMIT);
            out.push(Event::oversized(
                line[..keep].to_vec(),
                line.len() as u64,
                self.max as u64,
                self.line,
            ));
            return None;
        }
        Some((start, end))
    }
}

/// How reading ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Every input was read to its end, or the stage stopped taking input.
    Complete,
    /// Shutdown stopped reading before the end of the input. `line` is the last line of
    /// `source` handed on (0: none of it); everything up to it went to the stage.
    Stopped { source: Arc<str>, line: u64 },
}

/// What the reading thread and [`read`] share.
#[derive(Default)]
struct ReadState {
    /// The index of the input being read.
    current: AtomicUsize,
    /// Finish the input being read, but open no other.
    last_input: AtomicBool,
    /// Stop reading at the next chunk.
    stop: AtomicBool,
    /// Every input was read to its end.
    finished: AtomicBool,
}

/// Reads the inputs one after the other into batches on `tx`, until they end or `tx`
/// closes.
///
/// On shutdown it depends on what is being read. A file stops at once: the run is cut
/// short, and [`ReadEnd::Stopped`] says after which line, so the user can resume. A pipe
/// or a socket is read on to its end, bounded by `drain_timeout`: its writer is a process
/// upstream that got the same signal (a signal to a shell pipe reaches the whole process
/// group) and is now writing out what it holds, some of it already acknowledged to its
/// clients. Stopping at once would drop that; reading on is how shutdown travels down a
/// pipe, as closing channels does in one process. No input after it is opened.
pub async fn read(
    inputs: Vec<Input>,
    max_line_bytes: u64,
    tx: Sender<Batch>,
    shutdown: Shutdown,
    drain_timeout: Duration,
    tally: &Tally,
    tap: Option<Arc<crate::tap::Feed>>,
) -> Result<ReadEnd> {
    let names: Vec<Arc<str>> = inputs.iter().map(|i| i.name.clone()).collect();
    let streams: Vec<bool> = inputs.iter().map(|i| i.stream).collect();
    let state = Arc::new(ReadState::default());
    let (raw_tx, mut raw_rx) = mpsc::channel::<io::Result<Batch>>(2);
    // A plain thread, not the blocking pool: it may sit in read(2) on an idle stdin when
    // the process ends, and must not hold the runtime back.
    let thread_state = state.clone();
    std::thread::Builder::new()
        .name("ndjson-reader".into())
        .spawn(move || read_blocking(inputs, max_line_bytes, raw_tx, &thread_state))?;
    // The last line handed on, and where it came from.
    let mut last: Option<(Arc<str>, u64)> = None;
    let mut handed = std::time::SystemTime::now();
    let stopped = |last: &Option<(Arc<str>, u64)>| {
        let source = names[state.current.load(Ordering::Relaxed)].clone();
        let line = match last {
            Some((s, line)) if Arc::ptr_eq(s, &source) => *line,
            _ => 0,
        };
        ReadEnd::Stopped { source, line }
    };
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait(), if drain_until.is_none() => {
                let i = state.current.load(Ordering::Relaxed);
                if !streams[i] {
                    state.stop.store(true, Ordering::Relaxed);
                    return Ok(stopped(&last));
                }
                state.last_input.store(true, Ordering::Relaxed);
                drain_until = Some(tokio::time::Instant::now() + drain_timeout);
                tracing::info!(
                    "reading {} to its end before stopping (at most {})",
                    names[i],
                    humantime::format_duration(drain_timeout)
                );
            }
            _ = sleep_until(drain_until) => {
                state.stop.store(true, Ordering::Relaxed);
                let end = stopped(&last);
                tracing::warn!(
                    "{} did not end within {} of the signal (--shutdown-timeout): stopped reading it",
                    names[state.current.load(Ordering::Relaxed)],
                    humantime::format_duration(drain_timeout)
                );
                return Ok(end);
            }
            batch = raw_rx.recv() => match batch {
                None if state.finished.load(Ordering::Relaxed) => return Ok(ReadEnd::Complete),
                None => return Ok(stopped(&last)),
                Some(Err(e)) => return Err(Error::from(anyhow::Error::new(e).context("reading input"))),
                Some(Ok(mut batch)) => {
                    let end = batch.events.last().map(|e| (batch.source.clone(), e.line));
                    let n = batch.len() as u64;
                    tally.consumed(n, batch.bytes.unwrap_or(0));
                    // Its lines were read since the last batch was handed on.
                    crate::trace::source("reader", &mut batch, handed, &[]);
                    handed = std::time::SystemTime::now();
                    if let Some(tap) = &tap {
                        tap.offer(&batch);
                    }
                    if tx.send(batch).await.is_err() {
                        return Ok(ReadEnd::Complete);
                    }
                    tally.sent(n);
                    if end.is_some() {
                        last = end;
                    }
                }
            },
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn read_blocking(
    inputs: Vec<Input>,
    max_line_bytes: u64,
    tx: Sender<io::Result<Batch>>,
    state: &ReadState,
) {
    for (i, mut input) in inputs.into_iter().enumerate() {
        if i > 0 && state.last_input.load(Ordering::Relaxed) {
            return;
        }
        state.current.store(i, Ordering::Relaxed);
        let mut framer = Framer::new(max_line_bytes);
        loop {
            if state.stop.load(Ordering::Relaxed) {
                return;
            }
            let mut buf = framer.next_read_buffer(READ_CHUNK);
            let carried = buf.len() - READ_CHUNK;
            let n = match input.reader.read(&mut buf[carried..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    buf.truncate(carried);
                    framer.carry = buf;
                    continue;
                }
                Err(e) => {
                    let e = io::Error::new(e.kind(), format!("{}: {e}", input.name));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut events = Vec::with_capacity(1024);
            buf.truncate(carried + n);
            if n == 0 {
                framer.carry = buf;
                framer.finish(&mut events);
            } else {
                // Events share the buffer until they are written.
                framer.feed_buffer(buf, &mut events);
            }
            // What the lines took of the buffer (the rest is carried to the next read).
            let bytes = (carried + n).saturating_sub(framer.carry.len()) as u64;
            let mut batch = Batch::new(input.name.clone(), events);
            batch.bytes = Some(bytes);
            if !batch.is_empty() && tx.blocking_send(Ok(batch)).is_err() {
                return;
            }
            if n == 0 {
                break;
            }
        }
    }
    state.finished.store(true, Ordering::Relaxed);
}

/// Writes batches from `rx` to `out` until the channel closes. Events are dropped (their
/// acks fire) only after the bytes holding them were written.
pub async fn write(
    rx: Receiver<Batch>,
    out: impl Write + Send + 'static,
    tally: Tally,
    tap: Option<std::sync::Arc<crate::tap::Feed>>,
) -> Result<()> {
    let written = tokio::task::spawn_blocking(move || write_blocking(rx, out, tally, tap)).await;
    Error::joined("writer", written)?
        .map_err(|e| Error::from(anyhow::Error::new(e).context("writing output")))
}

fn write_blocking(
    mut rx: Receiver<Batch>,
    mut out: impl Write,
    tally: Tally,
    tap: Option<std::sync::Arc<crate::tap::Feed>>,
) -> io::Result<()> {
    let mut held: Vec<Event> = Vec::new();
    let result = write_all_batches(&mut rx, &mut out, &tally, &mut held, tap.as_deref());
    if result.is_err() {
        // Nothing here may count as handled: what was not written is lost, and its sources
        // must know.
        crate::event::lose_queued(&mut rx, held);
    }
    result
}

fn write_all_batches(
    rx: &mut Receiver<Batch>,
    out: &mut impl Write,
    tally: &Tally,
    held: &mut Vec<Event>,
    tap: Option<&crate::tap::Feed>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUFFER + 64 * 1024);
    let mut last_flush = Instant::now();
    // Writes what is buffered, then `direct` (lines written as they are); the events
    // held for them may then go.
    let mut flush = |buf: &mut Vec<u8>,
                     direct: &[u8],
                     held: &mut Vec<Event>,
                     last: &mut Instant|
     -> io::Result<()> {
        if !buf.is_empty() || !direct.is_empty() {
            out.write_all(buf)?;
            out.write_all(direct)?;
            out.flush()?;
            buf.clear();
        }
        held.clear();
        *last = Instant::now();
        Ok(())
    };
    loop {
        let batch = match rx.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                // Input is idle: never hold output back while waiting.
                flush(&mut buf, &[], held, &mut last_flush)?;
                match rx.blocking_recv() {
                    Some(b) => b,
                    None => break,
                }
            }
        };
        tally.received(batch.len() as u64);
        tally.sent(batch.len() as u64);
        let traced = crate::trace::begin(&batch);
        if let Some(tap) = tap {
            tap.offer(&batch);
        }
        match Event::contiguous_lines(&batch.events) {
            // A large batch whose lines lie back to back in one buffer (a source's, or a
            // stage's that rewrote them) goes out as it is, after what is buffered.
            Some(text) if text.len() >= DIRECT_WRITE => {
                flush(&mut buf, text.as_bytes(), held, &mut last_flush)?;
            }
            _ => {
                for e in batch.events {
                    buf.extend_from_slice(e.bytes());
                    buf.push(b'\n');
                    if e.ack.is_some() {
                        held.push(e);
                    }
                }
            }
        }
        if buf.len() >= WRITE_BUFFER || last_flush.elapsed() >= FLUSH_INTERVAL {
            flush(&mut buf, &[], held, &mut last_flush)?;
        }
        crate::trace::done(traced, "writer", 0);
    }
    flush(&mut buf, &[], held, &mut last_flush)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: u64) -> Vec<(u64, Vec<u8>, bool)> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        f.finish(&mut out);
        out.into_iter()
            .map(|mut e| {
                let long = e.decode().is_err_and(|r| r.kind == "line_too_long");
                (e.line, e.bytes().to_vec(), long)
            })
            .collect()
    }

    #[test]
    fn lines_bom_crlf_blank_and_last_line() {
        let got = frame(
            &[b"\xEF\xBB\xBF{\"a\":1}\r\n\n  \r\n{\"b\"", b":2}\n{}"],
            100,
        );
        assert_eq!(
            got,
            vec![
                (1, b"{\"a\":1}".to_vec(), false),
                (4, b"{\"b\":2}".to_vec(), false),
                (5, b"{}".to_vec(), false),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_across_chunks() {
        let got = frame(&[b"{\"a\":\"xxxx", b"xxxxxxx", b"xx\"}\n{}\n"], 8);
        assert_eq!(got.len(), 2);
        assert!(got[0].2);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1], (2, b"{}".to_vec(), false));
        let got = frame(&[b"{\"a\":\"xxxxxxxxxxxxx\"}\n{}\n"], 8);
        assert!(got[0].2);
        // A line of exactly max bytes, with CRLF, is fine.
        let got = frame(&[b"{\"a\":11}\r\n"], 8);
        assert_eq!(got, vec![(1, b"{\"a\":11}".to_vec(), false)]);
    }

    /// A line spanning many reads is framed in linear time. Each read used to copy and
    /// search the whole carried line again: 64 MB in 256 KiB reads moved about 8 GB
    /// (seconds); now it is a few milliseconds. The bound leaves a wide margin.
    #[test]
    fn a_line_spanning_many_reads_is_linear() {
        let chunk = vec![b'x'; READ_CHUNK];
        let mut f = Framer::new(128 << 20);
        let mut out = Vec::new();
        let start = Instant::now();
        let mut buf = f.next_buffer(2);
        buf.extend_from_slice(b"{\"");
        f.feed_buffer(buf, &mut out);
        for _ in 0..256 {
            let mut buf = f.next_buffer(READ_CHUNK);
            buf.extend_from_slice(&chunk);
            f.feed_buffer(buf, &mut out);
        }
        let mut buf = f.next_buffer(3);
        buf.extend_from_slice(b"\"}\n");
        f.feed_buffer(buf, &mut out);
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes().len(), 256 * READ_CHUNK + 4);
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"{\"a\":1}\r\n\n{\"b\":[1,2,3]}\n{\"c\":\"zz\"}";
        let whole = frame(&[input], 10);
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frame(&pieces, 10), whole);
    }
}
