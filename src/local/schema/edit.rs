//! Pure edits of `managed.json` (as a JSON document) for the schema service: create,
//! replace and delete one property of one type, with the reverse side of a relationship
//! on its target type. The caller validates the result ([`crate::state::validate_conf`])
//! before anything is written.

use serde_json::{json, Map, Value};

use crate::config;
use crate::crest::ResourceError;

/// What a write of a property may find (the caller's precondition).
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Create or replace (`PUT`, `If-Match: *`).
    Any,
    /// Create only (`If-None-Match: *`).
    Absent,
    /// Replace only, at this revision (`If-Match: <rev>`).
    Rev(String),
}

/// A property written.
#[derive(Debug, PartialEq)]
pub struct Written {
    pub created: bool,
    pub definition: Map<String, Value>,
    /// `(collection, property)` of relationships whose edges no longer fit the schema: a
    /// replaced relationship that is no longer one, or now targets other collections or
    /// another reverse side (its edges and those of its former reverse side).
    pub relations: Vec<(String, String)>,
}

/// A property deleted, with the relationships whose edges must go with it.
#[derive(Debug, PartialEq)]
pub struct Deleted {
    pub definition: Map<String, Value>,
    /// `(collection, property)` of every relationship property removed (the property and
    /// the reverse side on its targets).
    pub relations: Vec<(String, String)>,
}

/// A property's revision: of its definition as stored.
pub fn property_rev(def: &Map<String, Value>) -> String {
    config::revision(&serde_json::to_vec(def).unwrap_or_default())
}

/// The schema object of type `name` in `doc` (`None`: no such type).
pub fn type_schema<'d>(doc: &'d Map<String, Value>, name: &str) -> Option<&'d Value> {
    doc.get("objects")?
        .as_array()?
        .iter()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
        .map(|o| o.get("schema").unwrap_or(&Value::Null))
}

/// A property's definition in `doc`.
pub fn property<'d>(
    doc: &'d Map<String, Value>,
    type_name: &str,
    prop: &str,
) -> Option<&'d Map<String, Value>> {
    type_schema(doc, type_name)?
        .get("properties")?
        .get(prop)?
        .as_object()
}

/// Creates or replaces property `prop` of `type_name` with `def`. A `reverseProperty`
/// in a `resourceCollection` entry (IDM's schema API) creates the reverse side on that
/// target type (and is not stored); a replaced relationship's former reverse side is
/// removed when the new definition no longer names it.
pub fn put_property(
    doc: &mut Map<String, Value>,
    type_name: &str,
    prop: &str,
    mut def: Map<String, Value>,
    expect: &Expect,
) -> Result<Written, ResourceError> {
    check_name(prop)?;
    def.remove("_id");
    def.remove("_rev");
    let current = properties(doc, type_name)?.get(prop).cloned();
    match (expect, &current) {
        (Expect::Absent, Some(_)) => {
            return Err(ResourceError::new(
                412,
                format!("Property {prop} of managed/{type_name} already exists"),
            ))
        }
        (Expect::Rev(_), None) => return Err(not_found(type_name, prop)),
        (Expect::Rev(rev), Some(Value::Object(cur))) if *rev != property_rev(cur) => {
            return Err(ResourceError::new(
                412,
                format!(
                    "Revision {rev} does not match the current revision of property {prop} of managed/{type_name}"
                ),
            ))
        }
        _ => {}
    }
    let reverses = take_reverse_directives(&mut def, type_name, prop)?;
    let new_value = Value::Object(def.clone());
    let mut relations = Vec::new();
    if let Some(old) = &current {
        if relation_decl(old).is_some() && relation_key(old) != relation_key(&new_value) {
            relations.push((format!("managed/{type_name}"), prop.to_owned()));
        }
    }
    if let Some((old_name, old_targets)) = current.as_ref().and_then(reverse_of) {
        let new = reverse_of(&new_value);
        for t in old_targets {
            let kept = new
                .as_ref()
                .is_some_and(|(n, ts)| *n == old_name && ts.contains(&t));
            let own = t == type_name && old_name == prop;
            if !kept && !own && remove_reverse(doc, &t, &old_name, type_name, prop) {
                relations.push((format!("managed/{t}"), old_name.clone()));
            }
        }
    }
    insert(doc, type_name, prop, Value::Object(def.clone()))?;
    for (target, name, rdef) in reverses {
        if target == type_name && name == prop {
            continue; // its own reverse
        }
        let existing = properties(doc, &target)
            .map_err(|_| {
                ResourceError::bad_request(format!(
                    "reverseProperty: managed/{target} is not a defined object type"
                ))
            })?
            .get(&name)
            .cloned();
        if let Some(e) = existing {
            if !reverses_back(&e, type_name, prop) {
                return Err(ResourceError::bad_request(format!(
                    "reverseProperty: managed/{target} already has a property '{name}' that is not the reverse of managed/{type_name} property '{prop}'"
                )));
            }
        }
        insert(doc, &target, &name, Value::Object(rdef))?;
    }
    Ok(Written {
        created: current.is_none(),
        definition: def,
        relations,
    })
}

/// Deletes property `prop` of `type_name` (and its reverse side, when it is one side of
/// a reverse relationship between managed types).
pub fn delete_property(
    doc: &mut Map<String, Value>,
    type_name: &str,
    prop: &str,
    rev: Option<&str>,
) -> Result<Deleted, ResourceError> {
    let Some(Value::Object(current)) = properties(doc, type_name)?.get(prop).cloned() else {
        return Err(not_found(type_name, prop));
    };
    if let Some(rev) = rev {
        if rev != property_rev(&current) {
            return Err(ResourceError::new(
                412,
                format!("Revision {rev} does not match the current revision of property {prop} of managed/{type_name}"),
            ));
        }
    }
    let current_value = Value::Object(current.clone());
    let mut relations = Vec::new();
    if relation_decl(&current_value).is_some() {
        relations.push((format!("managed/{type_name}"), prop.to_owned()));
    }
    if let Some((name, targets)) = reverse_of(&current_value) {
        for t in targets {
            if !(t == type_name && name == prop) && remove_reverse(doc, &t, &name, type_name, prop)
            {
                relations.push((format!("managed/{t}"), name.clone()));
            }
        }
    }
    remove(doc, type_name, prop);
    Ok(Deleted {
        definition: current,
        relations,
    })
}

fn not_found(type_name: &str, prop: &str) -> ResourceError {
    ResourceError::not_found(format!(
        "Property {prop} of managed/{type_name} does not exist"
    ))
}

/// Property names the service writes: not empty, no `/`, not `_`-prefixed (IDM's
/// reserved `_id`, `_rev`, `_meta`…).
fn check_name(prop: &str) -> Result<(), ResourceError> {
    if prop.is_empty() || prop.starts_with('_') || prop.contains('/') {
        return Err(ResourceError::bad_request(format!(
            "'{prop}' cannot be written as a property: names starting with '_' are reserved"
        )));
    }
    Ok(())
}

/// The `schema.properties` of `type_name` (created when absent), or a 404.
fn properties<'d>(
    doc: &'d mut Map<String, Value>,
    type_name: &str,
) -> Result<&'d mut Map<String, Value>, ResourceError> {
    let missing =
        || ResourceError::not_found(format!("Managed object type {type_name} is not defined"));
    let obj = doc
        .get_mut("objects")
        .and_then(Value::as_array_mut)
        .and_then(|objects| {
            objects
                .iter_mut()
                .find(|o| o.get("name").and_then(Value::as_str) == Some(type_name))
        })
        .and_then(Value::as_object_mut)
        .ok_or_else(missing)?;
    let schema = obj
        .entry("schema")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| bad_schema(type_name))?;
    schema
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| bad_schema(type_name))
}

fn bad_schema(type_name: &str) -> ResourceError {
    ResourceError::new(
        409,
        format!("The schema of managed/{type_name} in managed.json is not an object"),
    )
}

/// The `schema` of `type_name`, mutable (it exists once [`properties`] succeeded).
fn schema_mut<'d>(
    doc: &'d mut Map<String, Value>,
    type_name: &str,
) -> Option<&'d mut Map<String, Value>> {
    doc.get_mut("objects")?
        .as_array_mut()?
        .iter_mut()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(type_name))?
        .get_mut("schema")?
        .as_object_mut()
}

/// Sets a property, listing it in the type's `order` (the UI's) when the type has one.
pub fn insert(
    doc: &mut Map<String, Value>,
    type_name: &str,
    prop: &str,
    def: Value,
) -> Result<(), ResourceError> {
    properties(doc, type_name)?.insert(prop.to_owned(), def);
    if let Some(Value::Array(order)) = schema_mut(doc, type_name).and_then(|s| s.get_mut("order")) {
        if !order.iter().any(|n| n.as_str() == Some(prop)) {
            order.push(json!(prop));
        }
    }
    Ok(())
}

/// Removes a property and its mentions in `order` and `required`.
fn remove(doc: &mut Map<String, Value>, type_name: &str, prop: &str) {
    let Some(schema) = schema_mut(doc, type_name) else {
        return;
    };
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        props.remove(prop);
    }
    for list in ["order", "required"] {
        if let Some(Value::Array(names)) = schema.get_mut(list) {
            names.retain(|n| n.as_str() != Some(prop));
        }
    }
}

/// Removes `target.name` when it is the reverse side of `type_name.prop`; whether it was.
fn remove_reverse(
    doc: &mut Map<String, Value>,
    target: &str,
    name: &str,
    type_name: &str,
    prop: &str,
) -> bool {
    let is_reverse = properties(doc, target)
        .ok()
        .and_then(|p| p.get(name))
        .is_some_and(|d| reverses_back(d, type_name, prop));
    if is_reverse {
        remove(doc, target, name);
    }
    is_reverse
}

/// The relationship settings of a property: itself (`type: relationship`) or its
/// `items` (an array of relationships).
fn relation_decl(def: &Value) -> Option<&Map<String, Value>> {
    let is_rel = |v: &Value| v.get("type").and_then(Value::as_str) == Some("relationship");
    if is_rel(def) {
        def.as_object()
    } else {
        def.get("items").filter(|i| is_rel(i))?.as_object()
    }
}

fn relation_decl_mut(def: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let is_rel =
        |v: &Map<String, Value>| v.get("type").and_then(Value::as_str) == Some("relationship");
    if is_rel(def) {
        return Some(def);
    }
    def.get_mut("items")
        .and_then(Value::as_object_mut)
        .filter(|i| is_rel(i))
}

/// What a relationship's edges depend on: its target collections and its reverse side
/// (`None` for a property that is not a relationship).
fn relation_key(def: &Value) -> Option<(Vec<String>, Option<String>)> {
    let decl = relation_decl(def)?;
    let mut paths: Vec<String> = decl
        .get("resourceCollection")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("path")?.as_str().map(str::to_owned))
        .collect();
    paths.sort();
    let reverse = (decl.get("reverseRelationship") == Some(&Value::Bool(true)))
        .then(|| decl.get("reversePropertyName")?.as_str().map(str::to_owned))
        .flatten();
    Some((paths, reverse))
}

/// A reverse relationship's reverse property name and the managed types it targets.
fn reverse_of(def: &Value) -> Option<(String, Vec<String>)> {
    let decl = relation_decl(def)?;
    if decl.get("reverseRelationship") != Some(&Value::Bool(true)) {
        return None;
    }
    let name = decl.get("reversePropertyName")?.as_str()?.to_owned();
    let targets = decl
        .get("resourceCollection")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("path")?.as_str()?.strip_prefix("managed/"))
        .map(str::to_owned)
        .collect();
    Some((name, targets))
}

/// Whether `def` is a relationship reversing `type_name.prop`.
fn reverses_back(def: &Value, type_name: &str, prop: &str) -> bool {
    let Some(decl) = relation_decl(def) else {
        return false;
    };
    let path = format!("managed/{type_name}");
    decl.get("reverseRelationship") == Some(&Value::Bool(true))
        && decl.get("reversePropertyName").and_then(Value::as_str) == Some(prop)
        && decl
            .get("resourceCollection")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("path").and_then(Value::as_str) == Some(&path))
            })
}

/// A reverse side to create: target type, property name, definition.
type Reverse = (String, String, Map<String, Value>);

/// Takes the `reverseProperty` directives out of `def`'s `resourceCollection` entries:
/// the reverse side each asks for.
fn take_reverse_directives(
    def: &mut Map<String, Value>,
    type_name: &str,
    prop: &str,
) -> Result<Vec<Reverse>, ResourceError> {
    let Some(decl) = relation_decl_mut(def) else {
        return Ok(Vec::new());
    };
    let mut taken = Vec::new();
    if let Some(Value::Array(collections)) = decl.get_mut("resourceCollection") {
        for c in collections.iter_mut() {
            let Some(c) = c.as_object_mut() else { continue };
            let Some(rp) = c.remove("reverseProperty") else {
                continue;
            };
            let path = c.get("path").and_then(Value::as_str).unwrap_or_default();
            let Some(target) = path.strip_prefix("managed/") else {
                return Err(ResourceError::bad_request(format!(
                    "reverseProperty is only for managed/<type> collections, not '{path}'"
                )));
            };
            let Value::Object(rp) = rp else {
                return Err(ResourceError::bad_request(
                    "reverseProperty must be an object like {\"type\": \"array\", \"validate\": true, \"resourceCollection\": {…}}",
                ));
            };
            taken.push((target.to_owned(), rp));
        }
    }
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let name =
        match (
            decl.get("reverseRelationship"),
            decl.get("reversePropertyName"),
        ) {
            (Some(Value::Bool(true)), Some(Value::String(n))) if !n.is_empty() => n.clone(),
            _ => return Err(ResourceError::bad_request(
                "reverseProperty needs \"reverseRelationship\": true and a \"reversePropertyName\"",
            )),
        };
    let ref_properties = decl.get("properties").cloned();
    taken
        .into_iter()
        .map(|(target, rp)| {
            let rdef = reverse_definition(rp, ref_properties.clone(), type_name, prop)?;
            Ok((target, name.clone(), rdef))
        })
        .collect()
}

/// The reverse side's definition from a `reverseProperty` directive: a relationship (an
/// array of them for `"type": "array"`, the default) back to `managed/<type_name>`
/// reversing `prop`, with the forward side's `_ref`/`_refProperties` declarations.
fn reverse_definition(
    mut rp: Map<String, Value>,
    ref_properties: Option<Value>,
    type_name: &str,
    prop: &str,
) -> Result<Map<String, Value>, ResourceError> {
    let array = match rp.remove("type") {
        None => true,
        Some(Value::String(t)) if t == "array" => true,
        Some(Value::String(t)) if t == "relationship" => false,
        Some(t) => {
            return Err(ResourceError::bad_request(format!(
                "reverseProperty.type: {t} is not \"array\" or \"relationship\""
            )))
        }
    };
    let validate = match rp.remove("validate") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ResourceError::bad_request(
                "reverseProperty.validate: must be true or false",
            ))
        }
    };
    let mut collection = match rp.remove("resourceCollection") {
        None => Map::new(),
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(ResourceError::bad_request(
                "reverseProperty.resourceCollection: must be an object (its path is the type the property is written on)",
            ))
        }
    };
    collection.insert("path".into(), json!(format!("managed/{type_name}")));
    collection
        .entry("label")
        .or_insert_with(|| json!(type_name));
    let mut items = Map::new();
    items.insert("type".into(), json!("relationship"));
    items.insert("reverseRelationship".into(), json!(true));
    items.insert("reversePropertyName".into(), json!(prop));
    items.insert("validate".into(), json!(validate));
    if let Some(notify_self) = rp.remove("notifySelf") {
        items.insert("notifySelf".into(), notify_self);
    }
    if let Some(p) = ref_properties {
        items.insert("properties".into(), p);
    }
    items.insert(
        "resourceCollection".into(),
        Value::Array(vec![Value::Object(collection)]),
    );
    let mut outer = if array {
        let mut outer = Map::new();
        outer.insert("type".into(), json!("array"));
        outer.insert("items".into(), Value::Object(items));
        outer
    } else {
        items
    };
    outer.insert("returnByDefault".into(), json!(false));
    // title, description, viewable… as given.
    for (k, v) in rp {
        outer.entry(k).or_insert(v);
    }
    Ok(outer)
}

#[cfg(test)]
mod tests;
