//! Object schemas: `conf/managed.json` (IDM's format) lowered to plain types, plus the
//! built-in schemas of internal users and roles.
//!
//! ```json
//! {"objects": [{"name": "user",
//!   "schema": {"required": ["userName"],
//!     "properties": {"userName": {"type": "string", "searchable": true,
//!                                  "policies": [{"policyId": "unique"}]},
//!                    "password": {"type": "string", "scope": "private",
//!                                 "secureHash": {"algorithm": "ARGON2"}},
//!                    "accountStatus": {"type": "string", "default": "active"}}}}]}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::policy::defs::parse_policies;
use super::policy::{Kind, Policy};
use super::relationships::schema::{check_graph, parse_relation, Relation};
use crate::crest::filter::JsonPointer;
use crate::script::{parse_script, Script};

/// JSON types a property may hold (`"type": "string"` or `["string", "null"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
    /// A relationship (`{"_ref": …}`) — stored as given until relationships exist.
    Relationship,
    /// `"type"` absent or `"any"`.
    Any,
}

impl JsonType {
    fn parse(name: &str) -> Option<JsonType> {
        Some(match name {
            "string" => JsonType::String,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "null" => JsonType::Null,
            "relationship" => JsonType::Relationship,
            "any" => JsonType::Any,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
            JsonType::Relationship => "relationship",
            JsonType::Any => "any",
        }
    }

    /// Whether `v` is of this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            JsonType::String => v.is_string(),
            JsonType::Number => v.is_number(),
            JsonType::Integer => v.is_i64() || v.is_u64(),
            JsonType::Boolean => v.is_boolean(),
            JsonType::Object | JsonType::Relationship => v.is_object(),
            JsonType::Array => v.is_array(),
            JsonType::Null => v.is_null(),
            JsonType::Any => true,
        }
    }
}

/// One declared property.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub types: Vec<JsonType>,
    /// Items of an array of relationships count as a relationship property.
    pub relationship: bool,
    /// The relationship's settings (stored as edges, not in the object).
    pub relation: Option<Arc<Relation>>,
    pub searchable: bool,
    /// Returned when `_fields` is empty or `*`. False for private properties and, unless
    /// `returnByDefault` says otherwise, relationships and virtual properties.
    pub return_by_default: bool,
    /// Never returned to HTTP callers, never queryable (`scope: private`, hashed and
    /// encrypted secrets). Internal callers (scripts, sync) read them as stored.
    pub private: bool,
    /// Stored as a salted slow hash (`secureHash` declared): one-way.
    pub hashed: bool,
    /// Stored encrypted (`encryption` declared): reversible by internal callers.
    pub encrypted: Option<Encryption>,
    /// `unique` or `valid-username`: the store enforces it with a unique index.
    pub unique: bool,
    /// Its policies, IDM's implicit ones first (see [`crate::managed::policy`]).
    pub policies: Vec<Policy>,
    pub default: Option<Value>,
    /// `isVirtual`: computed (by `onRetrieve` or `onStore`), never written by clients.
    pub virtual_: bool,
    /// Property-level triggers.
    pub hooks: PropertyHooks,
    /// `queryConfig` of a relationship-derived virtual property (`effectiveRoles`):
    /// computed from the relationships and stored with the object.
    pub query_config: Option<QueryConfig>,
    /// `notifyRelationships`: when this property changes (or the object is notified
    /// through it), the objects referenced through these relationship fields are notified.
    pub notify_relationships: Vec<String>,
    /// `isConditional`: the property holds a query filter granting this object (a role)
    /// to the objects it matches.
    pub conditional: bool,
    /// `isTemporalConstraint`: the property holds `[{"duration": "<start>/<end>"}]`, and
    /// the object only counts through relationships while one interval holds.
    pub temporal: bool,
    /// `userEditable`: the user may change it on their own object (IDM's access rule
    /// `onlyEditableManagedObjectProperties`).
    pub user_editable: bool,
    /// `isProtected`: changing it on one's own object needs re-authentication.
    pub protected: bool,
}

/// IDM's `queryConfig` of a relationship-derived virtual property.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    /// `referencedRelationshipFields`: relationship fields followed in order.
    pub fields: Vec<String>,
    /// `referencedObjectFields`: fields of the objects reached (`*`: all); none: the
    /// items are references.
    pub object_fields: Option<Vec<String>>,
    /// `flattenProperties`: a flat list of the object fields' values.
    pub flatten: bool,
}

/// A property's triggers (IDM's `onValidate`, `onRetrieve`, `onStore` on a property).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertyHooks {
    /// Throws to refuse the value (`property`, `object`, `propertyName`).
    pub on_validate: Option<Script>,
    /// Its value becomes the property's value as the object is read.
    pub on_retrieve: Option<Script>,
    /// Its value becomes the property's value as the object is stored.
    pub on_store: Option<Script>,
}

impl PropertyHooks {
    pub fn is_empty(&self) -> bool {
        self.on_validate.is_none() && self.on_retrieve.is_none() && self.on_store.is_none()
    }
}

/// A managed type's object-level triggers (IDM's names, `managed.json` keys of the type).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectHooks {
    pub on_create: Option<Script>,
    pub on_read: Option<Script>,
    pub on_update: Option<Script>,
    pub on_delete: Option<Script>,
    pub on_validate: Option<Script>,
    pub on_retrieve: Option<Script>,
    pub on_store: Option<Script>,
    pub post_create: Option<Script>,
    pub post_update: Option<Script>,
    pub post_delete: Option<Script>,
}

/// The object-level trigger keys of `managed.json`, in [`ObjectHooks`]' order.
pub const OBJECT_HOOKS: [&str; 10] = [
    "onCreate",
    "onRead",
    "onUpdate",
    "onDelete",
    "onValidate",
    "onRetrieve",
    "onStore",
    "postCreate",
    "postUpdate",
    "postDelete",
];

impl ObjectHooks {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Script>> {
        Some(match key {
            "onCreate" => &mut self.on_create,
            "onRead" => &mut self.on_read,
            "onUpdate" => &mut self.on_update,
            "onDelete" => &mut self.on_delete,
            "onValidate" => &mut self.on_validate,
            "onRetrieve" => &mut self.on_retrieve,
            "onStore" => &mut self.on_store,
            "postCreate" => &mut self.post_create,
            "postUpdate" => &mut self.post_update,
            "postDelete" => &mut self.post_delete,
            _ => return None,
        })
    }
}

/// A property's `encryption`: `{"purpose": "idm.password.encryption"}` (IDM 7+) or the
/// older `{"key": "openidm-sym-default"}`. Values are encrypted with the keystore's active
/// key either way (so rotation applies); the purpose is recorded in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encryption {
    pub purpose: Option<String>,
}

/// The schema of one object set (`managed/user`, `internal/user`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSchema {
    /// Resource path, e.g. `managed/user`.
    pub resource: String,
    pub properties: Vec<Property>,
    pub required: Vec<String>,
    /// Object-level triggers (managed types only).
    pub hooks: ObjectHooks,
}

impl ObjectSchema {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Undeclared properties are stored and returned, as in IDM.
    pub fn returned_by_default(&self, name: &str) -> bool {
        self.property(name).is_none_or(|p| p.return_by_default)
    }

    pub fn is_private(&self, name: &str) -> bool {
        self.property(name).is_some_and(|p| p.private)
    }

    pub fn is_relationship(&self, name: &str) -> bool {
        self.property(name).is_some_and(|p| p.relationship)
    }

    /// The relationship settings of property `name`, if it is one.
    pub fn relation(&self, name: &str) -> Option<&Arc<Relation>> {
        self.property(name).and_then(|p| p.relation.as_ref())
    }

    /// The relationship properties.
    pub fn relations(&self) -> impl Iterator<Item = (&str, &Arc<Relation>)> {
        self.properties
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.relation.as_ref()?)))
    }

    /// Returned by default to an internal caller: private values too.
    pub fn returned_by_default_internally(&self, name: &str) -> bool {
        self.property(name)
            .is_none_or(|p| p.return_by_default || (p.private && !p.relationship))
    }

    pub fn searchable(&self) -> Vec<JsonPointer> {
        self.properties
            .iter()
            .filter(|p| p.searchable && !p.private)
            .map(|p| JsonPointer(vec![p.name.clone()]))
            .collect()
    }

    pub fn is_virtual(&self, name: &str) -> bool {
        self.property(name).is_some_and(|p| p.virtual_)
    }

    /// The relationship-derived virtual properties (`queryConfig`), stored with the object.
    pub fn derived(&self) -> impl Iterator<Item = (&str, &QueryConfig)> {
        self.properties
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.query_config.as_ref()?)))
    }

    /// The temporal-constraint properties (`isTemporalConstraint`).
    pub fn temporal(&self) -> impl Iterator<Item = &str> {
        self.properties
            .iter()
            .filter(|p| p.temporal)
            .map(|p| p.name.as_str())
    }

    /// Whether reading an object runs a script (object or property `onRetrieve`).
    pub fn has_retrieve_hooks(&self) -> bool {
        self.hooks.on_retrieve.is_some()
            || self
                .properties
                .iter()
                .any(|p| p.hooks.on_retrieve.is_some())
    }

    /// Whether storing an object runs a script (object or property `onValidate`/`onStore`).
    pub fn has_store_hooks(&self) -> bool {
        self.hooks.on_validate.is_some()
            || self.hooks.on_store.is_some()
            || self
                .properties
                .iter()
                .any(|p| p.hooks.on_validate.is_some() || p.hooks.on_store.is_some())
    }

    pub fn unique(&self) -> Vec<JsonPointer> {
        self.properties
            .iter()
            .filter(|p| p.unique)
            .map(|p| JsonPointer(vec![p.name.clone()]))
            .collect()
    }
}

/// The managed object types of `managed.json`, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagedSchema {
    pub types: BTreeMap<String, Arc<ObjectSchema>>,
}

/// Parses `managed.json`, reporting every problem at once.
pub fn parse_managed(doc: &Value) -> Result<ManagedSchema, Vec<String>> {
    let mut problems = Vec::new();
    let mut types = BTreeMap::new();
    let objects = match doc.get("objects") {
        Some(Value::Array(objects)) => objects.as_slice(),
        Some(_) => return Err(vec!["objects: must be an array".into()]),
        None => return Err(vec!["objects: required".into()]),
    };
    for (i, obj) in objects.iter().enumerate() {
        let at = format!("objects[{i}]");
        let Some(name) = obj.get("name").and_then(Value::as_str) else {
            problems.push(format!("{at}.name: required, a string"));
            continue;
        };
        if !valid_type_name(name) {
            problems.push(format!(
                "{at}.name: '{name}' must be letters, digits, '_', '-' or '.'"
            ));
            continue;
        }
        if types.contains_key(name) {
            problems.push(format!("{at}.name: '{name}' is defined twice"));
            continue;
        }
        let empty = Value::Object(Map::new());
        let schema = obj.get("schema").unwrap_or(&empty);
        let hooks = parse_object_hooks(name, obj);
        match (
            parse_schema(&format!("managed/{name}"), schema, &format!("{at}.schema")),
            hooks,
        ) {
            (Ok(mut s), Ok(hooks)) => {
                s.hooks = hooks;
                types.insert(name.to_owned(), Arc::new(s));
            }
            (s, hooks) => {
                problems.extend(s.err().unwrap_or_default());
                problems.extend(hooks.err().unwrap_or_default());
            }
        }
    }
    if problems.is_empty() {
        let user = crate::internal::user_schema();
        let role = crate::internal::role_schema();
        problems.extend(check_graph(&types, &[&user, &role]));
    }
    if problems.is_empty() {
        Ok(ManagedSchema { types })
    } else {
        Err(problems)
    }
}

/// A managed type's triggers. `onSync` and `onQueryResult` are IDM's too but not run by
/// this gateway: a type declaring one loads, with a warning.
fn parse_object_hooks(name: &str, obj: &Value) -> Result<ObjectHooks, Vec<String>> {
    let mut hooks = ObjectHooks::default();
    let mut problems = Vec::new();
    for key in OBJECT_HOOKS {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        match parse_script(v, &format!("managed.json {name}.{key}")) {
            Ok(script) => {
                if let Some(slot) = hooks.slot(key) {
                    *slot = Some(script);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    for key in ["onSync", "onQueryResult"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            tracing::warn!(
                managed = name,
                trigger = key,
                "managed.json declares a trigger this gateway does not run; it is ignored"
            );
        }
    }
    if problems.is_empty() {
        Ok(hooks)
    } else {
        Err(problems)
    }
}

fn valid_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name != "."
        && name != ".."
}

/// Parses one `schema` object (JSON-schema flavoured, IDM extensions).
pub fn parse_schema(resource: &str, schema: &Value, at: &str) -> Result<ObjectSchema, Vec<String>> {
    let mut problems = Vec::new();
    let mut properties = Vec::new();
    match schema.get("properties") {
        None => {}
        Some(Value::Object(props)) => {
            for (name, def) in props {
                match parse_property(name, def, &format!("{at}.properties.{name}")) {
                    Ok(p) => properties.push(p),
                    Err(mut p) => problems.append(&mut p),
                }
            }
        }
        Some(_) => problems.push(format!("{at}.properties: must be an object")),
    }
    let mut required = Vec::new();
    match schema.get("required") {
        None => {}
        Some(Value::Array(names)) => {
            for n in names {
                match n.as_str() {
                    Some(n) => required.push(n.to_owned()),
                    None => problems.push(format!("{at}.required: must hold property names")),
                }
            }
        }
        Some(_) => problems.push(format!("{at}.required: must be an array of names")),
    }
    // IDM's implicit `required` policy comes first.
    for prop in properties.iter_mut() {
        if required.contains(&prop.name) {
            prop.policies.insert(0, Policy::required());
        }
    }
    if problems.is_empty() {
        Ok(ObjectSchema {
            resource: resource.to_owned(),
            properties,
            required,
            hooks: ObjectHooks::default(),
        })
    } else {
        Err(problems)
    }
}

pub(crate) fn parse_property(name: &str, def: &Value, at: &str) -> Result<Property, Vec<String>> {
    let mut problems = Vec::new();
    let Some(def) = def.as_object() else {
        return Err(vec![format!("{at}: must be an object")]);
    };
    let mut types = Vec::new();
    match def.get("type") {
        None => types.push(JsonType::Any),
        Some(Value::String(t)) => match JsonType::parse(t) {
            Some(t) => types.push(t),
            None => problems.push(format!("{at}.type: unknown type '{t}'")),
        },
        Some(Value::Array(ts)) => {
            for t in ts {
                match t.as_str().and_then(JsonType::parse) {
                    Some(t) => types.push(t),
                    None => problems.push(format!("{at}.type: unknown type {t}")),
                }
            }
        }
        Some(_) => problems.push(format!(
            "{at}.type: must be a type name or an array of them"
        )),
    }
    let flag = |key: &str, problems: &mut Vec<String>| -> Option<bool> {
        match def.get(key) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                problems.push(format!("{at}.{key}: must be true or false"));
                None
            }
        }
    };
    let searchable = flag("searchable", &mut problems).unwrap_or(false);
    let return_by_default_flag = flag("returnByDefault", &mut problems);
    let virtual_ = flag("isVirtual", &mut problems).unwrap_or(false);
    let items_relationship = def
        .get("items")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        == Some("relationship");
    let relationship = types.contains(&JsonType::Relationship) || items_relationship;
    let relation = if relationship {
        parse_relation(def, at, &mut problems)
    } else {
        None
    };
    let private = def.get("scope").and_then(Value::as_str) == Some("private");
    let hashed = def.contains_key("secureHash");
    let encrypted = match def.get("encryption") {
        None => None,
        Some(Value::Object(e)) => {
            let text = |k: &str, problems: &mut Vec<String>| match e.get(k) {
                None => None,
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(_) => {
                    problems.push(format!("{at}.encryption.{k}: must be a non-empty string"));
                    None
                }
            };
            let purpose = text("purpose", &mut problems);
            let _key = text("key", &mut problems);
            Some(Encryption { purpose })
        }
        Some(_) => {
            problems.push(format!(
                "{at}.encryption: must be an object like {{\"purpose\": \"idm.password.encryption\"}}"
            ));
            None
        }
    };
    if hashed && def.contains_key("encryption") {
        problems.push(format!(
            "{at}: secureHash and encryption cannot both be declared"
        ));
    }
    let query_config = match def.get("queryConfig") {
        None | Some(Value::Null) => None,
        Some(q) => parse_query_config(q, at, virtual_, &mut problems),
    };
    let names = |v: Option<&Value>, key: &str, problems: &mut Vec<String>| match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            problems.push(format!("{at}.{key}: must be an array of property names"));
            Vec::new()
        }
    };
    let mut notify_relationships = names(
        def.get("notifyRelationships"),
        "notifyRelationships",
        &mut problems,
    );
    if notify_relationships.is_empty() {
        notify_relationships = names(
            def.get("items").and_then(|i| i.get("notifyRelationships")),
            "items.notifyRelationships",
            &mut problems,
        );
    }
    let conditional = flag("isConditional", &mut problems).unwrap_or(false);
    let temporal = flag("isTemporalConstraint", &mut problems).unwrap_or(false);
    let user_editable = flag("userEditable", &mut problems).unwrap_or(false);
    let protected = flag("isProtected", &mut problems).unwrap_or(false);
    let policies = parse_policies(def, at, &mut problems);
    let unique = policies
        .iter()
        .any(|p| matches!(p.kind, Kind::Unique | Kind::ValidUsername));
    let mut hooks = PropertyHooks::default();
    for (key, slot) in [
        ("onValidate", &mut hooks.on_validate),
        ("onRetrieve", &mut hooks.on_retrieve),
        ("onStore", &mut hooks.on_store),
    ] {
        if let Some(v) = def.get(key).filter(|v| !v.is_null()) {
            match parse_script(v, &format!("managed.json {at}.{key}")) {
                Ok(script) => *slot = Some(script),
                Err(e) => problems.push(e),
            }
        }
    }
    let return_by_default = !private
        && !hashed
        && encrypted.is_none()
        && return_by_default_flag.unwrap_or(!(relationship || virtual_));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Property {
        name: name.to_owned(),
        types,
        relationship,
        relation,
        searchable,
        return_by_default,
        private: private || hashed || encrypted.is_some(),
        hashed,
        encrypted,
        unique,
        policies,
        default: def.get("default").cloned(),
        virtual_,
        hooks,
        query_config,
        notify_relationships,
        conditional,
        temporal,
        user_editable,
        protected,
    })
}

fn parse_query_config(
    q: &Value,
    at: &str,
    virtual_: bool,
    problems: &mut Vec<String>,
) -> Option<QueryConfig> {
    let at = format!("{at}.queryConfig");
    if !virtual_ {
        problems.push(format!(
            "{at}: only a virtual property (isVirtual: true) has one"
        ));
        return None;
    }
    let list = |key: &str, problems: &mut Vec<String>| match q.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items))
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Ok(Some(
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect::<Vec<_>>(),
            ))
        }
        Some(_) => {
            problems.push(format!(
                "{at}.{key}: must be a non-empty array of field names"
            ));
            Err(())
        }
    };
    let fields = match list("referencedRelationshipFields", problems) {
        Ok(Some(f)) => f,
        Ok(None) => {
            problems.push(format!(
                "{at}.referencedRelationshipFields: required, the relationship fields to follow"
            ));
            return None;
        }
        Err(()) => return None,
    };
    let object_fields = list("referencedObjectFields", problems).ok()?;
    let flatten = match q.get("flattenProperties") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(format!("{at}.flattenProperties: must be true or false"));
            false
        }
    };
    if flatten && object_fields.is_none() {
        problems.push(format!(
            "{at}.flattenProperties: needs referencedObjectFields (the values to flatten)"
        ));
    }
    Some(QueryConfig {
        fields,
        object_fields,
        flatten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_managed_json_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/managed.json"))
                .unwrap();
        let schema = parse_managed(&serde_json::from_str(&text).unwrap()).unwrap();
        for t in ["user", "role", "group", "organization"] {
            assert!(schema.types.contains_key(t), "{t}");
        }
        let user = &schema.types["user"];
        assert!(user.property("userName").unwrap().unique);
        assert!(user.property("password").unwrap().hashed);
        assert!(!user.returned_by_default("password"));
        assert!(user.returned_by_default("undeclared"));
        assert!(user
            .searchable()
            .contains(&JsonPointer(vec!["userName".into()])));
    }

    #[test]
    fn encryption_is_reversible_and_private_secure_hash_stays_one_way() {
        let doc = json!({"objects": [{"name": "u", "schema": {"properties": {
            "pw": {"type": "string", "encryption": {"purpose": "idm.password.encryption"}},
            "old": {"type": "string", "encryption": {"key": "openidm-sym-default"}},
            "h": {"type": "string", "secureHash": {"algorithm": "SHA-256"}},
        }}}]});
        let schema = parse_managed(&doc).unwrap();
        let u = &schema.types["u"];
        let pw = u.property("pw").unwrap();
        assert_eq!(
            pw.encrypted,
            Some(Encryption {
                purpose: Some("idm.password.encryption".into())
            })
        );
        assert!(pw.private && !pw.hashed && !pw.return_by_default);
        assert_eq!(
            u.property("old").unwrap().encrypted,
            Some(Encryption::default())
        );
        let h = u.property("h").unwrap();
        assert!(h.hashed && h.private && h.encrypted.is_none());
        assert!(!u.returned_by_default("pw") && u.returned_by_default_internally("pw"));
        assert!(u.returned_by_default_internally("h"));
        let bad = json!({"objects": [{"name": "u", "schema": {"properties": {
            "a": {"encryption": "yes"},
            "b": {"encryption": {"purpose": 3}},
            "c": {"encryption": {}, "secureHash": {}},
        }}}]});
        let problems = parse_managed(&bad).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn triggers_are_parsed_and_a_broken_one_is_named() {
        let js = |s: &str| json!({"type": "text/javascript", "source": s});
        let doc = json!({"objects": [{"name": "u",
        "onCreate": js("object.a = 1"), "postDelete": js("1"),
        "onSync": js("ignored"),
        "schema": {"properties": {
            "cn": {"onStore": js("object.cn"), "onValidate": js("true")},
            "v": {"isVirtual": true, "onRetrieve": js("2")},
        }}}]});
        let schema = parse_managed(&doc).unwrap();
        let u = &schema.types["u"];
        assert!(u.hooks.on_create.is_some() && u.hooks.post_delete.is_some());
        assert!(u.hooks.on_update.is_none());
        assert_eq!(
            &*u.hooks.on_create.as_ref().unwrap().name,
            "managed.json u.onCreate"
        );
        assert!(u.has_store_hooks() && u.has_retrieve_hooks());
        assert!(u.is_virtual("v") && !u.is_virtual("cn"));
        assert!(
            !u.returned_by_default("v"),
            "virtual: not returned unless asked"
        );
        let bad = json!({"objects": [{"name": "u", "onRead": js("x = (1;"),
            "schema": {"properties": {"p": {"onStore": {"type": "groovy", "source": "1"}}}}}]});
        let problems = parse_managed(&bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("u.onRead line 1")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("Groovy")),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let doc = json!({"objects": [
            {"name": "a/b"},
            {"schema": {}},
            {"name": "ok", "schema": {"properties": {"x": {"type": "strng", "searchable": "yes"}}, "required": "x"}},
        ]});
        let problems = parse_managed(&doc).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("objects[0].name"));
        assert!(problems[1].contains("objects[1].name: required"));
        assert!(problems.iter().any(|p| p.contains("unknown type 'strng'")));
        assert!(problems
            .iter()
            .any(|p| p.contains("searchable: must be true or false")));
        assert!(problems
            .iter()
            .any(|p| p.contains("required: must be an array")));
    }
}
