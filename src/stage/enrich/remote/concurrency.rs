//! How many calls are in flight across the stage: `--concurrency N`, or `auto`, which
//! adapts the limit to the service (AIMD, as TCP's congestion control and Vector's
//! adaptive request concurrency do).
//!
//! `auto` measures the calls' round-trip times in windows of about one round trip (at
//! least as many answers as the limit). A window whose mean time stays within [`RISE`]
//! or [`SLACK`] (whichever is more) of the baseline, the service's unloaded time, and
//! that used the whole limit, raises the limit: doubling until the first decrease (slow
//! start), then by one per window. Two windows in a row whose mean rose past that, or
//! one that saw a 429 or 503, halve the limit. After a halving the limit climbs back in
//! one step to nine tenths of where it was halved (the last level the service bore),
//! then probes upwards by one again, so that most of the time is spent near what the
//! service bears rather than sliding through the sawtooth between half and all of it
//! (CUBIC's lesson). Answers to calls sent before a change do not judge the new limit.
//!
//! Waiting callers are served in the order they came (tokio's semaphore is fair), so
//! the events of older batches are not overtaken by newer ones: output keeps input
//! order, and the oldest batch is the one the stage waits on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock (the system's, unless a test pauses it to simulate round trips).
use tokio::time::Instant;

/// The most calls `auto` lets out at once: beyond that a service is better served by
/// batching than by more connections (and each call in flight holds a socket).
pub const AUTO_MAX: usize = 512;
/// A window's mean round trip this much over the baseline means the service is queueing
/// (for round trips of 12.5 ms or more: below, [`SLACK`] decides).
const RISE: f64 = 1.2;
/// ... or this much, if more: the client's own share of a round trip, which grows with
/// its load without the service queueing (waking the thread that reads the answer, on
/// cores it shares with its other work), and which a fast service's 20 % does not cover.
/// Against a local service answering in 1 ms (a baseline of about 2.2 ms), 2 cores shared
/// with it, 95 % cache hits, 1 M events: a rise of 1.2 plus 0.5 ms settled at 33 and took
/// 3.3 s; 1.1 plus 1.5 ms (3.9 ms there), at 87-94 and 2.01-2.16 s; 2.5 ms or 20 %, at
/// 111-126 and 1.81-2.00 s (a fixed 128: 1.84-1.96 s). At 10 ms and 20 ms round trips the
/// threshold is what 1.1 plus 1.5 ms gave (12.5 and 24 ms against 23.5).
const SLACK: Duration = Duration::from_micros(2500);
/// Windows in a row whose mean rose that halve the limit (a 429 or 503 halves it at
/// once). Against a local service answering in 1 ms, 2 cores shared with it, 95 % cache
/// hits, 1 M events: with 1, `auto` settled at 50 and the run took 3.2 s; with 2, at 110
/// and 2.55 s (3: 112, 2.6 s; a fixed 128: 2.35 s).
const RISES: u32 = 2;
/// How fast the baseline follows the round trips seen (an exponential average): slowly,
/// so that a lasting change in the service's own time is learnt over some twenty
/// windows while a queue building up shows at once.
const BASELINE_WEIGHT: f64 = 0.05;

/// `--concurrency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Fixed(usize),
    Auto,
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Setting, String> {
        if s == "auto" {
            return Ok(Setting::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Setting::Fixed(n)),
            _ => Err(format!("{s:?}: expected auto or a count of 1 or more")),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Fixed(n) => write!(f, "{n}"),
            Setting::Auto => f.write_str("auto"),
        }
    }
}

pub struct Limiter {
    semaphore: Arc<Semaphore>,
    auto: Option<Mutex<Aimd>>,
    /// The current limit.
    limit: AtomicUsize,
    /// Permits to take out of circulation as calls end (a decrease below what is out).
    owed: AtomicUsize,
}

/// `auto`'s state.
struct Aimd {
    /// Windows in a row whose mean rose.
    rises: u32,
    baseline: Option<f64>,
    slow_start: bool,
    /// Where to climb back to at once after a halving.
    recover_to: usize,
    window_started: Instant,
    /// Answers in this window: their count and summed round trips (seconds).
    answers: usize,
    rtt_sum: f64,
    overloaded: bool,
    /// The most calls out at once in this window.
    most_out: usize,
    /// When the limit last changed: answers to calls sent earlier are not counted.
    changed_at: Instant,
    /// The limit's time-weighted sum since the first halving, and that time: the limit
    /// it settled at.
    settled: (f64, Duration),
    last_seen: Instant,
}

/// One call's right to be in flight.
pub struct Permit {
    limiter: Arc<Limiter>,
    permit: Option<OwnedSemaphorePermit>,
    pub sent: Instant,
}

impl Limiter {
    pub fn new(setting: Setting) -> Arc<Limiter> {
        let start = match setting {
            Setting::Fixed(n) => n,
            // One call, then doubling per round trip: a service is never hit with a
            // burst it did not show it bears.
            Setting::Auto => 1,
        };
        let now = Instant::now();
        Arc::new(Limiter {
            semaphore: Arc::new(Semaphore::new(start)),
            auto: (setting == Setting::Auto).then(|| {
                Mutex::new(Aimd {
                    rises: 0,
                    baseline: None,
                    slow_start: true,
                    recover_to: 0,
                    window_started: now,
                    answers: 0,
                    rtt_sum: 0.0,
                    overloaded: false,
                    most_out: 0,
                    changed_at: now,
                    settled: (0.0, Duration::ZERO),
                    last_seen: now,
                })
            }),
            limit: AtomicUsize::new(start),
            owed: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The most calls it may ever let out.
    pub fn ceiling(&self) -> usize {
        match self.auto {
            Some(_) => AUTO_MAX,
            None => self.limit(),
        }
    }

    /// The limit `auto` settled at: its time-weighted mean since it first halved (before
    /// that, the limit itself). For a fixed setting, the setting.
    pub fn settled(&self) -> usize {
        let Some(auto) = &self.auto else {
            return self.limit();
        };
        let aimd = auto.lock().expect("not poisoned");
        let (sum, time) = aimd.settled;
        if time.is_zero() {
            self.limit()
        } else {
            (sum / time.as_secs_f64()).round() as usize
        }
    }

    /// Waits for room for one more call.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Some(auto) = &self.auto {
            let out = self
                .limit()
                .saturating_sub(self.semaphore.available_permits());
            let mut aimd = auto.lock().expect("not poisoned");
            aimd.most_out = aimd.most_out.max(out);
        }
        Permit {
            limiter: self.clone(),
            permit: Some(permit),
            sent: Instant::now(),
        }
    }

    fn set_limit(&self, aimd: &mut Aimd, to: usize, now: Instant) {
        let from = self.limit();
        if to == from {
            return;
        }
        aimd.tick(from, now);
        self.limit.store(to, Ordering::Relaxed);
        if to > from {
            let mut more = to - from;
            // Permits still owed from a decrease are forgiven first.
            while more > 0 {
                let owed = self.owed.load(Ordering::Relaxed);
                if owed == 0 {
                    break;
                }
                let take = owed.min(more);
                if self
                    .owed
                    .compare_exchange(owed, owed - take, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    more -= take;
                }
            }
            self.semaphore.add_permits(more);
        } else {
            let fewer = from - to;
            let gone = self.semaphore.forget_permits(fewer);
            self.owed.fetch_add(fewer - gone, Ordering::Relaxed);
        }
        aimd.changed_at = now;
        aimd.reset(now);
    }

    /// A call ended: `overloaded` when the service said so (429, 503). `timed` is false
    /// for calls whose time says nothing of the service (refused connections).
    /// `rtt`: the call's round trip.
    fn answered(&self, sent: Instant, rtt: Duration, overloaded: bool, timed: bool) {
        let Some(auto) = &self.auto else { return };
        let now = Instant::now();
        let mut aimd = auto.lock().expect("not poisoned");
        if sent < aimd.changed_at {
            return;
        }
        let rtt = rtt.as_secs_f64();
        if timed {
            aimd.answers += 1;
            aimd.rtt_sum += rtt;
        }
        aimd.overloaded |= overloaded;
        let limit = self.limit();
        let enough = aimd.answers >= limit.max(4);
        if !(aimd.overloaded || enough) {
            return;
        }
        let mean = if aimd.answers > 0 {
            aimd.rtt_sum / aimd.answers as f64
        } else {
            rtt
        };
        let baseline = *aimd.baseline.get_or_insert(mean);
        let rose = mean > (baseline * RISE).max(baseline + SLACK.as_secs_f64());
        if rose && !aimd.overloaded {
            // Held, not halved, until the rise is seen again: on cores shared with the
            // stage's other work and the service, one window in ten or so has a mean
            // several times the others' (the calls' thread waited for a core), and
            // halving on each of those kept `auto` at half of what the service bears.
            aimd.rises += 1;
            if aimd.rises < RISES {
                aimd.reset(now);
                return;
            }
        }
        aimd.rises = 0;
        if aimd.overloaded || rose {
            aimd.recover_to = limit * 9 / 10;
            aimd.slow_start = false;
            aimd.baseline = Some(baseline + BASELINE_WEIGHT * (mean - baseline));
            self.set_limit(&mut aimd, (limit / 2).max(1), now);
            return;
        }
        aimd.baseline = Some(if mean < baseline {
            mean
        } else {
            baseline + BASELINE_WEIGHT * (mean - baseline)
        });
        if aimd.most_out >= limit {
            let to = if aimd.slow_start {
                limit * 2
            } else if limit < aimd.recover_to {
                aimd.recover_to
            } else {
                limit + 1
            };
            self.set_limit(&mut aimd, to.min(AUTO_MAX), now);
        } else {
            aimd.reset(now);
        }
    }
}

impl Aimd {
    fn reset(&mut self, now: Instant) {
        self.window_started = now;
        self.answers = 0;
        self.rtt_sum = 0.0;
        self.overloaded = false;
        self.most_out = 0;
    }

    /// Adds the time the limit was `limit` to the settled mean (once it first halved).
    fn tick(&mut self, limit: usize, now: Instant) {
        let spent = now.duration_since(self.last_seen);
        self.last_seen = now;
        if !self.slow_start {
            self.settled.0 += limit as f64 * spent.as_secs_f64();
            self.settled.1 += spent;
        }
    }
}

impl Permit {
    /// The call was answered (or failed) `overloaded` or not; `timed` as in
    /// [`Limiter::answered`].
    /// Its round trip: the time since it was let out.
    pub fn done(self, overloaded: bool, timed: bool) {
        let rtt = self.sent.elapsed();
        self.done_in(rtt, overloaded, timed);
    }

    /// As [`Permit::done`], for a call whose round trip was measured where it ran.
    pub fn done_in(mut self, rtt: Duration, overloaded: bool, timed: bool) {
        self.limiter.answered(self.sent, rtt, overloaded, timed);
        self.release();
    }

    fn release(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // Owed permits (a decrease below what was out) are taken out as calls end.
        let owed = &self.limiter.owed;
        let mut n = owed.load(Ordering::Relaxed);
        while n > 0 {
            match owed.compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    permit.forget();
                    return;
                }
                Err(now) => n = now,
            }
        }
        drop(permit);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated service that bears 32 calls at once: beyond, they queue for its
    /// 32 slots, so each takes (out / 32) × its own time.
    #[tokio::test(start_paused = true)]
    async fn auto_settles_near_what_the_service_bears() {
        let limiter = Limiter::new(Setting::Auto);
        let out = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        let until = Instant::now() + Duration::from_secs(20);
        for _ in 0..200 {
            let (limiter, out) = (limiter.clone(), out.clone());
            calls.spawn(async move {
                while Instant::now() < until {
                    let permit = limiter.acquire().await;
                    let n = out.fetch_add(1, Ordering::SeqCst) + 1;
                    let slots = (n as f64 / 32.0).max(1.0);
                    tokio::time::sleep(Duration::from_secs_f64(0.010 * slots)).await;
                    out.fetch_sub(1, Ordering::SeqCst);
                    permit.done(false, true);
                }
            });
        }
        while calls.join_next().await.is_some() {}
        let settled = limiter.settled();
        assert!((24..=40).contains(&settled), "settled at {settled}");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_doubles_and_overload_halves_and_fixed_stays() {
        let limiter = Limiter::new(Setting::Auto);
        let mut seen = vec![limiter.limit()];
        // Rounds of as many calls as the limit lets out, each answered in 5 ms.
        for _ in 0..40 {
            let permits: Vec<Permit> =
                futures::future::join_all((0..limiter.limit()).map(|_| limiter.acquire())).await;
            tokio::time::advance(Duration::from_millis(5)).await;
            permits.into_iter().for_each(|p| p.done(false, true));
            if seen.last() != Some(&limiter.limit()) {
                seen.push(limiter.limit());
            }
            if limiter.limit() >= 64 {
                break;
            }
        }
        assert_eq!(
            seen[..6],
            [1, 2, 4, 8, 16, 32],
            "slow start doubles: {seen:?}"
        );
        let before = limiter.limit();
        tokio::time::advance(Duration::from_millis(1)).await;
        let p = limiter.acquire().await;
        p.done(true, true);
        assert_eq!(limiter.limit(), before / 2, "a 429 halves");

        let fixed = Limiter::new(Setting::Fixed(3));
        let p = fixed.acquire().await;
        p.done(true, true);
        assert_eq!(fixed.limit(), 3);
    }
}
