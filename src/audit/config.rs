//! `conf/audit.json` (IDM's format) lowered to what the gateway runs: the handlers it can
//! run, their topics, and the per-topic filters. Pure: the caller passes the document and
//! the property lookup.
//!
//! Understood: `auditServiceConfig.handlerForQueries`; `eventHandlers[]` of the classes
//! [`JSON_HANDLER`] (`config.{name, enabled, topics, logDirectory, buffering.{maxSize, writeInterval},
//! fileRotation.{rotationEnabled, maxFileSize, rotationFilePrefix, rotationFileSuffix,
//! rotationInterval, rotationTimes}, fileRetention.{maxNumberOfHistoryFiles,
//! maxDiskSpaceToUse, minFreeSpaceRequired}}`) and [`REPO_HANDLER`] (`config.{name, enabled,
//! topics, buffering.{maxSize, writeInterval}}`); `eventTopics.<topic>.filter.actions` and
//! `eventTopics.activity.passwordFields`. Handlers of other classes are reported (the
//! caller logs them) and skipped; other keys (`filterPolicies`, `exceptionFormatter`,
//! `rotationRetentionCheckInterval`: the gateway checks at every write wake-up, …) are
//! accepted and ignored, so an IDM administrator's file loads unchanged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::substitute::substitute;

pub const JSON_HANDLER: &str = "org.forgerock.audit.handlers.json.JsonAuditEventHandler";
pub const REPO_HANDLER: &str = "org.forgerock.openidm.audit.impl.RepositoryAuditEventHandler";

/// The topics the gateway emits.
pub const TOPICS: [&str; 6] = [
    "access",
    "activity",
    "authentication",
    "config",
    "recon",
    "sync",
];

/// Events a handler's queue holds when `buffering.maxSize` is not given.
pub const DEFAULT_QUEUE: usize = 100_000;
/// Time between two writes when `buffering.writeInterval` is not given.
pub const DEFAULT_WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest `buffering.writeInterval` (events wait that long in memory).
pub const MAX_WRITE_INTERVAL: Duration = Duration::from_secs(10);
/// Largest queue a handler may ask for (memory bound: events are a few hundred bytes).
pub const MAX_QUEUE: usize = 1_000_000;
/// Shortest `fileRotation.rotationInterval` (a file per write interval helps nobody).
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(1);
/// One day: `fileRotation.rotationTimes` are offsets from midnight below it.
pub const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Name of the handler `GET /openidm/audit/<topic>` reads.
    pub handler_for_queries: Option<String>,
    pub handlers: Vec<HandlerConfig>,
    /// `eventTopics.<topic>.filter.actions`, lower-case: events of other operations are
    /// not written (topics without a list keep everything).
    pub actions: HashMap<String, Vec<String>>,
    /// `eventTopics.activity.passwordFields`: removed from activity events (their change
    /// only shows as `passwordChanged`).
    pub password_fields: Vec<String>,
    /// Handlers that were skipped, with why (logged by the caller).
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HandlerConfig {
    pub name: String,
    pub topics: Vec<String>,
    /// Bounded queue length (`buffering.maxSize`).
    pub queue: usize,
    /// Time between two writes of what is queued (`buffering.writeInterval`).
    pub write_interval: Duration,
    pub kind: HandlerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HandlerKind {
    JsonFile(JsonFileConfig),
    Repo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonFileConfig {
    pub dir: PathBuf,
    /// Rotate when a file would grow past this many bytes (`fileRotation.maxFileSize`,
    /// with `rotationEnabled`); `None`: never by size.
    pub max_file_size: Option<u64>,
    pub rotation_prefix: String,
    /// chrono format of the rotated file's suffix (from IDM's Java pattern).
    pub rotation_suffix: String,
    /// Rotate a file this long after it was started (`fileRotation.rotationInterval`, with
    /// `rotationEnabled`); `None`: never by age.
    pub rotation_interval: Option<Duration>,
    /// Rotate a file at these offsets from midnight UTC, ascending
    /// (`fileRotation.rotationTimes`, with `rotationEnabled`).
    pub rotation_times: Vec<Duration>,
    /// Rotated files kept per topic (`fileRetention.maxNumberOfHistoryFiles`); `None`: all.
    pub max_history: Option<usize>,
    /// Bytes the rotated files of a topic may use together
    /// (`fileRetention.maxDiskSpaceToUse`); `None`: no limit.
    pub max_disk_space: Option<u64>,
    /// Free bytes the log directory's file system must keep: the oldest rotated files are
    /// deleted below it (`fileRetention.minFreeSpaceRequired`); `None`: no check.
    pub min_free_space: Option<u64>,
}

/// Parses `doc` (`audit.json` as on disk); `lookup` resolves `&{…}` properties.
pub fn parse(
    doc: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AuditConfig, Vec<String>> {
    let mut doc = doc.clone();
    let problems = substitute(&mut doc, lookup);
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(root) = doc.as_object() else {
        return Err(vec!["audit.json must contain a JSON object".into()]);
    };
    let mut problems = Vec::new();
    let handler_for_queries = match root.pointer_opt("auditServiceConfig", "handlerForQueries") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push("/auditServiceConfig/handlerForQueries: must be a string".into());
            None
        }
    };
    let mut handlers = Vec::new();
    let mut skipped = Vec::new();
    match root.get("eventHandlers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match parse_handler(item, &format!("/eventHandlers/{i}")) {
                    Ok(Some(h)) => handlers.push(h),
                    Ok(None) => {}
                    Err(Skip::Problem(p)) => problems.push(p),
                    Err(Skip::Class(p)) => skipped.push(p),
                }
            }
        }
        Some(_) => problems.push("/eventHandlers: must be an array".into()),
    }
    let mut names = std::collections::HashSet::new();
    for h in &handlers {
        if !names.insert(h.name.clone()) {
            problems.push(format!(
                "/eventHandlers: two handlers are named '{}'",
                h.name
            ));
        }
    }
    let mut actions = HashMap::new();
    let mut password_fields = vec!["password".to_owned()];
    if let Some(topics) = root.get("eventTopics").and_then(Value::as_object) {
        for (topic, t) in topics {
            if let Some(list) = t.pointer("/filter/actions") {
                match string_list(list) {
                    Some(l) => {
                        actions.insert(
                            topic.clone(),
                            l.into_iter().map(|a| a.to_ascii_lowercase()).collect(),
                        );
                    }
                    None => problems.push(format!(
                        "/eventTopics/{topic}/filter/actions: must be an array of strings"
                    )),
                }
            }
            if topic == "activity" {
                if let Some(list) = t.get("passwordFields") {
                    match string_list(list) {
                        Some(l) => password_fields = l,
                        None => problems.push(
                            "/eventTopics/activity/passwordFields: must be an array of strings"
                                .into(),
                        ),
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(AuditConfig {
        handler_for_queries,
        handlers,
        actions,
        password_fields,
        skipped,
    })
}

enum Skip {
    /// A mistake in a handler the gateway runs: the file is refused.
    Problem(String),
    /// A handler class the gateway does not run: logged and skipped.
    Class(String),
}

fn parse_handler(item: &Value, at: &str) -> Result<Option<HandlerConfig>, Skip> {
    let class = item
        .get("class")
        .and_then(Value::as_str)
        .ok_or_else(|| Skip::Problem(format!("{at}/class: must be a string")))?;
    let empty = serde_json::Map::new();
    let config = match item.get("config") {
        Some(Value::Object(c)) => c,
        None => &empty,
        Some(_) => return Err(Skip::Problem(format!("{at}/config: must be an object"))),
    };
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(match class {
            JSON_HANDLER => "json",
            REPO_HANDLER => "repo",
            _ => "",
        })
        .to_owned();
    if class != JSON_HANDLER && class != REPO_HANDLER {
        return Err(Skip::Class(format!(
            "audit handler '{name}' of class {class} is not supported by the gateway and is skipped"
        )));
    }
    match config.get("enabled").map(boolean) {
        None => {}
        Some(Some(true)) => {}
        Some(Some(false)) => return Ok(None),
        Some(None) => {
            return Err(Skip::Problem(format!(
                "{at}/config/enabled: must be true or false (or {{\"$bool\": …}})"
            )))
        }
    }
    let topics = match config.get("topics") {
        None => TOPICS.iter().map(|t| (*t).to_owned()).collect(),
        Some(v) => string_list(v).ok_or_else(|| {
            Skip::Problem(format!("{at}/config/topics: must be an array of strings"))
        })?,
    };
    let queue = match config.get("buffering").and_then(|b| b.get("maxSize")) {
        None => DEFAULT_QUEUE,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= MAX_QUEUE as u64 => n as usize,
            _ => {
                return Err(Skip::Problem(format!(
                    "{at}/config/buffering/maxSize: must be a number from 1 to {MAX_QUEUE}"
                )))
            }
        },
    };
    let write_interval = match config.get("buffering").and_then(|b| b.get("writeInterval")) {
        None => DEFAULT_WRITE_INTERVAL,
        Some(v) => match crate::config::duration::from_value(v, "") {
            Ok(d) if d >= Duration::from_millis(1) && d <= MAX_WRITE_INTERVAL => d,
            _ => {
                return Err(Skip::Problem(format!(
                    "{at}/config/buffering/writeInterval: must be a duration from \"1 millis\" to \"10 seconds\""
                )))
            }
        },
    };
    let kind = if class == JSON_HANDLER {
        let dir = config
            .get("logDirectory")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Skip::Problem(format!(
                    "{at}/config/logDirectory: must be a directory path"
                ))
            })?;
        let rotation = config.get("fileRotation");
        let enabled = rotation
            .and_then(|r| r.get("rotationEnabled"))
            .map(boolean)
            .unwrap_or(Some(false))
            .ok_or_else(|| {
                Skip::Problem(format!(
                    "{at}/config/fileRotation/rotationEnabled: must be a boolean"
                ))
            })?;
        let max_file_size = match rotation.and_then(|r| r.get("maxFileSize")) {
            None => None,
            Some(v) => match number(v) {
                Some(n) if n > 0 => Some(n as u64),
                Some(_) => None,
                None => {
                    return Err(Skip::Problem(format!(
                        "{at}/config/fileRotation/maxFileSize: must be a number of bytes"
                    )))
                }
            },
        };
        let text = |key: &str, default: &str| {
            rotation
                .and_then(|r| r.get(key))
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let retention = config.get("fileRetention");
        // IDM: a negative value (and for the disk space checks, 0) turns the check off.
        let limit = |key: &str, least: i64| -> Result<Option<u64>, Skip> {
            match retention.and_then(|r| r.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match number(v) {
                    Some(n) if n >= least => Ok(Some(n as u64)),
                    Some(_) => Ok(None),
                    None => Err(Skip::Problem(format!(
                        "{at}/config/fileRetention/{key}: must be a number"
                    ))),
                },
            }
        };
        let max_history = limit("maxNumberOfHistoryFiles", 0)?.map(|n| n as usize);
        let max_disk_space = limit("maxDiskSpaceToUse", 1)?;
        let min_free_space = limit("minFreeSpaceRequired", 1)?;
        let rotation_interval = match rotation.and_then(|r| r.get("rotationInterval")) {
            None | Some(Value::Null) => None,
            Some(v) => rotation_interval(v).map_err(|()| {
                Skip::Problem(format!(
                    "{at}/config/fileRotation/rotationInterval: must be a duration of at least \"1 second\" (such as \"1 day\"), or \"disabled\""
                ))
            })?,
        };
        let mut rotation_times = match rotation.and_then(|r| r.get("rotationTimes")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    crate::config::duration::from_value(v, "")
                        .ok()
                        .filter(|d| *d < DAY)
                        .ok_or_else(|| {
                            Skip::Problem(format!(
                                "{at}/config/fileRotation/rotationTimes/{i}: must be a duration after midnight below \"1 day\" (such as \"10 minutes\")"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(Skip::Problem(format!(
                    "{at}/config/fileRotation/rotationTimes: must be an array of durations"
                )))
            }
        };
        rotation_times.sort();
        rotation_times.dedup();
        HandlerKind::JsonFile(JsonFileConfig {
            dir: PathBuf::from(dir),
            max_file_size: if enabled { max_file_size } else { None },
            rotation_prefix: text("rotationFilePrefix", ""),
            rotation_suffix: java_date_pattern(&text("rotationFileSuffix", "-yyyy.MM.dd-HH.mm.ss")),
            rotation_interval: if enabled { rotation_interval } else { None },
            rotation_times: if enabled { rotation_times } else { Vec::new() },
            max_history,
            max_disk_space,
            min_free_space,
        })
    } else {
        HandlerKind::Repo
    };
    Ok(Some(HandlerConfig {
        name,
        topics,
        queue,
        write_interval,
        kind,
    }))
}

/// `fileRotation.rotationInterval`: `Ok(None)` when disabled (`"disabled"`, `0`, `"0 s"`),
/// `Err` when not a duration or shorter than [`MIN_ROTATION_INTERVAL`].
fn rotation_interval(v: &Value) -> Result<Option<Duration>, ()> {
    if v.as_str()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("disabled"))
    {
        return Ok(None);
    }
    match crate::config::duration::from_value(v, "") {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) if d >= MIN_ROTATION_INTERVAL => Ok(Some(d)),
        _ => Err(()),
    }
}

/// A boolean as IDM writes them: `true`, `"true"`, or `{"$bool": "true"}`.
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => o.get("$bool").and_then(boolean),
        _ => None,
    }
}

/// A number, or a string holding one (after substitution), or `{"$int": …}`.
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => o.get("$int").or_else(|| o.get("$long")).and_then(number),
        _ => None,
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// IDM's Java date pattern (`-yyyy.MM.dd-HH.mm.ss`) as a chrono format; other characters
/// are kept literally.
fn java_date_pattern(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    'outer: while !rest.is_empty() {
        for (java, chrono) in [
            ("yyyy", "%Y"),
            ("MM", "%m"),
            ("dd", "%d"),
            ("HH", "%H"),
            ("mm", "%M"),
            ("ss", "%S"),
            ("SSS", "%3f"),
        ] {
            if let Some(r) = rest.strip_prefix(java) {
                out.push_str(chrono);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

trait PointerOpt {
    fn pointer_opt(&self, a: &str, b: &str) -> Option<&Value>;
}

impl PointerOpt for serde_json::Map<String, Value> {
    fn pointer_opt(&self, a: &str, b: &str) -> Option<&Value> {
        self.get(a).and_then(|v| v.get(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(name: &str) -> Option<String> {
        (name == "idm.data.dir").then(|| "/data".to_owned())
    }

    #[test]
    fn shipped_file_loads() {
        let doc: Value = serde_json::from_str(include_str!("../../conf/audit.json")).expect("json");
        let c = parse(&doc, &props).expect("valid");
        // IDM's defaults: JSON files answer queries; the store handler is off.
        assert_eq!(c.handler_for_queries.as_deref(), Some("json"));
        assert_eq!(c.handlers.len(), 1);
        assert_eq!(c.handlers[0].write_interval, Duration::from_millis(100));
        let HandlerKind::JsonFile(json) = &c.handlers[0].kind else {
            panic!("json first")
        };
        assert_eq!(json.dir, PathBuf::from("/data/audit"));
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn idm_file_with_unknown_handlers_loads() {
        let doc = json!({
            "auditServiceConfig": {"handlerForQueries": "json", "availableAuditEventHandlers": [],
                "filterPolicies": {"value": {"excludeIf": [], "includeIf": []}}},
            "eventHandlers": [
                {"class": JSON_HANDLER, "config": {"name": "json",
                    "enabled": {"$bool": "&{openidm.audit.handler.json.enabled|true}"},
                    "logDirectory": "&{idm.data.dir}/audit",
                    "buffering": {"maxSize": 100000, "writeInterval": "100 millis"},
                    "fileRotation": {"rotationEnabled": true, "maxFileSize": 1000,
                        "rotationInterval": "1 day"},
                    "fileRetention": {"maxNumberOfHistoryFiles": 3},
                    "topics": ["access", "activity"]}},
                {"class": "org.forgerock.audit.handlers.syslog.SyslogAuditEventHandler",
                    "config": {"name": "syslog"}},
                {"class": REPO_HANDLER, "config": {"name": "repo",
                    "enabled": {"$bool": "&{openidm.audit.handler.repo.enabled|false}"}}}
            ],
            "eventTopics": {"config": {"filter": {"actions": ["create", "UPDATE"]}},
                "activity": {"passwordFields": ["password", "pin"]}},
            "exceptionFormatter": {"type": "text/javascript", "file": "bin/defaults/script/audit/stacktraceFormatter.js"}
        });
        let c = parse(&doc, &props).expect("valid");
        assert_eq!(c.handlers.len(), 1, "repo disabled, syslog skipped");
        assert_eq!(c.skipped.len(), 1);
        assert!(c.skipped[0].contains("syslog"), "{:?}", c.skipped);
        let h = &c.handlers[0];
        assert_eq!(h.topics, ["access", "activity"]);
        let HandlerKind::JsonFile(f) = &h.kind else {
            panic!()
        };
        assert_eq!(f.max_file_size, Some(1000));
        assert_eq!(f.max_history, Some(3));
        assert_eq!(f.rotation_interval, Some(Duration::from_secs(86_400)));
        assert!(f.rotation_times.is_empty());
        assert_eq!(f.rotation_suffix, "-%Y.%m.%d-%H.%M.%S");
        assert_eq!(c.actions["config"], ["create", "update"]);
        assert_eq!(c.password_fields, ["password", "pin"]);
    }

    #[test]
    fn time_rotation_and_retention_keys() {
        let handler = |config: Value| {
            let mut c = json!({"logDirectory": "x"});
            for (k, v) in config.as_object().unwrap() {
                c[k] = v.clone();
            }
            let doc = json!({"eventHandlers": [{"class": JSON_HANDLER, "config": c}]});
            let c = parse(&doc, &props).expect("valid");
            let HandlerKind::JsonFile(f) = c.handlers[0].kind.clone() else {
                panic!()
            };
            f
        };
        let f = handler(json!({"fileRotation": {"rotationEnabled": true,
            "rotationInterval": "5 minutes", "rotationTimes": ["20 minutes", "10 minutes", "10 minutes"]},
            "fileRetention": {"maxNumberOfHistoryFiles": -1, "maxDiskSpaceToUse": 1000,
                "minFreeSpaceRequired": "10"}}));
        assert_eq!(f.rotation_interval, Some(Duration::from_secs(300)));
        assert_eq!(
            f.rotation_times,
            [Duration::from_secs(600), Duration::from_secs(1200)]
        );
        assert_eq!(f.max_history, None, "-1 keeps all");
        assert_eq!(f.max_disk_space, Some(1000));
        assert_eq!(f.min_free_space, Some(10));
        for off in [json!("disabled"), json!(0), json!("0 s")] {
            let f = handler(
                json!({"fileRotation": {"rotationEnabled": true, "rotationInterval": off}}),
            );
            assert_eq!(f.rotation_interval, None);
        }
        // Without rotationEnabled, no rotation policy applies (as IDM).
        let f = handler(json!({"fileRotation": {"rotationInterval": "1 day",
            "rotationTimes": ["1 hour"]}, "fileRetention": {"maxDiskSpaceToUse": 0}}));
        assert_eq!(f.rotation_interval, None);
        assert!(f.rotation_times.is_empty());
        assert_eq!(f.max_disk_space, None, "0 turns the check off");
    }

    #[test]
    fn mistakes_name_the_field() {
        let doc = json!({"eventHandlers": [{"class": JSON_HANDLER,
            "config": {"name": "json", "buffering": {"maxSize": 0}, "logDirectory": "x"}}]});
        let e = parse(&doc, &props).unwrap_err();
        assert!(
            e[0].contains("/eventHandlers/0/config/buffering/maxSize"),
            "{e:?}"
        );
        let doc = json!({"eventHandlers": [{"class": JSON_HANDLER, "config": {"name": "json"}}]});
        let e = parse(&doc, &props).unwrap_err();
        assert!(e[0].contains("logDirectory"), "{e:?}");
        for bad in [json!("soon"), json!("0 ms"), json!("1 hour"), json!(true)] {
            let doc = json!({"eventHandlers": [{"class": JSON_HANDLER, "config": {"name": "json",
                "logDirectory": "x", "buffering": {"writeInterval": bad}}}]});
            let e = parse(&doc, &props).unwrap_err();
            assert!(
                e[0].contains("/eventHandlers/0/config/buffering/writeInterval"),
                "{e:?}"
            );
        }
        for (rotation, field) in [
            (
                json!({"rotationInterval": "soon"}),
                "fileRotation/rotationInterval",
            ),
            (
                json!({"rotationInterval": "10 millis"}),
                "fileRotation/rotationInterval",
            ),
            (
                json!({"rotationTimes": "10 minutes"}),
                "fileRotation/rotationTimes",
            ),
            (
                json!({"rotationTimes": ["10 minutes", "25 hours"]}),
                "fileRotation/rotationTimes/1",
            ),
        ] {
            let doc = json!({"eventHandlers": [{"class": JSON_HANDLER, "config": {
                "logDirectory": "x", "fileRotation": rotation}}]});
            let e = parse(&doc, &props).unwrap_err();
            assert!(
                e[0].contains(&format!("/eventHandlers/0/config/{field}:")),
                "{e:?}"
            );
        }
        for key in [
            "maxNumberOfHistoryFiles",
            "maxDiskSpaceToUse",
            "minFreeSpaceRequired",
        ] {
            let doc = json!({"eventHandlers": [{"class": JSON_HANDLER, "config": {
                "logDirectory": "x", "fileRetention": {key: "lots"}}}]});
            let e = parse(&doc, &props).unwrap_err();
            assert!(
                e[0].contains(&format!("/eventHandlers/0/config/fileRetention/{key}:")),
                "{e:?}"
            );
        }
        let doc = json!({"eventHandlers": [{"class": JSON_HANDLER,
            "config": {"logDirectory": "&{nowhere}"}}]});
        let e = parse(&doc, &props).unwrap_err();
        assert!(e[0].contains("nowhere"), "{e:?}");
    }
}
