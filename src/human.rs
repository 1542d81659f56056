//! Numbers, durations and times as people read them, the same in every command:
//! `1,234,567`, `64,661/s`, `12.3 s` in progress lines and summaries, and one timestamp
//! format in data.

use std::time::Duration;

/// The time now as every command writes it into data (`enrich --timestamp`,
/// ingest-http's `received_at`, SQLite's `first_seen` and `updated_at`): RFC 3339 in UTC
/// with microseconds, the precision PostgreSQL stores, e.g. `2026-11-29T16:09:57.815302Z`.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Events per second, rounded: `64,661/s`.
pub fn rate(events: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 0.001 {
        return "–/s".to_owned();
    }
    format!("{}/s", count((events as f64 / secs).round() as u64))
}

/// A run's length: `0.4 s`, `12.3 s`, `2 min 05 s`, `1 h 02 min`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(646_610_914, Duration::from_secs(10_000)), "64,661/s");
        assert_eq!(elapsed(Duration::from_millis(400)), "0.4 s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2 min 05 s");
        assert_eq!(elapsed(Duration::from_secs(3720)), "1 h 02 min");
    }
}
