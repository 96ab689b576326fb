//! Internal users and roles (`/openidm/internal/user`, `/openidm/internal/role`) in the
//! store, and the first-start seeding of `openidm-admin` and `anonymous` (the
//! `INTERNAL_USER` module of `crate::auth` checks credentials against them).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::auth::password;
use crate::config::Secret;
use crate::crest::{
    Operation, Request, RequestHandler, ResourceError, Response, ROLE_ADMIN, ROLE_AUTHORIZED,
    ROLE_REG,
};
use crate::managed::relationships::store::{Edge, End};
use crate::managed::relationships::{self as rels, Graph};
use crate::managed::schema::{parse_schema, ObjectSchema};
use crate::managed::{ManagedSchema, ObjectSet, SchemaSource};
use crate::repo::{Repo, WriteOp, WriteOptions};

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
    /// The managed types (relationships reach managed users, `authzMembers`).
    managed: Option<SchemaSource>,
    edges_indexed: tokio::sync::OnceCell<()>,
    /// Told of every successful write of a user or a role (the `activity` audit topic).
    hook: Option<Arc<dyn crate::events::ChangeHook>>,
}

impl InternalHandler {
    pub fn new(repo: Arc<dyn Repo>, on_user_change: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            repo,
            users: user_schema(),
            roles: role_schema(),
            on_user_change,
            managed: None,
            edges_indexed: Default::default(),
            hook: None,
        }
    }

    /// Tells `hook` of every successful write of an internal user or role (as managed
    /// objects tell theirs): the `activity` audit of internal objects.
    pub fn with_hook(mut self, hook: Arc<dyn crate::events::ChangeHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Lets relationships reach the live managed types (a managed user's `authzRoles`
    /// shows in an internal role's `authzMembers`).
    pub fn with_managed(mut self, managed: SchemaSource) -> Self {
        self.managed = Some(managed);
        self
    }
}

#[async_trait::async_trait]
impl RequestHandler for InternalHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let (set, id, sub) = match rest {
            [set] => (set.as_str(), None, None),
            [set, id] => (set.as_str(), Some(id.as_str()), None),
            [set, id, prop] => (set.as_str(), Some(id.as_str()), Some((prop.as_str(), None))),
            [set, id, prop, edge] => (
                set.as_str(),
                Some(id.as_str()),
                Some((prop.as_str(), Some(edge.as_str()))),
            ),
            _ => ("", None, None),
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
        rels::ensure_indexes(self.repo.as_ref(), &self.edges_indexed).await?;
        let managed = match &self.managed {
            Some(source) => source(),
            None => Arc::new(ManagedSchema::default()),
        };
        let graph = Graph::new(managed);
        let priors = self
            .hook
            .as_ref()
            .filter(|h| h.wants_before())
            .map(|_| crate::events::Priors::default());
        let result = match (id, sub) {
            (Some(id), Some((property, edge))) => {
                rels::collection::Collection {
                    graph: &graph,
                    repo: self.repo.as_ref(),
                    schema,
                    id,
                    property,
                    events: None,
                }
                .handle(req, edge)
                .await
            }
            _ => {
                ObjectSet {
                    engine: None,
                    repo: self.repo.as_ref(),
                    schema,
                    hook: None,
                    crypto: None,
                    graph: Some(&graph),
                    conditions: None,
                    events: None,
                    priors: priors.as_ref(),
                }
                .handle(req, id)
                .await
            }
        };
        let writes = !matches!(req.op, Operation::Read { .. } | Operation::Query(_));
        // Users' passwords and roles, and roles' members, are read at login.
        if (set == "user" || set == "role") && writes {
            (self.on_user_change)();
        }
        if let (Some(hook), Ok(answer), None) = (&self.hook, &result, sub) {
            crate::events::notify_with_priors(
                hook.as_ref(),
                &schema.resource,
                req,
                answer,
                priors.as_ref(),
            );
        }
        result
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
            let content = json!({"password": admin_hash()?});
            create_user(repo, ADMIN_USER, content, &[ROLE_ADMIN, ROLE_AUTHORIZED]).await?;
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
        let content = json!({"password": password::hash("anonymous")?});
        create_user(repo, ANONYMOUS_USER, content, &[ROLE_REG]).await?;
    }
    Ok(())
}

/// Creates internal user `id` with its `authzRoles` edges, in one transaction.
async fn create_user(
    repo: &dyn Repo,
    id: &str,
    content: Value,
    roles: &[&str],
) -> Result<(), String> {
    let Value::Object(content) = content else {
        return Err("seed content must be an object".into());
    };
    let me = End::new(USERS, id, Some("authzRoles"));
    let edges: Vec<WriteOp> = roles
        .iter()
        .filter_map(|r| r.strip_prefix("internal/role/"))
        .map(|role| {
            Edge {
                id: crate::managed::relationships::store::new_edge_id(),
                rev: String::new(),
                first: me.clone(),
                second: End::new(ROLES, role, Some("authzMembers")),
                properties: Map::new(),
                first_single: false,
                second_single: false,
            }
            .create_op()
        })
        .collect();
    let opts = WriteOptions {
        also: &edges,
        ..Default::default()
    };
    match repo.create(USERS, id, content, opts).await {
        Ok(_) | Err(crate::repo::RepoError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(format!("cannot create {USERS}/{id}: {e}")),
    }
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
