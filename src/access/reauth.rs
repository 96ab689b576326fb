//! Re-authentication for protected properties (IDM's `reauthIfProtectedAttributeChange()`
//! and `X-OpenIDM-Reauth-Password`), and the router's access check that needs it.
//!
//! A rule that allows a write on conditions ([`super::Decision::Conditional`]) names the
//! protected properties (`isProtected` in `managed.json`) the request writes, and, for an
//! update, the properties the caller may not edit. Which of them *change* is decided as
//! IDM's `getChangedValues()` does: an update (`PUT`) changes a property whose new value
//! differs from the stored one; a patch changes every property an operation names. A
//! property the caller may not edit must not change (else 403). A property the caller cannot read back (private,
//! hashed or encrypted, like `password`) changes whenever it is written, so the answer
//! never tells whether a guessed value is the stored one. When one changes, the caller must
//! re-authenticate with the password of its own account ([`Reauthenticator`], implemented
//! by `crate::auth`); otherwise the request is refused with IDM's 403 `Access denied`.
//!
//! This module never sees where passwords are stored and never logs one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{decide, denied, AccessSource, Conditions, Decision};
use crate::crest::{Authorize, Caller, Operation, Reauth, Request, ResourceError};
use crate::managed::ManagedSchema;
use crate::repo::Repo;

/// Why a re-authentication did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReauthRefusal {
    /// No `X-OpenIDM-Reauth-Password`, or an empty one.
    Missing,
    /// The password is not the caller's (or the caller cannot re-authenticate with a
    /// password: bearer tokens). `name` is the caller's authentication id.
    Failed { name: String },
    /// Too many failed logins for the name or the address: retry after the duration.
    Throttled(Duration),
}

impl ReauthRefusal {
    /// The answer of `authentication?_action=reauthenticate` (IDM's messages).
    pub fn to_action_error(&self) -> ResourceError {
        match self {
            ReauthRefusal::Missing => {
                ResourceError::forbidden("Reauthentication failed, missing or empty headers")
            }
            ReauthRefusal::Failed { name } => {
                ResourceError::forbidden(format!("Reauthentication failed for {name}"))
            }
            ReauthRefusal::Throttled(_) => throttled(),
        }
    }

    /// The answer to a write the access rules allow only after a re-authentication (IDM
    /// answers `Access denied`).
    pub fn to_access_error(&self) -> ResourceError {
        match self {
            ReauthRefusal::Throttled(_) => throttled(),
            _ => denied(),
        }
    }
}

fn throttled() -> ResourceError {
    ResourceError::new(429, "Too many login attempts; retry later")
}

/// Checks a re-authentication password against the caller's own account.
#[async_trait::async_trait]
pub trait Reauthenticator: Send + Sync {
    async fn reauthenticate(
        &self,
        caller: &Caller,
        reauth: Option<&Reauth>,
    ) -> Result<(), ReauthRefusal>;
}

/// The properties in `written` that the request changes. `stored` is the object's stored
/// content (`None`: unknown or absent, so everything written changes).
pub fn changed_properties(
    req: &Request,
    written: &[String],
    stored: Option<&Map<String, Value>>,
    managed: &ManagedSchema,
) -> Vec<String> {
    let Operation::Update { .. } = req.op else {
        // Create: everything supplied; patch: every field an operation names.
        return written.to_vec();
    };
    let (Some(stored), Some(body)) = (stored, req.body.as_object()) else {
        return written.to_vec();
    };
    let schema = req
        .path
        .get(1)
        .filter(|_| req.path.first().is_some_and(|p| p == "managed"))
        .and_then(|ty| managed.types.get(ty));
    written
        .iter()
        .filter(|p| {
            let unreadable = schema.and_then(|s| s.property(p)).is_none_or(|prop| {
                prop.private || prop.relationship || prop.virtual_ || prop.encrypted.is_some()
            });
            unreadable || body.get(p.as_str()) != stored.get(p.as_str())
        })
        .cloned()
        .collect()
}

/// The router's access check: `access.json` (with re-authentication where a rule asks for
/// it), before privileges are asked.
pub struct AccessGuard {
    pub live: AccessSource,
    pub repo: Arc<dyn Repo>,
    pub reauth: Arc<dyn Reauthenticator>,
}

impl AccessGuard {
    /// The stored content of the object `req` writes (`managed/<type>/<id>`).
    async fn stored(&self, req: &Request, managed: &ManagedSchema) -> Option<Map<String, Value>> {
        let [kind, ty, id] = req.path.as_slice() else {
            return None;
        };
        if kind != "managed" {
            return None;
        }
        let schema = managed.types.get(ty)?;
        match self.repo.read(&schema.resource, id).await {
            Ok(found) => found.map(|o| o.content),
            Err(e) => {
                // Unknown: every protected property written counts as changed.
                tracing::warn!(error = %e, "cannot read the object a protected write changes");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl Authorize for AccessGuard {
    async fn authorize(&self, req: &Request) -> Result<(), ResourceError> {
        let (access, managed) = (self.live)();
        match decide(&access, &managed, req) {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(denied()),
            Decision::Conditional(Conditions { unchanged, reauth }) => {
                let stored = match req.op {
                    Operation::Update { .. } => self.stored(req, &managed).await,
                    _ => None,
                };
                let stored = stored.as_ref();
                if !changed_properties(req, &unchanged, stored, &managed).is_empty() {
                    return Err(denied());
                }
                if changed_properties(req, &reauth, stored, &managed).is_empty() {
                    return Ok(());
                }
                self.reauth
                    .reauthenticate(&req.caller, req.reauth.as_deref())
                    .await
                    .map_err(|e| e.to_access_error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ManagedSchema {
        crate::managed::parse_managed(&json!({"objects": [{"name": "user", "schema": {
        "properties": {
            "password": {"type": "string", "isProtected": true, "scope": "private"},
            "mail": {"type": "string", "isProtected": true},
            "givenName": {"type": "string"}
        }}}]}))
        .unwrap()
    }

    fn request(op: Operation, body: Value) -> Request {
        Request::new(
            op,
            "managed/user/b1",
            Arc::new(Caller::new("b1", "managed/user", vec![])),
        )
        .with_body(body)
    }

    #[test]
    fn an_update_changes_what_differs_and_every_unreadable_property() {
        let managed = schema();
        let stored = json!({"mail": "b@example.com", "password": "Passw0rd-1"});
        let stored = stored.as_object().unwrap();
        let written = vec!["mail".to_owned(), "password".to_owned()];
        let update = Operation::Update {
            rev: None,
            upsert: false,
        };
        // The same mail is no change; a private password always is (even the same value).
        let req = request(
            update.clone(),
            json!({"mail": "b@example.com", "password": "Passw0rd-1"}),
        );
        assert_eq!(
            changed_properties(&req, &written, Some(stored), &managed),
            vec!["password".to_owned()]
        );
        let req = request(update.clone(), json!({"mail": "new@example.com"}));
        assert_eq!(
            changed_properties(&req, &["mail".to_owned()], Some(stored), &managed),
            vec!["mail".to_owned()]
        );
        let req = request(update, json!({"mail": "b@example.com"}));
        assert!(changed_properties(&req, &["mail".to_owned()], Some(stored), &managed).is_empty());
        // Nothing known of the stored object: everything written changes.
        assert_eq!(
            changed_properties(&req, &["mail".to_owned()], None, &managed),
            vec!["mail".to_owned()]
        );
    }

    #[test]
    fn a_patch_changes_every_field_it_names() {
        let managed = schema();
        let stored = json!({"mail": "b@example.com"});
        let req = request(
            Operation::Patch { rev: None },
            json!([{"operation": "replace", "field": "/mail", "value": "b@example.com"}]),
        );
        assert_eq!(
            changed_properties(&req, &["mail".to_owned()], stored.as_object(), &managed),
            vec!["mail".to_owned()]
        );
    }

    #[test]
    fn refusals_answer_idm_messages_and_never_a_password() {
        let e = ReauthRefusal::Missing.to_action_error();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "Reauthentication failed, missing or empty headers"
        );
        let e = ReauthRefusal::Failed {
            name: "bjensen".into(),
        }
        .to_action_error();
        assert_eq!(e.message, "Reauthentication failed for bjensen");
        assert_eq!(
            ReauthRefusal::Failed {
                name: "bjensen".into()
            }
            .to_access_error()
            .message,
            "Access denied"
        );
        assert_eq!(
            ReauthRefusal::Throttled(Duration::from_secs(60))
                .to_access_error()
                .code,
            429
        );
        let r = Reauth::new("s3cret".into(), None);
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
