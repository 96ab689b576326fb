//! Who may do what: IDM's `conf/access.json` (`configs`: `pattern`, `roles`, `methods`,
//! `actions`, `excludePatterns`, `customAuthz`), checked for every HTTP request, local or
//! proxied to a remote instance (`external/idm/<name>/…` is a resource like any other).
//! Rules are tested in order; any rule that matches allows the request. Requests the
//! gateway makes itself (sync, scheduler, scripts) are not checked, as in IDM.
//!
//! Without `access.json` the shipped rules apply ([`DEFAULT_ACCESS`], the same text as
//! `conf/access.json`): administrators everything; authenticated users their own
//! `managed/user` (read, and update/patch of `userEditable` properties), `info/*`, the
//! policy service and schema reads; anyone `info/ping`.
//!
//! The rules are evaluated synchronously; what a rule leaves to the stored object (which
//! properties an update changes, a re-authentication) is settled by [`reauth::AccessGuard`],
//! the router's asynchronous check.

pub mod custom;
pub mod filter_template;
pub mod privileges;
pub mod reauth;

use std::sync::Arc;

use serde_json::Value;

use crate::crest::{Caller, Operation, QueryKind, Request, ResourceError};
use crate::managed::ManagedSchema;
use custom::Expr;

/// Config id of the file.
pub const ACCESS_CONFIG: &str = "access";

/// The shipped rules, used when there is no `access.json`.
pub const DEFAULT_ACCESS: &str = include_str!("../../conf/access.json");

/// `*`, or a list (empty: nothing).
#[derive(Debug, Clone, PartialEq)]
enum Set {
    All,
    Only(Vec<String>),
}

impl Set {
    fn parse(v: Option<&Value>, at: &str) -> Result<Set, String> {
        let items: Vec<String> = match v {
            None | Some(Value::Null) => return Ok(Set::Only(Vec::new())),
            Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| format!("{at}: must be a string or an array of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("{at}: must be a string or an array of strings")),
        };
        if items.iter().any(|i| i == "*") {
            return Ok(Set::All);
        }
        Ok(Set::Only(
            items.into_iter().filter(|i| !i.is_empty()).collect(),
        ))
    }

    fn contains(&self, item: &str) -> bool {
        match self {
            Set::All => true,
            Set::Only(items) => items.iter().any(|i| i == item),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    pattern: String,
    roles: Set,
    methods: Set,
    actions: Set,
    excludes: Vec<String>,
    custom: Option<Expr>,
}

const METHODS: &[&str] = &[
    "create", "read", "update", "delete", "patch", "action", "query", "script",
];

/// A parsed `access.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessConfig {
    rules: Vec<Rule>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        let doc: Value = serde_json::from_str(DEFAULT_ACCESS).unwrap_or(Value::Null);
        parse_access(&doc).unwrap_or(AccessConfig { rules: Vec::new() })
    }
}

/// IDM's `matchesResourceIdPattern`: `*` everything, `x/*` anything below `x/` (not `x`
/// itself), else the exact path.
fn matches_pattern(path: &str, pattern: &str) -> bool {
    if pattern == "*" || path == pattern {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => {
            path.len() > prefix.len() && path.starts_with(prefix)
        }
        _ => false,
    }
}

pub fn parse_access(doc: &Value) -> Result<AccessConfig, Vec<String>> {
    let Some(configs) = doc.get("configs").and_then(Value::as_array) else {
        return Err(vec!["configs: required, an array of rules".into()]);
    };
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let at = format!("/configs/{i}");
        let Some(obj) = c.as_object() else {
            problems.push(format!("{at}: must be an object"));
            continue;
        };
        // IDM 8.1's servlet rules guard other servlets than the REST API.
        if obj.contains_key("servlet") {
            continue;
        }
        let rule = (|| {
            let pattern = obj
                .get("pattern")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("{at}/pattern: required"))?
                .trim_matches('/')
                .to_owned();
            let methods = Set::parse(obj.get("methods"), &format!("{at}/methods"))?;
            if let Set::Only(m) = &methods {
                if let Some(bad) = m.iter().find(|m| !METHODS.contains(&m.as_str())) {
                    return Err(format!("{at}/methods: unknown method '{bad}'"));
                }
            }
            let excludes =
                match Set::parse(obj.get("excludePatterns"), &format!("{at}/excludePatterns"))? {
                    Set::All => vec!["*".to_owned()],
                    Set::Only(p) => p
                        .into_iter()
                        .map(|p| p.trim_matches('/').to_owned())
                        .collect(),
                };
            let custom = match obj.get("customAuthz") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => {
                    Some(custom::parse(s).map_err(|e| format!("{at}/customAuthz: {e}: {s}"))?)
                }
                Some(_) => return Err(format!("{at}/customAuthz: must be a string")),
            };
            if let Some(e) = &custom {
                let mut unknown = Vec::new();
                e.unknown_helpers(&mut unknown);
                if !unknown.is_empty() {
                    tracing::warn!(rule = %at, helpers = %unknown.join(","), "access rule uses helpers the gateway does not evaluate; they count as false");
                }
            }
            Ok(Rule {
                pattern,
                roles: Set::parse(obj.get("roles"), &format!("{at}/roles"))?,
                methods,
                actions: Set::parse(obj.get("actions"), &format!("{at}/actions"))?,
                excludes,
                custom,
            })
        })();
        match rule {
            Ok(r) => rules.push(r),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(AccessConfig { rules })
    } else {
        Err(problems)
    }
}

/// What is asked: the resource path (no leading `openidm/`), the method as `access.json`
/// names it, the action, and — for local requests — the request itself (the helpers of
/// `customAuthz` read its body and query).
pub struct Target<'a> {
    pub path: &'a str,
    pub method: &'a str,
    pub action: Option<&'a str>,
    pub caller: &'a Caller,
    pub request: Option<&'a Request>,
    pub managed: &'a ManagedSchema,
}

/// What the rules say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Allowed by a rule on conditions only the stored object can tell (see [`reauth`]).
    Conditional(Conditions),
}

/// What a rule's helpers need to know of the stored object, as IDM's `getChangedValues()`
/// (an update changes the properties whose value differs; a patch every one it names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Written properties the caller may not edit: allowed when they do not change
    /// (`onlyEditableManagedObjectProperties()` on an update).
    pub unchanged: Vec<String>,
    /// Protected properties written: when one changes, the caller must re-authenticate
    /// (`reauthIfProtectedAttributeChange()`).
    pub reauth: Vec<String>,
}

impl Conditions {
    fn is_empty(&self) -> bool {
        self.unchanged.is_empty() && self.reauth.is_empty()
    }
}

fn push_new(list: &mut Vec<String>, p: &str) {
    if !list.iter().any(|x| x == p) {
        list.push(p.to_owned());
    }
}

impl AccessConfig {
    /// Whether a rule allows the request outright (a rule with conditions on the stored
    /// object does not count).
    pub fn allows(&self, t: &Target<'_>) -> bool {
        self.decide(t) == Decision::Allow
    }

    /// A rule that allows the request outright wins; else the first that allows it on
    /// conditions.
    pub fn decide(&self, t: &Target<'_>) -> Decision {
        let mut conditional = None;
        for r in &self.rules {
            let mut conditions = Conditions::default();
            if r.allows(t, &mut conditions) {
                if conditions.is_empty() {
                    return Decision::Allow;
                }
                conditional.get_or_insert(conditions);
            }
        }
        conditional.map_or(Decision::Deny, Decision::Conditional)
    }
}

impl Rule {
    /// `conditions` receives what the helpers leave to the stored object.
    fn allows(&self, t: &Target<'_>, conditions: &mut Conditions) -> bool {
        if !matches_pattern(t.path, &self.pattern) {
            return false;
        }
        if self.excludes.iter().any(|p| matches_pattern(t.path, p)) {
            return false;
        }
        let roles_ok = match &self.roles {
            Set::All => true,
            Set::Only(roles) => t.caller.roles.iter().any(|r| roles.contains(r)),
        };
        if !roles_ok || !self.methods.contains(t.method) {
            return false;
        }
        if t.method == "action" && !self.actions.contains(t.action.unwrap_or("")) {
            return false;
        }
        self.custom.as_ref().is_none_or(|e| eval(e, t, conditions))
    }
}

fn eval(e: &Expr, t: &Target<'_>, c: &mut Conditions) -> bool {
    match e {
        Expr::Not(e) => !eval(e, t, c),
        Expr::And(a, b) => eval(a, t, c) && eval(b, t, c),
        Expr::Or(a, b) => eval(a, t, c) || eval(b, t, c),
        Expr::Call(name, args) => helper(name, args, t, c),
    }
}

/// The caller's own object: `<component>/<id>`.
fn own_path(t: &Target<'_>) -> String {
    format!("{}/{}", t.caller.component, t.caller.user)
}

/// Top-level properties a create, update or patch writes (`None`: not a write).
pub(crate) fn written_properties(req: &Request) -> Option<Vec<String>> {
    match &req.op {
        Operation::Patch { .. } => Some(
            crate::crest::patch::parse_patch(&req.body)
                .map(|ops| {
                    ops.iter()
                        .flat_map(|o| [Some(&o.field), o.from.as_ref()])
                        .flatten()
                        .filter_map(|f| f.0.first().cloned())
                        .collect()
                })
                // An invalid patch is refused by the handler; no property passes here.
                .unwrap_or_else(|_| vec![String::new()]),
        ),
        Operation::Update { .. } | Operation::Create { .. } => Some(
            req.body
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| !matches!(k.as_str(), "_id" | "_rev"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Operation::Action { name } if name == "patch" => Some(vec![String::new()]),
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn helper(name: &str, args: &[Value], t: &Target<'_>, c: &mut Conditions) -> bool {
    match name {
        "ownDataOnly" => t.path == own_path(t),
        "ownRelationshipCollection" => {
            let own = own_path(t);
            let allowed = strings(args.first());
            t.path
                .strip_prefix(&own)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|rel| allowed.contains(&rel))
        }
        "disallowQueryExpression" => {
            !matches!(
                t.request.map(|r| &r.op),
                Some(Operation::Query(q)) if matches!(q.kind, QueryKind::Expression(_))
            ) && !t.path.contains("_queryExpression")
        }
        "disallowCommandAction" => !(t.method == "action" && t.action == Some("command")),
        "onlyEditableManagedObjectProperties" => {
            let Some(req) = t.request else {
                return false;
            };
            let Some(written) = written_properties(req) else {
                return true;
            };
            let type_name = args.first().and_then(Value::as_str).unwrap_or("user");
            let exceptions = strings(args.get(1));
            let Some(schema) = t.managed.types.get(type_name) else {
                return false;
            };
            // An update may carry properties the caller may not edit, unchanged (a `PUT`
            // of the object as read): IDM looks at the changed values only.
            let update = matches!(req.op, Operation::Update { .. });
            let mut ok = true;
            for p in &written {
                let editable = exceptions.contains(&p.as_str())
                    || schema.property(p).is_some_and(|prop| prop.user_editable);
                if editable {
                    continue;
                }
                if update && !p.is_empty() {
                    push_new(&mut c.unchanged, p);
                } else {
                    ok = false;
                }
            }
            ok
        }
        // IDM re-authenticates the caller when a protected property changes, and answers
        // true (or refuses the request). Here the protected properties written are noted;
        // whether they change and the re-authentication are asynchronous
        // ([`reauth::AccessGuard`]). Proxied requests (no parsed request) are not allowed.
        "reauthIfProtectedAttributeChange" => {
            let Some(req) = t.request else {
                return false;
            };
            let Some(written) = written_properties(req) else {
                return true;
            };
            let schema = t
                .path
                .strip_prefix("managed/")
                .and_then(|rest| rest.split('/').next())
                .and_then(|ty| t.managed.types.get(ty));
            for p in &written {
                if schema
                    .and_then(|s| s.property(p))
                    .is_some_and(|prop| prop.protected)
                {
                    push_new(&mut c.reauth, p);
                }
            }
            true
        }
        "restrictPatchToFields" => {
            let Some(req) = t.request else {
                return false;
            };
            let allowed = strings(args.first());
            match &req.op {
                Operation::Patch { .. } => written_properties(req)
                    .unwrap_or_default()
                    .iter()
                    .all(|p| allowed.contains(&p.as_str())),
                _ => false,
            }
        }
        "isQueryOneOf" => {
            let Some(Operation::Query(q)) = t.request.map(|r| &r.op) else {
                return false;
            };
            let QueryKind::Id(id) = &q.kind else {
                return false;
            };
            args.first()
                .and_then(|m| m.get(t.path))
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(id)))
        }
        _ => false,
    }
}

/// The rules' verdict on a local request (internal requests are not checked).
pub fn decide(access: &AccessConfig, managed: &ManagedSchema, req: &Request) -> Decision {
    if req.caller.is_internal() {
        return Decision::Allow;
    }
    let path = req.path_string();
    let (method, action) = match &req.op {
        Operation::Action { name } => ("action", Some(name.as_str())),
        op => (op.name(), None),
    };
    access.decide(&Target {
        path: &path,
        method,
        action,
        caller: &req.caller,
        request: Some(req),
        managed,
    })
}

/// The refusal of the access rules.
pub fn denied() -> ResourceError {
    ResourceError::forbidden("Access denied")
}

/// The `access.json` method and action of an HTTP request (for proxied requests, which
/// are not parsed into CREST requests).
pub fn http_method<'a>(
    method: &http::Method,
    query: Option<&'a str>,
    headers: &http::HeaderMap,
) -> (&'static str, Option<std::borrow::Cow<'a, str>>) {
    let param = |name: &str| {
        query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
        })
    };
    match *method {
        http::Method::GET | http::Method::HEAD => {
            if ["_queryFilter", "_queryId", "_queryExpression"]
                .iter()
                .any(|p| param(p).is_some())
            {
                ("query", None)
            } else {
                ("read", None)
            }
        }
        http::Method::POST => match param("_action") {
            Some(a) if a == "create" => ("create", None),
            Some(a) => ("action", Some(a)),
            None => ("create", None),
        },
        http::Method::PUT => {
            if headers
                .get(http::header::IF_NONE_MATCH)
                .is_some_and(|v| v == "*")
            {
                ("create", None)
            } else {
                ("update", None)
            }
        }
        http::Method::PATCH => ("patch", None),
        http::Method::DELETE => ("delete", None),
        _ => ("read", None),
    }
}

/// Shared form for the router: the live rules and schema.
pub type AccessSource = Arc<dyn Fn() -> (Arc<AccessConfig>, Arc<ManagedSchema>) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::{ROLE_ADMIN, ROLE_AUTHORIZED, ROLE_REG};
    use serde_json::json;

    fn caller(roles: &[&str]) -> Caller {
        Caller::new(
            "b1",
            "managed/user",
            roles.iter().map(|r| r.to_string()).collect(),
        )
    }

    fn allows(
        a: &AccessConfig,
        c: &Caller,
        path: &str,
        method: &str,
        action: Option<&str>,
    ) -> bool {
        a.allows(&Target {
            path,
            method,
            action,
            caller: c,
            request: None,
            managed: &ManagedSchema::default(),
        })
    }

    #[test]
    fn a_protected_write_of_ones_own_object_asks_for_reauthentication() {
        let a = AccessConfig::default();
        let managed = crate::managed::parse_managed(&json!({"objects": [{"name": "user",
        "schema": {"properties": {
            "password": {"type": "string", "isProtected": true, "userEditable": true},
            "givenName": {"type": "string", "userEditable": true}
        }}}]}))
        .unwrap();
        let decide_for = |roles: &[&str], op: Operation, body: Value| {
            let req = Request::new(op, "managed/user/b1", Arc::new(caller(roles))).with_body(body);
            decide(&a, &managed, &req)
        };
        let patch = |field: &str| json!([{"operation": "replace", "field": field, "value": "x"}]);
        let user = [ROLE_AUTHORIZED];
        assert_eq!(
            decide_for(&user, Operation::Patch { rev: None }, patch("/password")),
            Decision::Conditional(Conditions {
                unchanged: vec![],
                reauth: vec!["password".into()]
            })
        );
        // An update may carry what the caller may not edit, if it does not change it.
        assert_eq!(
            decide_for(
                &user,
                Operation::Update {
                    rev: None,
                    upsert: false
                },
                json!({"givenName": "B", "password": "x", "accountStatus": "active"})
            ),
            Decision::Conditional(Conditions {
                unchanged: vec!["accountStatus".into()],
                reauth: vec!["password".into()]
            })
        );
        assert_eq!(
            decide_for(
                &user,
                Operation::Patch { rev: None },
                patch("/accountStatus")
            ),
            Decision::Deny
        );
        assert_eq!(
            decide_for(&user, Operation::Patch { rev: None }, patch("/givenName")),
            Decision::Allow
        );
        // An administrator's rule allows it outright.
        assert_eq!(
            decide_for(
                &[ROLE_ADMIN, ROLE_AUTHORIZED],
                Operation::Patch { rev: None },
                patch("/password")
            ),
            Decision::Allow
        );
        // The shipped rules let authenticated users re-authenticate, and nobody else.
        let action = |roles: &[&str]| {
            let req = Request::new(
                Operation::Action {
                    name: "reauthenticate".into(),
                },
                "authentication",
                Arc::new(caller(roles)),
            );
            decide(&a, &managed, &req)
        };
        assert_eq!(action(&user), Decision::Allow);
        assert_eq!(action(&[ROLE_REG]), Decision::Deny);
    }

    #[test]
    fn patterns_as_idm() {
        assert!(matches_pattern("managed/user", "*"));
        assert!(matches_pattern("managed/user/1", "managed/*"));
        assert!(!matches_pattern("managed", "managed/*"));
        assert!(!matches_pattern("managedx/1", "managed/*"));
        assert!(matches_pattern("info/ping", "info/ping"));
        assert!(!matches_pattern("info/pingx", "info/ping"));
    }

    #[test]
    fn shipped_rules() {
        let a = AccessConfig::default();
        assert!(!a.rules.is_empty());
        let admin = caller(&[ROLE_ADMIN]);
        let user = caller(&[ROLE_AUTHORIZED]);
        let anon = caller(&["internal/role/openidm-reg"]);
        assert!(allows(&a, &admin, "managed/user", "query", None));
        assert!(allows(
            &a,
            &admin,
            "external/idm/dc2/managed/user",
            "query",
            None
        ));
        assert!(allows(&a, &admin, "system/ldap", "action", Some("test")));
        assert!(allows(&a, &user, "managed/user/b1", "read", None));
        assert!(!allows(&a, &user, "managed/user/b2", "read", None));
        assert!(!allows(&a, &user, "managed/user", "query", None));
        assert!(!allows(&a, &user, "managed/user/b1", "delete", None));
        assert!(!allows(
            &a,
            &user,
            "external/idm/dc2/managed/user/b1",
            "read",
            None
        ));
        assert!(allows(&a, &user, "info/login", "read", None));
        assert!(allows(&a, &anon, "info/ping", "read", None));
        assert!(!allows(&a, &anon, "info/login", "read", None));
        assert!(!allows(&a, &anon, "managed/user/b1", "read", None));
    }

    #[test]
    fn fields_as_idm() {
        let a = parse_access(&json!({"configs": [
            {"pattern": "external/idm/dc2/*", "roles": "internal/role/federation",
             "methods": "read,query,action", "actions": "test", "excludePatterns": "external/idm/dc2/internal/*"},
            {"servlet": "openicf", "pattern": "rcs", "roles": "x", "methods": "read"}
        ]}))
        .unwrap();
        let fed = caller(&["internal/role/federation"]);
        assert!(allows(
            &a,
            &fed,
            "external/idm/dc2/managed/user",
            "query",
            None
        ));
        assert!(allows(
            &a,
            &fed,
            "external/idm/dc2/system",
            "action",
            Some("test")
        ));
        assert!(!allows(
            &a,
            &fed,
            "external/idm/dc2/system",
            "action",
            Some("liveSync")
        ));
        assert!(!allows(
            &a,
            &fed,
            "external/idm/dc2/managed/user/1",
            "delete",
            None
        ));
        assert!(!allows(
            &a,
            &fed,
            "external/idm/dc2/internal/user",
            "query",
            None
        ));
        assert!(!allows(
            &a,
            &fed,
            "external/idm/dc1/managed/user",
            "query",
            None
        ));
        assert!(!allows(
            &a,
            &caller(&[ROLE_ADMIN]),
            "external/idm/dc2/managed/user",
            "query",
            None
        ));
    }

    #[test]
    fn bad_files_are_refused() {
        for (doc, needle) in [
            (json!({}), "configs"),
            (json!({"configs": [{"roles": "*"}]}), "pattern"),
            (
                json!({"configs": [{"pattern": "*", "methods": "read,fly"}]}),
                "fly",
            ),
            (
                json!({"configs": [{"pattern": "*", "customAuthz": "ownDataOnly("}]}),
                "customAuthz",
            ),
        ] {
            let e = parse_access(&doc).unwrap_err();
            assert!(e.iter().any(|p| p.contains(needle)), "{needle}: {e:?}");
        }
    }

    #[test]
    fn http_methods() {
        let h = http::HeaderMap::new();
        assert_eq!(
            http_method(&http::Method::GET, Some("_queryFilter=true"), &h).0,
            "query"
        );
        assert_eq!(http_method(&http::Method::GET, None, &h).0, "read");
        let (m, a) = http_method(&http::Method::POST, Some("_action=test"), &h);
        assert_eq!((m, a.as_deref()), ("action", Some("test")));
        assert_eq!(
            http_method(&http::Method::POST, Some("_action=create"), &h).0,
            "create"
        );
        assert_eq!(http_method(&http::Method::DELETE, None, &h).0, "delete");
    }
}
