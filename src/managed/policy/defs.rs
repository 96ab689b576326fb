//! The policies of one property, as `managed.json` declares them (`"policies": [{"policyId":
//! "minimum-length", "params": {"minLength": 8}}]`) plus the ones IDM derives from the
//! schema (`required`, `not-empty`, `minimum-length` from `minLength`, `regexpMatches` from
//! `pattern`, `valid-type` from `type`), parsed once when the conf is loaded.

use regex::{Regex, RegexBuilder};
use serde_json::{json, Map, Value};

/// What a policy checks, with its parameters.
#[derive(Debug, Clone)]
pub enum Kind {
    Required,
    NotEmpty,
    /// No other object of the set holds the value (the store enforces it on writes).
    Unique,
    /// Unique, and no internal user of that name: one generic requirement (no enumeration).
    ValidUsername,
    NoInternalUserConflict,
    MinLength(u64),
    MaxLength(u64),
    AtLeastCapitals(u64),
    AtLeastNumbers(u64),
    CannotContainOthers(Vec<String>),
    CannotContainCharacters(Vec<String>),
    CannotContainDuplicates,
    ValidEmail,
    ValidDate,
    ValidPhone,
    /// JSON types as IDM names them (`relationship` counts as `object`).
    ValidType(Vec<String>),
    Regexp {
        regex: Regex,
        source: String,
        flags: Option<String>,
    },
    /// One of IDM's policies this gateway does not evaluate: listed, never failed.
    NotEnforced,
}

/// One policy of a property: IDM's `policyId`, its `params` as configured, and the check.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub params: Option<Value>,
    pub kind: Kind,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.params == other.params
    }
}

/// IDM's policies that exist in its `policy.js` but depend on IDM's own services; a
/// `managed.json` naming one loads (with a warning) and the policy is not evaluated.
const NOT_ENFORCED: &[&str] = &[
    "mapping-exists",
    "max-attempts-triggers-lock-cooldown",
    "re-auth-required",
    "required-if-configured",
    "valid-name-format",
    "valid-array-items",
    "valid-permissions",
    "valid-accessFlags-object",
    "valid-privilege-path",
    "valid-temporal-constraints",
    "valid-query-filter",
];

impl Policy {
    fn new(id: &str, params: Option<Value>, kind: Kind) -> Self {
        Policy {
            id: id.to_owned(),
            params,
            kind,
        }
    }

    pub fn required() -> Self {
        Policy::new("required", None, Kind::Required)
    }

    /// The requirement names a failure of this policy reports (IDM's `policyRequirements`).
    pub fn requirements(&self) -> &'static [&'static str] {
        match &self.kind {
            Kind::Required | Kind::NotEmpty => &["REQUIRED"],
            Kind::Unique | Kind::NoInternalUserConflict => &["UNIQUE"],
            Kind::ValidUsername => &["VALID_USERNAME"],
            Kind::MinLength(_) => &["MIN_LENGTH"],
            Kind::MaxLength(_) => &["MAX_LENGTH"],
            Kind::AtLeastCapitals(_) => &["AT_LEAST_X_CAPITAL_LETTERS"],
            Kind::AtLeastNumbers(_) => &["AT_LEAST_X_NUMBERS"],
            Kind::CannotContainOthers(_) => &["CANNOT_CONTAIN_OTHERS"],
            Kind::CannotContainCharacters(_) => &["CANNOT_CONTAIN_CHARACTERS"],
            Kind::CannotContainDuplicates => &["CANNOT_CONTAIN_DUPLICATES"],
            Kind::ValidEmail => &["VALID_EMAIL_ADDRESS_FORMAT"],
            Kind::ValidDate => &["VALID_DATE"],
            Kind::ValidPhone => &["VALID_PHONE_FORMAT"],
            Kind::ValidType(_) => &["VALID_TYPE"],
            Kind::Regexp { .. } => &["MATCH_REGEXP"],
            Kind::NotEnforced => &[],
        }
    }

    /// Skipped when the property is absent (IDM's `validateOnlyIfPresent`).
    pub fn only_if_present(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Required
                | Kind::Unique
                | Kind::ValidUsername
                | Kind::NoInternalUserConflict
                | Kind::ValidType(_)
                | Kind::Regexp { .. }
        )
    }

    /// The policy as `GET /openidm/policy/…` lists it.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("policyId".into(), json!(self.id));
        if let Some(p) = &self.params {
            out.insert("params".into(), p.clone());
        }
        out.insert("policyRequirements".into(), json!(self.requirements()));
        Value::Object(out)
    }
}

/// The policies of one property: IDM's implicit ones (in IDM's order: `not-empty`,
/// `minimum-length`, `regexpMatches`, `valid-type`), then the declared ones. `required` is
/// added by the schema (it knows the `required` list).
pub fn parse_policies(
    def: &Map<String, Value>,
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<Policy> {
    let mut out = Vec::new();
    let declared: Vec<&str> = match def.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_list = matches!(def.get("type"), Some(Value::Array(_)));
    let min_length = def.get("minLength").and_then(Value::as_u64);
    if (type_list && !declared.contains(&"null")) || min_length.is_some_and(|n| n > 0) {
        out.push(Policy::new("not-empty", None, Kind::NotEmpty));
    }
    if declared.contains(&"string") {
        if let Some(n) = min_length {
            out.push(Policy::new(
                "minimum-length",
                Some(json!({"minLength": n})),
                Kind::MinLength(n),
            ));
        }
        if let Some(pattern) = def.get("pattern").and_then(Value::as_str) {
            match regexp(pattern, None) {
                Ok(regex) => out.push(Policy::new(
                    "regexpMatches",
                    Some(json!({"regexp": pattern})),
                    Kind::Regexp {
                        regex,
                        source: pattern.to_owned(),
                        flags: None,
                    },
                )),
                Err(e) => problems.push(format!("{at}.pattern: {e}")),
            }
        }
    }
    if !declared.is_empty() && !declared.contains(&"any") {
        let types: Vec<String> = declared
            .iter()
            .map(|t| if *t == "relationship" { "object" } else { t }.to_owned())
            .collect();
        out.push(Policy::new(
            "valid-type",
            Some(json!({"types": types})),
            Kind::ValidType(types),
        ));
    }
    match def.get("policies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, p) in list.iter().enumerate() {
                match parse_one(p) {
                    Ok(policy) => {
                        if matches!(policy.kind, Kind::NotEnforced) {
                            tracing::warn!(
                                property = at,
                                policy = %policy.id,
                                "managed.json names an IDM policy this gateway does not evaluate; it is listed but not enforced"
                            );
                        }
                        out.push(policy)
                    }
                    Err(e) => problems.push(format!("{at}.policies[{i}]: {e}")),
                }
            }
        }
        Some(_) => problems.push(format!("{at}.policies: must be an array")),
    }
    out
}

/// One `{"policyId": …, "params": {…}}`.
fn parse_one(p: &Value) -> Result<Policy, String> {
    let id = p
        .get("policyId")
        .and_then(Value::as_str)
        .ok_or("must be an object with a policyId")?;
    let params = match p.get("params") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(format!("{id}: params must be an object")),
    };
    let empty = Map::new();
    let map = params.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let count = |key: &str| -> Result<u64, String> {
        match map.get(key) {
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or(0)),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().unwrap_or(0)),
            _ => Err(format!(
                "{id}: params.{key} is required, a non-negative integer"
            )),
        }
    };
    let kind = match id {
        "required" => Kind::Required,
        "not-empty" => Kind::NotEmpty,
        "unique" => Kind::Unique,
        "valid-username" => Kind::ValidUsername,
        "no-internal-user-conflict" => Kind::NoInternalUserConflict,
        "minimum-length" => Kind::MinLength(count("minLength")?),
        "maximum-length" => Kind::MaxLength(count("maxLength")?),
        "at-least-X-capitals" => Kind::AtLeastCapitals(count("numCaps")?),
        "at-least-X-numbers" => Kind::AtLeastNumbers(count("numNums")?),
        "cannot-contain-others" => Kind::CannotContainOthers(
            strings(map.get("disallowedFields"), true)
                .ok_or_else(|| format!("{id}: params.disallowedFields must list property names"))?,
        ),
        "cannot-contain-characters" => Kind::CannotContainCharacters(
            strings(map.get("forbiddenChars"), false)
                .ok_or_else(|| format!("{id}: params.forbiddenChars must list characters"))?,
        ),
        "cannot-contain-duplicates" => Kind::CannotContainDuplicates,
        "valid-email-address-format" => Kind::ValidEmail,
        "valid-date" => Kind::ValidDate,
        "valid-phone-format" => Kind::ValidPhone,
        "valid-type" => Kind::ValidType(
            strings(map.get("types"), false)
                .ok_or_else(|| format!("{id}: params.types must list type names"))?,
        ),
        "regexpMatches" => {
            let source = map
                .get("regexp")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{id}: params.regexp is required"))?;
            let flags = map.get("flags").and_then(Value::as_str).map(str::to_owned);
            Kind::Regexp {
                regex: regexp(source, flags.as_deref()).map_err(|e| format!("{id}: {e}"))?,
                source: source.to_owned(),
                flags,
            }
        }
        other if NOT_ENFORCED.contains(&other) => Kind::NotEnforced,
        other => {
            return Err(format!(
                "unknown policyId '{other}' (custom policies of conf/policy.json are not supported)"
            ))
        }
    };
    Ok(Policy::new(id, params, kind))
}

/// A list of strings: a JSON array, or (`comma`) IDM's legacy comma-separated string; a
/// plain string of characters for `forbiddenChars`.
fn strings(v: Option<&Value>, comma: bool) -> Option<Vec<String>> {
    match v? {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) if comma => Some(s.split(',').map(|f| f.trim().to_owned()).collect()),
        Value::String(s) => Some(s.chars().map(String::from).collect()),
        _ => None,
    }
}

/// A JavaScript regular expression with its flags (`i`, `m`, `s`; `g`, `u`, `y` change
/// nothing for a test). Look-around and back-references are refused.
fn regexp(source: &str, flags: Option<&str>) -> Result<Regex, String> {
    let mut b = RegexBuilder::new(source);
    for f in flags.unwrap_or("").chars() {
        match f {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            'g' | 'u' | 'y' => &mut b,
            other => return Err(format!("unknown regular expression flag '{other}'")),
        };
    }
    b.size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression '{source}': {e}"))
}
