//! What every binary shares: the common flags, argument parsing with our exit codes,
//! logging, and the runtime that runs a command and maps its result to an exit code.

use std::future::Future;
use std::io::IsTerminal;

use clap::{Args, Parser, ValueEnum};

use crate::exit::{Exit, Result};

/// Flags every ndpipe command takes (flattened into each command's own flags).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Common options")]
pub struct Common {
    /// Append rejected records to PATH as NDJSON, one record per reject, with the stage,
    /// reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means
    /// stderr. Several stages may share one file. Without it, rejects are counted, summarised
    /// on stderr, and the exit code is 65.
    #[arg(long, value_name = "PATH")]
    pub dead_letter: Option<String>,

    /// Longest accepted input line, without its line ending. Longer lines become dead
    /// letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub max_line_bytes: u64,

    /// Name of the reserved top-level field holding origin metadata (source, topic,
    /// partition, offset, ...). Stages pass it through untouched; validation and jq never see it.
    #[arg(long, value_name = "NAME", default_value = "_meta")]
    pub meta_field: String,

    /// Show a progress line on stderr even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,

    /// Print only errors on stderr: no progress line, no summary, no info logs.
    #[arg(short, long)]
    pub quiet: bool,

    /// How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe
    /// reads on to its end within this time (the command before it in the pipe got the
    /// signal too, and is writing out what it holds); ingest-http writes out what it has
    /// queued. What is still unwritten or unread then is reported (exit 74 for events a
    /// source had acknowledged). A second signal exits at once (130).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,

    /// Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as
    /// 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503
    /// while shutting down, while a database written to does not answer, or while an enrich
    /// lookup's circuit breaker is open. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the
    /// OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with
    /// its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP
    /// request is continued. Sampling follows OTEL_TRACES_SAMPLER and
    /// OTEL_TRACES_SAMPLER_ARG. Off by default.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses a duration (`100ms`, `5s`, `1m 30s`); a plain number is milliseconds, so that
/// flags once spelt `--…-ms N` keep working.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_millis(ms));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (examples: 100ms, 5s, 1m): {e}"))
}

/// Parses a count that must be 1 or more (`--workers`, `--channel-capacity`): one rule for
/// every count flag, so that 0 is refused (exit 64 at start, a refused reload later)
/// rather than quietly run as 1.
pub fn parse_count(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be 1 or more".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Parses `16M`, `64K`, `1G` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size in bytes (examples: 1048576, 64K, 16M)"))
}

/// Parses the command line; usage errors exit 64 (clap's own would be 2).
///
/// Every binary calls this (or [`parse_matches`]) first, so every binary can be started
/// as a jq helper ([`crate::jq::serve_if_helper`]): `enrich --jq` starts its helpers from
/// the running executable, whichever command that is (`enrich`, or `pipeline` running an
/// enrich stage).
pub fn parse<A: Parser>() -> A {
    crate::jq::serve_if_helper();
    A::try_parse().unwrap_or_else(|e| usage_exit(e))
}

/// [`parse`] for a command known by its clap definition (a row of
/// [`crate::commands::ALL`]).
pub fn parse_matches(cmd: clap::Command) -> clap::ArgMatches {
    crate::jq::serve_if_helper();
    cmd.try_get_matches().unwrap_or_else(|e| usage_exit(e))
}

/// Prints clap's message and exits: 64 for a usage error, 0 for `--help` and `--version`.
pub fn usage_exit(e: clap::Error) -> ! {
    let code = if e.use_stderr() {
        Exit::Usage.code()
    } else {
        0
    };
    let _ = e.print();
    std::process::exit(code.into());
}

/// Sets up logging to stderr, runs `fut` on a multi-threaded runtime and maps its
/// result to the exit code, printing one line for an error. A closed stdout is a clean end.
pub fn run(
    name: &str,
    common: &Common,
    fut: impl Future<Output = Result<Exit>>,
) -> std::process::ExitCode {
    init_logging(common);
    // One thread per core (at least two): the workers of validate and enrich run their
    // batches on them (see `stage::Runs`). Sockets and timers are then looked at every 4
    // tasks, not tokio's 61: with batches queued on every thread, `/ready` answered in
    // 4.4 ms at the median and 11 ms at p90 under full load (1.3 and 3.6 when batches
    // ran on the blocking pool); with 4, 0.6 and 2-4.5, at the same throughput.
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .max(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .event_interval(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: error: cannot start the runtime: {e}");
            return Exit::Software.into();
        }
    };
    let traces = match crate::trace::start(name, common.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            return Exit::Usage.into();
        }
    };
    let result = runtime.block_on(fut);
    traces.finish();
    // Threads still blocked in read(2) must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(code) => code.into(),
        Err(e) if e.is_broken_pipe() => Exit::Ok.into(),
        Err(e) => {
            // Usage errors may quote a stage's words, connection strings included.
            eprintln!("{name}: error: {}", crate::redact::text(&e.to_string()));
            e.exit.into()
        }
    }
}

/// Whether log lines may use colour: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(common: &Common) {
    use tracing_subscriber::EnvFilter;
    let default = if common.quiet { "error" } else { "info" };
    let filter = EnvFilter::try_from_env("NDPIPE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter)
        .with_ansi(colour());
    let _ = match common.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_old_millisecond_spellings() {
        use std::time::Duration;
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn counts_start_at_one() {
        assert_eq!(parse_count("8"), Ok(8));
        assert!(parse_count("0").unwrap_err().contains("1 or more"));
        assert!(parse_count("-1").is_err());
    }
}
