//! The in-flight budget: requests hold room for their bytes as they arrive, inflate
//! and become events, so memory stays bounded however much is offered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::server::{acquire, too_large, Answer, Hub};
use super::Config;

/// Byte budgets are counted in KiB so they fit a semaphore's u32 permits.
pub(super) const UNIT: u64 = 1024;

/// Memory an event takes beyond its text: the `Event` and its member index, plus
/// allocator slack. Counted against the queue and in-flight budgets, or bodies of many
/// tiny events escape them: 3.4 M `{}` lines took 226 bytes each with their metadata.
pub(super) const EVENT_OVERHEAD: u64 = 96;

/// What one request holds of --max-inflight-bytes. It grows with what has actually
/// arrived and been made of it (raw bytes, inflated bytes, events), never with what a
/// client only declares: three clients announcing 8 MiB and going quiet used to hold it
/// all, and every other POST got 503.
pub(super) struct Room {
    pub(super) sem: Arc<Semaphore>,
    pub(super) held: Option<OwnedSemaphorePermit>,
    pub(super) units: u32,
    pub(super) total_units: u32,
    pub(super) wait: Duration,
}

/// Why room could not be had.
pub(super) enum NoRoom {
    /// Not now: retry later (503).
    Busy,
    /// Never: more than the whole budget (413).
    TooLarge,
}

impl Room {
    pub(super) fn new(hub: &Hub) -> Room {
        Room {
            sem: hub.inflight.clone(),
            held: None,
            units: 0,
            total_units: units(hub.config.max_inflight_bytes),
            wait: hub.config.enqueue_timeout,
        }
    }

    /// Holds room for `bytes` in all, waiting up to --enqueue-timeout for it.
    pub(super) async fn grow_to(&mut self, bytes: u64) -> std::result::Result<(), NoRoom> {
        let want = self.check(bytes)?;
        if want > self.units {
            let p = acquire(&self.sem, want - self.units, self.wait)
                .await
                .ok_or(NoRoom::Busy)?;
            self.add(p, want);
        }
        Ok(())
    }

    /// The same, without waiting.
    pub(super) fn try_grow_to(&mut self, bytes: u64) -> std::result::Result<(), NoRoom> {
        let want = self.check(bytes)?;
        if want > self.units {
            let p = self
                .sem
                .clone()
                .try_acquire_many_owned(want - self.units)
                .map_err(|_| NoRoom::Busy)?;
            self.add(p, want);
        }
        Ok(())
    }

    pub(super) fn check(&self, bytes: u64) -> std::result::Result<u32, NoRoom> {
        let want = units(bytes);
        if want > self.total_units {
            return Err(NoRoom::TooLarge);
        }
        Ok(want)
    }

    pub(super) fn add(&mut self, p: OwnedSemaphorePermit, want: u32) {
        match &mut self.held {
            Some(h) => h.merge(p),
            None => self.held = Some(p),
        }
        self.units = want;
    }
}

impl NoRoom {
    pub(super) fn answer(self, config: &Config) -> Answer {
        match self {
            NoRoom::Busy => Answer::busy("too many request bytes in flight"),
            NoRoom::TooLarge => too_large(
                config.max_inflight_bytes as usize,
                "request in memory (--max-inflight-bytes)",
            ),
        }
    }
}

pub(super) fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}
