//! Conditional grants (IDM's conditional roles): a role's `condition` (its `isConditional`
//! property, a query filter over users) grants the role to every user it matches, as an
//! edge with `_refProperties._grantType: "conditional"`.
//!
//! * A user's write re-evaluates the conditions against the user as written, and the grant
//!   changes commit in the same transaction ([`for_object`]).
//! * A role's condition change (or creation with one) re-evaluates it against every user
//!   with a store query, and the grants change in batches ([`for_role`]).
//!
//! Conditions are read through [`Conditions`], a short-lived cache (a few seconds, dropped
//! on this gateway's writes of the roles), so a user write does not query the roles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::store::{edges_of, Edge, End, CONDITIONAL, GRANT_TYPE};
use super::write::{commit, EdgeWrites};
use super::Graph;
use crate::crest::filter::{self, JsonPointer, QueryFilter};
use crate::crest::ResourceError;
use crate::managed::schema::ObjectSchema;
use crate::repo::{Repo, RepoError, RepoQuery};

/// How long a read of the conditions is reused (other gateways sharing the store see a
/// condition change within this time).
const TTL: Duration = Duration::from_secs(5);
/// Edge writes per transaction when a role's grants change.
const BATCH: usize = 500;
/// Users read per page when a condition is evaluated.
const PAGE: usize = 1000;

type Parsed = Arc<Vec<(String, QueryFilter)>>;

/// The conditions of the conditional collections, by collection and property.
#[derive(Default)]
pub struct Conditions {
    cached: Mutex<HashMap<(String, String), (Instant, Parsed)>>,
}

impl Conditions {
    /// Drops what was read of `collection` (one of its objects was written).
    pub fn invalidate(&self, collection: &str) {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _), _| c != collection);
    }

    /// `(id, filter)` of every object of `collection` with a condition in `field`.
    async fn of(
        &self,
        repo: &dyn Repo,
        collection: &str,
        field: &str,
    ) -> Result<Parsed, ResourceError> {
        let key = (collection.to_owned(), field.to_owned());
        if let Some((at, list)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if at.elapsed() < TTL {
                return Ok(list.clone());
            }
        }
        let present = QueryFilter::Present(JsonPointer(vec![field.to_owned()]));
        let page = match repo.query(collection, RepoQuery::all(&present, &[])).await {
            Ok(p) => p.results,
            Err(RepoError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut list = Vec::new();
        for obj in page {
            if let Some(f) = condition_of(obj.content.get(field)) {
                list.push((obj.id, f));
            }
        }
        let list = Arc::new(list);
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (Instant::now(), list.clone()));
        Ok(list)
    }
}

/// A stored condition as a filter; an empty, absent or unreadable one grants nothing.
fn condition_of(v: Option<&Value>) -> Option<QueryFilter> {
    let text = v?.as_str()?.trim();
    if text.is_empty() {
        return None;
    }
    filter::parse(text).ok()
}

/// Checks a condition a client writes: a query filter (or empty / null).
pub fn check(v: &Value, what: &str) -> Result<(), ResourceError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if s.trim().is_empty() => Ok(()),
        Value::String(s) => filter::parse(s).map(drop).map_err(|e| {
            let err = filter::to_resource_error(s, &e);
            ResourceError::bad_request(format!("{what}: {}", err.message))
        }),
        _ => Err(ResourceError::bad_request(format!(
            "{what}: must be a query filter string"
        ))),
    }
}

/// A conditional grant of the role at `role` to the user at `user`.
fn grant(user: End, role: End) -> Edge {
    let mut properties = Map::new();
    properties.insert(GRANT_TYPE.into(), json!(CONDITIONAL));
    Edge {
        id: super::store::new_edge_id(),
        rev: String::new(),
        first: user,
        second: role,
        properties,
        first_single: false,
        second_single: false,
    }
}

/// The grant changes for object `id` (a user) written with `content`: the conditional
/// grants its relationship properties hold, made to match the conditions now.
pub async fn for_object(
    repo: &dyn Repo,
    conditions: &Conditions,
    schema: &ObjectSchema,
    id: &str,
    content: &Map<String, Value>,
) -> Result<EdgeWrites, ResourceError> {
    let mut out = EdgeWrites::default();
    for (prop, rel) in schema.relations() {
        for c in &rel.collections {
            let Some(field) = &c.conditional_field else {
                continue;
            };
            let conds = conditions.of(repo, &c.path, field).await?;
            if conds.is_empty() {
                continue;
            }
            let me = End::new(&schema.resource, id, Some(prop));
            let mut doc = content.clone();
            doc.insert("_id".into(), json!(id));
            let doc = Value::Object(doc);
            let wanted: HashSet<&str> = conds
                .iter()
                .filter(|(_, f)| f.matches(&doc))
                .map(|(rid, _)| rid.as_str())
                .collect();
            let stored: Vec<Edge> = edges_of(repo, &me)
                .await
                .map_err(ResourceError::from)?
                .into_iter()
                .filter(|e| e.is_conditional() && e.other(&me).collection == c.path)
                .collect();
            let have: HashSet<String> = stored.iter().map(|e| e.other(&me).id.clone()).collect();
            for e in stored {
                if !wanted.contains(e.other(&me).id.as_str()) {
                    out.ops.push(e.delete_op());
                    out.touched.push(e);
                }
            }
            for rid in wanted {
                if !have.contains(rid) {
                    let e = grant(me.clone(), End::new(&c.path, rid, rel.reverse.as_deref()));
                    out.ops.push(e.create_op());
                    out.touched.push(e);
                }
            }
        }
    }
    Ok(out)
}

/// Re-evaluates the condition (property `field`) of object `id` of `schema` (a role)
/// against every object of the collections its conditional relationships reach, and
/// commits the grant changes in batches. Returns the edges created or deleted.
pub async fn for_role(
    graph: &Graph,
    repo: &dyn Repo,
    schema: &ObjectSchema,
    id: &str,
    field: &str,
) -> Result<Vec<Edge>, ResourceError> {
    let role = repo
        .read(&schema.resource, id)
        .await
        .map_err(ResourceError::from)?;
    let condition = role
        .as_ref()
        .and_then(|r| condition_of(r.content.get(field)));
    let mut touched = Vec::new();
    for (prop, rel) in schema.relations() {
        if !rel.conditional_association {
            continue;
        }
        let me = End::new(&schema.resource, id, Some(prop));
        let stored: Vec<Edge> = edges_of(repo, &me)
            .await
            .map_err(ResourceError::from)?
            .into_iter()
            .filter(Edge::is_conditional)
            .collect();
        let mut wanted: HashSet<(String, String)> = HashSet::new();
        if let (Some(cond), Some(_)) = (&condition, &role) {
            for c in &rel.collections {
                let Some(members) = graph.schema_of(&c.path) else {
                    continue;
                };
                let f = super::rewrite_filter(&members, cond.clone())?;
                let mut cookie: Option<String> = None;
                loop {
                    let page = match repo
                        .query(
                            &c.path,
                            RepoQuery {
                                page_size: PAGE,
                                cookie: cookie.as_deref(),
                                ids_only: true,
                                ..RepoQuery::all(&f, &[])
                            },
                        )
                        .await
                    {
                        Ok(p) => p,
                        Err(RepoError::NotFound { .. }) => break,
                        Err(e) => return Err(e.into()),
                    };
                    wanted.extend(page.results.into_iter().map(|o| (c.path.clone(), o.id)));
                    match page.next_cookie {
                        Some(next) => cookie = Some(next),
                        None => break,
                    }
                }
            }
        }
        let mut ops = Vec::new();
        let mut changed = Vec::new();
        let mut have = HashSet::new();
        for e in stored {
            let other = e.other(&me).clone();
            let key = (other.collection.clone(), other.id.clone());
            if wanted.contains(&key) {
                have.insert(key);
            } else {
                ops.push(e.delete_op());
                changed.push(e);
            }
        }
        for (coll, uid) in wanted.difference(&have) {
            let e = grant(End::new(coll, uid, rel.reverse.as_deref()), me.clone());
            ops.push(e.create_op());
            changed.push(e);
        }
        for (ops, edges) in ops.chunks(BATCH).zip(changed.chunks(BATCH)) {
            match commit(repo, ops.to_vec()).await {
                Ok(()) => touched.extend_from_slice(edges),
                // A user written meanwhile made (or dropped) one of these grants itself:
                // apply the batch one edge at a time, keeping what still applies.
                Err(_) => {
                    for (op, e) in ops.iter().zip(edges) {
                        if commit(repo, vec![op.clone()]).await.is_ok() {
                            touched.push(e.clone());
                        }
                    }
                }
            }
        }
    }
    Ok(touched)
}
