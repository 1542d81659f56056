//! What ingest-http runs with, resolved from its flags: limits, TLS, tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::{Error, Exit, Result};

use super::{AckMode, Args};

/// Settings fixed at start.
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub queue_capacity: u32,
    pub queue_bytes: u64,
    pub max_inflight_bytes: u64,
    pub body_timeout: Duration,
    pub min_body_rate: u64,
    pub enqueue_timeout: Duration,
    pub max_open_requests: usize,
    pub ack: AckMode,
    pub all_or_nothing: bool,
    pub auth_token: Option<String>,
    pub max_line_bytes: usize,
    pub shutdown_timeout: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let auth_token = match (&args.auth_token, &args.auth_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => {
                let t = std::fs::read_to_string(path).map_err(|e| {
                    let what = format!("--auth-token-file {}", path.display());
                    Error::unreadable(what, &e, Exit::IoErr)
                })?;
                Some(t.trim().to_owned())
            }
            (None, None) => None,
        };
        if auth_token.as_deref() == Some("") {
            return Err(Error::usage("the auth token is empty"));
        }
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Config {
            listen: args.listen,
            max_body_bytes: to_usize(args.max_body_bytes),
            max_decompressed_bytes: to_usize(args.max_decompressed_bytes),
            queue_capacity: args.queue_capacity,
            queue_bytes: args.queue_bytes.min(u32::MAX as u64 * 1024),
            max_inflight_bytes: args.max_inflight_bytes.max(args.max_body_bytes),
            body_timeout: args.body_timeout,
            min_body_rate: args.min_body_rate,
            enqueue_timeout: args.enqueue_timeout,
            max_open_requests: args.max_open_requests.max(1),
            ack: args.ack,
            all_or_nothing: args.all_or_nothing,
            auth_token,
            max_line_bytes: to_usize(args.common.max_line_bytes),
            shutdown_timeout: args.common.shutdown_timeout,
            tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        })
    }
}
