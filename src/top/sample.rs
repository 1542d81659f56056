//! One scrape of `/metrics`, read into what the view shows: the Prometheus text format's
//! `name{label="value",…} number` lines (comments skipped). Only our own series are read,
//! whose label values hold no `,` `"` or `}`; a line that does not parse is skipped.

use std::collections::BTreeMap;
use std::time::Instant;

/// One series' labels, in the order written.
pub type Labels = Vec<(String, String)>;

/// A scrape: every series by name, at `at`.
pub struct Sample {
    pub at: Instant,
    pub series: BTreeMap<String, Vec<(Labels, f64)>>,
    /// The stages, in the order their first series appeared (the chain's order: the
    /// tallies are written in it).
    pub components: Vec<String>,
}

impl Sample {
    pub fn parse(text: &str, at: Instant) -> Sample {
        let mut series: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        let mut components: Vec<String> = Vec::new();
        for line in text.lines() {
            let Some((name, labels, value)) = parse_line(line) else {
                continue;
            };
            if name == "component_received_events_total" {
                if let Some((_, c)) = labels.iter().find(|(k, _)| k == "component") {
                    if !components.contains(c) {
                        components.push(c.clone());
                    }
                }
            }
            series
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Sample {
            at,
            series,
            components,
        }
    }

    /// The value of `name` whose labels include every one of `want`: summed over the
    /// series that match (0 when none does).
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    /// Whether any series of `name` matches `want`.
    pub fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.matching(name, want).next().is_some()
    }

    /// The series of `name` matching `want`.
    pub fn matching<'a>(
        &'a self,
        name: &str,
        want: &'a [(&str, &str)],
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(labels, _)| {
                want.iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(l, v)| (l, *v))
    }
}

fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, Vec::new()),
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            for pair in rest.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                labels.push((k.to_owned(), v.trim_matches('"').to_owned()));
            }
            (name, labels)
        }
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_and_the_chain_order() {
        let text = "# TYPE component_received_events_total counter\n\
            component_received_events_total{component=\"reader\"} 10\n\
            component_received_events_total{component=\"validate\"} 9\n\
            ndpipe_persist_rows_total{component=\"persist\",outcome=\"inserted\"} 7\n\
            ndpipe_persist_rows_total{component=\"persist\",outcome=\"updated\"} 2\n\
            ndpipe_tap_cut_total 1\n\
            broken{ 3\n";
        let s = Sample::parse(text, Instant::now());
        assert_eq!(s.components, ["reader", "validate"]);
        assert_eq!(
            s.get("ndpipe_persist_rows_total", &[("component", "persist")]),
            9.0
        );
        assert_eq!(
            s.get("ndpipe_persist_rows_total", &[("outcome", "updated")]),
            2.0
        );
        assert_eq!(s.get("ndpipe_tap_cut_total", &[]), 1.0);
        assert!(!s.has("broken", &[]));
    }
}
