//! `conf/schedule-<name>.json` in IDM's format: parsing, validation (every problem at once)
//! and next-fire computation.
//!
//! Cron expressions are Quartz's: seconds first, 6 or 7 fields (the 7th is the year), `?` in
//! day-of-month or day-of-week, day-of-week 1=SUN…7=SAT or `SUN`…`SAT`. Quartz's `L`, `W`
//! and `#` are not supported and are rejected with a message saying so. Times are UTC.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// Config factory of schedules: `schedule-<name>.json` → `schedule/<name>`.
pub const SCHEDULE_FACTORY: &str = "schedule";

/// `schedule/<name>` → `<name>`.
pub fn schedule_name(id: &str) -> Option<&str> {
    id.strip_prefix(SCHEDULE_FACTORY)?
        .strip_prefix('/')
        .filter(|n| !n.is_empty())
}

/// The live schedules by job name.
pub type Schedules = BTreeMap<String, Arc<Job>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MisfirePolicy {
    FireAndProceed,
    DoNothing,
}

impl MisfirePolicy {
    pub fn name(self) -> &'static str {
        match self {
            MisfirePolicy::FireAndProceed => "fireAndProceed",
            MisfirePolicy::DoNothing => "doNothing",
        }
    }
}

/// When a job fires.
#[derive(Debug, Clone)]
pub enum Trigger {
    Cron(Box<cron::Schedule>),
    /// Every `interval`, from `startTime` (or from when the job was loaded).
    Simple {
        interval: Duration,
    },
}

/// What a job does: a reconciliation (`invokeService: "sync"`), a liveSync of a system
/// object type (`invokeService: "provisioner"`), a script (`"script"`) or a task scan
/// (`"taskscanner"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Invoke {
    Reconcile { mapping: String },
    LiveSync { source: String },
    Script(Box<crate::script::Script>),
    TaskScan(Arc<super::taskscan::TaskScan>),
}

/// One parsed schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub enabled: bool,
    pub trigger: Trigger,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub misfire: MisfirePolicy,
    pub concurrent: bool,
    /// Fired once per trigger across the nodes sharing the store (its next fire time,
    /// previous fire and pause are kept there); otherwise on every node, from memory.
    pub persisted: bool,
    pub invoke: Invoke,
    /// The document as written (reported back by the REST API).
    pub raw: Map<String, Value>,
}

const LOG_LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "error", "fatal", "off"];
const UTC_NAMES: [&str; 6] = ["UTC", "GMT", "Z", "Etc/UTC", "Etc/GMT", "UCT"];

/// Parses and validates a schedule document; every problem is reported.
pub fn parse_job(name: &str, doc: &Value) -> Result<Job, Vec<String>> {
    let Some(obj) = doc.as_object() else {
        return Err(vec!["the file must contain a JSON object".into()]);
    };
    let mut problems = Vec::new();
    let boolean = |key: &str, default: bool, problems: &mut Vec<String>| match obj.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(format!("'{key}' must be true or false, not {other}"));
            default
        }
    };
    let enabled = boolean("enabled", true, &mut problems);
    let concurrent = boolean("concurrentExecution", false, &mut problems);
    // IDM's default: persisted schedules fire once per trigger across a cluster.
    let persisted = boolean("persisted", true, &mut problems);

    let kind = match obj.get("type") {
        None | Some(Value::Null) => Some("cron"),
        Some(Value::String(s)) if s == "cron" || s == "simple" => Some(s.as_str()),
        Some(other) => {
            problems.push(format!(
                "'type' must be \"cron\" or \"simple\", not {other}"
            ));
            None
        }
    };
    let trigger = match kind {
        Some("cron") => match obj.get("schedule") {
            Some(Value::String(expr)) => match parse_cron(expr) {
                Ok(s) => Some(Trigger::Cron(Box::new(s))),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None | Some(Value::Null) => {
                problems
                    .push("'schedule' (a cron expression) is required for type \"cron\"".into());
                None
            }
            Some(other) => {
                problems.push(format!(
                    "'schedule' must be a cron expression string, not {other}"
                ));
                None
            }
        },
        Some(_) => match obj.get("repeatInterval").and_then(Value::as_u64) {
            Some(ms) if ms > 0 => {
                if let Some(count) = obj.get("repeatCount") {
                    if count.as_i64() != Some(-1) {
                        problems.push(format!(
                            "'repeatCount' {count} is not supported: only -1 (repeat forever)"
                        ));
                    }
                }
                Some(Trigger::Simple {
                    interval: Duration::from_millis(ms),
                })
            }
            _ => {
                problems.push(
                    "'repeatInterval' (milliseconds, greater than 0) is required for type \"simple\""
                        .into(),
                );
                None
            }
        },
        None => None,
    };

    match obj.get("timeZone") {
        None | Some(Value::Null) => {}
        Some(Value::String(tz)) if UTC_NAMES.iter().any(|u| u.eq_ignore_ascii_case(tz)) => {}
        Some(other) => problems.push(format!(
            "'timeZone' {other} is not supported: schedules run in UTC (omit it or use \"UTC\")"
        )),
    }
    let start = time_field(obj, "startTime", &mut problems);
    let end = time_field(obj, "endTime", &mut problems);
    if let (Some(s), Some(e)) = (start, end) {
        if e <= s {
            problems.push("'endTime' must be after 'startTime'".into());
        }
    }
    let misfire = match obj.get("misfirePolicy") {
        None | Some(Value::Null) => MisfirePolicy::FireAndProceed,
        Some(Value::String(s)) if s == "fireAndProceed" => MisfirePolicy::FireAndProceed,
        Some(Value::String(s)) if s == "doNothing" => MisfirePolicy::DoNothing,
        Some(other) => {
            problems.push(format!(
                "'misfirePolicy' must be \"fireAndProceed\" or \"doNothing\", not {other}"
            ));
            MisfirePolicy::FireAndProceed
        }
    };
    match obj.get("invokeLogLevel") {
        None | Some(Value::Null) => {}
        Some(Value::String(l)) if LOG_LEVELS.contains(&l.to_ascii_lowercase().as_str()) => {}
        Some(other) => problems.push(format!(
            "'invokeLogLevel' must be one of {}, not {other}",
            LOG_LEVELS.join(", ")
        )),
    }
    let invoke = parse_invoke(obj, &mut problems);

    match (trigger, invoke) {
        (Some(trigger), Some(invoke)) if problems.is_empty() => Ok(Job {
            name: name.to_owned(),
            enabled,
            trigger,
            start,
            end,
            misfire,
            concurrent,
            persisted,
            invoke,
            raw: obj.clone(),
        }),
        _ => Err(problems),
    }
}

fn parse_invoke(obj: &Map<String, Value>, problems: &mut Vec<String>) -> Option<Invoke> {
    #[derive(PartialEq)]
    enum Service {
        Sync,
        Provisioner,
    }
    if let Some(Value::String(s)) = obj.get("invokeService") {
        let ctx = obj.get("invokeContext").unwrap_or(&Value::Null);
        match s.as_str() {
            "script" | "org.forgerock.openidm.script" => {
                return super::taskscan::parse_script_invoke(ctx, problems)
            }
            "taskscanner" | "org.forgerock.openidm.taskscanner" => {
                return super::taskscan::TaskScan::parse(ctx, problems)
                    .map(|t| Invoke::TaskScan(Arc::new(t)))
            }
            _ => {}
        }
    }
    let service = match obj.get("invokeService") {
        Some(Value::String(s)) if s == "sync" || s == "org.forgerock.openidm.sync" => {
            Some(Service::Sync)
        }
        Some(Value::String(s))
            if s == "provisioner" || s == "org.forgerock.openidm.provisioner" =>
        {
            Some(Service::Provisioner)
        }
        None | Some(Value::Null) => {
            problems.push(
                "'invokeService' is required (\"sync\", \"provisioner\", \"script\" or \"taskscanner\")"
                    .into(),
            );
            None
        }
        Some(other) => {
            problems.push(format!(
                "'invokeService' {other} is not supported: only \"sync\" (reconciliation), \"provisioner\" (liveSync), \"script\" and \"taskscanner\" are"
            ));
            None
        }
    };
    let ctx = match obj.get("invokeContext") {
        Some(Value::Object(ctx)) => ctx,
        None | Some(Value::Null) => {
            problems.push(
                "'invokeContext' is required: {\"action\": \"reconcile\", \"mapping\": \"<name>\"} or {\"action\": \"liveSync\", \"source\": \"system/<name>/<type>\"}"
                    .into(),
            );
            return None;
        }
        Some(other) => {
            problems.push(format!("'invokeContext' must be an object, not {other}"));
            return None;
        }
    };
    let want = match service {
        Some(Service::Provisioner) => "liveSync",
        _ => "reconcile",
    };
    let mut ok = service.is_some();
    match ctx.get("action") {
        Some(Value::String(a)) if a == want => {}
        Some(other) => {
            problems.push(format!(
                "'invokeContext.action' {other} is not supported with this invokeService: only \"{want}\" is"
            ));
            ok = false;
        }
        None => {
            problems.push(format!("'invokeContext.action' is required (\"{want}\")"));
            ok = false;
        }
    }
    if service == Some(Service::Provisioner) {
        let source = match ctx.get("source") {
            Some(Value::String(s))
                if crate::system::service::SystemService::split_source(s).is_ok() =>
            {
                Some(s.trim_matches('/').to_owned())
            }
            _ => {
                problems.push(
                    "'invokeContext.source' must name a system object type (system/<name>/<type>)"
                        .into(),
                );
                None
            }
        };
        return match (ok, source) {
            (true, Some(source)) => Some(Invoke::LiveSync { source }),
            _ => None,
        };
    }
    let mapping = match ctx.get("mapping") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        _ => {
            problems.push("'invokeContext.mapping' must name a mapping".into());
            None
        }
    };
    match (ok, mapping) {
        (true, Some(mapping)) => Some(Invoke::Reconcile { mapping }),
        _ => None,
    }
}

fn time_field(
    obj: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<DateTime<Utc>> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => match parse_time(s) {
            Some(t) => Some(t),
            None => {
                problems.push(format!(
                    "'{key}' \"{s}\" is not an ISO-8601 date-time (2024-01-31T10:00:00Z)"
                ));
                None
            }
        },
        Some(other) => {
            problems.push(format!("'{key}' must be an ISO-8601 string, not {other}"));
            None
        }
    }
}

/// RFC 3339 with an offset, or a date-time without one (taken as UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(|n| n.and_utc())
}

/// A Quartz cron expression: 6 or 7 whitespace-separated fields, seconds first.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 6 && fields.len() != 7 {
        return Err(format!(
            "'schedule' \"{expr}\" must have 6 or 7 fields (seconds minutes hours \
             day-of-month month day-of-week [year]), not {}",
            fields.len()
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        let upper = f.to_ascii_uppercase();
        // Month and day names contain no L/W on their own except within names (JUL, WED…):
        // look for the Quartz special forms only where they are special.
        let special = match i {
            3 => upper == "L" || upper.starts_with("L-") || upper.ends_with('W') || upper == "LW",
            5 => {
                upper.contains('#')
                    || (upper.ends_with('L')
                        && upper[..upper.len() - 1].chars().all(|c| c.is_ascii_digit()))
            }
            _ => false,
        };
        if special || f.contains('#') {
            return Err(format!(
                "'schedule' \"{expr}\": the Quartz forms L, W and # are not supported (field {} \"{f}\")",
                i + 1
            ));
        }
    }
    let dom = fields[3];
    let dow = fields[5];
    if dom == "?" && dow == "?" {
        return Err(format!(
            "'schedule' \"{expr}\": '?' may be used in day-of-month or day-of-week, not both"
        ));
    }
    cron::Schedule::from_str(&fields.join(" "))
        .map_err(|e| format!("'schedule' \"{expr}\" is not a valid cron expression: {e}"))
}

impl Job {
    /// The first fire time strictly after `after`, within `startTime`/`endTime`. `anchor`:
    /// when the job was loaded (the origin of a simple trigger without `startTime`).
    pub fn next_after(&self, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let floor = match self.start {
            // The start time itself may be a fire time: search from just before it.
            Some(s) if s > after => s - chrono::Duration::milliseconds(1),
            _ => after,
        };
        let next = match &self.trigger {
            Trigger::Cron(s) => s.after(&floor).next(),
            Trigger::Simple { interval } => {
                let origin = self.start.unwrap_or(anchor);
                let step = interval.as_millis().max(1) as i64;
                let since = (floor - origin).num_milliseconds();
                let k = if since < 0 { 0 } else { since / step + 1 };
                origin.checked_add_signed(chrono::Duration::milliseconds(k.checked_mul(step)?))
            }
        }?;
        match self.end {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.trigger {
            Trigger::Cron(_) => "cron",
            Trigger::Simple { .. } => "simple",
        }
    }

    /// The job as the REST API shows it (without run state).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("_id".into(), json!(self.name));
        out.insert("enabled".into(), json!(self.enabled));
        out.insert("persisted".into(), json!(self.persisted));
        out.insert("misfirePolicy".into(), json!(self.misfire.name()));
        out.insert("type".into(), json!(self.type_name()));
        match &self.trigger {
            Trigger::Cron(s) => {
                out.insert("schedule".into(), json!(s.source()));
            }
            Trigger::Simple { interval } => {
                out.insert("repeatInterval".into(), json!(interval.as_millis() as u64));
                out.insert("repeatCount".into(), json!(-1));
            }
        }
        out.insert("startTime".into(), json!(self.start.map(format_time)));
        out.insert("endTime".into(), json!(self.end.map(format_time)));
        out.insert("timeZone".into(), json!("UTC"));
        for key in ["invokeService", "invokeContext"] {
            out.insert(
                key.into(),
                self.raw.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        out.insert(
            "invokeLogLevel".into(),
            self.raw
                .get("invokeLogLevel")
                .cloned()
                .unwrap_or(json!("info")),
        );
        out.insert("concurrentExecution".into(), json!(self.concurrent));
        out
    }
}

/// `2024-01-31T10:00:00.000Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn good() -> Value {
        json!({
            "enabled": true,
            "type": "cron",
            "schedule": "0 0/15 * * * ?",
            "persisted": true,
            "misfirePolicy": "fireAndProceed",
            "concurrentExecution": false,
            "invokeService": "org.forgerock.openidm.sync",
            "invokeContext": {"action": "reconcile", "mapping": "systemLdapAccounts_managedUser"},
            "invokeLogLevel": "info"
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn idm_sample_parses_with_defaults() {
        let j = parse_job("recon", &good()).unwrap();
        assert!(j.enabled && !j.concurrent);
        assert_eq!(j.misfire, MisfirePolicy::FireAndProceed);
        assert_eq!(
            j.invoke,
            Invoke::Reconcile {
                mapping: "systemLdapAccounts_managedUser".into()
            }
        );
        let minimal = json!({"schedule": "*/5 * * * * ?", "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "m"}});
        let j = parse_job("m", &minimal).unwrap();
        assert!(j.enabled && !j.concurrent && j.type_name() == "cron");
        let v = j.to_json();
        assert_eq!(v["_id"], "m");
        assert_eq!(v["schedule"], "*/5 * * * * ?");
        assert_eq!(v["invokeContext"]["mapping"], "m");
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = json!({
            "enabled": "yes",
            "type": "cron",
            "schedule": "0 0 * * *",
            "misfirePolicy": "later",
            "timeZone": "Europe/Paris",
            "startTime": "tomorrow",
            "concurrentExecution": 1,
            "invokeService": "workflow",
            "invokeContext": {"action": "liveSync"},
            "invokeLogLevel": "loud"
        });
        let problems = parse_job("x", &bad).unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "'enabled'",
            "'concurrentExecution'",
            "6 or 7 fields",
            "'timeZone'",
            "'startTime'",
            "'misfirePolicy'",
            "'invokeLogLevel'",
            "'invokeService'",
            "'invokeContext.action'",
            "'invokeContext.mapping'",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        assert_eq!(problems.len(), 10, "{all}");
        assert!(parse_job("x", &json!([])).is_err());
        let no_ctx = parse_job(
            "x",
            &json!({"schedule": "* * * * * ?", "invokeService": "sync"}),
        )
        .unwrap_err();
        assert!(
            no_ctx[0].contains("'invokeContext' is required"),
            "{no_ctx:?}"
        );
    }

    #[test]
    fn provisioner_jobs_run_live_sync_of_a_system_object_type() {
        let doc = json!({"schedule": "0/15 * * * * ?", "persisted": true,
            "invokeService": "provisioner",
            "invokeContext": {"action": "liveSync", "source": "system/ldap/account"}});
        let job = parse_job("ldap-sync", &doc).unwrap();
        assert_eq!(
            job.invoke,
            Invoke::LiveSync {
                source: "system/ldap/account".into()
            }
        );
        let bad = json!({"schedule": "0/15 * * * * ?", "invokeService": "provisioner",
            "invokeContext": {"action": "reconcile", "source": "managed/user"}});
        let all = parse_job("x", &bad).unwrap_err().join("\n");
        assert!(all.contains("only \"liveSync\" is"), "{all}");
        assert!(
            all.contains("'invokeContext.source' must name a system object type"),
            "{all}"
        );
    }

    #[test]
    fn quartz_forms() {
        for ok in [
            "0 0/15 * * * ?",
            "*/5 * * * * ?",
            "0 0 12 ? * WED",
            "0 0 12 ? * 2-6",
            "0 15 10 * * ? 2030",
            "0 0 0 1 * ?",
            "0 0 8 ? JAN,JUL MON-FRI",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
        for (bad, needle) in [
            ("0 0 * * *", "6 or 7 fields"),
            ("0 0 0 L * ?", "L, W and #"),
            ("0 0 0 15W * ?", "L, W and #"),
            ("0 0 0 ? * 6#3", "L, W and #"),
            ("0 0 0 ? * 6L", "L, W and #"),
            ("0 0 0 ? * ?", "not both"),
            ("61 * * * * ?", "not a valid cron"),
            ("a b c d e f", "not a valid cron"),
        ] {
            let e = parse_cron(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    fn cron_job(expr: &str) -> Job {
        parse_job(
            "j",
            &json!({"schedule": expr, "invokeService": "sync",
                "invokeContext": {"action": "reconcile", "mapping": "m"}}),
        )
        .unwrap()
    }

    #[test]
    fn next_fire_with_seconds_and_quartz_day_numbers() {
        let now = at("2024-01-31T10:07:03.500Z");
        let j = cron_job("0 0/15 * * * ?");
        assert_eq!(j.next_after(now, now), Some(at("2024-01-31T10:15:00Z")));
        let j = cron_job("*/2 * * * * ?");
        assert_eq!(j.next_after(now, now), Some(at("2024-01-31T10:07:04Z")));
        // Quartz: 1 = Sunday, 4 = Wednesday. 2024-01-31 is a Wednesday.
        let j = cron_job("0 0 12 ? * 1");
        let next = j.next_after(now, now).unwrap();
        assert_eq!(next.weekday(), Weekday::Sun);
        assert_eq!((next.day(), next.hour()), (4, 12));
        let j = cron_job("0 0 12 ? * 4");
        assert_eq!(j.next_after(now, now), Some(at("2024-01-31T12:00:00Z")));
        let j = cron_job("0 0 12 ? * SAT");
        assert_eq!(j.next_after(now, now).unwrap().weekday(), Weekday::Sat);
    }

    #[test]
    fn start_and_end_bound_the_fires() {
        let now = at("2024-01-31T10:00:00Z");
        let mut j = cron_job("0 * * * * ?");
        j.start = Some(at("2024-02-01T00:00:00Z"));
        assert_eq!(j.next_after(now, now), Some(at("2024-02-01T00:00:00Z")));
        j.start = None;
        j.end = Some(at("2024-01-31T10:00:30Z"));
        assert_eq!(j.next_after(now, now), None);
        let bad = json!({"schedule": "* * * * * ?", "invokeService": "sync",
            "startTime": "2024-02-01T00:00:00Z", "endTime": "2024-01-01T00:00:00",
            "invokeContext": {"action": "reconcile", "mapping": "m"}});
        assert!(parse_job("j", &bad).unwrap_err()[0].contains("after"));
    }

    #[test]
    fn simple_trigger_repeats_from_its_origin() {
        let doc = json!({"type": "simple", "repeatInterval": 1500, "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "m"}});
        let j = parse_job("s", &doc).unwrap();
        let anchor = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            j.next_after(anchor, anchor),
            Some(at("2024-01-01T00:00:01.500Z"))
        );
        assert_eq!(
            j.next_after(at("2024-01-01T00:00:03Z"), anchor),
            Some(at("2024-01-01T00:00:04.500Z"))
        );
        let bad = json!({"type": "simple", "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "m"}});
        assert!(parse_job("s", &bad).unwrap_err()[0].contains("repeatInterval"));
    }

    #[test]
    fn ids_and_utc_names() {
        assert_eq!(schedule_name("schedule/every2s"), Some("every2s"));
        assert_eq!(schedule_name("schedule/"), None);
        assert_eq!(schedule_name("scheduler/x"), None);
        let mut doc = good();
        doc["timeZone"] = json!("UTC");
        assert!(parse_job("x", &doc).is_ok());
        assert_eq!(
            format_time(at("2024-01-31T10:00:00Z")),
            "2024-01-31T10:00:00.000Z"
        );
    }
}
