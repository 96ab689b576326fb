//! Relationship-derived virtual properties (IDM's `queryConfig`): a user's
//! `effectiveRoles` (`roles`) and `effectiveAssignments` (`roles` then `assignments`),
//! computed by following relationship fields and stored with the object, so they are read
//! and queried like any property and never written by clients.
//!
//! Grants whose `_refProperties.temporalConstraints` do not hold now, and objects whose
//! `isTemporalConstraint` property does not hold now (a role outside its window), are not
//! followed. Items are reference objects (`_ref`, `_refResourceCollection`,
//! `_refResourceId`), or with `referencedObjectFields` the reached objects' fields plus
//! those references, or with `flattenProperties` a flat list of the fields' values.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::store::{edges_of, Edge, End};
use super::temporal;
use super::Graph;
use crate::crest::fields::{FieldSelector, FieldSpec};
use crate::crest::filter::JsonPointer;
use crate::crest::ResourceError;
use crate::managed::schema::{ObjectSchema, QueryConfig};
use crate::repo::{Repo, StoredObject};

/// What one notification wave has read of the objects reached (roles, assignments), so
/// recomputing a role's 100 000 members reads the role's side once.
#[derive(Default)]
pub struct Memo {
    edges: HashMap<(String, String, String), Vec<Edge>>,
    objects: HashMap<String, Option<StoredObject>>,
}

impl Memo {
    /// Forgets what was read of `reference` (it changed during the wave).
    pub fn forget(&mut self, collection: &str, id: &str) {
        self.objects.remove(&format!("{collection}/{id}"));
        self.edges
            .retain(|(c, i, _), _| !(c == collection && i == id));
    }
}

pub struct Derive<'a> {
    pub graph: &'a Graph,
    pub repo: &'a dyn Repo,
    pub now: DateTime<Utc>,
}

impl Derive<'_> {
    /// The values of every derived property of object `id`.
    pub async fn values(
        &self,
        schema: &ObjectSchema,
        id: &str,
        memo: &mut Memo,
    ) -> Result<Map<String, Value>, ResourceError> {
        let mut out = Map::new();
        // The object's own edges, read once for all its derived properties.
        let mut own: HashMap<String, Vec<Edge>> = HashMap::new();
        for (name, cfg) in schema.derived() {
            out.insert(
                name.to_owned(),
                self.value(schema, id, cfg, memo, &mut own).await?,
            );
        }
        Ok(out)
    }

    async fn value(
        &self,
        schema: &ObjectSchema,
        id: &str,
        cfg: &QueryConfig,
        memo: &mut Memo,
        own: &mut HashMap<String, Vec<Edge>>,
    ) -> Result<Value, ResourceError> {
        let mut frontier = vec![End::new(&schema.resource, id, None)];
        for (level, field) in cfg.fields.iter().enumerate() {
            let mut next = Vec::new();
            let mut seen = HashSet::new();
            for at in &frontier {
                let me = End::new(&at.collection, &at.id, Some(field));
                let edges = if level == 0 {
                    match own.get(field) {
                        Some(e) => e.clone(),
                        None => {
                            let e = edges_of(self.repo, &me)
                                .await
                                .map_err(ResourceError::from)?;
                            own.insert(field.clone(), e.clone());
                            e
                        }
                    }
                } else {
                    self.memo_edges(&me, memo).await?
                };
                for e in edges {
                    if !temporal::holds(e.properties.get(temporal::GRANT_KEY), self.now) {
                        continue;
                    }
                    let other = e.other(&me);
                    if !seen.insert(other.reference()) || !self.counts(other, memo).await? {
                        continue;
                    }
                    next.push(End::new(&other.collection, &other.id, None));
                }
            }
            frontier = next;
        }
        let Some(fields) = &cfg.object_fields else {
            return Ok(Value::Array(frontier.iter().map(reference).collect()));
        };
        let mut items = Vec::with_capacity(frontier.len());
        for end in &frontier {
            let Some(obj) = self.object(end, memo).await? else {
                continue;
            };
            let Some(target) = self.graph.schema_of(&end.collection) else {
                continue;
            };
            if cfg.flatten {
                for f in fields {
                    let v = if f == "_id" {
                        Some(Value::String(obj.id.clone()))
                    } else {
                        JsonPointer::parse(f)
                            .resolve(&Value::Object(obj.content.clone()))
                            .cloned()
                    };
                    match v {
                        Some(Value::Array(vs)) => items.extend(vs),
                        Some(Value::Null) | None => {}
                        Some(v) => items.push(v),
                    }
                }
                continue;
            }
            let spec = if fields.iter().any(|f| f == "*") {
                FieldSpec::All
            } else {
                FieldSpec::Fields(
                    fields
                        .iter()
                        .map(|f| FieldSelector::Pointer(JsonPointer::parse(f)))
                        .collect(),
                )
            };
            let shown = crate::managed::objects::render(&target, obj, &spec, false);
            let mut item = Map::new();
            item.insert("_id".into(), json!(shown.id));
            if let Some(rev) = shown.rev {
                item.insert("_rev".into(), json!(rev));
            }
            item.extend(shown.content);
            if let Value::Object(r) = reference(end) {
                item.extend(r);
            }
            items.push(Value::Object(item));
        }
        if cfg.flatten {
            let mut seen = HashSet::new();
            items.retain(|v| seen.insert(v.to_string()));
        }
        Ok(Value::Array(items))
    }

    /// Whether a reached object counts now: it exists (when its constraints must be
    /// read) and its temporal constraints hold.
    async fn counts(&self, end: &End, memo: &mut Memo) -> Result<bool, ResourceError> {
        let Some(schema) = self.graph.schema_of(&end.collection) else {
            return Ok(true);
        };
        if schema.temporal().next().is_none() {
            return Ok(true);
        }
        let Some(obj) = self.object(end, memo).await? else {
            return Ok(false);
        };
        let holds = schema
            .temporal()
            .all(|p| temporal::holds(obj.content.get(p), self.now));
        Ok(holds)
    }

    async fn memo_edges(&self, me: &End, memo: &mut Memo) -> Result<Vec<Edge>, ResourceError> {
        let key = (
            me.collection.clone(),
            me.id.clone(),
            me.property.clone().unwrap_or_default(),
        );
        if let Some(e) = memo.edges.get(&key) {
            return Ok(e.clone());
        }
        let edges = edges_of(self.repo, me).await.map_err(ResourceError::from)?;
        memo.edges.insert(key, edges.clone());
        Ok(edges)
    }

    async fn object(
        &self,
        end: &End,
        memo: &mut Memo,
    ) -> Result<Option<StoredObject>, ResourceError> {
        let key = end.reference();
        if let Some(o) = memo.objects.get(&key) {
            return Ok(o.clone());
        }
        let o = self
            .repo
            .read(&end.collection, &end.id)
            .await
            .map_err(ResourceError::from)?;
        memo.objects.insert(key, o.clone());
        Ok(o)
    }
}

/// IDM's reference object of a reached object.
fn reference(end: &End) -> Value {
    json!({
        "_refResourceCollection": end.collection,
        "_refResourceId": end.id,
        "_ref": end.reference(),
    })
}
