//! IDM's policy service: the policies of each property (declared in `managed.json` and
//! derived from the schema, see [`defs`]), checked on every write of a managed object or
//! internal user before secrets are hashed or encrypted, and served by
//! `/openidm/policy/…` ([`service`]). A failed write is IDM's 403:
//!
//! ```json
//! {"code":403,"reason":"Forbidden","message":"Policy validation failed",
//!  "detail":{"result":false,"failedPolicyRequirements":[
//!    {"property":"password","policyRequirements":[
//!      {"policyRequirement":"MIN_LENGTH","params":{"minLength":8}}]}]}}
//! ```
//!
//! Failures name properties and requirements, never values.

use serde_json::{json, Map, Value};

use super::schema::ObjectSchema;
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::ResourceError;
use crate::repo::{Repo, RepoQuery};

mod check;
pub mod defs;
pub mod service;

pub use check::Lookups;
pub use defs::{Kind, Policy};

/// One failed policy of one property: IDM's requirement object
/// (`{"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub property: String,
    pub requirement: Value,
}

impl Failure {
    pub fn new(property: impl Into<String>, requirement: &str) -> Self {
        Failure {
            property: property.into(),
            requirement: json!({ "policyRequirement": requirement }),
        }
    }
}

/// Every failed policy of the object `content` (with id `id`) of `schema`, in IDM's order:
/// properties as declared, each property's policies in order. A hashed or encrypted value
/// stands for a secret checked in clear when it was set, and is not checked again.
pub async fn check(
    schema: &ObjectSchema,
    id: Option<&str>,
    content: &Map<String, Value>,
    env: &dyn Lookups,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let id_value = id.map(|i| Value::String(i.to_owned()));
    for prop in &schema.properties {
        let value = if prop.name == "_id" {
            id_value.as_ref()
        } else {
            content.get(&prop.name)
        };
        if let Some(v) = value {
            if (prop.hashed && crate::auth::password::is_hashed(v))
                || (prop.encrypted.is_some() && crate::crypto::is_encrypted(v))
            {
                continue;
            }
        }
        check::check_property(
            &prop.name,
            &prop.policies,
            value,
            content,
            env,
            &mut failures,
        )
        .await;
    }
    // Required but not declared: only presence is checked.
    for name in &schema.required {
        if schema.property(name).is_none() && !content.contains_key(name) {
            failures.push(Failure::new(name, "REQUIRED"));
        }
    }
    failures
}

/// IDM's `validateProperty`: the policies of each declared property `props` names, on its
/// value there (undeclared names are ignored).
pub async fn check_properties(
    schema: &ObjectSchema,
    props: &Map<String, Value>,
    env: &dyn Lookups,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (name, value) in props {
        if let Some(prop) = schema.property(name) {
            check::check_property(name, &prop.policies, Some(value), props, env, &mut failures)
                .await;
        }
    }
    failures
}

/// The failure a uniqueness conflict found by the store reports for `property`:
/// `VALID_USERNAME` for a `valid-username` property, `UNIQUE` otherwise.
pub fn unique_failure(schema: &ObjectSchema, property: &str) -> Failure {
    let property = property.trim_start_matches('/');
    let username = schema.property(property).is_some_and(|p| {
        p.policies
            .iter()
            .any(|p| matches!(p.kind, Kind::ValidUsername))
    });
    Failure::new(property, if username { "VALID_USERNAME" } else { "UNIQUE" })
}

/// IDM's `failedPolicyRequirements`: one entry per failed policy (so a property can
/// appear more than once).
pub fn failed_requirements(failures: &[Failure]) -> Value {
    Value::Array(
        failures
            .iter()
            .map(|f| json!({"property": f.property, "policyRequirements": [f.requirement]}))
            .collect(),
    )
}

/// The 403 of a write that fails its policies.
pub fn policy_error(failures: &[Failure]) -> ResourceError {
    ResourceError::forbidden("Policy validation failed").with_detail(
        json!({"result": false, "failedPolicyRequirements": failed_requirements(failures)}),
    )
}

/// Whether an internal user is named `name` (internal users' ids are their names).
async fn internal_user_exists(repo: &dyn Repo, name: &str) -> bool {
    matches!(repo.read(crate::internal::USERS, name).await, Ok(Some(_)))
}

/// Lookups of a write: uniqueness is the store's (its unique indexes, atomically with the
/// write), so only internal users and the stored object are looked at.
pub struct OnWrite<'a> {
    pub repo: &'a dyn Repo,
    pub stored: Option<&'a Map<String, Value>>,
}

#[async_trait::async_trait]
impl Lookups for OnWrite<'_> {
    async fn taken(&self, _property: &str, _value: &str) -> bool {
        false
    }
    async fn internal_user(&self, name: &str) -> bool {
        internal_user_exists(self.repo, name).await
    }
    fn stored(&self) -> Option<&Map<String, Value>> {
        self.stored
    }
}

/// Lookups of the policy service's validate actions: uniqueness is queried.
pub struct OnValidate<'a> {
    pub repo: &'a dyn Repo,
    pub resource: &'a str,
    /// The object validated (`policy/managed/user/<id>`), which does not conflict with
    /// itself; None for `…/*`.
    pub id: Option<&'a str>,
    pub stored: Option<Map<String, Value>>,
}

#[async_trait::async_trait]
impl Lookups for OnValidate<'_> {
    async fn taken(&self, property: &str, value: &str) -> bool {
        let filter = QueryFilter::Compare {
            field: JsonPointer(vec![property.to_owned()]),
            op: CompareOp::Eq,
            value: FilterValue::String(value.to_owned()),
        };
        let page = self
            .repo
            .query(
                self.resource,
                RepoQuery {
                    filter: &filter,
                    sort: &[],
                    page_size: 2,
                    cookie: None,
                    offset: 0,
                    count: Default::default(),
                    ids_only: true,
                },
            )
            .await;
        match page {
            Ok(page) => page.results.iter().any(|o| Some(o.id.as_str()) != self.id),
            Err(e) => {
                tracing::warn!(resource = self.resource, error = %e, "uniqueness query failed");
                false
            }
        }
    }
    async fn internal_user(&self, name: &str) -> bool {
        internal_user_exists(self.repo, name).await
    }
    fn stored(&self) -> Option<&Map<String, Value>> {
        self.stored.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::schema::parse_schema;

    struct NoLookups;

    #[async_trait::async_trait]
    impl Lookups for NoLookups {
        async fn taken(&self, _: &str, _: &str) -> bool {
            false
        }
        async fn internal_user(&self, _: &str) -> bool {
            false
        }
        fn stored(&self) -> Option<&Map<String, Value>> {
            None
        }
    }

    #[test]
    fn one_entry_per_failed_policy_in_idm_order() {
        let schema = parse_schema(
            "managed/user",
            &json!({"required": ["userName", "mail", "extra"],
                    "properties": {"_id": {"type": "string", "policies": [
                                       {"policyId": "cannot-contain-characters", "params": {"forbiddenChars": ["/"]}}]},
                                   "userName": {"type": "string"},
                                   "mail": {"type": "string", "policies": [{"policyId": "valid-email-address-format"}]},
                                   "age": {"type": ["integer", "null"]}, "flag": {"type": "boolean"}}}),
            "schema",
        )
        .unwrap();
        let content = json!({"userName": null, "age": "x", "flag": true, "other": 1});
        let failures = futures_executor::block_on(check(
            &schema,
            Some("a/b"),
            content.as_object().unwrap(),
            &NoLookups,
        ));
        let e = policy_error(&failures);
        assert_eq!(e.code, 403);
        assert_eq!(e.message, "Policy validation failed");
        assert_eq!(
            e.detail.unwrap(),
            json!({"result": false, "failedPolicyRequirements": [
                {"property": "_id", "policyRequirements": [{"policyRequirement": "CANNOT_CONTAIN_CHARACTERS", "params": {"forbiddenChars": "/"}}]},
                {"property": "userName", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {"invalidType": "null", "validTypes": ["string"]}}]},
                {"property": "mail", "policyRequirements": [{"policyRequirement": "REQUIRED"}]},
                {"property": "age", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {"invalidType": "string", "validTypes": ["integer", "null"]}}]},
                {"property": "extra", "policyRequirements": [{"policyRequirement": "REQUIRED"}]},
            ]})
        );
    }
}
