//! `/openidm/managed/<type>[/<id>]`: managed objects of the types `conf/managed.json`
//! declares, stored in the [`Repo`]. The types are read from the live snapshot at each
//! request, so a changed `managed.json` applies at once; searchable properties get store
//! indexes the first time a type (or a new version of it) is used.

pub mod objects;
pub mod policy;
pub mod relationships;
pub mod schema;
pub mod triggers;

use std::collections::HashMap;
use std::sync::Arc;

use crate::crest::filter::JsonPointer;
use crate::crest::{Request, RequestHandler, ResourceError, Response};
use crate::crypto::Crypto;
use crate::events::ChangeHook;
use crate::repo::Repo;
use crate::script::ScriptEngine;

pub use objects::ObjectSet;
pub use schema::{parse_managed, ManagedSchema, ObjectSchema};

/// The live managed types.
pub type SchemaSource = Arc<dyn Fn() -> Arc<ManagedSchema> + Send + Sync>;

/// See [`ManagedHandler::with_relationship_watch`].
pub type RelationshipWatch = Arc<dyn Fn(&str, &str) + Send + Sync>;

pub struct ManagedHandler {
    repo: Arc<dyn Repo>,
    schema: SchemaSource,
    hook: Option<Arc<dyn ChangeHook>>,
    /// Told `(resource, id)` of an object whose relationship sub-collection was written
    /// (`managed/user/b1/authzRoles`): credential caches drop what they know of it.
    on_relationship_write: Option<RelationshipWatch>,
    /// Encrypts `encryption` properties.
    crypto: Option<Arc<Crypto>>,
    /// Runs the types' triggers.
    engine: Option<Arc<ScriptEngine>>,
    /// Searchable properties last indexed, by resource (read on every request).
    indexed: std::sync::RwLock<HashMap<String, Vec<JsonPointer>>>,
    /// Serialises index changes.
    indexing: tokio::sync::Mutex<()>,
    /// Set once the relationships' indexes exist.
    edges_indexed: tokio::sync::OnceCell<()>,
    /// The role conditions, read for conditional grants.
    conditions: Arc<relationships::conditional::Conditions>,
}

impl ManagedHandler {
    pub fn new(repo: Arc<dyn Repo>, schema: SchemaSource) -> Self {
        Self {
            repo,
            schema,
            hook: None,
            on_relationship_write: None,
            crypto: None,
            engine: None,
            indexed: Default::default(),
            indexing: Default::default(),
            edges_indexed: Default::default(),
            conditions: Default::default(),
        }
    }

    /// What relationship notifications need (owned: a long wave outlives the request).
    pub fn notifier(&self) -> Arc<relationships::notify::Notifier> {
        Arc::new(relationships::notify::Notifier {
            repo: self.repo.clone(),
            schema: self.schema.clone(),
            hook: self.hook.clone(),
            crypto: self.crypto.clone(),
            engine: self.engine.clone(),
            conditions: self.conditions.clone(),
        })
    }

    /// Tells `hook` of every committed write.
    pub fn with_hook(mut self, hook: Arc<dyn ChangeHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Tells `watch` of every write through a relationship sub-collection.
    pub fn with_relationship_watch(mut self, watch: RelationshipWatch) -> Self {
        self.on_relationship_write = Some(watch);
        self
    }

    /// Encrypts the properties declaring `encryption` with `crypto`'s keys.
    pub fn with_crypto(mut self, crypto: Arc<Crypto>) -> Self {
        self.crypto = Some(crypto);
        self
    }

    /// Runs `managed.json` triggers on `engine`.
    pub fn with_engine(mut self, engine: Arc<ScriptEngine>) -> Self {
        self.engine = Some(engine);
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

    /// An answer made before the write's notifications ran: the derived properties (and
    /// revision) the notifications stored since, so the caller sees its own write's effect.
    async fn refreshed(&self, schema: &ObjectSchema, r: &mut crate::crest::ResourceResponse) {
        if schema.derived().next().is_none() {
            return;
        }
        let Ok(Some(obj)) = self.repo.read(&schema.resource, &r.id).await else {
            return;
        };
        if r.rev.as_deref() == Some(obj.rev.as_str()) {
            return;
        }
        for (name, _) in schema.derived() {
            if r.content.contains_key(name) {
                let v = obj
                    .content
                    .get(name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                r.content.insert(name.to_owned(), v);
            }
        }
        r.rev = Some(obj.rev);
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
        let (type_name, id, sub) = match rest {
            [t] => (t, None, None),
            [t, id] => (t, Some(id.as_str()), None),
            [t, id, prop] => (t, Some(id.as_str()), Some((prop.as_str(), None))),
            [t, id, prop, edge] => (
                t,
                Some(id.as_str()),
                Some((prop.as_str(), Some(edge.as_str()))),
            ),
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
        relationships::ensure_indexes(self.repo.as_ref(), &self.edges_indexed).await?;
        let graph = relationships::Graph::new(types.clone());
        let events = relationships::notify::Events::default();
        let priors = self
            .hook
            .as_ref()
            .filter(|h| h.wants_before())
            .map(|_| crate::events::Priors::default());
        let answer = if let (Some(id), Some((property, edge))) = (id, sub) {
            relationships::collection::Collection {
                graph: &graph,
                repo: self.repo.as_ref(),
                schema,
                id,
                property,
                events: Some(&events),
            }
            .handle(req, edge)
            .await
        } else {
            ObjectSet {
                engine: self.engine.as_deref(),
                repo: self.repo.as_ref(),
                schema,
                hook: self.hook.as_deref(),
                crypto: self.crypto.as_deref(),
                graph: Some(&graph),
                conditions: Some(&self.conditions),
                events: Some(&events),
                priors: priors.as_ref(),
            }
            .handle(req, id)
            .await
        };
        // Committed writes notify even when the request failed later (a patch by query
        // stopped half-way).
        let events = events.take();
        let notified = !events.is_empty();
        self.notifier().run(events).await;
        let mut answer = answer?;
        if sub.is_some() {
            let writes = !matches!(
                req.op,
                crate::crest::Operation::Read { .. } | crate::crest::Operation::Query(_)
            );
            if let (true, Some(watch), Some(id)) = (writes, &self.on_relationship_write, id) {
                watch(&schema.resource, id);
            }
            if let (true, Some(hook), Some(id), Some((property, _))) = (writes, &self.hook, id, sub)
            {
                let resource = format!("{}/{id}/{property}", schema.resource);
                crate::events::notify_relationship(hook.as_ref(), &resource, req, &answer);
            }
            return Ok(answer);
        }
        if notified {
            if let Response::Resource(r) | Response::Created(r) = &mut answer {
                self.refreshed(schema, r).await;
            }
        }
        if let Some(hook) = &self.hook {
            crate::events::notify_with_priors(
                hook.as_ref(),
                &schema.resource,
                req,
                &answer,
                priors.as_ref(),
            );
        }
        Ok(answer)
    }
}
