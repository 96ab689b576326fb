//! IDM's relationship model: relationship properties of managed objects (and internal
//! users and roles) stored as edges ([`store`]), written with their object ([`write`]),
//! returned when asked ([`read`]) and served as sub-collections ([`collection`]).
//!
//! A relationship is one edge whatever side wrote it, so both sides of a reverse
//! relationship (user `roles` ↔ role `members`) always agree. Deleting an object deletes
//! its edges in the same transaction.

pub mod collection;
pub mod conditional;
pub mod derived;
pub mod notify;
mod object;
pub mod read;
pub mod schema;
pub mod store;
pub mod temporal;
pub mod write;

use std::sync::{Arc, LazyLock};

use super::schema::{ManagedSchema, ObjectSchema};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::ResourceError;
use crate::repo::{Repo, RELATIONSHIP_FIELD};

static INTERNAL_USER: LazyLock<Arc<ObjectSchema>> =
    LazyLock::new(|| Arc::new(crate::internal::user_schema()));
static INTERNAL_ROLE: LazyLock<Arc<ObjectSchema>> =
    LazyLock::new(|| Arc::new(crate::internal::role_schema()));

/// Every object type a relationship may reach: the live managed types and the internal
/// users and roles.
pub struct Graph {
    managed: Arc<ManagedSchema>,
}

impl Graph {
    pub fn new(managed: Arc<ManagedSchema>) -> Graph {
        Graph { managed }
    }

    /// The schema of `managed/<type>`, `internal/user` or `internal/role`.
    pub fn schema_of(&self, collection: &str) -> Option<Arc<ObjectSchema>> {
        match collection {
            crate::internal::USERS => Some(INTERNAL_USER.clone()),
            crate::internal::ROLES => Some(INTERNAL_ROLE.clone()),
            c => self.managed.types.get(c.strip_prefix("managed/")?).cloned(),
        }
    }
}

/// The deletes of every edge of object `id` (both sides), to commit with its delete.
pub async fn edges_of_object(
    repo: &dyn Repo,
    schema: &ObjectSchema,
    id: &str,
) -> Result<write::EdgeWrites, ResourceError> {
    let end = store::End::new(&schema.resource, id, None);
    let touched = store::edges_of(repo, &end)
        .await
        .map_err(ResourceError::from)?;
    Ok(write::EdgeWrites {
        ops: touched.iter().map(store::Edge::delete_op).collect(),
        touched,
    })
}

/// Rewrites the tests of relationship fields in a filter (`/roles/_refResourceId eq "r1"`,
/// `/manager/_ref eq "managed/user/bjensen"`, `/roles/_refProperties/_grantType eq "…"`)
/// into tests the store answers from the edges ([`crate::repo::RELATIONSHIP_FIELD`]).
pub fn rewrite_filter(schema: &ObjectSchema, f: QueryFilter) -> Result<QueryFilter, ResourceError> {
    Ok(match f {
        QueryFilter::And(fs) => QueryFilter::And(
            fs.into_iter()
                .map(|f| rewrite_filter(schema, f))
                .collect::<Result<_, _>>()?,
        ),
        QueryFilter::Or(fs) => QueryFilter::Or(
            fs.into_iter()
                .map(|f| rewrite_filter(schema, f))
                .collect::<Result<_, _>>()?,
        ),
        QueryFilter::Not(f) => QueryFilter::Not(Box::new(rewrite_filter(schema, *f)?)),
        QueryFilter::Present(p) => match edge_field(schema, &p, true)? {
            Some(fields) => QueryFilter::Present(fields.into_iter().next().unwrap_or(p)),
            None => QueryFilter::Present(p),
        },
        QueryFilter::Compare { field, op, value } => match edge_field(schema, &field, false)? {
            None => QueryFilter::Compare { field, op, value },
            Some(fields) if fields.len() == 1 => QueryFilter::Compare {
                field: fields.into_iter().next().unwrap_or(field),
                op,
                value,
            },
            // `_ref`: collection and id, compared for equality.
            Some(fields) => {
                let text = match (&value, op) {
                    (FilterValue::String(s), CompareOp::Eq) => s.clone(),
                    _ => {
                        return Err(ResourceError::bad_request(format!(
                            "'{field}' is only compared with eq and a reference like \"managed/role/<id>\""
                        )))
                    }
                };
                let (coll, id) = text.rsplit_once('/').unwrap_or(("", &text));
                let mut fields = fields.into_iter();
                let (Some(c), Some(i)) = (fields.next(), fields.next()) else {
                    return Err(ResourceError::internal("relationship field rewrite"));
                };
                QueryFilter::And(vec![
                    QueryFilter::Compare {
                        field: c,
                        op,
                        value: FilterValue::String(coll.to_owned()),
                    },
                    QueryFilter::Compare {
                        field: i,
                        op,
                        value: FilterValue::String(id.to_owned()),
                    },
                ])
            }
        },
        QueryFilter::In { field, values } => match edge_field(schema, &field, false)? {
            Some(fields) if fields.len() == 1 => QueryFilter::In {
                field: fields.into_iter().next().unwrap_or(field),
                values,
            },
            Some(_) => {
                return Err(ResourceError::bad_request(format!(
                    "'{field}' cannot be used with in"
                )))
            }
            None => QueryFilter::In { field, values },
        },
        f => f,
    })
}

/// The store fields of a relationship field pointer (two for `_ref`: collection, id);
/// `None` when `p` is not a relationship field.
fn edge_field(
    schema: &ObjectSchema,
    p: &JsonPointer,
    presence: bool,
) -> Result<Option<Vec<JsonPointer>>, ResourceError> {
    let tokens = p.tokens();
    let Some(prop) = tokens.first().filter(|t| schema.relation(t).is_some()) else {
        return Ok(None);
    };
    let at = |part: &str, rest: &[String]| {
        let mut t = vec![
            RELATIONSHIP_FIELD.to_owned(),
            schema.resource.clone(),
            prop.clone(),
            part.to_owned(),
        ];
        t.extend(rest.iter().cloned());
        JsonPointer(t)
    };
    let rest: Vec<&str> = tokens[1..].iter().map(String::as_str).collect();
    Ok(Some(match rest.as_slice() {
        [] if presence => vec![at("ResourceId", &[])],
        ["_refResourceId"] => vec![at("ResourceId", &[])],
        ["_refResourceCollection"] => vec![at("ResourceCollection", &[])],
        ["_ref"] => vec![at("ResourceCollection", &[]), at("ResourceId", &[])],
        ["_refProperties", "_id"] => vec![at("_id", &[])],
        ["_refProperties", _, ..] => vec![at("properties", &tokens[2..])],
        _ => {
            return Err(ResourceError::bad_request(format!(
                "The relationship field '{p}' is queried by /{prop}/_ref, /{prop}/_refResourceId, /{prop}/_refResourceCollection or /{prop}/_refProperties/…"
            )))
        }
    }))
}

/// Makes sure the edges' store indexes exist (idempotent, cheap after the first call).
pub async fn ensure_indexes(
    repo: &dyn Repo,
    done: &tokio::sync::OnceCell<()>,
) -> Result<(), ResourceError> {
    done.get_or_try_init(|| async {
        repo.set_indexes(store::EDGES, &store::indexes())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot index the relationships");
                ResourceError::internal("The store failed to prepare the relationships")
            })
    })
    .await
    .map(drop)
}
