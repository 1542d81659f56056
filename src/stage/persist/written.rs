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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use fastbloom::AtomicBloomFilter;

/// Keys held before the filter is given up for lookups: at [`FALSE_POSITIVE`], 9.6 bits
/// a key, 2.4 MiB (allocated only for a table empty at start), against the 64 MiB a
/// persist run may use at its default capacities.
pub const CAPACITY: usize = 2_000_000;
/// The share of new keys taken for stored, and sent through the upsert (which costs the
/// lookup this filter spares, and an insert): 1 %.
const FALSE_POSITIVE: f64 = 0.01;

pub struct Written {
    keys: AtomicBloomFilter<foldhash::fast::RandomState>,
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
        Written {
            keys: AtomicBloomFilter::with_false_pos(FALSE_POSITIVE)
                .hasher(foldhash::fast::RandomState::default())
                .expected_items(CAPACITY),
            count: AtomicUsize::new(0),
            trusted: AtomicBool::new(true),
        }
    }

    /// Whether batches may go by the filter: no key found stored that this run did not
    /// store, and fewer than [`CAPACITY`] keys held.
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    /// Whether this run may have stored `key` (false: it did not).
    pub fn may_hold(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Notes keys stored by a committed transaction.
    pub fn add<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut added = 0;
        for key in keys {
            if !self.keys.insert(key) {
                added += 1;
            }
        }
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
    use super::*;

    #[test]
    fn keys_added_are_held_and_others_mostly_not() {
        let w = Written::new();
        let keys: Vec<String> = (0..10_000).map(|i| format!("evt-{i:012}")).collect();
        w.add(keys.iter().map(String::as_str));
        assert!(keys.iter().all(|k| w.may_hold(k)));
        let others = (10_000..20_000)
            .filter(|i| w.may_hold(&format!("evt-{i:012}")))
            .count();
        // Far fewer than the filter's 1 % at capacity, with 0.5 % of it filled.
        assert!(others < 50, "{others} false positives in 10,000");
        assert!(w.trusted());
        w.distrust();
        assert!(!w.trusted());
    }
}
