//! The object store: JSON objects by resource (`managed/user`, `internal/user`, …) and id,
//! with a revision, queried by `_queryFilter` pushed down to SQL.
//!
//! [`Repo`] is what handlers see; [`sqlite::SqliteRepo`] is the embedded default,
//! [`postgres::PgRepo`] the same trait on PostgreSQL (`--store postgres://…`), without
//! touching handlers. `contract` holds the tests both run. SQL stays in
//! this module; handlers never see it. Errors are [`RepoError`]s: how a request is answered
//! when the store fails is the handlers' side's business (`crate::store_error`).
//!
//! Contract every implementation keeps:
//! * `rev` changes on every write, never repeats for an id (not across delete and
//!   re-create either) and is an opaque string to callers.
//! * Conditional writes (`rev: Some(..)`) are atomic: of two writers holding the same
//!   revision exactly one succeeds, the other gets [`RepoError::RevisionMismatch`].
//! * A write that returned `Ok` is durable (survives `kill -9` of the process).
//! * Unique properties are checked in the same transaction as the write.
//! * Queries never load a whole resource to filter it in memory.

pub mod postgres;
mod sql_common;
pub mod sqlite;
pub mod timed;

#[cfg(test)]
mod contract;

use serde_json::{Map, Value};

use crate::crest::filter::{JsonPointer, QueryFilter};
use crate::crest::query::{CountPolicy, SortKey};

/// How long a query may run when nothing else is configured (`gateway.json`
/// `queryTimeLimitSeconds`).
pub const DEFAULT_QUERY_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The resource holding relationship edges (`crate::managed::relationships::store`):
/// objects with `firstResourceCollection`, `firstResourceId`, `firstPropertyName`,
/// `secondResourceCollection`, `secondResourceId`, `secondPropertyName` and `properties`.
pub const RELATIONSHIPS: &str = "relationships";

/// First token of a filter field that is answered from the edges, not the object:
/// `[RELATIONSHIP_FIELD, <object's resource>, <property>, <part>, <sub-path>…]` where
/// `<part>` is `ResourceId` or `ResourceCollection` (of the other end), `_id` (the edge's
/// id) or `properties` (its `_refProperties`, followed by the path inside). Matches objects
/// with at least one such edge (`/roles/_refResourceId eq "r1"`). Never a property name
/// (clients cannot send a NUL in a field).
pub const RELATIONSHIP_FIELD: &str = "\u{0}relationship";

/// A new id for a stored object the gateway names itself (a managed object created without
/// an id, a link, a recon run, an audit event, a relationship edge): a time-ordered UUID
/// (RFC 9562 version 7). Clients treat ids as opaque, as with IDM's random (v4) ones; being
/// ordered by creation, new ids land at the end of every index that holds them (the
/// object's primary key, a link's ids), where random ones dirtied a different index page
/// per write: at a million objects that was most of the embedded store's disk writes.
pub fn new_object_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One stored object. `content` never holds `_id` or `_rev`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub id: String,
    pub rev: String,
    pub content: Map<String, Value>,
}

/// Options of a create or update.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions<'a> {
    /// Properties whose value must be unique within the resource (IDM's `unique` policy).
    /// Objects where the property is absent or null do not conflict.
    pub unique: &'a [JsonPointer],
    /// Other writes committed in the same transaction as this one (a durable record of
    /// what the write causes, such as implicit sync's queue rows): if one of them fails,
    /// nothing is written and the write fails with its error.
    pub also: &'a [WriteOp],
}

/// A query against one resource.
#[derive(Debug, Clone, Copy)]
pub struct RepoQuery<'a> {
    pub filter: &'a QueryFilter,
    /// Sort order; ties (and an empty list) are broken by `_id` ascending.
    pub sort: &'a [SortKey],
    /// Results per page; 0 means no paging (every match).
    pub page_size: usize,
    /// Opaque cookie from a previous page of the same query (keyset paging: stable while
    /// objects are inserted concurrently).
    pub cookie: Option<&'a str>,
    /// Results to skip (`_pagedResultsOffset`), when no cookie is given.
    pub offset: usize,
    pub count: CountPolicy,
    /// Only ids and revisions are wanted: results come back with empty `content` and the
    /// store does not read or parse the bodies (`_queryId=query-all-ids`, existence checks).
    pub ids_only: bool,
}

impl<'a> RepoQuery<'a> {
    /// Every match of `filter` in `sort` order: no paging, no count, whole objects.
    pub fn all(filter: &'a QueryFilter, sort: &'a [SortKey]) -> Self {
        RepoQuery {
            filter,
            sort,
            page_size: 0,
            cookie: None,
            offset: 0,
            count: CountPolicy::None,
            ids_only: false,
        }
    }

    /// The page a CREST query asks for (`_sortKeys`, `_pageSize`, `_pagedResultsCookie`,
    /// `_pagedResultsOffset`, `_totalPagedResultsPolicy`), whole objects.
    pub fn page(filter: &'a QueryFilter, q: &'a crate::crest::QueryParams) -> Self {
        RepoQuery {
            filter,
            sort: &q.sort_keys,
            page_size: q.page_size,
            cookie: q.cookie.as_deref(),
            offset: q.offset,
            count: q.count_policy,
            ids_only: false,
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoPage {
    pub results: Vec<StoredObject>,
    /// Cookie for the next page; `None` on the last page or when not paging.
    pub next_cookie: Option<String>,
    /// Total matches over all pages, when `CountPolicy::Exact` was asked.
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RepoError {
    #[error("Object {id} not found in {resource}")]
    NotFound { resource: String, id: String },
    #[error("Object {id} already exists in {resource}")]
    AlreadyExists { resource: String, id: String },
    #[error("Revision {expected} does not match the current revision of {resource}/{id}")]
    RevisionMismatch {
        resource: String,
        id: String,
        expected: String,
    },
    #[error("Value of {property} already used by another object in {resource}")]
    Unique { resource: String, property: String },
    #[error("The paged results cookie is not valid for this query")]
    BadCookie,
    #[error("Invalid query: {0}")]
    BadQuery(String),
    /// The query ran longer than the store's query time limit and was cancelled.
    #[error("The query did not complete within the query time limit of {}s and was cancelled; narrow the filter or page the results with _pageSize", .0.as_secs_f64())]
    TimeLimit(std::time::Duration),
    /// The object holds a value this store cannot keep (PostgreSQL: a string with
    /// U+0000). Nothing was written.
    #[error("The object cannot be stored: {0}")]
    Unstorable(String),
    #[error("Store failure: {0}")]
    Internal(String),
}

/// Objects of a streamed query ([`Repo::query_stream`]), as the store reads them; an error
/// ends the stream.
pub type ObjectStream = futures_util::stream::BoxStream<'static, Result<StoredObject, RepoError>>;

/// The store, as handlers see it. Every method may be called concurrently.
#[async_trait::async_trait]
pub trait Repo: Send + Sync + 'static {
    /// Creates `id`; [`RepoError::AlreadyExists`] if it exists.
    async fn create(
        &self,
        resource: &str,
        id: &str,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError>;

    async fn read(&self, resource: &str, id: &str) -> Result<Option<StoredObject>, RepoError>;

    /// Replaces `id`'s content. `rev: Some(r)` fails with [`RepoError::RevisionMismatch`]
    /// unless the current revision is `r`; [`RepoError::NotFound`] if `id` does not exist.
    async fn update(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError>;

    /// Deletes `id` and returns its last state; same revision rule as `update`.
    async fn delete(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
    ) -> Result<StoredObject, RepoError>;

    /// Like `delete`, with `also` committed in the same transaction ([`WriteOptions::also`]).
    /// The default deletes, then writes `also` (not atomically).
    async fn delete_with(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        also: &[WriteOp],
    ) -> Result<StoredObject, RepoError> {
        let deleted = self.delete(resource, id, rev).await?;
        for r in self.batch(also.to_vec()).await {
            r?;
        }
        Ok(deleted)
    }

    async fn query(&self, resource: &str, query: RepoQuery<'_>) -> Result<RepoPage, RepoError>;

    /// Every match of an unpaged query (`page_size` 0, no cookie, no count), streamed: an
    /// implementation reads ahead only a bounded number of objects, so memory does not grow
    /// with the result. Errors found before reading (a bad filter) are returned; later ones
    /// (the query time limit) end the stream. The default collects [`Repo::query`].
    async fn query_stream(
        &self,
        resource: &str,
        query: RepoQuery<'_>,
    ) -> Result<ObjectStream, RepoError> {
        let page = self.query(resource, query).await?;
        Ok(Box::pin(futures_util::stream::iter(
            page.results.into_iter().map(Ok),
        )))
    }

    /// Declares the searchable properties of a resource: the store keeps an index for each
    /// (creating missing ones, dropping ones no longer declared). Idempotent.
    async fn set_indexes(&self, resource: &str, fields: &[JsonPointer]) -> Result<(), RepoError>;

    /// Several independent writes; one result per op, in order, each as the single call
    /// would give it (`Create` → the created object, `Delete` → the deleted one). One op
    /// failing does not undo the others. Every op that returned `Ok` is durable, as for the
    /// single calls; an implementation may commit them together (the embedded store commits
    /// a batch in one transaction, one fsync). The default runs them one after the other.
    async fn batch(&self, ops: Vec<WriteOp>) -> Vec<Result<StoredObject, RepoError>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                WriteOp::Create {
                    resource,
                    id,
                    content,
                    unique,
                } => {
                    let opts = WriteOptions {
                        unique: &unique,
                        ..Default::default()
                    };
                    self.create(&resource, &id, content, opts).await
                }
                WriteOp::Put {
                    resource,
                    id,
                    content,
                } => match self
                    .update(&resource, &id, None, content.clone(), Default::default())
                    .await
                {
                    Err(RepoError::NotFound { .. }) => {
                        self.create(&resource, &id, content, Default::default())
                            .await
                    }
                    other => other,
                },
                WriteOp::Delete { resource, id, rev } => {
                    self.delete(&resource, &id, rev.as_deref()).await
                }
            });
        }
        out
    }
}

/// One write of [`Repo::batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Like [`Repo::create`], with these unique properties.
    Create {
        resource: String,
        id: String,
        content: Map<String, Value>,
        unique: Vec<JsonPointer>,
    },
    /// Creates `id`, or replaces its content whatever its revision.
    Put {
        resource: String,
        id: String,
        content: Map<String, Value>,
    },
    /// Like [`Repo::delete`].
    Delete {
        resource: String,
        id: String,
        rev: Option<String>,
    },
}
