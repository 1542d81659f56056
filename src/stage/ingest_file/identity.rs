//! Which file is which: device and inode, and a fingerprint of the first bytes.
//!
//! Device + inode alone is what most tailers key on, and inodes are reused: a log deleted
//! and a new one created a moment later often gets the same number, and a tailer that
//! trusts it skips the new file's first bytes (vector#23076, logstash#4566). A
//! fingerprint alone confuses two files that start alike (vector#5833) and calls every
//! empty file the same (vector#643). Both together tell apart everything but a file
//! rewritten in place from its first byte on (which truncation detection catches).
//!
//! The fingerprint is the first `len` bytes' SHA-256 (as stored: compressed bytes for a
//! compressed file), `len` being `--fingerprint-bytes`, or less for a file identified
//! while shorter than that; `len` is part of the identity, so a short file that grows
//! later is still recognised by the bytes it was identified with.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use sha2::{Digest, Sha256};

/// Hex digits of the hash kept in an identity: 64 bits, enough to tell apart the
/// files of one inode number.
const HASH_HEX: usize = 16;

/// A file's identity: `DEV:INODE:LEN:HASH` in `_meta.file_id` and in stored positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// How many first bytes the hash covers.
    pub len: u64,
    pub hash: String,
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.dev, self.ino, self.len, self.hash)
    }
}

impl FileId {
    /// Parses the text form; `None` for anything else (a foreign row of a shared table).
    pub fn parse(s: &str) -> Option<FileId> {
        let mut parts = s.splitn(4, ':');
        let id = FileId {
            dev: parts.next()?.parse().ok()?,
            ino: parts.next()?.parse().ok()?,
            len: parts.next()?.parse().ok()?,
            hash: parts.next()?.to_owned(),
        };
        (id.hash.len() == HASH_HEX && id.hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    }

    /// The identity of the open file `f` over its first `len` bytes; `None` when it has
    /// fewer than `len` bytes now.
    pub fn of(f: &File, len: u64) -> io::Result<Option<FileId>> {
        let meta = f.metadata()?;
        let Some(hash) = fingerprint(f, len)? else {
            return Ok(None);
        };
        Ok(Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len,
            hash,
        }))
    }

    /// Whether the open file `f` is this one: same device and inode, same first bytes.
    pub fn matches(&self, f: &File) -> io::Result<bool> {
        let meta = f.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Ok(false);
        }
        Ok(fingerprint(f, self.len)?.as_deref() == Some(self.hash.as_str()))
    }
}

/// The hash of the first `len` bytes of `f`, or `None` when it is shorter.
fn fingerprint(f: &File, len: u64) -> io::Result<Option<String>> {
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    let mut got = 0;
    while got < head.len() {
        match f.read_at(&mut head[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let digest = Sha256::digest(&head);
    let mut hex = String::with_capacity(HASH_HEX);
    for b in &digest[..HASH_HEX / 2] {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(Some(hex))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn equal_first_lines_in_two_files_are_two_identities() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for p in [&a, &b] {
            std::fs::write(p, "{\"same\":1}\n").unwrap();
        }
        let (fa, fb) = (File::open(&a).unwrap(), File::open(&b).unwrap());
        let (ia, ib) = (
            FileId::of(&fa, 8).unwrap().unwrap(),
            FileId::of(&fb, 8).unwrap().unwrap(),
        );
        assert_eq!(ia.hash, ib.hash);
        assert_ne!(ia, ib);
        assert!(ia.matches(&fa).unwrap() && !ia.matches(&fb).unwrap());
        assert_eq!(FileId::parse(&ia.to_string()), Some(ia));
        // Too short for the length asked: not identified yet.
        assert!(FileId::of(&fa, 4096).unwrap().is_none());
    }

    #[test]
    fn a_file_rewritten_from_its_first_byte_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "{\"n\":1}\n").unwrap();
        let f = File::open(&p).unwrap();
        let id = FileId::of(&f, 8).unwrap().unwrap();
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        w.write_all(b"{\"n\":2}\n").unwrap();
        assert!(!id.matches(&f).unwrap());
        assert!(FileId::parse("1:2:3:nothex!").is_none());
    }
}
