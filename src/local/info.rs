//! `/openidm/info/*`: ping, version, login, features.
//!
//! `GET info/features?_queryFilter=…` answers IDM's feature availability list
//! (`{"_id", "name", "enabled", "endpoints"}` per feature, IDM's names where the gateway
//! has the feature or lacks it, plus the gateway's own); a plain `GET info/features` keeps
//! the gateway's summary.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::crest::{
    filter, Operation, QueryResponse, Request, RequestHandler, ResourceError, Response,
};
use crate::state::Gateway;

/// Body of `GET /openidm/info/ping`, anonymous.
pub fn ping_body() -> &'static [u8] {
    br#"{"_id":"","state":"ACTIVE_READY","shortDesc":"OpenIDM ready"}"#
}

pub struct InfoHandler(pub Arc<Gateway>);

#[async_trait::async_trait]
impl RequestHandler for InfoHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let [what] = rest else {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        };
        if let (Operation::Query(q), "features") = (&req.op, what.as_str()) {
            let f = filter::of_listing_query(&q.kind, "Features")?;
            let results = features(&self.0)
                .into_iter()
                .filter(|v| f.matches(v))
                .collect();
            return Ok(Response::Query(QueryResponse {
                results,
                ..Default::default()
            }));
        }
        if !matches!(req.op, Operation::Read { .. }) {
            return Err(ResourceError::not_supported(format!(
                "Unsupported operation on {what} info service: {}",
                req.op.name()
            )));
        }
        let body = match what.as_str() {
            "ping" => json!({"_id": "", "state": "ACTIVE_READY", "shortDesc": "OpenIDM ready"}),
            "version" => json!({
                "_id": "version",
                "productVersion": env!("CARGO_PKG_VERSION"),
                "productBuildDate": option_env!("IDM_GATEWAY_BUILD_DATE").unwrap_or(""),
                "productRevision": option_env!("IDM_GATEWAY_REVISION").unwrap_or(""),
                "productName": "idm-gateway",
            }),
            "login" => json!({
                "_id": "login",
                "authenticationId": req.caller.user,
                "authorization": {
                    "id": req.caller.user,
                    "component": req.caller.component,
                    "roles": req.caller.roles,
                    "moduleId": "INTERNAL_USER",
                }
            }),
            "features" => json!({
                "_id": "features",
                "features": [
                    {"name": "remoteIdmProxy", "enabled": true},
                    {"name": "managedObjects", "enabled": true},
                    {"name": "internalUsers", "enabled": true},
                ]
            }),
            _ => {
                return Err(ResourceError::not_found(format!(
                    "Resource 'openidm/{}' not found",
                    req.path_string()
                )))
            }
        };
        Ok(Response::Json(200, body))
    }
}

/// IDM's feature availability entries for this gateway: the features IDM lists that the
/// gateway has (custom endpoints, email when configured) or lacks (workflow,
/// self-service), then the gateway's own (gateway extras).
fn features(gw: &Gateway) -> Vec<Value> {
    let live = gw.live();
    let endpoints: Vec<String> = live
        .conf
        .files
        .keys()
        .filter_map(|id| crate::script::endpoint::endpoint_name(id))
        .map(|name| format!("endpoint/{name}"))
        .collect();
    let email = live.conf.files.contains_key(crate::external::EMAIL_CONFIG);
    let entry = |name: &str, enabled: bool, endpoints: &[&str]| json!({"_id": name, "name": name, "enabled": enabled, "endpoints": endpoints});
    let off = |name: &str| entry(name, false, &[]);
    let mut endpoint = entry("endpoint", true, &[]);
    endpoint["endpoints"] = json!(endpoints);
    vec![
        endpoint,
        if email {
            entry("email", true, &["external/email"])
        } else {
            off("email")
        },
        off("workflow"),
        off("passwordReset"),
        off("registration"),
        off("retrieveUsername"),
        off("identityProviders"),
        entry("managedObjects", true, &["managed/*"]),
        entry("internalUsers", true, &["internal/*"]),
        entry("remoteIdmProxy", true, &["external/idm/*"]),
        entry("schema", true, &["schema/managed/*"]),
        entry("feature", true, &["feature/*"]),
    ]
}
