//! IDM assignments applied by the sync engine (idm-model-and-scripts.md §1.9): when a mapping
//! syncs a source object, the items of its `effectiveAssignments` whose `mapping` is that
//! mapping's name set attributes of the target, after the mapped properties and before
//! `onCreate`/`onUpdate` see `target`.
//!
//! * `assignmentOperation`: `replaceTarget` (IDM's default) sets the attribute; a second
//!   `replaceTarget` of the same attribute in one sync merges instead, so two roles do not
//!   overwrite each other. `mergeWithTarget` merges: arrays get the values they lack
//!   (existing values kept, no duplicates), objects get the keys, scalars are set.
//! * `unassignmentOperation`: `removeFromTarget` (the default) takes the values an
//!   assignment applied out again when it leaves the source's `effectiveAssignments`, or when
//!   the attribute changed: array elements are removed, object keys removed, a scalar equal
//!   to the value becomes `null`. `noOp` leaves them.
//! * What an attribute starts from: the mapped value when the mapping maps it, otherwise the
//!   target's current value.
//! * What was applied is kept on the link ([`LINK_FIELD`]: by mapping name, the list of
//!   `{"_id", "attributes"}` applied; by name because a reverse mapping shares the link and
//!   has its own), and each sync diffs the source's assignments against it. IDM diffs against the old
//!   source object (or its `lastSync` snapshot); implicit sync here coalesces pushes and has
//!   no old source, so the link keeps it. A link written before this field existed has
//!   applied nothing.
//! * `linkQualifiers` on an assignment: absent, empty or listing `default` applies (this
//!   gateway's mappings have only the `default` link qualifier); an assignment limited to
//!   other qualifiers is not applied.
//! * Not supported (the object's sync fails with the reason): `onAssignment` and
//!   `onUnassignment` scripts, and operations given as scripts instead of names.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::mapping::DEFAULT_LINK_QUALIFIER;

/// The source property with the object's assignments (from its roles and its own).
pub const SOURCE_FIELD: &str = "effectiveAssignments";
/// The link property that keeps what the last sync applied.
pub const LINK_FIELD: &str = "assignments";

static NULL: Value = Value::Null;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Assign {
    Replace,
    Merge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unassign {
    Remove,
    NoOp,
}

/// One entry of an assignment's `attributes`.
struct Attribute<'a> {
    name: &'a str,
    value: &'a Value,
    assign: Assign,
    unassign: Unassign,
    /// As written: an attribute changed when this differs.
    raw: &'a Value,
}

/// One assignment of the mapping.
struct Assignment<'a> {
    id: &'a str,
    attributes: Vec<Attribute<'a>>,
}

/// What the assignments do to one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The target attributes the assignments set or took values out of, with their new
    /// values (to write over the mapped object).
    pub attributes: Map<String, Value>,
    /// What to keep on the link ([`LINK_FIELD`]); `Null` when nothing was applied.
    pub snapshot: Value,
}

/// Applies the assignments of `source` for `mapping` to a target: `mapped` is what the
/// mapping's properties made, `existing` the target as it is (none for a create),
/// `previous` what the link says the last sync applied.
pub fn apply(
    mapping: &str,
    source: &Value,
    existing: Option<&Value>,
    mapped: &Map<String, Value>,
    previous: &Value,
) -> Result<Applied, String> {
    let current = of_mapping(mapping, source)?;
    let old = snapshot_items(previous)?;
    let mut work = Map::new();
    let start = |name: &str| {
        mapped
            .get(name)
            .or_else(|| existing.and_then(|e| e.get(name)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for before in &old {
        let now = current.iter().find(|c| c.id == before.id);
        for a in &before.attributes {
            let kept = now.is_some_and(|c| {
                c.attributes
                    .iter()
                    .find(|x| x.name == a.name)
                    .is_some_and(|x| x.raw == a.raw)
            });
            if kept || a.unassign == Unassign::NoOp {
                continue;
            }
            let value = work
                .entry(a.name.to_owned())
                .or_insert_with(|| start(a.name));
            remove_values(value, a.value);
        }
    }
    let mut replaced = HashSet::new();
    for c in &current {
        for a in &c.attributes {
            let value = work
                .entry(a.name.to_owned())
                .or_insert_with(|| start(a.name));
            match a.assign {
                Assign::Replace if replaced.insert(a.name) => *value = a.value.clone(),
                _ => merge_values(value, a.value),
            }
        }
    }
    let snapshot = if current.is_empty() {
        Value::Null
    } else {
        Value::Array(current.iter().map(Assignment::snapshot).collect())
    };
    Ok(Applied {
        attributes: work,
        snapshot,
    })
}

/// What the link field `all` says `mapping` applied.
pub fn of_link<'a>(all: &'a Value, mapping: &str) -> &'a Value {
    all.get(mapping).unwrap_or(&NULL)
}

/// The link field `all` with what `mapping` applied now (`Null` when nothing is left).
pub fn on_link(all: &Value, mapping: &str, snapshot: Value) -> Value {
    let mut out = all.as_object().cloned().unwrap_or_default();
    if same_snapshot(&snapshot, &Value::Null) {
        out.shift_remove(mapping);
    } else {
        out.insert(mapping.to_owned(), snapshot);
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// Whether two link snapshots say the same (absent and empty alike).
pub fn same_snapshot(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(Map::is_empty)
    };
    (empty(a) && empty(b)) || a == b
}

/// Equal as assignment attribute values, which a directory may return in another shape: as
/// sets of values (any order; `null` is no value, a scalar one value).
pub fn same_values(a: &Value, b: &Value) -> bool {
    let (x, y) = (values_of(a), values_of(b));
    x.len() == y.len() && x.iter().all(|v| y.contains(v)) && y.iter().all(|v| x.contains(v))
}

/// The assignments of `source` that apply to `mapping`, in order.
fn of_mapping<'a>(mapping: &str, source: &'a Value) -> Result<Vec<Assignment<'a>>, String> {
    let items = match source.get(SOURCE_FIELD) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("the source's {SOURCE_FIELD} is not an array")),
    };
    let mut out = Vec::new();
    for item in items {
        if item.is_null() || item.get("mapping").and_then(Value::as_str) != Some(mapping) {
            continue;
        }
        if for_default_qualifier(item)? {
            out.push(parse(item)?);
        }
    }
    Ok(out)
}

/// The assignments a link says were applied.
fn snapshot_items(previous: &Value) -> Result<Vec<Assignment<'_>>, String> {
    match previous {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(parse).collect(),
        _ => Err(format!("the link's {LINK_FIELD} is not an array")),
    }
}

/// Whether an assignment applies under the `default` link qualifier.
fn for_default_qualifier(item: &Value) -> Result<bool, String> {
    match item.get("linkQualifiers") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Array(list)) => Ok(list.is_empty()
            || list
                .iter()
                .any(|q| q.as_str() == Some(DEFAULT_LINK_QUALIFIER))),
        Some(_) => Err(format!(
            "assignment {}: linkQualifiers must be an array of names",
            id_of(item).unwrap_or("?")
        )),
    }
}

/// The assignment's id: its reference's, else its own.
fn id_of(item: &Value) -> Option<&str> {
    ["_refResourceId", "_id"]
        .iter()
        .find_map(|k| item.get(*k).and_then(Value::as_str))
        .filter(|id| !id.is_empty())
}

impl Assignment<'_> {
    /// What the link keeps of it: `{"_id", "attributes"}`, the attributes as written.
    fn snapshot(&self) -> Value {
        let attributes = self.attributes.iter().map(|a| a.raw.clone()).collect();
        let mut out = Map::with_capacity(2);
        out.insert("_id".into(), Value::String(self.id.to_owned()));
        out.insert("attributes".into(), Value::Array(attributes));
        Value::Object(out)
    }
}

fn parse(item: &Value) -> Result<Assignment<'_>, String> {
    let id = id_of(item).ok_or("an assignment in effectiveAssignments has no _id")?;
    for script in ["onAssignment", "onUnassignment"] {
        if item.get(script).is_some_and(|s| !s.is_null()) {
            return Err(format!(
                "assignment {id}: {script} scripts are not supported by this gateway"
            ));
        }
    }
    let attributes = match item.get("attributes") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(format!("assignment {id}: attributes must be an array")),
    };
    let attributes = attributes
        .iter()
        .map(|raw| attribute(id, raw))
        .collect::<Result<_, _>>()?;
    Ok(Assignment { id, attributes })
}

fn attribute<'a>(id: &str, raw: &'a Value) -> Result<Attribute<'a>, String> {
    let name = raw
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("assignment {id}: an attribute has no name"))?;
    if name.starts_with('_') {
        return Err(format!(
            "assignment {id}: attribute '{name}' cannot be set by an assignment"
        ));
    }
    let operation = |key: &str| match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!(
            "assignment {id}, attribute '{name}': {key} must be an operation name \
             (scripts are not supported by this gateway)"
        )),
    };
    let unsupported = |key: &str, op: &str| {
        format!("assignment {id}, attribute '{name}': unsupported {key} '{op}'")
    };
    let assign = match operation("assignmentOperation")? {
        None | Some("replaceTarget") => Assign::Replace,
        Some("mergeWithTarget") => Assign::Merge,
        Some(op) => return Err(unsupported("assignmentOperation", op)),
    };
    let unassign = match operation("unassignmentOperation")? {
        None | Some("removeFromTarget") => Unassign::Remove,
        Some("noOp") => Unassign::NoOp,
        Some(op) => return Err(unsupported("unassignmentOperation", op)),
    };
    Ok(Attribute {
        name,
        value: raw.get("value").unwrap_or(&NULL),
        assign,
        unassign,
        raw,
    })
}

/// The values of `v`: its elements, or itself.
fn values_of(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        Value::Null => &[],
        one => std::slice::from_ref(one),
    }
}

/// `mergeWithTarget`: arrays get the values they lack, objects the keys, others are set.
fn merge_values(target: &mut Value, value: &Value) {
    match (&mut *target, value) {
        (Value::Array(have), _) => {
            for v in values_of(value) {
                if !have.contains(v) {
                    have.push(v.clone());
                }
            }
        }
        (Value::Object(have), Value::Object(add)) => {
            for (k, v) in add {
                have.insert(k.clone(), v.clone());
            }
        }
        _ => *target = value.clone(),
    }
}

/// `removeFromTarget`: array elements and object keys go, a scalar equal to the value (or
/// one of its values) becomes `null`.
fn remove_values(target: &mut Value, value: &Value) {
    match (&mut *target, value) {
        (Value::Array(have), _) => {
            let gone = values_of(value);
            have.retain(|v| !gone.contains(v));
        }
        (Value::Object(have), Value::Object(keys)) => {
            for k in keys.keys() {
                have.remove(k);
            }
        }
        (Value::Null, _) => {}
        (scalar, _) => {
            if values_of(value).contains(scalar) {
                *target = Value::Null;
            }
        }
    }
}

#[cfg(test)]
mod tests;
