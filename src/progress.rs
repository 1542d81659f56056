//! The progress line on stderr (indicatif): on by default when stderr is a terminal,
//! never when it is piped unless `--progress` asks for it, never with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::dead_letter::DeadLetters;

#[derive(Clone)]
pub struct Progress {
    bar: Option<(ProgressBar, DeadLetters)>,
}

impl Progress {
    /// A progress line for `stage`, shown when `forced`, or when stderr is a terminal and
    /// not `quiet`.
    pub fn new(stage: &str, forced: bool, quiet: bool, dead: &DeadLetters) -> Progress {
        let show = !quiet && (forced || std::io::stderr().is_terminal());
        if !show {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {stage}: {{human_pos}} events ({{per_sec}}) {{msg}} [{{elapsed}}]"
            ))
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar: Some((bar, dead.clone())),
        }
    }

    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// Counts `n` more events out.
    pub fn inc(&self, n: u64) {
        self.inc_with(n, "");
    }

    /// Counts `n` more events out and shows `extra` (such as "12 batches · 1 retry")
    /// after the reject count.
    pub fn inc_with(&self, n: u64, extra: &str) {
        if let Some((bar, dead)) = &self.bar {
            bar.inc(n);
            let rejected = dead.count();
            let mut msg = String::new();
            if rejected > 0 {
                msg = format!("· {rejected} rejected ");
            }
            if !extra.is_empty() {
                msg.push_str("· ");
                msg.push_str(extra);
            }
            bar.set_message(msg);
        }
    }

    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    pub fn finish(&self) {
        if let Some((bar, _)) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
