//! `top`: a live terminal view of every stage of a run, redrawn every second from its
//! `/metrics` (the one counting path): rate in and out, rejects, drops, channel fill,
//! batch latency, workers; persist's rows, commits and commit time; Kafka lag; enrich's
//! breakers. `pipeline --top` shows its own run (serving `/metrics` on a port of its own
//! when `--metrics-listen` is not given); `pipeline top ADDR` shows any command or
//! pipeline serving `--metrics-listen ADDR`, on this machine or over SSH.
//!
//! It draws on stderr (stdout is data) in the terminal's alternate screen, with plain
//! ANSI sequences that any terminal over SSH understands, and no colour under `NO_COLOR`.
//! `q` (or Ctrl-C, Esc) leaves it: for `pipeline --top` that is the first signal, so the
//! run drains and ends as after SIGTERM. Log lines wait until the view is left
//! ([`crate::progress::hold`]); the last few are shown at its foot.
//!
//! - [`sample`]: one scrape read into series.
//! - [`draw`]: the lines of a frame.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, terminal};
use tokio::sync::mpsc;

use crate::exit::{Error, Result};

pub mod draw;
pub mod sample;

use draw::Frame;
use sample::Sample;

/// How often the view scrapes and redraws: Prometheus' own granularity is seconds.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one scrape may take before the frame says so.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the key reader looks whether the view has ended.
const KEY_POLL: Duration = Duration::from_millis(100);
/// Log lines shown at the foot of the view.
const LOG_LINES: usize = 3;

/// Why the view ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Left {
    /// The user pressed q.
    Quit,
    /// The run it watched ended (`pipeline --top`).
    Ended,
}

/// Fails unless stderr is a terminal: the view needs one to draw on.
pub fn check_terminal() -> Result<()> {
    if std::io::stderr().is_terminal() {
        Ok(())
    } else {
        Err(Error::usage("top needs a terminal on stderr"))
    }
}

/// Shows the figures served at `addr` (named `source` in the title) until q, or until
/// `ended` resolves.
pub async fn show(
    addr: SocketAddr,
    source: &str,
    ended: impl std::future::Future<Output = ()>,
) -> Result<Left> {
    check_terminal()?;
    // reqwest has no crypto provider of its own (see enrich's client); plain HTTP here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| Error::new(crate::exit::Exit::Software, e))?;
    let url = format!("http://{addr}/metrics");
    let held = crate::progress::hold();
    let screen = Screen::enter()?;
    let (keys, mut quit) = mpsc::channel(1);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || read_keys(&keys, &stop))
    };
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut before: Option<Sample> = None;
    let mut now: Option<Sample> = None;
    tokio::pin!(ended);
    let left = loop {
        let trouble = match scrape(&client, &url).await {
            Ok(text) => {
                before = now.take();
                now = Some(Sample::parse(&text, Instant::now()));
                None
            }
            Err(e) => Some(e),
        };
        let width = terminal::size().map_or(100, |(w, _)| w as usize);
        let empty = Sample::parse("", Instant::now());
        let frame = Frame {
            source,
            width,
            colour,
            trouble: trouble.as_deref(),
        };
        let mut lines = draw::draw(&frame, before.as_ref(), now.as_ref().unwrap_or(&empty));
        let logs = held.last(LOG_LINES);
        if !logs.is_empty() {
            lines.push(String::new());
            lines.extend(logs.into_iter().map(|l| l.chars().take(width).collect()));
        }
        screen.paint(&lines);
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            _ = quit.recv() => break Left::Quit,
            () = &mut ended => break Left::Ended,
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    drop(screen);
    drop(held);
    Ok(left)
}

async fn scrape(client: &reqwest::Client, url: &str) -> std::result::Result<String, String> {
    let answer = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("{url} answered {}", answer.status()));
    }
    answer.text().await.map_err(|e| e.to_string())
}

/// Sends one message when q, Esc or Ctrl-C is pressed; ends when `stop` is set.
fn read_keys(quit: &mpsc::Sender<()>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if !event::poll(KEY_POLL).unwrap_or(false) {
            continue;
        }
        if let Ok(Event::Key(KeyEvent {
            code, modifiers, ..
        })) = event::read()
        {
            let ctrl_c = code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL);
            if ctrl_c || matches!(code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                let _ = quit.try_send(());
                return;
            }
        }
    }
}

/// The terminal while the view owns it: raw mode (keys one at a time, no echo), the
/// alternate screen, no cursor. Restored when dropped, on every way out.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode()
            .map_err(|e| Error::usage(format!("top needs a terminal: {e}")))?;
        let mut err = std::io::stderr();
        let _ = crossterm::execute!(err, terminal::EnterAlternateScreen, cursor::Hide);
        Ok(Screen)
    }

    /// Draws `lines` from the top left, clearing what the last frame left.
    fn paint(&self, lines: &[String]) {
        let mut frame = String::from("\x1b[H");
        for line in lines {
            frame.push_str(line);
            frame.push_str("\x1b[K\r\n");
        }
        frame.push_str("\x1b[J");
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(frame.as_bytes());
        let _ = err.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut err = std::io::stderr();
        let _ = crossterm::execute!(err, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}
