//! The OAuth2 client-credentials token cache of one remote instance.
//!
//! One token per instance, shared by every request. Concurrency rules:
//!
//! * The fast path is a lock-free load of the current token (`ArcSwapOption`).
//! * A cold or expired cache is filled under `fetch` (a tokio mutex): the first caller
//!   fetches, the others wait on the mutex and then find the new token (or the remembered
//!   failure) when they re-check after acquiring it. So N concurrent cold requests make
//!   exactly one token request — single flight.
//! * Ahead of expiry (at `min(30 s, lifetime/2)` before it, minus jitter) the first request
//!   that notices starts one background refresh (`refreshing` flag) and keeps using the
//!   still-valid token, so once warm no request waits on the token endpoint.
//! * A failed fetch is remembered for [`FAILURE_MEMORY`]: callers in that window get the
//!   error at once, so a dead token endpoint is not hammered.
//! * `invalidate` (remote answered 401) drops the token only if it is still the one the
//!   caller used, so a 401 for an old token never throws away a fresh one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};

use crate::config::{BearerConfig, TokenAuthMethod};
use crate::metrics::Metrics;

/// How long a failed token fetch is remembered before the endpoint is asked again.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(1);
/// Lifetime assumed when the token endpoint sends no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Longest lifetime believed; a token is re-fetched at least this often.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Refresh at most this long before expiry (less for short-lived tokens).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(30);

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A cached access token, ready to be sent.
#[derive(Debug)]
pub struct Token {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    pub expires_at: Instant,
    pub refresh_at: Instant,
}

/// Why no token could be had. The message names the instance and never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

pub struct TokenSource {
    instance: String,
    client: OAuthClient,
    scope: Option<String>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    current: ArcSwapOption<Token>,
    failure: Mutex<Option<(Instant, TokenError)>>,
    fetch: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

impl TokenSource {
    pub fn new(
        instance: &str,
        config: &BearerConfig,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        let client = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.expose().to_owned()))
            .set_token_uri(TokenUrl::from_url(config.token_endpoint.clone()))
            .set_auth_type(match config.auth_method {
                TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
            });
        Self {
            instance: instance.to_owned(),
            client,
            scope: config.scope_param(),
            http,
            metrics,
            current: ArcSwapOption::empty(),
            failure: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The token to send now, fetching it only when there is none that is still valid.
    pub async fn token(self: &Arc<Self>) -> Result<Arc<Token>, TokenError> {
        if let Some(token) = self.valid_token() {
            if Instant::now() >= token.refresh_at {
                self.spawn_refresh();
            }
            return Ok(token);
        }
        if let Some(err) = self.recent_failure() {
            return Err(err);
        }
        let _guard = self.fetch.lock().await;
        // Whoever held the lock before us may have fetched (or failed): look again.
        if let Some(token) = self.valid_token() {
            return Ok(token);
        }
        if let Some(err) = self.recent_failure() {
            return Err(err);
        }
        self.fetch_and_store().await
    }

    /// Drops `used` if it is still the current token (the remote rejected it).
    pub fn invalidate(&self, used: &Arc<Token>) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            self.current.compare_and_swap(&*current, None);
        }
    }

    fn valid_token(&self) -> Option<Arc<Token>> {
        self.current
            .load_full()
            .filter(|t| Instant::now() < t.expires_at)
    }

    fn recent_failure(&self) -> Option<TokenError> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, e)| e.clone())
    }

    fn spawn_refresh(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            {
                let _guard = this.fetch.lock().await;
                let still_due = this
                    .current
                    .load()
                    .as_ref()
                    .is_none_or(|t| Instant::now() >= t.refresh_at);
                if still_due && this.recent_failure().is_none() {
                    // A failed refresh keeps the current token until it expires.
                    let _ = this.fetch_and_store().await;
                }
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Asks the token endpoint; must be called with `fetch` held.
    async fn fetch_and_store(&self) -> Result<Arc<Token>, TokenError> {
        let mut request = self.client.exchange_client_credentials();
        if let Some(scope) = &self.scope {
            // One pre-joined scope: the oauth2 crate joins with spaces, IDM lets the
            // delimiter be configured.
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let started = Instant::now();
        match request.request_async(&self.http).await {
            Ok(response) => {
                let lifetime = response
                    .expires_in()
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_LIFETIME)
                    // A huge `expires_in` must not overflow `Instant` arithmetic.
                    .min(MAX_LIFETIME);
                let mut header =
                    HeaderValue::from_str(&format!("Bearer {}", response.access_token().secret()))
                        .map_err(|_| {
                            self.fail("the token endpoint returned an access token that is not a valid header value")
                        })?;
                header.set_sensitive(true);
                let token = Arc::new(schedule(header, started, lifetime));
                self.current.store(Some(token.clone()));
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.metrics
                    .token_fetches
                    .with_label_values(&[&self.instance, "success"])
                    .inc();
                Ok(token)
            }
            Err(e) => Err(self.fail(&describe(&e))),
        }
    }

    fn fail(&self, what: &str) -> TokenError {
        let err = TokenError(format!(
            "Unable to obtain an access token for remote instance '{}': {what}",
            self.instance
        ));
        tracing::warn!(instance = %self.instance, error = %err, "token fetch failed");
        self.metrics
            .token_fetches
            .with_label_values(&[&self.instance, "failure"])
            .inc();
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), err.clone()));
        err
    }
}

/// Expiry and refresh instants for a token obtained at `obtained`.
fn schedule(header: HeaderValue, obtained: Instant, lifetime: Duration) -> Token {
    // Stop using a token slightly before the server would reject it.
    let margin = (lifetime / 10).min(Duration::from_secs(2));
    let ahead = REFRESH_AHEAD.min(lifetime / 2);
    let jitter_cap = (lifetime / 10).min(Duration::from_secs(5));
    let jitter = if jitter_cap.is_zero() {
        Duration::ZERO
    } else {
        jitter_cap.mul_f64(rand::random::<f64>())
    };
    Token {
        header,
        expires_at: obtained + lifetime - margin,
        refresh_at: obtained + lifetime - ahead - jitter,
    }
}

/// A message for a failed token request that never contains the client secret.
fn describe<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        RequestTokenError::ServerResponse(resp) => {
            format!("the token endpoint refused the request ({})", resp.error())
        }
        RequestTokenError::Request(err) => {
            // Walk the source chain: reqwest puts "operation timed out" deep inside.
            let mut timed_out = false;
            let mut source: Option<&dyn std::error::Error> = Some(err);
            while let Some(s) = source {
                timed_out |= s.to_string().contains("timed out");
                source = s.source();
            }
            if timed_out {
                "the token endpoint did not answer in time".into()
            } else {
                "the token endpoint could not be reached".into()
            }
        }
        RequestTokenError::Parse(_, body) => format!(
            "the token endpoint returned a response that is not a token ({} bytes)",
            body.len()
        ),
        RequestTokenError::Other(what) => {
            format!("the token endpoint answered unexpectedly ({what})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_ahead_of_expiry_and_expiry_before_lifetime() {
        let now = Instant::now();
        let t = schedule(
            HeaderValue::from_static("Bearer x"),
            now,
            Duration::from_secs(3600),
        );
        assert!(t.refresh_at <= now + Duration::from_secs(3570));
        assert!(t.refresh_at >= now + Duration::from_secs(3565));
        assert_eq!(t.expires_at, now + Duration::from_secs(3598));

        let short = schedule(
            HeaderValue::from_static("Bearer x"),
            now,
            Duration::from_secs(4),
        );
        assert!(short.refresh_at <= now + Duration::from_secs(2));
        assert!(short.refresh_at < short.expires_at);
        assert!(short.expires_at < now + Duration::from_secs(4));
    }
}
