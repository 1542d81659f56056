//! Schema statements shared by `persist` and `ingest-kafka --offsets-from`, and the
//! server's error messages as users should read them.

/// The server's message, SQLSTATE and detail of an error; the driver's own words for
/// errors that did not come from the server.
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({}): {detail}", d.message(), d.code().code()),
            None => format!("{} ({})", d.message(), d.code().code()),
        },
        None => e.to_string(),
    }
}

/// Runs a `CREATE TABLE IF NOT EXISTS`. Two sessions running one at the same time can
/// both find no table and one of them then fails on the catalog's unique index: that
/// one finds the table made, which is all it wanted.
pub async fn create_if_absent(
    client: &tokio_postgres::Client,
    ddl: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    match client.batch_execute(ddl).await {
        Err(e)
            if e.code()
                .is_some_and(|c| matches!(c.code(), "23505" | "42P07" | "42P06")) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The offsets table (shared with `ingest-kafka --offsets-from`): `next_offset` is -1 for
/// a partition claimed before anything of it was committed.
pub fn offsets_ddl(quoted_table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {quoted_table} (\"group\" text NOT NULL, topic text NOT NULL, \
         \"partition\" integer NOT NULL, next_offset bigint NOT NULL, epoch bigint, \
         updated_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (\"group\", topic, \"partition\"))"
    )
}
