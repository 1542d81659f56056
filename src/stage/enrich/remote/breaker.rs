//! The circuit breaker of one service (an HTTP host, a database): after
//! `--breaker-failures` consecutive failures, or a failure rate over `--breaker-rate` in
//! the last `--breaker-window`, it opens and no call is made; after `--breaker-cooldown`
//! one probe call is let through (half-open): its success closes the breaker, its failure
//! opens it again for another cooldown. Each change is logged once and counted.
//!
//! A failure is what says the service is unwell: no connection, a timeout, a 5xx or a
//! 429. A 404 or another 4xx is an answer (the service is fine; the request was not), so
//! it counts as a success here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub failures: u32,
    /// The failure share (0–1) that opens the breaker, over `window`.
    pub rate: f64,
    pub window: Duration,
    pub cooldown: Duration,
}

/// The fewest calls in a window for its failure rate to count: two failures of the
/// first three calls after a quiet night say little (Hystrix's default volume is 20).
pub const MIN_CALLS: u64 = 20;

/// Buckets a window is kept in: the rate covers the last window to within a tenth of it.
const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// Its value on the `ndpipe_enrich_breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

/// What [`Breaker::admit`] let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A call while closed.
    Call,
    /// The one call of the half-open state.
    Probe,
}

/// A change of state, for the caller to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub to: State,
}

pub struct Breaker {
    pub service: String,
    settings: Settings,
    inner: Mutex<Inner>,
    /// Woken when the breaker closes or a probe ends, for callers waiting
    /// (`--on-failure block`).
    pub changed: Notify,
}

struct Inner {
    state: State,
    consecutive: u32,
    opened_at: Instant,
    probing: bool,
    /// (calls, failures) per bucket, the newest at `head`.
    buckets: [(u64, u64); BUCKETS],
    head: usize,
    head_started: Instant,
}

impl Breaker {
    pub fn new(service: String, settings: Settings) -> Breaker {
        let now = Instant::now();
        Breaker {
            service,
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                opened_at: now,
                probing: false,
                buckets: [(0, 0); BUCKETS],
                head: 0,
                head_started: now,
            }),
            changed: Notify::new(),
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("not poisoned").state
    }

    /// Whether a call may be made now; `Err` with how long until the breaker may let a
    /// probe through (zero while another probe is out).
    pub fn admit(&self) -> Result<(Admitted, Option<Change>), Duration> {
        let mut inner = self.inner.lock().expect("not poisoned");
        match inner.state {
            State::Closed => Ok((Admitted::Call, None)),
            State::Open => {
                let waited = inner.opened_at.elapsed();
                if waited < self.settings.cooldown {
                    return Err(self.settings.cooldown - waited);
                }
                inner.state = State::HalfOpen;
                inner.probing = true;
                Ok((
                    Admitted::Probe,
                    Some(Change {
                        to: State::HalfOpen,
                    }),
                ))
            }
            State::HalfOpen if inner.probing => Err(Duration::ZERO),
            State::HalfOpen => {
                inner.probing = true;
                Ok((Admitted::Probe, None))
            }
        }
    }

    /// Records how an admitted call went; returns a change of state, if any.
    pub fn record(&self, admitted: Admitted, ok: bool) -> Option<Change> {
        let mut inner = self.inner.lock().expect("not poisoned");
        let now = Instant::now();
        inner.roll(now, self.settings.window);
        let change = match admitted {
            Admitted::Probe => {
                inner.probing = false;
                if ok {
                    inner.close(now);
                    Some(Change { to: State::Closed })
                } else {
                    inner.open(now);
                    Some(Change { to: State::Open })
                }
            }
            // A call admitted while closed may end after the breaker opened: it tells
            // nothing new then.
            Admitted::Call if inner.state != State::Closed => None,
            Admitted::Call => {
                let head = inner.head;
                inner.buckets[head].0 += 1;
                if ok {
                    inner.consecutive = 0;
                    None
                } else {
                    inner.buckets[head].1 += 1;
                    inner.consecutive += 1;
                    let (calls, failed) = inner
                        .buckets
                        .iter()
                        .fold((0, 0), |(c, f), b| (c + b.0, f + b.1));
                    let rate_exceeded =
                        calls >= MIN_CALLS && failed as f64 > self.settings.rate * calls as f64;
                    if inner.consecutive >= self.settings.failures || rate_exceeded {
                        inner.open(now);
                        Some(Change { to: State::Open })
                    } else {
                        None
                    }
                }
            }
        };
        drop(inner);
        if matches!(admitted, Admitted::Probe) {
            self.changed.notify_waiters();
        }
        change
    }

    /// A probe that was let through but never made (the event went elsewhere): the next
    /// caller may probe.
    pub fn release(&self, admitted: Admitted) {
        if admitted == Admitted::Probe {
            self.inner.lock().expect("not poisoned").probing = false;
            self.changed.notify_waiters();
        }
    }
}

impl Inner {
    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.opened_at = now;
        self.consecutive = 0;
    }

    fn close(&mut self, now: Instant) {
        self.state = State::Closed;
        self.consecutive = 0;
        self.buckets = [(0, 0); BUCKETS];
        self.head_started = now;
    }

    /// Moves the newest bucket on to `now`, emptying the buckets that fell out of the
    /// window.
    fn roll(&mut self, now: Instant, window: Duration) {
        let width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        let mut steps = 0;
        while now.duration_since(self.head_started) >= width && steps < BUCKETS {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = (0, 0);
            self.head_started += width;
            steps += 1;
        }
        if now.duration_since(self.head_started) >= width {
            self.head_started = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(
            "svc".into(),
            Settings {
                failures: 3,
                rate: 0.5,
                window: Duration::from_secs(10),
                cooldown: Duration::from_millis(cooldown_ms),
            },
        )
    }

    #[test]
    fn consecutive_failures_open_it_and_one_probe_closes_it() {
        let b = breaker(30);
        for _ in 0..2 {
            let (a, _) = b.admit().unwrap();
            assert_eq!(b.record(a, false), None);
        }
        let (a, _) = b.admit().unwrap();
        assert_eq!(b.record(a, false), Some(Change { to: State::Open }));
        assert!(b.admit().is_err(), "open: no calls");
        std::thread::sleep(Duration::from_millis(40));
        let (probe, change) = b.admit().unwrap();
        assert_eq!(
            (probe, change),
            (
                Admitted::Probe,
                Some(Change {
                    to: State::HalfOpen
                })
            )
        );
        assert_eq!(b.admit(), Err(Duration::ZERO), "one probe at a time");
        assert_eq!(b.record(probe, true), Some(Change { to: State::Closed }));
        assert_eq!(b.admit().unwrap().0, Admitted::Call);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_high_failure_rate_opens_it() {
        let b = breaker(0);
        for _ in 0..3 {
            let (a, _) = b.admit().unwrap();
            b.record(a, false);
        }
        let (probe, _) = b.admit().unwrap();
        assert_eq!(b.record(probe, false), Some(Change { to: State::Open }));

        let b = breaker(1000);
        // Alternating, so never three in a row: half of 20 calls fail, which is not over
        // half; one more failure is.
        for i in 0..MIN_CALLS {
            let (a, _) = b.admit().unwrap();
            assert_eq!(b.record(a, i % 2 == 0), None, "call {i}");
        }
        let (a, _) = b.admit().unwrap();
        assert_eq!(b.record(a, false), Some(Change { to: State::Open }));
    }
}
