//! Scripts in mappings (idm-model-and-scripts.md §3.2, §3.4): the script forms of a
//! mapping's checks, transforms, correlation and policies, and its event hooks, with the
//! bindings IDM gives each.
//!
//! Scripts run on the script engine's pool threads ([`crate::script`]); the reconciliation
//! engine makes one hop per object for what happens before a write (qualification, property
//! mapping, correlation) and one for what follows it. A mapping without scripts never hops:
//! every function here then runs inline with [`Scripts::NONE`].
//!
//! A script that fails fails its object only: the error (mapping, hook, script, line) is the
//! object's failure in the run, and the objects after it go on.

use serde_json::{Map, Value};

use super::mapping::{set_pointer, Mapping, PropertyMapping, Transform, DEFAULT_LINK_QUALIFIER};
use super::scope::FilterScope;
use super::situation::{Action, Situation};
use crate::crest::filter::QueryFilter;
use crate::script::{Outcome, Script, Worker};

/// A condition: a `_queryFilter` on IDM's scope object, or a script returning a boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Filter(QueryFilter),
    Script(Script),
}

impl Check {
    pub fn is_script(&self) -> bool {
        matches!(self, Check::Script(_))
    }
}

/// A mapping's event hooks (`onCreate`, …, `result`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    pub on_create: Option<Script>,
    pub on_update: Option<Script>,
    pub on_delete: Option<Script>,
    pub on_link: Option<Script>,
    pub on_unlink: Option<Script>,
    pub result: Option<Script>,
}

impl Hooks {
    /// The mapping keys of the hooks, with where each one goes.
    pub const KEYS: [&'static str; 6] = [
        "onCreate", "onUpdate", "onDelete", "onLink", "onUnlink", "result",
    ];

    pub fn slot(&mut self, key: &str) -> Option<&mut Option<Script>> {
        Some(match key {
            "onCreate" => &mut self.on_create,
            "onUpdate" => &mut self.on_update,
            "onDelete" => &mut self.on_delete,
            "onLink" => &mut self.on_link,
            "onUnlink" => &mut self.on_unlink,
            "result" => &mut self.result,
            _ => return None,
        })
    }

    pub fn any(&self) -> bool {
        [
            &self.on_create,
            &self.on_update,
            &self.on_delete,
            &self.on_link,
            &self.on_unlink,
            &self.result,
        ]
        .iter()
        .any(|h| h.is_some())
    }
}

/// What scripts of one object run with: a pool thread, and the `context` binding.
#[derive(Clone, Copy)]
pub struct Scripts<'a> {
    worker: Option<&'a Worker>,
    context: &'a Value,
}

static NULL: Value = Value::Null;

impl<'a> Scripts<'a> {
    /// For mappings without scripts: meeting one is an error (a bug), never a panic.
    pub const NONE: Scripts<'static> = Scripts {
        worker: None,
        context: &NULL,
    };

    pub fn new(worker: &'a Worker, context: &'a Value) -> Self {
        Self {
            worker: Some(worker),
            context,
        }
    }

    /// Runs `script` with `vars` (plus `context`); the error names the script (mapping and
    /// hook, see the parser) and the line.
    pub fn eval(
        &self,
        script: &Script,
        vars: &[(&str, &Value)],
        read_back: &[&str],
    ) -> Result<Outcome, String> {
        let Some(worker) = self.worker else {
            return Err(format!(
                "script {}: no script engine here (a bug)",
                script.name
            ));
        };
        let mut all: Vec<(&str, &Value)> = Vec::with_capacity(vars.len() + 1);
        all.push(("context", self.context));
        all.extend_from_slice(vars);
        worker
            .eval(script, &all, read_back)
            .map_err(|e| e.to_string())
    }

    /// A check as a boolean: the filter on its scope, or the script's value (only `true`
    /// is true, as IDM).
    pub fn check(
        &self,
        check: &Check,
        scope: FilterScope,
        object: &Value,
        vars: &[(&str, &Value)],
    ) -> Result<bool, String> {
        match check {
            Check::Filter(f) => Ok(scope.matches(f, object)),
            Check::Script(s) => Ok(self.eval(s, vars, &[])?.value == Value::Bool(true)),
        }
    }
}

impl Mapping {
    /// `validSource` and `sourceCondition` (bindings `source`, `linkQualifier`).
    pub fn source_qualifies(&self, source: &Value, sc: &Scripts) -> Result<bool, String> {
        let lq = link_qualifier();
        for check in [&self.valid_source, &self.source_condition]
            .into_iter()
            .flatten()
        {
            let vars = [("source", source), ("linkQualifier", &lq)];
            if !sc.check(check, FilterScope::Source, source, &vars)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `validTarget` (bindings `target`, `linkQualifier`).
    pub fn target_qualifies(&self, target: &Value, sc: &Scripts) -> Result<bool, String> {
        let Some(check) = &self.valid_target else {
            return Ok(true);
        };
        let lq = link_qualifier();
        sc.check(
            check,
            FilterScope::Target,
            target,
            &[("target", target), ("linkQualifier", &lq)],
        )
    }

    /// The target object the mapping makes of `source` (only the mapped properties);
    /// `existing` is the target when it is known (a linked source).
    pub fn map_properties(
        &self,
        source: &Value,
        existing: Option<&Value>,
        sc: &Scripts,
    ) -> Result<Map<String, Value>, String> {
        let mut out = Value::Object(Map::new());
        for p in &self.properties {
            if let Some(value) = p.apply(source, existing, sc)? {
                set_pointer(&mut out, &p.target, value);
            }
        }
        Ok(match out {
            Value::Object(m) => m,
            _ => Map::new(),
        })
    }

    /// The action for `situation`: the first listed policy whose condition holds, else
    /// IDM's default; with the index of that policy (for its `postAction`). A policy's
    /// `action` may be a script returning the action's name.
    pub fn action_for(
        &self,
        situation: Situation,
        source: Option<&Value>,
        target: Option<&Value>,
        sc: &Scripts,
    ) -> Result<(Action, Option<usize>), String> {
        let listed = self.policies.get(&situation).map(Vec::as_slice);
        let source_v = source.unwrap_or(&Value::Null);
        let target_v = target.unwrap_or(&Value::Null);
        let lq = link_qualifier();
        for (i, policy) in listed.unwrap_or_default().iter().enumerate() {
            let holds = match &policy.condition {
                None => true,
                Some(c) => sc.check(
                    c,
                    FilterScope::Policy,
                    source_v,
                    &[
                        ("object", source_v),
                        ("source", source_v),
                        ("target", target_v),
                        ("linkQualifier", &lq),
                    ],
                )?,
            };
            if !holds {
                continue;
            }
            let Some(script) = &policy.action_script else {
                return Ok((policy.action, Some(i)));
            };
            let recon = serde_json::json!({"actionParam": {
                "mapping": self.name,
                "situation": situation.as_str(),
                "linkQualifier": DEFAULT_LINK_QUALIFIER,
            }});
            let out = sc.eval(
                script,
                &[
                    ("source", source_v),
                    ("target", target_v),
                    ("recon", &recon),
                    ("sourceAction", &Value::Bool(source.is_some())),
                    ("situation", &Value::String(situation.as_str().into())),
                    ("linkQualifier", &lq),
                ],
                &[],
            )?;
            return match out.value.as_str().and_then(Action::parse) {
                Some(a) => Ok((a, Some(i))),
                None => Err(format!(
                    "script {}: the policy action script returned {}, not an action name",
                    script.name, out.value
                )),
            };
        }
        Ok((situation.default_action(), None))
    }

    /// Whether deciding the action of `situation` runs a script.
    pub fn action_is_scripted(&self, situation: Situation) -> bool {
        self.policies.get(&situation).is_some_and(|list| {
            list.iter().any(|p| {
                p.action_script.is_some() || p.condition.as_ref().is_some_and(Check::is_script)
            })
        })
    }

    /// The `postAction` script of the policy at `index` for `situation`.
    pub fn post_action(&self, situation: Situation, index: Option<usize>) -> Option<&Script> {
        self.policies
            .get(&situation)?
            .get(index?)?
            .post_action
            .as_ref()
    }
}

impl PropertyMapping {
    /// The value for the target: `None` when the condition excludes the property, otherwise
    /// the (transformed) source value, or the default, or `null`.
    pub fn apply(
        &self,
        source: &Value,
        existing: Option<&Value>,
        sc: &Scripts,
    ) -> Result<Option<Value>, String> {
        let lq = link_qualifier();
        let existing = existing.unwrap_or(&Value::Null);
        if let Some(cond) = &self.condition {
            let vars = [
                ("object", source),
                ("source", source),
                ("target", existing),
                ("oldTarget", existing),
                ("linkQualifier", &lq),
            ];
            if !sc.check(cond, FilterScope::Property, source, &vars)? {
                return Ok(None);
            }
        }
        let mut value = match &self.source {
            Some(p) => p.resolve(source).cloned().unwrap_or(Value::Null),
            // A script transform without a source property gets the whole object (IDM).
            None if matches!(self.transform, Some(Transform::Script(_))) => source.clone(),
            None => Value::Null,
        };
        match &self.transform {
            Some(Transform::Script(s)) => {
                let vars = [
                    ("source", &value),
                    ("existingTarget", existing),
                    ("linkQualifier", &lq),
                ];
                value = sc.eval(s, &vars, &[])?.value;
            }
            Some(t) => value = t.apply(value, source),
            None => {}
        }
        if value.is_null() {
            if let Some(d) = &self.default {
                value = d.clone();
            }
        }
        Ok(Some(value))
    }
}

/// The `linkQualifier` binding (only `default` is supported).
pub fn link_qualifier() -> Value {
    Value::String(DEFAULT_LINK_QUALIFIER.to_owned())
}

/// What a correlation query script returned, as the filter text of the target query.
pub fn correlation_filter(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(o) => match (o.get("_queryFilter"), o.get("_queryId")) {
            (Some(Value::String(f)), _) => Ok(Some(f.clone())),
            (None, Some(Value::String(id))) if id == "query-all-ids" || id == "query-all" => {
                Ok(Some("true".into()))
            }
            (None, Some(Value::String(id))) => Err(format!(
                "correlationQuery: the script returned _queryId '{id}'; only _queryFilter \
                 queries (and query-all-ids) are supported"
            )),
            _ => Err(
                "correlationQuery: the script must return {\"_queryFilter\": …} (or null)".into(),
            ),
        },
        other => Err(format!(
            "correlationQuery: the script must return {{\"_queryFilter\": …}}, not {other}"
        )),
    }
}

/// The target ids a correlation script returned (`[{"_id": …}, …]`, or ids as strings).
pub fn correlation_ids(v: &Value) -> Result<Vec<String>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        Value::Object(o) => match o.get("result") {
            Some(Value::Array(items)) => items,
            _ => return Err("correlationScript must return a list of {\"_id\": …}".into()),
        },
        _ => return Err("correlationScript must return a list of {\"_id\": …}".into()),
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(id) => Ok(id.clone()),
            other => other
                .get("_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("correlationScript returned an item without _id: {other}")),
        })
        .collect()
}

/// Patch operations that turn `old` into `new` at the top level, for the fields a hook
/// changed (`_id`, `_rev` and `_meta`-like fields are never written).
pub fn diff_ops(old: &Value, new: &Value) -> Vec<Value> {
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut ops = Vec::new();
    for (k, v) in new {
        if k.starts_with('_') {
            continue;
        }
        if old.get(k) != Some(v) {
            ops.push(serde_json::json!({"operation": "replace", "field": format!("/{}", escape(k)), "value": v}));
        }
    }
    for k in old.keys() {
        if !k.starts_with('_') && !new.contains_key(k) {
            ops.push(
                serde_json::json!({"operation": "remove", "field": format!("/{}", escape(k))}),
            );
        }
    }
    ops
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `target` with the mapped values written over it (what IDM binds as `target` in onUpdate).
pub fn merged(target: &Value, mapped: &Map<String, Value>) -> Value {
    let mut out = target.clone();
    if let Value::Object(o) = &mut out {
        for (k, v) in mapped {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn correlation_results_are_read_as_idm_documents_them() {
        assert_eq!(
            correlation_filter(&json!({"_queryFilter": "uid eq \"a\""})).unwrap(),
            Some("uid eq \"a\"".into())
        );
        assert_eq!(correlation_filter(&Value::Null).unwrap(), None);
        assert!(correlation_filter(&json!({"_queryId": "for-userName", "uid": "a"})).is_err());
        assert!(correlation_filter(&json!(3)).is_err());
        assert_eq!(
            correlation_ids(&json!([{"_id": "a"}, "b"])).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(correlation_ids(&json!([])).unwrap(), Vec::<String>::new());
        assert!(correlation_ids(&json!([{"x": 1}])).is_err());
    }

    #[test]
    fn hook_changes_become_patch_operations() {
        let old = json!({"_id": "1", "_rev": "3", "a": 1, "b": 2, "c/d": 0});
        let new = json!({"_id": "1", "_rev": "9", "a": 1, "b": 3, "e": [1]});
        let ops = diff_ops(&old, &new);
        assert_eq!(
            ops,
            vec![
                json!({"operation": "replace", "field": "/b", "value": 3}),
                json!({"operation": "replace", "field": "/e", "value": [1]}),
                json!({"operation": "remove", "field": "/c~1d"}),
            ]
        );
    }
}
