//! `--version-field` values: parsed once in Rust, so that duplicate keys inside one batch
//! pick their winner exactly as the database compares stored rows, and a value of the
//! wrong type is a dead letter before any SQL runs.

use std::cmp::Ordering;

use clap::ValueEnum;

/// The SQL type of the version column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VersionType {
    /// 64-bit integer (a JSON integer, or a string holding one).
    Bigint,
    /// Exact decimal (a JSON number, or a string holding one).
    Numeric,
    /// RFC 3339 timestamp with an offset (`2026-11-01T00:00:00Z`), compared in UTC.
    Timestamptz,
}

impl VersionType {
    pub fn sql(self) -> &'static str {
        match self {
            VersionType::Bigint => "bigint",
            VersionType::Numeric => "numeric",
            VersionType::Timestamptz => "timestamptz",
        }
    }
}

/// A parsed version: its order key, and the text handed to the database.
#[derive(Clone, Debug)]
pub struct Version {
    key: Key,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Int(i64),
    Dec(Decimal),
    Ts(i128),
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Dec(a), Key::Dec(b)) => a.cmp(b),
            (Key::Ts(a), Key::Ts(b)) => a.cmp(b),
            _ => unreachable!("one version type per run"),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    /// Parses a field's raw JSON text as a version of type `ty`.
    pub fn parse(raw: &str, ty: VersionType) -> Result<Version, String> {
        let inner = if raw.starts_with('"') {
            serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?
        } else {
            raw.to_owned()
        };
        let bad = || format!("{raw} is not a {}", ty.sql());
        match ty {
            VersionType::Bigint => {
                let n: i64 = inner.trim().parse().map_err(|_| bad())?;
                Ok(Version {
                    key: Key::Int(n),
                    text: n.to_string(),
                })
            }
            VersionType::Numeric => {
                let d = Decimal::parse(inner.trim()).ok_or_else(bad)?;
                Ok(Version {
                    key: Key::Dec(d),
                    text: inner.trim().to_owned(),
                })
            }
            VersionType::Timestamptz => {
                let ts: jiff::Timestamp = inner.trim().parse().map_err(|_| bad())?;
                // PostgreSQL keeps microseconds: compare at that precision, and hand both
                // databases the same rounded value, so that a batch's winner, a stored
                // PostgreSQL row and a stored SQLite row all agree. (Comparing nanoseconds
                // let .0000006Z overwrite .0000014Z on PostgreSQL: both stored as .000001.)
                let ts = ts.round(jiff::Unit::Microsecond).map_err(|_| bad())?;
                Ok(Version {
                    key: Key::Ts(ts.as_nanosecond()),
                    // UTC with fixed nanoseconds: sorts as text too (SQLite compares text;
                    // nine digits, as earlier versions stored).
                    text: format!("{ts:.9}"),
                })
            }
        }
    }

    /// The value of a bigint version.
    pub fn int(&self) -> Option<i64> {
        match self.key {
            Key::Int(n) => Some(n),
            _ => None,
        }
    }

    pub fn order(&self, other: &Version) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// An exact decimal for comparison: sign, significant digits, decimal exponent.
/// The value is `0.d1d2d3... × 10^exp`; zero has no digits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    /// Parses a JSON-style number (`-12.5e3`); None for anything else.
    fn parse(s: &str) -> Option<Decimal> {
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (mantissa, e) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let lead = all.iter().take_while(|&&d| d == 0).count();
        let mut digits = all[lead..].to_vec();
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Decimal {
                negative: false,
                digits,
                exp: 0,
            });
        }
        let exp = int.len() as i64 - lead as i64 + e;
        Some(Decimal {
            negative,
            digits,
            exp,
        })
    }

    fn magnitude_cmp(&self, other: &Decimal) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        self.exp
            .cmp(&other.exp)
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.magnitude_cmp(other),
            (true, true) => other.magnitude_cmp(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(raw: &str, ty: VersionType) -> Version {
        Version::parse(raw, ty).unwrap()
    }

    #[test]
    fn decimals_compare_exactly() {
        let n = VersionType::Numeric;
        let order = [
            "-1e3",
            "-2",
            "-1.5",
            "0",
            "0.0001",
            "1",
            "1.0000000000000000001",
            "2",
            "10",
            "1.5e2",
        ];
        for w in order.windows(2) {
            assert_eq!(v(w[0], n).order(&v(w[1], n)), Ordering::Less, "{w:?}");
        }
        assert_eq!(v("1.50", n).order(&v("15e-1", n)), Ordering::Equal);
        assert_eq!(v("-0.0", n).order(&v("0", n)), Ordering::Equal);
        assert!(Version::parse("\"abc\"", n).is_err());
    }

    #[test]
    fn bigints_and_timestamps() {
        let b = VersionType::Bigint;
        assert_eq!(v("\"42\"", b).order(&v("41", b)), Ordering::Greater);
        assert!(Version::parse("1.5", b).is_err());
        let t = VersionType::Timestamptz;
        let a = v("\"2026-11-01T01:00:00+02:00\"", t);
        let z = v("\"2026-11-01T00:00:00Z\"", t);
        assert_eq!(a.order(&z), Ordering::Less);
        assert_eq!(z.text, "2026-11-01T00:00:00.000000000Z");
        assert!(Version::parse("\"yesterday\"", t).is_err());
        // Microseconds, as PostgreSQL stores them: these two are the same version.
        let late = v("\"2026-11-01T00:00:00.0000014Z\"", t);
        let early = v("\"2026-11-01T00:00:00.0000006Z\"", t);
        assert_eq!(late.order(&early), Ordering::Equal);
        assert_eq!(late.text, "2026-11-01T00:00:00.000001000Z");
        assert_eq!(
            v("\"2026-11-01T00:00:00.0000016Z\"", t).order(&late),
            Ordering::Greater
        );
    }
}
