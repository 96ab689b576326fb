//! Evaluating policies as IDM's `policy.js` does: each property's policies in order, a
//! failure per failed policy; a format policy also fails a value that already failed
//! `REQUIRED` (IDM's `isRequired`), and those marked `validateOnlyIfPresent` skip an absent
//! property.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Map, Value};

use super::defs::{Kind, Policy};
use super::Failure;

/// What policies need beyond the object: other objects and the stored version.
#[async_trait::async_trait]
pub trait Lookups: Send + Sync {
    /// Whether another object of the set holds `value` in `property`.
    async fn taken(&self, property: &str, value: &str) -> bool;
    /// Whether an internal user is named `name`.
    async fn internal_user(&self, name: &str) -> bool;
    /// The stored object the request is about (`cannot-contain-others` reads properties
    /// the request leaves out from it, as IDM does).
    fn stored(&self) -> Option<&Map<String, Value>>;
}

/// Evaluates `policies` of `property` on `value` (None: absent) within `full`.
pub async fn check_property(
    property: &str,
    policies: &[Policy],
    value: Option<&Value>,
    full: &Map<String, Value>,
    env: &dyn Lookups,
    out: &mut Vec<Failure>,
) {
    let mut required_failed = false;
    for policy in policies {
        if value.is_none() && policy.only_if_present() {
            continue;
        }
        let failed = match &policy.kind {
            Kind::Unique => match non_empty(value) {
                Some(v) if env.taken(property, v).await => Some(req("UNIQUE", None)),
                _ => None,
            },
            Kind::NoInternalUserConflict => match non_empty(value) {
                Some(v) if env.internal_user(v).await => Some(req("UNIQUE", None)),
                _ => None,
            },
            Kind::ValidUsername => match non_empty(value) {
                Some(v) if env.taken(property, v).await || env.internal_user(v).await => {
                    Some(req("VALID_USERNAME", None))
                }
                _ => None,
            },
            kind => evaluate(kind, value, full, env.stored(), required_failed),
        };
        if let Some(requirement) = failed {
            required_failed |= requirement["policyRequirement"] == "REQUIRED";
            out.push(Failure {
                property: property.to_owned(),
                requirement,
            });
        }
    }
}

fn req(name: &str, params: Option<Value>) -> Value {
    match params {
        Some(p) => json!({"policyRequirement": name, "params": p}),
        None => json!({"policyRequirement": name}),
    }
}

/// A non-empty string value.
fn non_empty(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Length as JavaScript counts it (UTF-16 code units).
fn js_len(s: &str) -> u64 {
    s.encode_utf16().count() as u64
}

/// The type name IDM's `valid-type` compares (`typeof`, with `array` and `null`).
fn js_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i).+@.+\..+").unwrap_or_else(|e| unreachable!("{e}")));
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\+?[0-9\- ()]*$").unwrap_or_else(|e| unreachable!("{e}")));

/// The policies that need nothing but the value, the object and the stored object.
fn evaluate(
    kind: &Kind,
    value: Option<&Value>,
    full: &Map<String, Value>,
    stored: Option<&Map<String, Value>>,
    required_failed: bool,
) -> Option<Value> {
    let text = non_empty(value);
    // A format policy fails a non-empty string that does not match, or a value that
    // already failed REQUIRED.
    let format =
        |ok: &dyn Fn(&str) -> bool| (required_failed || text.is_some()) && !text.is_some_and(ok);
    match kind {
        Kind::Required => value.is_none().then(|| req("REQUIRED", None)),
        Kind::NotEmpty => match value {
            Some(Value::Null) => Some(req("REQUIRED", None)),
            Some(Value::String(s)) if s.is_empty() => Some(req("REQUIRED", None)),
            Some(Value::Array(a)) if a.is_empty() => Some(req("REQUIRED", None)),
            _ => None,
        },
        Kind::MinLength(n) => {
            format(&|s| js_len(s) >= *n).then(|| req("MIN_LENGTH", Some(json!({"minLength": n}))))
        }
        Kind::MaxLength(n) => text
            .is_some_and(|s| js_len(s) > *n)
            .then(|| req("MAX_LENGTH", Some(json!({"maxLength": n})))),
        Kind::AtLeastCapitals(n) => {
            format(&|s| s.chars().filter(char::is_ascii_uppercase).count() as u64 >= *n)
                .then(|| req("AT_LEAST_X_CAPITAL_LETTERS", Some(json!({"numCaps": n}))))
        }
        Kind::AtLeastNumbers(n) => {
            format(&|s| s.chars().filter(char::is_ascii_digit).count() as u64 >= *n)
                .then(|| req("AT_LEAST_X_NUMBERS", Some(json!({"numNums": n}))))
        }
        Kind::ValidEmail => {
            format(&|s| EMAIL.is_match(s)).then(|| req("VALID_EMAIL_ADDRESS_FORMAT", None))
        }
        Kind::ValidPhone => format(&|s| PHONE.is_match(s)).then(|| req("VALID_PHONE_FORMAT", None)),
        Kind::ValidDate => format(&valid_date).then(|| req("VALID_DATE", None)),
        Kind::Regexp {
            regex,
            source,
            flags,
        } => {
            let number = value.filter(|v| v.is_number()).map(Value::to_string);
            let text = number.as_deref().filter(|s| !s.is_empty()).or(text);
            ((required_failed || text.is_some()) && !text.is_some_and(|s| regex.is_match(s))).then(
                || {
                    // IDM's shape: `regexp` and `flags` (when set) beside the params.
                    let mut out = json!({"policyRequirement": "MATCH_REGEXP", "regexp": source,
                                     "params": {"regexp": source}});
                    if let Some(f) = flags {
                        out["flags"] = json!(f);
                        out["params"]["flags"] = json!(f);
                    }
                    out
                },
            )
        }
        Kind::CannotContainCharacters(chars) => text
            .filter(|s| {
                chars
                    .iter()
                    .any(|c| !c.is_empty() && s.contains(c.as_str()))
            })
            .map(|_| {
                req(
                    "CANNOT_CONTAIN_CHARACTERS",
                    Some(json!({"forbiddenChars": chars.join(", ")})),
                )
            }),
        Kind::CannotContainOthers(fields) => {
            let s = text?;
            let offending: Vec<&String> = fields
                .iter()
                .filter(|f| {
                    let other = field(full, f).or_else(|| stored.and_then(|o| field(o, f)));
                    other
                        .and_then(Value::as_str)
                        .is_some_and(|o| !o.is_empty() && s.contains(o))
                })
                .collect();
            (!offending.is_empty()).then(|| {
                req(
                    "CANNOT_CONTAIN_OTHERS",
                    Some(json!({"disallowedFields": offending})),
                )
            })
        }
        Kind::CannotContainDuplicates => {
            let items = value?.as_array()?;
            items
                .iter()
                .enumerate()
                .find(|(i, v)| items[..*i].contains(v))
                .map(|(_, v)| {
                    req(
                        "CANNOT_CONTAIN_DUPLICATES",
                        Some(json!({"duplicateValue": v})),
                    )
                })
        }
        Kind::ValidType(types) => {
            let v = value?;
            let t = js_type(v);
            let ok = types
                .iter()
                .any(|d| d == t || (d == "integer" && (v.is_i64() || v.is_u64())) || d == "any");
            (!ok).then(|| {
                req(
                    "VALID_TYPE",
                    Some(json!({"invalidType": t, "validTypes": types})),
                )
            })
        }
        Kind::Unique | Kind::ValidUsername | Kind::NoInternalUserConflict | Kind::NotEnforced => {
            None
        }
    }
}

/// A property by name or JSON pointer (`/address/city`), as `cannot-contain-others` reads.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.trim_start_matches('/').split('/');
    let first = obj.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.get(p))
}

/// A date JavaScript's `Date` reads: ISO 8601 (date, date-time with or without a zone,
/// year or year-month) or RFC 2822.
fn valid_date(s: &str) -> bool {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    DateTime::parse_from_rfc3339(s).is_ok()
        || DateTime::parse_from_rfc2822(s).is_ok()
        || NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").is_ok()
        || (s.len() == 4 && s.chars().all(|c| c.is_ascii_digit()))
        || ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .any(|f| NaiveDateTime::parse_from_str(s, f).is_ok())
        || DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%:z").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::policy::defs::parse_policies;
    use proptest::prelude::*;

    struct Env {
        taken: Vec<&'static str>,
        internal: Vec<&'static str>,
        stored: Option<Map<String, Value>>,
    }

    #[async_trait::async_trait]
    impl Lookups for Env {
        async fn taken(&self, _: &str, value: &str) -> bool {
            self.taken.contains(&value)
        }
        async fn internal_user(&self, name: &str) -> bool {
            self.internal.contains(&name)
        }
        fn stored(&self) -> Option<&Map<String, Value>> {
            self.stored.as_ref()
        }
    }

    fn env() -> Env {
        Env {
            taken: vec!["taken"],
            internal: vec!["openidm-admin"],
            stored: None,
        }
    }

    fn policies(def: Value) -> Vec<Policy> {
        let mut problems = Vec::new();
        let p = parse_policies(def.as_object().unwrap(), "p", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        p
    }

    /// The requirements `value` fails in `full` (the property is `p`).
    fn fails_with(def: Value, value: Option<Value>, full: Value, env: &Env) -> Vec<Value> {
        let policies = policies(def);
        let mut out = Vec::new();
        futures_executor::block_on(check_property(
            "p",
            &policies,
            value.as_ref(),
            full.as_object().unwrap(),
            env,
            &mut out,
        ));
        out.into_iter().map(|f| f.requirement).collect()
    }

    fn fails(def: Value, value: Value) -> Vec<Value> {
        fails_with(def, Some(value), json!({}), &env())
    }

    fn one(id: &str, params: Value) -> Value {
        json!({"type": "string", "policies": [{"policyId": id, "params": params}]})
    }

    #[test]
    fn password_policies_report_idm_requirements_and_params() {
        let def = json!({"type": "string", "policies": [
            {"policyId": "minimum-length", "params": {"minLength": 8}},
            {"policyId": "at-least-X-capitals", "params": {"numCaps": 1}},
            {"policyId": "at-least-X-numbers", "params": {"numNums": 1}},
            {"policyId": "cannot-contain-others", "params": {"disallowedFields": ["userName", "givenName", "sn"]}}]});
        let full = json!({"userName": "bjensen", "givenName": "Barbara"});
        assert_eq!(
            fails_with(def.clone(), Some(json!("bjensen")), full.clone(), &env()),
            vec![
                json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}}),
                json!({"policyRequirement": "AT_LEAST_X_CAPITAL_LETTERS", "params": {"numCaps": 1}}),
                json!({"policyRequirement": "AT_LEAST_X_NUMBERS", "params": {"numNums": 1}}),
                json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["userName"]}}),
            ]
        );
        assert!(fails_with(
            def.clone(),
            Some(json!("Secr3t-pass")),
            full.clone(),
            &env()
        )
        .is_empty());
        // Absent: the password policies are only checked when present.
        assert!(fails_with(def.clone(), None, full, &env()).is_empty());
        // A property missing from the object is read from the stored one.
        let stored = Env {
            stored: Some(json!({"sn": "Jensen"}).as_object().unwrap().clone()),
            ..env()
        };
        assert_eq!(
            fails_with(def, Some(json!("Jensen2024X")), json!({}), &stored),
            vec![
                json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["sn"]}})
            ]
        );
    }

    #[test]
    fn implicit_policies_from_the_schema() {
        // A type list without null adds not-empty; valid-type always.
        let def = json!({"type": ["string"]});
        assert_eq!(
            fails(def.clone(), json!("")),
            vec![json!({"policyRequirement": "REQUIRED"})]
        );
        assert_eq!(
            fails(def, json!(3)),
            vec![
                json!({"policyRequirement": "VALID_TYPE", "params": {"invalidType": "number", "validTypes": ["string"]}})
            ]
        );
        // null is a type: refused unless declared.
        assert_eq!(
            fails(json!({"type": "string"}), Value::Null),
            vec![
                json!({"policyRequirement": "VALID_TYPE", "params": {"invalidType": "null", "validTypes": ["string"]}})
            ]
        );
        assert!(fails(json!({"type": ["string", "null"]}), Value::Null).is_empty());
        assert!(fails(json!({"type": "integer"}), json!(3)).is_empty());
        assert!(!fails(json!({"type": "integer"}), json!(3.5)).is_empty());
        assert!(fails(
            json!({"type": "relationship"}),
            json!({"_ref": "managed/user/a"})
        )
        .is_empty());
        // minLength and pattern on strings.
        assert_eq!(
            fails(json!({"type": "string", "minLength": 3}), json!("ab")),
            vec![json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 3}})]
        );
        let phone = json!({"type": "string", "pattern": "^\\+?([0-9\\- \\(\\)])*$"});
        assert!(fails(phone.clone(), json!("+1 (555) 010-0100")).is_empty());
        assert_eq!(
            fails(phone, json!("call me"))[0]["policyRequirement"],
            "MATCH_REGEXP"
        );
    }

    #[test]
    fn formats() {
        let email = one("valid-email-address-format", json!({}));
        assert!(fails(email.clone(), json!("a@b.co")).is_empty());
        assert!(
            fails(email.clone(), json!("")).is_empty(),
            "empty is not checked"
        );
        assert_eq!(
            fails(email, json!("nobody")),
            vec![json!({"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"})]
        );
        let phone = one("valid-phone-format", json!({}));
        assert!(fails(phone.clone(), json!("+44 (20) 7946-0000")).is_empty());
        assert_eq!(
            fails(phone, json!("555-CALL")),
            vec![json!({"policyRequirement": "VALID_PHONE_FORMAT"})]
        );
        let date = one("valid-date", json!({}));
        for ok in [
            "2024-02-29",
            "2024-02-29T10:00:00Z",
            "2024-02-29T10:00:00.123+01:00",
            "2024-02-29T10:00",
            "2024-02",
            "Thu, 29 Feb 2024 10:00:00 +0000",
        ] {
            assert!(fails(date.clone(), json!(ok)).is_empty(), "{ok}");
        }
        for bad in ["2023-02-29", "yesterday", "2024-13-01"] {
            assert_eq!(
                fails(date.clone(), json!(bad)),
                vec![json!({"policyRequirement": "VALID_DATE"})],
                "{bad}"
            );
        }
        let chars = one(
            "cannot-contain-characters",
            json!({"forbiddenChars": ["/", "*"]}),
        );
        assert_eq!(
            fails(chars.clone(), json!("a/b")),
            vec![
                json!({"policyRequirement": "CANNOT_CONTAIN_CHARACTERS", "params": {"forbiddenChars": "/, *"}})
            ]
        );
        assert!(fails(chars, json!("ab")).is_empty());
        let max = one("maximum-length", json!({"maxLength": 3}));
        assert_eq!(
            fails(max.clone(), json!("abcd")),
            vec![json!({"policyRequirement": "MAX_LENGTH", "params": {"maxLength": 3}})]
        );
        assert!(fails(max, json!("abc")).is_empty());
        let dup = json!({"type": "array", "policies": [{"policyId": "cannot-contain-duplicates"}]});
        assert_eq!(
            fails(dup, json!(["a", "b", "a"])),
            vec![
                json!({"policyRequirement": "CANNOT_CONTAIN_DUPLICATES", "params": {"duplicateValue": "a"}})
            ]
        );
    }

    #[test]
    fn required_and_not_empty_are_idm_s() {
        let def = json!({"type": "string", "policies": [{"policyId": "required"}, {"policyId": "not-empty"},
            {"policyId": "minimum-length", "params": {"minLength": 2}}]});
        assert_eq!(
            fails_with(def.clone(), None, json!({}), &env()),
            vec![json!({"policyRequirement": "REQUIRED"})]
        );
        // An empty string fails not-empty, and so the format policies after it.
        assert_eq!(
            fails(def, json!("")),
            vec![
                json!({"policyRequirement": "REQUIRED"}),
                json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 2}}),
            ]
        );
    }

    #[test]
    fn uniqueness_and_internal_users() {
        let un = one("valid-username", json!({}));
        assert_eq!(
            fails(un.clone(), json!("taken")),
            vec![json!({"policyRequirement": "VALID_USERNAME"})]
        );
        assert_eq!(
            fails(un.clone(), json!("openidm-admin")),
            vec![json!({"policyRequirement": "VALID_USERNAME"})]
        );
        assert!(fails(un, json!("free")).is_empty());
        assert_eq!(
            fails(one("unique", json!({})), json!("taken")),
            vec![json!({"policyRequirement": "UNIQUE"})]
        );
        assert_eq!(
            fails(
                one("no-internal-user-conflict", json!({})),
                json!("openidm-admin")
            ),
            vec![json!({"policyRequirement": "UNIQUE"})]
        );
    }

    #[test]
    fn bad_declarations_are_named() {
        let mut problems = Vec::new();
        let def = json!({"type": "string", "pattern": "(?<=x)a", "policies": [
            {"policyId": "no-such-policy"},
            {"policyId": "minimum-length", "params": {"minLength": "eight"}},
            {"policyId": "cannot-contain-characters"},
            {"policyId": "regexpMatches", "params": {"regexp": "[", "flags": "i"}},
            {"policyId": "mapping-exists"}]});
        let p = parse_policies(def.as_object().unwrap(), "x", &mut problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("unknown policyId 'no-such-policy'")));
        assert!(problems.iter().any(|p| p.contains("params.minLength")));
        assert!(problems.iter().any(|p| p.contains("x.pattern")));
        assert!(
            p.iter().any(|p| p.id == "mapping-exists"),
            "known to IDM: listed"
        );
    }

    proptest! {
        #[test]
        fn capitals_and_numbers_count_like_idm(s in "[a-zA-Z0-9!(]{1,20}", n in 0u64..5) {
            let caps = s.chars().filter(|c| c.is_ascii_uppercase()).count() as u64;
            let nums = s.chars().filter(|c| c.is_ascii_digit()).count() as u64;
            let f = fails(one("at-least-X-capitals", json!({"numCaps": n})), json!(s.clone()));
            prop_assert_eq!(f.is_empty(), caps >= n);
            let f = fails(one("at-least-X-numbers", json!({"numNums": n})), json!(s.clone()));
            prop_assert_eq!(f.is_empty(), nums >= n);
        }

        #[test]
        fn lengths_count_utf16_units(s in "\\PC{1,12}", n in 1u64..16) {
            let len = s.encode_utf16().count() as u64;
            let f = fails(one("minimum-length", json!({"minLength": n})), json!(s.clone()));
            prop_assert_eq!(f.is_empty(), len >= n);
            let f = fails(one("maximum-length", json!({"maxLength": n})), json!(s.clone()));
            prop_assert_eq!(f.is_empty(), len <= n);
        }

        #[test]
        fn forbidden_characters(s in "[a-z/*]{1,10}") {
            let f = fails(one("cannot-contain-characters", json!({"forbiddenChars": ["/", "*"]})), json!(s.clone()));
            prop_assert_eq!(f.is_empty(), !s.contains('/') && !s.contains('*'));
        }
    }
}
