//! The connections `--http` calls go over without a proxy: hyper's HTTP/1.1 connections,
//! kept open per service (scheme, host and port) between calls.
//!
//! hyper-util's pooled client did this before, for some 8 k instructions of the 48 k a
//! call costs on our side (callgrind of 20 k calls: its checkout and return of a
//! connection through a hashed map and its waiters, its boxed connect race, the request's
//! extensions), on the calls' one thread, which bounds the 95 % cache-hit workload. Here
//! a call takes the connection its service used last (or opens one with hyper-rustls's
//! connector: DNS, TLS and the trusted roots as before), sends on it, and puts it back
//! once the answer is read whole. One closed by the service while idle is passed over
//! when taken; one whose close races the request gives the request back unsent (hyper
//! tells), and it goes on another (an idle one, else a new one). A request that failed on the
//! wire is not sent again here: `--retries` decides.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use super::Failure;

/// How long an idle connection is kept: a service or a middlebox may drop it silently
/// past a while (hyper-util's default, 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Sender = SendRequest<Full<Bytes>>;

/// Where a connection goes: requests to the same one may share it.
#[derive(Clone, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

struct Service {
    origin: Origin,
    /// Its `Host` header, made once (made per call, 5 % of a call's cost).
    host: HeaderValue,
    idle: Vec<Idle>,
}

/// The open connections, and how to open more.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Each service called: its idle connections, the most recently used last. A stage
    /// calls one service or a few: a list, searched by equality, costs less than a hash
    /// a call.
    services: Mutex<Vec<Service>>,
    /// Idle connections kept per service.
    max_idle: usize,
}

/// A connection a request is out on: [`Pool::done`] puts it back once its answer is read.
pub struct Lease {
    origin: Origin,
    sender: Sender,
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, max_idle: usize) -> Pool {
        Pool {
            connector,
            services: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Sends `request` (an absolute URL, http or https, with no credentials in it) to its
    /// service: the answer's head, and the connection its body is read from.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), Failure> {
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(Failure::Transport(format!("not an absolute URL: {uri}")));
        };
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        let (host, mut idle) = self.take(&origin)?;
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, host);
        }
        // The request line names the path only (origin form), as for any server.
        *request.uri_mut() = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        loop {
            let (mut sender, reused) = match idle.take() {
                // Ready once its task has seen the last answer out; an error: closed.
                Some(mut sender) => match sender.ready().await {
                    Ok(()) => (sender, true),
                    Err(_) => {
                        idle = self.take(&origin)?.1;
                        continue;
                    }
                },
                // Boxed: its state is large, and rarely needed, while every call's
                // future (a batch holds thousands) would otherwise carry it inline
                // (2.7 k -> 4.3 k bytes a call: +28 MiB of RSS at 100 k calls).
                None => (Box::pin(self.connect(&uri)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { origin, sender })),
                Err(mut e) => match e.take_message() {
                    // Closed before the request went out: on another connection.
                    Some(unsent) if reused => {
                        request = unsent;
                        idle = self.take(&origin)?.1;
                    }
                    _ => return Err(Failure::Transport(super::http::chain(e.error()))),
                },
            }
        }
    }

    /// Puts a connection back once its answer was read whole.
    pub fn done(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let Some(service) = services.iter_mut().find(|s| s.origin == lease.origin) else {
            return;
        };
        if service.idle.len() < self.max_idle {
            service.idle.push(Idle {
                sender: lease.sender,
                since: Instant::now(),
            });
        }
    }

    /// The `Host` header of `origin`, and an idle connection to it; those closed or idle
    /// for too long are dropped on the way.
    fn take(&self, origin: &Origin) -> Result<(HeaderValue, Option<Sender>), Failure> {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let at = match services.iter().position(|s| s.origin == *origin) {
            Some(at) => at,
            None => {
                services.push(Service {
                    origin: origin.clone(),
                    host: host_header(origin)?,
                    idle: Vec::new(),
                });
                services.len() - 1
            }
        };
        let service = &mut services[at];
        while let Some(i) = service.idle.pop() {
            if !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT {
                return Ok((service.host.clone(), Some(i.sender)));
            }
        }
        Ok((service.host.clone(), None))
    }

    /// A new connection to `uri`'s service, its task spawned on the calls' runtime.
    async fn connect(&self, uri: &Uri) -> Result<Sender, Failure> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| Failure::Connect(super::http::chain(&*e)))?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(|e| Failure::Connect(super::http::chain(&*e)))?;
        let (mut sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| Failure::Connect(super::http::chain(&e)))?;
        // It ends when the service closes the connection, or when its sender is dropped
        // (a call timed out on it, or it was idle too long): its errors are the calls'.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender
            .ready()
            .await
            .map_err(|e| Failure::Connect(super::http::chain(&e)))?;
        Ok(sender)
    }
}

/// `Host`: the host, and the port unless it is the scheme's own.
fn host_header(origin: &Origin) -> Result<HeaderValue, Failure> {
    let default = match origin.scheme.as_str() {
        "https" => 443,
        _ => 80,
    };
    let host = origin.authority.host();
    let value = match origin.authority.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::try_from(value).map_err(|e| Failure::Transport(format!("the URL's host: {e}")))
}
