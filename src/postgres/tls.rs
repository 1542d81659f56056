//! TLS for PostgreSQL connections, set up only when it is used, and once per process.
//!
//! Setting up an OpenSSL connector loads the system's root certificates whatever the
//! mode: 0.15 s of CPU (callgrind: half a billion instructions), paid for every
//! connection, before the server had even said whether it speaks TLS. So the connector is
//! built when the server agrees to TLS (a `prefer` connection to a server without it, the
//! usual local set-up, never builds one), and kept for the next connection with the same
//! checks (persist's connections, reconnects, `/ready` probes).
//!
//! What a connection checks ([`Verify`]) is resolved by [`super::connect`], which uses
//! this module; nothing here knows how a connection is specified.

use std::error::Error as StdError;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How certificates are checked, as resolved from the mode and the root certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    /// Check the chain (against `roots`, else the system's).
    pub chain: bool,
    /// Check that the certificate names the host.
    pub host_name: bool,
    /// A PEM file of the only roots to trust.
    pub roots: Option<PathBuf>,
}

/// The connectors built so far, by the checks they make and the roots they trust, as read
/// for the connection (a file changed since is read anew and gets its own connector). A
/// process has one or two.
type Key = (Verify, Option<Vec<u8>>);
static BUILT: Mutex<Vec<(Key, native_tls::TlsConnector)>> = Mutex::new(Vec::new());

/// What a connection's TLS will check, and the roots it trusts when they were named.
#[derive(Clone)]
pub struct LazyTls {
    verify: Verify,
    roots: Option<native_tls::Certificate>,
}

impl LazyTls {
    /// The TLS of a connection that checks as `verify` says. A root certificate file is
    /// read now, so that one that cannot be read fails the connection before any traffic.
    pub fn new(verify: &Verify) -> Result<LazyTls, String> {
        let roots = match &verify.roots {
            None => None,
            Some(path) => {
                let why = |e: &dyn std::fmt::Display| {
                    format!("root certificate file {}: {e}", path.display())
                };
                let pem = std::fs::read(path).map_err(|e| why(&e))?;
                Some(native_tls::Certificate::from_pem(&pem).map_err(|e| why(&e))?)
            }
        };
        Ok(LazyTls {
            verify: verify.clone(),
            roots,
        })
    }

    /// The connector for these checks: the one built before, or a new one.
    fn connector(&self) -> Result<native_tls::TlsConnector, BoxError> {
        let roots = match &self.roots {
            Some(cert) => Some(cert.to_der()?),
            None => None,
        };
        let key = (self.verify.clone(), roots);
        let mut built = BUILT.lock().expect("not poisoned");
        if let Some((_, c)) = built.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        let mut builder = native_tls::TlsConnector::builder();
        builder
            .danger_accept_invalid_certs(!self.verify.chain)
            .danger_accept_invalid_hostnames(!self.verify.host_name);
        if let Some(cert) = &self.roots {
            builder
                .add_root_certificate(cert.clone())
                .disable_built_in_roots(true);
        }
        let connector = builder.build().map_err(|e| format!("TLS set-up: {e}"))?;
        built.push((key, connector.clone()));
        Ok(connector)
    }
}

impl<S> MakeTlsConnect<S> for LazyTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = postgres_native_tls::TlsStream<S>;
    type TlsConnect = LazyConnect;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyConnect, BoxError> {
        Ok(LazyConnect {
            tls: self.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS, not set up until the server agrees to it.
pub struct LazyConnect {
    tls: LazyTls,
    domain: String,
}

impl<S> TlsConnect<S> for LazyConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = postgres_native_tls::TlsStream<S>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, BoxError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = self.tls.connector()?;
            let tls = postgres_native_tls::TlsConnector::new(connector, &self.domain);
            TlsConnect::connect(tls, stream).await.map_err(Into::into)
        })
    }
}
