//! The keys this run has stored, when the table was empty as it started: then a batch
//! tells its new keys (stored by COPY, see [`super::copy_in`]) from its stored ones (the
//! upsert) without asking the server.
//!
//! Asking is a lookup of every key of every batch in the primary key's index; a
//! `perf` profile of `bench/persist.sh` into an empty table put that lookup at a fifth
//! of the server's time, as much as the index inserts themselves. A table empty at start
//! holds only what this run stored, and this run knows what that is: a key it never
//! stored is new. The set is a Bloom filter (no false negatives; a false positive sends
//! a new key through the upsert, which inserts it all the same), shared by the
//! connections, so that a key rerouted when `--connections` changes is still known.
//!
//! It is a hint, never a guarantee: another writer may store keys meanwhile (a second
//! persist, a person with psql). A COPY of a key stored since then fails the
//! transaction on the primary key (unique violation); the batch is redone through the
//! upsert, as a refused row is, and from then on every batch looks its keys up as when
//! the table was not empty ([`Written::distrust`]). So it is after
//! [`CAPACITY`] keys, past which the filter would answer "stored" too often to help.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Keys held before the filter is given up for lookups. At [`BITS_PER_KEY`] that is
/// 2.4 MiB, allocated only for a table empty at start, against the 64 MiB a persist run
/// may use at its default capacities.
pub const CAPACITY: usize = 2_000_000;
/// 10 bits a key: at capacity, about 1.2 % of new keys are taken for stored and sent
/// through the upsert (which then costs what this filter spares, and inserts them all
/// the same); fewer before.
const BITS_PER_KEY: usize = 10;
/// Multipliers that pick a block's eight bits from one 32-bit hash (the split block
/// Bloom filter of Parquet and Impala: eight odd constants, one bit per 32-bit word).
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// 256 bits, on one cache line: a key's eight bits all fall in one block, so checking or
/// adding a key reads one line of memory (a Bloom filter with independent bits, as the
/// `fastbloom` crate's, read seven: 9 % of `pipeline … | persist`'s CPU time, in `perf`).
#[repr(align(32))]
struct Block([AtomicU32; 8]);

/// Keys whose blocks are on their way from memory while the oldest one's is read: about
/// as many misses as a core keeps outstanding (10-12 on current x86).
const AHEAD: usize = 8;

/// Asks for `block`'s cache line, without waiting for it.
#[inline(always)]
fn prefetch(block: &Block) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; it reads nothing and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(block).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

pub struct Written {
    blocks: Box<[Block]>,
    /// Keys added (those the filter did not hold before).
    count: AtomicUsize,
    trusted: AtomicBool,
}

impl Default for Written {
    fn default() -> Self {
        Written::new()
    }
}

impl Written {
    pub fn new() -> Written {
        let n = (CAPACITY * BITS_PER_KEY).div_ceil(256);
        Written {
            blocks: (0..n)
                .map(|_| Block(std::array::from_fn(|_| AtomicU32::new(0))))
                .collect(),
            count: AtomicUsize::new(0),
            trusted: AtomicBool::new(true),
        }
    }

    /// Whether batches may go by the filter: no key found stored that this run did not
    /// store, and fewer than [`CAPACITY`] keys held.
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    /// A key's block, and its bit in each of the block's words, from its hash
    /// ([`super::mapping::key_hash`], made with its row: no key is read again here).
    fn place(&self, hash: u64) -> (&Block, [u32; 8]) {
        // The high half picks the block (multiply-shift: any count of blocks), the low
        // half the bits.
        let at = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let low = hash as u32;
        (
            &self.blocks[at as usize],
            SALT.map(|salt| 1 << (low.wrapping_mul(salt) >> 27)),
        )
    }

    /// Calls `f` with each key's place, in order. The blocks are spread over megabytes, so
    /// that each is a miss of every cache: the blocks of [`AHEAD`] keys are asked of
    /// memory at once (a prefetch each), not one after the other.
    fn each_place(&self, keys: impl Iterator<Item = u64>, mut f: impl FnMut(&Block, [u32; 8])) {
        let mut ring: [Option<(&Block, [u32; 8])>; AHEAD] = [None; AHEAD];
        let mut n = 0;
        for key in keys {
            let place = self.place(key);
            prefetch(place.0);
            if let Some((block, bits)) = ring[n % AHEAD].replace(place) {
                f(block, bits);
            }
            n += 1;
        }
        // The last keys', oldest first.
        for i in n..n + AHEAD {
            if let Some((block, bits)) = ring[i % AHEAD].take() {
                f(block, bits);
            }
        }
    }

    /// For each key (its hash), whether this run may have stored it (false: it did not).
    pub fn may_hold(&self, keys: impl Iterator<Item = u64>) -> Vec<bool> {
        let mut held = Vec::with_capacity(keys.size_hint().0);
        self.each_place(keys, |block, bits| {
            held.push(
                block
                    .0
                    .iter()
                    .zip(bits)
                    .all(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0),
            );
        });
        held
    }

    /// Notes keys (their hashes) stored by a committed transaction.
    pub fn add(&self, keys: impl Iterator<Item = u64>) {
        let mut added = 0;
        self.each_place(keys, |block, bits| {
            let mut new = false;
            for (word, bit) in block.0.iter().zip(bits) {
                if word.load(Ordering::Relaxed) & bit == 0 {
                    word.fetch_or(bit, Ordering::Relaxed);
                    new = true;
                }
            }
            added += usize::from(new);
        });
        if self.count.fetch_add(added, Ordering::Relaxed) + added >= CAPACITY {
            self.distrust();
        }
    }

    /// From now on, batches look their keys up.
    pub fn distrust(&self) {
        self.trusted.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::key_hash;
    use super::*;

    /// How many of `keys` the filter may hold.
    fn held(w: &Written, keys: &[String]) -> usize {
        let held = w.may_hold(keys.iter().map(|k| key_hash(k)));
        held.iter().filter(|h| **h).count()
    }

    #[test]
    fn keys_added_are_held_and_others_mostly_not() {
        let w = Written::new();
        let keys: Vec<String> = (0..10_000).map(|i| format!("evt-{i:012}")).collect();
        w.add(keys.iter().map(|k| key_hash(k)));
        assert_eq!(held(&w, &keys), keys.len());
        let others: Vec<String> = (10_000..20_000).map(|i| format!("evt-{i:012}")).collect();
        // Far fewer than the filter's 1.2 % at capacity, with 0.5 % of it filled.
        let wrong = held(&w, &others);
        assert!(wrong < 50, "{wrong} false positives in 10,000");
        assert!(w.trusted());
        w.distrust();
        assert!(!w.trusted());

        // At capacity (a key whose bits were all set already is not counted: a little
        // over), about 1.2 %, and given up.
        let full = Written::new();
        let keys: Vec<String> = (0..CAPACITY + CAPACITY / 50)
            .map(|i| format!("k{i}"))
            .collect();
        full.add(keys.iter().map(|k| key_hash(k)));
        assert!(!full.trusted(), "given up at capacity");
        let others: Vec<String> = (0..100_000).map(|i| format!("other-{i}")).collect();
        let wrong = held(&full, &others);
        assert!(
            (500..2_000).contains(&wrong),
            "{wrong} false positives in 100,000"
        );
    }
}
