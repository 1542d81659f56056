//! SQL identifiers: table and column names checked against one grammar and always
//! quoted, so a name never becomes SQL. (SQLite accepts the same quoting.)

/// A table name, checked against the identifier grammar and always quoted in SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub schema: Option<String>,
    pub name: String,
}

impl Table {
    pub fn parse(s: &str) -> std::result::Result<Table, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let bad = || {
            format!(
                "{s:?} is not a table name: use NAME or SCHEMA.NAME, each part matching \
                 [A-Za-z_][A-Za-z0-9_]{{0,62}}"
            )
        };
        if parts.len() > 2 || !parts.iter().all(|p| is_ident(p)) {
            return Err(bad());
        }
        Ok(match parts[..] {
            [name] => Table {
                schema: None,
                name: name.into(),
            },
            [schema, name] => Table {
                schema: Some(schema.into()),
                name: name.into(),
            },
            _ => return Err(bad()),
        })
    }

    /// `"schema"."name"` or `"name"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether `s` matches `[A-Za-z_][A-Za-z0-9_]{0,62}`.
pub fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

pub fn parse_ident(s: &str) -> std::result::Result<String, String> {
    if is_ident(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a column name: it must match [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        ))
    }
}

/// A quoted SQL identifier (callers only pass names that passed [`is_ident`]).
pub fn quote_ident(s: &str) -> String {
    debug_assert!(is_ident(s));
    format!("\"{s}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_grammar() {
        assert_eq!(
            Table::parse("raw.events").unwrap().quoted(),
            "\"raw\".\"events\""
        );
        assert_eq!(Table::parse("_x9").unwrap().quoted(), "\"_x9\"");
        for bad in [
            "x; drop table y",
            "a.b.c",
            "9x",
            "",
            "a-b",
            "a.",
            &"x".repeat(64),
        ] {
            assert!(Table::parse(bad).is_err(), "{bad}");
        }
    }
}
