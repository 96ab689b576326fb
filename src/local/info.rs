//! `/openidm/info/*`: ping, version, login, features.

use serde_json::json;

use crate::crest::{Operation, Request, RequestHandler, ResourceError, Response};

/// Body of `GET /openidm/info/ping`, anonymous.
pub fn ping_body() -> &'static [u8] {
    br#"{"_id":"","state":"ACTIVE_READY","shortDesc":"OpenIDM ready"}"#
}

pub struct InfoHandler;

#[async_trait::async_trait]
impl RequestHandler for InfoHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let [what] = rest else {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        };
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
