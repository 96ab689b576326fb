//! `/openidm/authentication`: IDM's authentication service, of which the gateway answers
//! `POST ?_action=reauthenticate` (the caller's password in `X-OpenIDM-Reauth-Password`,
//! checked against the caller's own account: `{"reauthenticated": true}`, or 403 with
//! IDM's message). The gateway has no sessions, so there is no `login` or `logout`.

use std::sync::Arc;

use serde_json::json;

use crate::access::reauth::Reauthenticator;
use crate::crest::{Operation, Request, RequestHandler, ResourceError, Response};

pub struct AuthenticationHandler(pub Arc<dyn Reauthenticator>);

#[async_trait::async_trait]
impl RequestHandler for AuthenticationHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        if !rest.is_empty() {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        }
        let op = match &req.op {
            Operation::Action { name } if name == "reauthenticate" => {
                self.0
                    .reauthenticate(&req.caller, req.reauth.as_deref())
                    .await
                    .map_err(|e| e.to_action_error())?;
                return Ok(Response::Action(Some(json!({"reauthenticated": true}))));
            }
            Operation::Action { name } => {
                return Err(ResourceError::bad_request(format!(
                    "Action {name} on authentication service not supported"
                )))
            }
            Operation::Read { .. } => "Read",
            Operation::Create { .. } => "Create",
            Operation::Update { .. } => "Update",
            Operation::Patch { .. } => "Patch",
            Operation::Delete { .. } => "Delete",
            Operation::Query(_) => "Query",
        };
        Err(ResourceError::not_supported(format!(
            "{op} operations are not supported"
        )))
    }
}
