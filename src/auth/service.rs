//! Who the caller is: the request's credentials checked against the live
//! `authentication.json`.
//!
//! * `Authorization: Bearer` → `rsFilter` (401 when none is configured);
//! * `X-OpenIDM-Username`/`-Password` or Basic → the classic modules, behind the verified-
//!   credential cache, the login throttle and the bounded verification queue;
//! * nothing → `rsFilter.anonymousUserMapping` when configured, else 401.
//!
//! Re-authentication ([`Authn::reauthenticate`], `X-OpenIDM-Reauth-Password`) is a login
//! with the caller's own account through the same cache, queue and throttle.
//!
//! The modules and the token cache are rebuilt when `authentication.json` (or the trust
//! in `certs/`) changes; an account's cached verdicts are dropped when it is written.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use http::HeaderMap;

use super::cache::{CachingAuthenticator, Refusal};
use super::config::{AuthConfig, AuthModule, CredentialQuery};
use super::modules::ModuleChain;
use super::rsfilter::{RsFilter, TokenError};
use super::throttle::{LoginThrottle, LoginThrottleConfig};
use super::{credentials_from_headers, Caller, CredentialsError};
use crate::access::reauth::{ReauthRefusal, Reauthenticator};
use crate::config::Trust;
use crate::crest::Reauth;
use crate::crypto::Crypto;
use crate::events::{Change, ChangeHook};
use crate::metrics::Metrics;
use crate::repo::Repo;

/// Why a request has no caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    NoCredentials,
    #[error("malformed credentials: {0}")]
    Malformed(CredentialsError),
    #[error("wrong user name or password")]
    Rejected,
    #[error("{0}")]
    Token(TokenError),
    /// Too many failed logins for the name or the address, or too many verifications
    /// waiting: retry after the duration.
    #[error("too many login attempts")]
    Throttled(std::time::Duration),
}

impl AuthError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::NoCredentials => "none",
            AuthError::Malformed(_) => "malformed",
            AuthError::Rejected => "credentials",
            AuthError::Token(TokenError::Unavailable(_)) => "token_unavailable",
            AuthError::Token(_) => "token",
            AuthError::Throttled(_) => "throttled",
        }
    }
}

struct Built {
    config: Arc<AuthConfig>,
    trust: Arc<Trust>,
    modules: Arc<CachingAuthenticator>,
    rs: Option<Arc<RsFilter>>,
}

pub struct Authn {
    repo: Arc<dyn Repo>,
    crypto: Option<Arc<Crypto>>,
    metrics: Arc<Metrics>,
    throttle: LoginThrottle,
    queue: usize,
    built: ArcSwapOption<Built>,
    rebuild: Mutex<()>,
}

impl Authn {
    pub fn new(
        repo: Arc<dyn Repo>,
        crypto: Option<Arc<Crypto>>,
        metrics: Arc<Metrics>,
        throttle: &LoginThrottleConfig,
    ) -> Self {
        Self {
            repo,
            crypto,
            metrics,
            throttle: LoginThrottle::new(throttle),
            queue: throttle.verification_queue,
            built: ArcSwapOption::empty(),
            rebuild: Mutex::new(()),
        }
    }

    /// The modules and token filter of `config`, built once per config and trust.
    fn built(&self, config: &Arc<AuthConfig>, trust: &Arc<Trust>) -> Arc<Built> {
        let fresh = |b: &Built| Arc::ptr_eq(&b.config, config) && Arc::ptr_eq(&b.trust, trust);
        if let Some(b) = self.built.load_full().filter(|b| fresh(b)) {
            return b;
        }
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = self.built.load_full().filter(|b| fresh(b)) {
            return b;
        }
        let chain = ModuleChain::new(
            config.modules.clone(),
            self.repo.clone(),
            self.crypto.clone(),
        );
        let rs = config.rs_filter.clone().and_then(|c| {
            RsFilter::new(c, trust, self.repo.clone(), self.metrics.clone())
                .map_err(|e| tracing::error!(error = %e, "rsFilter is off"))
                .ok()
                .map(Arc::new)
        });
        for skipped in &config.skipped {
            tracing::warn!(module = %skipped, "authentication module not supported by the gateway; skipped");
        }
        let built = Arc::new(Built {
            config: config.clone(),
            trust: trust.clone(),
            modules: Arc::new(CachingAuthenticator::with_queue(
                Arc::new(chain),
                self.queue,
            )),
            rs,
        });
        self.built.store(Some(built.clone()));
        built
    }

    /// The caller of a request with `headers`, from `client` (for the login throttle).
    pub async fn authenticate(
        &self,
        config: &Arc<AuthConfig>,
        trust: &Arc<Trust>,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Arc<Caller>, AuthError> {
        let built = self.built(config, trust);
        let result = self.authenticate_with(&built, headers, client).await;
        if let Err(e) = &result {
            self.metrics
                .login_failures
                .with_label_values(&[e.reason()])
                .inc();
        }
        result
    }

    async fn authenticate_with(
        &self,
        built: &Built,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Arc<Caller>, AuthError> {
        if let Some(token) = bearer(headers) {
            let Some(rs) = &built.rs else {
                return Err(AuthError::Token(TokenError::Invalid(
                    "bearer tokens are not accepted (no rsFilter)".into(),
                )));
            };
            return rs.authenticate(token).await.map_err(|e| {
                match &e {
                    TokenError::Unavailable(why) => {
                        tracing::warn!(reason = %why, "a bearer token could not be checked")
                    }
                    other => tracing::info!(reason = %other, "bearer token refused"),
                }
                AuthError::Token(e)
            });
        }
        let (user, password) = match credentials_from_headers(headers) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return built
                    .rs
                    .as_ref()
                    .and_then(|rs| rs.anonymous())
                    .ok_or(AuthError::NoCredentials)
            }
            Err(e) => return Err(AuthError::Malformed(e)),
        };
        if built.config.modules.is_empty() {
            return Err(AuthError::Rejected);
        }
        // Verified recently: no throttle, no queue.
        if let Some(caller) = built.modules.cached(&user, &password).await {
            return Ok(caller);
        }
        if let Some(wait) = self.throttle.throttled(Some(&user), client) {
            tracing::warn!(user = %user, client = ?client, "login throttled after repeated failures");
            return Err(AuthError::Throttled(wait));
        }
        match built.modules.check(&user, &password).await {
            Ok(caller) => Ok(caller),
            Err(Refusal::Busy) => Err(AuthError::Throttled(std::time::Duration::from_secs(1))),
            Err(Refusal::Rejected) => {
                // The name tried, never the password.
                tracing::warn!(user = %user, client = ?client, "login failed");
                self.throttle.failed(Some(&user), client);
                Err(AuthError::Rejected)
            }
        }
    }

    /// Checks `reauth`'s password against the caller's own account, through the module
    /// that authenticates that account (as a login with the account's authentication id:
    /// the verified-credential cache, the bounded verification queue, and the login
    /// throttle, which counts a wrong password as a failed login). Callers that did not log
    /// in with a password (bearer tokens) cannot re-authenticate with one.
    pub async fn reauthenticate(
        &self,
        config: &Arc<AuthConfig>,
        trust: &Arc<Trust>,
        caller: &Caller,
        reauth: Option<&Reauth>,
    ) -> Result<(), ReauthRefusal> {
        let Some(reauth) = reauth.filter(|r| !r.password().is_empty()) else {
            return Err(ReauthRefusal::Missing);
        };
        let client = reauth.client;
        let failed = |name: &str| ReauthRefusal::Failed {
            name: name.to_owned(),
        };
        if !caller.password_login() {
            tracing::info!(user = %caller.user, "re-authentication refused: the caller did not log in with a password");
            return Err(failed(&caller.user));
        }
        let built = self.built(config, trust);
        let Some(name) = self.authentication_id(&built.config, caller).await else {
            tracing::info!(user = %caller.user, "re-authentication refused: no module authenticates the caller's account");
            return Err(failed(&caller.user));
        };
        if let Some(wait) = self.throttle.throttled(Some(&name), client) {
            tracing::warn!(user = %name, client = ?client, "re-authentication throttled after repeated failures");
            return Err(ReauthRefusal::Throttled(wait));
        }
        let same = |c: &Caller| c.component == caller.component && c.user == caller.user;
        match built.modules.check(&name, reauth.password()).await {
            Ok(c) if same(&c) => Ok(()),
            Err(Refusal::Busy) => Err(ReauthRefusal::Throttled(std::time::Duration::from_secs(1))),
            // A wrong password, or the name is another account's (an earlier module).
            Ok(_) | Err(Refusal::Rejected) => {
                // The name, never the password.
                tracing::warn!(user = %name, client = ?client, "re-authentication failed");
                self.throttle.failed(Some(&name), client);
                self.metrics
                    .login_failures
                    .with_label_values(&[AuthError::Rejected.reason()])
                    .inc();
                Err(failed(&name))
            }
        }
    }

    /// The name `caller` logs in with (IDM's authentication id): a static user's name, an
    /// internal user's id, a managed user's `userName` (or the module's property).
    async fn authentication_id(&self, config: &AuthConfig, caller: &Caller) -> Option<String> {
        for m in &config.modules {
            match m {
                AuthModule::Static {
                    username,
                    component,
                    ..
                } if *component == caller.component && *username == caller.user => {
                    return Some(username.clone());
                }
                AuthModule::Resource(r) if r.resource == caller.component => {
                    let property = match &r.query {
                        CredentialQuery::ById => return Some(caller.user.clone()),
                        CredentialQuery::ActiveUserName => "userName",
                        CredentialQuery::Property(p) => p.trim_start_matches('/'),
                    };
                    let account = match self.repo.read(&r.resource, &caller.user).await {
                        Ok(found) => found?,
                        Err(e) => {
                            tracing::error!(error = %e, resource = %r.resource, "cannot read the account to re-authenticate");
                            return None;
                        }
                    };
                    return account
                        .content
                        .get(property)
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                }
                _ => {}
            }
        }
        None
    }

    /// Drops every cached verdict (internal users or roles changed).
    pub fn invalidate_all(&self) {
        if let Some(b) = self.built.load_full() {
            b.modules.invalidate_all();
            if let Some(rs) = &b.rs {
                rs.invalidate_all();
            }
        }
    }

    /// Drops the cached verdicts of one account after it was written.
    pub fn invalidate_caller(&self, component: &str, id: &str) {
        if let Some(b) = self.built.load_full() {
            b.modules.invalidate_caller(component, id);
            if let Some(rs) = &b.rs {
                // Token verdicts are few per account and cheap to redo.
                rs.invalidate_all();
            }
        }
    }

    /// Whether the live config authenticates against `resource` (an account store).
    fn uses(&self, resource: &str) -> bool {
        let Some(b) = self.built.load_full() else {
            return false;
        };
        b.config.modules.iter().any(|m| match m {
            AuthModule::Resource(r) => r.resource == resource,
            AuthModule::Static { .. } => false,
        }) || b.rs.as_ref().is_some_and(|rs| {
            rs.config().subject_mappings.iter().any(|m| {
                m.query_on_resource.as_deref() == Some(resource)
                    || m.resource_type_mapping.values().any(|r| r == resource)
            })
        })
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Tells [`Authn`] of writes to managed objects: a written account (or one whose
/// relationships were written) loses its cached verdicts; a role or assignment written
/// drops them all (roles are read at login).
pub struct AccountChanges(pub Arc<Authn>);

impl AccountChanges {
    /// A relationship of `resource/id` was written through its sub-collection.
    pub fn relationship_written(&self, resource: &str, id: &str) {
        if resource.ends_with("/role") || resource.ends_with("/assignment") {
            self.0.invalidate_all();
        } else if self.0.uses(resource) {
            self.0.invalidate_caller(resource, id);
        }
    }
}

impl ChangeHook for AccountChanges {
    fn on_change(&self, change: &Change<'_>) {
        self.relationship_written(change.resource, change.id);
    }
}

/// The live `authentication.json` and trust, read per request.
pub type LiveAuth = Arc<dyn Fn() -> (Arc<AuthConfig>, Arc<Trust>) + Send + Sync>;

/// [`Authn::reauthenticate`] under the live config: what the access rules and the
/// `authentication` endpoint use.
pub struct Reauthentication {
    pub authn: Arc<Authn>,
    pub live: LiveAuth,
}

#[async_trait::async_trait]
impl Reauthenticator for Reauthentication {
    async fn reauthenticate(
        &self,
        caller: &Caller,
        reauth: Option<&Reauth>,
    ) -> Result<(), ReauthRefusal> {
        let (config, trust) = (self.live)();
        self.authn
            .reauthenticate(&config, &trust, caller, reauth)
            .await
    }
}
