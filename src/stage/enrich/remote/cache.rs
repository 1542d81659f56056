//! Answers kept and shared: `--cache-size N --cache-ttl D` keeps the last N answers
//! (least recently used out first), each for D (`--negative-ttl` for "not found");
//! failures are never kept. Whether or not answers are kept, calls are single-flight:
//! events that need the same request while it is out wait for its answer instead of
//! making their own call, so a hundred events of one user in flight cost one call.
//!
//! The key is the built request (method, URL, body; a query's arguments).

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::OnceCell;

use super::{Answer, Failure};

/// What one lookup came to.
pub type Outcome = Result<Answer, Failure>;

/// Where an answer came from, for the hit and miss counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Kept from an earlier call.
    Hit,
    /// Shared with a call already out for the same request.
    Joined,
    /// This lookup's own call.
    Called,
}

/// Answers kept, by request, with when each was got (foldhash, seeded at random per map
/// as SipHash, the default, is: every event's key is hashed once, in a fraction of
/// SipHash's time).
type Kept = LruCache<Arc<str>, (Answer, Instant), foldhash::fast::RandomState>;

pub struct Cache {
    kept: Option<Mutex<Kept>>,
    ttl: Duration,
    negative_ttl: Duration,
    /// The calls out, by request (foldhash, seeded at random per map as SipHash is: it is
    /// looked up twice a call, and hashes a short key in a fraction of SipHash's time).
    out: Mutex<HashMap<Arc<str>, Arc<OnceCell<Outcome>>, foldhash::fast::RandomState>>,
}

impl Cache {
    /// `size` 0 keeps nothing (calls are still single-flight).
    pub fn new(size: usize, ttl: Duration, negative_ttl: Duration) -> Cache {
        Cache {
            kept: NonZeroUsize::new(size)
                .map(|n| Mutex::new(LruCache::with_hasher(n, Default::default()))),
            ttl,
            negative_ttl,
            out: Mutex::new(HashMap::default()),
        }
    }

    /// The answer kept for `key`, if one is and is still fresh.
    pub fn kept(&self, key: &str) -> Option<Answer> {
        let mut kept = self.kept.as_ref()?.lock().expect("not poisoned");
        fresh(&mut kept, key, Instant::now())
    }

    /// The answers kept for `keys` that are still fresh at `now`, pushed onto `out` in
    /// the keys' order (`None` where there is none), all under one lock.
    pub fn kept_all<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        now: Instant,
        out: &mut Vec<Option<Answer>>,
    ) {
        let Some(kept) = &self.kept else {
            out.extend(keys.into_iter().map(|_| None));
            return;
        };
        let mut kept = kept.lock().expect("not poisoned");
        out.extend(keys.into_iter().map(|key| fresh(&mut kept, key, now)));
    }

    /// The answer to `key`: kept, shared with a call out, or from `call`. The caller has
    /// just found no answer kept ([`Cache::kept`]); one kept since is found here.
    pub async fn get<F, Fut>(&self, key: &Arc<str>, call: F) -> (Outcome, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let (cell, first) = {
            let mut out = self.out.lock().expect("not poisoned");
            match out.get(key) {
                Some(cell) => (cell.clone(), false),
                None => {
                    // Looked at again under the lock of the calls out: a call ending
                    // keeps its answer before it leaves them, so a lookup meanwhile finds
                    // one or the other, never neither (which made a second call).
                    if let Some(answer) = self.kept(key) {
                        return (Ok(answer), Source::Hit);
                    }
                    let cell = Arc::new(OnceCell::new());
                    out.insert(key.clone(), cell.clone());
                    (cell, true)
                }
            }
        };
        let mut called = false;
        let outcome = cell
            .get_or_init(|| {
                called = true;
                call()
            })
            .await
            .clone();
        if called {
            self.keep(key, &outcome);
        }
        if called || first {
            // The call ended (whoever made it: a first caller that was cancelled hands
            // it on through the cell): later lookups go to the cache, or call anew.
            let mut out = self.out.lock().expect("not poisoned");
            if out.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                out.remove(key);
            }
        }
        let source = if called {
            Source::Called
        } else {
            Source::Joined
        };
        (outcome, source)
    }

    fn keep(&self, key: &Arc<str>, outcome: &Outcome) {
        let (Some(kept), Ok(answer)) = (&self.kept, outcome) else {
            return;
        };
        let ttl = match answer {
            Answer::Found(_) => self.ttl,
            Answer::NotFound => self.negative_ttl,
        };
        if ttl.is_zero() {
            return;
        }
        kept.lock()
            .expect("not poisoned")
            .put(key.clone(), (answer.clone(), Instant::now() + ttl));
    }
}

/// The answer kept for `key` if it is still fresh at `now`; a stale one is dropped.
fn fresh(kept: &mut Kept, key: &str, now: Instant) -> Option<Answer> {
    match kept.get(key) {
        Some((answer, until)) if *until > now => Some(answer.clone()),
        Some(_) => {
            kept.pop(key);
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn found(s: &str) -> Outcome {
        Ok(Answer::Found(s.into()))
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_key_make_one_call() {
        let cache = Arc::new(Cache::new(0, Duration::ZERO, Duration::ZERO));
        let calls = Arc::new(AtomicUsize::new(0));
        let key: Arc<str> = "GET http://h/u/1".into();
        let lookups = (0..100).map(|_| {
            let (cache, calls, key) = (cache.clone(), calls.clone(), key.clone());
            async move {
                cache
                    .get(&key, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        found("{\"n\":1}")
                    })
                    .await
            }
        });
        let got = futures::future::join_all(lookups).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|(o, _)| o == &found("{\"n\":1}")));
        assert_eq!(got.iter().filter(|(_, s)| *s == Source::Called).count(), 1);
        // Nothing kept: the next lookup calls again.
        let (_, source) = cache.get(&key, || async { found("2") }).await;
        assert_eq!(source, Source::Called);
    }

    #[tokio::test]
    async fn kept_answers_are_looked_up_together_in_the_keys_order() {
        let cache = Cache::new(4, Duration::from_millis(50), Duration::from_millis(50));
        let (a, _) = cache.get(&"a".into(), || async { found("1") }).await;
        let (c, _) = cache
            .get(&"c".into(), || async { Ok(Answer::NotFound) })
            .await;
        assert_eq!((a, c), (found("1"), Ok(Answer::NotFound)));
        let mut out = Vec::new();
        cache.kept_all(["c", "b", "a"], Instant::now(), &mut out);
        assert_eq!(
            out,
            [
                Some(Answer::NotFound),
                None,
                Some(Answer::Found("1".into()))
            ]
        );
        // Stale answers are not given, and leave.
        let later = Instant::now() + Duration::from_millis(60);
        out.clear();
        cache.kept_all(["a"], later, &mut out);
        assert_eq!(out, [None]);
        assert_eq!(cache.kept("a"), None);
        // Without a cache, nothing is kept.
        out.clear();
        Cache::new(0, Duration::ZERO, Duration::ZERO).kept_all(["a"], later, &mut out);
        assert_eq!(out, [None]);
    }

    #[tokio::test]
    async fn answers_are_kept_for_their_ttl_and_failures_not_at_all() {
        let cache = Cache::new(2, Duration::from_millis(50), Duration::from_millis(10));
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert_eq!(
            cache.get(&a, || async { found("1") }).await.1,
            Source::Called
        );
        assert_eq!(
            cache.get(&a, || async { found("x") }).await,
            (found("1"), Source::Hit)
        );
        assert_eq!(
            cache.get(&b, || async { Ok(Answer::NotFound) }).await.1,
            Source::Called
        );
        assert_eq!(cache.get(&b, || async { found("x") }).await.1, Source::Hit);
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(
            cache.get(&b, || async { found("b") }).await.1,
            Source::Called,
            "the negative ttl is shorter"
        );
        // Least recently used out first: a was used before b, so c pushes a out.
        assert_eq!(
            cache.get(&c, || async { found("3") }).await.1,
            Source::Called
        );
        assert_eq!(
            cache.get(&a, || async { found("1") }).await.1,
            Source::Called
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            cache.get(&a, || async { found("1") }).await.1,
            Source::Called
        );
        let failed = || async { Err(Failure::Timeout) };
        assert_eq!(cache.get(&"d".into(), failed).await.1, Source::Called);
        assert_eq!(cache.get(&"d".into(), failed).await.1, Source::Called);
    }
}
