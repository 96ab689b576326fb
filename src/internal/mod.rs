//! Internal users and roles (`/openidm/internal/user`, `/openidm/internal/role`) in the
//! store, the first-start seeding of `openidm-admin` and `anonymous`, and the caller
//! [`StoreAuthenticator`] that checks credentials against them.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::auth::{password, Authenticator};
use crate::config::Secret;
use crate::crest::{
    Caller, Operation, Request, RequestHandler, ResourceError, Response, ROLE_ADMIN,
    ROLE_AUTHORIZED, ROLE_REG,
};
use crate::managed::schema::{parse_schema, ObjectSchema};
use crate::managed::ObjectSet;
use crate::repo::{Repo, WriteOptions};

pub const USERS: &str = "internal/user";
pub const ROLES: &str = "internal/role";
pub const ADMIN_USER: &str = "openidm-admin";
pub const ANONYMOUS_USER: &str = "anonymous";

/// Schema of `internal/user`: a hashed private password and role references.
pub fn user_schema() -> ObjectSchema {
    parse_schema(
        USERS,
        &json!({"properties": {
            "password": {"type": "string", "scope": "private", "secureHash": {"algorithm": "ARGON2"}},
            "authzRoles": {"type": "array", "returnByDefault": true, "items": {
                "type": "relationship", "reverseRelationship": true,
                "reversePropertyName": "authzMembers", "validate": true,
                "resourceCollection": [{"path": ROLES, "label": "Internal Role",
                    "query": {"queryFilter": "true", "fields": ["name"]}}]}}
        }}),
        "internal/user",
    )
    .unwrap_or_else(|p| unreachable!("built-in schema: {p:?}"))
}

/// Schema of `internal/role`.
pub fn role_schema() -> ObjectSchema {
    parse_schema(
        ROLES,
        &json!({"properties": {
            "name": {"type": "string", "searchable": true},
            "description": {"type": ["string", "null"]},
            "authzMembers": {"type": "array", "returnByDefault": false, "items": {
                "type": "relationship", "reverseRelationship": true,
                "reversePropertyName": "authzRoles", "validate": true,
                "resourceCollection": [
                    {"path": USERS, "label": "Internal User",
                     "query": {"queryFilter": "true", "fields": ["_id"]}},
                    {"path": "managed/user", "label": "User",
                     "query": {"queryFilter": "true", "fields": ["userName"]}}]}}
        }}),
        "internal/role",
    )
    .unwrap_or_else(|p| unreachable!("built-in schema: {p:?}"))
}

pub struct InternalHandler {
    repo: Arc<dyn Repo>,
    users: ObjectSchema,
    roles: ObjectSchema,
    /// Called after any write to internal users (drops cached credentials).
    on_user_change: Arc<dyn Fn() + Send + Sync>,
}

impl InternalHandler {
    pub fn new(repo: Arc<dyn Repo>, on_user_change: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            repo,
            users: user_schema(),
            roles: role_schema(),
            on_user_change,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for InternalHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let (set, id) = match rest {
            [set] => (set.as_str(), None),
            [set, id] => (set.as_str(), Some(id.as_str())),
            _ => ("", None),
        };
        let schema = match set {
            "user" => &self.users,
            "role" => &self.roles,
            _ => {
                return Err(ResourceError::not_found(format!(
                    "Resource 'openidm/{}' not found",
                    req.path_string()
                )))
            }
        };
        let result = ObjectSet {
            engine: None,
            repo: self.repo.as_ref(),
            schema,
            hook: None,
            crypto: None,
            graph: None,
        }
        .handle(req, id)
        .await;
        let writes = !matches!(req.op, Operation::Read { .. } | Operation::Query(_));
        if set == "user" && writes {
            (self.on_user_change)();
        }
        result
    }
}

/// Checks callers against `internal/user`.
pub struct StoreAuthenticator {
    repo: Arc<dyn Repo>,
}

impl StoreAuthenticator {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self { repo }
    }
}

/// Role ids of an internal user (`authzRoles: [{"_ref": "internal/role/x"}]`).
fn roles_of(content: &Map<String, Value>) -> Vec<String> {
    content
        .get("authzRoles")
        .and_then(Value::as_array)
        .map(|roles| {
            roles
                .iter()
                .filter_map(|r| r.get("_ref").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Authenticator for StoreAuthenticator {
    async fn authenticate(&self, user: &str, password_text: &str) -> Option<Arc<Caller>> {
        let obj = match self.repo.read(USERS, user).await {
            Ok(Some(obj)) => obj,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read internal users");
                return None;
            }
        };
        let stored = obj.content.get("password")?.clone();
        if !password::verify_async(stored, password_text.to_owned()).await {
            return None;
        }
        Some(Arc::new(Caller::new(user, USERS, roles_of(&obj.content))))
    }
}

/// First start: the roles, `openidm-admin` and `anonymous`. Later starts keep the stored
/// users, except that an explicitly configured admin password replaces a stored one that
/// differs (so rotating the secret in config or env takes effect).
pub async fn seed(
    repo: &dyn Repo,
    admin_password: &Secret,
    admin_password_explicit: bool,
) -> Result<(), String> {
    let roles = [
        ("openidm-admin", "Administrative access"),
        ("openidm-authorized", "Basic minimum user"),
        ("openidm-reg", "Anonymous access"),
    ];
    for (name, description) in roles {
        if repo
            .read(ROLES, name)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let content = json!({"name": name, "description": description});
            create(repo, ROLES, name, content).await?;
        }
    }
    let admin_hash = || -> Result<Value, String> {
        let p = admin_password.expose();
        if p.starts_with("$argon2") {
            password::from_phc(p)
        } else {
            password::hash(p)
        }
    };
    match repo
        .read(USERS, ADMIN_USER)
        .await
        .map_err(|e| e.to_string())?
    {
        None => {
            let content = json!({
                "password": admin_hash()?,
                "authzRoles": [{"_ref": ROLE_ADMIN}, {"_ref": ROLE_AUTHORIZED}],
            });
            create(repo, USERS, ADMIN_USER, content).await?;
        }
        Some(existing) if admin_password_explicit => {
            let p = admin_password.expose();
            let stored = existing
                .content
                .get("password")
                .cloned()
                .unwrap_or(Value::Null);
            let same = if p.starts_with("$argon2") {
                password::from_phc(p).ok().as_ref() == Some(&stored)
            } else {
                password::verify(&stored, p)
            };
            if !same {
                let mut content = existing.content.clone();
                content.insert("password".into(), admin_hash()?);
                repo.update(
                    USERS,
                    ADMIN_USER,
                    Some(&existing.rev),
                    content,
                    WriteOptions::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
                tracing::info!("openidm-admin password replaced by the configured one");
            }
        }
        Some(_) => {}
    }
    if repo
        .read(USERS, ANONYMOUS_USER)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let content = json!({
            "password": password::hash("anonymous")?,
            "authzRoles": [{"_ref": ROLE_REG}],
        });
        create(repo, USERS, ANONYMOUS_USER, content).await?;
    }
    Ok(())
}

async fn create(repo: &dyn Repo, resource: &str, id: &str, content: Value) -> Result<(), String> {
    let Value::Object(content) = content else {
        return Err("seed content must be an object".into());
    };
    match repo
        .create(resource, id, content, WriteOptions::default())
        .await
    {
        Ok(_) | Err(crate::repo::RepoError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(format!("cannot create {resource}/{id}: {e}")),
    }
}
