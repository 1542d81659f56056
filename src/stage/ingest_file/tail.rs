//! One file being read: where its next line starts, the unfinished line at its end, and
//! reading what was appended as lines with their byte offsets.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::dead_letter::RAW_LIMIT;
use crate::ndjson::Compression;

use super::identity::FileId;

/// Bytes asked of each read: the lines of one read become one batch (as the NDJSON
/// reader's 256 KiB), so a batch is a few hundred to a few thousand events.
pub const READ_CHUNK: usize = 256 * 1024;

/// A line as read: its bytes (without the newline), where it starts and where the next
/// one starts, and its number in the file.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub at: u64,
    pub end: u64,
    pub number: u64,
    /// A line longer than `--max-line-bytes`: `bytes` is its first 8 KiB, this its length.
    pub oversized: Option<u64>,
}

/// A followed file.
pub struct Tailed {
    /// The name it was last seen under.
    pub path: PathBuf,
    pub name: Arc<str>,
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub id: FileId,
    /// The epoch its position was claimed with (`--positions-from`).
    pub epoch: Option<i64>,
    pub compression: Option<Compression>,
    /// A compressed file's decompressed stream, positioned at `offset`, while being read.
    decoder: Option<Box<dyn Read + Send>>,
    /// The next byte to read (of the decompressed text, for a compressed file).
    pub offset: u64,
    /// Lines before the carried one.
    pub line: u64,
    /// The start of a line whose newline has not come yet.
    carry: Vec<u8>,
    /// Inside a line longer than the limit: its first bytes and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
    /// The size it had when last looked at (as stored), and when that changed.
    pub size: u64,
    pub changed: Instant,
    /// When its name stopped leading to it (rotated away or deleted).
    pub gone_since: Option<Instant>,
    /// Read to its end for good (a corrupt compressed stream).
    pub finished: bool,
    /// Truncated: no longer read as this identity (it is identified again).
    pub retired: bool,
}

/// How a read ended.
pub enum Got {
    /// Bytes were read; there may be more.
    Bytes(u64),
    /// At the end of what has been written.
    End,
    /// The file is shorter than the position: truncated (or rewritten).
    Truncated,
}

impl Tailed {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: PathBuf,
        file: File,
        id: FileId,
        epoch: Option<i64>,
        compression: Option<Compression>,
        offset: u64,
        line: u64,
        size: u64,
    ) -> Tailed {
        Tailed {
            name: path.display().to_string().into(),
            path,
            dev: id.dev,
            ino: id.ino,
            id,
            epoch,
            compression,
            decoder: None,
            file,
            offset,
            line,
            carry: Vec::new(),
            skipping: None,
            size,
            changed: Instant::now(),
            gone_since: None,
            finished: false,
            retired: false,
        }
    }

    /// The position after the last complete line: where a restart resumes.
    pub fn resume_at(&self) -> u64 {
        self.offset - self.carried()
    }

    fn carried(&self) -> u64 {
        match &self.skipping {
            Some((_, len)) => *len,
            None => self.carry.len() as u64,
        }
    }

    /// Reads up to `budget` bytes, calling `each` for every complete line, in order.
    /// `buf` is scratch space.
    pub fn read(
        &mut self,
        budget: usize,
        max_line: u64,
        buf: &mut Vec<u8>,
        each: &mut dyn FnMut(Line),
    ) -> io::Result<Got> {
        let stored = self.file.metadata()?.len();
        if stored != self.size {
            self.size = stored;
            self.changed = Instant::now();
        }
        if self.compression.is_none() && stored < self.offset {
            return Ok(Got::Truncated);
        }
        buf.resize(budget.max(1), 0);
        let n = match self.compression {
            None => loop {
                match self.file.read_at(buf, self.offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            },
            Some(_) => {
                let decoder = match &mut self.decoder {
                    Some(d) => d,
                    None => self.decoder.insert(self.decompressed()?),
                };
                let n = decoder.read(buf)?;
                if n == 0 {
                    self.decoder = None;
                }
                n
            }
        };
        if n == 0 {
            return Ok(Got::End);
        }
        // Rewritten in place (truncated, then written past the old end) since the last
        // read: these bytes are of another file. Checked after the read, so that a
        // rewrite that races it is caught too.
        if self.compression.is_none() && !self.id.matches(&self.file)? {
            return Ok(Got::Truncated);
        }
        self.frame(&buf[..n], max_line, each);
        Ok(Got::Bytes(n as u64))
    }

    /// A compressed file's text from the start, with what was read before skipped.
    fn decompressed(&self) -> io::Result<Box<dyn Read + Send>> {
        let f = self.file.try_clone()?;
        let raw = io::BufReader::with_capacity(READ_CHUNK, ReadAt { file: f, at: 0 });
        let mut d: Box<dyn Read + Send> = match self.compression {
            Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
            None => unreachable!("only compressed files are decompressed"),
        };
        let skipped = io::copy(&mut (&mut d).take(self.offset), &mut io::sink())?;
        if skipped < self.offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shorter than the stored position",
            ));
        }
        Ok(d)
    }

    /// Splits `bytes` (read at `self.offset`) into lines; keeps an unfinished one.
    fn frame(&mut self, bytes: &[u8], max_line: u64, each: &mut dyn FnMut(Line)) {
        let base = self.offset;
        self.offset += bytes.len() as u64;
        let mut start = 0;
        if let Some((prefix, len)) = &mut self.skipping {
            let Some(nl) = memchr::memchr(b'\n', bytes) else {
                *len += bytes.len() as u64;
                let keep = RAW_LIMIT.saturating_sub(prefix.len()).min(bytes.len());
                prefix.extend_from_slice(&bytes[..keep]);
                return;
            };
            *len += nl as u64;
            let keep = RAW_LIMIT.saturating_sub(prefix.len()).min(nl);
            prefix.extend_from_slice(&bytes[..keep]);
            let (prefix, len) = self.skipping.take().expect("skipping");
            self.line += 1;
            let end = base + nl as u64 + 1;
            each(Line {
                bytes: &prefix,
                at: end - len - 1,
                end,
                number: self.line,
                oversized: Some(len),
            });
            start = nl + 1;
        }
        // A carried line is completed by the first newline of this read.
        if !self.carry.is_empty() {
            let rest = &bytes[start..];
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let mut carry = std::mem::take(&mut self.carry);
                    carry.extend_from_slice(&rest[..nl]);
                    let at = base + start as u64 - (carry.len() - nl) as u64;
                    self.line += 1;
                    let end = base + (start + nl) as u64 + 1;
                    emit(&carry, at, end, self.line, max_line, each);
                    start += nl + 1;
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    self.check_carry(max_line);
                    return;
                }
            }
        }
        let from = start;
        for nl in memchr::memchr_iter(b'\n', &bytes[from..]).map(|i| from + i) {
            self.line += 1;
            emit(
                &bytes[start..nl],
                base + start as u64,
                base + nl as u64 + 1,
                self.line,
                max_line,
                each,
            );
            start = nl + 1;
        }
        self.carry.extend_from_slice(&bytes[start..]);
        self.check_carry(max_line);
    }

    /// An unfinished line past the limit is not held whole: only its first bytes.
    fn check_carry(&mut self, max_line: u64) {
        if self.carry.len() as u64 > max_line + 1 {
            let mut prefix = std::mem::take(&mut self.carry);
            let len = prefix.len() as u64;
            prefix.truncate(RAW_LIMIT);
            self.skipping = Some((prefix, len));
        }
    }

    /// The end of the input (not following): an unfinished last line is a line.
    pub fn finish(&mut self, max_line: u64, each: &mut dyn FnMut(Line)) {
        let end = self.offset;
        if let Some((prefix, len)) = self.skipping.take() {
            self.line += 1;
            each(Line {
                bytes: &prefix,
                at: end - len,
                end,
                number: self.line,
                oversized: Some(len),
            });
        } else if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            self.line += 1;
            emit(
                &carry,
                end - carry.len() as u64,
                end,
                self.line,
                max_line,
                each,
            );
        }
    }

    /// Whether its name still leads to it, and it still has a name (`nlink` > 0).
    pub fn linked(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() > 0)
    }
}

/// Calls `each` for one complete line, trimmed of a `\r`; an over-long one as such.
fn emit(bytes: &[u8], at: u64, end: u64, number: u64, max_line: u64, each: &mut dyn FnMut(Line)) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let oversized = (bytes.len() as u64 > max_line).then_some(bytes.len() as u64);
    let shown = if oversized.is_some() {
        &bytes[..RAW_LIMIT.min(bytes.len())]
    } else {
        bytes
    };
    each(Line {
        bytes: shown,
        at,
        end,
        number,
        oversized,
    });
}

/// Reads a file from an offset on with `pread`, leaving the descriptor's own offset
/// alone (a compressed file's stream and its identity checks share one descriptor).
struct ReadAt {
    file: File,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Lines (newlines) in the first `upto` bytes of `file`: the line number of a position
/// that was stored without one.
pub fn count_lines(file: &File, upto: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut at, mut lines) = (0u64, 0u64);
    while at < upto {
        let want = usize::try_from(upto - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        at += n as u64;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tailed(text: &[u8]) -> (tempfile::TempDir, Tailed) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, text).unwrap();
        let f = File::open(&p).unwrap();
        let id = FileId::of(&f, 1).unwrap().unwrap();
        (dir, Tailed::new(p, f, id, None, None, 0, 0, 0))
    }

    fn lines(t: &mut Tailed, chunk: usize, max: u64) -> Vec<(String, u64, u64, u64)> {
        let mut got = Vec::new();
        let mut buf = Vec::new();
        let mut each = |l: Line| {
            got.push((
                String::from_utf8_lossy(l.bytes).into_owned(),
                l.at,
                l.end,
                l.number,
            ))
        };
        while let Got::Bytes(_) = t.read(chunk, max, &mut buf, &mut each).unwrap() {}
        got
    }

    #[test]
    fn lines_keep_their_offsets_across_reads_and_a_partial_line_waits() {
        let text = b"{\"a\":1}\r\n\n{\"b\":22}\n{\"c\"";
        for chunk in [1, 3, 7, 64] {
            let (_d, mut t) = tailed(text);
            let got = lines(&mut t, chunk, 1024);
            assert_eq!(
                got,
                [
                    ("{\"a\":1}".to_owned(), 0, 9, 1),
                    (String::new(), 9, 10, 2),
                    ("{\"b\":22}".to_owned(), 10, 19, 3)
                ],
                "chunk {chunk}"
            );
            assert_eq!(t.resume_at(), 19);
            let mut last = Vec::new();
            t.finish(1024, &mut |l: Line| last.push((l.at, l.end, l.number)));
            assert_eq!(last, [(19, 23, 4)]);
        }
    }

    #[test]
    fn an_over_long_line_is_not_held_whole() {
        let mut text = vec![b'x'; 5000];
        text.extend_from_slice(b"\n{}\n");
        for chunk in [16, 4096, 10_000] {
            let (_d, mut t) = tailed(&text);
            let mut got = Vec::new();
            let mut buf = Vec::new();
            let mut each = |l: Line| got.push((l.bytes.len(), l.at, l.end, l.oversized));
            while let Got::Bytes(_) = t.read(chunk, 100, &mut buf, &mut each).unwrap() {}
            assert_eq!(
                got,
                [(5000, 0, 5001, Some(5000)), (2, 5001, 5004, None)],
                "chunk {chunk}"
            );
        }
    }
}
