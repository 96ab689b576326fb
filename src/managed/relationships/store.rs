//! Edges in the store: one object per relationship in the `relationships` resource, with
//! its own `_id`/`_rev`, as IDM's repository keeps them:
//!
//! ```json
//! {"firstResourceCollection": "managed/user", "firstResourceId": "bjensen",
//!  "firstPropertyName": "roles", "secondResourceCollection": "managed/role",
//!  "secondResourceId": "r1", "secondPropertyName": "members",
//!  "properties": {"_grantType": ""}, "key": "…", "one": null}
//! ```
//!
//! Both ends are indexed. A reverse relationship is one edge seen from both sides, so the
//! two sides can never disagree. `key` (unique) names the pair of ends: the same
//! relationship cannot be stored twice, whichever side adds it and however concurrently.
//! `one` (unique) names the end whose property is a singleton (`manager`), so it holds at
//! most one edge.

use serde_json::{json, Map, Value};

use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::repo::{Repo, RepoError, RepoQuery, StoredObject, WriteOp};

/// The store resource holding the edges.
pub use crate::repo::RELATIONSHIPS as EDGES;

/// One end of an edge: an object and the property through which it sees the edge (`None`
/// on the target side of a relationship without a reverse).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct End {
    pub collection: String,
    pub id: String,
    pub property: Option<String>,
}

impl End {
    pub fn new(collection: &str, id: &str, property: Option<&str>) -> End {
        End {
            collection: collection.to_owned(),
            id: id.to_owned(),
            property: property.map(str::to_owned),
        }
    }

    /// `managed/user/bjensen`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.collection, self.id)
    }

    fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}",
            self.collection,
            self.id,
            self.property.as_deref().unwrap_or("")
        )
    }
}

/// One stored relationship.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub rev: String,
    pub first: End,
    pub second: End,
    /// `_refProperties` without `_id` and `_rev`.
    pub properties: Map<String, Value>,
    /// Whether `first`'s property is a singleton / `second`'s.
    pub first_single: bool,
    pub second_single: bool,
}

impl Edge {
    pub fn from_stored(obj: StoredObject) -> Option<Edge> {
        let c = &obj.content;
        let text = |k: &str| c.get(k).and_then(Value::as_str);
        let end = |side: &str| {
            Some(End::new(
                text(&format!("{side}ResourceCollection"))?,
                text(&format!("{side}ResourceId"))?,
                text(&format!("{side}PropertyName")),
            ))
        };
        let single = |side: &str| {
            c.get("singles")
                .and_then(|s| s.get(side))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Some(Edge {
            first: end("first")?,
            second: end("second")?,
            properties: c
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            first_single: single("first"),
            second_single: single("second"),
            id: obj.id,
            rev: obj.rev,
        })
    }

    /// The stored form.
    pub fn content(&self) -> Map<String, Value> {
        let (a, b) = (self.first.key(), self.second.key());
        // A reverse relationship is the same edge from either side: order its ends.
        let mut key = if self.second.property.is_some() && b < a {
            format!("{b}\u{1e}{a}")
        } else {
            format!("{a}\u{1e}{b}")
        };
        // A conditional grant may exist beside a manual one of the same role (IDM keeps
        // both; the role counts once).
        if self.is_conditional() {
            key.push_str("\u{1d}conditional");
        }
        let one = match (self.first_single, self.second_single) {
            (true, _) => Value::String(a),
            (false, true) => Value::String(b),
            _ => Value::Null,
        };
        let mut m = Map::new();
        for (side, end) in [("first", &self.first), ("second", &self.second)] {
            m.insert(format!("{side}ResourceCollection"), json!(end.collection));
            m.insert(format!("{side}ResourceId"), json!(end.id));
            m.insert(format!("{side}PropertyName"), json!(end.property));
        }
        m.insert("properties".into(), Value::Object(self.properties.clone()));
        m.insert(
            "singles".into(),
            json!({"first": self.first_single, "second": self.second_single}),
        );
        m.insert("key".into(), Value::String(key));
        m.insert("one".into(), one);
        m
    }

    /// A grant made by a role's condition (`_grantType: "conditional"`).
    pub fn is_conditional(&self) -> bool {
        self.properties.get(GRANT_TYPE).and_then(Value::as_str) == Some(CONDITIONAL)
    }

    /// The end on object `collection`/`id`'s side.
    pub fn end_of(&self, collection: &str, id: &str) -> &End {
        if self.first.collection == collection && self.first.id == id {
            &self.first
        } else {
            &self.second
        }
    }

    /// The end that is not `me`.
    pub fn other(&self, me: &End) -> &End {
        if self.first == *me {
            &self.second
        } else {
            &self.first
        }
    }

    /// The edge as object `me` shows it: IDM's reference object.
    pub fn reference_from(&self, me: &End) -> Value {
        let other = self.other(me);
        let mut props = Map::new();
        props.insert("_id".into(), json!(self.id));
        props.insert("_rev".into(), json!(self.rev));
        for (k, v) in &self.properties {
            props.insert(k.clone(), v.clone());
        }
        json!({
            "_ref": other.reference(),
            "_refResourceCollection": other.collection,
            "_refResourceId": other.id,
            "_refProperties": props,
        })
    }

    /// The create of this (new) edge.
    pub fn create_op(&self) -> WriteOp {
        WriteOp::Create {
            resource: EDGES.into(),
            id: self.id.clone(),
            content: self.content(),
            unique: unique_fields(),
        }
    }

    pub fn delete_op(&self) -> WriteOp {
        WriteOp::Delete {
            resource: EDGES.into(),
            id: self.id.clone(),
            rev: Some(self.rev.clone()),
        }
    }
}

/// The `_refProperties` key naming how a role was granted.
pub const GRANT_TYPE: &str = "_grantType";
/// The grant type of a grant made by a role's condition.
pub const CONDITIONAL: &str = "conditional";

/// What must never be stored twice: the pair of ends, a singleton end.
pub fn unique_fields() -> Vec<JsonPointer> {
    vec![ptr("key"), ptr("one")]
}

/// The indexed fields of the edges.
pub fn indexes() -> Vec<JsonPointer> {
    ["firstResourceId", "secondResourceId", "key", "one"]
        .into_iter()
        .map(ptr)
        .collect()
}

fn ptr(name: &str) -> JsonPointer {
    JsonPointer(vec![name.to_owned()])
}

fn eq(field: &str, value: &str) -> QueryFilter {
    QueryFilter::Compare {
        field: ptr(field),
        op: CompareOp::Eq,
        value: FilterValue::String(value.to_owned()),
    }
}

/// The filters selecting the edges seen through `end` (its property), or every edge of the
/// object when `end.property` is `None`: one per side, each led by the side's indexed id
/// (an `OR` of the two would not use the indexes).
pub fn filters_of(end: &End) -> [QueryFilter; 2] {
    let side = |s: &str| {
        let mut all = vec![
            eq(&format!("{s}ResourceId"), &end.id),
            eq(&format!("{s}ResourceCollection"), &end.collection),
        ];
        if let Some(p) = &end.property {
            all.push(eq(&format!("{s}PropertyName"), p));
        }
        QueryFilter::And(all)
    };
    [side("first"), side("second")]
}

/// The edges seen through `end`, in creation order (ids are time-ordered).
pub async fn edges_of(repo: &dyn Repo, end: &End) -> Result<Vec<Edge>, RepoError> {
    let [first, second] = filters_of(end);
    let (a, b) = futures_util::future::join(side(repo, &first), side(repo, &second)).await;
    let mut edges: Vec<Edge> = a?
        .into_iter()
        .chain(b?)
        .filter_map(Edge::from_stored)
        // Seen through `end` means `end` is one side exactly (not its other property).
        .filter(|e| end.property.is_none() || e.first == *end || e.second == *end)
        .collect();
    edges.sort_by(|x, y| x.id.cmp(&y.id));
    edges.dedup_by(|x, y| x.id == y.id);
    Ok(edges)
}

async fn side(repo: &dyn Repo, filter: &QueryFilter) -> Result<Vec<StoredObject>, RepoError> {
    let page = repo.query(EDGES, RepoQuery::all(filter, &[])).await;
    match page {
        Ok(p) => Ok(p.results),
        // No edge was ever written: the resource does not exist yet.
        Err(RepoError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every edge stored for property `property` of the objects of `collection` (on either
/// side): what a schema change removing the property must delete. Not indexed (a scan of
/// the edges), as befits a rare administrative change.
pub async fn edges_of_property(
    repo: &dyn Repo,
    collection: &str,
    property: &str,
) -> Result<Vec<Edge>, RepoError> {
    let side_filter = |s: &str| {
        QueryFilter::And(vec![
            eq(&format!("{s}ResourceCollection"), collection),
            eq(&format!("{s}PropertyName"), property),
        ])
    };
    let (a, b) = futures_util::future::join(
        side(repo, &side_filter("first")),
        side(repo, &side_filter("second")),
    )
    .await;
    let mut edges: Vec<Edge> = a?
        .into_iter()
        .chain(b?)
        .filter_map(Edge::from_stored)
        .collect();
    edges.sort_by(|x, y| x.id.cmp(&y.id));
    edges.dedup_by(|x, y| x.id == y.id);
    Ok(edges)
}

/// One edge by id.
pub async fn edge(repo: &dyn Repo, id: &str) -> Result<Option<Edge>, RepoError> {
    Ok(repo.read(EDGES, id).await?.and_then(Edge::from_stored))
}

/// A new edge id: a time-ordered UUID (v7), so an object's relationships list in the order
/// they were made (queries order by `_id`).
pub fn new_edge_id() -> String {
    crate::repo::new_object_id()
}
