//! PostgreSQL, as `persist`, `ingest-kafka --offsets-from` and `ingest-file
//! --positions-from` use it: where the server is and how to reach it (libpq's URL,
//! environment, password file and TLS modes), SQL identifiers, the statements and
//! messages they share, and the sources' claims on the offsets table.
//!
//! - [`claims`]: a resuming source's epochs and committed offsets (exactly-once mode).
//! - [`connect`]: resolving a connection the way libpq does, connecting, and saying
//!   what went wrong in psql's words.
//! - [`tls`]: TLS set up when the server agrees to it, once per process.
//! - [`ident`]: table and column names, checked and quoted.
//! - [`ddl`]: shared schema statements and error messages.

pub mod claims;
pub mod connect;
pub mod ddl;
pub mod ident;
pub mod tls;

pub use claims::Claims;
pub use connect::{connect_failure, quiet_notices, ConnectError, ConnectSpec, SslMode};
pub use ddl::{create_if_absent, message, offsets_ddl};
pub use ident::{is_ident, parse_ident, quote_ident, Table};
