//! PostgreSQL, as `persist` and `ingest-kafka --offsets-from` both use it: where the
//! server is and how to reach it (libpq's URL, environment, password file and TLS modes),
//! SQL identifiers, and the statements and messages both need.
//!
//! - [`connect`]: resolving a connection the way libpq does, connecting, and saying
//!   what went wrong in psql's words.
//! - [`tls`]: TLS set up when the server agrees to it, once per process.
//! - [`ident`]: table and column names, checked and quoted.
//! - [`ddl`]: shared schema statements and error messages.

pub mod connect;
pub mod ddl;
pub mod ident;
pub mod tls;

pub use connect::{connect_failure, quiet_notices, ConnectError, ConnectSpec, SslMode};
pub use ddl::{create_if_absent, message, offsets_ddl};
pub use ident::{is_ident, parse_ident, quote_ident, Table};
