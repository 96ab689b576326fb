//! One QuickJS runtime and context: compiles scripts (cached by content hash), binds a
//! hook's variables, runs the script under its time limit and turns what it throws into a
//! [`ScriptError`]. A runner belongs to one thread (QuickJS is single-threaded); the pool
//! gives each of its threads its own.
//!
//! IDM gives every invocation a fresh scope. Here the context is reused (a new one costs
//! far more than a one-line transform), so each invocation is made to look fresh:
//! * the text runs as a block (`{…}`), so top-level `let`/`const`/`class` are scoped to
//!   the run, while the value of the last expression is still the result, as in IDM;
//! * the hook's variables are added before the run and removed after it;
//! * globals a script declares with `var` or assigns without declaring are set back to
//!   `undefined` after the run, so nothing one object's run left behind is seen by the
//!   next object's.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{qjs, Context, Ctx, Object, Persistent, Runtime, Value};
use serde_json::{Map, Value as Json};

use super::error::{ScriptError, ScriptErrorKind};

/// Limits of one runtime and of each invocation on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock time of one invocation, including the `openidm.*` calls it makes.
    pub time: Duration,
    /// Bytes the runtime may allocate (all its scripts' objects and compiled code).
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(5),
            memory: 64 * 1024 * 1024,
        }
    }
}

/// Compiled scripts kept per runtime; past this the cache starts over.
const COMPILED_CACHE_MAX: usize = 2048;

/// Installs the host API (`openidm`, `logger`, …) on a new context; called once per runtime.
pub type Installer = dyn for<'js> Fn(&Ctx<'js>, &CurrentScript) -> rquickjs::Result<()>;

/// The name of the script running now, for the host API's log events and errors.
#[derive(Clone, Default)]
pub struct CurrentScript(Rc<RefCell<Arc<str>>>);

impl CurrentScript {
    pub fn get(&self) -> Arc<str> {
        self.0.borrow().clone()
    }

    fn set(&self, name: Arc<str>) {
        *self.0.borrow_mut() = name;
    }
}

/// What a run gives back: the script's value and the variables asked for after the run
/// (hooks such as `onCreate` change `target` or `object` in place).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub value: Json,
    pub vars: Map<String, Json>,
}

pub struct Runner {
    // Field order: the context and cached code go before the runtime that owns them.
    compiled: HashMap<u64, Persistent<Value<'static>>>,
    ctx: Context,
    rt: Runtime,
    limits: Limits,
    epoch: Instant,
    /// Nanoseconds since `epoch` after which the interrupt handler stops the script; 0: none.
    deadline: Arc<AtomicU64>,
    current: CurrentScript,
    /// Global property names the context had before any script ran, plus the host API.
    baseline: HashSet<String>,
    /// Globals scripts created (`var x` at top level, assignment to an undeclared name).
    script_globals: HashSet<String>,
    /// Enumerable own properties of the global object after the last run (every global a
    /// script can create — `var`, a function declaration, an undeclared assignment — is
    /// enumerable; counting them walks no names, so it is cheap enough for every run).
    global_count: usize,
    /// Set when a run was interrupted or ran out of memory: the pool replaces the runner.
    poisoned: bool,
}

impl Runner {
    pub fn new(limits: Limits, install: &Installer) -> Result<Self, String> {
        let rt = Runtime::new().map_err(|e| format!("cannot start a JavaScript runtime: {e}"))?;
        rt.set_memory_limit(limits.memory);
        rt.set_max_stack_size(512 * 1024);
        let epoch = Instant::now();
        let deadline = Arc::new(AtomicU64::new(0));
        let d = deadline.clone();
        rt.set_interrupt_handler(Some(Box::new(move || {
            let limit = d.load(Ordering::Relaxed);
            limit != 0 && epoch.elapsed().as_nanos() as u64 > limit
        })));
        let ctx =
            Context::full(&rt).map_err(|e| format!("cannot start a JavaScript context: {e}"))?;
        let current = CurrentScript::default();
        let (baseline, global_count) = ctx.with(|ctx| -> Result<_, String> {
            install(&ctx, &current).map_err(|e| format!("cannot install the script API: {e}"))?;
            let names = global_names(&ctx).map_err(|e| e.to_string())?;
            Ok((
                names.into_iter().collect::<HashSet<_>>(),
                ctx.globals().len(),
            ))
        })?;
        Ok(Self {
            compiled: HashMap::new(),
            ctx,
            rt,
            limits,
            epoch,
            deadline,
            current,
            baseline,
            script_globals: HashSet::new(),
            global_count,
            poisoned: false,
        })
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes the runtime holds now.
    pub fn memory_used(&self) -> i64 {
        self.rt.memory_usage().memory_used_size
    }

    /// Runs `text` (named `name` in messages; `hash` its [`super::spec::content_hash`])
    /// with `globals` and `vars` bound, and reads back `read_back` afterwards.
    pub fn run(
        &mut self,
        name: &Arc<str>,
        text: &str,
        hash: u64,
        globals: &Map<String, Json>,
        vars: &[(&str, &Json)],
        read_back: &[&str],
    ) -> Result<Outcome, ScriptError> {
        self.current.set(name.clone());
        let limit = self.epoch.elapsed() + self.limits.time;
        self.deadline
            .store(limit.as_nanos() as u64, Ordering::Relaxed);
        let mut result = self.run_inner(name, text, hash, globals, vars, read_back);
        self.deadline.store(0, Ordering::Relaxed);
        if let Err(e) = &mut result {
            // When even the "out of memory" error cannot be allocated QuickJS throws
            // nothing useful; the runtime's usage tells.
            if e.kind == ScriptErrorKind::Runtime
                && self.memory_used() as usize >= self.limits.memory / 4 * 3
            {
                e.kind = ScriptErrorKind::Memory(self.limits.memory);
                e.message = "out of memory".to_owned();
            }
            if matches!(
                e.kind,
                ScriptErrorKind::Timeout(_) | ScriptErrorKind::Memory(_)
            ) {
                self.poisoned = true;
            }
        }
        result
    }

    fn run_inner(
        &mut self,
        name: &Arc<str>,
        text: &str,
        hash: u64,
        globals: &Map<String, Json>,
        vars: &[(&str, &Json)],
        read_back: &[&str],
    ) -> Result<Outcome, ScriptError> {
        let limits = self.limits;
        let compiled = &mut self.compiled;
        let script_globals = &mut self.script_globals;
        let baseline = &self.baseline;
        let global_count = &mut self.global_count;
        self.ctx.with(|ctx| {
            let err = |e: rquickjs::Error| ScriptError::from_js(&ctx, name, e, limits);
            let code = match compiled.get(&hash) {
                Some(code) => code.clone().restore(&ctx).map_err(err)?,
                None => {
                    let code = compile(&ctx, name, text).map_err(|e| within(err(e), text))?;
                    if compiled.len() >= COMPILED_CACHE_MAX {
                        compiled.clear();
                    }
                    compiled.insert(hash, Persistent::save(&ctx, code.clone()));
                    code
                }
            };
            let g = ctx.globals();
            let mut bound: Vec<&str> = Vec::with_capacity(globals.len() + vars.len());
            for (k, v) in globals
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .chain(vars.iter().copied())
            {
                g.set(k, to_js(&ctx, v).map_err(err)?).map_err(err)?;
                bound.push(k);
            }
            let ran = run_compiled(&ctx, &code);
            let out = match ran {
                Ok(value) => {
                    let value = to_json(&ctx, value).map_err(err);
                    let mut vars = Map::new();
                    for k in read_back {
                        let v: Value = g.get(*k).map_err(err)?;
                        vars.insert((*k).to_owned(), to_json(&ctx, v).map_err(err)?);
                    }
                    value.map(|value| Outcome { value, vars })
                }
                Err(e) => Err(err(e)),
            };
            for k in &bound {
                let _ = g.remove(*k);
            }
            reset_script_globals(&ctx, &g, baseline, script_globals, global_count);
            out
        })
    }
}

/// Compiles `text` as global code in a block, without running it.
pub(super) fn compile<'js>(ctx: &Ctx<'js>, name: &str, text: &str) -> rquickjs::Result<Value<'js>> {
    // `{` on the first line keeps line numbers; the newline ends a trailing `//` comment.
    let src = CString::new(format!("{{{text}\n}}"))?;
    let file = CString::new(name.replace('\0', ""))?;
    let flags = (qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32;
    // SAFETY: `src` is NUL-terminated and outlives the call (QuickJS copies what it keeps);
    // the returned value is owned by us and handed to `Value::from_raw`, which frees it.
    unsafe {
        let v = qjs::JS_Eval(
            ctx.as_raw().as_ptr(),
            src.as_ptr(),
            src.as_bytes().len() as _,
            file.as_ptr(),
            flags,
        );
        if qjs::JS_VALUE_GET_NORM_TAG(v) == qjs::JS_TAG_EXCEPTION {
            return Err(rquickjs::Error::Exception);
        }
        Ok(Value::from_raw(ctx.clone(), v))
    }
}

/// A compile error at the closing brace [`compile`] adds (an unexpected end of the text)
/// is on the text's last line.
fn within(mut e: ScriptError, text: &str) -> ScriptError {
    let last = text.lines().count().max(1) as u32;
    if let Some(line) = e.line.as_mut() {
        *line = (*line).min(last);
    }
    e
}

/// Runs compiled global code; the value of its last expression is the result.
pub(super) fn run_compiled<'js>(ctx: &Ctx<'js>, code: &Value<'js>) -> rquickjs::Result<Value<'js>> {
    // SAFETY: JS_EvalFunction consumes one reference to the compiled code, so it gets a
    // duplicate and `code` (still cached) keeps its own. The result is owned by us.
    unsafe {
        let raw = ctx.as_raw().as_ptr();
        let v = qjs::JS_EvalFunction(raw, qjs::JS_DupValue(raw, code.as_raw()));
        if qjs::JS_VALUE_GET_NORM_TAG(v) == qjs::JS_TAG_EXCEPTION {
            return Err(rquickjs::Error::Exception);
        }
        Ok(Value::from_raw(ctx.clone(), v))
    }
}

/// Compiles `text` on a runtime of this thread kept for the purpose: the check made when a
/// config that holds a script is loaded.
pub fn check_syntax(name: &str, text: &str) -> Result<(), ScriptError> {
    thread_local! {
        static CHECKER: RefCell<Option<(Context, Runtime)>> = const { RefCell::new(None) };
    }
    CHECKER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let rt = Runtime::new().map_err(|e| ScriptError::internal(name, e.to_string()))?;
            rt.set_memory_limit(16 * 1024 * 1024);
            let ctx = Context::full(&rt).map_err(|e| ScriptError::internal(name, e.to_string()))?;
            *slot = Some((ctx, rt));
        }
        let Some((ctx, _)) = slot.as_ref() else {
            return Ok(());
        };
        let name: Arc<str> = Arc::from(name);
        ctx.with(|ctx| {
            compile(&ctx, &name, text).map(drop).map_err(|e| {
                within(
                    ScriptError::from_js(&ctx, &name, e, Limits::default()),
                    text,
                )
            })
        })
    })
}

/// A JSON value as a JavaScript value (through QuickJS's own JSON parser: one call).
pub fn to_js<'js>(ctx: &Ctx<'js>, v: &Json) -> rquickjs::Result<Value<'js>> {
    match v {
        Json::Null => Ok(Value::new_null(ctx.clone())),
        Json::Bool(b) => Ok(Value::new_bool(ctx.clone(), *b)),
        Json::String(s) => rquickjs::String::from_str(ctx.clone(), s).map(|s| s.into_value()),
        _ => ctx.json_parse(v.to_string()),
    }
}

/// A JavaScript value as JSON; `undefined` and functions become `null`.
pub fn to_json<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> rquickjs::Result<Json> {
    if v.is_undefined() || v.is_null() || v.is_function() {
        return Ok(Json::Null);
    }
    if let Some(b) = v.as_bool() {
        return Ok(Json::Bool(b));
    }
    if let Some(s) = v.as_string() {
        return Ok(Json::String(s.to_string()?));
    }
    match ctx.json_stringify(v)? {
        Some(text) => serde_json::from_str(&text.to_string()?)
            .map_err(|e| rquickjs::Error::new_from_js_message("value", "JSON", e.to_string())),
        None => Ok(Json::Null),
    }
}

fn global_names(ctx: &Ctx<'_>) -> rquickjs::Result<Vec<String>> {
    let names: Vec<String> = ctx.eval("Object.getOwnPropertyNames(globalThis)")?;
    Ok(names)
}

/// Sets the globals scripts created back to `undefined` (a `var` cannot be deleted; an
/// undeclared assignment can, and is).
fn reset_script_globals<'js>(
    ctx: &Ctx<'js>,
    g: &Object<'js>,
    baseline: &HashSet<String>,
    script_globals: &mut HashSet<String>,
    global_count: &mut usize,
) {
    let count = g.len();
    if count == *global_count && script_globals.is_empty() {
        return; // the common case: the script made no global
    }
    if count != *global_count {
        if let Ok(names) = global_names(ctx) {
            script_globals.extend(names.into_iter().filter(|n| !baseline.contains(n)));
        }
    }
    for name in script_globals.iter() {
        if g.remove(name.as_str()).is_err() {
            let _ = ctx.catch();
        }
        if g.contains_key(name.as_str()).unwrap_or(false) {
            let _ = g.set(name.as_str(), Value::new_undefined(ctx.clone()));
        }
    }
    *global_count = g.len();
}
