//! When to look again: the kernel's change events (`notify`: inotify on Linux) on the
//! globs' directories, or a fixed interval (`--poll`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::shutdown::Shutdown;

use super::discover::Globs;

/// With change events, the globs are still listed again this often: events can be
/// missed (a directory created after its parent was watched, an overflowing event
/// queue), and a directory that did not exist yet is watched once it does.
const RESCAN: Duration = Duration::from_secs(1);

/// How often a wait looks at the shutdown token.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(50);

/// What woke the reader.
pub struct Wake {
    /// Files may have appeared, been renamed or deleted: list the globs again.
    pub rescan: bool,
}

/// The reader's alarm clock.
pub struct Waker {
    rx: Receiver<()>,
    /// Kept so that the channel stays open with `--poll` (no watcher holds a sender).
    _tx: SyncSender<()>,
    /// A change event named a file created, renamed or removed.
    names_changed: Arc<AtomicBool>,
    watcher: Option<RecommendedWatcher>,
    /// The roots to watch, and whether each is watched yet.
    roots: Vec<(PathBuf, RecursiveMode, bool)>,
    poll: Option<Duration>,
    last_rescan: Instant,
}

impl Waker {
    /// Change events on the globs' directories, or none with `--poll`.
    pub fn new(globs: &Globs, poll: Option<Duration>) -> Waker {
        // One pending wake-up is enough: the reader reads every file when it wakes.
        let (tx, rx) = sync_channel(1);
        let names_changed = Arc::new(AtomicBool::new(false));
        let watcher = match poll {
            Some(_) => None,
            None => {
                let (tx, names) = (tx.clone(), names_changed.clone());
                notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
                    let names_too = match &e {
                        Ok(e) => !matches!(
                            e.kind,
                            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Access(_)
                        ),
                        Err(_) => true,
                    };
                    if names_too {
                        names.store(true, Ordering::Relaxed);
                    }
                    let _ = tx.try_send(());
                })
                .map_err(|e| {
                    tracing::warn!("ingest-file: no change events ({e}); polling every {RESCAN:?}")
                })
                .ok()
            }
        };
        let mut waker = Waker {
            rx,
            _tx: tx,
            names_changed,
            watcher,
            roots: globs
                .roots()
                .into_iter()
                .map(|(p, m)| (p, m, false))
                .collect(),
            poll,
            last_rescan: Instant::now(),
        };
        waker.watch_roots();
        waker
    }

    /// Watches the roots not watched yet (those that exist now).
    fn watch_roots(&mut self) {
        let Some(w) = &mut self.watcher else {
            return;
        };
        for (dir, mode, watched) in &mut self.roots {
            if !*watched && dir.is_dir() {
                *watched = w.watch(dir, *mode).is_ok();
            }
        }
    }

    /// Waits for a change, the next rescan, or shutdown, and says whether to list the
    /// globs again.
    pub fn wait(&mut self, shutdown: &Shutdown, limit: Option<Duration>) -> Wake {
        let tick = self.poll.unwrap_or(RESCAN);
        let deadline = self.last_rescan + tick;
        let deadline = match limit {
            Some(l) => deadline.min(Instant::now() + l),
            None => deadline,
        };
        loop {
            let now = Instant::now();
            if now >= deadline || shutdown.is_triggered() {
                break;
            }
            match self.rx.recv_timeout((deadline - now).min(SHUTDOWN_CHECK)) {
                Ok(()) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("self.tx lives"),
            }
        }
        let due = self.last_rescan.elapsed() >= tick;
        let rescan = due || self.names_changed.swap(false, Ordering::Relaxed);
        if rescan {
            self.last_rescan = Instant::now();
            self.watch_roots();
        }
        Wake { rescan }
    }
}
