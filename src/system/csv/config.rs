//! The CSV connector's `configurationProperties`, checked once, every problem reported
//! together.

use super::*;

/// `configurationProperties`, checked.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) path: PathBuf,
    pub(super) header_uid: String,
    pub(super) header_name: String,
    pub(super) header_password: Option<String>,
    /// How records end when written.
    pub(super) write_terminator: csv::Terminator,
    /// How records end when read (`\n`, `\r` and `\r\n` are all read as CRLF).
    pub(super) read_terminator: csv::Terminator,
    pub(super) quote: u8,
    pub(super) delimiter: u8,
    pub(super) retention: usize,
}

/// One ASCII character of a configuration property.
pub(super) fn one_ascii_char(
    cfg: &Map<String, Value>,
    key: &str,
    default: u8,
    problems: &mut Vec<String>,
) -> u8 {
    match cfg.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        Some(_) => {
            problems.push(format!(
                "/configurationProperties/{key}: must be one ASCII character"
            ));
            default
        }
    }
}

/// An optional non-empty string property.
pub(super) fn opt_string(
    cfg: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match cfg.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(format!("/configurationProperties/{key}: must be a string"));
            None
        }
    }
}

impl Config {
    pub(super) fn parse(cfg: &Map<String, Value>) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let path = match cfg.get("csvFile") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(PathBuf::from(s)),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                problems.push(
                    "/configurationProperties/csvFile: missing; the path of the CSV file".into(),
                );
                None
            }
            Some(_) => {
                problems.push("/configurationProperties/csvFile: must be a string (a path)".into());
                None
            }
        };
        let header_uid =
            opt_string(cfg, "headerUid", &mut problems).unwrap_or_else(|| "uid".to_owned());
        let header_name =
            opt_string(cfg, "headerName", &mut problems).unwrap_or_else(|| header_uid.clone());
        let header_password = opt_string(cfg, "headerPassword", &mut problems);
        if let Some(pw) = &header_password {
            if *pw == header_uid || *pw == header_name {
                problems.push(format!(
                    "/configurationProperties/headerPassword: '{pw}' is also the uid or name column"
                ));
            }
        }
        let (write_terminator, read_terminator) = match cfg.get("newlineString") {
            None | Some(Value::Null) => (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF),
            Some(Value::String(s)) => match s.as_str() {
                "\n" => (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF),
                "\r\n" => (csv::Terminator::CRLF, csv::Terminator::CRLF),
                "\r" => (csv::Terminator::Any(b'\r'), csv::Terminator::CRLF),
                s if s.len() == 1 && s.is_ascii() => {
                    let b = s.as_bytes()[0];
                    (csv::Terminator::Any(b), csv::Terminator::Any(b))
                }
                _ => {
                    problems.push(
                        "/configurationProperties/newlineString: must be \"\\n\", \"\\r\\n\", \"\\r\" or one ASCII character"
                            .into(),
                    );
                    (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF)
                }
            },
            Some(_) => {
                problems.push("/configurationProperties/newlineString: must be a string".into());
                (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF)
            }
        };
        let quote = one_ascii_char(cfg, "quoteCharacter", b'"', &mut problems);
        let delimiter = one_ascii_char(cfg, "fieldDelimiter", b',', &mut problems);
        if quote == delimiter {
            problems.push(format!(
                "/configurationProperties/fieldDelimiter: '{}' is also the quoteCharacter",
                delimiter as char
            ));
        }
        let term_byte = match write_terminator {
            csv::Terminator::Any(b) => b,
            _ => b'\n',
        };
        for (key, b) in [("quoteCharacter", quote), ("fieldDelimiter", delimiter)] {
            if b == b'\n' || b == b'\r' || b == term_byte {
                problems.push(format!(
                    "/configurationProperties/{key}: must not be a line break or the newlineString"
                ));
            }
        }
        let retention = match cfg.get("syncFileRetentionCount") {
            None | Some(Value::Null) => DEFAULT_RETENTION,
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(n) if n >= 1 => n.min(10_000) as usize,
                _ => {
                    problems.push(
                        "/configurationProperties/syncFileRetentionCount: must be an integer of at least 1"
                            .into(),
                    );
                    DEFAULT_RETENTION
                }
            },
        };
        match cfg.get("encoding") {
            None | Some(Value::Null) => {}
            Some(Value::String(e))
                if e.eq_ignore_ascii_case("utf-8") || e.eq_ignore_ascii_case("utf8") => {}
            Some(_) => problems
                .push("/configurationProperties/encoding: only utf-8 files are supported".into()),
        }
        match path {
            Some(path) if problems.is_empty() => Ok(Config {
                path,
                header_uid,
                header_name,
                header_password,
                write_terminator,
                read_terminator,
                quote,
                delimiter,
                retention,
            }),
            _ => Err(problems),
        }
    }

    pub(super) fn file(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::csv::tests::provisioner_with;

    #[test]
    fn config_validation_reports_every_problem() {
        let p = provisioner_with(json!({
            "headerUid": 5,
            "quoteCharacter": "''",
            "fieldDelimiter": "\n",
            "newlineString": "ab",
            "syncFileRetentionCount": 0,
            "encoding": "latin-1",
        }));
        let problems = CsvConnector::new(&p).err().unwrap();
        let all = problems.join("\n");
        for want in [
            "/configurationProperties/csvFile: missing",
            "/configurationProperties/headerUid: must be a string",
            "/configurationProperties/quoteCharacter: must be one ASCII character",
            "/configurationProperties/fieldDelimiter: must not be a line break",
            "/configurationProperties/newlineString: must be",
            "/configurationProperties/syncFileRetentionCount: must be an integer",
            "/configurationProperties/encoding: only utf-8",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let p = provisioner_with(json!({"csvFile": "/x.csv", "headerPassword": "uid"}));
        let problems = CsvConnector::new(&p).err().unwrap();
        assert!(problems[0].contains("headerPassword"), "{problems:?}");
        let p = provisioner_with(json!({"csvFile": "/x.csv", "fieldDelimiter": "\""}));
        let problems = CsvConnector::new(&p).err().unwrap();
        assert!(
            problems[0].contains("also the quoteCharacter"),
            "{problems:?}"
        );
        // A valid configuration does not touch the (missing) file.
        let p = provisioner_with(json!({"csvFile": "/nonexistent/dir/x.csv"}));
        assert!(CsvConnector::new(&p).is_ok());
    }
}
