//! The thread `--http` calls run on: a runtime of their own, so that answers are read as
//! they come rather than when a thread of the stage's runtime is done with a batch.
//!
//! The stage's runtime threads run CPU work of a millisecond or more at a time (a
//! batch's requests and edits, and in `pipeline` the other stages' batches); an answer
//! arriving meanwhile waited for it, and its round trip, which `--concurrency auto` goes
//! by, grew with the stage's load instead of the service's. Here the calls, their
//! connections and their timeouts live on one thread that does nothing else: a batch's
//! lookups that the cache did not answer are handed over together and their answers
//! handed back together (a hand-over between threads costs a wake-up, several
//! microseconds, as much as the rest of a call), and each exchange is timed there.

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::exit::{Error, Exit, Result};

/// The thread and its runtime; it ends when this is dropped.
pub struct IoThread {
    handle: Handle,
    /// Dropped with this: the thread's runtime then stops (its calls are cancelled).
    _stop: oneshot::Sender<()>,
}

impl IoThread {
    pub fn start() -> Result<IoThread> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    Exit::Software,
                    anyhow::anyhow!("cannot start the lookups' runtime: {e}"),
                )
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("enrich-io".into())
            .spawn(move || {
                // Runs the calls handed over until told to stop; the runtime is then
                // dropped here, outside any other runtime.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| {
                Error::new(
                    Exit::Software,
                    anyhow::anyhow!("cannot start the lookups' thread: {e}"),
                )
            })?;
        Ok(IoThread {
            handle,
            _stop: stop,
        })
    }

    /// Runs `call` on the thread: its output (`None` if the thread has stopped).
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.handle.spawn(call).await.ok()
    }
}
