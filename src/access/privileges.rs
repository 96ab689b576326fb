//! Delegated administration: the `privileges` of internal roles (IDM's
//! `internal/role/<id>.privileges[]`: `name`, `path`, `permissions` ⊂ VIEW, CREATE,
//! UPDATE, DELETE, ACTION, `actions`, `filter`, `accessFlags[{attribute, readOnly}]`).
//!
//! When `access.json` refuses a request, the privileges of the caller's roles may still
//! allow it, as IDM's privilege filter does:
//! * the privilege's `path` is the collection (`managed/user`) of the request;
//! * the operation needs its permission (read and query VIEW, create CREATE, update and
//!   patch UPDATE, delete DELETE, action ACTION with the action listed);
//! * a query gets the privilege's `filter` ANDed to its own; an operation on one object
//!   needs the object to match it;
//! * only the `accessFlags` attributes are returned, and only the ones not `readOnly` may be
//!   written (every other write is 403).
//!
//! Filters templated from the caller's own object (`{{stateProvince}}`) are not supported:
//! such a privilege is skipped with a warning. `/openidm/privilege` answers what the caller
//! may do ([`PrivilegeHandler`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::crest::filter::{parse as parse_filter, QueryFilter};
use crate::crest::{
    Caller, Operation, QueryKind, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::crest::{Delegated, Delegation};
use crate::repo::Repo;

#[derive(Debug, Clone, PartialEq)]
pub struct Privilege {
    pub name: String,
    pub description: String,
    pub path: String,
    pub permissions: BTreeSet<String>,
    pub actions: Vec<String>,
    pub filter: Option<(String, QueryFilter)>,
    /// (attribute, readOnly)
    pub access_flags: Vec<(String, bool)>,
}

const PERMISSIONS: &[&str] = &["VIEW", "CREATE", "UPDATE", "DELETE", "ACTION"];

/// The privileges of one role object; invalid ones are skipped with a warning.
pub fn parse_privileges(role: &str, content: &Map<String, Value>) -> Vec<Privilege> {
    let Some(items) = content.get("privileges").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|p| match parse_one(p) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(role = %role, problem = %e, "privilege skipped");
                None
            }
        })
        .collect()
}

/// The strings of an array (anything else: none).
fn strings(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
}

fn parse_one(p: &Value) -> Result<Privilege, String> {
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let path = text("path").trim_matches('/').to_owned();
    if path.is_empty() {
        return Err("no path".into());
    }
    let permissions: BTreeSet<String> = strings(p.get("permissions")).collect();
    if let Some(bad) = permissions
        .iter()
        .find(|p| !PERMISSIONS.contains(&p.as_str()))
    {
        return Err(format!("unknown permission '{bad}'"));
    }
    let filter = match p
        .get("filter")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        Some(f) if f.contains("{{") => {
            return Err("filters templated from the caller's object are not supported".into())
        }
        Some(f) => Some((
            f.to_owned(),
            parse_filter(f).map_err(|e| format!("filter: {e}"))?,
        )),
        None => None,
    };
    let access_flags = p
        .get("accessFlags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some((
                        f.get("attribute")?.as_str()?.to_owned(),
                        f.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Privilege {
        name: text("name"),
        description: text("description"),
        path,
        permissions,
        actions: strings(p.get("actions")).collect(),
        filter,
        access_flags,
    })
}

/// The permission an operation needs.
fn permission_of(op: &Operation) -> &'static str {
    match op {
        Operation::Read { .. } | Operation::Query(_) => "VIEW",
        Operation::Create { .. } => "CREATE",
        Operation::Update { .. } | Operation::Patch { .. } => "UPDATE",
        Operation::Delete { .. } => "DELETE",
        Operation::Action { .. } => "ACTION",
    }
}

pub struct Privileges {
    repo: Arc<dyn Repo>,
    roles: moka::future::Cache<String, Arc<Vec<Privilege>>>,
}

impl Privileges {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self {
            repo,
            roles: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }

    /// Forgets the roles read (an internal role was written).
    pub fn invalidate_all(&self) {
        self.roles.invalidate_all();
    }

    /// Every privilege of the caller's internal roles.
    pub async fn of(&self, caller: &Caller) -> Vec<Privilege> {
        let mut out = Vec::new();
        for role in &caller.roles {
            let Some(id) = role.strip_prefix("internal/role/") else {
                continue;
            };
            let repo = self.repo.clone();
            let id = id.to_owned();
            let privileges = self
                .roles
                .get_with(id.clone(), async move {
                    match repo.read("internal/role", &id).await {
                        Ok(Some(obj)) => Arc::new(parse_privileges(&id, &obj.content)),
                        Ok(None) => Arc::new(Vec::new()),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read a role's privileges");
                            Arc::new(Vec::new())
                        }
                    }
                })
                .await;
            out.extend(privileges.iter().cloned());
        }
        out
    }

    /// `Some` when the caller's privileges allow `req` (access.json refused it); `Err` when
    /// they apply but the request goes beyond them.
    pub async fn check(&self, req: &Request) -> Option<Result<Delegated, ResourceError>> {
        if req.caller.is_internal() {
            return None;
        }
        let path = req.path_string();
        let permission = permission_of(&req.op);
        let all = self.of(&req.caller).await;
        let (collection, id) = split(&path, &all)?;
        let granted: Vec<&Privilege> = all
            .iter()
            .filter(|p| p.path == collection && p.permissions.contains(permission))
            .filter(|p| match &req.op {
                Operation::Action { name } => p.actions.iter().any(|a| a == name),
                _ => true,
            })
            .collect();
        if granted.is_empty() {
            return None;
        }
        let denied = || Some(Err(ResourceError::forbidden("Access denied")));
        // Writes: every attribute written must be writable through one of the privileges.
        if let Some(written) = super::written_properties(req) {
            let writable = |a: &str| {
                granted.iter().any(|p| {
                    p.access_flags
                        .iter()
                        .any(|(attr, read_only)| attr == a && !read_only)
                })
            };
            if !written.iter().all(|a| writable(a)) {
                return denied();
            }
        }
        let view: Vec<String> = {
            let mut v: BTreeSet<String> = BTreeSet::new();
            for p in all
                .iter()
                .filter(|p| p.path == collection && p.permissions.contains("VIEW"))
            {
                v.extend(p.access_flags.iter().map(|(a, _)| a.clone()));
            }
            v.into_iter().collect()
        };
        // The filters of the privileges that grant it; one without a filter grants all.
        let filters: Option<Vec<&(String, QueryFilter)>> = granted
            .iter()
            .map(|p| p.filter.as_ref())
            .collect::<Option<Vec<_>>>();
        match (&req.op, id) {
            (Operation::Query(q), None) => {
                let QueryKind::Filter(own) = &q.kind else {
                    // Predefined and native queries cannot be narrowed.
                    return denied();
                };
                let mut rewritten = req.clone();
                rewritten.streamed = false;
                if let Some(filters) = filters {
                    let theirs = filters
                        .iter()
                        .map(|(text, _)| format!("({text})"))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    let mut q2 = (**q).clone();
                    q2.kind = QueryKind::Filter(format!("({own}) and ({theirs})"));
                    rewritten.op = Operation::Query(Box::new(q2));
                }
                Some(Ok(Delegated {
                    request: Some(rewritten),
                    view,
                }))
            }
            (Operation::Create { .. }, _) => Some(Ok(Delegated {
                request: None,
                view,
            })),
            (_, Some(id)) => {
                if let Some(filters) = filters {
                    let obj = match self.repo.read(collection, id).await {
                        Ok(Some(obj)) => Value::Object(obj.content),
                        // Let the handler answer 404 as it would to anyone allowed.
                        Ok(None) => {
                            return Some(Ok(Delegated {
                                request: None,
                                view,
                            }))
                        }
                        Err(e) => {
                            return Some(Err(ResourceError::new(500, e.to_string())));
                        }
                    };
                    if !filters.iter().any(|(_, f)| f.matches(&obj)) {
                        return denied();
                    }
                }
                Some(Ok(Delegated {
                    request: None,
                    view,
                }))
            }
            _ => denied(),
        }
    }

    /// `privilege/<path>[/<id>]`: what the caller may do there.
    async fn describe(&self, caller: &Caller, path: &str) -> Value {
        let all = self.of(caller).await;
        let Some((collection, id)) = split(path, &all) else {
            return summary(&[], None);
        };
        let mine: Vec<&Privilege> = all.iter().filter(|p| p.path == collection).collect();
        let obj = match id {
            Some(id) => match self.repo.read(collection, id).await {
                Ok(Some(o)) => Some(Value::Object(o.content)),
                _ => None,
            },
            None => None,
        };
        // On one object, only the privileges whose filter it matches count.
        let applicable: Vec<&Privilege> = mine
            .into_iter()
            .filter(|p| match (&obj, &p.filter) {
                (Some(o), Some((_, f))) => f.matches(o),
                _ => true,
            })
            .collect();
        summary(&applicable, obj.as_ref())
    }
}

/// `(collection, id)` of `path` for the privilege paths known.
fn split<'a>(path: &'a str, all: &[Privilege]) -> Option<(&'a str, Option<&'a str>)> {
    all.iter().find_map(|p| {
        if path == p.path {
            Some((&path[..p.path.len()], None))
        } else {
            path.strip_prefix(p.path.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| (&path[..p.path.len()], Some(id)))
        }
    })
}

fn summary(ps: &[&Privilege], _obj: Option<&Value>) -> Value {
    let props = |perm: &str, writable_only: bool| -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for p in ps.iter().filter(|p| p.permissions.contains(perm)) {
            for (a, ro) in &p.access_flags {
                if !(writable_only && *ro) {
                    out.insert(a.clone());
                }
            }
        }
        out.into_iter().collect()
    };
    let has = |perm: &str| ps.iter().any(|p| p.permissions.contains(perm));
    let actions: BTreeSet<&String> = ps
        .iter()
        .filter(|p| p.permissions.contains("ACTION"))
        .flat_map(|p| p.actions.iter())
        .collect();
    json!({
        "VIEW": {"allowed": has("VIEW"), "properties": props("VIEW", false)},
        "CREATE": {"allowed": has("CREATE"), "properties": props("CREATE", true)},
        "UPDATE": {"allowed": has("UPDATE"), "properties": props("UPDATE", true)},
        "DELETE": {"allowed": has("DELETE")},
        "ACTION": {"allowed": has("ACTION"), "actions": actions},
    })
}

#[async_trait::async_trait]
impl Delegation for Privileges {
    async fn delegate(&self, req: &Request) -> Option<Result<Delegated, ResourceError>> {
        self.check(req).await
    }
}

/// `/openidm/privilege`: `?_action=listPrivileges` and `GET privilege/<path>[/<id>]`.
pub struct PrivilegeHandler {
    pub privileges: Arc<Privileges>,
    pub managed: crate::managed::SchemaSource,
}

#[async_trait::async_trait]
impl RequestHandler for PrivilegeHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        match (&req.op, rest) {
            (Operation::Action { name }, []) if name == "listPrivileges" => {
                let list: Vec<Value> = if req.caller.is_admin() {
                    (self.managed)()
                        .types
                        .values()
                        .map(|t| json!({"privilegePath": t.resource, "title": t.resource.rsplit('/').next(),
                            "permissions": PERMISSIONS, "actions": [], "filter": null,
                            "accessFlags": t.properties.iter().map(|p| json!({"attribute": p.name, "readOnly": false})).collect::<Vec<_>>()}))
                        .collect()
                } else {
                    self.privileges
                        .of(&req.caller)
                        .await
                        .into_iter()
                        .map(|p| json!({"privilegePath": p.path, "title": p.path.rsplit('/').next(),
                            "name": p.name, "description": p.description,
                            "permissions": p.permissions, "actions": p.actions,
                            "filter": p.filter.map(|(t, _)| t),
                            "accessFlags": p.access_flags.iter().map(|(a, ro)| json!({"attribute": a, "readOnly": ro})).collect::<Vec<_>>()}))
                        .collect()
                };
                Ok(Response::Action(Some(Value::Array(list))))
            }
            (Operation::Action { name }, _) => Err(ResourceError::bad_request(format!(
                "Action {name} not supported on the privilege service"
            ))),
            (Operation::Read { .. }, rest) if !rest.is_empty() => {
                let path = rest.join("/");
                let body = if req.caller.is_admin() {
                    let all = json!({"allowed": true});
                    json!({"VIEW": all, "CREATE": all, "UPDATE": all, "DELETE": all,
                        "ACTION": {"allowed": true, "actions": ["*"]}})
                } else {
                    self.privileges.describe(&req.caller, &path).await
                };
                let Value::Object(content) = body else {
                    return Err(ResourceError::new(500, "privilege summary"));
                };
                Ok(Response::Resource(ResourceResponse::new(
                    path, None, content,
                )))
            }
            _ => Err(ResourceError::new(
                405,
                "The privilege service supports read and the action listPrivileges",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idm_privilege_shape_parses() {
        let role = json!({"privileges": [
            {"name": "support", "description": "d", "path": "managed/user",
             "permissions": ["VIEW", "UPDATE", "CREATE"], "actions": [],
             "filter": "stateProvince eq \"Washington\"",
             "accessFlags": [{"attribute": "userName", "readOnly": false},
                             {"attribute": "accountStatus", "readOnly": true}]},
            {"name": "templated", "path": "managed/user", "permissions": ["VIEW"],
             "filter": "stateProvince eq \"{{stateProvince}}\""},
            {"name": "bad", "path": "managed/user", "permissions": ["FLY"]}
        ]});
        let ps = parse_privileges("support", role.as_object().unwrap());
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].access_flags[1], ("accountStatus".to_owned(), true));
        let s = summary(&[&ps[0]], None);
        assert_eq!(
            s["VIEW"]["properties"],
            json!(["accountStatus", "userName"])
        );
        assert_eq!(s["UPDATE"]["properties"], json!(["userName"]));
        assert_eq!(s["DELETE"]["allowed"], false);
    }
}
