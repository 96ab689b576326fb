//! IDM's temporal constraints: `[{"duration": "<start>/<end>"}]` (an ISO-8601 interval of
//! two instants) on a role (`isTemporalConstraint` property) or on one grant
//! (`_refProperties.temporalConstraints`, at most one entry). The object or the grant
//! counts while the instant is inside one interval (start included, end excluded); an
//! empty or absent list always counts.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::crest::ResourceError;

/// The `_refProperties` key of a grant's constraint.
pub const GRANT_KEY: &str = "temporalConstraints";

/// One `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The intervals of a constraint list; a message naming the problem otherwise.
pub fn parse(v: &Value) -> Result<Vec<Interval>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => {
            return Err(
                "temporal constraints must be an array of {\"duration\": \"<start>/<end>\"}".into(),
            )
        }
    };
    items
        .iter()
        .map(|item| {
            let text = item
                .get("duration")
                .and_then(Value::as_str)
                .ok_or_else(|| "each temporal constraint needs a \"duration\" string".to_owned())?;
            let (a, b) = text.split_once('/').ok_or_else(|| {
                format!("the duration '{text}' is not an interval \"<start>/<end>\"")
            })?;
            let (Some(start), Some(end)) = (parse_instant(a), parse_instant(b)) else {
                return Err(format!(
                    "the duration '{text}' must be two ISO-8601 instants like 2026-01-01T00:00:00.000Z/2027-01-01T00:00:00.000Z"
                ));
            };
            if end <= start {
                return Err(format!("the duration '{text}' ends before it starts"));
            }
            Ok(Interval { start, end })
        })
        .collect()
}

/// Whether a constraint list holds at `at` (an unreadable one never holds).
pub fn holds(v: Option<&Value>, at: DateTime<Utc>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(v) => match parse(v) {
            Ok(list) => list.is_empty() || list.iter().any(|i| i.contains(at)),
            Err(_) => false,
        },
    }
}

/// Whether a boundary of the constraint list falls in `(after, upto]`.
pub fn crossed(v: Option<&Value>, after: DateTime<Utc>, upto: DateTime<Utc>) -> bool {
    let Some(Ok(list)) = v.map(parse) else {
        return false;
    };
    list.iter()
        .any(|i| [i.start, i.end].iter().any(|t| after < *t && *t <= upto))
}

/// Checks a written constraint list (`grant`: at most one interval).
pub fn check(v: &Value, what: &str, grant: bool) -> Result<(), ResourceError> {
    let list = parse(v).map_err(|m| ResourceError::bad_request(format!("{what}: {m}")))?;
    if grant && list.len() > 1 {
        return Err(ResourceError::bad_request(
            "Only 1 temporal constraint is supported per grant.",
        ));
    }
    Ok(())
}

/// Checks, every `every`, whether a constraint's start or end passed since the last check,
/// and notifies as a change would: a role whose window opened or closed notifies through
/// its constraint property (`notifyRelationships`: its members), a grant whose window did
/// notifies both its ends. The first check looks back one day (boundaries passed while
/// the gateway was down).
pub fn spawn_sweeper(
    notifier: std::sync::Arc<super::notify::Notifier>,
    every: std::time::Duration,
    drain: crate::lifecycle::Drain,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the temporal constraints check: {e}"))?;
    std::thread::Builder::new()
        .name("temporal-constraints".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut last = Utc::now() - chrono::Duration::days(1);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // A draining process leaves the checks to its successor.
                    if drain.is_draining() {
                        return;
                    }
                    let now = Utc::now();
                    match crossings(&notifier, last, now).await {
                        Ok(events) => {
                            last = now;
                            notifier.run(events).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e.message, "temporal constraints check failed")
                        }
                    }
                }
            })
        })
        .map(drop)
        .map_err(|e| format!("cannot start the temporal constraints check: {e}"))
}

/// The notifications of the constraint boundaries in `(after, upto]`.
async fn crossings(
    notifier: &super::notify::Notifier,
    after: DateTime<Utc>,
    upto: DateTime<Utc>,
) -> Result<Vec<super::notify::Event>, ResourceError> {
    use super::notify::Event;
    use super::store::End;
    use crate::crest::filter::{JsonPointer, QueryFilter};
    use crate::repo::{RepoError, RepoQuery};

    let repo = notifier.repo.as_ref();
    let all = |r: Result<crate::repo::RepoPage, RepoError>| match r {
        Ok(p) => Ok(p.results),
        Err(RepoError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(ResourceError::from(e)),
    };
    let mut events = Vec::new();
    let types = (notifier.schema)();
    for schema in types.types.values() {
        for prop in schema.temporal() {
            let present = QueryFilter::Present(JsonPointer(vec![prop.to_owned()]));
            for obj in all(repo
                .query(&schema.resource, RepoQuery::all(&present, &[]))
                .await)?
            {
                if crossed(obj.content.get(prop), after, upto) {
                    events.push(Event::Changed(End::new(
                        &schema.resource,
                        &obj.id,
                        Some(prop),
                    )));
                }
            }
        }
    }
    let present = QueryFilter::Present(JsonPointer(vec!["properties".into(), GRANT_KEY.into()]));
    for obj in all(repo
        .query(super::store::EDGES, RepoQuery::all(&present, &[]))
        .await)?
    {
        let Some(e) = super::store::Edge::from_stored(obj) else {
            continue;
        };
        if crossed(e.properties.get(GRANT_KEY), after, upto) {
            events.push(Event::Notify(e.first.clone()));
            events.push(Event::Notify(e.second.clone()));
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn intervals_hold_between_start_and_end() {
        let c = json!([{"duration": "2026-01-01T00:00:00.000Z/2026-02-01T00:00:00Z"}]);
        assert!(!holds(Some(&c), at("2025-12-31T23:59:59Z")));
        assert!(holds(Some(&c), at("2026-01-01T00:00:00Z")));
        assert!(holds(Some(&c), at("2026-01-31T23:59:59Z")));
        assert!(!holds(Some(&c), at("2026-02-01T00:00:00Z")));
        assert!(holds(None, at("2026-01-01T00:00:00Z")));
        assert!(holds(Some(&json!([])), at("2026-01-01T00:00:00Z")));
        assert!(!holds(
            Some(&json!([{"duration": "soon"}])),
            at("2026-01-01T00:00:00Z")
        ));
        assert!(crossed(
            Some(&c),
            at("2025-12-31T00:00:00Z"),
            at("2026-01-01T00:00:00Z")
        ));
        assert!(!crossed(
            Some(&c),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:00Z")
        ));
    }

    #[test]
    fn bad_constraints_are_named() {
        for bad in [
            json!({"duration": "x"}),
            json!([{"duration": "2026-01-01T00:00:00Z"}]),
            json!([{"duration": "2026-02-01T00:00:00Z/2026-01-01T00:00:00Z"}]),
            json!([{"start": "2026"}]),
        ] {
            assert_eq!(
                check(&bad, "temporalConstraints", false).unwrap_err().code,
                400
            );
        }
        let two = json!([
            {"duration": "2026-01-01T00:00:00Z/2026-02-01T00:00:00Z"},
            {"duration": "2026-03-01T00:00:00Z/2026-04-01T00:00:00Z"}]);
        assert!(check(&two, "temporalConstraints", false).is_ok());
        assert_eq!(
            check(&two, "temporalConstraints", true)
                .unwrap_err()
                .message,
            "Only 1 temporal constraint is supported per grant."
        );
    }
}
