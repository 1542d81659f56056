//! Recycled batch buffers. Every batch brings a few blocks of hundreds of KiB: its read
//! chunk, enrich's new texts, the member indexes of validate and enrich, persist's rows.
//! Allocated fresh, each is mapped by the system (see [`crate::memory`]) and every 4 KiB
//! page of it costs a page fault when first written: 410,000 faults and a fifth of `pipeline`'s CPU time on
//! 2 M events into PostgreSQL. Left on glibc's heap instead, the blocks are reused, but
//! small allocations settle between them and a stalled database held 67 MiB at peak.
//!
//! So the stage that frees such a block (by dropping the last event that shares it) puts
//! it here, and the next batch takes it. Only freed blocks are kept, a new one is
//! allocated only when the pool is empty, and a block much larger than the need is shrunk
//! first: the blocks held, here and in flight, stay about as many and as large as were
//! in flight at once.

use std::ops::Deref;
use std::sync::Mutex;

use crate::json::Member;

/// Freed read chunks and texts.
pub static TEXT: Pool<u8> = Pool::new();
/// Freed member indexes.
pub static INDEX: Pool<Member> = Pool::new();

/// Blocks are kept from this size up: a batch's blocks are hundreds of KiB, and smaller
/// ones (an HTTP request's events) are cheap to allocate. A pool of them would hand a
/// 300 KiB block to a 1 KiB request.
const MIN_BYTES: usize = 64 * 1024;
/// ... and up to this size: a chunk that grew around a long line goes back to the system.
const MAX_BYTES: usize = 4 << 20;
/// Blocks kept per pool, at most. A pool only holds blocks that were in flight (see the
/// module's notes), but after a burst (a full pipe draining) it would hold all of them:
/// 30 read chunks and texts, 14 MiB, into PostgreSQL at default capacities. Blocks are
/// freed and taken at about the same rate while data flows, so a few suffice.
const KEEP: usize = 8;
/// New blocks are rounded up to this, so that a read chunk, whose size varies by the
/// unfinished line carried into it, fits the next read's need.
const ROUND: usize = 64 * 1024;

/// A store of freed blocks of `T` for the next batch to take.
pub struct Pool<T> {
    free: Mutex<Vec<Vec<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Pool<T> {
        Pool::new()
    }
}

impl<T> Pool<T> {
    pub const fn new() -> Pool<T> {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }

    fn kept(n: usize) -> bool {
        (MIN_BYTES..=MAX_BYTES).contains(&(n * std::mem::size_of::<T>().max(1)))
    }

    /// A freed block for `n` items, as it was freed: the most recent one with room for
    /// them, else the most recent one, grown. (Left in the pool, blocks too small for
    /// every need would pile up while new ones are allocated: 7 MiB more at peak.)
    fn pop(&self, n: usize) -> Option<Vec<T>> {
        if !Self::kept(n) {
            return None;
        }
        let mut v = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let at = free
                .iter()
                .rposition(|v| v.capacity() >= n)
                .or(free.len().checked_sub(1))?;
            free.swap_remove(at)
        };
        if v.capacity() < n {
            v.clear();
            v.reserve_exact(Self::rounded(n));
        } else if v.capacity() > 2 * Self::rounded(n) {
            // A block that grew around long lines: its pages would stay resident under
            // small reads, and the byte bounds count only what events use.
            v.clear();
            v.shrink_to(Self::rounded(n));
        }
        Some(v)
    }

    fn rounded(n: usize) -> usize {
        n.next_multiple_of(ROUND / std::mem::size_of::<T>().max(1))
    }

    /// A new block for `n` items.
    fn fresh(n: usize) -> Vec<T> {
        Vec::with_capacity(if Self::kept(n) { Self::rounded(n) } else { n })
    }

    /// An empty block with room for `n` items: a freed one when there is one.
    pub fn take(&self, n: usize) -> Vec<T> {
        match self.pop(n) {
            Some(mut v) => {
                v.clear();
                v
            }
            None => Self::fresh(n),
        }
    }

    /// Keeps `v` for a later [`Pool::take`] when it is of a size worth keeping. Items that
    /// own something (events, with their acknowledgements) are dropped now; plain bytes
    /// stay, for [`Pool::take_filled`].
    pub fn put(&self, mut v: Vec<T>) {
        if !Self::kept(v.capacity()) {
            return;
        }
        if std::mem::needs_drop::<T>() {
            v.clear();
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(v);
        }
    }
}

impl Pool<u8> {
    /// A block of `n` bytes to read into. Its contents are unspecified (what a recycled
    /// block held): only what was read into it counts. Only the bytes past what the block
    /// held when freed are zeroed, not all `n` (zeroing every 256 KiB read chunk was 3 %
    /// of a filter's work; a chunk goes back holding all but its unfinished last line).
    pub fn take_filled(&self, n: usize) -> Vec<u8> {
        let mut v = self.pop(n).unwrap_or_else(|| Self::fresh(n));
        v.resize(n, 0);
        v
    }
}

/// What a [`Pooled`] block goes back to when dropped.
pub trait Recycle: Default {
    fn recycle(self);
}

impl Recycle for String {
    fn recycle(self) {
        TEXT.put(self.into_bytes());
    }
}

impl Recycle for Vec<Member> {
    fn recycle(self) {
        INDEX.put(self);
    }
}

/// A block that goes back to its pool when dropped (when the last event sharing it is).
#[derive(Debug, Default)]
pub struct Pooled<T: Recycle>(T);

impl<T: Recycle> Pooled<T> {
    pub fn new(v: T) -> Pooled<T> {
        Pooled(v)
    }
}

impl<T: Recycle> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Recycle> Drop for Pooled<T> {
    fn drop(&mut self) {
        std::mem::take(&mut self.0).recycle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_come_back_and_small_or_huge_ones_do_not() {
        let pool: Pool<u8> = Pool::new();
        let mut a = pool.take(100_000);
        assert!(a.capacity() >= 100_000);
        a.extend_from_slice(&[7; 1000]);
        let ptr = a.as_ptr();
        pool.put(a);
        // The same block, emptied; its written bytes are kept by take_filled only.
        let b = pool.take(90_000);
        assert_eq!((b.as_ptr(), b.len()), (ptr, 0));
        pool.put(b);
        let c = pool.take_filled(100_000);
        assert_eq!(c.as_ptr(), ptr);
        assert_eq!(c.len(), 100_000);
        pool.put(c);
        // A block too small for the need is grown.
        let d = pool.take(1 << 20);
        assert!(d.capacity() >= 1 << 20);
        assert!(pool.free.lock().unwrap().is_empty());
        pool.put(d);
        pool.put(vec![0; 1000]);
        pool.put(vec![0; 8 << 20]);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }

    #[test]
    fn at_most_keep_blocks_are_kept() {
        let pool: Pool<u8> = Pool::new();
        for _ in 0..KEEP + 5 {
            pool.put(Vec::with_capacity(MIN_BYTES));
        }
        assert_eq!(pool.free.lock().unwrap().len(), KEEP);
    }
}
