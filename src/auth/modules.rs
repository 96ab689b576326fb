//! The classic authentication modules of `authentication.json`, tried in file order until
//! one accepts the credentials (IDM's rule: the first success wins).
//!
//! * `STATIC_USER`: a fixed user name and password (`anonymous`), or, for
//!   `&{openidm.admin.password}`, the password stored for that internal user.
//! * `INTERNAL_USER` / `MANAGED_USER`: the account is found in the store with IDM's
//!   credential query (`credential-query` only finds active accounts), its password
//!   checked (argon2 or IDM's salted hashes, or an encrypted value), its roles read from
//!   the `userRoles` relationship and added to `defaultUserRoles`.
//!
//! An unknown user costs a password verification like a wrong password does, so the time
//! of a failed login tells nothing about whether the account exists.

use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

use super::config::{AuthModule, CredentialQuery, ResourceModule, StaticPassword};
use super::{password, Authenticator, Caller};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crypto::Crypto;
use crate::managed::relationships::store::{edges_of, End};
use crate::repo::{Repo, RepoError, RepoQuery, StoredObject};

/// A hash no password matches, verified when the account does not exist.
static DUMMY_HASH: LazyLock<Value> =
    LazyLock::new(|| password::hash(&uuid::Uuid::new_v4().to_string()).unwrap_or(Value::Null));

pub struct ModuleChain {
    modules: Vec<AuthModule>,
    repo: Arc<dyn Repo>,
    crypto: Option<Arc<Crypto>>,
}

impl ModuleChain {
    pub fn new(modules: Vec<AuthModule>, repo: Arc<dyn Repo>, crypto: Option<Arc<Crypto>>) -> Self {
        Self {
            modules,
            repo,
            crypto,
        }
    }

    async fn static_user(
        &self,
        username: &str,
        expected: &StaticPassword,
        component: &str,
        roles: &[String],
        password_text: &str,
    ) -> Option<Arc<Caller>> {
        let ok = match expected {
            StaticPassword::Plain(p) => crate::crypto::hash::constant_time_eq(
                p.expose().as_bytes(),
                password_text.as_bytes(),
            ),
            StaticPassword::Envelope(v) => self
                .crypto
                .as_ref()
                .is_some_and(|c| c.matches(password_text, v)),
            StaticPassword::Stored => {
                let stored = match self.repo.read("internal/user", username).await {
                    Ok(Some(obj)) => obj.content.get("password").cloned(),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read internal users");
                        None
                    }
                };
                self.verify(stored, password_text).await
            }
        };
        ok.then(|| Arc::new(Caller::new(username, component, roles.to_vec()).with_password_login()))
    }

    /// Whether `password_text` is what `stored` holds; `None` (no account) verifies a
    /// dummy hash so that it costs the same.
    async fn verify(&self, stored: Option<Value>, password_text: &str) -> bool {
        let Some(stored) = stored else {
            password::verify_async(DUMMY_HASH.clone(), password_text.to_owned()).await;
            return false;
        };
        match stored {
            // A hash (argon2 or IDM's salted hashes) or an encrypted value; `Crypto::matches`
            // tells them apart. Hashes need no keys.
            stored @ Value::Object(_) => {
                let crypto = self.crypto.clone();
                let text = password_text.to_owned();
                tokio::task::spawn_blocking(move || match crypto {
                    Some(crypto) => crypto.matches(&text, &stored),
                    None => crate::crypto::hash::matches(text.as_bytes(), &stored),
                })
                .await
                .unwrap_or(false)
            }
            // A clear-text password (a managed schema without encryption or hashing).
            Value::String(s) => {
                crate::crypto::hash::constant_time_eq(s.as_bytes(), password_text.as_bytes())
            }
            _ => false,
        }
    }

    async fn find(&self, m: &ResourceModule, user: &str) -> Option<StoredObject> {
        let filter = match &m.query {
            CredentialQuery::ById => {
                return match self.repo.read(&m.resource, user).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::error!(error = %e, resource = %m.resource, "cannot read the accounts of an authentication module");
                        None
                    }
                };
            }
            CredentialQuery::ActiveUserName => {
                QueryFilter::And(vec![eq("userName", user), eq("accountStatus", "active")])
            }
            CredentialQuery::Property(p) => eq(p, user),
        };
        match find_account(self.repo.as_ref(), &m.resource, &filter).await {
            Ok(found) => found,
            Err(AccountLookup::Ambiguous) => {
                tracing::warn!(resource = %m.resource, "login refused: the user name matches several accounts");
                None
            }
            Err(AccountLookup::Store(e)) => {
                tracing::error!(error = %e, resource = %m.resource, "cannot query the accounts of an authentication module");
                None
            }
        }
    }

    async fn resource_user(
        &self,
        m: &ResourceModule,
        user: &str,
        password_text: &str,
    ) -> Option<Arc<Caller>> {
        let found = self.find(m, user).await;
        let stored = found
            .as_ref()
            .and_then(|o| o.content.get(&m.credential).cloned());
        let exists = found.is_some();
        if !self.verify(stored, password_text).await || !exists {
            return None;
        }
        let obj = found?;
        let roles = account_roles(
            self.repo.as_ref(),
            &m.resource,
            &obj,
            m.user_roles.as_slice(),
            &m.default_roles,
        )
        .await;
        Some(Arc::new(
            Caller::new(obj.id, m.resource.clone(), roles).with_password_login(),
        ))
    }
}

/// `field eq "value"`; `field` a JSON pointer (`/a/b`) or a property name.
pub(crate) fn eq(field: &str, value: &str) -> QueryFilter {
    QueryFilter::Compare {
        field: JsonPointer::parse(field),
        op: CompareOp::Eq,
        value: FilterValue::String(value.to_owned()),
    }
}

/// Why [`find_account`] found no single account.
pub(crate) enum AccountLookup {
    /// Several accounts match.
    Ambiguous,
    Store(RepoError),
}

/// The one account of `resource` that `filter` matches (`None`: no account).
pub(crate) async fn find_account(
    repo: &dyn Repo,
    resource: &str,
    filter: &QueryFilter,
) -> Result<Option<StoredObject>, AccountLookup> {
    let mut query = RepoQuery::all(filter, &[]);
    // Two are enough to know the name is ambiguous.
    query.page_size = 2;
    match repo.query(resource, query).await {
        Ok(page) if page.results.len() > 1 => Err(AccountLookup::Ambiguous),
        Ok(page) => Ok(page.results.into_iter().next()),
        Err(RepoError::NotFound { .. }) => Ok(None),
        Err(e) => Err(AccountLookup::Store(e)),
    }
}

/// `defaults` plus the roles granted through each of the relationship properties `via`.
pub(crate) async fn account_roles(
    repo: &dyn Repo,
    collection: &str,
    obj: &StoredObject,
    via: &[String],
    defaults: &[String],
) -> Vec<String> {
    let mut roles = defaults.to_vec();
    for property in via {
        for r in granted_roles(repo, collection, &obj.id, property, &obj.content).await {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    roles
}

/// Role references granted to an account through relationship `property`: its edges, and
/// any `_ref`s kept in the object by a store written before relationships were edges.
pub async fn granted_roles(
    repo: &dyn Repo,
    collection: &str,
    id: &str,
    property: &str,
    content: &Map<String, Value>,
) -> Vec<String> {
    let mut roles: Vec<String> = content
        .get(property)
        .and_then(Value::as_array)
        .map(|roles| {
            roles
                .iter()
                .filter_map(|r| r.get("_ref").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let me = End::new(collection, id, Some(property));
    match edges_of(repo, &me).await {
        Ok(edges) => {
            for e in edges {
                let r = e.other(&me).reference();
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read an account's roles"),
    }
    roles
}

#[async_trait::async_trait]
impl Authenticator for ModuleChain {
    async fn authenticate(&self, user: &str, password_text: &str) -> Option<Arc<Caller>> {
        for m in &self.modules {
            let found = match m {
                AuthModule::Static {
                    username,
                    password,
                    component,
                    roles,
                } => {
                    if username != user {
                        continue;
                    }
                    self.static_user(username, password, component, roles, password_text)
                        .await
                }
                AuthModule::Resource(r) => self.resource_user(r, user, password_text).await,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}
