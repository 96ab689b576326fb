//! The `invokeContext` of script jobs (`invokeService: "script"`) and of task scans
//! (`invokeService: "taskscanner"`, IDM's "scan data to trigger tasks"): parsing and
//! validation, the `${Time.now}` macro of scan queries, and IDM's period strings (`10m`).
//! Running them is [`super::scanner`]'s and [`super::service`]'s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::job::{format_time, Invoke};
use crate::crest::filter::{self, JsonPointer};
use crate::script::{parse_script, Script};

/// `numberOfThreads` when the schedule does not say (IDM's default).
pub const DEFAULT_THREADS: usize = 10;
/// At most this many objects of one scan are processed at once.
pub const MAX_THREADS: usize = 64;
/// `recovery.timeout` when the schedule does not say (a gateway default).
pub const DEFAULT_RECOVERY: Duration = Duration::from_secs(600);

/// How a scan selects its objects.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanQuery {
    /// `_queryFilter`, with `${Time.now}` macros expanded at each run.
    Filter(String),
    /// `_queryId` (a predefined query such as `query-all-ids`).
    Id(String),
}

/// One task scan, as configured in a schedule's `invokeContext`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskScan {
    /// The resource queried, without slashes around it: `managed/user`.
    pub object: String,
    pub query: ScanQuery,
    /// `taskState.started` / `taskState.completed`: where the markers are kept on objects.
    pub started: JsonPointer,
    pub completed: JsonPointer,
    /// An object started longer ago than this, and not completed, is taken up again.
    pub recovery: Duration,
    pub threads: usize,
    pub wait_for_completion: bool,
    /// `maxRecords`: at most this many objects per run.
    pub max_records: Option<usize>,
    /// `task.script`: run once per object with `input` (the object) and `objectID`.
    pub script: Script,
}

/// `invokeContext` of `invokeService: "script"`: `{"script": {type, source|file, globals}}`.
pub fn parse_script_invoke(ctx: &Value, problems: &mut Vec<String>) -> Option<Invoke> {
    match ctx.get("script") {
        Some(v) => match parse_script(v, "invokeContext.script") {
            Ok(s) => Some(Invoke::Script(Box::new(s))),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        None => {
            problems.push(
                "'invokeContext.script' is required for invokeService \"script\": {\"type\": \"text/javascript\", \"source\"|\"file\": …}"
                    .into(),
            );
            None
        }
    }
}

impl TaskScan {
    /// Parses a task scan's `invokeContext`; every problem is pushed.
    pub fn parse(ctx: &Value, problems: &mut Vec<String>) -> Option<TaskScan> {
        let before = problems.len();
        let Some(ctx) = ctx.as_object() else {
            problems.push(
                "'invokeContext' is required for invokeService \"taskscanner\": {\"scan\": {…}, \"task\": {\"script\": {…}}}"
                    .into(),
            );
            return None;
        };
        let wait_for_completion = match ctx.get("waitForCompletion") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(format!(
                    "'invokeContext.waitForCompletion' must be true or false, not {other}"
                ));
                false
            }
        };
        let threads = match ctx.get("numberOfThreads") {
            None | Some(Value::Null) => DEFAULT_THREADS,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n as usize <= MAX_THREADS => n as usize,
                _ => {
                    problems.push(format!(
                        "'invokeContext.numberOfThreads' must be a number from 1 to {MAX_THREADS}, not {v}"
                    ));
                    1
                }
            },
        };
        let max_records = match ctx.get("maxRecords") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n as usize),
                None => {
                    problems.push(format!(
                        "'invokeContext.maxRecords' must be a positive number, not {v}"
                    ));
                    None
                }
            },
        };
        let script = match ctx.get("task").and_then(|t| t.get("script")) {
            Some(v) => parse_script(v, "invokeContext.task.script")
                .map_err(|e| problems.push(e))
                .ok(),
            None => {
                problems.push(
                    "'invokeContext.task.script' is required: the script run on each object found"
                        .into(),
                );
                None
            }
        };
        let Some(scan) = ctx.get("scan").and_then(Value::as_object) else {
            problems.push("'invokeContext.scan' is required: {\"object\", \"_queryFilter\", \"taskState\": {\"started\", \"completed\"}}".into());
            return None;
        };
        let object = match scan.get("object") {
            Some(Value::String(s)) if !s.trim_matches('/').is_empty() => {
                s.trim_matches('/').to_owned()
            }
            _ => {
                problems.push(
                    "'invokeContext.scan.object' must name the resource scanned (managed/user)"
                        .into(),
                );
                String::new()
            }
        };
        let query = parse_query(scan, problems);
        let marker = |key: &str, problems: &mut Vec<String>| match scan
            .get("taskState")
            .and_then(|t| t.get(key))
        {
            Some(Value::String(p)) if !JsonPointer::parse(p).is_empty() => JsonPointer::parse(p),
            _ => {
                problems.push(format!(
                        "'invokeContext.scan.taskState.{key}' must be the JSON pointer of a field (/sunset/task-{key})"
                    ));
                JsonPointer::default()
            }
        };
        let started = marker("started", problems);
        let completed = marker("completed", problems);
        if !started.is_empty() && started == completed {
            problems.push(
                "'invokeContext.scan.taskState': started and completed must be different fields"
                    .into(),
            );
        }
        let recovery = match scan.get("recovery").and_then(|r| r.get("timeout")) {
            None | Some(Value::Null) => DEFAULT_RECOVERY,
            Some(Value::String(s)) => parse_period(s).unwrap_or_else(|e| {
                problems.push(format!("'invokeContext.scan.recovery.timeout': {e}"));
                DEFAULT_RECOVERY
            }),
            Some(other) => {
                problems.push(format!(
                    "'invokeContext.scan.recovery.timeout' must be a period such as \"10m\", not {other}"
                ));
                DEFAULT_RECOVERY
            }
        };
        match (query, script) {
            (Some(query), Some(script)) if problems.len() == before => Some(TaskScan {
                object,
                query,
                started,
                completed,
                recovery,
                threads,
                wait_for_completion,
                max_records,
                script,
            }),
            _ => None,
        }
    }

    /// The scan's `_queryFilter` as of `now` (macros expanded), or its `_queryId`.
    pub fn query_at(&self, now: DateTime<Utc>) -> Result<ScanQuery, String> {
        match &self.query {
            ScanQuery::Filter(f) => expand_macros(f, now).map(ScanQuery::Filter),
            other => Ok(other.clone()),
        }
    }
}

fn parse_query(scan: &Map<String, Value>, problems: &mut Vec<String>) -> Option<ScanQuery> {
    match (scan.get("_queryFilter"), scan.get("_queryId")) {
        (Some(Value::String(f)), None) => {
            // Checked as it will run: with the macros expanded.
            let text = match expand_macros(f, Utc::now()) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("'invokeContext.scan._queryFilter': {e}"));
                    return None;
                }
            };
            match filter::parse(&text) {
                Ok(_) => Some(ScanQuery::Filter(f.clone())),
                Err(e) => {
                    problems.push(format!(
                        "'invokeContext.scan._queryFilter' is not a valid query filter: {}",
                        filter::to_resource_error(&text, &e).message
                    ));
                    None
                }
            }
        }
        (None, Some(Value::String(id))) if !id.is_empty() => Some(ScanQuery::Id(id.clone())),
        (Some(_), Some(_)) => {
            problems.push(
                "'invokeContext.scan': give either _queryFilter or _queryId, not both".into(),
            );
            None
        }
        _ => {
            problems.push(
                "'invokeContext.scan._queryFilter' (a query filter string) or '_queryId' is required"
                    .into(),
            );
            None
        }
    }
}

/// Expands `${Time.now}` and `${Time.now ± <period>}` (IDM's config macro) to an ISO-8601
/// UTC time with milliseconds, as IDM stores its timestamps.
pub fn expand_macros(text: &str, now: DateTime<Utc>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed macro in \"{text}\""))?;
        let body = after[..end].trim();
        let Some(offset) = body.strip_prefix("Time.now") else {
            return Err(format!(
                "unknown macro ${{{body}}}: only ${{Time.now}} and ${{Time.now + 1d}} are supported"
            ));
        };
        let offset = offset.trim();
        let at = if offset.is_empty() {
            now
        } else {
            let (sign, period) = match (offset.strip_prefix('+'), offset.strip_prefix('-')) {
                (Some(p), _) => (1, p),
                (_, Some(p)) => (-1, p),
                _ => return Err(format!("${{{body}}}: expected + or - after Time.now")),
            };
            let d = chrono::Duration::from_std(parse_period(period.trim())?)
                .map_err(|_| format!("${{{body}}}: the period is too long"))?;
            if sign > 0 {
                now + d
            } else {
                now - d
            }
        };
        out.push_str(&format_time(at));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A period as IDM writes them: one or more `<number><unit>`, units `ms`, `s`, `m`, `h`,
/// `d` (`10m`, `1h30m`, `500ms`).
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let bad = || format!("\"{text}\" is not a period (10m, 1h30m, 30s, 500ms, 1d)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total += Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sunset() -> Value {
        json!({
            "waitForCompletion": false,
            "numberOfThreads": 5,
            "scan": {
                "_queryFilter": "((/sunset/date lt \"${Time.now}\") AND !(/sunset/task-completed pr))",
                "object": "managed/user",
                "taskState": {"started": "/sunset/task-started", "completed": "/sunset/task-completed"},
                "recovery": {"timeout": "10m"}
            },
            "task": {"script": {"type": "text/javascript", "source": "true"}}
        })
    }

    #[test]
    fn idm_sample_parses() {
        let mut problems = Vec::new();
        let t = TaskScan::parse(&sunset(), &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(t.object, "managed/user");
        assert_eq!(t.threads, 5);
        assert_eq!(t.recovery, Duration::from_secs(600));
        assert_eq!(t.started.to_string(), "/sunset/task-started");
        let now = crate::scheduler::job::parse_time("2024-01-31T10:00:00Z").unwrap();
        assert_eq!(
            t.query_at(now).unwrap(),
            ScanQuery::Filter(
                "((/sunset/date lt \"2024-01-31T10:00:00.000Z\") AND !(/sunset/task-completed pr))"
                    .into()
            )
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = json!({"numberOfThreads": 0, "waitForCompletion": "no",
            "scan": {"_queryFilter": "userName eq", "object": "",
                     "taskState": {"started": "/a"}, "recovery": {"timeout": "soon"}},
            "task": {"script": {"type": "text/javascript", "source": "var x = (;"}}});
        let mut problems = Vec::new();
        assert!(TaskScan::parse(&bad, &mut problems).is_none());
        let all = problems.join("\n");
        for needle in [
            "numberOfThreads",
            "waitForCompletion",
            "not a valid query filter",
            "scan.object",
            "taskState.completed",
            "recovery.timeout",
            "invokeContext.task.script",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let mut problems = Vec::new();
        assert!(parse_script_invoke(&json!({"script": {"source": "a("}}), &mut problems).is_none());
        assert!(problems[0].contains("invokeContext.script"), "{problems:?}");
    }

    #[test]
    fn macros_and_periods() {
        let now = crate::scheduler::job::parse_time("2024-01-31T10:00:00Z").unwrap();
        assert_eq!(
            expand_macros("a ${Time.now - 1d} b ${ Time.now + 90s }", now).unwrap(),
            "a 2024-01-30T10:00:00.000Z b 2024-01-31T10:01:30.000Z"
        );
        assert!(expand_macros("${Env.x}", now).is_err());
        assert!(expand_macros("${Time.now", now).is_err());
        assert_eq!(parse_period("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_period("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "10", "m", "10 minutes", "-1s"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
