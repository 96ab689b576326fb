//! `GatewayProxy`: the phases of one request.
//!
//! * `request_filter`: transaction id, path check, caller authentication; local resources
//!   and every error before proxying are answered here (`Ok(true)`: response written).
//! * `upstream_peer`: the remote from the request's snapshot, its token, its peer options.
//! * `upstream_request_filter` / `response_filter`: header rewrites.
//! * `upstream_response_filter` + `error_while_proxy`: one retry after a 401 to a bearer
//!   request, with a fresh token.
//! * Failover (`failoverUrls`): `upstream_peer` takes the first URL that is up (503 at once
//!   when none is: the circuit is open); `connected_to_upstream` marks it up,
//!   `fail_to_connect` down. A request moves on to the next URL when nothing of it was
//!   sent (failed connect), or when it is a GET or HEAD; a request whose body the remote may
//!   have read is never sent twice.
//! * `fail_to_proxy`: CREST error bodies; `logging`: access log and metrics.
//! * `early_request_error` (a hook of the patched pingora-proxy): CREST errors for
//!   requests pingora refused before any phase ran (unreadable header, CONNECT).

mod bulk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{Peer, ALPN};
use pingora::{Error, ErrorType, Result};

use super::errors::{
    body_read_error, classify_local_error, classify_request_error, classify_upstream_error,
    upstream_failure,
};
use super::headers::{
    forward_client, is_trusted, new_transaction_id, rewrite_location, rewrite_request,
    rewrite_response, transaction_id, TRANSACTION_ID,
};
use super::limits::{retry_after, RateLimits};
use super::route::{classify, Route};
use super::trust::CaCache;
use crate::audit::{AccessRecord, CURRENT_TRANSACTION};
use crate::auth::{credentials_from_headers, reauth_password_from_headers, AuthError, Caller};
use crate::crest::http::{request_from_http, HttpRequest};
use crate::crest::{
    member_url, HttpResponse, Operation, Reauth, ResourceError, Router, JSON_CONTENT_TYPE,
};
use crate::csv_import::CsvImports;
use crate::local::{self, MAX_LOCAL_BODY};
use crate::metrics::{method_label, LOCAL, UNKNOWN};
use crate::remote::{url_bit, Credentials, RemoteInstance, Resolver, Token, UpstreamFailure};
use crate::state::Gateway;

/// How long an idle pooled connection to a remote is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

pub struct GatewayProxy {
    gw: Arc<Gateway>,
    /// The CREST router of everything local under `/openidm`.
    router: Arc<Router>,
    resolver: Resolver,
    cas: CaCache,
    /// Bulk import: `/upload/csv/...` and `/export/csvImportFailures/...`.
    csv: Option<Arc<CsvImports>>,
    /// Callers whose forwarding headers are kept (`gateway.json` `trustedProxies`).
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// `gateway.json` `rateLimit`.
    limits: Arc<RateLimits>,
    /// Largest proxied request body (`gateway.json` `maxProxyBodyBytes`).
    max_proxy_body: u64,
}

/// Default of `gateway.json` `maxProxyBodyBytes`.
pub const DEFAULT_MAX_PROXY_BODY: u64 = 64 * 1024 * 1024;

impl GatewayProxy {
    pub fn new(gw: Arc<Gateway>, router: Arc<Router>) -> Self {
        Self {
            gw,
            router,
            resolver: Resolver::new(),
            cas: CaCache::default(),
            csv: None,
            trusted_proxies: Arc::new(Vec::new()),
            limits: Arc::new(RateLimits::default()),
            max_proxy_body: DEFAULT_MAX_PROXY_BODY,
        }
    }

    /// Refuses proxied request bodies over `bytes` with 413.
    pub fn with_max_proxy_body(mut self, bytes: u64) -> Self {
        self.max_proxy_body = bytes;
        self
    }

    /// Limits callers' and instances' request rates.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Keeps the forwarding headers of callers from these networks.
    pub fn with_trusted_proxies(mut self, nets: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = Arc::new(nets);
        self
    }

    /// Serves the bulk import endpoints outside `/openidm` with `csv`.
    pub fn with_csv(mut self, csv: Arc<CsvImports>) -> Self {
        self.csv = Some(csv);
        self
    }
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    txid: HeaderValue,
    /// Metric/log label: instance name, `_local` or `_unknown`.
    label: Option<String>,
    caller: Option<Arc<Caller>>,
    instance: Option<Arc<RemoteInstance>>,
    /// Raw path under the instance, e.g. `managed/user`.
    rest: String,
    /// The instance URL of the current attempt (index into `instance.urls`).
    url: usize,
    /// URLs this request has given up on (a bit per index): the next attempt skips them.
    tried: u32,
    token: Option<Arc<Token>>,
    bearer_retried: bool,
    /// Request body bytes proxied so far.
    body_bytes: u64,
    /// When the first upstream was chosen, and how long the remote took to answer with its
    /// response header (the access log's `upstream_ms`).
    upstream_started: Option<Instant>,
    upstream_ms: Option<f64>,
    retry_after_401: bool,
    /// A failure decided before pingora saw an error (token, resolution).
    failure: Option<(ResourceError, &'static str)>,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            txid: HeaderValue::from_static(""),
            label: None,
            caller: None,
            instance: None,
            rest: String::new(),
            url: 0,
            tried: 0,
            token: None,
            bearer_retried: false,
            body_bytes: 0,
            upstream_started: None,
            upstream_ms: None,
            retry_after_401: false,
            failure: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.txid = transaction_id(session.req_header());
        let path = session.req_header().uri.path().to_owned();
        let route = match classify(&path) {
            Ok(route) => route,
            Err(e) => {
                ctx.label = Some(LOCAL.into());
                respond_error(session, ctx, &ResourceError::bad_request(e.to_string())).await?;
                return Ok(true); // response written
            }
        };
        match route {
            Route::Ping if session.req_header().method == http::Method::GET => {
                ctx.label = Some(LOCAL.into());
                let body = local::ping_body().to_vec();
                write_local(
                    session,
                    ctx,
                    HttpResponse {
                        status: 200,
                        content_type: JSON_CONTENT_TYPE,
                        etag: None,
                        location: None,
                        body,
                        stream: None,
                    },
                )
                .await?;
                return Ok(true); // response written
            }
            Route::Outside => {
                ctx.label = Some(LOCAL.into());
                let e = ResourceError::not_found(format!("Resource '{path}' not found"));
                respond_error(session, ctx, &e).await?;
                return Ok(true); // response written
            }
            _ => {}
        }

        // Everything else needs an authenticated caller, before anything is forwarded.
        let live = self.gw.live();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let authenticated = self
            .gw
            .auth
            .authenticate(
                &live.authentication,
                &live.conf.trust,
                &session.req_header().headers,
                client,
            )
            .await;
        if self.gw.audit.wants("authentication") {
            // The name tried (or the token's caller); never the password or the token.
            let headers = &session.req_header().headers;
            let tried;
            let principal = match &authenticated {
                Ok(caller) => caller.user.as_str(),
                Err(_) => {
                    tried = credentials_from_headers(headers).ok().flatten();
                    tried.as_ref().map_or("", |(user, _)| user.as_ref())
                }
            };
            let txid = ctx.txid.to_str().unwrap_or("");
            let caller = authenticated.as_ref().ok().map(|c| c.as_ref());
            self.gw
                .audit
                .authentication(principal, caller, txid, client);
        }
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(e) => {
                ctx.label = Some(match &route {
                    Route::Remote { instance, .. } => self.instance_label(instance),
                    _ => LOCAL.into(),
                });
                if let AuthError::Throttled(wait) = e {
                    respond_throttled(session, ctx, wait).await?;
                } else {
                    respond_error(session, ctx, &ResourceError::unauthorized()).await?;
                }
                return Ok(true); // response written
            }
        };
        ctx.caller = Some(caller.clone());
        if let Err(wait) = self.limits.caller(&caller.user) {
            ctx.label = Some(match &route {
                Route::Remote { instance, .. } => self.instance_label(instance),
                _ => LOCAL.into(),
            });
            respond_limited(session, ctx, "caller", wait).await?;
            return Ok(true); // response written
        }

        match route {
            Route::Remote { instance, rest } => {
                let found = live.registry.get(&instance);
                // Every live instance comes from a configured file: its name is a bounded label.
                ctx.label = Some(match found {
                    Some(_) => instance.to_string(),
                    None => self.instance_label(&instance),
                });
                // A remote instance is a resource like any other: access.json decides.
                let req = session.req_header();
                let (method, action) =
                    crate::access::http_method(&req.method, req.uri.query(), &req.headers);
                let resource = format!("external/idm/{instance}/{rest}");
                let allowed = live.access.allows(&crate::access::Target {
                    path: resource.trim_end_matches('/'),
                    method,
                    action: action.as_deref(),
                    caller: &caller,
                    request: None,
                    managed: &live.managed,
                });
                if !allowed {
                    respond_error(session, ctx, &ResourceError::forbidden("Access denied")).await?;
                    return Ok(true); // response written
                }
                let error = match found {
                    Some(inst) if inst.config.enabled => {
                        if let Err(wait) = self.limits.instance(&inst.config.name) {
                            respond_limited(session, ctx, "instance", wait).await?;
                            return Ok(true); // response written
                        }
                        // A declared body over the limit is refused before anything is sent.
                        let declared = session
                            .req_header()
                            .headers
                            .get(http::header::CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if declared.is_some_and(|n| n > self.max_proxy_body) {
                            let e = self.body_too_large();
                            respond_error(session, ctx, &e).await?;
                            return Ok(true); // response written
                        }
                        ctx.instance = Some(inst.clone());
                        ctx.rest = rest.to_owned();
                        return Ok(false); // proxy it
                    }
                    Some(_) => format!("Remote instance '{instance}' is disabled"),
                    None => format!("Remote instance '{instance}' is not configured"),
                };
                respond_error(session, ctx, &ResourceError::not_found(error)).await?;
                Ok(true) // response written
            }
            route @ (Route::Local(_) | Route::Ping) => {
                let segments = match route {
                    Route::Local(segments) => segments,
                    // Ping with another method than GET: the router says what is allowed.
                    _ => vec!["info".into(), "ping".into()],
                };
                ctx.label = Some(LOCAL.into());
                let body = match read_body(session).await {
                    Ok(body) => body,
                    Err(e) => {
                        respond_error(session, ctx, &e).await?;
                        return Ok(true); // response written
                    }
                };
                let resp = self
                    .handle_local(session, segments, &body, caller, &ctx.txid)
                    .await;
                write_local(session, ctx, resp).await?;
                Ok(true) // response written
            }
            Route::Upload(segments) => {
                ctx.label = Some(LOCAL.into());
                bulk::handle(self.csv.as_ref(), session, ctx, true, segments, caller).await?;
                Ok(true) // response written
            }
            Route::Export(segments) => {
                ctx.label = Some(LOCAL.into());
                bulk::handle(self.csv.as_ref(), session, ctx, false, segments, caller).await?;
                Ok(true) // response written
            }
            Route::Outside => unreachable!("answered above"),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > self.max_proxy_body {
                // A chunked body that grew past the limit: the remote sees an aborted
                // request, the caller a 413.
                ctx.failure = Some((self.body_too_large(), "body_too_large"));
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over maxProxyBodyBytes",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started.get_or_insert_with(Instant::now);
        let inst = ctx
            .instance
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no instance in context"))?;
        let cfg = &inst.config;
        if let Credentials::Bearer(source) = &inst.credentials {
            match source.token().await {
                Ok(token) => ctx.token = Some(token),
                Err(e) => {
                    ctx.failure = Some((ResourceError::bad_gateway(e.0), "token"));
                    return Err(Error::explain(
                        ErrorType::Custom("token unavailable"),
                        "no access token",
                    ));
                }
            }
        }
        // The first URL that is up and not given up on; a host that cannot be resolved is
        // down like one that refuses connections.
        let mut unresolved = false;
        let (i, addr) = loop {
            let Some(i) = inst.urls.pick(ctx.tried) else {
                let failure = if unresolved {
                    UpstreamFailure::Unresolved
                } else {
                    UpstreamFailure::Unavailable
                };
                ctx.failure =
                    Some(failure.describe(&cfg.name, cfg.connect_timeout, cfg.read_timeout));
                return Err(Error::explain(
                    ErrorType::ConnectNoRoute,
                    "no URL of the instance is up",
                ));
            };
            let url = inst.urls.url(i);
            match self.resolver.resolve(&url.host, url.port).await {
                Ok(addr) => break (i, addr),
                Err(_) => {
                    unresolved = true;
                    inst.urls.mark_down(i);
                    ctx.tried |= url_bit(i);
                }
            }
        };
        ctx.url = i;
        let url = inst.urls.url(i);
        // SNI is always the remote host: with rustls an empty SNI disables verification.
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        peer.group_key = inst.group_key;
        let o = &mut peer.options;
        o.connection_timeout = Some(cfg.connect_timeout);
        o.total_connection_timeout = Some(cfg.connect_timeout);
        o.read_timeout = Some(cfg.read_timeout);
        o.write_timeout = Some(cfg.read_timeout);
        o.idle_timeout = Some(UPSTREAM_IDLE);
        if url.tls {
            o.alpn = ALPN::H2H1;
            o.ca = self.cas.get(&inst.trust);
        }
        debug_assert!(!url.tls || !peer.sni().is_empty());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let inst = ctx
            .instance
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no instance in context"))?;
        let authorization = match (&inst.credentials, &ctx.token) {
            (Credentials::Basic(value), _) => value,
            (Credentials::Bearer(_), Some(token)) => &token.header,
            (Credentials::Bearer(_), None) => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "no token in context",
                ))
            }
        };
        rewrite_request(
            upstream_request,
            inst.urls.url(ctx.url),
            &ctx.rest,
            authorization,
            &ctx.txid,
        )?;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        forward_client(
            upstream_request,
            peer,
            is_trusted(peer, &self.trusted_proxies),
            tls,
        )
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(started) = ctx.upstream_started {
            ctx.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        if upstream_response.status != http::StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let (Some(inst), Some(token)) = (&ctx.instance, &ctx.token) else {
            return Ok(());
        };
        if let Credentials::Bearer(source) = &inst.credentials {
            // The remote no longer accepts this token (revoked, key rotation): drop it.
            source.invalidate(token);
            // Retry once with a fresh token, if the request body can be replayed.
            if !ctx.bearer_retried && !session.as_ref().retry_buffer_truncated() {
                ctx.bearer_retried = true;
                ctx.retry_after_401 = true;
                let mut e = Error::explain(
                    ErrorType::Custom("bearer token rejected"),
                    "remote answered 401; retrying with a new token",
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(inst) = &ctx.instance {
            rewrite_location(upstream_response, inst.urls.url(ctx.url), &inst.config.name)?;
        }
        close_if_draining(session);
        rewrite_response(upstream_response, &ctx.txid, session.is_http2())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // A connection (new, or reused after pingora checked it is still open): the URL is
        // up, which ends a half-open trial.
        if let Some(inst) = &ctx.instance {
            inst.urls.mark_up(ctx.url);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let Some(inst) = &ctx.instance else {
            return e;
        };
        if upstream_failure(e.etype()).url_is_down(true) {
            inst.urls.mark_down(ctx.url);
        }
        // Nothing of the request was sent: any method may move on to the next URL.
        ctx.tried |= url_bit(ctx.url);
        let next = inst.urls.has_candidate(ctx.tried);
        if next {
            inst.urls.count_failover();
        }
        e.set_retry(next);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let method = &session.req_header().method;
        let replayable = matches!(*method, http::Method::GET | http::Method::HEAD)
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if std::mem::take(&mut ctx.retry_after_401) {
            // The remote refused the credentials, so it did not act on the request: a
            // retry is safe whatever the method.
            e.set_retry(true);
        } else if !replayable {
            // The remote may have read (and acted on) this request: never send it twice.
            e.set_retry(false);
        } else if client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly) {
            // A pooled connection the remote had closed: the same URL, a fresh connection.
            e.set_retry(true);
        } else if transport_failure(e.etype()) {
            // The remote went away under this GET/HEAD: the next URL, if there is one.
            let next = ctx.instance.as_ref().is_some_and(|inst| {
                ctx.tried |= url_bit(ctx.url);
                inst.urls.has_candidate(ctx.tried)
            });
            if next {
                if let Some(inst) = &ctx.instance {
                    inst.urls.count_failover();
                }
            }
            e.set_retry(next);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let instance = ctx
            .instance
            .as_ref()
            .map(|i| i.config.name.clone())
            .unwrap_or_default();
        let decided = ctx.failure.take().or_else(|| {
            if ctx.instance.is_none() {
                return classify_local_error(e);
            }
            let (connect, read) = ctx
                .instance
                .as_ref()
                .map(|i| (i.config.connect_timeout, i.config.read_timeout))
                .unwrap_or_default();
            classify_upstream_error(e, &instance, connect, read)
        });
        let Some((error, kind)) = decided else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if ctx.instance.is_some() {
            self.gw
                .metrics
                .upstream_errors
                .with_label_values(&[&instance, kind])
                .inc();
            tracing::warn!(instance = %instance, kind, error = %e, "proxy failure");
        }
        let code = error.code;
        if session.response_written().is_none() {
            // pingora will not keep this connection: say so, or an HTTP/1 client may send
            // its next request into a closing socket.
            if !session.is_http2() {
                session.set_keepalive(None);
            }
            let _ = respond_error(session, ctx, &error).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn early_request_error(&self, session: &mut ServerSession, e: &Error) {
        let Some(error) = classify_request_error(e) else {
            return; // the caller is gone
        };
        let resp = HttpResponse::error(&error);
        let txid = new_transaction_id();
        let written = match response_header(&resp, &txid, false) {
            Ok(header) => session
                .write_error_response(header, Bytes::from(resp.body))
                .await
                .is_ok(),
            Err(_) => false,
        };
        self.gw
            .metrics
            .requests
            .with_label_values(&[LOCAL, "OTHER", status_label(error.code)])
            .inc();
        // No method or path: the request could not be read, or is refused as a whole.
        tracing::info!(
            target: "access",
            instance = LOCAL,
            status = error.code,
            refused = e.etype().as_str(),
            written,
            txid = txid.to_str().unwrap_or(""),
        );
    }

    /// What pingora's own log lines say about a request: never the query string (it may
    /// carry secrets), never headers.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let req = session.req_header();
        format!(
            "{} {} instance={} txid={}",
            req.method,
            req.uri.path(),
            ctx.label.as_deref().unwrap_or("-"),
            ctx.txid.to_str().unwrap_or("")
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let req = session.req_header();
        let method = method_label(&req.method);
        let label = ctx.label.as_deref().unwrap_or(LOCAL);
        let elapsed = ctx.started.elapsed();
        let status_label = status_label(status);
        let m = &self.gw.metrics;
        m.requests
            .with_label_values(&[label, method, status_label])
            .inc();
        m.request_duration
            .with_label_values(&[label])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "access",
            instance = label,
            method = %req.method,
            path = req.uri.path(),
            status,
            bytes = session.body_bytes_sent(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream_ms = ctx.upstream_ms,
            txid = ctx.txid.to_str().unwrap_or(""),
            user = ctx.caller.as_ref().map(|c| c.user.as_str()).unwrap_or("-"),
            client = %MaybeIp(session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
            user_agent = user_agent(req),
        );
        if self.gw.audit.wants("access") {
            let inet = |a: Option<&pingora::protocols::l4::socket::SocketAddr>| {
                a.and_then(|a| a.as_inet()).copied()
            };
            self.gw.audit.access(&AccessRecord {
                txid: ctx.txid.to_str().unwrap_or(""),
                caller: ctx.caller.as_deref(),
                client: inet(session.client_addr()),
                server: inet(session.server_addr()),
                secure: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
                method: req.method.as_str(),
                path: req.uri.path(),
                query: req.uri.query(),
                headers: &req.headers,
                status,
                elapsed,
            });
        }
    }
}

impl GatewayProxy {
    fn body_too_large(&self) -> ResourceError {
        ResourceError::new(
            413,
            format!(
                "The request body exceeds the {} bytes a proxied request may carry",
                self.max_proxy_body
            ),
        )
    }

    /// Maps a local request to CREST, runs it through the router, and renders the result.
    async fn handle_local(
        &self,
        session: &Session,
        segments: Vec<std::borrow::Cow<'_, str>>,
        body: &[u8],
        caller: Arc<Caller>,
        txid: &HeaderValue,
    ) -> HttpResponse {
        let req = session.req_header();
        let http_req = HttpRequest {
            method: &req.method,
            segments: segments.into_iter().map(|s| s.into_owned()).collect(),
            query: req.uri.query(),
            headers: &req.headers,
            body,
        };
        let mut crest_req = match request_from_http(http_req, caller) {
            Ok(r) => r,
            Err(e) => return HttpResponse::error(&e),
        };
        // Checked only where a rule asks for it; never forwarded, stored or logged.
        crest_req.reauth = reauth_password_from_headers(&req.headers).map(|password| {
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            Arc::new(Reauth::new(password, client))
        });
        let pretty = crest_req.pretty;
        let txid: Arc<str> = Arc::from(txid.to_str().unwrap_or(""));
        let handled = CURRENT_TRANSACTION.scope(txid, self.router.handle(&crest_req));
        match handled.await {
            Ok(resp) => {
                let origin = origin(req);
                resp.into_http(pretty, |id| match &crest_req.op {
                    Operation::Create { new_id: None } => {
                        member_url(&format!("{origin}/openidm/{}", crest_req.path_string()), id)
                    }
                    // PUT: the resource is where it was put.
                    _ => format!("{origin}{}", req.uri.path()),
                })
            }
            Err(e) => HttpResponse::error(&e),
        }
    }

    /// A bounded label: configured names only.
    fn instance_label(&self, name: &str) -> String {
        if self
            .gw
            .live()
            .conf
            .files
            .contains_key(&format!("external.idm/{name}"))
        {
            name.to_owned()
        } else {
            UNKNOWN.into()
        }
    }
}

/// Failures of an established connection that a GET or HEAD may leave for the next URL:
/// the connection broke. A slow answer (a read timeout) is not one: the next URL would make
/// the caller wait twice.
fn transport_failure(etype: &ErrorType) -> bool {
    use ErrorType::*;
    matches!(
        etype,
        ConnectionClosed | ReadError | WriteError | H2Error | InvalidH2
    )
}

fn status_label(status: u16) -> &'static str {
    const LABELS: [&str; 6] = ["0", "1xx", "2xx", "3xx", "4xx", "5xx"];
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        412 => "412",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s => LABELS[(s / 100).min(5) as usize],
    }
}

/// An address for a log line (nothing when there is none), formatted without a `String`.
struct MaybeIp(Option<std::net::IpAddr>);

impl std::fmt::Display for MaybeIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

/// The caller's `User-Agent` for the access log, at most 200 bytes (a whole character).
fn user_agent(req: &pingora::http::RequestHeader) -> &str {
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ua.char_indices().nth(200) {
        Some((i, _)) => &ua[..i],
        None => ua,
    }
}

/// Reads a local request's body, bounded by [`MAX_LOCAL_BODY`].
async fn read_body(session: &mut Session) -> std::result::Result<Bytes, ResourceError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_LOCAL_BODY {
                    return Err(ResourceError::new(
                        413,
                        format!("The request body exceeds {MAX_LOCAL_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.into()),
            Err(e) => return Err(body_read_error(&e)),
        }
    }
}

/// `scheme://host` of the request, for `Location` headers.
fn origin(req: &pingora::http::RequestHeader) -> String {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = req.uri.scheme_str().unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The header of a response the gateway writes itself; a `streamed` body (a query answered
/// chunk by chunk) has no `Content-Length`.
fn response_header(
    resp: &HttpResponse,
    txid: &HeaderValue,
    streamed: bool,
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(resp.status, Some(6))?;
    // 204 and 304 carry no body (and no length: a 304's would describe the resource).
    if streamed {
        header.insert_header(http::header::CONTENT_TYPE, resp.content_type)?;
    } else if !matches!(resp.status, 204 | 304) {
        header.insert_header(http::header::CONTENT_TYPE, resp.content_type)?;
        header.insert_header(http::header::CONTENT_LENGTH, resp.body.len().to_string())?;
    }
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(TRANSACTION_ID, txid.clone())?;
    Ok(header)
}

/// A request that was in flight when the process started to drain (stop or upgrade) is
/// answered with `Connection: close`: the client opens its next connection to whichever
/// process holds the listeners, instead of reusing one that is about to close.
fn close_if_draining(session: &mut Session) {
    if session.is_process_shutting_down() {
        session.set_keepalive(None);
    }
}

async fn write_local(session: &mut Session, ctx: &RequestCtx, resp: HttpResponse) -> Result<()> {
    close_if_draining(session);
    let stream = resp.stream.as_ref().and_then(|s| s.take_body());
    let mut header = response_header(&resp, &ctx.txid, stream.is_some())?;
    if stream.is_some() && !session.is_http2() {
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    let body = if stream.is_some() || matches!(resp.status, 204 | 304) {
        Vec::new()
    } else {
        resp.body
    };
    if let Some(etag) = resp.etag {
        header.insert_header(http::header::ETAG, etag)?;
    }
    if let Some(location) = resp.location {
        header.insert_header(http::header::LOCATION, location)?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let Some(mut stream) = stream else {
        return session
            .write_response_body(Some(Bytes::from(body)), true)
            .await;
    };
    // A streamed query: each chunk goes out as it is ready, the last one ends the body.
    let mut chunk = stream.next_chunk().await;
    while let Some(current) = chunk {
        chunk = stream.next_chunk().await;
        session
            .write_response_body(Some(Bytes::from(current)), chunk.is_none())
            .await?;
    }
    Ok(())
}

/// 429 with `Retry-After`: the caller, or the instance it asked for, is over its rate.
async fn respond_limited(
    session: &mut Session,
    ctx: &RequestCtx,
    what: &str,
    wait: std::time::Duration,
) -> Result<()> {
    let message = format!("Too many requests for this {what}; retry later");
    respond_429(session, ctx, message, wait).await
}

/// Login throttled (failed logins, or the verification queue full). The same message
/// whether the user exists or not.
async fn respond_throttled(
    session: &mut Session,
    ctx: &RequestCtx,
    wait: std::time::Duration,
) -> Result<()> {
    let message = "Too many login attempts; retry later".to_owned();
    respond_429(session, ctx, message, wait).await
}

async fn respond_429(
    session: &mut Session,
    ctx: &RequestCtx,
    message: String,
    wait: std::time::Duration,
) -> Result<()> {
    let e = ResourceError::new(429, message);
    let resp = HttpResponse::error(&e);
    let mut header = response_header(&resp, &ctx.txid, false)?;
    header.insert_header(http::header::RETRY_AFTER, retry_after(wait).to_string())?;
    close_if_draining(session);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(resp.body)), true)
        .await
}

async fn respond_error(session: &mut Session, ctx: &RequestCtx, e: &ResourceError) -> Result<()> {
    write_local(session, ctx, HttpResponse::error(e)).await
}
