//! `/openidm/policy`: IDM's policy service over the managed types and internal users.
//!
//! * `GET policy` — every resource's policies `{"_id": "", "resources": [...]}`;
//! * `GET policy/managed/<type>[/<id>|/*]` — `{"_id", "resource", "properties": [{"name",
//!   "policies": [{"policyId", "params", "policyRequirements"}], "policyRequirements",
//!   "conditionalPolicies", "fallbackPolicies"}]}`;
//! * `POST …?_action=validateObject` (body: the object) and `?_action=validateProperty`
//!   (body: `{"<property>": value, …}`) — 200 `{"result", "failedPolicyRequirements"}`.
//!
//! `internal/user` is served the same way with its built-in schema.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{check, check_properties, failed_requirements, OnValidate};
use crate::crest::{Operation, Request, RequestHandler, ResourceError, ResourceResponse, Response};
use crate::managed::schema::ObjectSchema;
use crate::managed::SchemaSource;
use crate::repo::Repo;

pub struct PolicyHandler {
    repo: Arc<dyn Repo>,
    managed: SchemaSource,
    internal_users: ObjectSchema,
}

impl PolicyHandler {
    pub fn new(repo: Arc<dyn Repo>, managed: SchemaSource) -> Self {
        Self {
            repo,
            managed,
            internal_users: crate::internal::user_schema(),
        }
    }
}

/// A resource's policies as IDM lists them.
fn describe(schema: &ObjectSchema, id: &str, resource: &str) -> Map<String, Value> {
    let properties: Vec<Value> = schema
        .properties
        .iter()
        .filter(|p| !p.policies.is_empty())
        .map(|p| {
            let mut requirements: Vec<&str> = Vec::new();
            for r in p.policies.iter().flat_map(|p| p.requirements()) {
                if !requirements.contains(r) {
                    requirements.push(r);
                }
            }
            json!({"name": p.name,
                   "policies": p.policies.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
                   "policyRequirements": requirements,
                   "conditionalPolicies": null, "fallbackPolicies": null})
        })
        .collect();
    let mut out = Map::new();
    out.insert("_id".into(), json!(id));
    out.insert("resource".into(), json!(resource));
    out.insert("properties".into(), Value::Array(properties));
    out
}

#[async_trait::async_trait]
impl RequestHandler for PolicyHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let managed = (self.managed)();
        if rest.is_empty() {
            if !matches!(req.op, Operation::Read { .. }) {
                return Err(req.not_supported());
            }
            let mut resources = vec![Value::Object(describe(
                &self.internal_users,
                "*",
                "internal/user/*",
            ))];
            for (name, schema) in &managed.types {
                let resource = format!("managed/{name}/*");
                resources.push(Value::Object(describe(schema, "*", &resource)));
            }
            let content = json!({"resources": resources});
            let content = content.as_object().cloned().unwrap_or_default();
            return Ok(Response::Resource(ResourceResponse::new("", None, content)));
        }
        let not_found = || {
            ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            ))
        };
        let (schema, id): (&ObjectSchema, Option<&str>) = match rest {
            [kind, name, tail @ ..] if tail.len() <= 1 => {
                let schema = match kind.as_str() {
                    "managed" => managed.types.get(name.as_str()).map(|s| s.as_ref()),
                    "internal" if name == "user" => Some(&self.internal_users),
                    _ => None,
                };
                (
                    schema.ok_or_else(not_found)?,
                    tail.first().map(String::as_str),
                )
            }
            _ => return Err(not_found()),
        };
        let resource = &schema.resource;
        let id = id.filter(|i| *i != "*");
        match &req.op {
            Operation::Read { .. } => {
                let shown_id = rest.last().map(String::as_str).unwrap_or_default();
                let path = rest.join("/");
                let path = if rest.len() == 2 {
                    format!("{path}/*")
                } else {
                    path
                };
                let shown_id = if rest.len() == 2 { "*" } else { shown_id };
                Ok(Response::Resource(ResourceResponse::new(
                    shown_id,
                    None,
                    describe(schema, shown_id, &path),
                )))
            }
            Operation::Action { name } => {
                let body = req.body_object()?;
                let stored = match id {
                    Some(id) => self
                        .repo
                        .read(resource, id)
                        .await
                        .map_err(ResourceError::from)?
                        .map(|o| o.content),
                    None => None,
                };
                let env = OnValidate {
                    repo: self.repo.as_ref(),
                    resource,
                    id,
                    stored,
                };
                let failures = match name.as_str() {
                    "validateObject" => check(schema, id, body, &env).await,
                    "validateProperty" => check_properties(schema, body, &env).await,
                    other => {
                        return Err(ResourceError::bad_request(format!(
                            "Action '{other}' is not supported on resource 'openidm/{}'; use validateObject or validateProperty",
                            req.path_string()
                        )))
                    }
                };
                Ok(Response::Action(Some(json!({
                    "result": failures.is_empty(),
                    "failedPolicyRequirements": failed_requirements(&failures),
                }))))
            }
            _ => Err(req.not_supported()),
        }
    }
}
