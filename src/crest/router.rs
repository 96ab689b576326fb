//! The internal router: resource path prefixes → handlers. The HTTP edge and internal
//! callers (reconciliation, scheduler) call the same [`Router::handle`], so every request
//! gets the same authorization and the same semantics whichever way it arrives.

use std::sync::Arc;

use super::request::Request;
use super::response::Response;
use super::ResourceError;

/// What an internal caller may ask a resource about before relying on it (the sync engine
/// asks instead of guessing from the resource's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// IDM's `field in '["a","b"]'` filter operator in a query.
    InFilter,
}

/// A resource provider. `rest` is the request path after the prefix it was mounted on.
#[async_trait::async_trait]
pub trait RequestHandler: Send + Sync {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError>;

    /// Whether the resource at `rest` supports `capability`. The handlers of this gateway
    /// evaluate filters with [`crate::crest::filter`] (or the store's translation of it),
    /// which has every capability, hence the default; a handler that passes requests on to
    /// another server answers for that server.
    fn supports(&self, _capability: Capability, _rest: &[String]) -> bool {
        true
    }
}

/// Decides whether the caller may make the request, before any handler runs. Async: a
/// rule may need to read the stored object or verify a re-authentication password.
#[async_trait::async_trait]
pub trait Authorize: Send + Sync {
    async fn authorize(&self, req: &Request) -> Result<(), ResourceError>;
}

pub type Authorizer = Arc<dyn Authorize>;

/// A synchronous check as an [`Authorize`].
struct SyncAuthorize<F>(F);

#[async_trait::async_trait]
impl<F> Authorize for SyncAuthorize<F>
where
    F: Fn(&Request) -> Result<(), ResourceError> + Send + Sync,
{
    async fn authorize(&self, req: &Request) -> Result<(), ResourceError> {
        (self.0)(req)
    }
}

/// Request filters around the handlers (IDM's `router.json` filters, see
/// `crate::script::filters`).
pub trait Filters: Send + Sync {
    /// The filters that apply to `req`, `None` when none does (the common case: then the
    /// request costs nothing more).
    fn chain(&self, req: &Request) -> Option<Box<dyn FilterChain>>;
}

/// The filters of one request, in order.
#[async_trait::async_trait]
pub trait FilterChain: Send {
    /// Before the handler: a changed request, or an error that refuses it.
    async fn on_request(&mut self, req: &Request) -> Result<Option<Request>, ResourceError>;
    /// After it: the answer (or the failure) as the filters leave it.
    async fn on_result(
        &mut self,
        req: &Request,
        result: Result<Response, ResourceError>,
    ) -> Result<Response, ResourceError>;
}

/// What delegated administration grants a request the access rules refused.
pub struct Delegated {
    /// The request to run instead (a query narrowed by the privilege's filter).
    pub request: Option<Request>,
    /// Only these attributes are answered (plus `_id`, `_rev`).
    pub view: Vec<String>,
}

/// A second chance for requests the access rules refused (IDM's privileges).
#[async_trait::async_trait]
pub trait Delegation: Send + Sync {
    /// `None`: nothing grants it (the refusal stands); `Err`: a grant applies but the
    /// request goes beyond it.
    async fn delegate(&self, req: &Request) -> Option<Result<Delegated, ResourceError>>;
}

/// Keeps only `view` (and `_id`, `_rev`) in what a delegated request answers.
fn restrict(resp: Response, view: &[String]) -> Response {
    let keep = |content: &mut serde_json::Map<String, serde_json::Value>| {
        content.retain(|k, _| k == "_id" || k == "_rev" || view.iter().any(|v| v == k));
    };
    match resp {
        Response::Resource(mut r) => {
            keep(&mut r.content);
            Response::Resource(r)
        }
        Response::Created(mut r) => {
            keep(&mut r.content);
            Response::Created(r)
        }
        Response::Query(mut q) => {
            for v in &mut q.results {
                if let serde_json::Value::Object(m) = v {
                    keep(m);
                }
            }
            Response::Query(q)
        }
        // Not produced for delegated requests: streaming is turned off for them, and an
        // action answers no object of the collection.
        other => other,
    }
}

#[derive(Clone)]
pub struct Router {
    /// Longest prefix first.
    routes: Vec<(Vec<String>, Arc<dyn RequestHandler>)>,
    authorize: Authorizer,
    delegation: Option<Arc<dyn Delegation>>,
    filters: Option<Arc<dyn Filters>>,
}

impl Router {
    pub fn new(
        authorize: impl Fn(&Request) -> Result<(), ResourceError> + Send + Sync + 'static,
    ) -> Self {
        Self::with_authorizer(Arc::new(SyncAuthorize(authorize)))
    }

    pub fn with_authorizer(authorize: Authorizer) -> Self {
        Self {
            routes: Vec::new(),
            authorize,
            delegation: None,
            filters: None,
        }
    }

    /// Asks `delegation` about requests the access rules refuse.
    pub fn set_delegation(&mut self, delegation: Arc<dyn Delegation>) -> &mut Self {
        self.delegation = Some(delegation);
        self
    }

    /// Runs `filters` around every request after authorization.
    pub fn set_filters(&mut self, filters: Arc<dyn Filters>) -> &mut Self {
        self.filters = Some(filters);
        self
    }

    /// Mounts `handler` on `prefix` (`managed`, `info`, `external/idm`).
    pub fn mount(&mut self, prefix: &str, handler: Arc<dyn RequestHandler>) -> &mut Self {
        let prefix = super::request::split_path(prefix);
        self.routes.push((prefix, handler));
        self.routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self
    }

    pub async fn handle(&self, req: &Request) -> Result<Response, ResourceError> {
        let Err(refused) = self.authorize.authorize(req).await else {
            return self.filtered(req).await;
        };
        let Some(delegation) = &self.delegation else {
            return Err(refused);
        };
        match delegation.delegate(req).await {
            None => Err(refused),
            Some(Err(e)) => Err(e),
            Some(Ok(granted)) => {
                let req = granted.request.as_ref().unwrap_or(req);
                self.filtered(req)
                    .await
                    .map(|resp| restrict(resp, &granted.view))
            }
        }
    }

    async fn filtered(&self, req: &Request) -> Result<Response, ResourceError> {
        let Some(mut chain) = self.filters.as_ref().and_then(|f| f.chain(req)) else {
            return self.dispatch(req).await;
        };
        let changed = chain.on_request(req).await?;
        let req = changed.as_ref().unwrap_or(req);
        let result = self.dispatch(req).await;
        chain.on_result(req, result).await
    }

    async fn dispatch(&self, req: &Request) -> Result<Response, ResourceError> {
        for (prefix, handler) in &self.routes {
            if req.path.len() >= prefix.len() && req.path[..prefix.len()] == prefix[..] {
                return handler.handle(req, &req.path[prefix.len()..]).await;
            }
        }
        Err(ResourceError::not_found(format!(
            "Resource 'openidm/{}' not found",
            req.path_string()
        )))
    }

    /// Whether `resource` (`managed/user`, `external/idm/dc2/managed/user`) supports
    /// `capability`; no for a resource nothing is mounted on.
    pub fn supports(&self, resource: &str, capability: Capability) -> bool {
        let path = super::request::split_path(resource);
        self.route(&path)
            .is_some_and(|(handler, rest)| handler.supports(capability, rest))
    }

    /// The handler of the longest prefix of `path`, and the rest of the path.
    fn route<'p>(&self, path: &'p [String]) -> Option<(&Arc<dyn RequestHandler>, &'p [String])> {
        self.routes.iter().find_map(|(prefix, handler)| {
            (path.len() >= prefix.len() && path[..prefix.len()] == prefix[..])
                .then(|| (handler, &path[prefix.len()..]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::{Caller, Operation};
    use serde_json::json;

    struct Echo(&'static str);

    #[async_trait::async_trait]
    impl RequestHandler for Echo {
        async fn handle(&self, _req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
            Ok(Response::Json(200, json!({"h": self.0, "rest": rest})))
        }
    }

    #[tokio::test]
    async fn longest_prefix_wins_and_unknown_is_404() {
        let mut r = Router::new(|_| Ok(()));
        r.mount("external", Arc::new(Echo("ext")));
        r.mount("external/idm", Arc::new(Echo("idm")));
        let caller = Arc::new(Caller::system());
        let req = Request::new(
            Operation::Read {
                if_none_match: None,
            },
            "external/idm/a/b",
            caller.clone(),
        );
        assert_eq!(
            r.handle(&req).await.unwrap(),
            Response::Json(200, json!({"h": "idm", "rest": ["a", "b"]}))
        );
        let req = Request::new(
            Operation::Read {
                if_none_match: None,
            },
            "nope",
            caller,
        );
        assert_eq!(r.handle(&req).await.unwrap_err().code, 404);
    }

    /// Forwards elsewhere: answers for a server without `in`.
    struct Forward;

    #[async_trait::async_trait]
    impl RequestHandler for Forward {
        async fn handle(
            &self,
            _req: &Request,
            _rest: &[String],
        ) -> Result<Response, ResourceError> {
            Ok(Response::Action(None))
        }

        fn supports(&self, _capability: Capability, rest: &[String]) -> bool {
            rest.first().is_some_and(|r| r == "with-in")
        }
    }

    #[test]
    fn capabilities_are_answered_by_the_route_of_the_resource() {
        let mut r = Router::new(|_| Ok(()));
        r.mount("managed", Arc::new(Echo("m")));
        r.mount("external/idm", Arc::new(Forward));
        assert!(r.supports("managed/user", Capability::InFilter));
        assert!(!r.supports("external/idm/dc2/managed/user", Capability::InFilter));
        assert!(r.supports("external/idm/with-in/managed/user", Capability::InFilter));
        assert!(!r.supports("nothing/here", Capability::InFilter));
    }
}
