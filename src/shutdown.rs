//! Shutdown: a token passed into sources and sinks, triggered by the first signal.
//!
//! Stages never call `ctrl_c()` or `process::exit`. The binary installs the handler
//! ([`Shutdown::on_signals`]); the first SIGINT or SIGTERM triggers the token, sources stop
//! reading and drop their senders, and every later stage drains what is in flight and
//! ends when its input channel closes (mini-redis's "drain by dropping senders"). A second
//! signal exits at once with code 130.

use tokio_util::sync::CancellationToken;

use crate::exit::Exit;

#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown(CancellationToken::new())
    }

    /// Starts a graceful shutdown.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        self.0.cancelled().await
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
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            tracing::info!(
                "shutting down: draining in-flight events (signal again to exit at once)"
            );
            token.trigger();
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            std::process::exit(Exit::Interrupted.code().into());
        });
        shutdown
    }
}
