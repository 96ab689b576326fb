//! Who may do what (IDM's `access.js`, reduced to the gateway's resources): administrators
//! everything; any caller `info/ping`; authenticated users `info/*` (`info/features`
//! read and query); a metrics role the Prometheus endpoint; authenticated users the policy
//! service (read, validate) and reads of the schema service (IDM's `schema/*` read);
//! everything else (schema writes, `feature`, `config`…) is 403.

use crate::crest::{Operation, Request, ResourceError, ROLE_AUTHORIZED};

pub fn authorize(req: &Request) -> Result<(), ResourceError> {
    let caller = &req.caller;
    if caller.is_admin() {
        return Ok(());
    }
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let allowed = match path.as_slice() {
        ["info", "ping"] => true,
        ["info", "login" | "version" | "features"] => caller.has_role(ROLE_AUTHORIZED),
        // IDM's openidm-authorized: `policy/*` read and action (validation only).
        ["policy", ..] => {
            caller.has_role(ROLE_AUTHORIZED)
                && matches!(req.op, Operation::Read { .. } | Operation::Action { .. })
        }
        // IDM's openidm-authorized: `schema/*` read.
        ["schema", ..] => {
            caller.has_role(ROLE_AUTHORIZED)
                && matches!(req.op, Operation::Read { .. } | Operation::Query(_))
        }
        ["metrics", "prometheus"] => caller.roles.iter().any(|r| r.ends_with("metrics")),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ResourceError::forbidden("Access denied"))
    }
}
