//! CREST PATCH with IDM's rules (crest-wire.md §0 "IDM deviations", §8): parsing the JSON
//! array of operations and applying it to a resource, all or nothing.
//!
//! Pure functions over `serde_json::Value`: no I/O, no store, no HTTP. Revisions, `If-Match`
//! and writing the result back belong to the caller.
//!
//! Rules, where IDM differs from generic CREST or is silent:
//! * Fields are JSON pointers; empty reference tokens are ignored, so the documented
//!   `"/phoneNumber/"` is `/phoneNumber`.
//! * No list element index: a pointer token that steps into a list is refused (400), except a
//!   final `-` with `add`, which appends one value.
//! * `add` creates missing parent objects (a `null` parent counts as missing), replaces a
//!   single-valued field, and appends to a list (every element when the value is a list).
//! * `remove` without a value removes the field (an absent field is not an error); with a
//!   value it removes every equal list element (each of the values when the value is a list),
//!   or a single-valued field only when equal.
//! * `replace` sets the field in place (keeping its position); a missing or `null` value
//!   removes it.
//! * `increment` adds a number to a number or to every number of a list; integers stay
//!   integers while the sum fits in 64 bits.
//! * `copy`/`move` set `field` to the value at `from`, which must exist.
//! * `transform` needs a script engine: 501 on the config endpoint, 400 elsewhere.
//! * An operation whose field is `_id` is refused; one whose field is `_rev` is skipped (clients
//!   round-trip it, and the store owns it). `move` from `_id` or `_rev` is refused.

use serde_json::{Map, Number, Value};

use super::filter::JsonPointer;
use super::ResourceError;

/// CREST's wording for every malformed patch document; the `detail` says what is wrong.
pub const INVALID_PATCH: &str =
    "The request could not be processed because the provided content is not a valid JSON patch";

/// The message for `transform` outside the config endpoint (IDM deviation, seed002).
pub const TRANSFORM_CONFIG_ONLY: &str =
    "The transform operation is supported only on the config endpoint";

/// One operation of a patch document.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOp,
    /// Never empty (a patch cannot address the whole resource).
    pub field: JsonPointer,
    /// Set for `copy` and `move` only.
    pub from: Option<JsonPointer>,
    /// `None` when absent or `null`; always set for `add`, `increment` (a number) and
    /// `transform`.
    pub value: Option<Value>,
}

/// The operations CREST defines (`test` is not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
    Increment,
    Copy,
    Move,
    Transform,
}

impl PatchOp {
    pub const ALL: [PatchOp; 7] = [
        PatchOp::Add,
        PatchOp::Remove,
        PatchOp::Replace,
        PatchOp::Increment,
        PatchOp::Copy,
        PatchOp::Move,
        PatchOp::Transform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PatchOp::Add => "add",
            PatchOp::Remove => "remove",
            PatchOp::Replace => "replace",
            PatchOp::Increment => "increment",
            PatchOp::Copy => "copy",
            PatchOp::Move => "move",
            PatchOp::Transform => "transform",
        }
    }

    /// Case-insensitive, as CREST matches operation names.
    pub fn parse(name: &str) -> Option<PatchOp> {
        PatchOp::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(name))
    }
}

/// Parses a PATCH body: a JSON array of `{"operation", "field", "value"?, "from"?}` objects.
///
/// Every error is a 400 with CREST's [`INVALID_PATCH`] message and a detail
/// `{"index": <operation index or null>, "problem": "<what is wrong>"}`.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOperation>, ResourceError> {
    let Value::Array(items) = body else {
        return Err(invalid(
            None,
            "the body must be a JSON array of patch operations",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            parse_operation(item).map_err(|problem| invalid(Some(index), &problem))
        })
        .collect()
}

fn parse_operation(item: &Value) -> Result<PatchOperation, String> {
    let Value::Object(obj) = item else {
        return Err("the operation is not a JSON object".into());
    };
    let name = match obj.get("operation") {
        None | Some(Value::Null) => return Err("'operation' is required".into()),
        Some(Value::String(s)) => s,
        Some(_) => return Err("'operation' must be a string".into()),
    };
    let op = PatchOp::parse(name).ok_or_else(|| {
        let known: Vec<&str> = PatchOp::ALL.iter().map(|op| op.as_str()).collect();
        format!(
            "unknown operation '{name}'; expected one of {}",
            known.join(", ")
        )
    })?;
    let field = parse_pointer(obj.get("field"), "field")?
        .ok_or_else(|| "'field' is required".to_string())?;
    if field.is_empty() {
        return Err("'field' must name a field; the whole resource cannot be patched".into());
    }
    let from = parse_pointer(obj.get("from"), "from")?;
    let from = match (op, from) {
        (PatchOp::Copy | PatchOp::Move, None) => {
            return Err(format!("'from' is required for {}", op.as_str()))
        }
        (PatchOp::Copy | PatchOp::Move, Some(from)) if from.is_empty() => {
            return Err("'from' must name a field; the whole resource cannot be copied".into())
        }
        (PatchOp::Copy | PatchOp::Move, from) => from,
        (_, Some(_)) => {
            return Err(format!(
                "'from' is only allowed with copy and move, not {}",
                op.as_str()
            ))
        }
        (_, None) => None,
    };
    let value = match (op, obj.get("value")) {
        // The value of copy and move comes from `from`.
        (PatchOp::Copy | PatchOp::Move, _) => None,
        (_, None | Some(Value::Null)) => None,
        (_, Some(v)) => Some(v.clone()),
    };
    match (op, &value) {
        (PatchOp::Add | PatchOp::Increment | PatchOp::Transform, None) => {
            return Err(format!("'value' is required for {}", op.as_str()))
        }
        (PatchOp::Increment, Some(v)) if !v.is_number() => {
            return Err(format!(
                "the value of increment must be a single number, not {}",
                kind(v)
            ))
        }
        _ => {}
    }
    Ok(PatchOperation {
        op,
        field,
        from,
        value,
    })
}

/// `None` when absent or `null`; empty reference tokens are dropped (`/phoneNumber/`).
fn parse_pointer(value: Option<&Value>, name: &str) -> Result<Option<JsonPointer>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let mut pointer = JsonPointer::parse(text);
            pointer.0.retain(|token| !token.is_empty());
            Ok(Some(pointer))
        }
        Some(_) => Err(format!("'{name}' must be a JSON pointer string")),
    }
}

fn invalid(index: Option<usize>, problem: &str) -> ResourceError {
    ResourceError::bad_request(INVALID_PATCH)
        .with_detail(serde_json::json!({ "index": index, "problem": problem }))
}

/// Applies `ops` in order to a copy of `target` and replaces `target` only if all succeed.
///
/// `allow_transform` is true on the config endpoint only. Errors name the operation's index
/// and field; `target` is then unchanged.
pub fn apply_patch(
    target: &mut Value,
    ops: &[PatchOperation],
    allow_transform: bool,
) -> Result<(), ResourceError> {
    let mut work = target.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_one(&mut work, op, allow_transform)
            .map_err(|failure| failure.into_error(index, op))?;
    }
    *target = work;
    Ok(())
}

/// [`parse_patch`] then [`apply_patch`].
pub fn parse_and_apply(
    target: &mut Value,
    body: &Value,
    allow_transform: bool,
) -> Result<(), ResourceError> {
    let ops = parse_patch(body)?;
    apply_patch(target, &ops, allow_transform)
}

/// Why one operation failed, before it is dressed with the operation's index and field.
#[derive(Debug)]
enum Failure {
    /// 400 with this sentence.
    Bad(String),
    /// 501 with this sentence.
    NotSupported(String),
}

impl Failure {
    fn into_error(self, index: usize, op: &PatchOperation) -> ResourceError {
        let mut detail = Map::new();
        detail.insert("index".into(), index.into());
        detail.insert("operation".into(), op.op.as_str().into());
        detail.insert("field".into(), op.field.to_string().into());
        if let Some(from) = &op.from {
            detail.insert("from".into(), from.to_string().into());
        }
        let error = match self {
            Failure::Bad(message) => ResourceError::bad_request(message),
            Failure::NotSupported(message) => ResourceError::not_supported(message),
        };
        error.with_detail(Value::Object(detail))
    }
}

fn bad(message: String) -> Failure {
    Failure::Bad(message)
}

fn apply_one(root: &mut Value, op: &PatchOperation, allow_transform: bool) -> Result<(), Failure> {
    let field = op.field.tokens();
    match field.first().map(String::as_str) {
        Some("_id") => return Err(bad("The field '_id' cannot be patched".into())),
        Some("_rev") => return Ok(()),
        _ => {}
    }
    match op.op {
        PatchOp::Add => {
            let value = op.value.clone().unwrap_or(Value::Null);
            add(root, field, value)
        }
        PatchOp::Remove => remove(root, field, op.value.as_ref()),
        PatchOp::Replace => match &op.value {
            Some(value) => set(root, field, value.clone()),
            None => remove(root, field, None),
        },
        PatchOp::Increment => increment(root, field, op.value.as_ref()),
        PatchOp::Copy | PatchOp::Move => {
            let from = op
                .from
                .as_ref()
                .map(JsonPointer::tokens)
                .unwrap_or_default();
            copy_or_move(root, from, field, op.op == PatchOp::Move)
        }
        PatchOp::Transform if allow_transform => Err(Failure::NotSupported(format!(
            "The transform of '{}' cannot be applied: transform runs a script and this gateway \
             has no script engine",
            op.field
        ))),
        PatchOp::Transform => Err(bad(TRANSFORM_CONFIG_ONLY.into())),
    }
}

/// `/a/b` for the first `len` tokens of `tokens`.
fn prefix(tokens: &[String], len: usize) -> String {
    JsonPointer(tokens[..len.min(tokens.len())].to_vec()).to_string()
}

fn list_step(tokens: &[String], at: usize) -> Failure {
    let list = prefix(tokens, at);
    let token = &tokens[at];
    if token.parse::<u64>().is_ok() {
        bad(format!(
            "The field '{}' addresses an element of the list '{list}' by index; IDM does not \
             support PATCH by list index: add to '{list}/-' appends, remove with a value removes \
             the equal elements",
            prefix(tokens, at + 1)
        ))
    } else if token == "-" {
        bad(format!(
            "The field '{}' uses the append index '-', which only a final add accepts",
            prefix(tokens, tokens.len())
        ))
    } else {
        bad(format!(
            "The field '{}' steps into the list '{list}', whose elements cannot be addressed",
            prefix(tokens, at + 1)
        ))
    }
}

/// The value at `tokens`, never stepping into a list.
///
/// With `create`, missing (or `null`) objects along the way are created and a missing final
/// field is inserted as `null` (so the caller can assign it); a scalar along the way is an
/// error. Without `create`, anything missing gives `Ok(None)`.
fn slot<'a>(
    root: &'a mut Value,
    tokens: &[String],
    create: bool,
) -> Result<Option<&'a mut Value>, Failure> {
    let mut cur = root;
    for (at, token) in tokens.iter().enumerate() {
        if cur.is_null() {
            if !create {
                return Ok(None);
            }
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Object(map) => {
                if create {
                    map.entry(token.clone()).or_insert(Value::Null)
                } else {
                    match map.get_mut(token) {
                        Some(next) => next,
                        None => return Ok(None),
                    }
                }
            }
            Value::Array(_) => return Err(list_step(tokens, at)),
            scalar if create => {
                return Err(bad(format!(
                    "The field '{}' cannot be created: '{}' is {}, not an object",
                    prefix(tokens, tokens.len()),
                    prefix(tokens, at),
                    kind(scalar)
                )))
            }
            _ => return Ok(None),
        };
    }
    Ok(Some(cur))
}

/// `add`: ensure the field holds the value (append to lists, replace single values).
fn add(root: &mut Value, field: &[String], value: Value) -> Result<(), Failure> {
    let Some((last, parent)) = field.split_last() else {
        return Err(bad("The whole resource cannot be patched".into()));
    };
    if last == "-" {
        if let Some(list) = slot(root, parent, true)? {
            match list {
                Value::Null => *list = Value::Array(vec![value]),
                Value::Array(items) => items.push(value),
                Value::Object(map) => {
                    // Not a list: `-` is then an ordinary property name.
                    map.insert(last.clone(), value);
                }
                other => {
                    return Err(bad(format!(
                        "The field '{}' cannot be appended to: it is {}, not a list",
                        JsonPointer(parent.to_vec()),
                        kind(other)
                    )))
                }
            }
        }
        return Ok(());
    }
    if let Some(slot) = slot(root, field, true)? {
        match (slot, value) {
            (Value::Array(items), Value::Array(values)) => items.extend(values),
            (Value::Array(items), value) => items.push(value),
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// `replace` with a value, `copy`, `move`: the field becomes the value, wherever it was.
fn set(root: &mut Value, field: &[String], value: Value) -> Result<(), Failure> {
    if let Some(slot) = slot(root, field, true)? {
        *slot = value;
    }
    Ok(())
}

/// `remove`: the field, or the elements equal to `value`.
fn remove(root: &mut Value, field: &[String], value: Option<&Value>) -> Result<(), Failure> {
    let Some((last, parent)) = field.split_last() else {
        return Err(bad("The whole resource cannot be patched".into()));
    };
    let Some(container) = slot(root, parent, false)? else {
        return Ok(());
    };
    let map = match container {
        Value::Object(map) => map,
        Value::Array(_) => return Err(list_step(field, parent.len())),
        _ => return Ok(()),
    };
    let matches = |candidate: &Value| match value {
        Some(Value::Array(values)) => values.contains(candidate),
        Some(value) => candidate == value,
        None => true,
    };
    match (map.get_mut(last), value) {
        (None, _) => {}
        (Some(_), None) => {
            map.shift_remove(last);
        }
        (Some(Value::Array(items)), Some(_)) => items.retain(|item| !matches(item)),
        (Some(current), Some(_)) => {
            if matches(current) {
                map.shift_remove(last);
            }
        }
    }
    Ok(())
}

fn increment(root: &mut Value, field: &[String], by: Option<&Value>) -> Result<(), Failure> {
    let name = JsonPointer(field.to_vec());
    let Some(Value::Number(by)) = by else {
        return Err(bad(format!(
            "The field '{name}' cannot be incremented: the value must be a single number"
        )));
    };
    let not_numeric = |what: &str| {
        bad(format!(
            "The field '{name}' cannot be incremented: it is {what}, not a number or a list of \
             numbers"
        ))
    };
    let overflow = || {
        bad(format!(
            "The field '{name}' cannot be incremented by {by}: the result is out of range"
        ))
    };
    match slot(root, field, false)? {
        None => Err(not_numeric("absent")),
        Some(Value::Number(n)) => {
            *n = add_numbers(n, by).ok_or_else(overflow)?;
            Ok(())
        }
        Some(Value::Array(items)) => {
            if let Some(other) = items.iter().find(|item| !item.is_number()) {
                return Err(not_numeric(&format!("a list holding {}", kind(other))));
            }
            for item in items.iter_mut() {
                if let Value::Number(n) = item {
                    *n = add_numbers(n, by).ok_or_else(overflow)?;
                }
            }
            Ok(())
        }
        Some(other) => Err(not_numeric(kind(other))),
    }
}

/// Integer + integer stays an integer (i64, or u64 above i64::MAX); anything else is a float.
/// `None` when the sum cannot be represented.
fn add_numbers(a: &Number, b: &Number) -> Option<Number> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        let sum = x + y;
        return i64::try_from(sum)
            .map(Number::from)
            .or_else(|_| u64::try_from(sum).map(Number::from))
            .ok();
    }
    Number::from_f64(a.as_f64()? + b.as_f64()?)
}

fn copy_or_move(
    root: &mut Value,
    from: &[String],
    field: &[String],
    is_move: bool,
) -> Result<(), Failure> {
    let source = JsonPointer(from.to_vec());
    if is_move {
        if matches!(from.first().map(String::as_str), Some("_id" | "_rev")) {
            return Err(bad(format!(
                "The field '{source}' cannot be moved: it is managed by the server"
            )));
        }
        if from == field {
            // Moving a field onto itself changes nothing, but it must exist.
            return match slot(root, from, false)? {
                Some(_) => Ok(()),
                None => Err(missing_from(&source)),
            };
        }
        if field.starts_with(from) {
            return Err(bad(format!(
                "The field '{source}' cannot be moved into itself ('{}')",
                JsonPointer(field.to_vec())
            )));
        }
    }
    let value = slot(root, from, false)?
        .map(|v| v.clone())
        .ok_or_else(|| missing_from(&source))?;
    if is_move {
        remove(root, from, None)?;
    }
    set(root, field, value)
}

fn missing_from(source: &JsonPointer) -> Failure {
    bad(format!(
        "The field '{source}' named by 'from' does not exist"
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
