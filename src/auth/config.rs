//! IDM's `conf/authentication.json`: the classic modules (`serverAuthContext.authModules`)
//! and `rsFilter` for OAuth2 bearer tokens.
//!
//! Supported modules: `STATIC_USER`, `INTERNAL_USER`, `MANAGED_USER`. Other modules
//! (`CLIENT_CERT`, `PASSTHROUGH`, `SOCIAL_PROVIDERS`, …) and `sessionModule` are accepted
//! and skipped with a warning, so an IDM administrator's file loads unchanged. Disabled
//! modules (`"enabled": false`) are skipped.
//!
//! Unlike IDM, `rsFilter` and the modules may be configured together (a gateway extra): a
//! request with `Authorization: Bearer` goes through `rsFilter`, any other through the
//! modules. Gateway extras inside `rsFilter`: `jwt` (local validation of JWT access tokens
//! against a JWKS) and `requestTimeoutMs` (introspection and JWKS calls, default 3000).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{from_env, substitute, Secret};

/// Config id of the file.
pub const AUTHENTICATION_CONFIG: &str = "authentication";

/// `&{openidm.admin.password}`: in the gateway the administrator's password lives in the
/// store (`internal/user/openidm-admin`, seeded and rotated from `gateway.json`
/// `adminPassword`), so a STATIC_USER with this password checks the stored one.
const ADMIN_PASSWORD_PROPERTY: &str = "openidm.admin.password";

pub const DEFAULT_CACHE_MAX: Duration = Duration::from_secs(300);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(3000);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A parsed `authentication.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// Enabled, supported modules, in file order (the first success wins).
    pub modules: Vec<AuthModule>,
    pub rs_filter: Option<RsFilterConfig>,
    /// Modules in the file that the gateway does not implement (logged at load).
    pub skipped: Vec<String>,
}

impl Default for AuthConfig {
    /// No `authentication.json`: internal users only, as the gateway did before the file
    /// was read.
    fn default() -> Self {
        AuthConfig {
            modules: vec![AuthModule::Resource(ResourceModule::internal_users())],
            rs_filter: None,
            skipped: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StaticPassword {
    Plain(Secret),
    /// A `$crypto` envelope (IDM 8's default for `anonymous`), checked with the keystore.
    Envelope(Value),
    /// `&{openidm.admin.password}`: the stored password of that internal user.
    Stored,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthModule {
    Static {
        username: String,
        password: StaticPassword,
        /// Where the account is said to live (`queryOnResource`, default `internal/user`).
        component: String,
        roles: Vec<String>,
    },
    Resource(ResourceModule),
}

/// How a module finds the account of a user name.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialQuery {
    /// `credential-query`: `/userName eq <name> and /accountStatus eq "active"`.
    ActiveUserName,
    /// `credential-internaluser-query` (and no `queryId`): the name is the `_id`.
    ById,
    /// No `queryId`: `/<authenticationId property> eq <name>`.
    Property(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceModule {
    /// `INTERNAL_USER` or `MANAGED_USER` (IDM's `moduleId`).
    pub module_id: &'static str,
    /// `internal/user` or `managed/<type>`.
    pub resource: String,
    pub query: CredentialQuery,
    /// `propertyMapping.userCredential`.
    pub credential: String,
    /// `propertyMapping.userRoles`: a relationship (or array of `_ref`s) granting roles.
    pub user_roles: Option<String>,
    pub default_roles: Vec<String>,
}

impl ResourceModule {
    pub fn internal_users() -> Self {
        ResourceModule {
            module_id: "INTERNAL_USER",
            resource: "internal/user".into(),
            query: CredentialQuery::ById,
            credential: "password".into(),
            user_roles: Some("authzRoles".into()),
            default_roles: Vec::new(),
        }
    }
}

/// `rsFilter.staticUserMapping[]` and `anonymousUserMapping`.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUser {
    /// `localUser` split: (`internal/user`, `openidm-admin`).
    pub component: String,
    pub id: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticSubject {
    pub subject: String,
    pub user: LocalUser,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubjectMapping {
    pub realm: Option<String>,
    pub query_on_resource: Option<String>,
    /// Type part of a compound subject `(type!name)` → resource.
    pub resource_type_mapping: BTreeMap<String, String>,
    /// Token claim → property of the resource to match (`{"sub": "_id"}` by default).
    pub property_mapping: Vec<(String, String)>,
    /// Relationship properties granting roles (`authzRoles/*` → `authzRoles`).
    pub user_roles: Vec<String>,
    pub default_roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    pub jwks_uri: url::Url,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub clock_skew: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RsFilterConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub introspect_url: Option<url::Url>,
    /// Scopes every token must carry.
    pub scopes: Vec<String>,
    /// `cache.maxTimeout`: the longest a token's verdict is kept.
    pub cache_max: Duration,
    pub static_users: Vec<StaticSubject>,
    pub subject_mappings: Vec<SubjectMapping>,
    pub anonymous: Option<LocalUser>,
    pub jwt: Option<JwtConfig>,
    pub request_timeout: Duration,
}

/// Parses and checks `authentication.json`; `&{…}` references are resolved from the
/// environment (`&{openidm.admin.password}` excepted, see [`StaticPassword::Stored`]).
pub fn parse_authentication(raw: &Value) -> Result<AuthConfig, Vec<String>> {
    let mut doc = raw.clone();
    let mut problems = Vec::new();
    let lookup = |name: &str| {
        from_env(name).or_else(|| (name == ADMIN_PASSWORD_PROPERTY).then(|| ADMIN_MARK.to_owned()))
    };
    problems.extend(substitute(&mut doc, &lookup));
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut config = AuthConfig {
        modules: Vec::new(),
        rs_filter: None,
        skipped: Vec::new(),
    };
    if let Some(ctx) = doc.get("serverAuthContext") {
        let modules = match ctx.get("authModules") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => {
                return Err(vec![
                    "/serverAuthContext/authModules: must be an array".into()
                ])
            }
        };
        for (i, m) in modules.iter().enumerate() {
            let at = format!("/serverAuthContext/authModules/{i}");
            match parse_module(m, &at) {
                Ok(Some(module)) => config.modules.push(module),
                Ok(None) => {
                    if m.get("enabled").and_then(Value::as_bool) != Some(false) {
                        let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
                        config.skipped.push(name.to_owned());
                    }
                }
                Err(e) => problems.push(e),
            }
        }
    }
    match doc.get("rsFilter") {
        None | Some(Value::Null) => {}
        Some(rs) => match parse_rs_filter(rs) {
            Ok(rs) => config.rs_filter = Some(rs),
            Err(e) => problems.extend(e),
        },
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// What `&{openidm.admin.password}` resolves to while parsing: a value no password can
/// be (it holds a NUL), recognised afterwards.
const ADMIN_MARK: &str = "\u{0}openidm.admin.password\u{0}";

fn strings(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{at}: must be an array of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{at}: must be a string or an array of strings")),
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{at}/{key}: must be a string")),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, String> {
    string(obj, key, at)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{at}/{key}: required"))
}

/// Roles as IDM writes them: `internal/role/x`; a bare name (OpenIDM ≤6) is qualified.
fn qualify_roles(roles: Vec<String>) -> Vec<String> {
    roles
        .into_iter()
        .map(|r| {
            if r.contains('/') {
                r
            } else {
                format!("internal/role/{r}")
            }
        })
        .collect()
}

fn parse_module(m: &Value, at: &str) -> Result<Option<AuthModule>, String> {
    let Some(obj) = m.as_object() else {
        return Err(format!("{at}: must be an object"));
    };
    if obj.get("enabled").and_then(Value::as_bool) == Some(false) {
        return Ok(None);
    }
    let name = required(obj, "name", at)?;
    let empty = Map::new();
    let props = match obj.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(format!("{at}/properties: must be an object")),
    };
    let pat = format!("{at}/properties");
    let roles = qualify_roles(strings(
        props.get("defaultUserRoles"),
        &format!("{pat}/defaultUserRoles"),
    )?);
    match name {
        "STATIC_USER" => {
            let username = required(props, "username", &pat)?.to_owned();
            let password = match props.get("password") {
                Some(Value::String(s)) if s == ADMIN_MARK => StaticPassword::Stored,
                Some(Value::String(s)) if s.contains(ADMIN_MARK) => {
                    return Err(format!(
                        "{pat}/password: &{{{ADMIN_PASSWORD_PROPERTY}}} must be the whole value"
                    ))
                }
                Some(Value::String(s)) => StaticPassword::Plain(Secret::new(s.clone())),
                Some(v @ Value::Object(o)) if o.contains_key("$crypto") => {
                    StaticPassword::Envelope(v.clone())
                }
                _ => {
                    return Err(format!(
                        "{pat}/password: required (a string or a $crypto value)"
                    ))
                }
            };
            let component = string(props, "queryOnResource", &pat)?
                .unwrap_or("internal/user")
                .trim_matches('/')
                .to_owned();
            Ok(Some(AuthModule::Static {
                username,
                password,
                component,
                roles,
            }))
        }
        "INTERNAL_USER" | "MANAGED_USER" => {
            let internal = name == "INTERNAL_USER";
            let resource = string(props, "queryOnResource", &pat)?
                .map(|r| r.trim_matches('/').to_owned())
                .unwrap_or_else(|| {
                    if internal {
                        "internal/user"
                    } else {
                        "managed/user"
                    }
                    .to_owned()
                });
            // The OpenIDM ≤6 spelling.
            let resource = resource
                .strip_prefix("repo/")
                .map(str::to_owned)
                .unwrap_or(resource);
            if resource != "internal/user"
                && !resource
                    .strip_prefix("managed/")
                    .is_some_and(|t| !t.is_empty() && !t.contains('/'))
            {
                return Err(format!(
                    "{pat}/queryOnResource: '{resource}' is not supported (internal/user or managed/<type>)"
                ));
            }
            let empty = Map::new();
            let mapping = match props.get("propertyMapping") {
                None | Some(Value::Null) => &empty,
                Some(Value::Object(m)) => m,
                Some(_) => return Err(format!("{pat}/propertyMapping: must be an object")),
            };
            let mat = format!("{pat}/propertyMapping");
            let auth_id = string(mapping, "authenticationId", &mat)?;
            let query = match string(props, "queryId", &pat)? {
                Some("credential-query") => CredentialQuery::ActiveUserName,
                Some("credential-internaluser-query") => CredentialQuery::ById,
                Some(other) => {
                    return Err(format!(
                        "{pat}/queryId: '{other}' is not supported (credential-query, credential-internaluser-query, or none with propertyMapping.authenticationId)"
                    ))
                }
                None if resource == "internal/user" => CredentialQuery::ById,
                None => CredentialQuery::Property(match auth_id {
                    Some("_id") => "_id".into(),
                    Some("username") | None => "userName".into(),
                    Some(p) => p.to_owned(),
                }),
            };
            let credential = string(mapping, "userCredential", &mat)?
                .unwrap_or("password")
                .to_owned();
            let user_roles = string(mapping, "userRoles", &mat)?
                .map(|r| r.trim_end_matches("/*").to_owned())
                .or_else(|| Some("authzRoles".into()));
            Ok(Some(AuthModule::Resource(ResourceModule {
                module_id: if internal {
                    "INTERNAL_USER"
                } else {
                    "MANAGED_USER"
                },
                resource,
                query,
                credential,
                user_roles,
                default_roles: roles,
            })))
        }
        _ => Ok(None),
    }
}

fn local_user(obj: &Map<String, Value>, at: &str) -> Result<LocalUser, String> {
    let local = required(obj, "localUser", at)?.trim_matches('/');
    let (component, id) = local
        .rsplit_once('/')
        .filter(|(c, id)| !c.is_empty() && !id.is_empty())
        .ok_or_else(|| {
            format!("{at}/localUser: must be <resource>/<id>, e.g. internal/user/openidm-admin")
        })?;
    Ok(LocalUser {
        component: component.to_owned(),
        id: id.to_owned(),
        roles: qualify_roles(strings(obj.get("roles"), &format!("{at}/roles"))?),
    })
}

fn parse_rs_filter(rs: &Value) -> Result<RsFilterConfig, Vec<String>> {
    let at = "/rsFilter";
    let Some(obj) = rs.as_object() else {
        return Err(vec![format!("{at}: must be an object")]);
    };
    let mut problems = Vec::new();
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(e);
        }
    };
    let mut client_id = String::new();
    let mut client_secret = Secret::new("");
    let mut introspect_url = None;
    note((|| {
        introspect_url = string(obj, "tokenIntrospectUrl", at)?
            .map(|u| {
                url::Url::parse(u)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| format!("{at}/tokenIntrospectUrl: not an http(s) URL"))
            })
            .transpose()?;
        if introspect_url.is_some() {
            client_id = required(obj, "clientId", at)?.to_owned();
            client_secret = Secret::new(required(obj, "clientSecret", at)?);
        }
        Ok(())
    })());
    let scopes = strings(obj.get("scopes"), &format!("{at}/scopes")).unwrap_or_else(|e| {
        note(Err(e));
        Vec::new()
    });
    let mut cache_max = DEFAULT_CACHE_MAX;
    if let Some(t) = obj.get("cache").and_then(|c| c.get("maxTimeout")) {
        match t.as_str().and_then(crate::config::duration::parse) {
            Some(d) => cache_max = d,
            None => note(Err(format!(
                "{at}/cache/maxTimeout: not a duration (e.g. \"300 seconds\")"
            ))),
        }
    }
    let mut request_timeout = DEFAULT_REQUEST_TIMEOUT;
    match obj.get("requestTimeoutMs") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64().filter(|n| (1..=60_000).contains(n)) {
            Some(ms) => request_timeout = Duration::from_millis(ms),
            None => note(Err(format!(
                "{at}/requestTimeoutMs: must be a number of milliseconds from 1 to 60000"
            ))),
        },
    }
    let mut static_users = Vec::new();
    if let Some(list) = obj.get("staticUserMapping") {
        match list.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let iat = format!("{at}/staticUserMapping/{i}");
                    note((|| {
                        let o = item
                            .as_object()
                            .ok_or_else(|| format!("{iat}: must be an object"))?;
                        static_users.push(StaticSubject {
                            subject: required(o, "subject", &iat)?.to_owned(),
                            user: local_user(o, &iat)?,
                        });
                        Ok(())
                    })());
                }
            }
            None => note(Err(format!("{at}/staticUserMapping: must be an array"))),
        }
    }
    let mut subject_mappings = Vec::new();
    match obj.get("subjectMapping") {
        None | Some(Value::Null) => {}
        // IDM 7.0 allowed a single object.
        Some(v) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for (i, item) in items.into_iter().enumerate() {
                let iat = format!("{at}/subjectMapping/{i}");
                match parse_subject_mapping(item, &iat) {
                    Ok(m) => subject_mappings.push(m),
                    Err(e) => note(Err(e)),
                }
            }
            let mut realms: Vec<Option<&str>> = subject_mappings
                .iter()
                .map(|m| m.realm.as_deref())
                .collect();
            realms.sort();
            if realms.windows(2).any(|w| w[0] == w[1]) {
                note(Err(format!(
                    "{at}/subjectMapping: at most one mapping per realm, and one without a realm"
                )));
            }
        }
    }
    let mut anonymous = None;
    if let Some(a) = obj.get("anonymousUserMapping").filter(|v| !v.is_null()) {
        let aat = format!("{at}/anonymousUserMapping");
        match a.as_object() {
            Some(o) => match local_user(o, &aat) {
                Ok(u) => anonymous = Some(u),
                Err(e) => note(Err(e)),
            },
            None => note(Err(format!("{aat}: must be an object"))),
        }
    }
    let mut jwt = None;
    if let Some(j) = obj.get("jwt").filter(|v| !v.is_null()) {
        let jat = format!("{at}/jwt");
        note((|| {
            let o = j
                .as_object()
                .ok_or_else(|| format!("{jat}: must be an object"))?;
            let jwks_uri = url::Url::parse(required(o, "jwksUri", &jat)?)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| format!("{jat}/jwksUri: not an http(s) URL"))?;
            let clock_skew = match o.get("clockSkewSeconds") {
                None | Some(Value::Null) => DEFAULT_CLOCK_SKEW,
                Some(v) => Duration::from_secs(
                    v.as_u64()
                        .filter(|s| *s <= 3600)
                        .ok_or_else(|| format!("{jat}/clockSkewSeconds: must be 0 to 3600"))?,
                ),
            };
            jwt = Some(JwtConfig {
                jwks_uri,
                issuer: string(o, "issuer", &jat)?.map(str::to_owned),
                audience: string(o, "audience", &jat)?.map(str::to_owned),
                clock_skew,
            });
            Ok(())
        })());
    }
    if introspect_url.is_none() && jwt.is_none() {
        problems.push(format!(
            "{at}: tokenIntrospectUrl (or the gateway's jwt.jwksUri) is required"
        ));
    }
    if subject_mappings.is_empty() && static_users.is_empty() {
        problems.push(format!(
            "{at}: at least one subjectMapping or staticUserMapping is required"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RsFilterConfig {
        client_id,
        client_secret,
        introspect_url,
        scopes,
        cache_max,
        static_users,
        subject_mappings,
        anonymous,
        jwt,
        request_timeout,
    })
}

fn parse_subject_mapping(v: &Value, at: &str) -> Result<SubjectMapping, String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{at}: must be an object"))?;
    let query_on_resource =
        string(o, "queryOnResource", at)?.map(|r| r.trim_matches('/').to_owned());
    let mut resource_type_mapping = BTreeMap::new();
    match o.get("resourceTypeMapping") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let r = v
                    .as_str()
                    .ok_or_else(|| format!("{at}/resourceTypeMapping/{k}: must be a string"))?;
                if r.contains("{{") {
                    return Err(format!(
                        "{at}/resourceTypeMapping/{k}: templates are not supported; name the resource"
                    ));
                }
                resource_type_mapping.insert(k.clone(), r.trim_matches('/').to_owned());
            }
        }
        Some(_) => return Err(format!("{at}/resourceTypeMapping: must be an object")),
    }
    if query_on_resource.is_none() && resource_type_mapping.is_empty() {
        return Err(format!(
            "{at}: resourceTypeMapping or queryOnResource is required"
        ));
    }
    for r in query_on_resource
        .iter()
        .chain(resource_type_mapping.values())
    {
        if !(r == "internal/user"
            || r.strip_prefix("managed/")
                .is_some_and(|t| !t.is_empty() && !t.contains('/')))
        {
            return Err(format!(
                "{at}: resource '{r}' is not supported (internal/user or managed/<type>)"
            ));
        }
    }
    let property_mapping = match o.get("propertyMapping") {
        None | Some(Value::Null) => vec![("sub".to_owned(), "_id".to_owned())],
        Some(Value::Object(m)) => m
            .iter()
            .map(|(claim, field)| {
                field
                    .as_str()
                    .map(|f| (claim.clone(), f.to_owned()))
                    .ok_or_else(|| format!("{at}/propertyMapping/{claim}: must be a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{at}/propertyMapping: must be an object")),
    };
    if property_mapping.is_empty() {
        return Err(format!("{at}/propertyMapping: must map at least one claim"));
    }
    let user_roles = strings(o.get("userRoles"), &format!("{at}/userRoles"))?
        .into_iter()
        .map(|r| r.trim_end_matches("/*").to_owned())
        .collect();
    Ok(SubjectMapping {
        realm: string(o, "realm", at)?.map(str::to_owned),
        query_on_resource,
        resource_type_mapping,
        property_mapping,
        user_roles,
        default_roles: qualify_roles(strings(
            o.get("defaultRoles"),
            &format!("{at}/defaultRoles"),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idm_default() -> Value {
        json!({"serverAuthContext": {
        "sessionModule": {"name": "JWT_SESSION", "properties": {"maxTokenLifeMinutes": 120}},
        "authModules": [
            {"name": "STATIC_USER", "enabled": true, "properties": {"queryOnResource": "internal/user",
                "username": "anonymous", "password": "anonymous", "defaultUserRoles": ["internal/role/openidm-reg"]}},
            {"name": "STATIC_USER", "enabled": true, "properties": {"queryOnResource": "internal/user",
                "username": "openidm-admin", "password": "&{openidm.admin.password}",
                "defaultUserRoles": ["internal/role/openidm-authorized", "internal/role/openidm-admin"]}},
            {"name": "MANAGED_USER", "enabled": true, "properties": {
                "augmentSecurityContext": {"type": "text/javascript", "source": "require('auth/customAuthz').setProtectedAttributes(security)"},
                "queryId": "credential-query", "queryOnResource": "managed/user",
                "propertyMapping": {"authenticationId": "username", "userCredential": "password", "userRoles": "authzRoles"},
                "defaultUserRoles": ["internal/role/openidm-authorized"]}},
            {"name": "SOCIAL_PROVIDERS", "enabled": true, "properties": {}},
            {"name": "CLIENT_CERT", "enabled": false, "properties": {}}
        ]}})
    }

    #[test]
    fn idm_default_file_loads() {
        let c = parse_authentication(&idm_default()).unwrap();
        assert_eq!(c.modules.len(), 3);
        assert_eq!(c.skipped, vec!["SOCIAL_PROVIDERS".to_owned()]);
        match &c.modules[1] {
            AuthModule::Static {
                username,
                password,
                roles,
                ..
            } => {
                assert_eq!(username, "openidm-admin");
                assert_eq!(password, &StaticPassword::Stored);
                assert_eq!(roles.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        match &c.modules[2] {
            AuthModule::Resource(m) => {
                assert_eq!(m.resource, "managed/user");
                assert_eq!(m.query, CredentialQuery::ActiveUserName);
                assert_eq!(m.user_roles.as_deref(), Some("authzRoles"));
                assert_eq!(
                    m.default_roles,
                    vec!["internal/role/openidm-authorized".to_owned()]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(c.rs_filter.is_none());
    }

    #[test]
    fn rs_filter_as_documented_loads() {
        let doc = json!({"rsFilter": {
            "clientId": "idm-resource-server", "clientSecret": "&{RS_SECRET_UNSET_FOR_TEST|password}",
            "tokenIntrospectUrl": "http://am.example.com:8080/am/oauth2/introspect",
            "scopes": ["fr:idm:*"], "cache": {"maxTimeout": "300 seconds"},
            "subjectMapping": [{"realm": "/", "resourceTypeMapping": {"usr": "managed/user"},
                "propertyMapping": {"sub": "_id"}, "userRoles": "authzRoles/*",
                "additionalUserFields": ["adminOfOrg"], "defaultRoles": ["internal/role/openidm-authorized"]}],
            "staticUserMapping": [{"subject": "(usr!amadmin)", "localUser": "internal/user/openidm-admin",
                "roles": ["internal/role/openidm-authorized", "internal/role/openidm-admin"]}],
            "anonymousUserMapping": {"localUser": "internal/user/anonymous", "roles": ["internal/role/openidm-reg"]}
        }});
        let c = parse_authentication(&doc).unwrap();
        let rs = c.rs_filter.unwrap();
        assert_eq!(rs.client_secret.expose(), "password");
        assert_eq!(rs.cache_max, Duration::from_secs(300));
        assert_eq!(rs.static_users[0].user.id, "openidm-admin");
        assert_eq!(rs.static_users[0].user.component, "internal/user");
        assert_eq!(
            rs.subject_mappings[0].user_roles,
            vec!["authzRoles".to_owned()]
        );
        assert_eq!(
            rs.anonymous.unwrap().roles,
            vec!["internal/role/openidm-reg".to_owned()]
        );
        // No classic module in the file: none (rsFilter alone, as in IDM).
        assert!(c.modules.is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_the_place() {
        for (doc, needle) in [
            (
                json!({"serverAuthContext": {"authModules": {}}}),
                "authModules",
            ),
            (
                json!({"serverAuthContext": {"authModules": [{"name": "STATIC_USER", "properties": {"username": "a"}}]}}),
                "password",
            ),
            (
                json!({"serverAuthContext": {"authModules": [{"name": "MANAGED_USER", "properties": {"queryId": "my-query"}}]}}),
                "queryId",
            ),
            (
                json!({"rsFilter": {"clientId": "a", "clientSecret": "b", "tokenIntrospectUrl": "ftp://x", "staticUserMapping": []}}),
                "tokenIntrospectUrl",
            ),
            (
                json!({"rsFilter": {"clientId": "a", "clientSecret": "b", "tokenIntrospectUrl": "http://x/i"}}),
                "subjectMapping",
            ),
            (
                json!({"rsFilter": {"tokenIntrospectUrl": "http://x/i", "staticUserMapping": [{"subject": "s", "localUser": "internal/user/a"}]}}),
                "clientId",
            ),
            (
                json!({"rsFilter": {"clientId": "a", "clientSecret": "b", "tokenIntrospectUrl": "http://x/i", "cache": {"maxTimeout": "soon"},
                "subjectMapping": [{"queryOnResource": "managed/user"}]}}),
                "maxTimeout",
            ),
            (
                json!({"rsFilter": {"clientId": "a", "clientSecret": "b", "tokenIntrospectUrl": "http://x/i",
                "subjectMapping": [{"propertyMapping": {"sub": "_id"}}]}}),
                "resourceTypeMapping",
            ),
            (
                json!({"rsFilter": {"clientId": "a", "clientSecret": "b", "tokenIntrospectUrl": "http://x/i",
                "subjectMapping": [{"queryOnResource": "managed/user"}, {"queryOnResource": "managed/user"}]}}),
                "one mapping per realm",
            ),
        ] {
            let problems = parse_authentication(&doc).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
    }
}
