//! New keys into PostgreSQL by binary COPY: the fast path of a batch whose keys are mostly
//! not stored yet (a first load, a backfill, a stream of new ids).
//!
//! The upsert statement ([`super::sql_postgres`]) inserts row by row: the server looks
//! each key up in the index for the conflict check, inserts it speculatively and writes
//! one WAL record per row. COPY inserts pages of rows at once (one WAL record per page)
//! with no conflict check. So a batch first asks which of its keys are stored (one read
//! of the index per key, and the transaction's `now()` for the timestamps, in one round
//! trip); the rows of the others go in by COPY, and only the stored ones through the
//! upsert with its version rule. Into a table that was empty at start, the keys this run
//! stored answer that instead, with no lookup ([`super::written`]). Each connection
//! prepares the statements once ([`CopyStatements`]): prepared per batch, they cost a
//! round trip each while the server waited (2-3 % of a load).
//!
//! Every guarantee stays: the batch's winners were picked before, the rows and the
//! offsets share the transaction, and a COPY the server refuses (a row it cannot store,
//! or a key another writer stored since the lookup, which is a unique violation) fails
//! the transaction like a refused upsert does: it is redone through the upsert
//! statement, row errors isolated, see [`super::load`].
//!
//! Only for tables whose columns take the values as persist has them without a cast:
//! the key `text`/`varchar`, `payload`/`meta` `jsonb`, `version` `bigint`, the
//! timestamps `timestamptz`, and no `--column`s ([`Layout::binary_copy`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use tokio_postgres::{Client, Statement, Transaction};

use crate::postgres::quote_ident;

use super::{Layout, Row};

/// How much of a COPY's data goes to the server at a time. tokio-postgres's
/// `BinaryCopyInWriter` hands on every 4 KiB: a message to the connection's task and a
/// send(2) each, 92 k of them for `bench/persist.sh`'s 2 M rows. A batch (2,000 rows of
/// some 250 bytes) goes in two or three chunks of this size instead, and the buffer
/// stays small beside the batch it encodes.
const CHUNK: usize = 256 * 1024;

/// A chunk's buffer: [`CHUNK`] and room for the row that crosses it (a longer row grows
/// it).
const CHUNK_BUFFER: usize = CHUNK + 64 * 1024;

/// How many sent chunks' buffers a connection keeps to take back ([`Buffers`]): the
/// connection's task copies a chunk out soon after it is sent, so two or three are in
/// flight at most.
const KEPT_BUFFERS: usize = 4;

/// The binary COPY header: the signature, then 32-bit flags and header extension length
/// (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01), which timestamps count from.
const PG_EPOCH_SECS: u64 = 946_684_800;

/// The statements of one table's COPY path (its columns are the layout's, in
/// [`CopyStatements::copy`]'s order), and how many columns it writes.
pub struct CopyIn {
    lookup: String,
    copy: String,
    fields: i16,
}

impl CopyIn {
    /// The COPY path for `l`, or None when its columns need casts (see the module).
    pub fn plan(l: &Layout) -> Option<CopyIn> {
        if !l.binary_copy {
            return None;
        }
        let q = quote_ident;
        let key = q(&l.key_column);
        let table = l.table.quoted();
        let mut cols = vec![key.clone()];
        for (present, name) in [
            (l.payload, "payload"),
            (l.meta, "meta"),
            (l.version.is_some(), "version"),
            (l.first_seen, "first_seen"),
            (l.updated_at, "updated_at"),
        ] {
            if present {
                cols.push(q(name));
            }
        }
        Some(CopyIn {
            lookup: format!(
                "SELECT now(), ARRAY(SELECT {key}::text FROM {table} WHERE {key} = ANY($1::text[]))"
            ),
            copy: format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                cols.join(", ")
            ),
            fields: cols.len() as i16,
        })
    }

    /// The statements, prepared on `client`.
    pub async fn prepare(&self, client: &Client) -> Result<CopyStatements, tokio_postgres::Error> {
        Ok(CopyStatements {
            lookup: client.prepare(&self.lookup).await?,
            copy: client.prepare(&self.copy).await?,
            now: client.prepare("SELECT now()").await?,
            fields: self.fields,
            buffers: Buffers::default(),
        })
    }
}

/// One connection's statements of the COPY path, prepared.
pub struct CopyStatements {
    lookup: Statement,
    copy: Statement,
    now: Statement,
    fields: i16,
    buffers: Buffers,
}

/// The buffers of a connection's sent chunks, taken back to encode the next ones once the
/// connection's task has copied them out (tokio-postgres copies a message into its own
/// write buffer). A fresh 320 KiB buffer a chunk is above the mmap threshold `pipeline`
/// with a sink runs with ([`crate::memory::tame_malloc`]): mapped, its every page faulted
/// in, unmapped — 170,000 page faults for 2 M rows, a third of the pipeline's system time.
#[derive(Default)]
struct Buffers(std::sync::Mutex<Vec<Bytes>>);

impl Buffers {
    /// An empty buffer: a sent one no longer in use, else a new one.
    fn take(&self) -> BytesMut {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = kept.iter().position(Bytes::is_unique) {
            if let Ok(mut b) = kept.swap_remove(i).try_into_mut() {
                b.clear();
                return b;
            }
        }
        BytesMut::with_capacity(CHUNK_BUFFER)
    }

    /// `b`, to send; kept (a handle on it) to be taken back.
    fn sent(&self, b: BytesMut) -> Bytes {
        let b = b.freeze();
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_BUFFERS {
            kept.push(b.clone());
        }
        b
    }
}

impl CopyStatements {
    /// Which of `rows`' keys are stored, and the transaction's `now()` (what the upsert
    /// statement writes as first_seen and updated_at).
    pub async fn lookup(
        &self,
        tx: &Transaction<'_>,
        rows: &[&Row],
    ) -> Result<(HashSet<String>, SystemTime), tokio_postgres::Error> {
        // In byte order: the server sorts the array for its index scan with the column's
        // collation, and its sort finds presorted input in one pass — so under C or
        // C.UTF-8 (byte order) this spares it a sort of a batch of keys (4 % of the
        // server's time in a perf profile of bench/persist.sh). Other collations lose
        // nothing but that pass.
        let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        let row = tx.query_one(&self.lookup, &[&keys]).await?;
        let stored: Vec<String> = row.get(1);
        Ok((stored.into_iter().collect(), row.get(0)))
    }

    /// The transaction's `now()`, what the upsert statement writes as first_seen and
    /// updated_at (for a batch whose keys were not looked up, and with none stored: the
    /// upsert of the stored ones answers it too).
    pub async fn now(&self, tx: &Transaction<'_>) -> Result<SystemTime, tokio_postgres::Error> {
        Ok(tx.query_one(&self.now, &[]).await?.get(0))
    }

    /// Inserts `rows` (none of whose keys is stored) into `l`'s table by COPY; returns how
    /// many. The rows are encoded here, in the binary format of the columns
    /// [`CopyIn::plan`] lists (text as is, jsonb its version byte 1 then the text, bigint
    /// and timestamptz big-endian 64-bit), and sent [`CHUNK`] by [`CHUNK`].
    pub async fn copy(
        &self,
        tx: &Transaction<'_>,
        l: &Layout,
        rows: &[&Row],
        now: SystemTime,
    ) -> Result<u64, tokio_postgres::Error> {
        let sink = tx.copy_in::<_, Bytes>(&self.copy).await?;
        let mut sink = std::pin::pin!(sink);
        let now = pg_micros(now);
        let mut buf = self.buffers.take();
        buf.put_slice(HEADER);
        for r in rows {
            buf.put_i16(self.fields);
            put_text(&mut buf, None, &r.key);
            if l.payload {
                put_text(&mut buf, Some(1), r.payload());
            }
            if l.meta {
                match &r.meta {
                    Some(meta) => put_text(&mut buf, Some(1), meta),
                    None => buf.put_i32(-1),
                }
            }
            if l.version.is_some() {
                match r.version.as_ref().and_then(|v| v.int()) {
                    Some(v) => put_i64(&mut buf, v),
                    None => buf.put_i32(-1),
                }
            }
            for present in [l.first_seen, l.updated_at] {
                if present {
                    put_i64(&mut buf, now);
                }
            }
            if buf.len() >= CHUNK {
                let full = std::mem::replace(&mut buf, self.buffers.take());
                sink.send(self.buffers.sent(full)).await?;
            }
        }
        // The trailer: a field count of -1.
        buf.put_i16(-1);
        sink.send(self.buffers.sent(buf)).await?;
        sink.as_mut().finish().await
    }
}

/// A field of text (prefixed with the byte `version`, as jsonb is): its length, then it.
fn put_text(buf: &mut BytesMut, version: Option<u8>, text: &str) {
    // Below 2 GiB: longer events are refused when read (the tape's offsets are 31-bit).
    buf.put_i32((text.len() + usize::from(version.is_some())) as i32);
    if let Some(v) = version {
        buf.put_u8(v);
    }
    buf.put_slice(text.as_bytes());
}

/// A bigint or timestamptz field.
fn put_i64(buf: &mut BytesMut, v: i64) {
    buf.put_i32(8);
    buf.put_i64(v);
}

/// `t` as timestamptz: microseconds since 2000-01-01 UTC.
fn pg_micros(t: SystemTime) -> i64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_SECS);
    match t.duration_since(epoch) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        let y2k = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_SECS);
        assert_eq!(pg_micros(y2k), 0);
        assert_eq!(pg_micros(y2k + Duration::from_micros(1_500_001)), 1_500_001);
        assert_eq!(pg_micros(UNIX_EPOCH), -946_684_800_000_000);
    }

    #[test]
    fn text_fields_are_length_prefixed_jsonb_with_its_version_byte() {
        let mut buf = BytesMut::new();
        put_text(&mut buf, None, "k1");
        put_text(&mut buf, Some(1), "{}");
        put_i64(&mut buf, -2);
        assert_eq!(
            &buf[..],
            b"\0\0\0\x02k1\0\0\0\x03\x01{}\0\0\0\x08\xff\xff\xff\xff\xff\xff\xff\xfe"
        );
    }
}
