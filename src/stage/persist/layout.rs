//! The table: the DDL of `--create-table`, and the layout resolved from the columns the
//! table has (which the flags may fill).

use crate::exit::{Error, Result};
use crate::postgres::{quote_ident, Table};

use super::version::VersionType;
use super::{OnConflict, Options};

/// Which columns the target table has, resolved at start.
#[derive(Clone, Debug)]
pub struct Layout {
    pub table: Table,
    pub key_column: String,
    pub payload: bool,
    pub meta: bool,
    /// The version column's SQL type, with `--version-field`.
    pub version: Option<VersionType>,
    pub first_seen: bool,
    pub updated_at: bool,
    /// Typed columns: name and the type values are cast to.
    pub columns: Vec<(String, String)>,
    pub on_conflict: OnConflict,
    pub offsets_table: Table,
    /// Every column takes persist's values as they are, in PostgreSQL's binary format
    /// (key text, JSON as jsonb, version bigint, timestamps timestamptz, no typed
    /// columns): new keys may go in by binary COPY ([`super::copy_in`]).
    pub binary_copy: bool,
}

/// `CREATE TABLE IF NOT EXISTS` for `--create-table`, in one database's type names for
/// text, JSON, the version and timestamps; the `--column` columns carry their own types.
pub fn create_table_sql(
    opts: &Options,
    text: &str,
    json: &str,
    version: &str,
    time: &str,
) -> String {
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} ({} {text} PRIMARY KEY NOT NULL, payload {json} NOT NULL, \
         meta {json}, version {version}, first_seen {time}, updated_at {time}",
        opts.table.quoted(),
        quote_ident(&opts.key_column),
    );
    for c in &opts.columns {
        let ty =
            c.ty.as_deref()
                .expect("checked: --create-table needs types");
        sql.push_str(&format!(", {} {ty}", quote_ident(&c.column)));
    }
    sql.push(')');
    sql
}

/// Checks the table's columns (name, SQL type) against the flags and decides what to
/// write. `unique` says whether the key column has a unique index.
pub fn resolve_layout(
    opts: &Options,
    columns: &[(String, String)],
    unique: bool,
    shown_db: &str,
) -> Result<Layout> {
    let table = &opts.table;
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.to_ascii_lowercase())
    };
    if columns.is_empty() {
        return Err(Error::usage(format!(
            "table {table} does not exist in {shown_db} (add --create-table to create it)"
        )));
    }
    if type_of(&opts.key_column).is_none() {
        return Err(Error::usage(format!(
            "table {table} has no key column {:?} (see --key-column)",
            opts.key_column
        )));
    }
    if !unique {
        return Err(Error::usage(format!(
            "column {:?} of table {table} has no unique index: upserts need a primary key or \
             a unique constraint on it alone",
            opts.key_column
        )));
    }
    let version = match &opts.version_field {
        None => None,
        Some(_) => {
            let ty = type_of("version").ok_or_else(|| {
                Error::usage(format!(
                    "--version-field needs a \"version\" column in table {table}"
                ))
            })?;
            Some(match ty.as_str() {
                "bigint" | "integer" | "smallint" | "int" | "int8" | "int4" => VersionType::Bigint,
                t if t.starts_with("numeric") || t.starts_with("decimal") => VersionType::Numeric,
                "timestamp with time zone" | "timestamptz" => VersionType::Timestamptz,
                _ => opts.version_type,
            })
        }
    };
    let mut typed = Vec::new();
    for c in &opts.columns {
        let Some(ty) = type_of(&c.column) else {
            return Err(Error::usage(format!(
                "table {table} has no column {:?} (named by --column)",
                c.column
            )));
        };
        typed.push((c.column.clone(), c.ty.clone().unwrap_or(ty)));
    }
    let is = |name: &str, types: &[&str]| type_of(name).is_none_or(|t| types.contains(&&*t));
    let binary_copy = typed.is_empty()
        && is(&opts.key_column, &["text", "character varying"])
        && is("payload", &["jsonb"])
        && is("meta", &["jsonb"])
        && (version.is_none() || is("version", &["bigint"]))
        && is("first_seen", &["timestamp with time zone"])
        && is("updated_at", &["timestamp with time zone"]);
    Ok(Layout {
        table: table.clone(),
        key_column: opts.key_column.clone(),
        payload: type_of("payload").is_some(),
        meta: type_of("meta").is_some(),
        version,
        first_seen: type_of("first_seen").is_some(),
        updated_at: type_of("updated_at").is_some(),
        columns: typed,
        on_conflict: opts.on_conflict,
        offsets_table: opts.offsets_table.clone(),
        binary_copy,
    })
}
