//! The CREST request model: one operation on one resource path, independent of HTTP.
//! The HTTP edge builds it with [`super::http::request_from_http`]; internal callers
//! (reconciliation, scheduler) build it with the constructors below. Both go through the
//! same [`super::Router`].

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::caller::Caller;
use super::query::{CountPolicy, SortKey};
use super::ResourceError;

/// What is asked of the resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `GET`. `if_none_match`: answer 304 when the current revision equals it.
    Read { if_none_match: Option<String> },
    /// `POST ?_action=create` (`new_id` None: the server picks one) or
    /// `PUT` + `If-None-Match: *` (`new_id` = last path segment; the path is the collection).
    Create { new_id: Option<String> },
    /// `PUT`: replace. `rev` from `If-Match` (None or `*`: any revision). `upsert`: create
    /// when absent (a PUT with neither `If-Match` nor `If-None-Match`).
    Update { rev: Option<String>, upsert: bool },
    /// `PATCH` with a JSON patch body; `rev` from `If-Match`.
    Patch { rev: Option<String> },
    /// `DELETE`; `rev` from `If-Match`.
    Delete { rev: Option<String> },
    /// `GET` with `_queryFilter`, `_queryId` or `_queryExpression`.
    Query(Box<QueryParams>),
    /// `POST ?_action=<name>`.
    Action { name: String },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Read { .. } => "read",
            Operation::Create { .. } => "create",
            Operation::Update { .. } => "update",
            Operation::Patch { .. } => "patch",
            Operation::Delete { .. } => "delete",
            Operation::Query(_) => "query",
            Operation::Action { .. } => "action",
        }
    }
}

/// How the query selects objects.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKind {
    /// `_queryFilter` as written (parsed by the handler, which owns the error).
    Filter(String),
    /// `_queryId` (predefined query, e.g. `query-all-ids`).
    Id(String),
    /// `_queryExpression` (native query): refused by this gateway.
    Expression(String),
}

/// The query parameters of a query request.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryParams {
    pub kind: QueryKind,
    pub sort_keys: Vec<SortKey>,
    /// 0: no paging.
    pub page_size: usize,
    pub cookie: Option<String>,
    pub offset: usize,
    pub count_policy: CountPolicy,
}

impl QueryParams {
    pub fn filter(text: impl Into<String>) -> Self {
        Self {
            kind: QueryKind::Filter(text.into()),
            sort_keys: Vec::new(),
            page_size: 0,
            cookie: None,
            offset: 0,
            count_policy: CountPolicy::None,
        }
    }
}

/// Additional request parameters (`uid=…`, `mapping=…`), names compared
/// case-insensitively as CREST does. Reserved `_` parameters are parsed into the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `X-OpenIDM-Reauth-Password` of an HTTP request, with the client's address (failed
/// re-authentications count against the login throttle of the name and the address).
/// The password never appears in `Debug` output.
#[derive(Clone)]
pub struct Reauth {
    password: String,
    pub client: Option<std::net::IpAddr>,
}

impl Reauth {
    pub fn new(password: String, client: Option<std::net::IpAddr>) -> Self {
        Self { password, client }
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Reauth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reauth")
            .field("password", &"***")
            .field("client", &self.client)
            .finish()
    }
}

/// One CREST request.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Operation,
    /// Resource path segments after `openidm`, decoded: `["managed", "user", "abc"]`.
    pub path: Vec<String>,
    pub params: Params,
    /// JSON body (`Value::Null` when there is none).
    pub body: Value,
    /// `_fields`, as comma-separated lists (empty: default fields).
    pub fields: Vec<String>,
    pub pretty: bool,
    pub caller: Arc<Caller>,
    /// `resource=` of `Accept-API-Version`, when given.
    pub resource_version: Option<String>,
    /// The answer may be a [`super::Response::Stream`]: an HTTP edge writes it as it comes;
    /// internal callers (sync, scheduler) want whole pages.
    pub streamed: bool,
    /// The re-authentication password the HTTP request carries, if any (never forwarded,
    /// never stored).
    pub reauth: Option<Arc<Reauth>>,
}

impl Request {
    /// An internal request (no HTTP involved).
    pub fn new(op: Operation, path: &str, caller: Arc<Caller>) -> Self {
        Self {
            op,
            path: split_path(path),
            params: Params::new(),
            body: Value::Null,
            fields: Vec::new(),
            pretty: false,
            caller,
            resource_version: None,
            streamed: false,
            reauth: None,
        }
    }

    pub fn with_body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }

    pub fn with_params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// `managed/user/abc`.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// A required additional parameter, with a 400 naming it when missing.
    pub fn required_param(&self, name: &str) -> Result<&str, ResourceError> {
        self.param(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ResourceError::bad_request(format!("The parameter '{name}' is required"))
        })
    }

    /// The body as a JSON object, or a 400 saying it must be one.
    pub fn body_object(&self) -> Result<&serde_json::Map<String, Value>, ResourceError> {
        match &self.body {
            Value::Object(map) => Ok(map),
            Value::Null => Err(ResourceError::bad_request(
                "The request requires a JSON object body",
            )),
            _ => Err(ResourceError::bad_request(
                "The request body must be a JSON object",
            )),
        }
    }

    /// The action's name, for a service that answers only actions on its own path
    /// (`external/rest`, `external/email`): `rest` (the path below it) must be empty.
    pub fn service_action(&self, rest: &[String]) -> Result<&str, ResourceError> {
        if !rest.is_empty() {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                self.path_string()
            )));
        }
        match &self.op {
            Operation::Action { name } => Ok(name),
            _ => Err(self.not_supported()),
        }
    }

    pub fn not_supported(&self) -> ResourceError {
        ResourceError::not_supported(format!(
            "Operation {} is not supported on resource 'openidm/{}'",
            self.op.name(),
            self.path_string()
        ))
    }
}

/// `a/b/c` → `["a","b","c"]`, ignoring empty segments.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Joins path segments for messages.
pub fn join_path(segments: &[impl AsRef<str>]) -> Cow<'static, str> {
    Cow::Owned(
        segments
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join("/"),
    )
}
