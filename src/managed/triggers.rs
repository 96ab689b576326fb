//! IDM's managed-object triggers (`managed.json`): scripts run around the store.
//!
//! * Create/update (PUT, PATCH, patch by query): `onCreate`/`onUpdate` (may change
//!   `object`), then the storage sequence: object `onValidate`, each property's
//!   `onValidate` (throw to refuse), each property's `onStore` (its value becomes the
//!   property), object `onStore` (may change `object`); then policies, hashing and
//!   encryption, the store write, and `postCreate`/`postUpdate`.
//! * Read: object `onRetrieve` (may change `object`), each property's `onRetrieve` (its
//!   value becomes the property: virtual properties), then `onRead`. Queries run the
//!   retrieve triggers only with `executeOnRetrieve=true`, as IDM.
//! * Delete: `onDelete` (throw to refuse), the delete, `postDelete`.
//!
//! All the scripts of one operation run in one hop to the script pool. A script that
//! throws fails the operation before anything is written, with the code it threw (IDM's
//! `throw {code: 403, message: …}`) or a 500 naming the script and line. A failing `post*`
//! script is logged; the write it follows is committed and answered (gateway difference:
//! IDM reports it to the caller).

use serde_json::{Map, Value};

use super::objects::ObjectSet;
use crate::crest::{Request, ResourceError};
use crate::repo::StoredObject;
use crate::script::endpoint::request_binding;
use crate::script::{context_of, Script, ScriptEngine, ScriptError, Worker};

/// Which write a trigger sequence is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
    Delete,
}

/// What every trigger sees besides its own variables: `context`, `resourceName`, `request`.
struct Common {
    context: Value,
    resource_name: Value,
    request: Value,
}

impl Common {
    fn new(set: &ObjectSet<'_>, req: &Request, id: &str) -> Self {
        let resource_name = format!("{}/{id}", set.schema.resource);
        Self {
            context: context_of(&req.caller),
            request: request_binding(req, &resource_name),
            resource_name: Value::String(resource_name),
        }
    }

    /// Runs `script` with these bindings and `vars`.
    fn eval(
        &self,
        w: &Worker,
        script: &Script,
        vars: &[(&str, &Value)],
        read_back: &[&str],
    ) -> Result<crate::script::Outcome, ScriptError> {
        let mut all: Vec<(&str, &Value)> = vec![
            ("context", &self.context),
            ("resourceName", &self.resource_name),
            ("request", &self.request),
        ];
        all.extend_from_slice(vars);
        w.eval(script, &all, read_back)
    }
}

/// The storage sequence's scripts, copied out of the schema for the pool thread.
#[derive(Default)]
struct StorePlan {
    on_write: Option<Script>,
    on_validate: Option<Script>,
    property_validate: Vec<(String, Script)>,
    property_store: Vec<(String, Script)>,
    on_store: Option<Script>,
}

impl StorePlan {
    fn is_empty(&self) -> bool {
        self.on_write.is_none()
            && self.on_validate.is_none()
            && self.property_validate.is_empty()
            && self.property_store.is_empty()
            && self.on_store.is_none()
    }

    /// Runs the sequence on `object` (its content with `_id`).
    fn run(
        &self,
        w: &Worker,
        common: &Common,
        mut object: Value,
        old: &Value,
    ) -> Result<Value, ScriptError> {
        if let Some(script) = &self.on_write {
            let new = object.clone();
            let out = common.eval(
                w,
                script,
                &[("object", &object), ("newObject", &new), ("oldObject", old)],
                &["object"],
            )?;
            object = object_var(script, out.vars, object)?;
        }
        if let Some(script) = &self.on_validate {
            common.eval(w, script, &[("object", &object), ("value", &object)], &[])?;
        }
        for (name, script) in &self.property_validate {
            let property = object.get(name).cloned().unwrap_or(Value::Null);
            let property_name = Value::String(name.clone());
            common.eval(
                w,
                script,
                &[
                    ("object", &object),
                    ("property", &property),
                    ("value", &property),
                    ("propertyName", &property_name),
                ],
                &[],
            )?;
        }
        for (name, script) in &self.property_store {
            let value = property_value(w, common, script, &object, name)?;
            set_property(&mut object, name, value);
        }
        if let Some(script) = &self.on_store {
            let out = common.eval(
                w,
                script,
                &[("object", &object), ("value", &object)],
                &["object"],
            )?;
            object = object_var(script, out.vars, object)?;
        }
        Ok(object)
    }
}

/// The retrieve sequence's scripts.
struct RetrievePlan {
    on_retrieve: Option<Script>,
    property_retrieve: Vec<(String, Script)>,
    on_read: Option<Script>,
}

impl RetrievePlan {
    fn run(&self, w: &Worker, common: &Common, mut object: Value) -> Result<Value, ScriptError> {
        if let Some(script) = &self.on_retrieve {
            let out = common.eval(w, script, &[("object", &object)], &["object"])?;
            object = object_var(script, out.vars, object)?;
        }
        for (name, script) in &self.property_retrieve {
            let value = property_value(w, common, script, &object, name)?;
            set_property(&mut object, name, value);
        }
        if let Some(script) = &self.on_read {
            let out = common.eval(w, script, &[("object", &object)], &["object"])?;
            object = object_var(script, out.vars, object)?;
        }
        Ok(object)
    }
}

/// A property trigger's value (`object`, `property`, `propertyName` bound).
fn property_value(
    w: &Worker,
    common: &Common,
    script: &Script,
    object: &Value,
    name: &str,
) -> Result<Value, ScriptError> {
    let property = object.get(name).cloned().unwrap_or(Value::Null);
    let property_name = Value::String(name.to_owned());
    Ok(common
        .eval(
            w,
            script,
            &[
                ("object", object),
                ("property", &property),
                ("propertyName", &property_name),
            ],
            &[],
        )?
        .value)
}

/// A property's new value; `null`/`undefined` leaves it absent.
fn set_property(object: &mut Value, name: &str, value: Value) {
    if let Value::Object(map) = object {
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.to_owned(), value);
        }
    }
}

/// `object` as the script left it: it must still be an object.
fn object_var(
    script: &Script,
    mut vars: Map<String, Value>,
    before: Value,
) -> Result<Value, ScriptError> {
    match vars.remove("object") {
        Some(v @ Value::Object(_)) => Ok(v),
        None => Ok(before),
        Some(other) => Err(ScriptError::internal(
            &script.name,
            format!(
                "the script left 'object' as {}, not an object",
                kind_of(&other)
            ),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `obj` as scripts see it: its content with `_id` and `_rev`.
fn as_object(obj: &StoredObject) -> Value {
    let mut full = Map::with_capacity(obj.content.len() + 2);
    full.insert("_id".into(), Value::String(obj.id.clone()));
    full.insert("_rev".into(), Value::String(obj.rev.clone()));
    full.extend(obj.content.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(full)
}

/// The content of what a script left: without `_id` and `_rev` (not the script's to change).
fn content_of(object: Value) -> Map<String, Value> {
    match object {
        Value::Object(mut map) => {
            map.remove("_id");
            map.remove("_rev");
            map
        }
        _ => Map::new(),
    }
}

impl ObjectSet<'_> {
    fn engine(&self) -> Result<&ScriptEngine, ResourceError> {
        self.engine.ok_or_else(|| {
            ResourceError::unavailable(format!(
                "{} declares scripts but the script engine is not running",
                self.schema.resource
            ))
        })
    }

    /// A failed trigger: logged with the object, answered as the script's error.
    fn trigger_failed(&self, id: &str, e: &ScriptError) -> ResourceError {
        tracing::warn!(
            resource = %self.schema.resource,
            id,
            script = %e.script,
            line = ?e.line,
            error = %e,
            "managed object trigger failed"
        );
        e.to_resource_error()
    }

    /// `onCreate`/`onUpdate` and the storage sequence on the `content` about to be
    /// written (`old`: the stored object an update replaces).
    pub(super) async fn before_write(
        &self,
        req: &Request,
        id: &str,
        content: Map<String, Value>,
        old: Option<&StoredObject>,
    ) -> Result<Map<String, Value>, ResourceError> {
        let hooks = &self.schema.hooks;
        let props = &self.schema.properties;
        let plan = StorePlan {
            on_write: if old.is_some() {
                hooks.on_update.clone()
            } else {
                hooks.on_create.clone()
            },
            on_validate: hooks.on_validate.clone(),
            property_validate: props
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.hooks.on_validate.clone()?)))
                .collect(),
            property_store: props
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.hooks.on_store.clone()?)))
                .collect(),
            on_store: hooks.on_store.clone(),
        };
        if plan.is_empty() {
            return Ok(content);
        }
        let engine = self.engine()?;
        let common = Common::new(self, req, id);
        let mut object = content;
        object.insert("_id".into(), Value::String(id.to_owned()));
        let object = Value::Object(object);
        let old = old.map(as_object).unwrap_or(Value::Null);
        let out = engine
            .run(move |w| plan.run(w, &common, object, &old))
            .await
            .and_then(|r| r);
        match out {
            Ok(object) => Ok(content_of(object)),
            Err(e) => Err(self.trigger_failed(id, &e)),
        }
    }

    /// The retrieve sequence on `objects` (`read`: `onRead` too, for a read by id).
    pub(super) async fn retrieve(
        &self,
        req: &Request,
        objects: Vec<StoredObject>,
        read: bool,
    ) -> Result<Vec<StoredObject>, ResourceError> {
        let hooks = &self.schema.hooks;
        let plan = RetrievePlan {
            on_retrieve: hooks.on_retrieve.clone(),
            property_retrieve: self
                .schema
                .properties
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.hooks.on_retrieve.clone()?)))
                .collect(),
            on_read: if read { hooks.on_read.clone() } else { None },
        };
        if objects.is_empty()
            || (plan.on_retrieve.is_none()
                && plan.property_retrieve.is_empty()
                && plan.on_read.is_none())
        {
            return Ok(objects);
        }
        let engine = self.engine()?;
        let jobs: Vec<(Common, StoredObject)> = objects
            .into_iter()
            .map(|o| (Common::new(self, req, &o.id), o))
            .collect();
        let out = engine
            .run(move |w| {
                jobs.into_iter()
                    .map(
                        |(common, mut obj)| match plan.run(w, &common, as_object(&obj)) {
                            Ok(object) => {
                                obj.content = content_of(object);
                                Ok(obj)
                            }
                            Err(e) => Err((obj.id, e)),
                        },
                    )
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| self.trigger_failed("-", &e))?;
        out.map_err(|(id, e)| self.trigger_failed(&id, &e))
    }

    /// `onDelete` on the object about to be deleted: a throw keeps it.
    pub(super) async fn before_delete(
        &self,
        req: &Request,
        existing: &StoredObject,
    ) -> Result<(), ResourceError> {
        let Some(script) = self.schema.hooks.on_delete.clone() else {
            return Ok(());
        };
        let engine = self.engine()?;
        let common = Common::new(self, req, &existing.id);
        let object = as_object(existing);
        engine
            .run(move |w| common.eval(w, &script, &[("object", &object)], &[]))
            .await
            .and_then(|r| r)
            .map(drop)
            .map_err(|e| self.trigger_failed(&existing.id, &e))
    }

    /// `postCreate`/`postUpdate`/`postDelete` after a committed write; a failure is logged.
    pub(super) async fn after_write(
        &self,
        req: &Request,
        write: Write,
        old: Option<&StoredObject>,
        new: Option<&StoredObject>,
    ) {
        let hooks = &self.schema.hooks;
        let script = match write {
            Write::Create => &hooks.post_create,
            Write::Update => &hooks.post_update,
            Write::Delete => &hooks.post_delete,
        };
        let Some(script) = script.clone() else {
            return;
        };
        let Some(id) = new.or(old).map(|o| o.id.clone()) else {
            return;
        };
        let Ok(engine) = self.engine() else {
            return;
        };
        let common = Common::new(self, req, &id);
        let old = old.map(as_object).unwrap_or(Value::Null);
        let new = new.map(as_object).unwrap_or(Value::Null);
        let object = if new.is_null() {
            old.clone()
        } else {
            new.clone()
        };
        let out = engine
            .run(move |w| {
                common.eval(
                    w,
                    &script,
                    &[
                        ("object", &object),
                        ("oldObject", &old),
                        ("newObject", &new),
                    ],
                    &[],
                )
            })
            .await
            .and_then(|r| r);
        if let Err(e) = out {
            tracing::warn!(
                resource = %self.schema.resource,
                id,
                script = %e.script,
                line = ?e.line,
                error = %e,
                "managed object post-trigger failed; the write it follows is committed"
            );
        }
    }
}
