//! Where the server is and how to talk to it, resolved the way libpq resolves it: a URL
//! or `key=value` string, with the `PG*` environment variables filling in what it leaves
//! out, the password file, and libpq's TLS modes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::{Client, Config as PgConfig};

use crate::exit::{Error, Result};

use super::tls::{LazyTls, Verify};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// libpq tries without TLS first; the driver cannot, so this acts as `prefer`.
    Allow,
    /// TLS when the server offers it, certificate not checked (libpq's default).
    Prefer,
    /// TLS, certificate not checked, unless a root certificate file was named
    /// (`sslrootcert`, `PGSSLROOTCERT`): then checked as `verify-ca`, as libpq does.
    Require,
    /// TLS, the certificate chain checked against the roots; the host name is not.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::usage(format!(
                    "unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca, \
                     verify-full)"
                )))
            }
        })
    }
}

/// How to reach the server.
#[derive(Clone)]
pub struct ConnectSpec {
    config: PgConfig,
    ssl: SslMode,
    verify: Verify,
    /// What to call the server in messages (never the password).
    display: String,
}

/// The environment a spec is resolved in (the process's, or a test's).
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

/// The libpq variables that, set alone, select a PostgreSQL server.
const SELECTING_VARS: [&str; 6] = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
];

impl ConnectSpec {
    /// From `url` (`--database-url`/`DATABASE_URL`), else the libpq variables; `None`
    /// when neither names a server (the caller then uses SQLite). `app` is the
    /// `application_name` unless `PGAPPNAME` says otherwise.
    pub fn from_env(
        url: Option<&str>,
        timeout: Duration,
        app: &str,
    ) -> Result<Option<ConnectSpec>> {
        Self::resolve(url, timeout, app, &ProcessEnv)
    }

    /// From a URL or `key=value` string that must be given (`--offsets-from`).
    pub fn from_url(url: &str, timeout: Duration, app: &str) -> Result<ConnectSpec> {
        Self::resolve(Some(url), timeout, app, &ProcessEnv)?
            .ok_or_else(|| Error::usage("an empty PostgreSQL URL"))
    }

    /// Resolves a spec in `env`, as libpq does: the URL's parameters first, then the
    /// `PG*` variables for what it leaves out, then the password file.
    pub fn resolve(
        url: Option<&str>,
        timeout: Duration,
        app: &str,
        env: &dyn Env,
    ) -> Result<Option<ConnectSpec>> {
        let var = |k: &str| env.var(k);
        let (mut config, mut sslmode, mut rootcert, url_app) = match url.filter(|u| !u.is_empty()) {
            Some(url) => {
                // Parameters the driver does not parse (or parses differently) are taken
                // out first and handled here.
                let (url, sslmode) = take_param(url, "sslmode");
                let (mut url, rootcert) = take_param(&url, "sslrootcert");
                // The driver fills in 5432 for a host without a port; libpq takes PGPORT.
                if !names_port(&url) {
                    if let Some(port) = var("PGPORT") {
                        url = with_port(&url, &port);
                    }
                }
                let config: PgConfig = url
                    .parse()
                    .map_err(|e| Error::usage(format!("database URL: {e}")))?;
                let app = config.get_application_name().map(str::to_owned);
                (config, sslmode, rootcert, app)
            }
            None => {
                if SELECTING_VARS.iter().all(|k| var(k).is_none()) {
                    return Ok(None);
                }
                let mut config = PgConfig::new();
                if let Some(p) = var("PGPORT") {
                    let port: u16 = p
                        .parse()
                        .map_err(|_| Error::usage(format!("PGPORT={p:?} is not a port")))?;
                    config.port(port);
                }
                (config, None, None, None)
            }
        };
        // What the URL left out comes from the environment, as in libpq.
        if config.get_hosts().is_empty() {
            match var("PGHOST") {
                Some(hosts) => {
                    for h in hosts.split(',') {
                        if h.starts_with('/') {
                            config.host_path(h);
                        } else {
                            config.host(h);
                        }
                    }
                }
                None if Path::new("/var/run/postgresql").exists() => {
                    config.host_path("/var/run/postgresql");
                }
                None => {
                    config.host("localhost");
                }
            }
        }
        if config.get_user().is_none() {
            let user = var("PGUSER")
                .or_else(|| var("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(user);
        }
        if config.get_dbname().is_none() {
            let db = var("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("").into());
            config.dbname(db);
        }
        if config.get_password().is_none() {
            if let Some(pw) = var("PGPASSWORD") {
                config.password(pw);
            } else if let Some(pw) = pgpass_password(&config, env) {
                config.password(pw);
            }
        }
        sslmode = sslmode.or_else(|| var("PGSSLMODE"));
        rootcert = rootcert.or_else(|| var("PGSSLROOTCERT"));
        let ssl = match sslmode.as_deref() {
            None => SslMode::Prefer,
            Some(m) => SslMode::parse(m)?,
        };
        config.ssl_mode(match ssl {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        let verify = resolve_verify(ssl, rootcert.as_deref(), env)?;
        config.connect_timeout(timeout);
        config.application_name(
            url_app
                .or_else(|| var("PGAPPNAME"))
                .unwrap_or_else(|| app.into()),
        );
        quiet_notices(&mut config);
        let display = describe(&config);
        Ok(Some(ConnectSpec {
            config,
            ssl,
            verify,
            display,
        }))
    }

    /// The resolved connection settings.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl
    }

    pub fn verify(&self) -> &Verify {
        &self.verify
    }

    /// `user@host:port/db`, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// One connection; its driver task runs on the runtime.
    pub async fn connect(&self) -> std::result::Result<Client, ConnectError> {
        if self.ssl == SslMode::Disable {
            let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn); // The task ends when the connection closes.
            return Ok(client);
        }
        let tls = LazyTls::new(&self.verify).map_err(ConnectError::Tls)?;
        let (client, conn) = self.config.connect(tls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Why a connection failed, in psql's words (see [`connect_failure`]).
    pub fn failure(&self, e: &ConnectError) -> String {
        match e {
            ConnectError::Tls(msg) => {
                let (host, port) = host_port(&self.config);
                format!("connection to server at \"{host}\", port {port} failed: {msg}")
            }
            ConnectError::Pg(e) => connect_failure(&self.config, e),
        }
    }
}

/// A connection that failed: the driver's error, or our TLS set-up's.
#[derive(Debug)]
pub enum ConnectError {
    Pg(tokio_postgres::Error),
    Tls(String),
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(e: tokio_postgres::Error) -> Self {
        ConnectError::Pg(e)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Pg(e) => write!(f, "{}", super::message(e)),
            ConnectError::Tls(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConnectError {}

/// libpq's certificate checks for `mode`: `require` checks the chain only when a root
/// file was named; `verify-ca` the chain; `verify-full` also the host name. A root file
/// is `sslrootcert` (or `PGSSLROOTCERT`; `system` means the system's roots), else
/// `~/.postgresql/root.crt` when it exists, else the system's roots.
fn resolve_verify(ssl: SslMode, rootcert: Option<&str>, env: &dyn Env) -> Result<Verify> {
    let named = match rootcert {
        Some("system") => None,
        Some(path) => {
            let p = PathBuf::from(path);
            if matches!(ssl, SslMode::VerifyCa | SslMode::VerifyFull) && !p.exists() {
                return Err(Error::usage(format!(
                    "root certificate file {path:?} does not exist (sslrootcert)"
                )));
            }
            Some(p)
        }
        None => None,
    };
    let default_root = || {
        env.home()
            .map(|h| h.join(".postgresql/root.crt"))
            .filter(|p| p.exists())
    };
    Ok(match ssl {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => Verify {
            chain: false,
            host_name: false,
            roots: None,
        },
        SslMode::Require => Verify {
            chain: named.is_some(),
            host_name: false,
            roots: named,
        },
        SslMode::VerifyCa | SslMode::VerifyFull => Verify {
            chain: true,
            host_name: ssl == SslMode::VerifyFull,
            roots: if rootcert == Some("system") {
                None
            } else {
                named.or_else(default_root)
            },
        },
    })
}

/// The password for `config` from the password file (`PGPASSFILE`, else `~/.pgpass`), as
/// libpq reads it: `host:port:database:user:password` lines, `*` matching anything, `\`
/// escaping `:` and `\`. A file others may read is ignored, with a warning, as libpq does.
fn pgpass_password(config: &PgConfig, env: &dyn Env) -> Option<String> {
    let path = match env.var("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => env.home()?.join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; permissions should be u=rw \
                 (0600) or less: not read",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let (host, port) = host_port(config);
    // A socket directory matches "localhost", as in libpq.
    let host = if host.starts_with('/') {
        "localhost".to_owned()
    } else {
        host
    };
    pgpass_lookup(
        &text,
        &host,
        &port.to_string(),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or(""),
    )
}

/// The password of the first line of a password file matching these values.
pub fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let wanted = [host, port, db, user];
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Splits a password-file line on unescaped `:`; the last field takes the rest.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Whether a URL or `key=value` string names a port itself.
fn names_port(url: &str) -> bool {
    let params_name_it = url
        .split(['?', '&', ' '])
        .any(|p| p.trim_start().starts_with("port="));
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return params_name_it;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit('@').next().unwrap_or("");
    let after_ipv6 = hosts.rsplit(']').next().unwrap_or("");
    params_name_it || after_ipv6.contains(':')
}

/// `url` with `port` given to every host it names (a URL), or as a `port=` parameter.
fn with_port(url: &str, port: &str) -> String {
    let scheme = ["postgresql://", "postgres://"]
        .into_iter()
        .find(|s| url.starts_with(s));
    let Some(scheme) = scheme else {
        return format!("{url} port={port}");
    };
    let rest = &url[scheme.len()..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let hosts: Vec<String> = hosts.split(',').map(|h| format!("{h}:{port}")).collect();
    format!("{scheme}{user}{}{tail}", hosts.join(","))
}

/// Asks the server for warnings and errors only: `CREATE … IF NOT EXISTS` of a table
/// that exists answers with a NOTICE, which the driver would log on every run.
pub fn quiet_notices(config: &mut PgConfig) {
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c client_min_messages=warning"),
        _ => "-c client_min_messages=warning".to_owned(),
    };
    config.options(options);
}

/// Removes `key=value` from a URL's query or a `key=value` string, returning the rest and
/// the value (the driver rejects parameters it does not know, such as `sslrootcert`, and
/// the `verify-*` modes).
fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    let pattern = format!("{key}=");
    let at = url
        .match_indices(&pattern)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || matches!(url.as_bytes()[i - 1], b'?' | b'&' | b' '));
    let Some(at) = at else {
        return (url.to_owned(), None);
    };
    let rest = &url[at + pattern.len()..];
    let end = rest.find(['&', ' ']).unwrap_or(rest.len());
    let value = rest[..end].to_owned();
    let mut before = url[..at].to_owned();
    let mut after = &rest[end..];
    if before.ends_with('&') || before.ends_with('?') || before.ends_with(' ') {
        match after.strip_prefix(['&', ' ']) {
            Some(rest) => after = rest,
            None => {
                before.pop();
            }
        }
    }
    (format!("{before}{after}"), Some(value))
}

fn describe(c: &PgConfig) -> String {
    let (host, port) = host_port(c);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().unwrap_or("?")
    )
}

/// Why a connection failed, in psql's words: which server, database and role, and the
/// server's own message ("FATAL: database \"x\" does not exist"), or what stopped the
/// connection before it reached one (a refused port, a host name that does not resolve).
pub fn connect_failure(config: &PgConfig, e: &tokio_postgres::Error) -> String {
    let (host, port) = host_port(config);
    let db = config.get_dbname().unwrap_or("?");
    let role = config.get_user().unwrap_or("?");
    let server = format!("connection to server at \"{host}\", port {port} failed");
    if let Some(d) = e.as_db_error() {
        return format!(
            "{server}: {}: {} (database \"{db}\", role \"{role}\")",
            d.severity(),
            d.message()
        );
    }
    // The innermost cause says most: an io::Error, or the driver's own words.
    let mut causes = Vec::new();
    let mut io_kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        causes.push(c.to_string());
        cur = c.source();
    }
    let cause = causes.last().cloned().unwrap_or_else(|| e.to_string());
    if cause.contains("failed to lookup address") || cause.contains("Name or service not known") {
        let why = cause
            .trim_start_matches("failed to lookup address information: ")
            .to_owned();
        return format!("could not translate host name \"{host}\" to address: {why}");
    }
    let why = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "Connection refused. Is the server \
            running on that host and accepting TCP/IP connections?"
            .to_owned(),
        Some(std::io::ErrorKind::TimedOut) => format!("{cause} (--connect-timeout)"),
        _ if cause == e.to_string() => cause,
        _ => format!("{e}: {cause}"),
    };
    format!("{server}: {why} (database \"{db}\", role \"{role}\")")
}

/// The first host and port a config names, as libpq would show them.
fn host_port(c: &PgConfig) -> (String, u16) {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    (host, c.get_ports().first().copied().unwrap_or(5432))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TestEnv(HashMap<&'static str, String>, Option<PathBuf>);

    impl Env for TestEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> TestEnv {
        TestEnv(
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            None,
        )
    }

    fn spec(url: Option<&str>, e: &TestEnv) -> ConnectSpec {
        ConnectSpec::resolve(url, Duration::from_secs(1), "ndpipe test", e)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn tls_modes_resolve_as_libpq_does() {
        let e = env(&[]);
        let s = spec(Some("postgres://u@h/db?sslmode=require"), &e);
        assert_eq!(s.ssl_mode(), SslMode::Require);
        assert_eq!(s.config().get_ssl_mode(), DriverSslMode::Require);
        assert!(!s.verify().chain && !s.verify().host_name);
        // verify-ca checks the chain but not the host name: it is not verify-full.
        let s = spec(Some("postgres://u@h/db?sslmode=verify-ca"), &e);
        assert!(s.verify().chain && !s.verify().host_name);
        let s = spec(Some("postgres://u@h/db?sslmode=verify-full"), &e);
        assert!(s.verify().chain && s.verify().host_name);
        // require with a named root file checks the chain, as libpq does.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.crt");
        std::fs::write(&root, "").unwrap();
        let e = env(&[("PGSSLROOTCERT", root.to_str().unwrap())]);
        let s = spec(Some("postgres://u@h/db?sslmode=require"), &e);
        assert!(s.verify().chain && !s.verify().host_name);
        assert_eq!(s.verify().roots.as_deref(), Some(root.as_path()));
        // sslrootcert in the URL, and PGSSLMODE for what the URL leaves out.
        let e = env(&[("PGSSLMODE", "verify-ca")]);
        let url = format!("postgres://u@h/db?sslrootcert={}", root.display());
        let s = spec(Some(&url), &e);
        assert_eq!(s.ssl_mode(), SslMode::VerifyCa);
        assert_eq!(s.verify().roots.as_deref(), Some(root.as_path()));
        // Unknown modes and missing root files for verify-* are usage errors.
        let bad = ConnectSpec::resolve(
            Some("postgres://u@h/db?sslmode=sometimes"),
            Duration::from_secs(1),
            "t",
            &env(&[]),
        );
        assert!(bad.is_err());
        let bad = ConnectSpec::resolve(
            Some("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent.crt"),
            Duration::from_secs(1),
            "t",
            &env(&[]),
        );
        assert!(bad.is_err());
        // Default: prefer.
        assert_eq!(
            spec(Some("postgres://u@h/db"), &env(&[])).ssl_mode(),
            SslMode::Prefer
        );
    }

    #[test]
    fn environment_fills_what_the_url_leaves_out() {
        let e = env(&[
            ("PGAPPNAME", "loader-7"),
            ("PGPASSWORD", "s3cret"),
            ("PGPORT", "5433"),
        ]);
        let s = spec(Some("postgres://u@h/db"), &e);
        assert_eq!(s.config().get_application_name(), Some("loader-7"));
        assert_eq!(s.config().get_password(), Some(&b"s3cret"[..]));
        assert_eq!(s.config().get_ports(), [5433]);
        // The URL wins over the environment.
        let s = spec(Some("postgres://u:pw@h:6000/db?application_name=mine"), &e);
        assert_eq!(s.config().get_application_name(), Some("mine"));
        assert_eq!(s.config().get_password(), Some(&b"pw"[..]));
        assert_eq!(s.config().get_ports(), [6000]);
        // Nothing set: no server (SQLite).
        let none = ConnectSpec::resolve(None, Duration::from_secs(1), "t", &env(&[])).unwrap();
        assert!(none.is_none());
        let s = spec(None, &env(&[("PGHOST", "db.internal"), ("PGUSER", "app")]));
        assert_eq!(s.display(), "app@db.internal:5432/app");
        assert_eq!(s.config().get_application_name(), Some("ndpipe test"));
    }

    #[test]
    fn password_file_lines_match_as_in_libpq() {
        let text = "# comment\n\
                    other:*:*:*:nope\n\
                    h:5432:db:u:first\\:part\\\\x\n\
                    *:*:*:u:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "h", "5432", "db", "u").as_deref(),
            Some("first:part\\x")
        );
        assert_eq!(
            pgpass_lookup(text, "h2", "5432", "db", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(text, "h2", "5432", "db", "v"), None);
        // Read from ~/.pgpass when no password is given, only when private.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".pgpass");
        std::fs::write(&file, "h:5432:db:u:from-file\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = TestEnv(HashMap::new(), Some(dir.path().to_owned()));
        let s = spec(Some("postgres://u@h/db"), &e);
        assert_eq!(s.config().get_password(), Some(&b"from-file"[..]));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = spec(Some("postgres://u@h/db"), &e);
        assert_eq!(
            s.config().get_password(),
            None,
            "a readable file is ignored"
        );
    }

    #[test]
    fn params_the_driver_does_not_know_are_taken_out() {
        assert_eq!(
            take_param("postgres://h/db?sslmode=verify-ca&x=1", "sslmode"),
            (
                "postgres://h/db?x=1".to_owned(),
                Some("verify-ca".to_owned())
            )
        );
        assert_eq!(
            take_param("postgres://h/db?x=1&sslmode=verify-ca", "sslmode"),
            (
                "postgres://h/db?x=1".to_owned(),
                Some("verify-ca".to_owned())
            )
        );
        assert_eq!(
            take_param("host=h sslmode=verify-full dbname=d", "sslmode"),
            ("host=h dbname=d".to_owned(), Some("verify-full".to_owned()))
        );
        assert!(names_port("postgres://u@h:6000/db"));
        assert!(names_port("postgres://u:pw@[::1]:6000/db"));
        assert!(!names_port("postgres://u:pw@h/db"));
        assert!(!names_port("postgres://u@[::1]/db"));
        assert!(names_port("host=h port=6000"));
        assert_eq!(
            with_port("postgres://u@h1,h2/db?x=1", "7"),
            "postgres://u@h1:7,h2:7/db?x=1"
        );
        assert_eq!(with_port("postgres://h", "7"), "postgres://h:7");
        assert_eq!(with_port("host=h", "7"), "host=h port=7");
        // Not a parameter of its own: left alone.
        assert_eq!(
            take_param("postgres://h/db?xsslmode=1", "sslmode"),
            ("postgres://h/db?xsslmode=1".to_owned(), None)
        );
    }
}
