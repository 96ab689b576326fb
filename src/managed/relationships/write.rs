//! Writing relationships: what a create, PUT or PATCH of an object asks of its relationship
//! properties ([`Plan`]), turned into edge writes committed with the object.

use serde_json::{Map, Value};

use super::store::{edges_of, Edge, End, EDGES};
use super::Graph;
use crate::crest::patch::{PatchOp, PatchOperation};
use crate::crest::ResourceError;
use crate::managed::schema::ObjectSchema;
use crate::repo::{Repo, RepoError, WriteOp, WriteOptions};

use super::schema::Relation;

/// One requested change of a relationship property.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The property's whole value (create, PUT, patch `replace`, `add` on a singleton).
    Set(Value),
    /// References added (patch `add` on `/roles/-` or `/roles`).
    Add(Value),
    /// References removed (patch `remove` with a value).
    Remove(Value),
}

/// The relationship changes of one write, by property, in request order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan(pub Vec<(String, Change)>);

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Takes the relationship properties out of a create or PUT body: each one present is set
/// (an absent one is left as it is).
pub fn take_from_body(schema: &ObjectSchema, content: &mut Map<String, Value>) -> Plan {
    let mut plan = Plan::default();
    for (name, _) in schema.relations() {
        if let Some(v) = content.remove(name) {
            plan.0.push((name.to_owned(), Change::Set(v)));
        }
    }
    plan
}

/// Splits a patch into the operations on plain fields and the relationship changes.
pub fn split_patch(
    schema: &ObjectSchema,
    ops: Vec<PatchOperation>,
) -> Result<(Vec<PatchOperation>, Plan), ResourceError> {
    let mut plain = Vec::new();
    let mut plan = Plan::default();
    for op in ops {
        let tokens = op.field.tokens();
        let Some(rel) = tokens.first().and_then(|t| schema.relation(t)) else {
            plain.push(op);
            continue;
        };
        let name = tokens[0].clone();
        let whole = tokens.len() == 1;
        let append = tokens.len() == 2 && rel.array;
        let value = op.value.clone().unwrap_or(Value::Null);
        let change = match op.op {
            PatchOp::Add if whole && !rel.array => Change::Set(value),
            PatchOp::Add if whole || append => Change::Add(value),
            PatchOp::Replace if whole => Change::Set(value),
            PatchOp::Remove if whole && op.value.is_none() => Change::Set(Value::Null),
            PatchOp::Remove if whole || append => Change::Remove(value),
            _ => {
                return Err(ResourceError::bad_request(format!(
                    "The relationship field '{name}' is changed with add, remove (by value) or replace of '/{name}', or add to '/{name}/-'"
                )))
            }
        };
        plan.0.push((name, change));
    }
    Ok((plain, plan))
}

/// A reference given by a client.
struct GivenRef {
    reference: String,
    collection: String,
    id: String,
    /// `_refProperties._id`, naming an existing edge.
    edge_id: Option<String>,
    /// `_refProperties` without `_id`/`_rev`, when given.
    properties: Option<Map<String, Value>>,
}

fn invalid(v: &Value) -> ResourceError {
    ResourceError::bad_request(format!("'{v}' is invalid as a relationship reference"))
}

fn parse_ref(rel: &Relation, prop: &str, v: &Value) -> Result<GivenRef, ResourceError> {
    let obj = v.as_object().ok_or_else(|| invalid(v))?;
    let reference = obj
        .get("_ref")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(v))?;
    let (collection, raw_id) = rel.target(reference).ok_or_else(|| {
        ResourceError::bad_request(format!(
            "The reference '{reference}' is not in a resourceCollection of '{prop}' ({})",
            rel.collections
                .iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let id = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map_err(|_| invalid(v))?
        .into_owned();
    let (edge_id, properties) = match obj.get("_refProperties") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(p)) => {
            let mut p = p.clone();
            let edge_id = p.remove("_id").and_then(|i| i.as_str().map(str::to_owned));
            p.remove("_rev");
            if rel.is_conditional()
                && p.get(super::store::GRANT_TYPE).and_then(Value::as_str)
                    == Some(super::store::CONDITIONAL)
            {
                return Err(ResourceError::bad_request(format!(
                    "A conditional grant of '{prop}' is made by the condition of the referenced object, not by a client"
                )));
            }
            check_ref_properties(rel, prop, &p)?;
            (edge_id, Some(p))
        }
        Some(_) => {
            return Err(ResourceError::bad_request(format!(
                "_refProperties of '{prop}' must be an object"
            )))
        }
    };
    Ok(GivenRef {
        reference: format!("{collection}/{id}"),
        collection: collection.to_owned(),
        id,
        edge_id,
        properties,
    })
}

/// Checks the declared `_refProperties` types.
pub fn check_ref_properties(
    rel: &Relation,
    prop: &str,
    given: &Map<String, Value>,
) -> Result<(), ResourceError> {
    for p in &rel.ref_properties {
        if let Some(v) = given.get(&p.name) {
            if !v.is_null() && !p.types.iter().any(|t| t.accepts(v)) {
                let names: Vec<&str> = p.types.iter().map(|t| t.as_str()).collect();
                return Err(ResourceError::bad_request(format!(
                    "_refProperties/{} of '{prop}' must be of type {}",
                    p.name,
                    names.join(" or ")
                )));
            }
        }
    }
    if let Some(c) = given.get(super::temporal::GRANT_KEY) {
        super::temporal::check(
            c,
            &format!("_refProperties/temporalConstraints of '{prop}'"),
            true,
        )?;
    }
    Ok(())
}

/// The references a value lists: null none, an object one, an array (for array
/// properties) its elements.
fn listed(rel: &Relation, v: Value) -> Result<Vec<Value>, ResourceError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) if rel.array => Ok(items),
        v @ Value::Object(_) => Ok(vec![v]),
        v => Err(invalid(&v)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Stored,
    Changed,
    New,
}

/// The edge writes of a plan, and the edges they create, change or delete (whose ends
/// are notified once the writes are committed).
#[derive(Debug, Default)]
pub struct EdgeWrites {
    pub ops: Vec<WriteOp>,
    pub touched: Vec<Edge>,
}

impl EdgeWrites {
    pub fn extend(&mut self, other: EdgeWrites) {
        self.ops.extend(other.ops);
        self.touched.extend(other.touched);
    }
}

/// The edge writes that carry out `plan` for object `id`, from the edges stored now.
/// Targets of `validate` relationships are checked to exist. Conditional grants are the
/// role conditions' own: a client's plan neither sees nor removes them.
pub async fn edge_ops(
    graph: &Graph,
    repo: &dyn Repo,
    schema: &ObjectSchema,
    id: &str,
    plan: &Plan,
) -> Result<EdgeWrites, ResourceError> {
    let mut touched = Vec::new();
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    let mut creates = Vec::new();
    let mut props: Vec<&str> = Vec::new();
    for (p, _) in &plan.0 {
        if !props.contains(&p.as_str()) {
            props.push(p);
        }
    }
    for prop in props {
        let Some(rel) = schema.relation(prop) else {
            continue;
        };
        let me = End::new(&schema.resource, id, Some(prop));
        let stored = edges_of(repo, &me).await.map_err(ResourceError::from)?;
        let mut slots: Vec<(Edge, State)> = stored
            .into_iter()
            .filter(|e| !(rel.is_conditional() && e.is_conditional()))
            .map(|e| (e, State::Stored))
            .collect();
        let mut dropped: Vec<(Edge, State)> = Vec::new();
        let find = |slots: &[(Edge, State)], g: &GivenRef| {
            slots.iter().position(|(e, _)| match &g.edge_id {
                Some(eid) => &e.id == eid,
                None => e.other(&me).reference() == g.reference,
            })
        };
        for (_, change) in plan.0.iter().filter(|(p, _)| p == prop) {
            match change.clone() {
                Change::Set(v) => {
                    let mut pool = std::mem::take(&mut slots);
                    for r in listed(rel, v)? {
                        let g = parse_ref(rel, prop, &r)?;
                        if find(&slots, &g).is_some() {
                            return Err(ResourceError::new(
                                412,
                                "Duplicate relationship specified in relationship collection.",
                            ));
                        }
                        match find(&pool, &g) {
                            Some(pos) => {
                                let (mut e, mut state) = pool.remove(pos);
                                if let Some(p) = g.properties.filter(|p| *p != e.properties) {
                                    e.properties = p;
                                    state = state.max_changed();
                                }
                                slots.push((e, state));
                            }
                            None => slots.push((new_edge(graph, rel, &me, g), State::New)),
                        }
                    }
                    dropped.append(&mut pool);
                }
                Change::Add(v) => {
                    for r in listed(rel, v)? {
                        let g = parse_ref(rel, prop, &r)?;
                        if !rel.array {
                            dropped.append(&mut slots);
                        } else if find(&slots, &g).is_some() {
                            return Err(already_assigned(&me, &g.reference));
                        }
                        slots.push((new_edge(graph, rel, &me, g), State::New));
                    }
                }
                Change::Remove(v) => {
                    for r in listed(rel, v)? {
                        let g = parse_ref(rel, prop, &r)?;
                        if let Some(pos) = find(&slots, &g) {
                            dropped.push(slots.remove(pos));
                        }
                    }
                }
            }
        }
        for (e, state) in dropped {
            if state != State::New {
                deletes.push(e.delete_op());
                touched.push(e);
            }
        }
        for (e, state) in slots {
            match state {
                State::Stored => {}
                // Rewritten under its revision, keeping its id: a concurrent delete
                // fails the write rather than being undone.
                State::Changed => {
                    deletes.push(e.delete_op());
                    puts.push(e.create_op());
                    touched.push(e);
                }
                State::New => {
                    check_target(graph, repo, rel, &e, &deletes).await?;
                    creates.push(e.create_op());
                    touched.push(e);
                }
            }
        }
    }
    deletes.append(&mut puts);
    deletes.append(&mut creates);
    Ok(EdgeWrites {
        ops: deletes,
        touched,
    })
}

impl State {
    fn max_changed(self) -> State {
        match self {
            State::New => State::New,
            _ => State::Changed,
        }
    }
}

fn already_assigned(me: &End, reference: &str) -> ResourceError {
    ResourceError::new(
        412,
        format!(
            "Managed object '{}' has already been assigned relationship '{reference}'.",
            me.reference()
        ),
    )
}

/// A new edge from `me` to the referenced object.
fn new_edge(graph: &Graph, rel: &Relation, me: &End, g: GivenRef) -> Edge {
    let second_single = rel.reverse.as_deref().is_some_and(|rev| {
        graph
            .schema_of(&g.collection)
            .and_then(|s| s.relation(rev).map(|r| !r.array))
            .unwrap_or(false)
    });
    Edge {
        id: crate::managed::relationships::store::new_edge_id(),
        rev: String::new(),
        first: me.clone(),
        second: End::new(&g.collection, &g.id, rel.reverse.as_deref()),
        properties: g.properties.unwrap_or_default(),
        first_single: !rel.array,
        second_single,
    }
}

/// A new edge's target: exists (when `validate`), and its singleton reverse property (a
/// user's `manager`, added through `reports`) is free unless this write frees it.
async fn check_target(
    _graph: &Graph,
    repo: &dyn Repo,
    rel: &Relation,
    e: &Edge,
    deletes: &[WriteOp],
) -> Result<(), ResourceError> {
    let target = &e.second;
    if rel.validate
        && repo
            .read(&target.collection, &target.id)
            .await
            .map_err(ResourceError::from)?
            .is_none()
    {
        return Err(ResourceError::bad_request(format!(
            "The referenced relationship '{}', does not exist",
            target.reference()
        )));
    }
    if e.second_single {
        let taken = edges_of(repo, target).await.map_err(ResourceError::from)?;
        let freed = |x: &Edge| {
            deletes
                .iter()
                .any(|d| matches!(d, WriteOp::Delete { id, .. } if *id == x.id))
        };
        if taken.iter().any(|x| !freed(x)) {
            return Err(not_available(target));
        }
    }
    Ok(())
}

fn not_available(target: &End) -> ResourceError {
    ResourceError::bad_request(format!(
        "Field '{}' of managed object '{}' is not null, and thus not available for assignment.",
        target.property.as_deref().unwrap_or(""),
        target.reference()
    ))
}

/// How a failed edge write is answered: `None` when it lost a race with another write of
/// the same edges (retry with fresh edges).
pub fn edge_error(e: &RepoError, me: &str) -> Option<ResourceError> {
    match e {
        RepoError::Unique { resource, property } if resource == EDGES => {
            Some(if property.ends_with("one") {
                ResourceError::bad_request(format!(
                    "A singleton relationship of '{me}' or of the object it references is not null, and thus not available for assignment."
                ))
            } else {
                ResourceError::new(
                    412,
                    format!("Managed object '{me}' has already been assigned this relationship."),
                )
            })
        }
        RepoError::NotFound { resource, .. } | RepoError::RevisionMismatch { resource, .. }
            if resource == EDGES =>
        {
            None
        }
        e => Some(e.clone().into()),
    }
}

/// Commits edge writes on their own, in one transaction.
pub async fn commit(repo: &dyn Repo, mut ops: Vec<WriteOp>) -> Result<(), RepoError> {
    if ops.is_empty() {
        return Ok(());
    }
    let rest = ops.split_off(1);
    match ops.pop() {
        Some(WriteOp::Create {
            resource,
            id,
            content,
            unique,
        }) => repo
            .create(
                &resource,
                &id,
                content,
                WriteOptions {
                    unique: &unique,
                    also: &rest,
                },
            )
            .await
            .map(drop),
        Some(WriteOp::Put {
            resource,
            id,
            content,
        }) => {
            let unique = super::store::unique_fields();
            repo.update(
                &resource,
                &id,
                None,
                content,
                WriteOptions {
                    unique: &unique,
                    also: &rest,
                },
            )
            .await
            .map(drop)
        }
        Some(WriteOp::Delete { resource, id, rev }) => repo
            .delete_with(&resource, &id, rev.as_deref(), &rest)
            .await
            .map(drop),
        None => Ok(()),
    }
}
