//! `managed/<type>/<id>/<property>[/<edgeId>]`: one object's relationships as a
//! collection. Query (filter, sort and page over the reference objects), create
//! (`POST ?_action=create`), and read/update/patch/delete of one relationship by its edge id
//! (`_refProperties._id`).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::notify::{Event, Events};
use super::read::{expand_ref, Expand};
use super::store::{edge, edges_of, Edge, End, EDGES};
use super::write::{check_ref_properties, commit, edge_error, edge_ops, Change, Plan};
use super::Graph;
use crate::crest::filter::{self, JsonPointer};
use crate::crest::patch;
use crate::crest::query::CountPolicy;
use crate::crest::{
    Operation, QueryParams, QueryResponse, Request, ResourceError, ResourceResponse, Response,
};
use crate::managed::schema::ObjectSchema;
use crate::repo::{Repo, WriteOptions};

/// How often a write retries after losing a race on the same edges.
const RETRIES: usize = 16;

pub struct Collection<'a> {
    pub graph: &'a Graph,
    pub repo: &'a dyn Repo,
    pub schema: &'a ObjectSchema,
    pub id: &'a str,
    pub property: &'a str,
    /// Collects what the writes notify.
    pub events: Option<&'a Events>,
}

impl Collection<'_> {
    fn me(&self) -> End {
        End::new(&self.schema.resource, self.id, Some(self.property))
    }

    fn not_found(&self, edge_id: &str) -> ResourceError {
        ResourceError::not_found(format!(
            "Relationship {edge_id} not found in {}/{}/{}",
            self.schema.resource, self.id, self.property
        ))
    }

    pub async fn handle(
        &self,
        req: &Request,
        edge_id: Option<&str>,
    ) -> Result<Response, ResourceError> {
        let rel = self.schema.relation(self.property).ok_or_else(|| {
            ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            ))
        })?;
        if self
            .repo
            .read(&self.schema.resource, self.id)
            .await
            .map_err(ResourceError::from)?
            .is_none()
        {
            return Err(ResourceError::not_found(format!(
                "Object {} not found in {}",
                self.id, self.schema.resource
            )));
        }
        let internal = req.caller.is_internal();
        let expand = expand_of(&req.fields);
        match (&req.op, edge_id) {
            (Operation::Query(q), None) => self.query(req, q, &expand, internal).await,
            (Operation::Create { .. }, None) => {
                if !rel.array {
                    return Err(ResourceError::bad_request(format!(
                        "'{}' holds one reference: set it with a PUT or PATCH of the object",
                        self.property
                    )));
                }
                let plan = Plan(vec![(
                    self.property.to_owned(),
                    Change::Add(req.body.clone()),
                )]);
                let mut created = None;
                for _ in 0..RETRIES {
                    let edges =
                        edge_ops(self.graph, self.repo, self.schema, self.id, &plan).await?;
                    let new_id = edges.ops.iter().rev().find_map(|op| match op {
                        crate::repo::WriteOp::Create { id, .. } => Some(id.clone()),
                        _ => None,
                    });
                    match commit(self.repo, edges.ops).await {
                        Ok(()) => {
                            self.notify(&edges.touched);
                            created = new_id;
                            break;
                        }
                        Err(e) => match edge_error(&e, &self.me().reference()) {
                            Some(err) => return Err(err),
                            None => continue,
                        },
                    }
                }
                let id = created.ok_or_else(|| {
                    ResourceError::unavailable("The relationship is being changed; try again")
                })?;
                let r = self.one(&id, &expand, internal).await?;
                Ok(Response::Created(r))
            }
            (Operation::Read { .. }, Some(eid)) => {
                Ok(Response::Resource(self.one(eid, &expand, internal).await?))
            }
            (Operation::Update { rev, .. }, Some(eid)) => {
                let body = req.body_object()?.clone();
                self.update(eid, rev.as_deref(), |_| Ok(body.clone()))
                    .await?;
                Ok(Response::Resource(self.one(eid, &expand, internal).await?))
            }
            (Operation::Patch { rev }, Some(eid)) => {
                let ops = patch::parse_patch(&req.body)?;
                self.update(eid, rev.as_deref(), |current| {
                    let mut doc = current.clone();
                    patch::apply_patch(&mut doc, &ops, false)?;
                    doc.as_object().cloned().ok_or_else(|| {
                        ResourceError::bad_request("The patched relationship is not an object")
                    })
                })
                .await?;
                Ok(Response::Resource(self.one(eid, &expand, internal).await?))
            }
            (Operation::Delete { rev }, Some(eid)) => {
                let e = self.edge(eid).await?;
                let r = self.one(eid, &Expand::None, internal).await?;
                self.repo
                    .delete(EDGES, eid, rev.as_deref())
                    .await
                    .map_err(|e| match e {
                        crate::repo::RepoError::NotFound { .. } => self.not_found(eid),
                        e => e.into(),
                    })?;
                self.notify(std::slice::from_ref(&e));
                Ok(Response::Resource(r))
            }
            _ => Err(req.not_supported()),
        }
    }

    /// One relationship of this object that a client may change (not a conditional grant,
    /// which its role's condition makes and takes back).
    async fn edge(&self, edge_id: &str) -> Result<Edge, ResourceError> {
        let me = self.me();
        let e = self.mine(edge_id).await?;
        let conditional = self
            .schema
            .relation(self.property)
            .is_some_and(|r| r.is_conditional());
        if conditional && e.is_conditional() {
            return Err(ResourceError::bad_request(format!(
                "Relationship {edge_id} is a conditional grant: it changes with the condition of {}",
                e.other(&me).reference()
            )));
        }
        Ok(e)
    }

    /// Relationship `edge_id` when it is one of this object's through this property.
    async fn mine(&self, edge_id: &str) -> Result<Edge, ResourceError> {
        let me = self.me();
        edge(self.repo, edge_id)
            .await
            .map_err(ResourceError::from)?
            .filter(|e| e.first == me || e.second == me)
            .ok_or_else(|| self.not_found(edge_id))
    }

    fn notify(&self, edges: &[Edge]) {
        if let Some(events) = self.events {
            events.extend(Event::edges(&self.schema.resource, self.id, edges));
        }
    }

    /// One relationship of this object, as a reference object.
    async fn one(
        &self,
        edge_id: &str,
        expand: &Expand,
        internal: bool,
    ) -> Result<ResourceResponse, ResourceError> {
        let me = self.me();
        let e = self.mine(edge_id).await?;
        let mut r = e.reference_from(&me);
        expand_ref(self.graph, self.repo, &mut r, expand, internal).await?;
        Ok(to_response(&e.id, &e.rev, r))
    }

    /// Replaces one relationship's `_refProperties` (and `_ref`, which must stay in this
    /// property's collections) with what `build` makes of its reference object.
    async fn update(
        &self,
        edge_id: &str,
        rev: Option<&str>,
        build: impl Fn(&Value) -> Result<Map<String, Value>, ResourceError>,
    ) -> Result<(), ResourceError> {
        let me = self.me();
        let rel = self
            .schema
            .relation(self.property)
            .ok_or_else(|| self.not_found(edge_id))?;
        let e = self.edge(edge_id).await?;
        if let Some(rev) = rev.filter(|r| *r != e.rev) {
            return Err(ResourceError::new(
                412,
                format!(
                    "Revision {rev} does not match the current revision of relationship {edge_id}"
                ),
            ));
        }
        let wanted = build(&e.reference_from(&me))?;
        let mut next = e.clone();
        if let Some(reference) = wanted.get("_ref").and_then(Value::as_str) {
            if reference != e.other(&me).reference() {
                let (collection, id) = rel.target(reference).ok_or_else(|| {
                    ResourceError::bad_request(format!(
                        "The reference '{reference}' is not in a resourceCollection of '{}'",
                        self.property
                    ))
                })?;
                if rel.validate
                    && self
                        .repo
                        .read(collection, id)
                        .await
                        .map_err(ResourceError::from)?
                        .is_none()
                {
                    return Err(ResourceError::bad_request(format!(
                        "The referenced relationship '{reference}', does not exist"
                    )));
                }
                let other = End::new(collection, id, rel.reverse.as_deref());
                if next.first == me {
                    next.second = other;
                } else {
                    next.first = other;
                }
            }
        }
        let mut props = wanted
            .get("_refProperties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        props.remove("_id");
        props.remove("_rev");
        check_ref_properties(rel, self.property, &props)?;
        next.properties = props;
        let unique = super::store::unique_fields();
        self.repo
            .update(
                EDGES,
                edge_id,
                Some(&e.rev),
                next.content(),
                WriteOptions {
                    unique: &unique,
                    also: &[],
                },
            )
            .await
            .map_err(|err| match err {
                crate::repo::RepoError::RevisionMismatch { .. } if rev.is_none() => {
                    ResourceError::unavailable("The relationship is being changed; try again")
                }
                crate::repo::RepoError::NotFound { .. } => self.not_found(edge_id),
                err => edge_error(&err, &me.reference()).unwrap_or_else(|| err.into()),
            })?;
        self.notify(&[e, next]);
        Ok(())
    }

    async fn query(
        &self,
        req: &Request,
        q: &QueryParams,
        expand: &Expand,
        internal: bool,
    ) -> Result<Response, ResourceError> {
        if matches!(q.kind, crate::crest::QueryKind::Expression(_)) {
            return Err(ResourceError::bad_request("_queryExpression not supported"));
        }
        let f = filter::of_listing_query(&q.kind, "Relationships")?;
        let me = self.me();
        let edges = edges_of(self.repo, &me)
            .await
            .map_err(ResourceError::from)?;
        let mut refs = Vec::with_capacity(edges.len());
        for e in &edges {
            let mut r = e.reference_from(&me);
            expand_ref(self.graph, self.repo, &mut r, expand, internal).await?;
            if f.matches(&r) {
                refs.push(r);
            }
        }
        if !q.sort_keys.is_empty() {
            refs.sort_by(|a, b| {
                for k in &q.sort_keys {
                    let o = cmp_json(k.field.resolve(a), k.field.resolve(b));
                    let o = if k.ascending { o } else { o.reverse() };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
        }
        let total = refs.len();
        let start = match &q.cookie {
            Some(c) => c.parse::<usize>().map_err(|_| {
                ResourceError::bad_request("The paged results cookie is not valid for this query")
            })?,
            None => q.offset,
        };
        let page: Vec<Value> = refs.into_iter().skip(start).collect();
        let (page, cookie) = if q.page_size > 0 && page.len() > q.page_size {
            let next = start + q.page_size;
            (
                page.into_iter().take(q.page_size).collect(),
                Some(next.to_string()),
            )
        } else {
            (page, None)
        };
        let _ = req;
        let results = page
            .into_iter()
            .map(|r| {
                let id = r
                    .pointer("/_refProperties/_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let rev = r
                    .pointer("/_refProperties/_rev")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                to_response(&id, &rev, r).to_json()
            })
            .collect();
        Ok(Response::Query(QueryResponse {
            results,
            cookie,
            policy: q.count_policy,
            total: (q.count_policy == CountPolicy::Exact).then_some(total as u64),
        }))
    }
}

/// A reference object as a resource: `_id`/`_rev` are the edge's, as IDM answers on the
/// relationship endpoints (not the referenced object's).
fn to_response(id: &str, rev: &str, r: Value) -> ResourceResponse {
    let mut content = match r {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    content.remove("_id");
    content.remove("_rev");
    ResourceResponse::new(id, Some(rev.to_owned()), content)
}

/// The referenced objects' fields a sub-collection request names: anything in `_fields`
/// that is not a `_ref…` field or `_id`/`_rev`.
fn expand_of(raw: &[String]) -> Expand {
    let mut fields = Vec::new();
    for e in raw.iter().flat_map(|f| f.split(',')) {
        let e = e.trim().trim_start_matches('/');
        if e.is_empty() || e.starts_with("_ref") || e == "_id" || e == "_rev" {
            continue;
        }
        if e == "*" {
            return Expand::All;
        }
        fields.push(JsonPointer::parse(&format!("/{e}")));
    }
    if fields.is_empty() {
        Expand::None
    } else {
        Expand::Fields(fields)
    }
}

/// Orders JSON values: missing/null first, then booleans, numbers, strings, the rest by text.
fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) if rank(a) == 4 && rank(b) == 4 => x.to_string().cmp(&y.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}
