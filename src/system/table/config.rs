//! The table connector's `configurationProperties`: where the table is (SQLite file or
//! PostgreSQL), its key, password and change-log columns; every problem reported together.

use super::*;

/// Where the table is.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(Box<tokio_postgres::Config>),
}

/// `configurationProperties`, checked.
#[derive(Debug, Clone)]
pub(super) struct Config {
    /// Which database.
    pub(super) target: Target,
    /// The database for messages (the file, or host, port and name): no credentials.
    pub(super) location: String,
    pub(super) table: String,
    pub(super) key_column: String,
    pub(super) password_column: Option<String>,
    pub(super) change_log_column: Option<String>,
}

pub(super) fn string_prop(
    cfg: &Map<String, Value>,
    key: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    match cfg.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            if required {
                problems.push(format!("/configurationProperties/{key}: missing"));
            }
            None
        }
        Some(Value::Number(n)) if key == "port" => Some(n.to_string()),
        Some(_) => {
            problems.push(format!("/configurationProperties/{key}: must be a string"));
            None
        }
    }
}

impl Config {
    pub(super) fn parse(cfg: &Map<String, Value>) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let table = string_prop(cfg, "table", true, &mut problems);
        let key_column = string_prop(cfg, "keyColumn", true, &mut problems);
        let password_column = string_prop(cfg, "passwordColumn", false, &mut problems);
        let change_log_column = string_prop(cfg, "changeLogColumn", false, &mut problems);
        let host = string_prop(cfg, "host", false, &mut problems);
        let port = string_prop(cfg, "port", false, &mut problems);
        let database = string_prop(cfg, "database", false, &mut problems);
        let user = string_prop(cfg, "user", false, &mut problems);
        let password = string_prop(cfg, "password", false, &mut problems);
        if let (Some(k), Some(p)) = (&key_column, &password_column) {
            if k == p {
                problems.push(format!(
                    "/configurationProperties/passwordColumn: '{p}' is also the keyColumn"
                ));
            }
        }
        let template = string_prop(cfg, "jdbcUrlTemplate", true, &mut problems);
        let mut target = None;
        if let Some(t) = template {
            let mut url = t.clone();
            for (placeholder, key, value) in [
                ("%h", "host", &host),
                ("%p", "port", &port),
                ("%d", "database", &database),
            ] {
                if url.contains(placeholder) {
                    match value {
                        Some(v) => url = url.replace(placeholder, v),
                        None => problems.push(format!(
                            "/configurationProperties/{key}: missing; jdbcUrlTemplate uses {placeholder}"
                        )),
                    }
                }
            }
            if let Some(rest) = url.strip_prefix("jdbc:sqlite:") {
                if rest.is_empty() || rest.contains(":memory:") || rest.starts_with("file::memory")
                {
                    problems.push(
                        "/configurationProperties/jdbcUrlTemplate: names no database file (jdbc:sqlite:<path>; in-memory databases are not shared)"
                            .into(),
                    );
                } else {
                    target = Some((Target::Sqlite(PathBuf::from(rest)), rest.to_owned()));
                }
            } else if let Some(rest) = url.strip_prefix("jdbc:postgresql:") {
                match postgres::parse_url(rest, user.as_deref(), password.as_deref()) {
                    Ok((pg, location)) => target = Some((Target::Postgres(Box::new(pg)), location)),
                    Err(e) => {
                        problems.push(format!("/configurationProperties/jdbcUrlTemplate: {e}"))
                    }
                }
            } else {
                let scheme: String = url.split(':').take(2).collect::<Vec<_>>().join(":");
                problems.push(format!(
                    "/configurationProperties/jdbcUrlTemplate: '{scheme}:' databases are not supported; only jdbc:sqlite:<path> and jdbc:postgresql://<host>[:<port>]/<database>"
                ));
            }
        }
        match (target, table, key_column) {
            (Some((target, location)), Some(table), Some(key_column)) if problems.is_empty() => {
                Ok(Config {
                    target,
                    location,
                    table,
                    key_column,
                    password_column,
                    change_log_column,
                })
            }
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::table::tests::provisioner_with;

    #[test]
    fn config_validation_reports_every_problem() {
        let problems = TableConnector::new(&provisioner_with(json!({
            "jdbcUrlTemplate": "jdbc:sqlite:%d",
            "passwordColumn": 3,
        })))
        .err()
        .unwrap();
        let all = problems.join("\n");
        for want in [
            "/configurationProperties/table: missing",
            "/configurationProperties/keyColumn: missing",
            "/configurationProperties/passwordColumn: must be a string",
            "/configurationProperties/database: missing; jdbcUrlTemplate uses %d",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let base = json!({"table": "t", "keyColumn": "id"});
        let with_url = |url: &str| {
            let mut p = base.clone();
            p["jdbcUrlTemplate"] = json!(url);
            TableConnector::new(&provisioner_with(p)).err()
        };
        let p = with_url("jdbc:postgresql://%h:%p/%d").unwrap().join("\n");
        assert!(p.contains("/configurationProperties/port: missing"), "{p}");
        assert!(p.contains("/configurationProperties/host: missing"), "{p}");
        let p = with_url("jdbc:mysql://localhost/x").unwrap().join("\n");
        assert!(
            p.contains("'jdbc:mysql:' databases are not supported"),
            "{p}"
        );
        let p = with_url("jdbc:sqlite::memory:").unwrap().join("\n");
        assert!(p.contains("names no database file"), "{p}");
        let mut p = base.clone();
        p["passwordColumn"] = json!("id");
        p["jdbcUrlTemplate"] = json!("jdbc:sqlite:/x.db");
        let problems = TableConnector::new(&provisioner_with(p)).err().unwrap();
        assert!(problems[0].contains("also the keyColumn"), "{problems:?}");
        // A valid configuration opens nothing (the file does not exist).
        assert!(with_url("jdbc:sqlite:/nonexistent/dir/x.db").is_none());
    }
}
