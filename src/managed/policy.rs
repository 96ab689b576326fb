//! Validation like IDM's policy service: required properties and types, with failures
//! reported as a 403 naming each property and requirement:
//!
//! ```json
//! {"code":403,"reason":"Forbidden","message":"Failed policy validation",
//!  "detail":{"result":false,"failedPolicyRequirements":[
//!    {"property":"userName","policyRequirements":[{"policyRequirement":"REQUIRED"}]}]}}
//! ```

use serde_json::{json, Map, Value};

use super::schema::{JsonType, ObjectSchema};
use crate::crest::ResourceError;

/// One failed requirement of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub property: String,
    pub requirement: &'static str,
    pub params: Option<Value>,
}

/// Every failed requirement of `content` against `schema`.
pub fn check(schema: &ObjectSchema, content: &Map<String, Value>) -> Vec<Failure> {
    let mut failures = Vec::new();
    for name in &schema.required {
        let missing = match content.get(name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if missing {
            failures.push(Failure {
                property: name.clone(),
                requirement: "REQUIRED",
                params: None,
            });
        }
    }
    for prop in &schema.properties {
        let Some(v) = content.get(&prop.name) else {
            continue;
        };
        if v.is_null() && !schema.required.contains(&prop.name) {
            continue;
        }
        if v.is_null() {
            continue; // already REQUIRED
        }
        // A stored hash stands in for a hashed string.
        if prop.hashed && crate::auth::password::is_hashed(v) {
            continue;
        }
        // So does an encrypted value for an encrypted property.
        if prop.encrypted.is_some() && crate::crypto::is_encrypted(v) {
            continue;
        }
        if !prop.types.iter().any(|t| t.accepts(v)) {
            failures.push(Failure {
                property: prop.name.clone(),
                requirement: "VALID_TYPE",
                params: Some(json!({
                    "types": prop.types.iter().map(|t| t.as_str()).collect::<Vec<_>>()
                })),
            });
        } else if prop.types == [JsonType::Array] || prop.relationship {
            // Items of a relationship array must be objects (`{"_ref": …}`).
            if let (true, Some(items)) = (prop.relationship, v.as_array()) {
                if items.iter().any(|i| !i.is_object()) {
                    failures.push(Failure {
                        property: prop.name.clone(),
                        requirement: "VALID_TYPE",
                        params: Some(json!({"types": ["relationship"]})),
                    });
                }
            }
        }
    }
    failures
}

/// The 403 of IDM's policy service for `failures` (grouped by property, in order).
pub fn policy_error(failures: &[Failure]) -> ResourceError {
    let mut by_property: Vec<(String, Vec<Value>)> = Vec::new();
    for f in failures {
        let mut req = Map::new();
        req.insert("policyRequirement".into(), json!(f.requirement));
        if let Some(p) = &f.params {
            req.insert("params".into(), p.clone());
        }
        match by_property.iter_mut().find(|(p, _)| *p == f.property) {
            Some((_, reqs)) => reqs.push(Value::Object(req)),
            None => by_property.push((f.property.clone(), vec![Value::Object(req)])),
        }
    }
    let failed: Vec<Value> = by_property
        .into_iter()
        .map(|(property, reqs)| json!({"property": property, "policyRequirements": reqs}))
        .collect();
    ResourceError::forbidden("Failed policy validation")
        .with_detail(json!({"result": false, "failedPolicyRequirements": failed}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::schema::parse_schema;

    #[test]
    fn reports_each_property_and_requirement() {
        let schema = parse_schema(
            "managed/user",
            &json!({"required": ["userName", "mail"],
                    "properties": {"userName": {"type": "string"}, "mail": {"type": "string"},
                                   "age": {"type": ["integer", "null"]}, "flag": {"type": "boolean"}}}),
            "schema",
        )
        .unwrap();
        let content = json!({"userName": "", "age": "x", "flag": null, "other": 1});
        let failures = check(&schema, content.as_object().unwrap());
        let e = policy_error(&failures);
        assert_eq!(e.code, 403);
        assert_eq!(
            e.detail.unwrap(),
            json!({"result": false, "failedPolicyRequirements": [
                {"property": "userName", "policyRequirements": [{"policyRequirement": "REQUIRED"}]},
                {"property": "mail", "policyRequirements": [{"policyRequirement": "REQUIRED"}]},
                {"property": "age", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {"types": ["integer", "null"]}}]},
            ]})
        );
    }
}
