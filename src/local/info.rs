//! `/openidm/info/*`: ping, version, login.

use serde_json::json;

use super::{not_supported, LocalRequest, LocalResponse};
use crate::crest::ResourceError;

/// Body of `GET /openidm/info/ping`, anonymous.
pub fn ping_body() -> &'static [u8] {
    br#"{"_id":"","state":"ACTIVE_READY","shortDesc":"OpenIDM ready"}"#
}

pub fn handle(req: &LocalRequest<'_>) -> Result<LocalResponse, ResourceError> {
    let what = req.segments.get(1).map(|s| s.as_ref());
    if req.segments.len() != 2 {
        return Err(ResourceError::not_found(format!(
            "Resource 'openidm/{}' not found",
            req.segments.join("/")
        )));
    }
    if req.method != http::Method::GET {
        return Err(not_supported(req));
    }
    let body = match what {
        Some("version") => json!({
            "_id": "version",
            "productVersion": env!("CARGO_PKG_VERSION"),
            "productBuildDate": option_env!("IDM_GATEWAY_BUILD_DATE").unwrap_or(""),
            "productRevision": option_env!("IDM_GATEWAY_REVISION").unwrap_or(""),
            "productName": "idm-gateway",
        }),
        Some("login") => json!({
            "_id": "login",
            "authenticationId": req.caller.user,
            "authorization": {
                "id": req.caller.user,
                "component": "internal/user",
                "roles": req.caller.roles,
                "moduleId": "INTERNAL_USER",
            }
        }),
        _ => {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.segments.join("/")
            )))
        }
    };
    Ok(LocalResponse::json(200, &body, req.pretty()))
}
