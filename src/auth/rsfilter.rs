//! `rsFilter`: callers holding OAuth2 access tokens (`Authorization: Bearer`).
//!
//! A token is checked once and its verdict cached until the token expires or
//! `cache.maxTimeout` passes, whichever is first; concurrent requests with the same new
//! token share one check (single flight). Checks are RFC 7662 introspection at
//! `tokenIntrospectUrl`, or — a gateway extra, `rsFilter.jwt` — local validation of a JWT
//! access token against the issuer's JWKS (keys cached, refetched on an unknown `kid` at
//! most every [`JWKS_MIN_REFETCH`]), so a new token costs no round trip.
//!
//! An accepted token must be active, unexpired and carry every scope of `scopes`. Its
//! subject (`sub`, or `client_id` for a client-credentials token without one) is then
//! mapped to a local caller: `staticUserMapping` matches the subject exactly as the token
//! gives it (`(usr!amadmin)` or a plain name); otherwise the `subjectMapping` of the
//! token's `realm` (or the one without a realm) finds the account with `propertyMapping`
//! and reads its roles from `userRoles`, adding `defaultRoles`.
//!
//! Failures are never slow: the introspection and JWKS calls have a bounded timeout, and
//! an unreachable authorization server fails the request with 401 (not cached, so the next
//! request tries again). Token values are never logged; the cache keys are salted hashes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::{JwtConfig, LocalUser, RsFilterConfig, SubjectMapping};
use super::modules::{account_roles, eq, find_account, AccountLookup};
use super::Caller;
use crate::config::Trust;
use crate::crest::filter::QueryFilter;
use crate::metrics::Metrics;
use crate::repo::Repo;

/// How long a refused token's verdict is kept (a subject not mapped yet may be created).
pub const REJECTED_TTL: Duration = Duration::from_secs(10);
/// The JWKS is fetched again for an unknown `kid` at most this often.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Tokens longer than this are refused without a check.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused (logged; the caller only sees 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not active")]
    Inactive,
    #[error("the token has expired")]
    Expired,
    #[error("the token lacks a required scope: {0}")]
    MissingScope(String),
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("no local user for subject '{0}'")]
    UnknownSubject(String),
    #[error("the token cannot be checked now: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
struct Verdict {
    result: Result<Arc<Caller>, TokenError>,
    ttl: Duration,
}

struct VerdictExpiry;

impl moka::Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &Verdict, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub struct RsFilter {
    config: RsFilterConfig,
    http: reqwest::Client,
    repo: Arc<dyn Repo>,
    metrics: Arc<Metrics>,
    salt: [u8; 32],
    generation: AtomicU64,
    cache: Cache<[u8; 32], Verdict>,
    jwks: Option<Jwks>,
}

impl RsFilter {
    pub fn new(
        config: RsFilterConfig,
        trust: &Trust,
        repo: Arc<dyn Repo>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let http = crate::tls::http_client_builder(trust)
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| format!("cannot build the rsFilter HTTP client: {e}"))?;
        let jwks = config.jwt.clone().map(|c| Jwks::new(c, http.clone()));
        Ok(Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(VerdictExpiry)
                .build(),
            config,
            http,
            repo,
            metrics,
            salt: rand::random(),
            generation: AtomicU64::new(0),
            jwks,
        })
    }

    pub fn config(&self) -> &RsFilterConfig {
        &self.config
    }

    /// Forgets every verdict (users or roles changed).
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// The caller without a token (`anonymousUserMapping`), if configured.
    pub fn anonymous(&self) -> Option<Arc<Caller>> {
        self.config.anonymous.as_ref().map(local_caller)
    }

    fn key(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(self.generation.load(Ordering::SeqCst).to_le_bytes());
        h.update(token.as_bytes());
        h.finalize().into()
    }

    pub async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.is_ascii() {
            return Err(TokenError::Invalid("malformed token".into()));
        }
        let key = self.key(token);
        let verdict = self
            .cache
            .try_get_with(key, async {
                match self.check(token).await {
                    Ok((caller, ttl)) => Ok(Verdict {
                        result: Ok(caller),
                        ttl,
                    }),
                    // Not cached: the next request tries again.
                    Err(e @ TokenError::Unavailable(_)) => Err(e),
                    Err(e) => Ok(Verdict {
                        result: Err(e),
                        ttl: REJECTED_TTL.min(self.config.cache_max),
                    }),
                }
            })
            .await
            .map_err(|e: Arc<TokenError>| (*e).clone())?;
        verdict.result
    }

    /// Checks a token not seen before: its claims, then its subject.
    async fn check(&self, token: &str) -> Result<(Arc<Caller>, Duration), TokenError> {
        let (method, claims) = match (&self.jwks, looks_like_jwt(token)) {
            (Some(jwks), true) => ("jwt", jwks.validate(token).await),
            _ => ("introspection", self.introspect(token).await),
        };
        let outcome = match &claims {
            Ok(_) => "accepted",
            Err(TokenError::Unavailable(_)) => "unavailable",
            Err(_) => "rejected",
        };
        self.metrics
            .token_checks
            .with_label_values(&[method, outcome])
            .inc();
        let claims = claims?;
        let ttl = self.ttl(&claims)?;
        self.check_scopes(&claims)?;
        let caller = self.map_subject(&claims).await?;
        Ok((caller, ttl))
    }

    fn ttl(&self, claims: &Map<String, Value>) -> Result<Duration, TokenError> {
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return Ok(self.config.cache_max);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(Duration::from_secs(exp - now).min(self.config.cache_max))
    }

    fn check_scopes(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        let granted: Vec<&str> = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        match self
            .config
            .scopes
            .iter()
            .find(|s| !granted.contains(&s.as_str()))
        {
            Some(missing) => Err(TokenError::MissingScope(missing.clone())),
            None => Ok(()),
        }
    }

    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let Some(url) = &self.config.introspect_url else {
            return Err(TokenError::Invalid(
                "not a JWT, and no tokenIntrospectUrl is configured".into(),
            ));
        };
        let resp = self
            .http
            .post(url.clone())
            .basic_auth(
                &self.config.client_id,
                Some(self.config.client_secret.expose()),
            )
            .header(http::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            tracing::error!(status = status.as_u16(), url = %url, "token introspection refused; check rsFilter clientId/clientSecret");
            return Err(TokenError::Unavailable(format!(
                "introspection answered {status}"
            )));
        }
        let body: Value = resp.json().await.map_err(|e| {
            TokenError::Unavailable(format!("introspection answer: {}", describe(&e)))
        })?;
        let Value::Object(claims) = body else {
            return Err(TokenError::Unavailable(
                "introspection answer is not a JSON object".into(),
            ));
        };
        if claims.get("active").and_then(Value::as_bool) != Some(true) {
            return Err(TokenError::Inactive);
        }
        Ok(claims)
    }

    async fn map_subject(&self, claims: &Map<String, Value>) -> Result<Arc<Caller>, TokenError> {
        let subject = claims
            .get("sub")
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Invalid("no subject (sub or client_id)".into()))?;
        if let Some(s) = self
            .config
            .static_users
            .iter()
            .find(|s| s.subject == subject)
        {
            return Ok(local_caller(&s.user));
        }
        let realm = claims.get("realm").and_then(Value::as_str);
        let mapping = self
            .config
            .subject_mappings
            .iter()
            .find(|m| realm.is_some() && m.realm.as_deref() == realm)
            .or_else(|| {
                self.config
                    .subject_mappings
                    .iter()
                    .find(|m| m.realm.is_none())
            })
            .ok_or_else(|| TokenError::UnknownSubject(subject.to_owned()))?;
        self.find_subject(mapping, subject, claims).await
    }

    async fn find_subject(
        &self,
        m: &SubjectMapping,
        subject: &str,
        claims: &Map<String, Value>,
    ) -> Result<Arc<Caller>, TokenError> {
        let unknown = || TokenError::UnknownSubject(subject.to_owned());
        // AM's compound subject `(usr!bjensen)`: the type picks the resource.
        let (kind, name) = match subject
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.split_once('!'))
        {
            Some((kind, name)) => (Some(kind), name),
            None => (None, subject),
        };
        let resource = kind
            .and_then(|k| m.resource_type_mapping.get(k))
            .or(m.query_on_resource.as_ref())
            .ok_or_else(unknown)?;
        let mut terms = Vec::new();
        for (claim, field) in &m.property_mapping {
            let value = if claim == "sub" {
                name.to_owned()
            } else {
                match claims.get(claim) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                    _ => return Err(unknown()),
                }
            };
            terms.push((field.as_str(), value));
        }
        let found = match terms.as_slice() {
            [("_id", id)] => self.repo.read(resource, id).await.map_err(store_error)?,
            _ => {
                let filter = QueryFilter::And(
                    terms
                        .iter()
                        .map(|(field, value)| eq(field, value))
                        .collect(),
                );
                match find_account(self.repo.as_ref(), resource, &filter).await {
                    Ok(found) => found,
                    Err(AccountLookup::Ambiguous) => {
                        return Err(TokenError::Invalid(format!(
                            "subject '{subject}' matches several accounts"
                        )))
                    }
                    Err(AccountLookup::Store(e)) => return Err(store_error(e)),
                }
            }
        };
        let obj = found.ok_or_else(unknown)?;
        let roles = account_roles(
            self.repo.as_ref(),
            resource,
            &obj,
            &m.user_roles,
            &m.default_roles,
        )
        .await;
        Ok(Arc::new(Caller::new(obj.id, resource.clone(), roles)))
    }
}

fn store_error(e: crate::repo::RepoError) -> TokenError {
    tracing::error!(error = %e, "cannot read the account of a token's subject");
    TokenError::Unavailable("store failure".into())
}

fn local_caller(u: &LocalUser) -> Arc<Caller> {
    Arc::new(Caller::new(
        u.id.clone(),
        u.component.clone(),
        u.roles.clone(),
    ))
}

/// A transport error without the URL's query or the token (reqwest errors name the URL
/// only; the token travels in the body).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() {
        "not valid JSON".into()
    } else {
        "request failed".into()
    }
}

/// Three base64url segments whose first decodes to a JSON header with `alg`.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && jsonwebtoken::decode_header(token).is_ok()
}

/// Signature algorithms accepted for access tokens: asymmetric only (an HMAC key would be
/// a secret shared with every resource server; `none` is never accepted).
fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

type KeySet = HashMap<String, (DecodingKey, Option<Algorithm>)>;

struct Jwks {
    config: JwtConfig,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// When the set was last fetched; held while fetching (one fetch at a time).
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    fn new(config: JwtConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            keys: ArcSwap::from_pointee(HashMap::new()),
            fetched: tokio::sync::Mutex::new(None),
        }
    }

    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), TokenError> {
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        let mut fetched = self.fetched.lock().await;
        // Another request may have fetched the set while this one waited.
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        if fetched.is_some_and(|at| at.elapsed() < JWKS_MIN_REFETCH) {
            return Err(TokenError::Invalid(format!("unknown key id '{kid}'")));
        }
        let set = self.fetch().await?;
        *fetched = Some(Instant::now());
        self.keys.store(Arc::new(set));
        self.keys
            .load()
            .get(kid)
            .cloned()
            .ok_or_else(|| TokenError::Invalid(format!("unknown key id '{kid}'")))
    }

    async fn fetch(&self) -> Result<KeySet, TokenError> {
        let resp = self
            .http
            .get(self.config.jwks_uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("JWKS: {}", describe(&e))))?;
        if !resp.status().is_success() {
            return Err(TokenError::Unavailable(format!(
                "JWKS answered {}",
                resp.status()
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| TokenError::Unavailable(format!("JWKS: {}", describe(&e))))?;
        let mut set = KeySet::new();
        for k in body
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Keys of types this crate does not know, or for encryption, are skipped.
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                set.insert(kid, (key, alg));
            }
        }
        tracing::info!(keys = set.len(), uri = %self.config.jwks_uri, "JWKS loaded");
        Ok(set)
    }

    async fn validate(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if !asymmetric(header.alg) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no key id (kid)".into()))?;
        let (key, key_alg) = self.key(&kid).await?;
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Invalid(
                "algorithm does not match the key".into(),
            ));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.config.clock_skew.as_secs();
        v.set_required_spec_claims(&["exp"]);
        match &self.config.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.config.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_and_algorithms() {
        assert!(!looks_like_jwt("opaque-token-value"));
        assert!(!looks_like_jwt("a.b.c"));
        // {"alg":"RS256","kid":"k"} . {} . sig
        assert!(looks_like_jwt(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln"
        ));
        assert!(!asymmetric(Algorithm::HS256));
        assert!(asymmetric(Algorithm::RS256));
        assert!(asymmetric(Algorithm::EdDSA));
    }
}
