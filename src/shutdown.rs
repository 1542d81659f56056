//! Shutdown: a token passed into sources and sinks, triggered by the first signal.
//!
//! Stages never call `ctrl_c()` or `process::exit`. The command installs the handler
//! ([`Shutdown::on_signals`]) and hands the token in ([`crate::shell::run`],
//! `pipeline`'s run); the first SIGINT or SIGTERM triggers the token, sources stop
//! taking input and drop their senders, and every later stage drains what is in flight and
//! ends when its input channel closes (mini-redis's "drain by dropping senders"). A second
//! signal exits at once with code 130.
//!
//! Down a shell pipe, shutdown travels the same way: a signal to the whole process group
//! reaches every command, the source writes what it holds and closes its stdout, and a
//! command reading a pipe keeps reading it to its end (see `ndjson::read`), so nothing
//! the source acknowledged is dropped between two commands.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::exit::Exit;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// The signal that triggered it (0: none, or triggered by the program itself).
    signal: Arc<AtomicI32>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown of its own that this one also triggers: triggering it stops only those
    /// handed it (the sources of one hub when one of them fails), not the rest of the run.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            signal: self.signal.clone(),
        }
    }

    /// Starts a graceful shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Starts a graceful shutdown on behalf of signal `sig`.
    pub fn trigger_by(&self, sig: i32) {
        let _ = self
            .signal
            .compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
        self.token.cancel();
    }

    /// The exit code of a run this shutdown cut short: 128 + the signal (130 after SIGINT,
    /// 143 after SIGTERM), 130 when no signal was involved.
    pub fn interrupted_exit(&self) -> Exit {
        match self.signal.load(Ordering::Relaxed) {
            libc::SIGTERM => Exit::Terminated,
            _ => Exit::Interrupted,
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A token triggered by the first SIGINT/SIGTERM; a second one exits with 130.
    /// Must be called inside a tokio runtime.
    pub fn on_signals() -> Shutdown {
        let shutdown = Shutdown::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                tracing::warn!("cannot install signal handlers");
                return;
            };
            let sig = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            tracing::info!(
                "shutting down: draining in-flight events (signal again to exit at once)"
            );
            token.trigger_by(sig);
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            std::process::exit(Exit::Interrupted.code().into());
        });
        shutdown
    }
}
