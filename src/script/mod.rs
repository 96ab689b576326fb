//! IDM's script service: JavaScript (QuickJS through `rquickjs`) wherever IDM runs scripts.
//!
//! * [`spec`]: script values in config (`{"type": "text/javascript", "source"|"file", …}`).
//! * [`ScriptEngine`]: a bounded pool of threads, each with its own runtime; scripts never
//!   run on the proxy's request threads. Compiled code is cached per runtime by content
//!   hash; each invocation has a time limit and each runtime a memory limit.
//! * [`api`]: `openidm.*` through the router, `identityServer`, `logger`.
//! * [`handler`]: `/openidm/script?_action=compile` and `eval`.
//!
//! A script that calls `openidm.*` from a pool thread may cause another script to run (a
//! managed object's `onCreate`, …): that one runs at once on the same thread, on a runtime
//! of the next nesting level, so nested scripts never wait for a pool thread.

pub mod api;
pub mod endpoint;
pub mod error;
pub mod files;
pub mod filters;
pub mod handler;
pub mod modules;
pub mod runner;
pub mod spec;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use api::{Host, Secrets};
pub use error::{ScriptError, ScriptErrorKind};
pub use runner::{Limits, Outcome};
pub use spec::{is_script, parse_script, Script, ScriptSource};

use files::ScriptFiles;
use runner::Runner;

/// Scripts may call scripts (through `openidm.*` and hooks) this deep.
pub const MAX_NESTING: usize = 8;

/// Settings of the engine (gateway.json `scripting`, a gateway extra).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Pool threads (each with one runtime per nesting level in use).
    pub threads: usize,
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8),
            limits: Limits::default(),
        }
    }
}

type Job = Box<dyn FnOnce(&Worker) + Send>;

/// The script engine: shared by every place that runs scripts.
pub struct ScriptEngine {
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Sender<Job>,
    /// Bounds the jobs waiting for a thread: callers wait (asynchronously) beyond it.
    permits: Arc<tokio::sync::Semaphore>,
    _io: Option<tokio::runtime::Runtime>,
}

/// What every pool thread shares.
pub struct Shared {
    pub host: Arc<Host>,
    pub files: ScriptFiles,
    pub config: EngineConfig,
}

thread_local! {
    /// Set on pool threads: the worker whose runtimes nested scripts use.
    static WORKER: RefCell<Option<Rc<WorkerState>>> = const { RefCell::new(None) };
}

struct WorkerState {
    shared: Arc<Shared>,
    /// One runner per nesting level, made when first needed.
    runners: RefCell<Vec<Rc<RefCell<Option<Runner>>>>>,
    depth: Cell<usize>,
}

/// A pool thread's view, handed to jobs.
pub struct Worker {
    state: Rc<WorkerState>,
}

impl ScriptEngine {
    /// Starts the pool. `project` is the directory `file` scripts are relative to (the
    /// parent of the conf directory); `on_file` is told when a script file is reloaded or
    /// rejected.
    pub fn start(
        config: EngineConfig,
        project: PathBuf,
        on_file: files::OnChange,
    ) -> Result<Arc<Self>, String> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("script-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the script runtime: {e}"))?;
        let host = Arc::new(Host::new(io.handle().clone(), project.clone()));
        let shared = Arc::new(Shared {
            host,
            files: ScriptFiles::new(project, on_file),
            config,
        });
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..config.threads.max(1) {
            let rx = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("script-{i}"))
                .stack_size(8 * 1024 * 1024)
                .spawn(move || {
                    let state = Rc::new(WorkerState {
                        shared,
                        runners: RefCell::new(Vec::new()),
                        depth: Cell::new(0),
                    });
                    WORKER.with(|w| *w.borrow_mut() = Some(state.clone()));
                    let worker = Worker { state };
                    while let Ok(job) = rx.recv() {
                        // A panic in one job must not take the thread with it.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&worker)));
                    }
                })
                .map_err(|e| format!("cannot start a script thread: {e}"))?;
        }
        Ok(Arc::new(Self {
            shared,
            jobs: tx,
            permits: Arc::new(tokio::sync::Semaphore::new(config.threads.max(1) * 64)),
            _io: Some(io),
        }))
    }

    pub fn host(&self) -> &Arc<Host> {
        &self.shared.host
    }

    pub fn config(&self) -> EngineConfig {
        self.shared.config
    }

    /// Runs `script` with `vars` bound and reads `read_back` after it.
    pub async fn eval(
        &self,
        script: &Script,
        vars: Vec<(String, Value)>,
        read_back: &[&str],
    ) -> Result<Outcome, ScriptError> {
        let script = script.clone();
        let read_back: Vec<String> = read_back.iter().map(|s| (*s).to_owned()).collect();
        self.run(move |w| {
            let vars: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let read_back: Vec<&str> = read_back.iter().map(String::as_str).collect();
            w.eval(&script, &vars, &read_back)
        })
        .await?
    }

    /// Runs `f` on a pool thread (several scripts in one hop: a mapping's transforms for
    /// one object). On a pool thread already (a nested call) it runs at once, here.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ScriptError>
    where
        T: Send + 'static,
        F: FnOnce(&Worker) -> T + Send + 'static,
    {
        if let Some(state) = WORKER.with(|w| w.borrow().clone()) {
            return Ok(f(&Worker { state }));
        }
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ScriptError::internal("engine", "the script engine has stopped"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |w: &Worker| {
                let _ = tx.send(f(w));
            }))
            .map_err(|_| ScriptError::internal("engine", "the script engine has stopped"))?;
        rx.await
            .map_err(|_| ScriptError::internal("engine", "a script thread failed (a bug)"))
    }

    /// Runs `f` on a pool thread and waits, from a thread that is not async (a config
    /// check); on a pool thread it runs at once.
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T, ScriptError>
    where
        T: Send + 'static,
        F: FnOnce(&Worker) -> T + Send + 'static,
    {
        if let Some(state) = WORKER.with(|w| w.borrow().clone()) {
            return Ok(f(&Worker { state }));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .send(Box::new(move |w: &Worker| {
                let _ = tx.send(f(w));
            }))
            .map_err(|_| ScriptError::internal("engine", "the script engine has stopped"))?;
        rx.recv()
            .map_err(|_| ScriptError::internal("engine", "a script thread failed (a bug)"))
    }
}

impl Drop for ScriptEngine {
    fn drop(&mut self) {
        // The engine may be dropped on an async thread, where a runtime may not block.
        if let Some(io) = self._io.take() {
            io.shutdown_background();
        }
    }
}

impl Worker {
    /// Reads and compiles a script file as it is now (the compile action).
    pub fn compile_file(&self, file: &std::path::Path) -> Result<(), String> {
        self.state.shared.files.check(file)
    }

    /// Runs one script on this thread, at the current nesting level.
    pub fn eval(
        &self,
        script: &Script,
        vars: &[(&str, &Value)],
        read_back: &[&str],
    ) -> Result<Outcome, ScriptError> {
        let state = &self.state;
        let (text, hash) = match &script.source {
            ScriptSource::Inline(text, hash) => (text.clone(), *hash),
            ScriptSource::File(file) => state.shared.files.text(&script.name, file)?,
        };
        let depth = state.depth.get();
        if depth >= MAX_NESTING {
            return Err(ScriptError::internal(
                &script.name,
                format!(
                    "scripts nested more than {MAX_NESTING} deep (a script that triggers itself?)"
                ),
            ));
        }
        let slot = {
            let mut runners = state.runners.borrow_mut();
            while runners.len() <= depth {
                runners.push(Rc::new(RefCell::new(None)));
            }
            runners[depth].clone()
        };
        let mut guard = slot.borrow_mut();
        if guard.as_ref().is_none_or(Runner::is_poisoned) {
            let shared = state.shared.clone();
            *guard = Some(
                Runner::new(state.shared.config.limits, &move |ctx, current| {
                    api::install(ctx, current, &shared.host)?;
                    modules::install(ctx, shared.clone())
                })
                .map_err(|e| ScriptError::internal(&script.name, e))?,
            );
        }
        let Some(runner) = guard.as_mut() else {
            return Err(ScriptError::internal(&script.name, "no runtime"));
        };
        state.depth.set(depth + 1);
        let out = runner.run(&script.name, &text, hash, &script.globals, vars, read_back);
        state.depth.set(depth);
        if let Err(e) = &out {
            log_failure(e);
        }
        out
    }
}

/// Failures are the caller's to report (with the object and hook they concern); here
/// only at debug level.
fn log_failure(e: &ScriptError) {
    tracing::debug!(script = %e.script, line = ?e.line, error = %e, "script failed");
}

/// The variables of a hook, in IDM's names.
pub fn vars<const N: usize>(pairs: [(&str, Value); N]) -> Vec<(String, Value)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The `context` binding scripts see: who called, as IDM's security context shows it.
pub fn context_of(caller: &crate::crest::Caller) -> Value {
    let mut security = Map::new();
    security.insert("authenticationId".into(), caller.user.clone().into());
    security.insert(
        "authorization".into(),
        serde_json::json!({
            "id": caller.user,
            "component": caller.component,
            "roles": caller.roles,
        }),
    );
    serde_json::json!({ "security": security, "current": {"name": "script"} })
}

#[cfg(test)]
mod tests;
