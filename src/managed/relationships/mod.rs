//! IDM's relationship model: relationship properties of managed objects (and internal
//! users and roles) stored as edges ([`store`]), written with their object ([`write`]),
//! returned when asked ([`read`]) and served as sub-collections ([`collection`]).
//!
//! A relationship is one edge whatever side wrote it, so both sides of a reverse
//! relationship (user `roles` ↔ role `members`) always agree. Deleting an object deletes
//! its edges in the same transaction.

pub mod collection;
pub mod read;
pub mod schema;
pub mod store;
pub mod write;

use std::sync::{Arc, LazyLock};

use super::schema::{ManagedSchema, ObjectSchema};
use crate::crest::ResourceError;
use crate::repo::{Repo, WriteOp};

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
            c => self
                .managed
                .types
                .get(c.strip_prefix("managed/")?)
                .cloned(),
        }
    }
}

/// The deletes of every edge of object `id` (both sides), to commit with its delete.
pub async fn edges_of_object(
    repo: &dyn Repo,
    schema: &ObjectSchema,
    id: &str,
) -> Result<Vec<WriteOp>, ResourceError> {
    let end = store::End::new(&schema.resource, id, None);
    Ok(store::edges_of(repo, &end)
        .await
        .map_err(ResourceError::from)?
        .iter()
        .map(store::Edge::delete_op)
        .collect())
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
