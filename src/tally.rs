//! Counting once: what each stage of a run received, passed on, rejected and had dropped
//! in front of it, in one [`Tally`] per stage.
//!
//! The wiring makes the tallies (one per link of a chain, [`crate::wire::Link::new`]) and
//! hands each to its stage in the context; the stage counts into it, through one call per
//! batch. Everything that shows counts reads them from there: the stand-alone summary
//! ([`crate::shell`]), `pipeline`'s summary and its progress lines, the progress line of
//! a command, and `/metrics` ([`render`]), where they are Vector's series:
//!
//! - `component_received_events_total{component}`: events a stage took in; for a source,
//!   what it consumed (Kafka messages, lines of HTTP request bodies, lines of files).
//! - `component_received_bytes_total{component}`: the bytes of those.
//! - `component_sent_events_total{component}`: events passed on (a sink: stored).
//! - `component_rejected_events_total{component}`: events made dead letters.
//! - `component_discarded_events_total{component}`: events `--when-full drop-*` dropped in
//!   the channel in front of the stage.
//!
//! Stages that share a name (`pipeline 'validate | validate'`) share a series: the sum.
//!
//! A stage may count [`Figure`]s of its own besides (ingest-file's files open, rotations
//! and truncations): a series each, labelled the same way, and a word in its summary.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One stage's counts; clones count into the same numbers.
#[derive(Clone)]
pub struct Tally(Arc<Inner>);

struct Inner {
    component: &'static str,
    figures: Mutex<Vec<(&'static Figure, Arc<AtomicU64>)>>,
    received: AtomicU64,
    received_bytes: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
}

/// A figure a stage counts besides events and bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Figure {
    /// Its Prometheus series, labelled `component`.
    pub series: &'static str,
    /// A label of its own besides `component` (`outcome="ok"`): figures of one series
    /// told apart.
    pub label: Option<(&'static str, &'static str)>,
    pub kind: FigureKind,
    /// The word after its value in the stage's summary (`rotations`); none: not shown.
    pub summary: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FigureKind {
    Counter,
    Gauge,
}

impl FigureKind {
    fn word(self) -> &'static str {
        match self {
            FigureKind::Counter => "counter",
            FigureKind::Gauge => "gauge",
        }
    }
}

/// What a tally holds at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub received: u64,
    pub received_bytes: u64,
    pub sent: u64,
    pub rejected: u64,
    pub dropped: u64,
}

/// Every listed tally of this process, for [`render`]. A process runs one chain (a
/// command, or one `pipeline`), so this only grows by its few stages.
static LISTED: Mutex<Vec<Tally>> = Mutex::new(Vec::new());

impl Tally {
    /// A tally for `component`, listed for `/metrics`.
    pub fn new(component: &'static str) -> Tally {
        let tally = Tally::unlisted(component);
        LISTED.lock().expect("not poisoned").push(tally.clone());
        tally
    }

    /// A tally that `/metrics` does not show: for a stage that only groups others (the
    /// sources of a hub count for themselves), and for stages run outside a chain.
    pub fn unlisted(component: &'static str) -> Tally {
        Tally(Arc::new(Inner {
            component,
            figures: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }))
    }

    /// A tally the wiring has yet to replace: what [`crate::stage::Ctx::new`] starts with.
    /// A chain run with it gets a tally of its own, listed ([`crate::wire::chain`]).
    pub fn pending() -> Tally {
        Tally::unlisted("")
    }

    pub fn is_pending(&self) -> bool {
        self.0.component.is_empty()
    }

    pub fn component(&self) -> &'static str {
        self.0.component
    }

    /// `n` events taken in.
    pub fn received(&self, n: u64) {
        self.0.received.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` events taken in, `bytes` long together (a source's consumption).
    pub fn consumed(&self, n: u64, bytes: u64) {
        self.0.received.fetch_add(n, Ordering::Relaxed);
        self.0.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `n` events passed on (a sink: stored).
    pub fn sent(&self, n: u64) {
        self.0.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` events made dead letters.
    pub fn rejected(&self, n: u64) {
        self.0.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` events dropped in front of this stage (`--when-full drop-*`).
    pub fn dropped(&self, n: u64) {
        self.0.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter of `figure` (made at first use): add to it, or set a gauge.
    pub fn figure(&self, figure: &'static Figure) -> Arc<AtomicU64> {
        let mut figures = self.0.figures.lock().expect("not poisoned");
        if let Some((_, v)) = figures.iter().find(|(f, _)| std::ptr::eq(*f, figure)) {
            return v.clone();
        }
        let v = Arc::new(AtomicU64::new(0));
        figures.push((figure, v.clone()));
        v
    }

    /// The figures counted, with their values, in the order first counted.
    pub fn figures(&self) -> Vec<(&'static Figure, u64)> {
        let figures = self.0.figures.lock().expect("not poisoned");
        figures
            .iter()
            .map(|(f, v)| (*f, v.load(Ordering::Relaxed)))
            .collect()
    }

    /// The events passed on so far (what a progress line shows).
    pub fn sent_so_far(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    pub fn get(&self) -> Counted {
        let i = &self.0;
        Counted {
            received: i.received.load(Ordering::Relaxed),
            received_bytes: i.received_bytes.load(Ordering::Relaxed),
            sent: i.sent.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The counts of every listed tally as Prometheus text, summed by component (see the
/// module notes for the series).
pub fn render(out: &mut String) {
    let listed = LISTED.lock().expect("not poisoned").clone();
    let mut by_component: Vec<(&'static str, Counted)> = Vec::new();
    for tally in &listed {
        let c = tally.get();
        let sum = match by_component
            .iter_mut()
            .find(|(name, _)| *name == tally.component())
        {
            Some((_, sum)) => sum,
            None => {
                by_component.push((tally.component(), Counted::default()));
                &mut by_component.last_mut().expect("pushed").1
            }
        };
        sum.received += c.received;
        sum.received_bytes += c.received_bytes;
        sum.sent += c.sent;
        sum.rejected += c.rejected;
        sum.dropped += c.dropped;
    }
    type Series = (&'static str, fn(&Counted) -> u64);
    let series: [Series; 5] = [
        ("component_received_events_total", |c| c.received),
        ("component_received_bytes_total", |c| c.received_bytes),
        ("component_sent_events_total", |c| c.sent),
        ("component_rejected_events_total", |c| c.rejected),
        ("component_discarded_events_total", |c| c.dropped),
    ];
    for (name, value) in series {
        let _ = writeln!(out, "# TYPE {name} counter");
        for (component, c) in &by_component {
            let _ = writeln!(out, "{name}{{component=\"{component}\"}} {}", value(c));
        }
    }
    // Figures: one series each (figures with labels share theirs), summed by component
    // like the counts.
    type Values = Vec<(&'static str, Option<(&'static str, &'static str)>, u64)>;
    let mut figures: Vec<(&'static Figure, Values)> = Vec::new();
    for tally in &listed {
        for (figure, v) in tally.figures() {
            let at = match figures.iter().position(|(f, _)| f.series == figure.series) {
                Some(at) => at,
                None => {
                    figures.push((figure, Vec::new()));
                    figures.len() - 1
                }
            };
            let values = &mut figures[at].1;
            match values
                .iter_mut()
                .find(|(c, l, _)| *c == tally.component() && *l == figure.label)
            {
                Some((_, _, sum)) => *sum += v,
                None => values.push((tally.component(), figure.label, v)),
            }
        }
    }
    for (figure, values) in figures {
        let _ = writeln!(out, "# TYPE {} {}", figure.series, figure.kind.word());
        for (component, label, v) in values {
            let label = label.map_or(String::new(), |(k, v)| format!(",{k}=\"{v}\""));
            let _ = writeln!(
                out,
                "{}{{component=\"{component}\"{label}}} {v}",
                figure.series
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_of_one_name_share_a_series_and_unlisted_ones_are_not_shown() {
        let a = Tally::new("tally-test-a");
        let a2 = Tally::new("tally-test-a");
        let hidden = Tally::unlisted("tally-test-hidden");
        a.consumed(3, 30);
        a2.received(2);
        a.sent(4);
        a2.rejected(1);
        a.dropped(5);
        hidden.sent(9);
        let mut text = String::new();
        render(&mut text);
        for line in [
            "component_received_events_total{component=\"tally-test-a\"} 5",
            "component_received_bytes_total{component=\"tally-test-a\"} 30",
            "component_sent_events_total{component=\"tally-test-a\"} 4",
            "component_rejected_events_total{component=\"tally-test-a\"} 1",
            "component_discarded_events_total{component=\"tally-test-a\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("tally-test-hidden"), "{text}");
        static OPEN: Figure = Figure {
            series: "tally_test_open",
            label: None,
            kind: FigureKind::Gauge,
            summary: None,
        };
        a.figure(&OPEN).fetch_add(2, Ordering::Relaxed);
        a2.figure(&OPEN).fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        render(&mut text);
        assert!(
            text.contains(
                "# TYPE tally_test_open gauge\ntally_test_open{component=\"tally-test-a\"} 3\n"
            ),
            "{text}"
        );
        static OK: Figure = Figure {
            series: "tally_test_calls_total",
            label: Some(("outcome", "ok")),
            kind: FigureKind::Counter,
            summary: None,
        };
        static FAILED: Figure = Figure {
            series: "tally_test_calls_total",
            label: Some(("outcome", "failed")),
            kind: FigureKind::Counter,
            summary: None,
        };
        a.figure(&OK).fetch_add(4, Ordering::Relaxed);
        a2.figure(&FAILED).fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        render(&mut text);
        assert!(
            text.contains(
                "# TYPE tally_test_calls_total counter\n\
                 tally_test_calls_total{component=\"tally-test-a\",outcome=\"ok\"} 4\n\
                 tally_test_calls_total{component=\"tally-test-a\",outcome=\"failed\"} 1\n"
            ),
            "{text}"
        );
        assert_eq!(a.get().received, 3);
    }
}
