//! `conf/external.idm-<name>.json`: the disk format of a remote IDM instance, validated and
//! lowered once into [`InstanceConfig`], the only form the rest of the gateway sees.
//!
//! Validation collects every problem in the file before giving up, so an operator fixes a
//! file in one edit, not one error at a time.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

/// Default TCP/TLS connect timeout to a remote instance.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to wait for the remote's response (header or next body chunk).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a URL stays down after a failed connect (`health.downForMs`).
pub const DEFAULT_DOWN_FOR: Duration = Duration::from_secs(10);
/// Most URLs of one instance: `instanceUrl` plus `failoverUrls`.
pub const MAX_INSTANCE_URLS: usize = 8;

/// A string that must never be printed: Debug and Display show `***`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How client credentials reach the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteAuth {
    Basic { user_name: String, password: Secret },
    Bearer(BearerConfig),
}

/// OAuth2 client-credentials settings of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BearerConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub token_endpoint: Url,
    pub scope: Vec<String>,
    pub scope_delimiter: String,
    pub auth_method: TokenAuthMethod,
}

impl InstanceConfig {
    /// `instanceUrl`, then the `failoverUrls`, in the order they are tried.
    pub fn urls(&self) -> impl Iterator<Item = &InstanceUrl> {
        std::iter::once(&self.url).chain(&self.failover_urls)
    }
}

impl BearerConfig {
    /// The `scope` parameter as sent: scopes joined with the configured delimiter.
    pub fn scope_param(&self) -> Option<String> {
        (!self.scope.is_empty()).then(|| self.scope.join(&self.scope_delimiter))
    }
}

/// Where a remote instance lives, split once so the hot path does no URL parsing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path of `instanceUrl`, always ending in `/` (e.g. `/openidm/`).
    pub base_path: String,
    /// `Host` header value: host, plus `:port` when it is not the scheme's default.
    pub authority: String,
}

impl InstanceUrl {
    /// `http(s)://authority/base/path/`: the URL as configured, normalised (it never holds
    /// credentials, a query or a fragment), for requests, logs and metric labels.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// Gateway extra `health`: when a URL of an instance counts as down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthConfig {
    /// A URL whose connect was refused, reset or timed out is skipped this long; then one
    /// request (or check) tries it again.
    pub down_for: Duration,
    /// `GET <url>/info/ping` on every URL this often; `None`: no active checks.
    pub check_interval: Option<Duration>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            down_for: DEFAULT_DOWN_FOR,
            check_interval: None,
        }
    }
}

/// A validated remote instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceConfig {
    pub name: String,
    pub enabled: bool,
    pub url: InstanceUrl,
    /// Gateway extra `failoverUrls`: tried in order after `url` when it is down.
    pub failover_urls: Vec<InstanceUrl>,
    pub health: HealthConfig,
    pub auth: RemoteAuth,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Gateway extra `queryFilterIn` (default false): the remote answers IDM's `in` filter
    /// operator (another idm-gateway does), so the sync engine may batch reads by id with it.
    pub query_filter_in: bool,
}

/// Validates a substituted `external.idm-<name>.json` document.
/// Returns every problem, each as `property: what is wrong`.
pub fn parse_instance(name: &str, doc: &Value) -> Result<InstanceConfig, Vec<String>> {
    let mut problems = Vec::new();
    if !valid_instance_name(name) {
        problems.push(format!(
            "instance name '{name}' must be 1-64 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    let Some(obj) = doc.as_object() else {
        return Err(vec!["the file must contain a JSON object".into()]);
    };
    let mut p = Props {
        obj,
        problems: &mut problems,
    };

    let enabled = p.bool("enabled").unwrap_or(true);
    let auth_type = p.required_str("authType");
    let url = p
        .required_str("instanceUrl")
        .and_then(|u| p.instance_url("instanceUrl", &u));
    let failover_urls = p.failover_urls(url.as_ref());
    let health = p.health();
    let connect_timeout = p
        .millis("connectTimeout")
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let read_timeout = p.millis("readTimeout").unwrap_or(DEFAULT_READ_TIMEOUT);
    let query_filter_in = p.bool("queryFilterIn").unwrap_or(false);

    let auth = match auth_type.as_deref() {
        Some("basic") => {
            let user_name = p.required_str("userName");
            let password = p.required_str("password");
            match (user_name, password) {
                (Some(user_name), Some(password)) => Some(RemoteAuth::Basic {
                    user_name,
                    password: Secret::new(password),
                }),
                _ => None,
            }
        }
        Some("bearer") => {
            let client_id = p.required_str("clientId");
            let client_secret = p.required_str("clientSecret");
            let token_endpoint = p
                .required_str("tokenEndpoint")
                .and_then(|u| p.http_url("tokenEndpoint", &u));
            let scope = p.string_array("scope").unwrap_or_default();
            let scope_delimiter = p.str("scopeDelimiter").unwrap_or_else(|| " ".into());
            if scope_delimiter.is_empty() {
                p.problem("scopeDelimiter", "must not be empty");
            }
            let auth_method = match p.str("tokenEndpointAuthMethod").as_deref() {
                None | Some("client_secret_basic") => Some(TokenAuthMethod::ClientSecretBasic),
                Some("client_secret_post") => Some(TokenAuthMethod::ClientSecretPost),
                Some(other) => {
                    p.problem(
                        "tokenEndpointAuthMethod",
                        &format!(
                            "'{other}' is not supported; use client_secret_basic or client_secret_post"
                        ),
                    );
                    None
                }
            };
            match (client_id, client_secret, token_endpoint, auth_method) {
                (Some(client_id), Some(client_secret), Some(token_endpoint), Some(auth_method)) => {
                    Some(RemoteAuth::Bearer(BearerConfig {
                        client_id,
                        client_secret: Secret::new(client_secret),
                        token_endpoint,
                        scope,
                        scope_delimiter,
                        auth_method,
                    }))
                }
                _ => None,
            }
        }
        Some(other) => {
            p.problem(
                "authType",
                &format!("'{other}' is not supported; use basic or bearer"),
            );
            None
        }
        None => None,
    };

    match (url, auth) {
        (Some(url), Some(auth)) if problems.is_empty() => Ok(InstanceConfig {
            name: name.to_owned(),
            enabled,
            url,
            failover_urls,
            health,
            auth,
            connect_timeout,
            read_timeout,
            query_filter_in,
        }),
        _ => Err(problems),
    }
}

/// Instance names become URL segments, file names and metric labels: keep them plain.
pub fn valid_instance_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Typed property access that records problems instead of stopping at the first one.
struct Props<'a> {
    obj: &'a Map<String, Value>,
    problems: &'a mut Vec<String>,
}

impl Props<'_> {
    fn problem(&mut self, prop: &str, what: &str) {
        self.problems.push(format!("{prop}: {what}"));
    }

    fn str(&mut self, prop: &str) -> Option<String> {
        match self.obj.get(prop) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(prop, &format!("must be a string, found {}", kind(other)));
                None
            }
        }
    }

    fn required_str(&mut self, prop: &str) -> Option<String> {
        let present = matches!(self.obj.get(prop), Some(v) if !v.is_null());
        match self.str(prop) {
            Some(s) if s.is_empty() => {
                self.problem(prop, "is required and must not be empty");
                None
            }
            Some(s) => Some(s),
            None => {
                if !present {
                    self.problem(prop, "is required");
                }
                None
            }
        }
    }

    fn bool(&mut self, prop: &str) -> Option<bool> {
        match self.obj.get(prop) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            // IDM writes booleans as strings after property substitution.
            Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
            Some(other) => {
                self.problem(prop, &format!("must be a boolean, found {}", kind(other)));
                None
            }
        }
    }

    fn millis(&mut self, prop: &str) -> Option<Duration> {
        let value = self.obj.get(prop)?;
        let ms = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Null => return None,
            _ => None,
        };
        match ms {
            Some(ms) if (1..=3_600_000).contains(&ms) => Some(Duration::from_millis(ms)),
            _ => {
                self.problem(
                    prop,
                    "must be a whole number of milliseconds between 1 and 3600000",
                );
                None
            }
        }
    }

    fn string_array(&mut self, prop: &str) -> Option<Vec<String>> {
        match self.obj.get(prop) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) if !s.is_empty() => out.push(s.to_owned()),
                        _ => self.problem(&format!("{prop}/{i}"), "must be a non-empty string"),
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.problem(
                    prop,
                    &format!("must be an array of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn http_url(&mut self, prop: &str, raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    self.problem(prop, "must not embed credentials in the URL");
                    return None;
                }
                Some(u)
            }
            Ok(_) => {
                self.problem(prop, "must be an http or https URL with a host");
                None
            }
            Err(e) => {
                self.problem(prop, &format!("is not a valid URL ({e})"));
                None
            }
        }
    }

    /// `failoverUrls`: an array of URLs like `instanceUrl`, none repeated.
    fn failover_urls(&mut self, primary: Option<&InstanceUrl>) -> Vec<InstanceUrl> {
        let raw = match self.obj.get("failoverUrls") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                self.problem(
                    "failoverUrls",
                    &format!("must be an array of URLs, found {}", kind(other)),
                );
                return Vec::new();
            }
        };
        if raw.len() + 1 > MAX_INSTANCE_URLS {
            self.problem(
                "failoverUrls",
                &format!(
                    "at most {} URLs (with instanceUrl, {MAX_INSTANCE_URLS})",
                    MAX_INSTANCE_URLS - 1
                ),
            );
            return Vec::new();
        }
        let mut out: Vec<InstanceUrl> = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let prop = format!("failoverUrls/{i}");
            let Some(text) = item.as_str().filter(|s| !s.is_empty()) else {
                self.problem(&prop, "must be a non-empty string");
                continue;
            };
            let Some(url) = self.instance_url(&prop, text) else {
                continue;
            };
            if primary.is_some_and(|p| p.base_url() == url.base_url())
                || out.iter().any(|u| u.base_url() == url.base_url())
            {
                self.problem(&prop, &format!("'{}' is already listed", url.base_url()));
                continue;
            }
            out.push(url);
        }
        out
    }

    /// `health`: `{"downForMs": 1..3600000, "checkIntervalMs": 0..3600000}` (0: no checks).
    fn health(&mut self) -> HealthConfig {
        let mut health = HealthConfig::default();
        let obj = match self.obj.get("health") {
            None | Some(Value::Null) => return health,
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.problem(
                    "health",
                    &format!("must be an object, found {}", kind(other)),
                );
                return health;
            }
        };
        for key in obj.keys() {
            if !matches!(key.as_str(), "downForMs" | "checkIntervalMs") {
                self.problem(
                    &format!("health/{key}"),
                    "is not known; use downForMs or checkIntervalMs",
                );
            }
        }
        match whole_millis(obj.get("downForMs")) {
            None => {}
            Some(Some(ms)) if (1..=3_600_000).contains(&ms) => {
                health.down_for = Duration::from_millis(ms)
            }
            Some(_) => self.problem(
                "health/downForMs",
                "must be a whole number of milliseconds between 1 and 3600000",
            ),
        }
        match whole_millis(obj.get("checkIntervalMs")) {
            None | Some(Some(0)) => {}
            Some(Some(ms)) if ms <= 3_600_000 => {
                health.check_interval = Some(Duration::from_millis(ms))
            }
            Some(_) => self.problem(
                "health/checkIntervalMs",
                "must be a whole number of milliseconds between 0 (no checks) and 3600000",
            ),
        }
        health
    }

    fn instance_url(&mut self, prop: &str, raw: &str) -> Option<InstanceUrl> {
        let url = self.http_url(prop, raw)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(prop, "must not have a query string or fragment");
            return None;
        }
        let tls = url.scheme() == "https";
        let host = match url.host()? {
            url::Host::Ipv6(ip) => ip.to_string(),
            other => other.to_string(),
        };
        let port = url.port_or_known_default()?;
        let mut base_path = url.path().to_owned();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        let authority = match url.port() {
            Some(port) if url.host_str()?.contains(':') => format!("[{host}]:{port}"),
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_owned(),
        };
        Some(InstanceUrl {
            tls,
            host,
            port,
            base_path,
            authority,
        })
    }
}

/// `None`: absent; `Some(None)`: present but not a whole number (as a number or a string,
/// the form property substitution leaves).
fn whole_millis(value: Option<&Value>) -> Option<Option<u64>> {
    match value? {
        Value::Null => None,
        Value::Number(n) => Some(n.as_u64()),
        Value::String(s) => Some(s.parse::<u64>().ok()),
        _ => Some(None),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_basic_example_is_valid() {
        let doc = json!({
          "enabled" : true,
          "authType" : "basic",
          "instanceUrl" : "https://localhost:8443/openidm/",
          "userName" : "openidm-admin",
          "password" : "openidm-admin"
        });
        let c = parse_instance("name1", &doc).unwrap();
        assert!(c.enabled);
        assert_eq!(c.url.host, "localhost");
        assert_eq!(c.url.port, 8443);
        assert!(c.url.tls);
        assert_eq!(c.url.base_path, "/openidm/");
        assert_eq!(c.url.authority, "localhost:8443");
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn seed_bearer_example_is_valid_with_defaults() {
        let doc = json!({
          "authType" : "bearer",
          "instanceUrl" : "https://fr-platform.iam.example.com/openidm",
          "clientId" : "idm-provisioning",
          "clientSecret" : "password",
          "scope" : [ "fr:idm:*", "openid" ],
          "tokenEndpoint" : "https://fr-platform.iam.example.com/am/oauth2/realms/root/access_token"
        });
        let c = parse_instance("fidc", &doc).unwrap();
        assert_eq!(c.url.authority, "fr-platform.iam.example.com");
        assert_eq!(c.url.port, 443);
        assert_eq!(c.url.base_path, "/openidm/");
        let RemoteAuth::Bearer(b) = c.auth else {
            panic!("bearer expected")
        };
        assert_eq!(b.auth_method, TokenAuthMethod::ClientSecretBasic);
        assert_eq!(b.scope_param().as_deref(), Some("fr:idm:* openid"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let doc = json!({
          "enabled" : "yes",
          "authType" : "bearer",
          "instanceUrl" : "ftp://x/",
          "clientSecret" : 5,
          "scope": "a b",
          "tokenEndpointAuthMethod": "private_key_jwt",
          "readTimeout": -1
        });
        let problems = parse_instance("x", &doc).unwrap_err();
        let text = problems.join("\n");
        for needle in [
            "enabled: must be a boolean",
            "instanceUrl: must be an http or https URL",
            "clientId: is required",
            "clientSecret: must be a string, found a number",
            "tokenEndpoint: is required",
            "scope: must be an array of strings",
            "tokenEndpointAuthMethod: 'private_key_jwt' is not supported",
            "readTimeout: must be a whole number",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn basic_requires_credentials_and_secrets_never_print() {
        let problems = parse_instance(
            "b",
            &json!({"authType":"basic","instanceUrl":"http://127.0.0.1:9/openidm/"}),
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec!["userName: is required", "password: is required"]
        );

        let c = parse_instance(
            "b",
            &json!({"authType":"basic","instanceUrl":"http://[::1]:9/","userName":"u","password":"hunter2"}),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.url.host, "::1");
        assert_eq!(c.url.authority, "[::1]:9");
    }

    #[test]
    fn unknown_auth_type_and_bad_names_are_rejected() {
        let problems = parse_instance(
            "../x",
            &json!({"authType":"kerberos","instanceUrl":"http://h/"}),
        )
        .unwrap_err();
        assert!(problems[0].contains("instance name"), "{problems:?}");
        assert!(problems[1].contains("authType: 'kerberos'"), "{problems:?}");
        assert!(parse_instance("x", &json!([1])).is_err());
    }

    #[test]
    fn credentials_in_url_are_refused() {
        let problems = parse_instance(
            "x",
            &json!({"authType":"basic","instanceUrl":"http://a:b@h/","userName":"u","password":"p"}),
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec!["instanceUrl: must not embed credentials in the URL"]
        );
    }

    #[test]
    fn failover_urls_and_health_are_parsed_in_order() {
        let c = parse_instance(
            "f",
            &json!({"authType":"basic","instanceUrl":"http://a:8080/openidm","userName":"u","password":"p",
                    "failoverUrls":["https://b/openidm/","http://c:9/idm"],
                    "health":{"downForMs":"2500","checkIntervalMs":1000}}),
        )
        .unwrap();
        let urls: Vec<String> = c.urls().map(|u| u.base_url()).collect();
        assert_eq!(
            urls,
            [
                "http://a:8080/openidm/",
                "https://b/openidm/",
                "http://c:9/idm/"
            ]
        );
        assert_eq!(c.health.down_for, Duration::from_millis(2500));
        assert_eq!(c.health.check_interval, Some(Duration::from_secs(1)));

        let plain = parse_instance(
            "f",
            &json!({"authType":"basic","instanceUrl":"http://a/","userName":"u","password":"p",
                    "health":{"checkIntervalMs":0}}),
        )
        .unwrap();
        assert!(plain.failover_urls.is_empty());
        assert_eq!(plain.health, HealthConfig::default());
    }

    #[test]
    fn bad_failover_urls_and_health_refuse_the_file() {
        let problems = parse_instance(
            "f",
            &json!({"authType":"basic","instanceUrl":"http://a/openidm/","userName":"u","password":"p",
                    "failoverUrls":["http://a/openidm","ftp://b/","http://u:pw@c/","http://d/?x=1", 7],
                    "health":{"downForMs":0,"checkIntervalMs":-5,"retries":2}}),
        )
        .unwrap_err();
        let text = problems.join("\n");
        for needle in [
            "failoverUrls/0: 'http://a/openidm/' is already listed",
            "failoverUrls/1: must be an http or https URL",
            "failoverUrls/2: must not embed credentials",
            "failoverUrls/3: must not have a query string",
            "failoverUrls/4: must be a non-empty string",
            "health/downForMs: must be a whole number",
            "health/checkIntervalMs: must be a whole number",
            "health/retries: is not known",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(!text.contains("pw"), "a password in a problem: {text}");

        let too_many: Vec<String> = (0..MAX_INSTANCE_URLS)
            .map(|i| format!("http://h{i}/"))
            .collect();
        let problems = parse_instance(
            "f",
            &json!({"authType":"basic","instanceUrl":"http://a/","userName":"u","password":"p",
                    "failoverUrls": too_many, "health": "yes"}),
        )
        .unwrap_err();
        assert!(
            problems[0].starts_with("failoverUrls: at most 7 URLs"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("health: must be an object"),
            "{problems:?}"
        );
    }
}
