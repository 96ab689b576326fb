//! CRUDPAQ on one object set (a managed type or the internal users/roles) over the store:
//! ids, revisions, defaults, password hashing, policy validation, `_fields`, queries and
//! patch-by-query. Shared by `managed/*` and `internal/*`.

use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::policy;
use super::relationships::{self as rels, write::Plan, Graph};
use super::schema::ObjectSchema;
use crate::auth::password;
use crate::crest::fields::{self, FieldSpec};
use crate::crest::filter::{self, JsonPointer, QueryFilter};
use crate::crest::patch;
use crate::crest::query::CountPolicy;
use crate::crest::{
    Caller, Operation, QueryKind, QueryParams, QueryResponse, QueryStream, Request, ResourceError,
    ResourceResponse, Response,
};
use crate::crypto::{self, Crypto};
use crate::events::{ChangeHook, ChangeKind};
use crate::repo::{Repo, RepoError, RepoQuery, StoredObject, WriteOp, WriteOptions};
use crate::script::ScriptEngine;

use super::triggers::Write;

/// How often a read-modify-write without `If-Match` retries after losing a race.
pub(crate) const MAX_WRITE_RETRIES: usize = 16;
/// Objects patched per store page in a patch-by-query.
const PATCH_BY_QUERY_PAGE: usize = 100;
/// Longest accepted object id.
const MAX_ID_LEN: usize = 255;

/// One object set: its schema and the store.
pub struct ObjectSet<'a> {
    pub repo: &'a dyn Repo,
    pub schema: &'a ObjectSchema,
    /// Asked, before each write, for the writes to commit with it (implicit sync's queue
    /// rows: an acknowledged write never loses its push).
    pub hook: Option<&'a dyn ChangeHook>,
    /// The keys of `encryption` properties (None: a type declaring one cannot be written).
    pub crypto: Option<&'a Crypto>,
    /// Runs the type's triggers (None: a type declaring one cannot be used).
    pub engine: Option<&'a ScriptEngine>,
    /// The object types relationships reach (None: relationship properties are stored in
    /// the object as plain JSON).
    pub graph: Option<&'a Graph>,
    /// The role conditions (None: conditional grants are not made by this writer).
    pub conditions: Option<&'a rels::conditional::Conditions>,
    /// Collects what committed writes notify (None: nobody is notified).
    pub events: Option<&'a rels::notify::Events>,
    /// Keeps the objects updates and patches replace, as answered, for the change hooks
    /// (None: nobody wants them).
    pub priors: Option<&'a crate::events::Priors>,
}

impl ObjectSet<'_> {
    /// The hook's writes to commit with a `kind` write of `id` by `caller`.
    pub(crate) fn pending(&self, caller: &Caller, id: &str, kind: ChangeKind) -> Vec<WriteOp> {
        self.hook
            .map(|h| h.pending(&self.schema.resource, id, kind, caller))
            .unwrap_or_default()
    }

    /// Serves `req` on the collection (`id` None) or on one object.
    pub async fn handle(&self, req: &Request, id: Option<&str>) -> Result<Response, ResourceError> {
        match (&req.op, id) {
            (Operation::Create { new_id }, None) => {
                let body_id = req
                    .body
                    .get("_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.create(req, new_id.clone().or(body_id)).await
            }
            (Operation::Query(q), None) => self.query(req, q).await,
            (Operation::Action { name }, None) if name == "patch" => self.patch_by_query(req).await,
            (Operation::Action { name }, _) => Err(ResourceError::bad_request(format!(
                "Action '{name}' is not supported on resource 'openidm/{}'",
                req.path_string()
            ))),
            (Operation::Read { if_none_match }, Some(id)) => {
                let obj = self.read_existing(id).await?;
                if if_none_match.as_deref() == Some(obj.rev.as_str()) {
                    return Ok(Response::NotModified { rev: obj.rev });
                }
                self.answer(req, obj, true).await.map(Response::Resource)
            }
            (Operation::Update { rev, upsert }, Some(id)) => {
                self.update(req, id, rev.as_deref(), *upsert).await
            }
            (Operation::Patch { rev }, Some(id)) => {
                let ops = self.patch_ops(&req.body)?;
                let (ops, plan) = match self.graph {
                    Some(_) => rels::write::split_patch(self.schema, ops)?,
                    None => (ops, Plan::default()),
                };
                let obj = if ops.is_empty() && !plan.is_empty() {
                    self.patch_edges(id, rev.as_deref(), &plan).await?
                } else {
                    self.patch_one(req, id, rev.as_deref(), &ops, &plan).await?
                };
                self.answer(req, obj, false).await.map(Response::Resource)
            }
            (Operation::Delete { rev }, Some(id)) => {
                if self.schema.hooks.on_delete.is_some() {
                    let existing = self.read_existing(id).await?;
                    if let Some(rev) = rev.as_deref().filter(|r| *r != existing.rev) {
                        return Err(self.rev_mismatch(id, rev));
                    }
                    self.before_delete(req, &existing).await?;
                }
                let obj = self.delete(req, id, rev.as_deref()).await?;
                self.after_write(req, Write::Delete, Some(&obj), None).await;
                Ok(Response::Resource(self.render(
                    obj,
                    &fields::of_request(req)?,
                    &req.caller,
                )))
            }
            _ => Err(req.not_supported()),
        }
    }

    pub(crate) async fn read_existing(&self, id: &str) -> Result<StoredObject, ResourceError> {
        self.repo
            .read(&self.schema.resource, id)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| self.not_found(id))
    }

    async fn create(&self, req: &Request, id: Option<String>) -> Result<Response, ResourceError> {
        let id = match id {
            Some(id) => {
                check_id(&id)?;
                id
            }
            None => crate::repo::new_object_id(),
        };
        let mut content = self.client_content(req)?;
        let plan = self.take_relationships(&mut content);
        for prop in &self.schema.properties {
            if let Some(default) = &prop.default {
                if !content.contains_key(&prop.name) {
                    content.insert(prop.name.clone(), default.clone());
                }
            }
            // Derived properties start empty; the create's notifications fill them.
            if prop.query_config.is_some() {
                content.insert(prop.name.clone(), Value::Array(Vec::new()));
            }
        }
        let content = self.before_write(req, &id, content, None).await?;
        let content = self.prepare(&id, content, None).await?;
        let unique = self.schema.unique();
        let mut attempt = 0;
        let obj = loop {
            attempt += 1;
            let mut also = self.pending(&req.caller, &id, ChangeKind::Create);
            let edges = self.edge_ops(&id, &plan, Some(&content)).await?;
            also.extend(edges.ops.iter().cloned());
            let created = self
                .repo
                .create(
                    &self.schema.resource,
                    &id,
                    content.clone(),
                    WriteOptions {
                        unique: &unique,
                        also: &also,
                    },
                )
                .await;
            match created {
                Ok(obj) => {
                    self.committed(&id, &edges.touched, None, Some(&obj.content));
                    break obj;
                }
                Err(RepoError::AlreadyExists { resource, .. })
                    if resource == self.schema.resource =>
                {
                    return Err(ResourceError::new(
                        412,
                        format!(
                            "The resource with ID '{id}' could not be created because there is already another resource with the same ID"
                        ),
                    ))
                }
                Err(e) => match self.edge_error(e, &id) {
                    Some(err) => return Err(err),
                    None if attempt < MAX_WRITE_RETRIES => continue,
                    None => return Err(self.contention(&id)),
                },
            }
        };
        self.after_write(req, Write::Create, None, Some(&obj)).await;
        self.answer(req, obj, false).await.map(Response::Created)
    }

    async fn update(
        &self,
        req: &Request,
        id: &str,
        rev: Option<&str>,
        upsert: bool,
    ) -> Result<Response, ResourceError> {
        check_id(id)?;
        let mut body = self.client_content(req)?;
        let plan = self.take_relationships(&mut body);
        for _ in 0..MAX_WRITE_RETRIES {
            // Private properties are never returned, so a read-modify-write PUT cannot
            // carry them: keep the stored ones the body does not mention.
            let written = self
                .rewrite(req, id, rev, &plan, |existing| {
                    // Nor derived properties, which clients never write.
                    let mut content = body.clone();
                    for (k, v) in &existing.content {
                        let kept = self.schema.is_private(k)
                            || self
                                .schema
                                .property(k)
                                .is_some_and(|p| p.query_config.is_some());
                        if kept && !content.contains_key(k) {
                            content.insert(k.clone(), v.clone());
                        }
                    }
                    Ok(content)
                })
                .await?;
            match written {
                Some(obj) => return self.answer(req, obj, false).await.map(Response::Resource),
                None if rev.is_some() || !upsert => return Err(self.not_found(id)),
                None => match self.create(req, Some(id.to_owned())).await {
                    Err(e) if e.code == 412 => continue, // created meanwhile: update it
                    other => return other,
                },
            }
        }
        Err(self.contention(id))
    }

    /// Read-modify-write of one object, atomic against concurrent writers: `build` makes
    /// the new content from the stored object. Without `rev` a lost race is retried; with
    /// `rev` a different stored revision is a 412. `None` when the object does not exist.
    pub(crate) async fn rewrite(
        &self,
        req: &Request,
        id: &str,
        rev: Option<&str>,
        plan: &Plan,
        build: impl Fn(&StoredObject) -> Result<Map<String, Value>, ResourceError>,
    ) -> Result<Option<StoredObject>, ResourceError> {
        let unique = self.schema.unique();
        for _ in 0..MAX_WRITE_RETRIES {
            let mut also = self.pending(&req.caller, id, ChangeKind::Update);
            let existing = self
                .repo
                .read(&self.schema.resource, id)
                .await
                .map_err(|e| self.store_error(e))?;
            let Some(existing) = existing else {
                return Ok(None);
            };
            if let Some(rev) = rev {
                if rev != existing.rev {
                    return Err(self.rev_mismatch(id, rev));
                }
            }
            let content = self
                .before_write(req, id, build(&existing)?, Some(&existing))
                .await?;
            let content = self.prepare(id, content, Some(&existing)).await?;
            let edges = self.edge_ops(id, plan, Some(&content)).await?;
            also.extend(edges.ops.iter().cloned());
            match self
                .repo
                .update(
                    &self.schema.resource,
                    id,
                    Some(&existing.rev),
                    content,
                    WriteOptions {
                        unique: &unique,
                        also: &also,
                    },
                )
                .await
            {
                Ok(obj) => {
                    self.committed(
                        id,
                        &edges.touched,
                        Some(&existing.content),
                        Some(&obj.content),
                    );
                    if let Some(priors) = self.priors {
                        let spec = fields::of_request(req).unwrap_or(fields::FieldSpec::All);
                        let before = self.render(existing.clone(), &spec, &req.caller);
                        priors.record(id, before.content);
                    }
                    self.after_write(req, Write::Update, Some(&existing), Some(&obj))
                        .await;
                    return Ok(Some(obj));
                }
                Err(RepoError::RevisionMismatch { resource, .. })
                    if rev.is_none() && resource == self.schema.resource =>
                {
                    continue
                }
                Err(RepoError::RevisionMismatch { resource, .. })
                    if resource == self.schema.resource =>
                {
                    return Err(self.rev_mismatch(id, rev.unwrap_or_default()))
                }
                Err(RepoError::NotFound { resource, .. }) if resource == self.schema.resource => {
                    return Ok(None)
                }
                Err(e) => match self.edge_error(e, id) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            }
        }
        Err(self.contention(id))
    }

    fn patch_ops(&self, body: &Value) -> Result<Vec<patch::PatchOperation>, ResourceError> {
        // A patch must not read a private property into a visible one, nor write a
        // computed one.
        if let Value::Array(ops) = body {
            for op in ops {
                if let Some(field) = op.get("field").and_then(Value::as_str) {
                    let ptr = JsonPointer::parse(field);
                    if let Some(first) = ptr.tokens().first().filter(|t| self.schema.is_virtual(t))
                    {
                        return Err(ResourceError::bad_request(format!(
                            "The virtual property '{first}' is computed and cannot be patched"
                        )));
                    }
                }
                if let Some(from) = op.get("from").and_then(Value::as_str) {
                    let ptr = JsonPointer::parse(from);
                    if ptr
                        .tokens()
                        .first()
                        .is_some_and(|t| self.schema.is_private(t))
                    {
                        return Err(ResourceError::bad_request(format!(
                            "The private property '{from}' cannot be copied or moved"
                        )));
                    }
                }
            }
        }
        patch::parse_patch(body)
    }

    /// Applies `ops` to one object, atomically with respect to concurrent writers.
    async fn patch_one(
        &self,
        req: &Request,
        id: &str,
        rev: Option<&str>,
        ops: &[patch::PatchOperation],
        plan: &Plan,
    ) -> Result<StoredObject, ResourceError> {
        self.rewrite(req, id, rev, plan, |existing| {
            let mut doc = Value::Object(existing.content.clone());
            patch::apply_patch(&mut doc, ops, false)?;
            match doc {
                Value::Object(content) => Ok(content),
                _ => Err(ResourceError::bad_request(
                    "The patched resource is not a JSON object",
                )),
            }
        })
        .await?
        .ok_or_else(|| self.not_found(id))
    }

    /// `POST …?_action=patch&_queryId=…|_queryFilter=…`: patches every match; answers the
    /// patched objects.
    async fn patch_by_query(&self, req: &Request) -> Result<Response, ResourceError> {
        let ops = self.patch_ops(&req.body)?;
        let (ops, plan) = match self.graph {
            Some(_) => rels::write::split_patch(self.schema, ops)?,
            None => (ops, Plan::default()),
        };
        let kind = match (req.param("_queryFilter"), req.param("_queryId")) {
            (Some(f), None) => QueryKind::Filter(f.to_owned()),
            (None, Some(q)) => QueryKind::Id(q.to_owned()),
            (Some(_), Some(_)) => {
                return Err(ResourceError::bad_request(
                    "The parameters _queryId and _queryFilter are mutually exclusive",
                ))
            }
            (None, None) => {
                return Err(ResourceError::bad_request(
                    "A patch by query needs _queryId or _queryFilter",
                ))
            }
        };
        let (filter, _) = self.filter_for(req, &kind)?;
        let spec = fields::of_request(req)?;
        let mut patched = Vec::new();
        let mut cookie: Option<String> = None;
        loop {
            let page = self
                .repo
                .query(
                    &self.schema.resource,
                    RepoQuery {
                        filter: &filter,
                        sort: &[],
                        page_size: PATCH_BY_QUERY_PAGE,
                        cookie: cookie.as_deref(),
                        offset: 0,
                        count: Default::default(),
                        ids_only: false,
                    },
                )
                .await
                .map_err(|e| self.store_error(e))?;
            for obj in page.results {
                match self.patch_one(req, &obj.id, None, &ops, &plan).await {
                    Ok(obj) => {
                        let _ = &spec;
                        patched.push(self.answer(req, obj, false).await?.to_json())
                    }
                    // Deleted since the page was read: nothing to patch.
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            match page.next_cookie {
                Some(c) => cookie = Some(c),
                None => break,
            }
        }
        Ok(Response::Action(Some(Value::Array(patched))))
    }

    async fn query(&self, req: &Request, q: &QueryParams) -> Result<Response, ResourceError> {
        let (filter, ids_only) = self.filter_for(req, &q.kind)?;
        for key in &q.sort_keys {
            self.check_queryable(&key.field)?;
        }
        let spec = if ids_only {
            fields::parse_fields(&["_id"])?
        } else {
            fields::of_request(req)?
        };
        let repo_query = RepoQuery {
            ids_only: asks_ids_only(&spec),
            ..RepoQuery::page(&filter, q)
        };
        let on_retrieve =
            req.param("executeOnRetrieve") == Some("true") && self.schema.has_retrieve_hooks();
        let relationships =
            self.graph.is_some() && !rels::read::requested(self.schema, &req.fields).is_empty();
        if req.streamed
            && !on_retrieve
            && !relationships
            && q.page_size == 0
            && q.cookie.is_none()
            && q.count_policy == CountPolicy::None
        {
            return self
                .query_streamed(repo_query, spec, req.caller.is_internal())
                .await;
        }
        let page = self
            .repo
            .query(&self.schema.resource, repo_query)
            .await
            .map_err(|e| self.store_error(e))?;
        let objects = if on_retrieve {
            self.retrieve(req, page.results, false).await?
        } else {
            page.results
        };
        let mut shown: Vec<ResourceResponse> = objects
            .into_iter()
            .map(|obj| self.render(obj, &spec, &req.caller))
            .collect();
        self.attach(req, &mut shown).await?;
        let results = shown.iter().map(ResourceResponse::to_json).collect();
        Ok(Response::Query(QueryResponse {
            results,
            cookie: page.next_cookie,
            policy: q.count_policy,
            total: page.total,
        }))
    }

    /// An unpaged query answered as the store reads it. The first object is awaited here,
    /// so a failure before any result (the time limit of a slow filter) is a plain error
    /// with its own status; a later one ends the stream.
    async fn query_streamed(
        &self,
        query: RepoQuery<'_>,
        spec: FieldSpec,
        internal: bool,
    ) -> Result<Response, ResourceError> {
        let mut objects = self
            .repo
            .query_stream(&self.schema.resource, query)
            .await
            .map_err(|e| self.store_error(e))?
            // Chained after the first object, it is polled again after an empty end.
            .fuse();
        let first = match objects.next().await {
            Some(Err(e)) => return Err(self.store_error(e)),
            first => first,
        };
        let schema = self.schema.clone();
        let results = futures_util::stream::iter(first)
            .chain(objects)
            .map(move |r| match r {
                Ok(obj) => Ok(render(&schema, obj, &spec, internal).to_json()),
                Err(e) => Err(ResourceError::from(e)),
            });
        Ok(Response::Stream(QueryStream::new(Box::pin(results))))
    }

    /// The filter of a query (and whether it asks for ids only).
    fn filter_for(
        &self,
        req: &Request,
        kind: &QueryKind,
    ) -> Result<(QueryFilter, bool), ResourceError> {
        match kind {
            QueryKind::Filter(text) => {
                let f = filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))?;
                let mut pointers = Vec::new();
                filter_fields(&f, &mut pointers);
                for p in pointers {
                    self.check_queryable(p)?;
                }
                match self.graph {
                    Some(_) => Ok((rels::rewrite_filter(self.schema, f)?, false)),
                    None => Ok((f, false)),
                }
            }
            QueryKind::Id(id) => match id.as_str() {
                "query-all-ids" => Ok((QueryFilter::True, true)),
                "query-all" => Ok((QueryFilter::True, false)),
                "for-userName" => {
                    let uid = req.required_param("uid")?;
                    Ok((
                        QueryFilter::Compare {
                            field: JsonPointer(vec!["userName".into()]),
                            op: filter::CompareOp::Eq,
                            value: filter::FilterValue::String(uid.to_owned()),
                        },
                        false,
                    ))
                }
                other => Err(ResourceError::bad_request(format!(
                    "The query id '{other}' is not supported on resource 'openidm/{}'; use query-all-ids, query-all, for-userName or _queryFilter",
                    req.path_string()
                ))),
            },
            QueryKind::Expression(_) => Err(ResourceError::not_supported(
                "_queryExpression (native queries) is not supported by this gateway; use _queryFilter",
            )),
        }
    }

    fn check_queryable(&self, field: &JsonPointer) -> Result<(), ResourceError> {
        match field.tokens().first() {
            Some(first) if first.starts_with('\0') => Err(ResourceError::bad_request(format!(
                "'{field}' is not a valid field"
            ))),
            Some(first) if self.schema.is_private(first) => Err(ResourceError::bad_request(
                format!("The private property '{first}' cannot be used in a query"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the schema's policies (on secrets in clear), then hashes and encrypts
    /// secrets given in clear (a value already hashed or encrypted is kept as is).
    async fn prepare(
        &self,
        id: &str,
        mut content: Map<String, Value>,
        existing: Option<&StoredObject>,
    ) -> Result<Map<String, Value>, ResourceError> {
        content.remove("_id");
        content.remove("_rev");
        let lookups = policy::OnWrite {
            repo: self.repo,
            stored: existing.map(|e| &e.content),
        };
        let failures = policy::check(self.schema, Some(id), &content, &lookups).await;
        if !failures.is_empty() {
            return Err(policy::policy_error(&failures));
        }
        for prop in &self.schema.properties {
            let Some(v) = content.get(&prop.name) else {
                continue;
            };
            if prop.conditional {
                rels::conditional::check(v, &prop.name)?;
            }
            if prop.temporal {
                rels::temporal::check(v, &prop.name, false)?;
            }
        }
        for prop in self.schema.properties.iter().filter(|p| p.hashed) {
            if let Some(Value::String(clear)) = content.get(&prop.name) {
                let hashed = password::hash_async(clear.clone())
                    .await
                    .map_err(ResourceError::internal)?;
                content.insert(prop.name.clone(), hashed);
            }
        }
        for prop in &self.schema.properties {
            let Some(encryption) = &prop.encrypted else {
                continue;
            };
            let Some(v) = content.get(&prop.name) else {
                continue;
            };
            if v.is_null() || crypto::is_encrypted(v) {
                continue;
            }
            let crypto = self.crypto.ok_or_else(|| {
                ResourceError::unavailable(format!(
                    "{} declares an encrypted property but encryption is not configured",
                    self.schema.resource
                ))
            })?;
            let sealed = crypto
                .encrypt_for(v, encryption.purpose.as_deref())
                .map_err(|e| {
                    tracing::error!(resource = %self.schema.resource, property = %prop.name, error = %e, "cannot encrypt");
                    ResourceError::internal("The value could not be encrypted")
                })?;
            content.insert(prop.name.clone(), sealed);
        }
        Ok(content)
    }

    /// One object after the retrieve triggers (`read`: `onRead` too).
    async fn retrieved(
        &self,
        req: &Request,
        obj: StoredObject,
        read: bool,
    ) -> Result<StoredObject, ResourceError> {
        let mut objects = self.retrieve(req, vec![obj], read).await?;
        objects
            .pop()
            .ok_or_else(|| ResourceError::internal("a trigger lost the object"))
    }

    /// The answer to a read or write of one object: retrieve triggers, then `render`.
    async fn answer(
        &self,
        req: &Request,
        obj: StoredObject,
        read: bool,
    ) -> Result<ResourceResponse, ResourceError> {
        let obj = self.retrieved(req, obj, read).await?;
        let mut resp = self.render(obj, &fields::of_request(req)?, &req.caller);
        self.attach(req, std::slice::from_mut(&mut resp)).await?;
        Ok(resp)
    }

    /// The body of a create or update: a JSON object, without `_id`, `_rev` and virtual
    /// properties (computed, never written by clients; dropped so a read object can be
    /// written back).
    fn client_content(&self, req: &Request) -> Result<Map<String, Value>, ResourceError> {
        let mut content = req.body_object()?.clone();
        content.remove("_id");
        content.remove("_rev");
        content.retain(|k, _| !self.schema.is_virtual(k));
        Ok(content)
    }

    /// The object as the caller sees it: private properties only for internal callers
    /// (as stored: hashes and envelopes), `_fields` applied.
    pub fn render(&self, obj: StoredObject, spec: &FieldSpec, caller: &Caller) -> ResourceResponse {
        render(self.schema, obj, spec, caller.is_internal())
    }

    fn not_found(&self, id: &str) -> ResourceError {
        ResourceError::not_found(format!("Object {id} not found in {}", self.schema.resource))
    }

    pub(crate) fn rev_mismatch(&self, id: &str, rev: &str) -> ResourceError {
        ResourceError::new(
            412,
            format!(
                "Revision {rev} does not match the current revision of {}/{id}",
                self.schema.resource
            ),
        )
    }

    pub(crate) fn contention(&self, id: &str) -> ResourceError {
        ResourceError::unavailable(format!(
            "{}/{id} is being changed by other requests; try again",
            self.schema.resource
        ))
    }

    pub(crate) fn store_error(&self, e: RepoError) -> ResourceError {
        match e {
            RepoError::Unique { property, .. } => {
                policy::policy_error(&[policy::unique_failure(self.schema, &property)])
            }
            e => e.into(),
        }
    }
}

/// An object as a client sees it: private properties dropped (kept, as stored, for an
/// `internal` caller), `_fields` applied.
pub(crate) fn render(
    schema: &ObjectSchema,
    obj: StoredObject,
    spec: &FieldSpec,
    internal: bool,
) -> ResourceResponse {
    let mut full = Map::with_capacity(obj.content.len() + 2);
    full.insert("_id".into(), Value::String(obj.id.clone()));
    full.insert("_rev".into(), Value::String(obj.rev.clone()));
    for (k, v) in obj.content {
        if internal || !schema.is_private(&k) {
            full.insert(k, v);
        }
    }
    let projected = fields::project(
        &full,
        spec,
        &|name| {
            if internal {
                schema.returned_by_default_internally(name)
            } else {
                schema.returned_by_default(name)
            }
        },
        &|name| schema.is_relationship(name),
    );
    ResourceResponse::new(obj.id, Some(obj.rev), projected)
}

/// Whether `_fields` names nothing but `_id`/`_rev` (then the store need not read bodies).
fn asks_ids_only(spec: &FieldSpec) -> bool {
    match spec {
        FieldSpec::Fields(selectors) => {
            !selectors.is_empty()
                && selectors.iter().all(|s| {
                    matches!(s, fields::FieldSelector::Pointer(p)
                        if p.tokens() == ["_id"] || p.tokens() == ["_rev"])
                })
        }
        FieldSpec::All => false,
    }
}

fn check_id(id: &str) -> Result<(), ResourceError> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || id.chars().any(char::is_control)
        || id == "."
        || id == ".."
    {
        return Err(ResourceError::bad_request(format!(
            "'{}' is not a valid object id",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Every field a filter reads.
fn filter_fields<'f>(f: &'f QueryFilter, out: &mut Vec<&'f JsonPointer>) {
    match f {
        QueryFilter::True | QueryFilter::False => {}
        QueryFilter::And(fs) | QueryFilter::Or(fs) => fs.iter().for_each(|f| filter_fields(f, out)),
        QueryFilter::Not(f) => filter_fields(f, out),
        QueryFilter::Present(p) => out.push(p),
        QueryFilter::Compare { field, .. } | QueryFilter::In { field, .. } => out.push(field),
    }
}
