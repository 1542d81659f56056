//! `enrich --sql`: lookups in the tests' PostgreSQL. (A database restart mid-run is in
//! the fault suite.)

use crate::enrich_http::dead_letters;
use crate::util::*;

const USERS: &str = "CREATE TABLE users (id int PRIMARY KEY, name text, tier text, tags text[], since timestamptz);
     INSERT INTO users VALUES (1, 'ann', 'gold', '{a,b}', '2024-01-01Z'), (2, 'bob', NULL, NULL, NULL),
       (3, 'cy', 'gold', NULL, NULL)";

#[test]
fn rows_are_set_as_json_in_column_order_and_what_fails_is_a_dead_letter() {
    let dir = Dir::new();
    let pg = Pg::new("enrich_sql_rows");
    pg.sql(USERS);
    let input = concat!(
        "{\"u\":1,\"x\":\"a\"}\n",
        "{\"u\":\"2\"}\n",
        "{\"u\":9}\n",
        "{\"v\":1}\n",
        "{\"u\":\"zz\"}\n",
        "{\"u\":1}\n",
    );
    let o = dir
        .cmd("enrich")
        .args(["--database-url", &pg.url()])
        .args([
            "--sql",
            "SELECT name, tier, tags, since FROM users WHERE id = $1;",
        ])
        .args(["--sql-args", "u", "--into", "user", "--cache-size", "10"])
        .args(["--dead-letter", "dl.ndjson"])
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    // The rest of each event keeps its bytes; the row's columns keep the query's order.
    assert_eq!(
        out(&o),
        concat!(
            "{\"u\":1,\"x\":\"a\",\"user\":{\"name\":\"ann\",\"tier\":\"gold\",\"tags\":[\"a\",\"b\"],\"since\":\"2024-01-01T00:00:00+00:00\"}}\n",
            "{\"u\":\"2\",\"user\":{\"name\":\"bob\",\"tier\":null,\"tags\":null,\"since\":null}}\n",
            "{\"u\":1,\"user\":{\"name\":\"ann\",\"tier\":\"gold\",\"tags\":[\"a\",\"b\"],\"since\":\"2024-01-01T00:00:00+00:00\"}}\n",
        )
    );
    assert_eq!(
        dead_letters(&dir, "dl.ndjson"),
        [
            ("enrich_sql".to_owned(), "query with $1=\"9\": no row".to_owned()),
            ("missing_field".to_owned(), "no field u for the lookup".to_owned()),
            (
                "enrich_sql".to_owned(),
                "query with $1=\"zz\": invalid input syntax for type integer: \"zz\" (SQLSTATE 22P02)"
                    .to_owned()
            ),
        ]
    );
    // The second lookup of user 1 shared the first's call; a refused query is not asked
    // again, and does not count against the database's breaker.
    let stderr = err(&o);
    assert!(
        stderr.contains("2 calls answered, 1 shared calls"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 not found") && stderr.contains("1 query errors"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retries") && !stderr.contains("breaker"),
        "{stderr}"
    );

    // Every row, as an array, in the query's order; no row: null with --not-found null.
    let o = dir
        .cmd("enrich")
        .args(["--database-url", &pg.url()])
        .args([
            "--sql",
            "SELECT id, name FROM users WHERE tier = $1 ORDER BY id DESC",
        ])
        .args([
            "--sql-args",
            "t",
            "--sql-rows",
            "all",
            "--into",
            "gold.users",
        ])
        .args(["--not-found", "null"])
        .write_stdin("{\"t\":\"gold\"}\n{\"t\":\"tin\"}\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "{\"t\":\"gold\",\"gold\":{\"users\":[{\"id\":3,\"name\":\"cy\"},{\"id\":1,\"name\":\"ann\"}]}}\n{\"t\":\"tin\",\"gold\":{\"users\":null}}\n"
    );
}

#[test]
fn a_query_the_server_refuses_stops_before_reading() {
    let dir = Dir::new();
    let pg = Pg::new("enrich_sql_refused");
    pg.sql(USERS);
    for (query, args, says) in [
        (
            "SELECT nme FROM users WHERE id = $1",
            "u",
            "column \"nme\" does not exist",
        ),
        (
            "SELECT name FROM users WHERE id = $1 AND tier = $2",
            "u",
            "--sql takes 2 parameters ($1…), --sql-args gives 1",
        ),
    ] {
        let o = dir
            .cmd("enrich")
            .args([
                "--database-url",
                &pg.url(),
                "--sql",
                query,
                "--sql-args",
                args,
            ])
            .args(["--into", "user"])
            .write_stdin("{\"u\":1}\n")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{}", err(&o));
        assert!(err(&o).contains(says), "{}", err(&o));
        assert_eq!(out(&o), "");
    }
    // No database named anywhere: a usage error saying where one is taken from.
    let o = dir
        .cmd("enrich")
        .args(["--sql", "SELECT 1", "--into", "one"])
        .write_stdin("{}\n")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
    assert!(
        err(&o).contains("--database-url, DATABASE_URL or the PG* variables"),
        "{}",
        err(&o)
    );
}

#[test]
fn explain_shows_the_query_and_hides_the_password() {
    let dir = Dir::new();
    let pg = Pg::new("enrich_sql_explain");
    pg.sql(USERS);
    let url = pg.url().replacen("postgres@", "postgres:s3cret@", 1);
    let o = dir
        .cmd("pipeline")
        .args(["--explain", &format!(
            "enrich --database-url '{url}' --sql 'SELECT name FROM users WHERE id = $1' --sql-args u --into user"
        )])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let explained = out(&o);
    assert!(!explained.contains("s3cret"), "{explained}");
    assert!(
        explained.contains(
            "sql \"SELECT name FROM users WHERE id = $1\" with $1=u into user (first row)"
        ),
        "{explained}"
    );
    assert!(
        explained.contains("database postgres@127.0.0.1:"),
        "{explained}"
    );
    assert!(
        explained.contains("breaker per database: 5 failures in a row"),
        "{explained}"
    );
}

/// The same lookup inside `pipeline`, between validate and persist: each stored row has
/// its user.
#[test]
fn in_a_pipeline_sql_lookups_feed_persist() {
    let dir = Dir::new();
    let pg = Pg::new("enrich_sql_pipeline");
    pg.sql(USERS);
    let text = format!(
        "validate --require id,u | enrich --database-url '{}' --sql 'SELECT name FROM users WHERE id = $1' --sql-args u --into user --not-found null | persist --key id --table t --create-table --sqlite out.db",
        pg.url()
    );
    let input: String = (0..300)
        .map(|i| format!("{{\"id\":\"e{i}\",\"u\":{}}}\n", i % 4))
        .collect();
    let o = dir
        .cmd("pipeline")
        .arg(&text)
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let rows = crate::persist::sqlite_rows(&dir.path("out.db"), "t");
    assert_eq!(rows.len(), 300);
    assert_eq!(rows["e1"]["user"], serde_json::json!({"name": "ann"}));
    assert_eq!(rows["e3"]["user"], serde_json::json!({"name": "cy"}));
    assert_eq!(rows["e4"]["user"], serde_json::Value::Null, "no user 0");
}
