//! Reading relationships: which relationship fields a request asks for (`_fields`), and
//! the reference objects (optionally expanded with the referenced objects' fields) added
//! to an object as it is returned.

use serde_json::Value;

use super::store::{edges_of, End};
use super::Graph;
use crate::crest::fields::{self, FieldSpec};
use crate::crest::filter::JsonPointer;
use crate::crest::{ResourceError, ResourceResponse};
use crate::managed::schema::ObjectSchema;
use crate::repo::Repo;

/// How much of the referenced objects to return.
#[derive(Debug, Clone, PartialEq)]
pub enum Expand {
    /// The references only.
    None,
    /// `roles/*`, `*_ref/*`: every default field of the referenced objects.
    All,
    /// `roles/name`, `roles/*/name`: these fields.
    Fields(Vec<JsonPointer>),
}

impl Expand {
    fn merge(&mut self, other: Expand) {
        *self = match (std::mem::replace(self, Expand::None), other) {
            (Expand::All, _) | (_, Expand::All) => Expand::All,
            (Expand::Fields(mut a), Expand::Fields(b)) => {
                a.extend(b);
                Expand::Fields(a)
            }
            (Expand::Fields(a), Expand::None) | (Expand::None, Expand::Fields(a)) => {
                Expand::Fields(a)
            }
            (Expand::None, Expand::None) => Expand::None,
        }
    }
}

/// The relationship fields a request's `_fields` selects.
pub fn requested(schema: &ObjectSchema, raw_fields: &[String]) -> Vec<(String, Expand)> {
    let mut out: Vec<(String, Expand)> = Vec::new();
    let mut want = |name: &str, expand: Expand| {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, e)) => e.merge(expand),
            None => out.push((name.to_owned(), expand)),
        };
    };
    let entries: Vec<&str> = raw_fields
        .iter()
        .flat_map(|f| f.split(','))
        .map(|e| e.trim().trim_start_matches('/'))
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        for (name, _) in schema.relations() {
            if schema.returned_by_default(name) {
                want(name, Expand::None);
            }
        }
        return out;
    }
    for entry in entries {
        let tokens = JsonPointer::parse(&format!("/{entry}")).0;
        match tokens
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["*"] => {
                for (name, _) in schema.relations() {
                    if schema.returned_by_default(name) {
                        want(name, Expand::None);
                    }
                }
            }
            ["*_ref"] | ["*_ref", "*"] => {
                let expand = if tokens.len() == 2 {
                    Expand::All
                } else {
                    Expand::None
                };
                for (name, _) in schema.relations() {
                    want(name, expand.clone());
                }
            }
            [first, rest @ ..] if schema.relation(first).is_some() => {
                let rest: Vec<&str> = match rest {
                    ["*", more @ ..] if !more.is_empty() => more.to_vec(),
                    r => r.to_vec(),
                };
                let expand = match rest.as_slice() {
                    [] => Expand::None,
                    ["*"] => Expand::All,
                    path => Expand::Fields(vec![JsonPointer(
                        path.iter().map(|s| (*s).to_owned()).collect(),
                    )]),
                };
                want(first, expand);
            }
            _ => {}
        }
    }
    out
}

/// The value of relationship field `name` of object `id`: a list of references (arrays),
/// or one reference or null.
pub async fn value_of(
    graph: &Graph,
    repo: &dyn Repo,
    schema: &ObjectSchema,
    id: &str,
    name: &str,
    expand: &Expand,
    internal: bool,
) -> Result<Value, ResourceError> {
    let Some(rel) = schema.relation(name) else {
        return Ok(Value::Null);
    };
    let me = End::new(&schema.resource, id, Some(name));
    let edges = edges_of(repo, &me).await.map_err(ResourceError::from)?;
    let mut refs = Vec::with_capacity(edges.len());
    for e in &edges {
        let mut r = e.reference_from(&me);
        if *expand != Expand::None {
            expand_ref(graph, repo, &mut r, expand, internal).await?;
        }
        refs.push(r);
    }
    Ok(if rel.array {
        Value::Array(refs)
    } else {
        refs.into_iter().next().unwrap_or(Value::Null)
    })
}

/// Adds the referenced object's `_id`, `_rev` and selected fields to reference `r`.
pub async fn expand_ref(
    graph: &Graph,
    repo: &dyn Repo,
    r: &mut Value,
    expand: &Expand,
    internal: bool,
) -> Result<(), ResourceError> {
    let text = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(collection), Some(id)) = (text("_refResourceCollection"), text("_refResourceId"))
    else {
        return Ok(());
    };
    let Some(target_schema) = graph.schema_of(&collection) else {
        return Ok(());
    };
    let Some(obj) = repo
        .read(&collection, &id)
        .await
        .map_err(ResourceError::from)?
    else {
        return Ok(());
    };
    let spec = match expand {
        Expand::None => return Ok(()),
        Expand::All => FieldSpec::All,
        Expand::Fields(ptrs) => FieldSpec::Fields(
            ptrs.iter()
                .cloned()
                .map(fields::FieldSelector::Pointer)
                .collect(),
        ),
    };
    let shown = crate::managed::objects::render(&target_schema, obj, &spec, internal);
    if let Value::Object(m) = r {
        m.insert("_id".into(), Value::String(shown.id.clone()));
        if let Some(rev) = &shown.rev {
            m.insert("_rev".into(), Value::String(rev.clone()));
        }
        for (k, v) in shown.content {
            if !k.starts_with("_ref") {
                m.insert(k, v);
            }
        }
    }
    Ok(())
}

/// Adds the `wanted` relationship fields to a rendered object.
pub async fn attach(
    graph: &Graph,
    repo: &dyn Repo,
    schema: &ObjectSchema,
    resp: &mut ResourceResponse,
    wanted: &[(String, Expand)],
    internal: bool,
) -> Result<(), ResourceError> {
    for (name, expand) in wanted {
        let v = value_of(graph, repo, schema, &resp.id, name, expand, internal).await?;
        resp.content.insert(name.clone(), v);
    }
    Ok(())
}
