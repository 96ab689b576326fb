//! The reconciliation engine's scripts ([`crate::sync::hooks`]): an object's preparation
//! (qualification, mapping, correlation) in one hop to the script engine when the mapping
//! has scripts, inline when it has none; policy scripts; the event hooks around writes.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::Engine;
use crate::crest::ResourceError;
use crate::script::{Script, ScriptEngine};
use crate::sync::hooks::{correlation_filter, correlation_ids, link_qualifier, Scripts};
use crate::sync::mapping::{Correlation, Mapping};
use crate::sync::situation::{Action, Situation};

/// How an unlinked source looks for its target.
pub(super) enum Correlate {
    None,
    /// A target query with this filter.
    Filter(String),
    /// The ids a correlation script found.
    Ids(Vec<String>),
}

/// A source object ready for assessment.
pub(super) struct Prepared {
    pub qualifies: bool,
    pub mapped: Option<Map<String, Value>>,
    pub correlate: Correlate,
}

/// Qualifies and maps `source` and finds how to correlate it (when `correlate`).
fn prepare(
    m: &Mapping,
    source: Option<&Value>,
    existing: Option<&Value>,
    correlate: bool,
    sc: &Scripts,
) -> Result<Prepared, String> {
    let not = Prepared {
        qualifies: false,
        mapped: None,
        correlate: Correlate::None,
    };
    let Some(s) = source else {
        return Ok(not);
    };
    if !m.source_qualifies(s, sc)? {
        return Ok(not);
    }
    let mapped = m.map_properties(s, existing, sc)?;
    let lq = link_qualifier();
    let correlate = match &m.correlation {
        _ if !correlate => Correlate::None,
        None => Correlate::None,
        Some(Correlation::Query(script)) => {
            let out = sc.eval(script, &[("source", s), ("linkQualifier", &lq)], &[])?;
            match correlation_filter(&out.value)? {
                Some(f) => Correlate::Filter(f),
                None => Correlate::None,
            }
        }
        Some(Correlation::Candidates(script)) => {
            let out = sc.eval(script, &[("source", s), ("linkQualifier", &lq)], &[])?;
            Correlate::Ids(correlation_ids(&out.value)?)
        }
        Some(c) => match c.filter_for(s, &mapped) {
            Some(f) => Correlate::Filter(f.to_string()),
            None => Correlate::None,
        },
    };
    Ok(Prepared {
        qualifies: true,
        mapped: Some(mapped),
        correlate,
    })
}

/// What an event hook of one object is told (IDM's bindings, §3.2).
pub(super) struct Event<'a> {
    pub situation: Situation,
    pub source_id: &'a str,
    pub source: Option<&'a Value>,
    pub target_id: Option<&'a str>,
}

impl Engine {
    /// The script engine for this run's scripts.
    pub fn with_scripts(mut self, scripts: Option<Arc<ScriptEngine>>) -> Self {
        self.scripts = scripts;
        self
    }

    fn script_engine(&self) -> Result<&Arc<ScriptEngine>, String> {
        self.scripts.as_ref().ok_or_else(|| {
            format!(
                "mapping {} has scripts and this gateway has no script engine running",
                self.mapping.name
            )
        })
    }

    /// Runs `f` with this run's scripts on a pool thread.
    pub(super) async fn on_scripts<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Scripts) -> Result<T, String> + Send + 'static,
    {
        let engine = self.script_engine()?;
        let context = self.script_context.clone();
        engine
            .run(move |w| f(&Scripts::new(w, &context)))
            .await
            .map_err(|e| e.to_string())?
    }

    /// [`prepare`], on the script engine when the mapping has scripts.
    pub(super) async fn prepare(
        &self,
        source: &Option<Value>,
        existing: &Option<Value>,
        correlate: bool,
    ) -> Result<Prepared, String> {
        let m = &self.mapping;
        if !m.scripted {
            return prepare(
                m,
                source.as_ref(),
                existing.as_ref(),
                correlate,
                &Scripts::NONE,
            );
        }
        let (m, source, existing) = (m.clone(), source.clone(), existing.clone());
        self.on_scripts(move |sc| prepare(&m, source.as_ref(), existing.as_ref(), correlate, sc))
            .await
    }

    /// The mapped target of `source` (when the preparation did not make it).
    pub(super) async fn map_now(
        &self,
        source: &Value,
        existing: Option<&Value>,
    ) -> Result<Map<String, Value>, String> {
        let m = &self.mapping;
        if !m.scripted {
            return m.map_properties(source, existing, &Scripts::NONE);
        }
        let (m, source, existing) = (m.clone(), source.clone(), existing.cloned());
        self.on_scripts(move |sc| m.map_properties(&source, existing.as_ref(), sc))
            .await
    }

    /// The policy's action for `situation`, with the index of the policy that gave it.
    pub(super) async fn decide(
        &self,
        situation: Situation,
        source: Option<&Value>,
        target: Option<&Value>,
    ) -> Result<(Action, Option<usize>), String> {
        let m = &self.mapping;
        if !m.action_is_scripted(situation) {
            return m.action_for(situation, source, target, &Scripts::NONE);
        }
        let (m, source, target) = (m.clone(), source.cloned(), target.cloned());
        self.on_scripts(move |sc| m.action_for(situation, source.as_ref(), target.as_ref(), sc))
            .await
    }

    /// `validTarget` of each target of a page (one hop for the page when it is a script).
    pub(super) async fn targets_qualify(&self, targets: &[&Value]) -> Vec<Result<bool, String>> {
        let m = &self.mapping;
        if !m.valid_target.as_ref().is_some_and(|c| c.is_script()) {
            return targets
                .iter()
                .map(|t| m.target_qualifies(t, &Scripts::NONE))
                .collect();
        }
        let m = m.clone();
        let owned: Vec<Value> = targets.iter().map(|t| (*t).clone()).collect();
        let n = targets.len();
        match self
            .on_scripts(move |sc| Ok(owned.iter().map(|t| m.target_qualifies(t, sc)).collect()))
            .await
        {
            Ok(v) => v,
            Err(e) => vec![Err(e); n],
        }
    }

    /// The targets a correlation finds (at most two: one is FOUND, two AMBIGUOUS).
    pub(super) async fn correlate(&self, how: Correlate) -> Result<Vec<Value>, ResourceError> {
        match how {
            Correlate::None => Ok(Vec::new()),
            Correlate::Filter(filter) => Ok(self
                .query_page(&self.mapping.target, &filter, 2, None, false)
                .await?
                .results),
            Correlate::Ids(ids) if ids.len() > 1 => Ok(ids
                .into_iter()
                .take(2)
                .map(|id| json!({"_id": id}))
                .collect()),
            Correlate::Ids(ids) => {
                let found = self.read_many(&self.mapping.target, &ids).await?;
                Ok(found.into_values().collect())
            }
        }
    }

    /// IDM's bindings of an event hook.
    fn event_vars(&self, e: &Event, target: Option<&Value>) -> Vec<(String, Value)> {
        vec![
            ("context".into(), (*self.script_context).clone()),
            ("source".into(), e.source.cloned().unwrap_or(Value::Null)),
            ("target".into(), target.cloned().unwrap_or(Value::Null)),
            ("situation".into(), json!(e.situation.as_str())),
            ("linkQualifier".into(), link_qualifier()),
            ("sourceId".into(), json!(e.source_id)),
            ("targetId".into(), json!(e.target_id)),
            ("mappingConfig".into(), self.mapping.raw.clone()),
        ]
    }

    /// Runs an event hook; with `changes`, the hook's `target` afterwards.
    pub(super) async fn hook(
        &self,
        script: &Script,
        e: &Event<'_>,
        target: Option<&Value>,
        old_target: Option<&Value>,
        changes: bool,
    ) -> Result<Option<Value>, String> {
        let engine = self.script_engine()?;
        let mut vars = self.event_vars(e, target);
        if let Some(old) = old_target {
            vars.push(("oldTarget".into(), old.clone()));
        }
        let read_back: &[&str] = if changes { &["target"] } else { &[] };
        let mut out = engine
            .eval(script, vars, read_back)
            .await
            .map_err(|err| err.to_string())?;
        Ok(out.vars.remove("target"))
    }

    /// Runs the `postAction` of the policy that decided, after its action succeeded.
    pub(super) async fn post_action(
        &self,
        e: &Event<'_>,
        action: Action,
        policy: Option<usize>,
        target: Option<&Value>,
    ) -> Result<(), String> {
        let Some(script) = self.mapping.post_action(e.situation, policy) else {
            return Ok(());
        };
        let engine = self.script_engine()?;
        let mut vars = self.event_vars(e, target);
        vars.push(("action".into(), json!(action.as_str())));
        vars.push(("sourceAction".into(), json!(e.source.is_some())));
        vars.push(("reconId".into(), json!(self.run.id)));
        engine
            .eval(script, vars, &[])
            .await
            .map(drop)
            .map_err(|err| err.to_string())
    }

    /// The mapping's `result` script after a full run (bindings `source`, `target`,
    /// `global`: the run's progress and record).
    pub(super) async fn result_hook(&self) {
        let Some(script) = &self.mapping.hooks.result else {
            return;
        };
        let Ok(engine) = self.script_engine() else {
            return;
        };
        let global = self.run.to_json();
        let vars = vec![
            ("context".into(), (*self.script_context).clone()),
            ("source".into(), global["progress"]["source"].clone()),
            ("target".into(), global["progress"]["target"].clone()),
            ("global".into(), global),
        ];
        if let Err(e) = engine.eval(script, vars, &[]).await {
            tracing::warn!(mapping = %self.mapping.name, run = %self.run.id, error = %e,
                "the mapping's result script failed");
        }
    }
}
