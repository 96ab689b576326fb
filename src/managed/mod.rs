//! `/openidm/managed/<type>[/<id>]`: managed objects of the types `conf/managed.json`
//! declares, stored in the [`Repo`]. The types are read from the live snapshot at each
//! request, so a changed `managed.json` applies at once; searchable properties get store
//! indexes the first time a type (or a new version of it) is used.

pub mod objects;
pub mod policy;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::crest::filter::JsonPointer;
use crate::crest::{Operation, Request, RequestHandler, ResourceError, Response};
use crate::repo::Repo;

pub use objects::ObjectSet;
pub use schema::{parse_managed, ManagedSchema, ObjectSchema};

/// The live managed types.
pub type SchemaSource = Arc<dyn Fn() -> Arc<ManagedSchema> + Send + Sync>;

/// What a committed write did to one managed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One committed write of a managed object, as handed to a [`ChangeHook`].
/// `before`/`after` are the content as answered to the caller (so `_fields` and private
/// properties apply); `before` is known for deletes only.
pub struct Change<'a> {
    /// `managed/user`.
    pub resource: &'a str,
    pub id: &'a str,
    pub kind: ChangeKind,
    pub before: Option<&'a Map<String, Value>>,
    pub after: Option<&'a Map<String, Value>>,
    /// The request that made the write (its caller tells who wrote).
    pub request: &'a Request,
}

/// Told of every committed write of a managed object (implicit sync). Called after the
/// store has the write and before the caller gets the answer: it must not block and
/// cannot fail the write.
pub trait ChangeHook: Send + Sync {
    fn on_change(&self, change: &Change<'_>);
}

pub struct ManagedHandler {
    repo: Arc<dyn Repo>,
    schema: SchemaSource,
    hook: Option<Arc<dyn ChangeHook>>,
    /// Searchable properties last indexed, by resource (read on every request).
    indexed: std::sync::RwLock<HashMap<String, Vec<JsonPointer>>>,
    /// Serialises index changes.
    indexing: tokio::sync::Mutex<()>,
}

impl ManagedHandler {
    pub fn new(repo: Arc<dyn Repo>, schema: SchemaSource) -> Self {
        Self {
            repo,
            schema,
            hook: None,
            indexed: Default::default(),
            indexing: Default::default(),
        }
    }

    /// Tells `hook` of every committed write.
    pub fn with_hook(mut self, hook: Arc<dyn ChangeHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Creates the indexes of `schema` if they are not the ones last made.
    async fn ensure_indexes(&self, schema: &ObjectSchema) -> Result<(), ResourceError> {
        let wanted = schema.searchable();
        let current = |indexed: &std::sync::RwLock<HashMap<String, Vec<JsonPointer>>>| {
            indexed
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&schema.resource)
                == Some(&wanted)
        };
        if current(&self.indexed) {
            return Ok(());
        }
        let _one_at_a_time = self.indexing.lock().await;
        if current(&self.indexed) {
            return Ok(());
        }
        self.repo
            .set_indexes(&schema.resource, &wanted)
            .await
            .map_err(|e| {
                tracing::error!(resource = %schema.resource, error = %e, "cannot create indexes");
                ResourceError::internal("The store failed to prepare the object type")
            })?;
        self.indexed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(schema.resource.clone(), wanted);
        Ok(())
    }

    /// Indexes every declared type now (at start-up), instead of on first use.
    pub async fn index_all(&self) {
        let types = (self.schema)();
        for schema in types.types.values() {
            let _ = self.ensure_indexes(schema).await;
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ManagedHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let types = (self.schema)();
        let (type_name, id) = match rest {
            [t] => (t, None),
            [t, id] => (t, Some(id.as_str())),
            _ => {
                return Err(ResourceError::not_found(format!(
                    "Resource 'openidm/{}' not found",
                    req.path_string()
                )))
            }
        };
        let schema = types.types.get(type_name.as_str()).ok_or_else(|| {
            ResourceError::not_found(format!(
                "Managed object type '{type_name}' is not defined in managed.json"
            ))
        })?;
        self.ensure_indexes(schema).await?;
        let answer = ObjectSet {
            repo: self.repo.as_ref(),
            schema,
        }
        .handle(req, id)
        .await?;
        if let Some(hook) = &self.hook {
            notify(hook.as_ref(), &schema.resource, req, &answer);
        }
        Ok(answer)
    }
}

/// Tells `hook` of the writes `answer` (a successful answer to `req`) reports.
pub fn notify(hook: &dyn ChangeHook, resource: &str, req: &Request, answer: &Response) {
    let one = |kind: ChangeKind, id: &str, content: &Map<String, Value>| {
        let (before, after) = match kind {
            ChangeKind::Delete => (Some(content), None),
            _ => (None, Some(content)),
        };
        hook.on_change(&Change {
            resource,
            id,
            kind,
            before,
            after,
            request: req,
        });
    };
    match (&req.op, answer) {
        (_, Response::Created(r)) => one(ChangeKind::Create, &r.id, &r.content),
        (Operation::Update { .. } | Operation::Patch { .. }, Response::Resource(r)) => {
            one(ChangeKind::Update, &r.id, &r.content)
        }
        (Operation::Delete { .. }, Response::Resource(r)) => {
            one(ChangeKind::Delete, &r.id, &r.content)
        }
        // Patch by query: the patched objects.
        (Operation::Action { .. }, Response::Action(Some(Value::Array(patched)))) => {
            for obj in patched {
                if let (Some(id), Value::Object(content)) =
                    (obj.get("_id").and_then(Value::as_str), obj)
                {
                    one(ChangeKind::Update, id, content);
                }
            }
        }
        _ => {}
    }
}
