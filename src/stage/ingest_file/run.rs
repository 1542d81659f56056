//! The reading loop, on a thread of its own: list the globs, open and identify what
//! they match, read every file's new lines into batches, and (following) wait for the
//! next change; notice rotation, truncation and deletion as it goes.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use crate::event::{Batch, Event};
use crate::exit::{Error, Exit, Result};
use crate::ndjson::Compression;
use crate::stage::{Ctx, Ended, Stopped};

use super::config::Config;
use super::discover::Listing;
use super::identity::FileId;
use super::render::{dead_letter, push_meta, render, FileText, Names};
use super::store::{entry, Store};
use super::tail::{count_lines, Got, Line, Tailed, READ_CHUNK};
use super::watch::Waker;
use super::{From, FILES, FILES_OPEN, ROTATIONS, TRUNCATIONS, UNREADABLE};

/// Reads of one file in a row while following, before the other files get theirs: a
/// file written fast does not starve the others (16 × 256 KiB = 4 MiB).
const READS_PER_TURN: usize = 16;

/// How long the end of a run waits for the last batches to be handled before writing
/// the positions file (the writer drains within `--shutdown-timeout` anyway).
const SETTLE: Duration = Duration::from_secs(30);

/// Reads until the end (not following), `--exit-when-idle`, shutdown, or a closed output.
pub fn read_files(
    cfg: Config,
    output: Sender<Batch>,
    ctx: Ctx,
    consumed: Arc<AtomicU64>,
) -> Result<Ended> {
    let store = Store::open(&cfg.positions)?;
    let names = Names::new(&ctx.meta_field, store.positions_name(), cfg.max_line_bytes);
    let mut reader = Reader {
        store,
        names,
        files: Vec::new(),
        waiting: Vec::new(),
        refused: HashSet::new(),
        unreadable: 0,
        consumed,
        buf: Vec::new(),
        closed: false,
        first: true,
        warned_unmatched: HashSet::new(),
        cfg,
        output,
        ctx,
    };
    let ended = reader.run();
    let settled = reader.store.finish(SETTLE);
    let ended = ended?;
    settled?;
    if reader.unreadable > 0 {
        return Err(Error::new(
            Exit::IoErr,
            anyhow::anyhow!(
                "{} file(s) or directories could not be read (see above); the others were",
                reader.unreadable
            ),
        ));
    }
    Ok(ended)
}

struct Reader {
    cfg: Config,
    ctx: Ctx,
    output: Sender<Batch>,
    store: Store,
    names: Names,
    /// The files being read, in the order they were found.
    files: Vec<Tailed>,
    /// Files too short to identify yet (see [`super::identity`]).
    waiting: Vec<Waiting>,
    /// Paths refused or unreadable: logged once each.
    refused: HashSet<PathBuf>,
    unreadable: u64,
    /// Stored bytes read, for the progress bar.
    consumed: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// The output closed: stop quietly.
    closed: bool,
    /// The first listing, to which `--from` applies.
    first: bool,
    warned_unmatched: HashSet<String>,
}

/// A file shorter than `--fingerprint-bytes`: identified once it grows, or once it has
/// been quiet for `--rotate-wait`.
struct Waiting {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    size: u64,
    changed: Instant,
    /// Where it starts once identified: its size when first seen, for a file found at
    /// start with `--from end`.
    start: Option<u64>,
}

impl Reader {
    fn run(&mut self) -> Result<Ended> {
        let listing = self.cfg.globs.list(self.cfg.order);
        if !self.cfg.follow {
            if let Some(glob) = listing.unmatched.first() {
                return Err(Error::no_input(format!("{glob}: no such file")));
            }
        }
        self.adopt(listing)?;
        self.first = false;
        if !self.cfg.follow {
            return self.read_once();
        }
        let mut waker = Waker::new(&self.cfg.globs, self.cfg.poll);
        let mut last_change = Instant::now();
        let mut last_write = Instant::now();
        loop {
            if self.ctx.shutdown.is_triggered() || self.closed {
                return Ok(Ended::default());
            }
            let got = self.read_round()?;
            if got > 0 {
                last_change = Instant::now();
            }
            if last_write.elapsed() >= super::checkpoint::WRITE_INTERVAL {
                self.store.write()?;
                last_write = Instant::now();
            }
            let idle = self.cfg.exit_when_idle;
            if let Some(idle) = idle {
                if got == 0 && last_change.elapsed() >= idle {
                    return self.read_waiting_and_end();
                }
            }
            // More to read: only look for changes of names (no wait).
            let limit = if got > 0 {
                Some(Duration::ZERO)
            } else {
                idle.map(|i| i.saturating_sub(last_change.elapsed()))
            };
            let wake = waker.wait(&self.ctx.shutdown, limit);
            if wake.rescan {
                let listing = self.cfg.globs.list(self.cfg.order);
                for glob in &listing.unmatched {
                    if self.warned_unmatched.insert(glob.clone()) {
                        tracing::warn!("ingest-file: {glob}: no such file yet; watching for it");
                    }
                }
                if self.adopt_changes(listing)? {
                    last_change = Instant::now();
                }
            }
            if self.identify_waiting()? {
                last_change = Instant::now();
            }
            self.let_go();
        }
    }

    /// `--exit-when-idle` ran out: files still too short to identify are identified by
    /// what they hold (nothing more came for that long) and read, then the run ends. A
    /// last line without its newline stays unread, as while following.
    fn read_waiting_and_end(&mut self) -> Result<Ended> {
        for w in std::mem::take(&mut self.waiting) {
            if let Some(t) = self.identify(w.path, w.file, w.size, w.start, true)? {
                self.files.push(t);
            }
        }
        while !self.closed && !self.ctx.shutdown.is_triggered() && self.read_round()? > 0 {}
        Ok(Ended::default())
    }

    /// Not following: each file in order, to its end, its last line even without a
    /// newline.
    fn read_once(&mut self) -> Result<Ended> {
        let mut files = std::mem::take(&mut self.files);
        // Short files are identified by what they hold now: nothing more is coming.
        for w in std::mem::take(&mut self.waiting) {
            if let Some(t) = self.identify(w.path, w.file, w.size, w.start, true)? {
                files.push(t);
            }
        }
        for mut t in files {
            loop {
                if self.ctx.shutdown.is_triggered() {
                    return Ok(Ended {
                        stopped: Some(Stopped {
                            source: t.name.clone(),
                            line: t.line,
                        }),
                    });
                }
                if self.closed {
                    return Ok(Ended::default());
                }
                if !self.read_file(&mut t, true)? {
                    break;
                }
            }
            self.ctx
                .tally
                .figure(&FILES_OPEN)
                .fetch_sub(1, Ordering::Relaxed);
        }
        Ok(Ended::default())
    }

    /// Opens the files of a listing not known yet, in its order.
    fn adopt(&mut self, listing: Listing) -> Result<()> {
        for (path, e) in listing.unreadable {
            self.unreadable_once(&path, &e);
        }
        for found in listing.found {
            self.open(&found.path)?;
        }
        Ok(())
    }

    /// A new listing while following: renamed files get their new name (a rotation),
    /// new files are opened, files whose name leads elsewhere are let go of once read
    /// to their end. True when anything changed.
    fn adopt_changes(&mut self, listing: Listing) -> Result<bool> {
        let mut changed = false;
        let mut keys = HashSet::new();
        let mut fresh = Vec::new();
        for (path, e) in &listing.unreadable {
            self.unreadable_once(path, e);
        }
        for found in &listing.found {
            let Ok(meta) = std::fs::metadata(&found.path) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            keys.insert(key);
            if let Some(t) = self.files.iter_mut().find(|t| (t.dev, t.ino) == key) {
                let still_there =
                    std::fs::metadata(&t.path).is_ok_and(|m| (m.dev(), m.ino()) == key);
                if t.path != found.path && !still_there {
                    tracing::info!(
                        "ingest-file: {} was renamed to {} (rotated): reading on",
                        t.path.display(),
                        found.path.display()
                    );
                    self.ctx
                        .tally
                        .figure(&ROTATIONS)
                        .fetch_add(1, Ordering::Relaxed);
                    t.path = found.path.clone();
                    t.name = found.path.display().to_string().into();
                    t.gone_since = None;
                    changed = true;
                }
                continue;
            }
            if self.waiting.iter().any(|w| (w.dev, w.ino) == key) {
                continue;
            }
            fresh.push(found.path.clone());
        }
        // Files whose name no longer leads to them: rotated out of the globs, or deleted.
        for t in &mut self.files {
            if t.gone_since.is_none() && !keys.contains(&(t.dev, t.ino)) {
                t.gone_since = Some(Instant::now());
                changed = true;
                if t.linked() {
                    self.ctx
                        .tally
                        .figure(&ROTATIONS)
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "ingest-file: {} was rotated away: reading it to its end (--rotate-wait {:?})",
                        t.path.display(),
                        self.cfg.rotate_wait
                    );
                } else {
                    tracing::info!(
                        "ingest-file: {} was deleted: reading what is left of it",
                        t.path.display()
                    );
                }
            }
        }
        // Rewritten in place from the start (copytruncate, then written past the old
        // end before this look): its first bytes changed.
        let rewritten: Vec<usize> = (0..self.files.len())
            .filter(|&i| {
                let t = &self.files[i];
                t.gone_since.is_none() && t.id.matches(&t.file).is_ok_and(|same| !same)
            })
            .collect();
        for i in rewritten.into_iter().rev() {
            let mut t = self.files.remove(i);
            self.truncated(&mut t);
            self.ctx
                .tally
                .figure(&FILES_OPEN)
                .fetch_sub(1, Ordering::Relaxed);
            changed = true;
        }
        self.waiting.retain(|w| keys.contains(&(w.dev, w.ino)));
        for path in fresh {
            changed |= self.open(&path)?;
        }
        Ok(changed)
    }

    /// Lets go of files gone (rotated away or deleted) and read to their end, quiet for
    /// `--rotate-wait`.
    fn let_go(&mut self) {
        let wait = self.cfg.rotate_wait;
        let before = self.files.len();
        self.files.retain(|t| {
            let keep = match t.gone_since {
                Some(since) => since.elapsed() < wait || t.changed.elapsed() < wait,
                None => true,
            };
            if !keep {
                tracing::info!("ingest-file: {}: read to its end, let go", t.path.display());
            }
            keep
        });
        let gone = (before - self.files.len()) as u64;
        self.ctx
            .tally
            .figure(&FILES_OPEN)
            .fetch_sub(gone, Ordering::Relaxed);
    }

    /// Opens a matched path; true when it became a file being read (or waiting).
    fn open(&mut self, path: &Path) -> Result<bool> {
        // Non-blocking: a FIFO that matches a glob is refused below, not waited on.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                self.unreadable_once(path, &e);
                return Ok(false);
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.unreadable_once(path, &e);
                return Ok(false);
            }
        };
        if !meta.is_file() {
            if !meta.is_dir() {
                let e = io::Error::other("not a regular file (a FIFO, socket or device): refused");
                self.unreadable_once(path, &e);
            }
            return Ok(false);
        }
        if self
            .files
            .iter()
            .any(|t| (t.dev, t.ino) == (meta.dev(), meta.ino()))
        {
            return Ok(false);
        }
        let size = meta.len();
        let start = (self.first && self.cfg.from == From::End).then_some(size);
        if let Some(t) = self.identify(path.to_owned(), file, size, start, !self.cfg.follow)? {
            self.files.push(t);
        }
        Ok(true)
    }

    /// Identifies an open file and decides where it starts (`start` when not known
    /// already, else 0); `None` while it is too short to identify (it waits), or empty
    /// when nothing more will come (`now`).
    fn identify(
        &mut self,
        path: PathBuf,
        file: File,
        size: u64,
        start: Option<u64>,
        now: bool,
    ) -> Result<Option<Tailed>> {
        let known = match self.store.recognise(&file) {
            Ok(k) => k,
            Err(e) => {
                self.unreadable_once(&path, &e);
                return Ok(None);
            }
        };
        let (id, mut offset, mut line) = match known {
            Some(k) => (k.id, k.offset, k.line),
            None => {
                let len = self.cfg.fingerprint_bytes;
                let id = match FileId::of(&file, len) {
                    Ok(Some(id)) => id,
                    Ok(None) if now && size > 0 => match FileId::of(&file, size) {
                        Ok(Some(id)) => id,
                        Ok(None) => return Ok(None), // shrank meanwhile
                        Err(e) => {
                            self.unreadable_once(&path, &e);
                            return Ok(None);
                        }
                    },
                    Ok(None) => {
                        if !now {
                            let meta = file.metadata().map_err(|e| Error::new(Exit::IoErr, e))?;
                            self.waiting.push(Waiting {
                                dev: meta.dev(),
                                ino: meta.ino(),
                                path,
                                file,
                                size,
                                changed: Instant::now(),
                                start,
                            });
                        }
                        return Ok(None);
                    }
                    Err(e) => {
                        self.unreadable_once(&path, &e);
                        return Ok(None);
                    }
                };
                // A file found at start with no stored position begins as --from says;
                // one that appears later, at its beginning.
                (id, start.unwrap_or(0), None)
            }
        };
        let (committed, epoch) = self.store.claim(&id)?;
        if let Some(next) = committed {
            offset = next;
            line = None;
        }
        let compression = sniff(&file);
        let line = match line {
            Some(l) => l,
            // Offsets of a compressed file are of its text: its lines are not counted.
            None if compression.is_some() => 0,
            None => count_lines(&file, offset).map_err(|e| Error::new(Exit::IoErr, e))?,
        };
        if offset > 0 {
            tracing::info!(
                "ingest-file: {}: resuming at byte {offset} (line {})",
                path.display(),
                line + 1
            );
        }
        self.store.seen(&id);
        self.ctx
            .tally
            .figure(&FILES_OPEN)
            .fetch_add(1, Ordering::Relaxed);
        self.ctx
            .tally
            .figure(&FILES)
            .fetch_add(1, Ordering::Relaxed);
        if compression.is_none() && !self.cfg.follow {
            // The progress bar counts stored bytes: what was read before counts as read.
            self.consumed.fetch_add(offset.min(size), Ordering::Relaxed);
        }
        Ok(Some(Tailed::new(
            path,
            file,
            id,
            epoch,
            compression,
            offset,
            line,
            size,
        )))
    }

    /// Identifies waiting files that grew long enough or stayed quiet long enough.
    fn identify_waiting(&mut self) -> Result<bool> {
        let mut changed = false;
        let wait = self.cfg.rotate_wait;
        for mut w in std::mem::take(&mut self.waiting) {
            let size = w.file.metadata().map(|m| m.len()).unwrap_or(w.size);
            if size != w.size {
                w.size = size;
                w.changed = Instant::now();
                changed = true; // growing: not idle
            }
            let quiet = w.size > 0 && w.changed.elapsed() >= wait;
            if w.size >= self.cfg.fingerprint_bytes || quiet {
                if let Some(t) = self.identify(w.path, w.file, w.size, w.start, quiet)? {
                    self.files.push(t);
                    changed = true;
                }
            } else {
                self.waiting.push(w);
            }
        }
        Ok(changed)
    }

    /// One turn over every file while following; returns the bytes read.
    fn read_round(&mut self) -> Result<u64> {
        let mut total = 0;
        let mut files = std::mem::take(&mut self.files);
        for t in &mut files {
            for _ in 0..READS_PER_TURN {
                if self.closed || self.ctx.shutdown.is_triggered() {
                    break;
                }
                let before = t.offset;
                if !self.read_file(t, false)? {
                    break;
                }
                total += t.offset - before;
            }
            self.store.seen(&t.id);
        }
        // A truncated file waits to be identified again (see `truncated`).
        let before = files.len();
        files.retain(|t| !t.retired);
        let retired = (before - files.len()) as u64;
        self.ctx
            .tally
            .figure(&FILES_OPEN)
            .fetch_sub(retired, Ordering::Relaxed);
        files.append(&mut self.files);
        self.files = files;
        Ok(total)
    }

    /// Reads the next chunk of `t` and sends its lines on as one batch. False at the end
    /// of what is written (after the last line, when `at_end_finish`: nothing more will
    /// come).
    fn read_file(&mut self, t: &mut Tailed, at_end_finish: bool) -> Result<bool> {
        if t.finished {
            return Ok(false);
        }
        let text = FileText::new(t);
        let mut batch = Pending::new(&text);
        let names = &self.names;
        let mut each = |line: Line| batch.line(&line, names, &text);
        let got = t.read(
            READ_CHUNK,
            self.cfg.max_line_bytes,
            &mut self.buf,
            &mut each,
        );
        let more = match got {
            Ok(Got::Bytes(n)) => {
                if t.compression.is_none() {
                    self.consumed.fetch_add(n, Ordering::Relaxed);
                }
                self.ctx.tally.consumed(0, n);
                true
            }
            Ok(Got::End) => {
                if at_end_finish {
                    t.finish(self.cfg.max_line_bytes, &mut each);
                    if t.compression.is_some() {
                        self.consumed.fetch_add(t.size, Ordering::Relaxed);
                    }
                }
                false
            }
            Ok(Got::Truncated) => {
                self.truncated(t);
                return Ok(false);
            }
            Err(e) if t.compression.is_some() => {
                self.corrupt(t, &e)?;
                return Ok(false);
            }
            Err(e) => {
                self.unreadable_once(&t.path.clone(), &e);
                t.finished = true;
                return Ok(false);
            }
        };
        self.send(t, batch)?;
        Ok(more)
    }

    /// Sends a read's events on; records where the file then stands.
    fn send(&mut self, t: &Tailed, batch: Pending) -> Result<()> {
        let Pending {
            text,
            spans,
            rejects,
            lines,
            ..
        } = batch;
        self.ctx.tally.consumed(lines, 0);
        for (mut event, reject) in rejects {
            self.ctx
                .dead
                .keep("ingest-file", &t.name, &mut event, &reject)?;
            self.ctx.tally.rejected(1);
        }
        let after = vec![entry(&t.id, &t.name, t.resume_at(), t.line)];
        if spans.is_empty() {
            if lines > 0 || t.offset > 0 {
                self.store.reached(after);
            }
            return Ok(());
        }
        let ack = self.store.ticket(after);
        self.ctx.tally.sent(spans.len() as u64);
        let chunk = crate::event::chunk(text);
        let events = spans
            .into_iter()
            .map(|(start, end, line)| {
                let mut e = Event::from_chunk(chunk.clone(), start, end, line);
                e.ack = ack.clone();
                e
            })
            .collect();
        let mut batch = Batch::new(t.name.clone(), events);
        if self.ctx.measure_batches {
            batch.bytes = Some(batch.size());
        }
        crate::trace::source("ingest-file", &mut batch, std::time::SystemTime::now(), &[]);
        drop(ack);
        if self.output.blocking_send(batch).is_err() {
            // The output closed (`| head`): these lines were not written; their
            // positions are not recorded.
            self.closed = true;
        }
        Ok(())
    }

    /// The file got shorter than what was read: read it again from its start, as a new
    /// file (its first bytes are new).
    fn truncated(&mut self, t: &mut Tailed) {
        tracing::warn!(
            "ingest-file: {} was truncated (now {} bytes, read up to {}): reading it from the start",
            t.path.display(),
            t.size,
            t.offset
        );
        self.ctx
            .tally
            .figure(&TRUNCATIONS)
            .fetch_add(1, Ordering::Relaxed);
        // Its identity covered bytes that are gone: it is identified again by what it
        // holds now, as a new file (a claim of its own in exactly-once mode), from 0.
        t.retired = true;
        if let Ok(file) = t.file.try_clone() {
            self.waiting.push(Waiting {
                path: t.path.clone(),
                file,
                dev: t.dev,
                ino: t.ino,
                size: t.size,
                changed: Instant::now(),
                start: None,
            });
        }
    }

    /// A compressed stream that cannot be decompressed: the rest of the file is one
    /// dead letter; the other files go on.
    fn corrupt(&mut self, t: &mut Tailed, e: &io::Error) -> Result<()> {
        if self.cfg.follow
            && e.kind() == io::ErrorKind::UnexpectedEof
            && t.changed.elapsed() < self.cfg.rotate_wait
        {
            return Ok(()); // still being written: try again when it changes
        }
        let reason = format!(
            "corrupt {} stream after {} bytes of text: {e}; the rest of the file is skipped",
            match t.compression {
                Some(Compression::Zstd) => "zstd",
                _ => "gzip",
            },
            t.resume_at()
        );
        let mut event = Event::from_line(Vec::new(), t.line + 1);
        self.ctx.dead.keep(
            "ingest-file",
            &t.name,
            &mut event,
            &crate::event::Reject::new("corrupt_compression", reason),
        )?;
        self.ctx.tally.consumed(1, 0);
        self.ctx.tally.rejected(1);
        t.finished = true;
        Ok(())
    }

    /// Logs a path that cannot be read, once; it counts toward exit 74.
    fn unreadable_once(&mut self, path: &Path, e: &io::Error) {
        if self.refused.insert(path.to_owned()) {
            tracing::error!("ingest-file: {}: {e}; skipped", path.display());
            self.unreadable += 1;
            self.ctx
                .tally
                .figure(&UNREADABLE)
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The compression a file's first bytes name.
fn sniff(f: &File) -> Option<Compression> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 4];
    let n = f.read_at(&mut head, 0).unwrap_or(0);
    Compression::sniff(&head[..n])
}

/// The events of one read being made: one text buffer, the spans of the events in it.
struct Pending {
    text: String,
    spans: Vec<(usize, usize, u64)>,
    rejects: Vec<(Event, crate::event::Reject)>,
    /// Lines read (blank ones aside).
    lines: u64,
    meta: String,
}

impl Pending {
    fn new(file: &FileText) -> Pending {
        Pending {
            text: String::with_capacity(READ_CHUNK + READ_CHUNK / 2 + file.path.len()),
            spans: Vec::new(),
            rejects: Vec::new(),
            lines: 0,
            meta: String::with_capacity(128),
        }
    }

    fn line(&mut self, line: &Line, names: &Names, file: &FileText) {
        if line.oversized.is_none() && line.bytes.iter().all(u8::is_ascii_whitespace) {
            return; // blank: numbered, not an event
        }
        self.lines += 1;
        let bytes = if line.number == 1 {
            line.bytes
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(line.bytes)
        } else {
            line.bytes
        };
        let line = &Line { bytes, ..*line };
        self.meta.clear();
        push_meta(&mut self.meta, file, line, names);
        let at = self.text.len();
        match render(line, &self.meta, names, &mut self.text) {
            Ok(()) => self.spans.push((at, self.text.len(), line.number)),
            Err(reject) => {
                self.text.truncate(at);
                self.rejects.push((dead_letter(line, names), reject));
            }
        }
    }
}
