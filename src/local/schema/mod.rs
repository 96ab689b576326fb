//! `/openidm/schema/managed/…`: IDM's schema service over `managed.json`.
//!
//! * `GET schema/managed/<type>` — the type's `schema` object with `_id` and
//!   `resourceCollection` (`managed/<type>`); `GET schema/managed?_queryFilter=…` every
//!   type's.
//! * With `Accept-API-Version: resource=2.0` (IDM's "API V2 only"; other versions are a
//!   400 naming it): `GET`, `PUT` (create or replace) and `DELETE`
//!   `schema/managed/<type>/properties/<property>`. `_rev` of a property is the revision of
//!   its definition; `If-Match: <rev>` and `If-None-Match: *` are honoured, `If-Match: *`
//!   creates or replaces as a plain `PUT` does.
//! * A write changes `managed.json` through [`config::edit_document`]: under the conf
//!   write lock (concurrent writes never lose an update), validated like any write of
//!   `managed.json` (a 400 with every problem, nothing written), written atomically and
//!   live at once.
//! * A relationship's `resourceCollection[].reverseProperty` creates the reverse side on
//!   the target type; deleting either side of a reverse relationship deletes both, and the
//!   edges stored for them (see [`edit`]). Replacing a relationship by one with other
//!   targets or another reverse side (or by a plain property) deletes its edges too;
//!   changing only its other settings (title, `validate`, the UI query) keeps them.

mod edit;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::config;
use crate::crest::{
    filter, Operation, QueryResponse, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::managed::relationships::store;
use crate::repo::{Repo, RepoError};
use crate::state::{Gateway, MANAGED_CONFIG};

pub use edit::{insert as insert_property, property, type_schema, Expect};

pub struct SchemaHandler {
    pub gw: Arc<Gateway>,
    pub repo: Arc<dyn Repo>,
}

/// The resource version the property endpoints need.
const PROPERTY_API_MAJOR: &str = "2";

#[async_trait::async_trait]
impl RequestHandler for SchemaHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let segments: Vec<&str> = rest.iter().map(String::as_str).collect();
        match (segments.as_slice(), &req.op) {
            (["managed"], Operation::Query(q)) => {
                let f = filter::of_listing_query(&q.kind, "Schemas")?;
                let doc = self.live_doc()?;
                let results = types(&doc)
                    .filter_map(|name| schema_of(&doc, name))
                    .map(|r| r.to_json())
                    .filter(|v| f.matches(v))
                    .collect();
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            (["managed", type_name], Operation::Read { .. }) => {
                let doc = self.live_doc()?;
                schema_of(&doc, type_name)
                    .map(Response::Resource)
                    .ok_or_else(|| no_type(type_name))
            }
            (["managed", type_name, "properties", prop], op) => {
                require_v2(req)?;
                self.property_op(req, op, type_name, prop).await
            }
            // `PUT` + `If-None-Match: *`: the property is the last segment.
            (["managed", type_name, "properties"], Operation::Create { new_id: Some(prop) }) => {
                require_v2(req)?;
                self.put(req, type_name, prop, Expect::Absent).await
            }
            ([] | ["managed", ..], _) => Err(req.not_supported()),
            _ => Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            ))),
        }
    }
}

impl SchemaHandler {
    async fn property_op(
        &self,
        req: &Request,
        op: &Operation,
        type_name: &str,
        prop: &str,
    ) -> Result<Response, ResourceError> {
        match op {
            Operation::Read { .. } => {
                let doc = self.live_doc()?;
                if type_schema(&doc, type_name).is_none() {
                    return Err(no_type(type_name));
                }
                let def = property(&doc, type_name, prop).ok_or_else(|| {
                    ResourceError::not_found(format!(
                        "Property {prop} of managed/{type_name} does not exist"
                    ))
                })?;
                Ok(Response::Resource(answer(prop, def.clone())))
            }
            Operation::Update { rev, .. } => {
                let expect = rev.clone().map(Expect::Rev).unwrap_or(Expect::Any);
                self.put(req, type_name, prop, expect).await
            }
            Operation::Delete { rev } => self.delete(type_name, prop, rev.clone()).await,
            _ => Err(req.not_supported()),
        }
    }

    async fn put(
        &self,
        req: &Request,
        type_name: &str,
        prop: &str,
        expect: Expect,
    ) -> Result<Response, ResourceError> {
        let def = req.body_object()?.clone();
        let (t, p) = (type_name.to_owned(), prop.to_owned());
        let written = config::edit_document(&self.gw, MANAGED_CONFIG, move |doc| {
            edit::put_property(doc, &t, &p, def, &expect)
        })
        .await?;
        for (collection, property) in &written.relations {
            delete_edges(self.repo.as_ref(), collection, property).await?;
        }
        let resource = answer(prop, written.definition);
        Ok(if written.created {
            Response::Created(resource)
        } else {
            Response::Resource(resource)
        })
    }

    /// Deletes the property, then the edges stored for it: once the schema no longer
    /// declares the relationship no new edge can be made, so none is left behind.
    async fn delete(
        &self,
        type_name: &str,
        prop: &str,
        rev: Option<String>,
    ) -> Result<Response, ResourceError> {
        let (t, p) = (type_name.to_owned(), prop.to_owned());
        let deleted = config::edit_document(&self.gw, MANAGED_CONFIG, move |doc| {
            edit::delete_property(doc, &t, &p, rev.as_deref())
        })
        .await?;
        for (collection, property) in &deleted.relations {
            delete_edges(self.repo.as_ref(), collection, property).await?;
        }
        Ok(Response::Resource(answer(prop, deleted.definition)))
    }

    /// `managed.json` as live (its last loaded version).
    fn live_doc(&self) -> Result<Map<String, Value>, ResourceError> {
        let live = self.gw.live();
        match live.conf.files.get(MANAGED_CONFIG).map(|f| &f.raw) {
            Some(Some(Value::Object(doc))) => Ok(doc.clone()),
            None => Ok(Map::new()),
            Some(_) => Err(ResourceError::internal(
                "managed.json cannot be read: it is not a JSON object",
            )),
        }
    }
}

/// Deletes every edge stored for `collection`'s `property`.
async fn delete_edges(
    repo: &dyn Repo,
    collection: &str,
    property: &str,
) -> Result<(), ResourceError> {
    let edges = store::edges_of_property(repo, collection, property)
        .await
        .map_err(ResourceError::from)?;
    let ops = edges.iter().map(store::Edge::delete_op).collect();
    for result in repo.batch(ops).await {
        match result {
            Ok(_) | Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(ResourceError::from(e)),
        }
    }
    Ok(())
}

/// The type names of `managed.json`.
fn types(doc: &Map<String, Value>) -> impl Iterator<Item = &str> {
    doc.get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("name").and_then(Value::as_str))
}

/// A type's schema as IDM's schema service answers it.
fn schema_of(doc: &Map<String, Value>, type_name: &str) -> Option<ResourceResponse> {
    let resource = format!("managed/{type_name}");
    let mut schema = match type_schema(doc, type_name)? {
        Value::Object(s) => s.clone(),
        _ => Map::new(),
    };
    schema.insert("resourceCollection".into(), json!(resource));
    Some(ResourceResponse::new(resource, None, schema))
}

fn answer(prop: &str, def: Map<String, Value>) -> ResourceResponse {
    let rev = edit::property_rev(&def);
    ResourceResponse::new(prop, Some(rev), def)
}

fn no_type(type_name: &str) -> ResourceError {
    ResourceError::not_found(format!("Managed object type {type_name} is not defined"))
}

/// IDM serves the property endpoints in version 2 of the resource only.
fn require_v2(req: &Request) -> Result<(), ResourceError> {
    let major = req
        .resource_version
        .as_deref()
        .and_then(|v| v.split('.').next());
    if major == Some(PROPERTY_API_MAJOR) {
        return Ok(());
    }
    Err(ResourceError::bad_request(format!(
        "openidm/{} requires the header Accept-API-Version: resource=2.0 (asked: {})",
        req.path_string(),
        req.resource_version.as_deref().unwrap_or("none")
    )))
}
