//! Relationship declarations of `managed.json` (IDM's format): a `type: "relationship"`
//! property, or a `type: "array"` whose `items` are one.
//!
//! ```json
//! "roles": {"type": "array", "returnByDefault": false,
//!   "items": {"type": "relationship", "reverseRelationship": true,
//!     "reversePropertyName": "members", "validate": true,
//!     "properties": {"_ref": {"type": "string"}, "_refProperties": {"type": "object",
//!       "properties": {"_id": {"type": "string"}, "_grantType": {"type": "string"}}}},
//!     "resourceCollection": [{"path": "managed/role", "label": "Role",
//!       "query": {"queryFilter": "true", "fields": ["name"]}}]}}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::managed::schema::{parse_property, ObjectSchema, Property};

/// One relationship property's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// An array of references (`type: "array"`), else one reference or null.
    pub array: bool,
    /// Where references may point (`resourceCollection`).
    pub collections: Vec<RefCollection>,
    /// `reversePropertyName` when `reverseRelationship` is true: the property of the
    /// referenced object that holds the other side.
    pub reverse: Option<String>,
    /// `validate`: a reference to a missing object is refused.
    pub validate: bool,
    /// Declared `_refProperties` (besides `_id` and `_rev`), checked on write.
    pub ref_properties: Vec<Property>,
    /// `notifySelf`: a change of one of these relationships notifies the object whose
    /// property it is (the origin, the object in the URL).
    pub notify_self: bool,
    /// `conditionalAssociation` (a role's `members`): conditional grants are made on this
    /// side by the object's condition.
    pub conditional_association: bool,
}

/// One `resourceCollection` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RefCollection {
    /// `managed/<type>`, `internal/user` or `internal/role`.
    pub path: String,
    pub label: Option<String>,
    /// The UI picker's query (`queryFilter`, `fields`, `sortKeys`), kept as declared.
    pub query: Option<Value>,
    /// `notify`: a change of a relationship to an object of this collection notifies it.
    pub notify: bool,
    /// `conditionalAssociationField` (a user's `roles` → `condition`): the property of the
    /// referenced objects holding the query filter that grants them conditionally.
    pub conditional_field: Option<String>,
}

impl Relation {
    /// The collection a `_ref` points into and the id in it, if it is one of ours.
    pub fn target<'r>(&self, reference: &'r str) -> Option<(&str, &'r str)> {
        self.collections.iter().find_map(|c| {
            let id = reference.strip_prefix(c.path.as_str())?.strip_prefix('/')?;
            (!id.is_empty() && !id.contains('/')).then_some((c.path.as_str(), id))
        })
    }
}

impl Relation {
    /// Whether roles' conditions grant through this relationship (either side): its
    /// `_grantType: "conditional"` edges are the conditions' own.
    pub fn is_conditional(&self) -> bool {
        self.conditional_association
            || self
                .collections
                .iter()
                .any(|c| c.conditional_field.is_some())
    }

    /// The `resourceCollection` entry of `collection`.
    pub fn collection(&self, collection: &str) -> Option<&RefCollection> {
        self.collections.iter().find(|c| c.path == collection)
    }
}

/// The relationship settings of property `def` (at `at`), when it declares one:
/// `Ok(None)` for other properties.
pub fn parse_relation(
    def: &Map<String, Value>,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<Arc<Relation>> {
    let is_rel =
        |v: &Map<String, Value>| v.get("type").and_then(Value::as_str) == Some("relationship");
    let (decl, at, array) = if is_rel(def) {
        (def, at.to_owned(), false)
    } else {
        match def.get("items").and_then(Value::as_object) {
            Some(items) if is_rel(items) => (items, format!("{at}.items"), true),
            _ => return None,
        }
    };
    let before = problems.len();
    let mut collections = Vec::new();
    match decl.get("resourceCollection") {
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                let at = format!("{at}.resourceCollection[{i}]");
                let Some(path) = c.get("path").and_then(Value::as_str) else {
                    problems.push(format!("{at}.path: required, a string like \"managed/role\""));
                    continue;
                };
                if !valid_collection(path) {
                    problems.push(format!(
                        "{at}.path: '{path}' is not managed/<type>, internal/user or internal/role"
                    ));
                    continue;
                }
                let label = match c.get("label") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => {
                        problems.push(format!("{at}.label: must be a string"));
                        None
                    }
                };
                let query = match c.get("query") {
                    None | Some(Value::Null) => None,
                    Some(q @ Value::Object(_)) => Some(q.clone()),
                    Some(_) => {
                        problems.push(format!("{at}.query: must be an object"));
                        None
                    }
                };
                let notify = match c.get("notify") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        problems.push(format!("{at}.notify: must be true or false"));
                        false
                    }
                };
                let conditional_field = match c.get("conditionalAssociationField") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(_) => {
                        problems.push(format!(
                            "{at}.conditionalAssociationField: must be a property name"
                        ));
                        None
                    }
                };
                collections.push(RefCollection {
                    path: path.to_owned(),
                    label,
                    query,
                    notify,
                    conditional_field,
                });
            }
        }
        _ => problems.push(format!(
            "{at}.resourceCollection: required, a non-empty array of {{\"path\": \"managed/<type>\", \"label\": …, \"query\": …}}"
        )),
    }
    let flag = |key: &str, problems: &mut Vec<String>| match decl.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(format!("{at}.{key}: must be true or false"));
            false
        }
    };
    let reverse_flag = flag("reverseRelationship", problems);
    let validate = flag("validate", problems);
    let notify_self = flag("notifySelf", problems);
    let conditional_association = flag("conditionalAssociation", problems);
    let reverse = match (reverse_flag, decl.get("reversePropertyName")) {
        (true, Some(Value::String(name))) if !name.is_empty() => Some(name.clone()),
        (true, _) => {
            problems.push(format!(
                "{at}.reversePropertyName: required (a property name) when reverseRelationship is true"
            ));
            None
        }
        (false, _) => None,
    };
    let mut ref_properties = Vec::new();
    if let Some(rp) = decl.get("properties").and_then(|p| p.get("_refProperties")) {
        match rp.get("properties") {
            None => {}
            Some(Value::Object(props)) => {
                for (name, pdef) in props {
                    if name == "_id" || name == "_rev" {
                        continue;
                    }
                    let pat = format!("{at}.properties._refProperties.properties.{name}");
                    match parse_property(name, pdef, &pat) {
                        Ok(p) => ref_properties.push(p),
                        Err(mut p) => problems.append(&mut p),
                    }
                }
            }
            Some(_) => problems.push(format!(
                "{at}.properties._refProperties.properties: must be an object"
            )),
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Arc::new(Relation {
        array,
        collections,
        reverse,
        validate,
        ref_properties,
        notify_self,
        conditional_association,
    }))
}

fn valid_collection(path: &str) -> bool {
    match path.split_once('/') {
        Some(("managed", t)) => {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
        Some(("internal", "user" | "role")) => true,
        _ => false,
    }
}

/// Checks that every relationship points at declared types and that reverse pairs agree:
/// `a.p` reverse `q` on `managed/b` needs `b.q`, a relationship back to `a` reversing `p`.
pub fn check_graph(
    types: &BTreeMap<String, Arc<ObjectSchema>>,
    internal: &[&ObjectSchema],
) -> Vec<String> {
    let lookup = |path: &str| -> Option<&ObjectSchema> {
        match path.strip_prefix("managed/") {
            Some(t) => types.get(t).map(|s| s.as_ref()),
            None => internal.iter().copied().find(|s| s.resource == path),
        }
    };
    let mut problems = Vec::new();
    // A derived property's path: each field a relationship of the objects reached so far.
    for schema in types.values() {
        for (name, cfg) in schema.derived() {
            let mut level: Vec<&ObjectSchema> = vec![schema.as_ref()];
            for field in &cfg.fields {
                let mut next = Vec::new();
                for s in &level {
                    if let Some(rel) = s.relation(field) {
                        next.extend(rel.collections.iter().filter_map(|c| lookup(&c.path)));
                    }
                }
                if next.is_empty() {
                    problems.push(format!(
                        "{}.{name}.queryConfig.referencedRelationshipFields: '{field}' is not a relationship of {}",
                        schema.resource,
                        level.iter().map(|s| s.resource.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                    break;
                }
                level = next;
            }
        }
    }
    // The built-in internal schemas are right by construction; their reverse side
    // (`internal/role` `authzMembers`) accepts any managed type reversing it.
    for schema in types.values() {
        for p in &schema.properties {
            let Some(rel) = &p.relation else { continue };
            let at = format!("{}.{}", schema.resource, p.name);
            for c in &rel.collections {
                let Some(target) = lookup(&c.path) else {
                    problems.push(format!(
                        "{at}: resourceCollection '{}' is not a declared object type",
                        c.path
                    ));
                    continue;
                };
                let Some(rev) = &rel.reverse else { continue };
                let back = target.property(rev).and_then(|q| q.relation.as_ref());
                match back {
                    None => problems.push(format!(
                        "{at}: reversePropertyName '{rev}' is not a relationship of {}",
                        c.path
                    )),
                    Some(back) => {
                        let internal_target = c.path.starts_with("internal/");
                        if back.reverse.as_deref() != Some(p.name.as_str())
                            || !(internal_target
                                || back.collections.iter().any(|b| b.path == schema.resource))
                        {
                            problems.push(format!(
                                "{at}: {}.{rev} must be a reverse relationship back to {} property '{}'",
                                c.path, schema.resource, p.name
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::managed::schema::parse_managed;
    use serde_json::json;

    fn roles(items: serde_json::Value) -> serde_json::Value {
        json!({"type": "array", "items": items})
    }

    #[test]
    fn declarations_are_parsed_and_bad_ones_named() {
        let doc = json!({"objects": [
            {"name": "user", "schema": {"properties": {
                "roles": roles(json!({"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "members", "validate": true,
                    "properties": {"_refProperties": {"properties": {
                        "_id": {"type": "string"}, "_grantType": {"type": "string"}}}},
                    "resourceCollection": [{"path": "managed/role", "label": "Role",
                        "query": {"queryFilter": "true"}}]})),
                "manager": {"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "reports",
                    "resourceCollection": [{"path": "managed/user"}]},
                "reports": roles(json!({"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "manager",
                    "resourceCollection": [{"path": "managed/user"}]})),
                "authzRoles": roles(json!({"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "authzMembers",
                    "resourceCollection": [{"path": "internal/role"}]})),
            }}},
            {"name": "role", "schema": {"properties": {
                "members": roles(json!({"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "roles",
                    "resourceCollection": [{"path": "managed/user"}]})),
            }}},
        ]});
        let schema = parse_managed(&doc).unwrap();
        let user = &schema.types["user"];
        let r = user.relation("roles").unwrap();
        assert!(r.array && r.validate);
        assert_eq!(r.reverse.as_deref(), Some("members"));
        assert_eq!(r.ref_properties.len(), 1);
        assert_eq!(r.target("managed/role/r1"), Some(("managed/role", "r1")));
        assert_eq!(r.target("managed/user/u1"), None);
        let m = user.relation("manager").unwrap();
        assert!(!m.array && !m.validate);
        assert!(!user.returned_by_default("roles"));

        let bad = json!({"objects": [
            {"name": "user", "schema": {"properties": {
                "a": {"type": "relationship"},
                "b": roles(json!({"type": "relationship", "reverseRelationship": true,
                    "resourceCollection": [{"path": "managed/role"}]})),
                "c": {"type": "relationship", "validate": "yes",
                    "resourceCollection": [{"path": "system/ldap/account"}]},
                "d": {"type": "relationship", "resourceCollection": [{"path": "managed/nosuch"}]},
                "e": {"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "owner", "resourceCollection": [{"path": "managed/role"}]},
            }}},
            {"name": "role", "schema": {"properties": {"owner": {"type": "string"}}}},
        ]});
        let problems = parse_managed(&bad).unwrap_err();
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(
            has("properties.a.resourceCollection: required"),
            "{problems:?}"
        );
        assert!(
            has("properties.b.items.reversePropertyName: required"),
            "{problems:?}"
        );
        assert!(
            has("properties.c.validate: must be true or false"),
            "{problems:?}"
        );
        assert!(
            has("'system/ldap/account' is not managed/<type>"),
            "{problems:?}"
        );

        // Cross-type problems are found once each type parses.
        let bad = json!({"objects": [
            {"name": "user", "schema": {"properties": {
                "d": {"type": "relationship", "resourceCollection": [{"path": "managed/nosuch"}]},
                "e": {"type": "relationship", "reverseRelationship": true,
                    "reversePropertyName": "owner", "resourceCollection": [{"path": "managed/role"}]},
            }}},
            {"name": "role", "schema": {"properties": {"owner": {"type": "string"}}}},
        ]});
        let problems = parse_managed(&bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("managed/user.d: resourceCollection 'managed/nosuch'"));
        assert!(problems[1]
            .contains("reversePropertyName 'owner' is not a relationship of managed/role"));
    }
}
