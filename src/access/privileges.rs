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
//!   needs the object to match it; a create needs the new object to match it, and an update
//!   or patch needs the object to match it before and after the change (an edit that would
//!   move the object out of the filter is 403 and writes nothing);
//! * only the `accessFlags` attributes are returned, and only the ones not `readOnly` may be
//!   written (every other write is 403).
//!
//! A `filter` may be templated from the caller's own object (`{{stateProvince}}`, see
//! [`super::filter_template`]). The caller's object is read once per request that needs it,
//! never cached, so a change of it applies to the caller's next request. A privilege whose
//! template cannot be rendered for the caller (field missing or null, an internal user, who
//! has no managed object) grants nothing, for requests as for `/openidm/privilege`
//! ([`PrivilegeHandler`]), which answers what the caller may do.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::filter_template::{is_template, FilterTemplate};
use crate::crest::filter::{parse as parse_filter, to_resource_error, QueryFilter};
use crate::crest::{
    Caller, Operation, QueryKind, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::crest::{Delegated, Delegation};
use crate::repo::Repo;

/// A privilege's `filter` as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum PrivilegeFilter {
    /// The same for every caller: its text and parse.
    Static(String, QueryFilter),
    /// Rendered from each caller's own object.
    Template(FilterTemplate),
}

impl PrivilegeFilter {
    /// The text as configured.
    pub fn text(&self) -> &str {
        match self {
            PrivilegeFilter::Static(text, _) => text,
            PrivilegeFilter::Template(t) => t.text(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Privilege {
    pub name: String,
    pub description: String,
    pub path: String,
    pub permissions: BTreeSet<String>,
    pub actions: Vec<String>,
    pub filter: Option<PrivilegeFilter>,
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
        Some(f) if is_template(f) => Some(PrivilegeFilter::Template(
            FilterTemplate::parse(f).map_err(|e| format!("filter: {e}"))?,
        )),
        Some(f) => Some(PrivilegeFilter::Static(
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

/// A privilege as it applies to one caller: its filter rendered for them.
struct Applied<'a> {
    privilege: &'a Privilege,
    /// `None`: no filter, every object of the path.
    filter: Option<QueryFilter>,
}

impl Applied<'_> {
    /// Whether it allows the operation `op` (its permission, and an action listed).
    fn grants(&self, op: &Operation) -> bool {
        let p = self.privilege;
        p.permissions.contains(permission_of(op))
            && match op {
                Operation::Action { name } => p.actions.iter().any(|a| a == name),
                _ => true,
            }
    }

    /// Whether `obj` is within its filter.
    fn covers(&self, obj: &Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(obj))
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

    /// The caller's own object, which templated filters read: `None` for a caller that is
    /// not a managed object (an internal user) or whose object is gone. Read for each
    /// request, never cached: a change of the object applies to the next request.
    async fn own_object(&self, caller: &Caller) -> Result<Option<Value>, ResourceError> {
        if !caller.component.starts_with("managed/") {
            return Ok(None);
        }
        match self.repo.read(&caller.component, &caller.user).await {
            Ok(obj) => Ok(obj.map(|o| Value::Object(o.content))),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the caller's object for a privilege filter");
                Err(ResourceError::new(
                    500,
                    "The caller's object, which a privilege filter is templated from, cannot be read",
                ))
            }
        }
    }

    /// `ps` as they apply to `caller`: templated filters rendered from the caller's own
    /// object (read at most once, and only when a filter is templated). A privilege whose
    /// template cannot be rendered for the caller is left out: it grants nothing.
    async fn apply<'a>(
        &self,
        caller: &Caller,
        ps: &[&'a Privilege],
    ) -> Result<Vec<Applied<'a>>, ResourceError> {
        let mut own: Option<Option<Value>> = None;
        let mut out = Vec::new();
        for &p in ps {
            let filter = match &p.filter {
                None => None,
                Some(PrivilegeFilter::Static(_, f)) => Some(f.clone()),
                Some(PrivilegeFilter::Template(t)) => {
                    if own.is_none() {
                        own = Some(self.own_object(caller).await?);
                    }
                    let Some(Some(obj)) = &own else {
                        tracing::debug!(privilege = %p.name, component = %caller.component,
                            "the caller has no managed object to render the privilege's filter from; it grants nothing");
                        continue;
                    };
                    match t.render_for(obj) {
                        Ok((_, f)) => Some(f),
                        Err(why) => {
                            // Names the field, never its value.
                            tracing::debug!(privilege = %p.name, caller = %caller.user,
                                problem = %why, "privilege filter not rendered; it grants nothing");
                            continue;
                        }
                    }
                }
            };
            out.push(Applied {
                privilege: p,
                filter,
            });
        }
        Ok(out)
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
        let on_path: Vec<&Privilege> = all.iter().filter(|p| p.path == collection).collect();
        // Nothing to render when no privilege could grant the request anyway.
        if !on_path.iter().any(|p| p.permissions.contains(permission)) {
            return None;
        }
        let applied = match self.apply(&req.caller, &on_path).await {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        let granted: Vec<&Applied> = applied.iter().filter(|a| a.grants(&req.op)).collect();
        if granted.is_empty() {
            return None;
        }
        let denied = || Some(Err(ResourceError::forbidden("Access denied")));
        // Writes: every attribute written must be writable through one of the privileges.
        if let Some(written) = super::written_properties(req) {
            let writable = |a: &str| {
                granted.iter().any(|g| {
                    g.privilege
                        .access_flags
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
            for a in applied
                .iter()
                .filter(|a| a.privilege.permissions.contains("VIEW"))
            {
                v.extend(a.privilege.access_flags.iter().map(|(a, _)| a.clone()));
            }
            v.into_iter().collect()
        };
        let allowed = |request: Option<Request>| {
            Some(Ok(Delegated {
                request,
                view: view.clone(),
            }))
        };
        // One privilege without a filter grants every object.
        let unfiltered = granted.iter().any(|g| g.filter.is_none());
        match (&req.op, id) {
            (Operation::Query(q), None) => {
                let QueryKind::Filter(own) = &q.kind else {
                    // Predefined and native queries cannot be narrowed.
                    return denied();
                };
                let mut rewritten = req.clone();
                rewritten.streamed = false;
                if !unfiltered {
                    // The caller's filter on its own first: a mistake in it is answered
                    // about it alone, never quoting the privilege's (rendered) filter.
                    if let Err(e) = parse_filter(own) {
                        return Some(Err(to_resource_error(own, &e)));
                    }
                    let theirs = granted
                        .iter()
                        .filter_map(|g| g.filter.as_ref())
                        .map(|f| format!("({f})"))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    let mut q2 = (**q).clone();
                    q2.kind = QueryKind::Filter(format!("({own}) and ({theirs})"));
                    rewritten.op = Operation::Query(Box::new(q2));
                }
                allowed(Some(rewritten))
            }
            (Operation::Create { .. }, _) => {
                // The new object must be within the filter as written.
                if unfiltered || granted.iter().any(|g| g.covers(&req.body)) {
                    allowed(None)
                } else {
                    denied()
                }
            }
            (_, Some(_)) if unfiltered => allowed(None),
            (_, Some(id)) => {
                let existing = match self.repo.read(collection, id).await {
                    Ok(Some(obj)) => obj,
                    // Let the handler answer 404 as it would to anyone allowed; an upsert
                    // must not create what the filter was never checked on.
                    Ok(None) => {
                        let mut request = req.clone();
                        if let Operation::Update { upsert, .. } = &mut request.op {
                            *upsert = false;
                        }
                        return allowed(Some(request));
                    }
                    Err(e) => {
                        return Some(Err(ResourceError::new(500, e.to_string())));
                    }
                };
                let before = Value::Object(existing.content.clone());
                let after = match &req.op {
                    Operation::Update { .. } | Operation::Patch { .. } => {
                        match after_change(req, existing.content) {
                            Ok(after) => Some(after),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    _ => None,
                };
                let ok = granted.iter().any(|g| {
                    g.covers(&before) && after.as_ref().is_none_or(|after| g.covers(after))
                });
                if !ok {
                    return denied();
                }
                match after {
                    // The write must apply to the object checked: pinned to its revision, a
                    // concurrent change makes it a 412 instead of a write nobody checked.
                    Some(_) => allowed(Some(pinned(req, &existing.rev))),
                    None => allowed(None),
                }
            }
            _ => denied(),
        }
    }

    /// `privilege/<path>[/<id>]`: what the caller may do there.
    async fn describe(&self, caller: &Caller, path: &str) -> Result<Value, ResourceError> {
        let all = self.of(caller).await;
        let Some((collection, id)) = split(path, &all) else {
            return Ok(summary(&[]));
        };
        let on_path: Vec<&Privilege> = all.iter().filter(|p| p.path == collection).collect();
        let applied = self.apply(caller, &on_path).await?;
        let obj = match id {
            Some(id) => match self.repo.read(collection, id).await {
                Ok(Some(o)) => Some(Value::Object(o.content)),
                _ => None,
            },
            None => None,
        };
        // On one object, only the privileges whose filter it matches count.
        let applicable: Vec<&Privilege> = applied
            .iter()
            .filter(|a| obj.as_ref().is_none_or(|o| a.covers(o)))
            .map(|a| a.privilege)
            .collect();
        Ok(summary(&applicable))
    }

    /// The caller's privileges that grant them something (templated filters rendered).
    async fn listed(&self, caller: &Caller) -> Result<Vec<Value>, ResourceError> {
        let all = self.of(caller).await;
        let applied = self.apply(caller, &all.iter().collect::<Vec<_>>()).await?;
        Ok(applied
            .iter()
            .map(|a| {
                let p = a.privilege;
                // The filter as configured: a rendered one would show values of the
                // caller's object in an answer that is about the role.
                json!({"privilegePath": p.path, "title": p.path.rsplit('/').next(),
                    "name": p.name, "description": p.description,
                    "permissions": p.permissions, "actions": p.actions,
                    "filter": p.filter.as_ref().map(PrivilegeFilter::text),
                    "accessFlags": p.access_flags.iter().map(|(a, ro)| json!({"attribute": a, "readOnly": ro})).collect::<Vec<_>>()})
            })
            .collect())
    }
}

/// The object an update or patch would store, from the stored `content`: a PUT replaces
/// the object by the body, a PATCH applies its operations (an invalid patch is refused
/// here as the handler would refuse it). What the handler adds itself (private properties
/// it keeps, defaults, `onUpdate` scripts) is not the caller's edit and is not in it.
fn after_change(req: &Request, content: Map<String, Value>) -> Result<Value, ResourceError> {
    match &req.op {
        Operation::Patch { .. } => {
            let ops = crate::crest::patch::parse_patch(&req.body)?;
            let mut doc = Value::Object(content);
            crate::crest::patch::apply_patch(&mut doc, &ops, false)?;
            Ok(doc)
        }
        _ => {
            let mut body = req.body.as_object().cloned().unwrap_or_default();
            body.remove("_id");
            body.remove("_rev");
            Ok(Value::Object(body))
        }
    }
}

/// `req` made to apply only to revision `rev` of its object (an update no longer creates).
fn pinned(req: &Request, rev: &str) -> Request {
    let mut request = req.clone();
    match &mut request.op {
        Operation::Update {
            rev: wanted,
            upsert,
        } => {
            *upsert = false;
            wanted.get_or_insert_with(|| rev.to_owned());
        }
        Operation::Patch { rev: wanted } => {
            wanted.get_or_insert_with(|| rev.to_owned());
        }
        _ => {}
    }
    request
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

fn summary(ps: &[&Privilege]) -> Value {
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
                    self.privileges.listed(&req.caller).await?
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
                    self.privileges.describe(&req.caller, &path).await?
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
        assert_eq!(ps.len(), 2);
        assert!(matches!(ps[1].filter, Some(PrivilegeFilter::Template(_))));
        assert_eq!(ps[0].access_flags[1], ("accountStatus".to_owned(), true));
        let s = summary(&[&ps[0]]);
        assert_eq!(
            s["VIEW"]["properties"],
            json!(["accountStatus", "userName"])
        );
        assert_eq!(s["UPDATE"]["properties"], json!(["userName"]));
        assert_eq!(s["DELETE"]["allowed"], false);
    }

    #[test]
    fn checked_writes_are_pinned_to_the_revision_checked() {
        let caller = Arc::new(Caller::new("a", "managed/user", Vec::new()));
        let req = |op| Request::new(op, "managed/user/w1", caller.clone());
        let put = pinned(
            &req(Operation::Update {
                rev: None,
                upsert: true,
            }),
            "7",
        );
        assert_eq!(
            put.op,
            Operation::Update {
                rev: Some("7".into()),
                upsert: false
            }
        );
        // The caller's own revision stays: the handler answers 412 if it is not the one.
        let patch = pinned(
            &req(Operation::Patch {
                rev: Some("6".into()),
            }),
            "7",
        );
        assert_eq!(
            patch.op,
            Operation::Patch {
                rev: Some("6".into())
            }
        );
    }

    #[test]
    fn the_state_after_an_edit_is_what_the_edit_writes() {
        let caller = Arc::new(Caller::new("a", "managed/user", Vec::new()));
        let stored = json!({"userName": "w", "stateProvince": "WA", "sn": "S"});
        let content = stored.as_object().unwrap().clone();
        let mut patch = Request::new(
            Operation::Patch { rev: None },
            "managed/user/w1",
            caller.clone(),
        );
        patch.body = json!([{"operation": "replace", "field": "stateProvince", "value": "OR"}]);
        assert_eq!(
            after_change(&patch, content.clone()).unwrap(),
            json!({"userName": "w", "stateProvince": "OR", "sn": "S"})
        );
        patch.body = json!([{"operation": "fly", "field": "sn"}]);
        assert_eq!(after_change(&patch, content.clone()).unwrap_err().code, 400);
        // A PUT replaces: what its body leaves out is gone.
        let mut put = Request::new(
            Operation::Update {
                rev: None,
                upsert: false,
            },
            "managed/user/w1",
            caller,
        );
        put.body = json!({"_id": "w1", "_rev": "3", "userName": "w2"});
        assert_eq!(
            after_change(&put, content).unwrap(),
            json!({"userName": "w2"})
        );
    }
}
