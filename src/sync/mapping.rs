//! Sync mappings: `conf/sync.json` (`{"mappings": […]}`) and `conf/mapping-<name>.json`
//! (config id `mapping/<name>`, one mapping object) lowered once into plain types, with
//! every problem of a file reported at once.
//!
//! IDM's format (crest-wire.md §9). Every check, transform, correlation and policy below may
//! also be a JavaScript script object (`{"type": "text/javascript", "source"|"file", …}`,
//! compiled when the file is loaded: a syntax error rejects the file with the line), and the
//! hooks `onCreate`, `onUpdate`, `onDelete`, `onLink`, `onUnlink`, `result`, a policy's
//! `postAction` and `correlationScript` are scripts; [`super::hooks`] runs them. The
//! declarative forms:
//!
//! * `properties[]`: `target` (required), `source` (`""` is the whole source object),
//!   `default`, `condition` (a `_queryFilter` string evaluated on IDM's scope
//!   `{"object": <source>, "source": <source>, "linkQualifier": "default"}`, see [`super::scope`])
//!   and `transform`
//!   in one of these declarative forms: `{"type": "template", "source": "${source.givenName}
//!   ${source.sn}"}`, `{"type": "lowercase"|"uppercase"|"trim"}`, `{"type": "map", "values":
//!   {"A": "active"}, "default": …}` (value lookup by the text of the value).
//! * `correlationQuery`: the admin UI's array `[{"linkQualifier": "default", "expressionTree":
//!   {"all": ["mail", …]}, …}]` (its `type`/`file` naming the UI's script are ignored: the tree is
//!   evaluated natively), the same tree as a single object, or `{"_queryFilter": "mail eq
//!   \"${source.mail}\""}`. In a tree, a field `f` stands for `f eq <value>`, the value being the
//!   mapped target value of `f` (the value the mapping would write), or the source's `f` when no
//!   property maps to `f`; `all` needs every value, `any` uses the values present. A template
//!   is parsed once with `${source.a.b}` as value slots ([`FilterTemplate`]): the source's values
//!   fill the parsed tree, never the filter text. A missing value means no correlation candidate.
//! * `validSource`, `validTarget`, `sourceCondition`: `_queryFilter` strings (or
//!   `{"_queryFilter": …}`) evaluated on IDM's scope objects (`/source/…`, `/target/…`); a
//!   pointer outside the scope is refused at load with IDM's form in the message.
//! * `allowEmptySourceSet` (IDM, default false) and the gateway extra `maxDeletes` (default
//!   unlimited): the run's guards against wiping a target.
//! * `policies[]`: `{"situation", "action", "condition"?}`; for a situation the first policy
//!   whose `condition` (a `_queryFilter` on IDM's scope `{"object": <source>, "linkQualifier":
//!   …}`) holds, or that has none, gives the action; otherwise IDM's default action.
//! * `sourceQuery`/`targetQuery`: `{"_queryFilter": …}` or `{"_queryId": "query-all-ids"}`.
//!
//! This module is pure: it never reads files or talks to the router.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::hooks::{Check, Hooks};
use super::queue::RetryPolicy;
use super::scope::{FilterScope, FilterTemplate};
use super::situation::{Action, Situation};
use crate::crest::filter::{self, CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::script::{is_script, parse_script, Script};

/// Config id of the mapping list.
pub const SYNC_CONFIG: &str = "sync";
/// Factory pid of single-mapping files (`mapping-<name>.json` → `mapping/<name>`).
pub const MAPPING_FACTORY: &str = "mapping";

pub const DEFAULT_TASK_THREADS: usize = 10;
pub const MAX_TASK_THREADS: usize = 64;
pub const DEFAULT_PAGE_SIZE: usize = 1000;
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Deepest `all`/`any` nesting accepted in a correlation expression tree.
pub const MAX_TREE_DEPTH: usize = 16;
/// The only link qualifier supported.
pub const DEFAULT_LINK_QUALIFIER: &str = "default";

/// One mapping, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub name: String,
    pub source: String,
    pub target: String,
    pub properties: Vec<PropertyMapping>,
    pub correlation: Option<Correlation>,
    pub valid_source: Option<Check>,
    pub valid_target: Option<Check>,
    pub source_condition: Option<Check>,
    /// `onCreate`, `onUpdate`, …, `result`.
    pub hooks: Hooks,
    /// Whether any script runs before a write (checks, transforms, correlation): such
    /// objects are prepared on the script engine.
    pub scripted: bool,
    /// The listed policies per situation, in file order; the defaults are not listed.
    pub policies: HashMap<Situation, Vec<Policy>>,
    /// Name of the mapping whose links this one shares.
    pub links: Option<String>,
    pub enable_sync: bool,
    pub run_target_phase: bool,
    pub correlate_empty_target_set: bool,
    /// A full run whose source query finds nothing goes on to the target phase (IDM's
    /// `allowEmptySourceSet`; false: it fails before touching anything).
    pub allow_empty_source_set: bool,
    /// Gateway extra: most targets one run may delete (`None`: no limit).
    pub max_deletes: Option<u64>,
    /// Implicit-sync retries and what follows them (IDM's `queuedSync`).
    pub retry: RetryPolicy,
    pub prefetch_links: bool,
    pub task_threads: usize,
    /// `_queryFilter` text of the source and target queries (`true` by default).
    pub source_query: String,
    pub target_query: String,
    pub page_size: usize,
    /// IDM's `clusteredSourceReconEnabled`: with a shared store, a full run's source phase
    /// is shared among the cluster's nodes, page by page.
    pub clustered: bool,
    /// The mapping as written (served by `sync/mappings`).
    pub raw: Value,
}

impl Mapping {
    /// The name under which links are stored (`links`, or the mapping's own name).
    pub fn link_type(&self) -> &str {
        self.links.as_deref().unwrap_or(&self.name)
    }
}

/// One entry of `policies`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub condition: Option<Check>,
    pub action: Action,
    /// `action` as a script returning the action's name (`action` is then its fallback).
    pub action_script: Option<Script>,
    /// Runs after the action (`postAction`).
    pub post_action: Option<Script>,
}

/// One entry of `properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyMapping {
    /// `None`: no source value (a default or a template only); empty pointer: the whole source.
    pub source: Option<JsonPointer>,
    pub target: JsonPointer,
    pub default: Option<Value>,
    pub condition: Option<Check>,
    pub transform: Option<Transform>,
}

/// Declarative property transforms.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// `${source.a.b}` placeholders replaced by the source's values (as text), each escaped
    /// as `escape` says.
    Template {
        template: Template,
        escape: Escape,
    },
    Lowercase,
    Uppercase,
    Trim,
    /// Lookup by the text of the value; `default` (else the value itself) when not listed.
    ValueMap {
        values: Map<String, Value>,
        default: Option<Value>,
    },
    /// A script: `source` is the source property's value, its value the target's.
    Script(Script),
}

/// How a template transform writes a placeholder's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is.
    Text,
    /// As an RFC 4514 attribute value, so a value can never add an RDN or leave the DN it is
    /// placed in (`"escape": "dn"`; the default when the target is `dn` or `__NAME__`).
    Dn,
}

impl Transform {
    /// A declarative transform (scripts run in [`super::hooks`]).
    pub(super) fn apply(&self, value: Value, source: &Value) -> Value {
        let on_str = |v: Value, f: fn(&str) -> String| match v {
            Value::String(s) => Value::String(f(&s)),
            other => other,
        };
        match self {
            Transform::Template { template, escape } => template
                .render(source, |v| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => return None,
                    };
                    Some(match escape {
                        Escape::Text => text,
                        Escape::Dn => ldap3::dn_escape(text).into_owned(),
                    })
                })
                .map(Value::String)
                .unwrap_or(Value::Null),
            Transform::Lowercase => on_str(value, str::to_lowercase),
            Transform::Uppercase => on_str(value, str::to_uppercase),
            Transform::Trim => on_str(value, |s| s.trim().to_owned()),
            Transform::ValueMap { values, default } => {
                let key = match &value {
                    Value::String(s) => s.clone(),
                    Value::Null => return value,
                    other => other.to_string(),
                };
                match values.get(&key) {
                    Some(v) => v.clone(),
                    None => default.clone().unwrap_or(value),
                }
            }
            Transform::Script(_) => value,
        }
    }
}

/// Text with `${source.<path>}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq)]
enum TemplatePart {
    Text(String),
    Source(JsonPointer),
}

impl Template {
    /// Parses `text`; a placeholder must be `${source}` or `${source.<a.b>}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(TemplatePart::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated placeholder in '{text}'"))?;
            parts.push(TemplatePart::Source(super::scope::placeholder(
                after[..end].trim(),
            )?));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The text with each placeholder replaced by `value(source value)`; `None` when a value
    /// is missing or `value` refuses it.
    pub fn render(
        &self,
        source: &Value,
        value: impl Fn(&Value) -> Option<String>,
    ) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Source(p) => out.push_str(&value(p.resolve(source)?)?),
            }
        }
        Some(out)
    }
}

/// How unlinked sources find their target.
#[derive(Debug, Clone, PartialEq)]
pub enum Correlation {
    Tree(TreeNode),
    /// A `_queryFilter` template.
    Filter(FilterTemplate),
    /// `correlationQuery` as a script returning `{"_queryFilter": …}` (bindings `source`,
    /// `linkQualifier`).
    Query(Script),
    /// `correlationScript`: a script that queries itself and returns `[{"_id": …}, …]`.
    Candidates(Script),
}

/// A node of an expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeNode {
    Field(String),
    All(Vec<TreeNode>),
    Any(Vec<TreeNode>),
}

impl Correlation {
    /// The filter that finds the candidates for `source` (whose mapped target values are
    /// `mapped`), built as a tree; `None` when a needed value is missing (no candidate).
    pub fn filter_for(&self, source: &Value, mapped: &Map<String, Value>) -> Option<QueryFilter> {
        match self {
            Correlation::Tree(node) => tree_filter(node, source, mapped),
            Correlation::Filter(t) => t.render(source),
            Correlation::Query(_) | Correlation::Candidates(_) => None,
        }
    }
}

fn tree_filter(
    node: &TreeNode,
    source: &Value,
    mapped: &Map<String, Value>,
) -> Option<QueryFilter> {
    match node {
        TreeNode::Field(f) => {
            let ptr = JsonPointer::parse(f);
            let mapped_root = Value::Object(mapped.clone());
            let value = match ptr.resolve(&mapped_root) {
                Some(v) => v.clone(),
                None => ptr.resolve(source)?.clone(),
            };
            let value = match value {
                Value::String(s) => FilterValue::String(s),
                Value::Bool(b) => FilterValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => FilterValue::Integer(i),
                    None => FilterValue::Float(n.as_f64()?),
                },
                _ => return None,
            };
            Some(QueryFilter::Compare {
                field: ptr,
                op: CompareOp::Eq,
                value,
            })
        }
        TreeNode::All(items) => {
            let mut out = items
                .iter()
                .map(|n| tree_filter(n, source, mapped))
                .collect::<Option<Vec<_>>>()?;
            (!out.is_empty()).then_some(())?;
            Some(if out.len() == 1 {
                out.remove(0)
            } else {
                QueryFilter::And(out)
            })
        }
        TreeNode::Any(items) => {
            let mut out: Vec<_> = items
                .iter()
                .filter_map(|n| tree_filter(n, source, mapped))
                .collect();
            (!out.is_empty()).then_some(())?;
            Some(if out.len() == 1 {
                out.remove(0)
            } else {
                QueryFilter::Or(out)
            })
        }
    }
}

/// Every live mapping, in processing order: `sync.json` order, then `mapping-*.json` by name.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    list: Vec<Arc<Mapping>>,
    /// The last good mappings of each config id (`sync`, `mapping/<name>`).
    by_config: BTreeMap<String, Vec<Arc<Mapping>>>,
}

impl Mappings {
    pub fn get(&self, name: &str) -> Option<&Arc<Mapping>> {
        self.list.iter().find(|m| m.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Mapping>> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `prev` with the changed config ids replaced: `Some(mappings)` for a file (re)applied,
    /// `None` for a file removed. Ids not listed keep their last good mappings. A name
    /// defined twice is used once (the first in processing order) and logged.
    pub fn with_changes(
        prev: &Mappings,
        changes: impl IntoIterator<Item = (String, Option<Vec<Mapping>>)>,
    ) -> Mappings {
        let mut by_config = prev.by_config.clone();
        for (id, change) in changes {
            match change {
                Some(ms) => {
                    by_config.insert(id, ms.into_iter().map(Arc::new).collect());
                }
                None => {
                    by_config.remove(&id);
                }
            }
        }
        let mut list: Vec<Arc<Mapping>> = Vec::new();
        let ordered = by_config.get(SYNC_CONFIG).into_iter().chain(
            by_config
                .iter()
                .filter(|(id, _)| *id != SYNC_CONFIG)
                .map(|(_, v)| v),
        );
        for ms in ordered {
            for m in ms {
                if list.iter().any(|x| x.name == m.name) {
                    tracing::warn!(mapping = %m.name, "mapping defined twice; the first definition is used");
                    continue;
                }
                list.push(m.clone());
            }
        }
        for m in &list {
            if let Some(l) = &m.links {
                if !list.iter().any(|x| &x.name == l) {
                    tracing::warn!(mapping = %m.name, links = %l, "mapping shares the links of a mapping that does not exist");
                }
            }
        }
        Mappings { list, by_config }
    }
}

/// Whether a config id holds mappings.
pub fn is_mapping_config(id: &str) -> bool {
    id == SYNC_CONFIG || mapping_file_name(id).is_some()
}

/// `mapping/<name>` → `<name>`.
pub fn mapping_file_name(id: &str) -> Option<&str> {
    id.strip_prefix(MAPPING_FACTORY)?.strip_prefix('/')
}

/// Parses the mappings of config `id` (`sync` or `mapping/<name>`).
pub fn parse_config(id: &str, doc: &Value) -> Result<Vec<Mapping>, Vec<String>> {
    match mapping_file_name(id) {
        Some(name) => parse_mapping(doc, Some(name), "").map(|m| vec![m]),
        None => parse_sync(doc),
    }
}

/// `{"mappings": […]}`: every mapping, or every problem of every mapping.
pub fn parse_sync(doc: &Value) -> Result<Vec<Mapping>, Vec<String>> {
    let mut problems = Vec::new();
    let items = match doc.get("mappings") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(vec!["'mappings' must be an array of mapping objects".into()]),
    };
    let mut out: Vec<Mapping> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = match item.get("name").and_then(Value::as_str) {
            Some(n) => format!("mappings[{i}] ('{n}'): "),
            None => format!("mappings[{i}]: "),
        };
        match parse_mapping(item, None, &label) {
            Ok(m) => {
                if out.iter().any(|x| x.name == m.name) {
                    problems.push(format!("{label}the name '{}' is used twice", m.name));
                }
                out.push(m);
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// One mapping object. `file_name`: the `<name>` of `mapping-<name>.json` (the mapping's
/// name when it gives none). Problems are prefixed with `label`.
pub fn parse_mapping(
    doc: &Value,
    file_name: Option<&str>,
    label: &str,
) -> Result<Mapping, Vec<String>> {
    let mut p = Problems {
        label,
        list: Vec::new(),
    };
    let Some(obj) = doc.as_object() else {
        return Err(vec![format!("{label}a mapping must be a JSON object")]);
    };
    let name = match (obj.get("name"), file_name) {
        (Some(Value::String(n)), Some(f)) if n != f => {
            p.add(format!(
                "'name' is '{n}' but the file defines mapping '{f}'"
            ));
            n.clone()
        }
        (Some(Value::String(n)), _) if valid_name(n) => n.clone(),
        (Some(Value::String(n)), _) => {
            p.add(format!(
                "'name' '{n}' must be letters, digits, '_', '-' or '.' (1 to 128)"
            ));
            n.clone()
        }
        (None, Some(f)) => f.to_owned(),
        (None, None) => {
            p.add("'name' is required".into());
            String::new()
        }
        (Some(_), _) => {
            p.add("'name' must be a string".into());
            String::new()
        }
    };
    let source = resource_path(obj, "source", &mut p);
    let target = resource_path(obj, "target", &mut p);

    let mut hooks = Hooks::default();
    for key in Hooks::KEYS {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            let script = script_of(v, &name, key, &mut p);
            if let Some(slot) = hooks.slot(key) {
                *slot = script;
            }
        }
    }

    let properties = match obj.get("properties") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| parse_property(item, i, &name, &mut p))
            .collect(),
        Some(_) => {
            p.add("'properties' must be an array".into());
            Vec::new()
        }
    };
    let correlation = match (
        obj.get("correlationQuery").filter(|v| !v.is_null()),
        obj.get("correlationScript").filter(|v| !v.is_null()),
    ) {
        (Some(_), Some(_)) => {
            p.add("'correlationQuery' and 'correlationScript' are exclusive: use one".into());
            None
        }
        (None, Some(v)) => {
            script_of(v, &name, "correlationScript", &mut p).map(Correlation::Candidates)
        }
        (q, None) => parse_correlation(q, &name, &mut p),
    };
    let valid_source = filter_setting(obj, "validSource", FilterScope::Source, &name, &mut p);
    let valid_target = filter_setting(obj, "validTarget", FilterScope::Target, &name, &mut p);
    let source_condition =
        filter_setting(obj, "sourceCondition", FilterScope::Source, &name, &mut p);
    let policies = parse_policies(obj.get("policies"), &name, &mut p);
    let links = match obj.get("links") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if valid_name(l) => Some(l.clone()),
        Some(_) => {
            p.add("'links' must name another mapping".into());
            None
        }
    };
    if links.as_deref() == Some(name.as_str()) {
        p.add("'links' names the mapping itself".into());
    }
    let enable_sync = bool_setting(obj, "enableSync", true, &mut p);
    let run_target_phase = bool_setting(obj, "runTargetPhase", true, &mut p);
    let correlate_empty_target_set = bool_setting(obj, "correlateEmptyTargetSet", false, &mut p);
    let allow_empty_source_set = bool_setting(obj, "allowEmptySourceSet", false, &mut p);
    let max_deletes = match obj.get("maxDeletes") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                p.add("'maxDeletes' must be a whole number (0 or more)".into());
                None
            }
        },
    };
    let retry = RetryPolicy::of_mapping(doc).unwrap_or_else(|e| {
        p.add(e);
        RetryPolicy::default()
    });
    let prefetch_links = bool_setting(obj, "prefetchLinks", false, &mut p);
    let clustered = bool_setting(obj, "clusteredSourceReconEnabled", false, &mut p);
    let task_threads = count_setting(
        obj,
        "taskThreads",
        DEFAULT_TASK_THREADS,
        MAX_TASK_THREADS,
        &mut p,
    );
    let page_size = count_setting(
        obj,
        "reconSourceQueryPageSize",
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
        &mut p,
    );
    let source_query = query_setting(obj, "sourceQuery", &mut p);
    let target_query = query_setting(obj, "targetQuery", &mut p);
    // Several link qualifiers make several links (targets) per source; read as the one
    // default qualifier they would sync the wrong targets, so they are refused, not ignored.
    match obj.get("linkQualifiers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(q))
            if q.is_empty() || (q.len() == 1 && q[0] == DEFAULT_LINK_QUALIFIER) => {}
        Some(_) => p.add(format!(
            "'linkQualifiers' other than [\"{DEFAULT_LINK_QUALIFIER}\"] (several links per source, or a script choosing them) are not supported by this gateway"
        )),
    }

    if !p.list.is_empty() {
        return Err(p.list);
    }
    let scripted = [&valid_source, &valid_target, &source_condition]
        .into_iter()
        .flatten()
        .any(Check::is_script)
        || matches!(
            correlation,
            Some(Correlation::Query(_) | Correlation::Candidates(_))
        )
        || properties.iter().any(|p| {
            matches!(p.transform, Some(Transform::Script(_)))
                || p.condition.as_ref().is_some_and(Check::is_script)
        });
    Ok(Mapping {
        hooks,
        scripted,
        source,
        target,
        properties,
        correlation,
        valid_source,
        valid_target,
        source_condition,
        policies,
        links,
        enable_sync,
        run_target_phase,
        correlate_empty_target_set,
        allow_empty_source_set,
        max_deletes,
        retry,
        prefetch_links,
        task_threads,
        source_query,
        target_query,
        page_size,
        clustered,
        raw: {
            let mut raw = obj.clone();
            if !raw.contains_key("name") {
                raw.insert("name".into(), Value::String(name.clone()));
            }
            Value::Object(raw)
        },
        name,
    })
}

struct Problems<'a> {
    label: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, message: String) {
        self.list.push(format!("{}{message}", self.label));
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && n != "."
        && n != ".."
}

/// A script of mapping `mapping` at `what`, parsed (and compiled) or reported.
fn script_of(v: &Value, mapping: &str, what: &str, p: &mut Problems) -> Option<Script> {
    match parse_script(v, &format!("{mapping} {what}")) {
        Ok(s) => Some(s),
        Err(e) => {
            p.add(format!("'{what}': {e}"));
            None
        }
    }
}

fn resource_path(obj: &Map<String, Value>, key: &str, p: &mut Problems) -> String {
    match obj.get(key) {
        Some(Value::String(s)) => {
            let segments: Vec<&str> = s.trim_matches('/').split('/').collect();
            if s.trim_matches('/').is_empty()
                || segments
                    .iter()
                    .any(|seg| seg.is_empty() || *seg == "." || *seg == "..")
            {
                p.add(format!(
                    "'{key}' must be a resource path like 'managed/user', not '{s}'"
                ));
            }
            s.trim_matches('/').to_owned()
        }
        None => {
            p.add(format!("'{key}' is required"));
            String::new()
        }
        Some(_) => {
            p.add(format!("'{key}' must be a string"));
            String::new()
        }
    }
}

fn bool_setting(obj: &Map<String, Value>, key: &str, default: bool, p: &mut Problems) -> bool {
    match obj.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.add(format!("'{key}' must be true or false"));
            default
        }
    }
}

fn count_setting(
    obj: &Map<String, Value>,
    key: &str,
    default: usize,
    max: usize,
    p: &mut Problems,
) -> usize {
    match obj.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n as usize <= max => n as usize,
            _ => {
                p.add(format!("'{key}' must be a whole number from 1 to {max}"));
                default
            }
        },
    }
}

/// A `_queryFilter`, parsed, with the problem reported under `what`.
fn filter_text(text: &str, what: &str, p: &mut Problems) -> Option<QueryFilter> {
    match filter::parse(text) {
        Ok(f) => Some(f),
        Err(e) => {
            p.add(format!("{what} is not a valid _queryFilter: {e}"));
            None
        }
    }
}

/// A filter evaluated on `scope`: parsed, and refused when it has a pointer outside the
/// scope (see [`FilterScope::check`]).
fn scoped_filter(
    text: &str,
    what: &str,
    scope: FilterScope,
    mapping: &str,
    p: &mut Problems,
) -> Option<QueryFilter> {
    let f = filter_text(text, what, p)?;
    match scope.check(&f, what, mapping) {
        Ok(()) => Some(f),
        Err(e) => {
            p.add(e);
            None
        }
    }
}

/// `validSource`-like settings: a filter string or `{"_queryFilter": …}`, on `scope`.
fn filter_setting(
    obj: &Map<String, Value>,
    key: &str,
    scope: FilterScope,
    mapping: &str,
    p: &mut Problems,
) -> Option<Check> {
    let what = format!("'{key}'");
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => scoped_filter(s, &what, scope, mapping, p).map(Check::Filter),
        Some(v) if is_script(v) => script_of(v, mapping, key, p).map(Check::Script),
        Some(v) => match v.get("_queryFilter").and_then(Value::as_str) {
            Some(s) => scoped_filter(s, &what, scope, mapping, p).map(Check::Filter),
            None => {
                p.add(format!(
                    "'{key}' must be a _queryFilter string or {{\"_queryFilter\": …}}"
                ));
                None
            }
        },
    }
}

/// `sourceQuery`/`targetQuery` → filter text (`true` when absent).
fn query_setting(obj: &Map<String, Value>, key: &str, p: &mut Problems) -> String {
    let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
        return "true".into();
    };
    if is_script(v) {
        p.add(format!(
            "'{key}' cannot be a script here; use {{\"_queryFilter\": …}}"
        ));
        return "true".into();
    }
    match (
        v.get("_queryFilter").and_then(Value::as_str),
        v.get("_queryId").and_then(Value::as_str),
    ) {
        (Some(f), None) => {
            filter_text(f, &format!("'{key}._queryFilter'"), p);
            f.to_owned()
        }
        (None, Some("query-all-ids" | "query-all")) => "true".into(),
        (None, Some(other)) => {
            p.add(format!(
                "'{key}._queryId' '{other}' is not supported; use _queryFilter or query-all-ids"
            ));
            "true".into()
        }
        _ => {
            p.add(format!(
                "'{key}' must be {{\"_queryFilter\": …}} or {{\"_queryId\": \"query-all-ids\"}}"
            ));
            "true".into()
        }
    }
}

fn parse_property(
    item: &Value,
    i: usize,
    mapping: &str,
    p: &mut Problems,
) -> Option<PropertyMapping> {
    let at = format!("properties[{i}]");
    let Some(obj) = item.as_object() else {
        p.add(format!("{at} must be an object"));
        return None;
    };
    let before = p.list.len();
    let target = match obj.get("target") {
        Some(Value::String(t)) if !t.trim_matches('/').is_empty() => JsonPointer::parse(t),
        _ => {
            p.add(format!("{at}: 'target' is required (a property path)"));
            JsonPointer::default()
        }
    };
    if matches!(target.tokens().first().map(String::as_str), Some("_rev")) {
        p.add(format!("{at}: '_rev' cannot be a target"));
    }
    let source = match obj.get("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(JsonPointer::parse(s)),
        Some(_) => {
            p.add(format!("{at}: 'source' must be a string"));
            None
        }
    };
    let condition = match obj.get("condition") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => scoped_filter(
            s,
            &format!("{at}: 'condition'"),
            FilterScope::Property,
            mapping,
            p,
        )
        .map(Check::Filter),
        Some(v) if is_script(v) => {
            script_of(v, mapping, &format!("{at}.condition"), p).map(Check::Script)
        }
        Some(_) => {
            p.add(format!("{at}: 'condition' must be a _queryFilter string"));
            None
        }
    };
    let transform = match obj.get("transform") {
        None | Some(Value::Null) => None,
        Some(v) if is_script(v) => {
            script_of(v, mapping, &format!("{at}.transform"), p).map(Transform::Script)
        }
        Some(v) => parse_transform(v, &target, &at, p),
    };
    if p.list.len() > before {
        return None;
    }
    Some(PropertyMapping {
        source,
        target,
        default: obj.get("default").cloned(),
        condition,
        transform,
    })
}

fn parse_transform(
    v: &Value,
    target: &JsonPointer,
    at: &str,
    p: &mut Problems,
) -> Option<Transform> {
    match v.get("type").and_then(Value::as_str) {
        Some("template") => match v.get("source").and_then(Value::as_str) {
            Some(text) => match (Template::parse(text), template_escape(v, target)) {
                (Ok(template), Ok(escape)) => Some(Transform::Template { template, escape }),
                (Err(e), _) | (_, Err(e)) => {
                    p.add(format!("{at}: 'transform': {e}"));
                    None
                }
            },
            None => {
                p.add(format!(
                    "{at}: a template transform needs a 'source' string"
                ));
                None
            }
        },
        Some("lowercase") => Some(Transform::Lowercase),
        Some("uppercase") => Some(Transform::Uppercase),
        Some("trim") => Some(Transform::Trim),
        Some("map") => match v.get("values") {
            Some(Value::Object(values)) => Some(Transform::ValueMap {
                values: values.clone(),
                default: v.get("default").cloned(),
            }),
            _ => {
                p.add(format!("{at}: a map transform needs a 'values' object"));
                None
            }
        },
        Some(other) => {
            p.add(format!(
                "{at}: transform type '{other}' is unknown; use template, lowercase, uppercase, trim or map"
            ));
            None
        }
        None => {
            p.add(format!("{at}: 'transform' needs a 'type'"));
            None
        }
    }
}

/// A template's `escape`: `"dn"` or `"none"`; by default `dn` for the targets that hold an
/// LDAP entry's DN (`dn`, `__NAME__`), so a source value such as `a,ou=admins` stays one value.
fn template_escape(v: &Value, target: &JsonPointer) -> Result<Escape, String> {
    match v.get("escape") {
        None | Some(Value::Null) => Ok(match target.tokens() {
            [t] if t == "dn" || t == "__NAME__" => Escape::Dn,
            _ => Escape::Text,
        }),
        Some(Value::String(s)) if s == "dn" => Ok(Escape::Dn),
        Some(Value::String(s)) if s == "none" => Ok(Escape::Text),
        Some(other) => Err(format!("'escape' must be \"dn\" or \"none\", not {other}")),
    }
}

fn parse_correlation(v: Option<&Value>, mapping: &str, p: &mut Problems) -> Option<Correlation> {
    let v = v.filter(|v| !v.is_null())?;
    let one = match v {
        Value::Array(items) => match items.as_slice() {
            [] => return None,
            [one] => one,
            _ => {
                p.add("'correlationQuery' with several link qualifiers is not supported; only 'default'".into());
                return None;
            }
        },
        other => other,
    };
    let Some(obj) = one.as_object() else {
        p.add("'correlationQuery' must be an object or an array of objects".into());
        return None;
    };
    if let Some(q) = obj.get("linkQualifier").and_then(Value::as_str) {
        if q != DEFAULT_LINK_QUALIFIER {
            p.add(format!(
                "'correlationQuery' link qualifier '{q}' is not supported; only 'default'"
            ));
        }
    }
    if let Some(tree) = obj.get("expressionTree") {
        return parse_tree(tree, 0, p).map(Correlation::Tree);
    }
    if let Some(text) = obj.get("_queryFilter") {
        let Some(text) = text.as_str() else {
            p.add("'correlationQuery._queryFilter' must be a string".into());
            return None;
        };
        return match FilterTemplate::parse(text) {
            Ok(t) => Some(Correlation::Filter(t)),
            Err(e) => {
                p.add(format!("'correlationQuery._queryFilter': {e}"));
                None
            }
        };
    }
    if is_script(one) {
        return script_of(one, mapping, "correlationQuery", p).map(Correlation::Query);
    } else {
        p.add("'correlationQuery' needs an 'expressionTree' or a '_queryFilter'".into());
    }
    None
}

fn parse_tree(v: &Value, depth: usize, p: &mut Problems) -> Option<TreeNode> {
    if depth > MAX_TREE_DEPTH {
        p.add(format!(
            "'correlationQuery.expressionTree' is nested deeper than {MAX_TREE_DEPTH} levels"
        ));
        return None;
    }
    match v {
        Value::String(f) if !f.is_empty() => Some(TreeNode::Field(f.clone())),
        Value::Object(obj) if obj.len() == 1 => {
            let (key, items) = obj.iter().next()?;
            let Some(items) = items.as_array().filter(|i| !i.is_empty()) else {
                p.add(format!(
                    "'correlationQuery.expressionTree': '{key}' must be a non-empty array"
                ));
                return None;
            };
            let children: Vec<TreeNode> = items
                .iter()
                .filter_map(|i| parse_tree(i, depth + 1, p))
                .collect();
            match key.as_str() {
                "all" => Some(TreeNode::All(children)),
                "any" => Some(TreeNode::Any(children)),
                other => {
                    p.add(format!(
                        "'correlationQuery.expressionTree': '{other}' is not 'all' or 'any'"
                    ));
                    None
                }
            }
        }
        _ => {
            p.add(
                "'correlationQuery.expressionTree' nodes are field names or {\"all\"|\"any\": […]}"
                    .into(),
            );
            None
        }
    }
}

fn parse_policies(
    v: Option<&Value>,
    mapping: &str,
    p: &mut Problems,
) -> HashMap<Situation, Vec<Policy>> {
    let mut out: HashMap<Situation, Vec<Policy>> = HashMap::new();
    // Where each situation got a policy without a condition (later ones never apply).
    let mut unconditional: HashMap<Situation, usize> = HashMap::new();
    let items = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(_) => {
            p.add("'policies' must be an array".into());
            return out;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("policies[{i}]");
        let situation = match item.get("situation").and_then(Value::as_str) {
            Some(s) => match Situation::parse(s) {
                Some(s) => Some(s),
                None => {
                    p.add(format!("{at}: unknown situation '{s}'"));
                    None
                }
            },
            None => {
                p.add(format!("{at}: 'situation' is required"));
                None
            }
        };
        let mut action_script = None;
        let action = match item.get("action") {
            Some(Value::String(a)) => match Action::parse(a) {
                Some(a) => Some(a),
                None => {
                    p.add(format!("{at}: unknown action '{a}'"));
                    None
                }
            },
            Some(v) if is_script(v) => {
                action_script = script_of(v, mapping, &format!("{at}.action"), p);
                // Not used: the script decides.
                situation.map(Situation::default_action)
            }
            _ => {
                p.add(format!(
                    "{at}: 'action' is required (an action name or a script)"
                ));
                None
            }
        };
        let post_action = match item.get("postAction") {
            None | Some(Value::Null) => None,
            Some(v) if is_script(v) => script_of(v, mapping, &format!("{at}.postAction"), p),
            Some(_) => {
                p.add(format!("{at}: 'postAction' must be a script"));
                None
            }
        };
        let what = format!("{at}: 'condition'");
        // `Err(())`: a condition that is not valid (already reported).
        let condition: Result<Option<Check>, ()> = match item.get("condition") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(c)) => scoped_filter(c, &what, FilterScope::Policy, mapping, p)
                .map(|f| Some(Check::Filter(f)))
                .ok_or(()),
            Some(v) if is_script(v) => script_of(v, mapping, &format!("{at}.condition"), p)
                .map(|s| Some(Check::Script(s)))
                .ok_or(()),
            Some(v) => match v.get("_queryFilter").and_then(Value::as_str) {
                Some(c) => scoped_filter(c, &what, FilterScope::Policy, mapping, p)
                    .map(|f| Some(Check::Filter(f)))
                    .ok_or(()),
                None => {
                    p.add(format!(
                        "{what} must be a _queryFilter string or {{\"_queryFilter\": …}}"
                    ));
                    Err(())
                }
            },
        };
        let Ok(condition) = condition else {
            continue;
        };
        if let (Some(s), Some(a)) = (situation, action) {
            if let Some(first) = unconditional.get(&s) {
                p.add(format!(
                    "{at}: situation {} is already decided by policies[{first}], which has no \
                     condition",
                    s.as_str()
                ));
            }
            if condition.is_none() {
                unconditional.entry(s).or_insert(i);
            }
            out.entry(s).or_default().push(Policy {
                condition,
                action: a,
                action_script,
                post_action,
            });
        }
    }
    out
}

/// Sets `ptr` in `doc`, creating parent objects.
pub fn set_pointer(doc: &mut Value, ptr: &JsonPointer, value: Value) {
    let tokens = ptr.tokens();
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut cur = doc;
    for t in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        cur = map
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(map) = cur {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests;
