//! The flags of lookups in an external service (`--http`), grouped under their own
//! heading of `enrich --help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cli::{parse_count, parse_duration};
use crate::json::FieldPath;

use super::concurrency::Setting;

/// What a lookup that failed does to its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    /// The event is a dead letter (kind enrich_http or enrich_sql, or circuit_open while
    /// the breaker is open), with the status or error.
    Dlq,
    /// The event goes on without the field; `_meta.enrich_failed` says why.
    Pass,
    /// The event waits for the service, retried without end: back-pressure instead of
    /// loss. A 4xx other than 429 still makes a dead letter (asking again will not help),
    /// and after a shutdown signal a failure does too, so that the run can end.
    Block,
}

/// What a not-found answer (HTTP 404, no row) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NotFound {
    /// The event is a dead letter.
    Dlq,
    /// The field is set to null.
    Null,
}

#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Lookups in an HTTP service or PostgreSQL")]
pub struct RemoteArgs {
    /// For each event, call URL and set --into to the JSON answer. `{path}` is replaced by
    /// the event's field, percent-encoded (https://svc/users/{user_id}); an event
    /// without the field is a dead letter (kind missing_field). A proxy named by
    /// HTTP_PROXY, HTTPS_PROXY or ALL_PROXY is used (NO_PROXY's hosts excepted); a
    /// redirect is not followed.
    #[arg(long, value_name = "URL", group = "remote", requires = "into")]
    pub http: Option<String>,

    /// For each event, run QUERY in PostgreSQL as a prepared statement, `$1`, `$2`, … being
    /// the --sql-args fields, and set --into to its first row as an object (--sql-rows
    /// all: every row, in an array). No row is not found (--not-found). The database:
    /// --database-url, DATABASE_URL or the PG* variables, as persist takes them.
    #[arg(long, value_name = "QUERY", group = "remote", requires = "into")]
    pub sql: Option<String>,

    /// The event fields bound to $1, $2, … of --sql, comma-separated, in order; each in
    /// text form, read as the type the query gives it (a JSON null is NULL). An event
    /// without one is a dead letter (kind missing_field).
    #[arg(
        long,
        value_name = "F1,F2,...",
        value_delimiter = ',',
        requires = "sql"
    )]
    pub sql_args: Vec<FieldPath>,

    /// Which rows of --sql make the answer.
    #[arg(
        long,
        value_name = "WHICH",
        value_enum,
        default_value = "first",
        requires = "sql"
    )]
    pub sql_rows: super::sql::Rows,

    /// The PostgreSQL of --sql: a URL (postgres://user:pass@host:port/db?sslmode=require)
    /// or libpq key=value pairs.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the answer goes: a field path, set as --set sets (the rest of the event
    /// keeps its bytes).
    #[arg(long, value_name = "FIELD", requires = "remote")]
    pub into: Option<FieldPath>,

    /// The method of the call.
    #[arg(long, value_name = "METHOD", default_value = "GET", requires = "http")]
    pub http_method: String,

    /// A JSON body to send (Content-Type: application/json); `{path}` is replaced by the
    /// field's JSON value: '{"ids": [{user_id}]}'.
    #[arg(long, value_name = "TEMPLATE", requires = "http")]
    pub http_body: Option<String>,

    /// A header sent with every call, 'Name: value'; $VAR and ${VAR} are taken from the
    /// environment ('Authorization: Bearer $TOKEN'). Repeatable. Credentials never show
    /// in --explain or logs.
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "http")]
    pub headers: Vec<String>,

    /// Keep only this part of the answer (a field path into it; null when absent).
    #[arg(long, value_name = "PATH", requires = "http")]
    pub http_select: Option<FieldPath>,

    /// PEM certificates to trust for HTTPS besides the system's.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub http_ca: Option<PathBuf>,

    /// What a not-found answer (an HTTP 404, no row for --sql) does: dlq (a dead letter,
    /// kind enrich_http or enrich_sql), or null (the field is set to null).
    #[arg(
        long,
        value_name = "WHAT",
        value_enum,
        default_value = "dlq",
        requires = "remote"
    )]
    pub not_found: NotFound,

    /// What a failed lookup (after its retries) does: dlq, pass, or block.
    #[arg(
        long,
        value_name = "WHAT",
        value_enum,
        default_value = "dlq",
        requires = "remote"
    )]
    pub on_failure: OnFailure,

    /// Calls in flight at once across the stage, or auto: grown while the service's
    /// latency holds, halved when it rises or the service answers 429 or 503.
    #[arg(
        long,
        value_name = "N|auto",
        default_value = "auto",
        requires = "remote"
    )]
    pub concurrency: Setting,

    /// The longest one call may take, from connecting to the last byte of its answer.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration, requires = "remote")]
    pub timeout: Duration,

    /// Calls again after no connection, a timeout, a 5xx or a 429 (a 429's or 503's
    /// Retry-After is honoured), or a database shutting down or overloaded, waiting
    /// 100 ms, 200 ms, … up to 5 s, each wait jittered. Other 4xx answers and other SQL
    /// errors are not retried.
    #[arg(long, value_name = "N", default_value_t = 2, requires = "remote")]
    pub retries: u32,

    /// Consecutive failed calls that open the circuit breaker of a service (per host, or
    /// the database): while open, no call is made.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = parse_count, requires = "remote")]
    pub breaker_failures: usize,

    /// The share of failed calls (0 to 1) over --breaker-window that opens the breaker
    /// too (counted once 20 calls were made in the window).
    #[arg(long, value_name = "SHARE", default_value_t = 0.5, value_parser = parse_share, requires = "remote")]
    pub breaker_rate: f64,

    /// The window of --breaker-rate.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "remote")]
    pub breaker_window: Duration,

    /// How long an open breaker makes no call; then one probe call is made (half-open),
    /// and its success closes the breaker.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "remote")]
    pub breaker_cooldown: Duration,

    /// Keep up to N answers (least recently used out first); 0 keeps none.
    /// Calls for the same request are shared while out, kept or not.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "remote")]
    pub cache_size: usize,

    /// How long a kept answer is used.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, requires = "remote")]
    pub cache_ttl: Duration,

    /// How long a kept not-found answer is used.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, requires = "remote")]
    pub negative_ttl: Duration,

    /// At most N calls per second across the stage (N/s, or N/m), a token bucket that
    /// lets a burst of one second's calls through.
    #[arg(long, value_name = "N/s", value_parser = parse_rate, requires = "remote")]
    pub rate_limit: Option<Rate>,
}

/// `--rate-limit`: calls per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub calls: u32,
    pub per: Duration,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.per == Duration::from_secs(60) {
            "m"
        } else {
            "s"
        };
        write!(f, "{}/{unit}", self.calls)
    }
}

fn parse_rate(s: &str) -> std::result::Result<Rate, String> {
    let (n, unit) = s.split_once('/').unwrap_or((s, "s"));
    let per = match unit {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        _ => return Err(format!("{s:?}: expected N/s or N/m")),
    };
    match n.trim().parse::<u32>() {
        Ok(calls) if calls > 0 => Ok(Rate { calls, per }),
        _ => Err(format!("{s:?}: expected N/s or N/m with N of 1 or more")),
    }
}

fn parse_share(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: expected a share above 0 and at most 1, such as 0.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_shares() {
        assert_eq!(
            parse_rate("100/s").unwrap(),
            Rate {
                calls: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(parse_rate("6/m").unwrap().to_string(), "6/m");
        assert!(parse_rate("0/s").is_err() && parse_rate("5/h").is_err());
        assert!(parse_share("0.5").is_ok() && parse_share("1.5").is_err());
    }
}
