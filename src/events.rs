//! Change events between the object stores and the sync hub, so that neither side imports
//! the other: `managed/*` and `system/*` tell a [`ChangeHook`] of their committed writes
//! (implicit sync listens), and liveSync hands changed system objects to a [`ChangeSink`]
//! (the sync service pushes them through its mappings).
//!
//! A hook has two parts. [`ChangeHook::pending`] is asked *before* a write, for store writes
//! that record what the change will cause (implicit sync's queue rows); the object store
//! commits them in the same transaction as the change, so an acknowledged write never loses
//! its push, even to a crash. [`ChangeHook::on_change`] is told *after* the commit and
//! before the caller's answer, and must not block (it only starts work).
//!
//! Also shared by both ends of a push: IDM's retry policy of a failing change
//! ([`FailurePolicy`]: `syncFailureHandler` for liveSync, `queuedSync` for implicit sync)
//! and the dead-letter queue it may end in ([`dead_letter`]).

use serde_json::{Map, Value};

use crate::crest::{Caller, Operation, Request, Response};
use crate::repo::{Repo, WriteOp};

/// What a committed write did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One committed write of an object, as handed to a [`ChangeHook`].
/// `before`/`after` are the content as answered to the caller (so `_fields` and private
/// properties apply); `before` is known for deletes, and for updates and patches when a
/// hook asked for it ([`ChangeHook::wants_before`]).
pub struct Change<'a> {
    /// `managed/user`, `system/ldap/account`.
    pub resource: &'a str,
    pub id: &'a str,
    pub kind: ChangeKind,
    pub before: Option<&'a Map<String, Value>>,
    pub after: Option<&'a Map<String, Value>>,
    /// The request that made the write (its caller tells who wrote).
    pub request: &'a Request,
}

/// Told of every committed write of an object (implicit sync).
pub trait ChangeHook: Send + Sync {
    /// Store writes to commit together with a `kind` write of `resource/id` by `caller`
    /// (none by default). Called before the write; must not block.
    fn pending(
        &self,
        _resource: &str,
        _id: &str,
        _kind: ChangeKind,
        _caller: &Caller,
    ) -> Vec<WriteOp> {
        Vec::new()
    }

    /// Called after the store has the write and before the caller gets the answer: it must
    /// not block and cannot fail the write.
    fn on_change(&self, change: &Change<'_>);

    /// Whether [`Change::before`] of updates and patches is wanted: the writer then keeps
    /// the object it read for the write in [`Priors`] (no read more).
    fn wants_before(&self) -> bool {
        false
    }

    /// A write of one edge through an object's relationship sub-collection
    /// (`managed/user/<id>/roles`, `id` the edge's): what the audit records as activity.
    /// Sync does not act on these (the objects whose relationships changed are pushed
    /// through their own path), so nothing by default.
    fn on_relationship_change(&self, _change: &Change<'_>) {}
}

/// The objects one request's updates and patches replaced, by id, rendered as the answer
/// is: what [`notify_with_priors`] hands the hooks as [`Change::before`]. The writer fills
/// it from the read it makes for the write anyway.
#[derive(Default)]
pub struct Priors(std::sync::Mutex<std::collections::HashMap<String, Map<String, Value>>>);

impl Priors {
    /// Records the state of `id` before this request's first write of it.
    pub fn record(&self, id: &str, content: Map<String, Value>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_insert(content);
    }

    fn take(&self) -> std::collections::HashMap<String, Map<String, Value>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Pushes a changed source object through the mappings whose source is `resource`.
#[async_trait::async_trait]
pub trait ChangeSink: Send + Sync {
    async fn push(&self, resource: &str, id: &str) -> Result<(), String>;
}

/// The writes `answer` (a successful answer to `req`) reports: kind, id, content.
fn changes_of<'a>(
    req: &Request,
    answer: &'a Response,
) -> Vec<(ChangeKind, &'a str, &'a Map<String, Value>)> {
    match (&req.op, answer) {
        (_, Response::Created(r)) => vec![(ChangeKind::Create, &r.id, &r.content)],
        (Operation::Update { .. } | Operation::Patch { .. }, Response::Resource(r)) => {
            vec![(ChangeKind::Update, &r.id, &r.content)]
        }
        (Operation::Delete { .. }, Response::Resource(r)) => {
            vec![(ChangeKind::Delete, &r.id, &r.content)]
        }
        // Patch by query: the patched objects.
        (Operation::Action { .. }, Response::Action(Some(Value::Array(patched)))) => patched
            .iter()
            .filter_map(|obj| match (obj.get("_id").and_then(Value::as_str), obj) {
                (Some(id), Value::Object(content)) => Some((ChangeKind::Update, id, content)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// [`notify`], with the objects the updates and patches replaced as their `before`.
pub fn notify_with_priors(
    hook: &dyn ChangeHook,
    resource: &str,
    req: &Request,
    answer: &Response,
    priors: Option<&Priors>,
) {
    let Some(priors) = priors else {
        return notify(hook, resource, req, answer);
    };
    let priors = priors.take();
    for (kind, id, content) in changes_of(req, answer) {
        let (before, after) = match kind {
            ChangeKind::Delete => (Some(content), None),
            ChangeKind::Update => (priors.get(id), Some(content)),
            ChangeKind::Create => (None, Some(content)),
        };
        hook.on_change(&Change {
            resource,
            id,
            kind,
            before,
            after,
            request: req,
        });
    }
}

/// Tells `hook` of the writes `answer` (a successful answer to `req`) reports.
pub fn notify(hook: &dyn ChangeHook, resource: &str, req: &Request, answer: &Response) {
    for change in changes(resource, req, answer) {
        hook.on_change(&change);
    }
}

/// Tells `hook` of the edge writes `answer` to a relationship sub-collection request
/// (`resource` = `managed/user/<id>/roles`) reports.
pub fn notify_relationship(
    hook: &dyn ChangeHook,
    resource: &str,
    req: &Request,
    answer: &Response,
) {
    for change in changes(resource, req, answer) {
        hook.on_relationship_change(&change);
    }
}

/// The writes `answer` reports, without a `before` for updates (a delete's is the deleted
/// object).
fn changes<'a>(
    resource: &'a str,
    req: &'a Request,
    answer: &'a Response,
) -> impl Iterator<Item = Change<'a>> {
    changes_of(req, answer)
        .into_iter()
        .map(move |(kind, id, content)| {
            let (before, after) = match kind {
                ChangeKind::Delete => (Some(content), None),
                _ => (None, Some(content)),
            };
            Change {
                resource,
                id,
                kind,
                before,
                after,
                request: req,
            }
        })
}

/// For writes the store did not make (a connector's): records the hook's pending writes
/// in `repo` once the write is done, then tells the hook. A crash between the connector's
/// write and this record loses that push (reconciliation finds the difference).
pub async fn record_and_notify(
    repo: &dyn Repo,
    hook: &dyn ChangeHook,
    resource: &str,
    req: &Request,
    answer: &Response,
) {
    let mut ops = Vec::new();
    for (kind, id, _) in changes_of(req, answer) {
        ops.extend(hook.pending(resource, id, kind, &req.caller));
    }
    if !ops.is_empty() {
        for r in repo.batch(ops).await {
            if let Err(e) = r {
                tracing::error!(resource = %resource, error = %e,
                    "cannot record the implicit sync of a system object write");
            }
        }
    }
    notify(hook, resource, req, answer);
}

/// Store resource prefix of dead letters (IDM's): `synchronisation/deadLetterQueue/<name>`,
/// `<name>` being the provisioner (liveSync) or the mapping (implicit sync).
pub const DEAD_LETTER_QUEUE: &str = "synchronisation/deadLetterQueue";

/// What is done with a change that still fails after its retries (IDM's
/// `postRetryAction`).
#[derive(Debug, Clone, PartialEq)]
pub enum PostRetryAction {
    /// `logged-ignore` (IDM's default): logged, and left behind.
    LoggedIgnore,
    /// `dead-letter-queue`: stored under [`DEAD_LETTER_QUEUE`], and left behind.
    DeadLetterQueue,
    /// `{"script": …}`: the script runs with `syncFailure` and `failureCause` bound; the
    /// change is left behind when it returns, kept (retried) when it throws.
    Script(std::sync::Arc<crate::script::Script>),
}

impl PostRetryAction {
    /// Runs a `{"script": …}` action with IDM's bindings (`syncFailure`, `failureCause`);
    /// the reason when it throws or cannot run.
    pub async fn run_script(
        script: &crate::script::Script,
        engine: Option<&crate::script::ScriptEngine>,
        sync_failure: Value,
        cause: &str,
    ) -> Result<(), String> {
        let engine = engine.ok_or("the script engine is not running")?;
        let vars = crate::script::vars([
            ("syncFailure", sync_failure),
            ("failureCause", Value::String(cause.to_owned())),
        ]);
        engine
            .eval(script, vars, &[])
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// IDM's retry policy of a failing change: `syncFailureHandler` of a provisioner file
/// (liveSync) and the retry part of a mapping's `queuedSync` (implicit sync).
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    /// Retries before the post-retry action; `None` retries for ever (and never acts).
    pub max_retries: Option<u64>,
    pub post_retry: PostRetryAction,
}

impl FailurePolicy {
    /// IDM without a handler: retry for ever.
    pub const FOREVER: FailurePolicy = FailurePolicy {
        max_retries: None,
        post_retry: PostRetryAction::LoggedIgnore,
    };

    /// Reads `{"maxRetries", "postRetryAction"}`; `None` (or `null`) is `default`.
    /// `maxRetries` missing, `null` or negative retries for ever, as in IDM.
    pub fn parse(doc: Option<&Value>, default: FailurePolicy) -> Result<FailurePolicy, String> {
        let obj = match doc {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Object(o)) => o,
            Some(_) => return Err("must be an object {\"maxRetries\", \"postRetryAction\"}".into()),
        };
        let max_retries = match obj.get("maxRetries") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(n) if n < 0 => None,
                Some(n) => Some(n as u64),
                None => return Err(format!("maxRetries must be an integer, not {v}")),
            },
        };
        let post_retry = match obj.get("postRetryAction") {
            None | Some(Value::Null) => PostRetryAction::LoggedIgnore,
            Some(Value::String(s)) if s == "logged-ignore" => PostRetryAction::LoggedIgnore,
            Some(Value::String(s)) if s == "dead-letter-queue" => {
                PostRetryAction::DeadLetterQueue
            }
            Some(Value::Object(o)) if o.contains_key("script") => {
                let script = crate::script::parse_script(&o["script"], "postRetryAction.script")?;
                PostRetryAction::Script(std::sync::Arc::new(script))
            }
            Some(v) => {
                return Err(format!(
                    "postRetryAction must be \"logged-ignore\", \"dead-letter-queue\" or {{\"script\": …}}, not {v}"
                ))
            }
        };
        Ok(FailurePolicy {
            max_retries,
            post_retry,
        })
    }

    /// Whether a change that failed `failures` times has used up its retries.
    pub fn exhausted(&self, failures: u64) -> bool {
        self.max_retries.is_some_and(|n| failures > n)
    }
}

/// Stores a dead letter under `synchronisation/deadLetterQueue/<name>`; answers its id.
pub async fn dead_letter(
    repo: &dyn Repo,
    name: &str,
    record: Map<String, Value>,
) -> Result<String, crate::repo::RepoError> {
    let id = uuid::Uuid::new_v4().to_string();
    repo.create(
        &format!("{DEAD_LETTER_QUEUE}/{name}"),
        &id,
        record,
        Default::default(),
    )
    .await?;
    Ok(id)
}

/// Several hooks told of the same writes, in order (implicit sync, credential caches).
pub struct FanOut(pub Vec<std::sync::Arc<dyn ChangeHook>>);

impl ChangeHook for FanOut {
    fn pending(&self, resource: &str, id: &str, kind: ChangeKind, caller: &Caller) -> Vec<WriteOp> {
        self.0
            .iter()
            .flat_map(|h| h.pending(resource, id, kind, caller))
            .collect()
    }

    fn on_change(&self, change: &Change<'_>) {
        for h in &self.0 {
            h.on_change(change);
        }
    }

    fn wants_before(&self) -> bool {
        self.0.iter().any(|h| h.wants_before())
    }

    fn on_relationship_change(&self, change: &Change<'_>) {
        for h in &self.0 {
            h.on_relationship_change(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failure_policies_read_as_idm_does() {
        let d = FailurePolicy::FOREVER;
        let p = |v: Value| FailurePolicy::parse(Some(&v), FailurePolicy::FOREVER);
        let at_most = |n, post_retry| FailurePolicy {
            max_retries: Some(n),
            post_retry,
        };
        let table: Vec<(Value, Result<FailurePolicy, ()>)> = vec![
            (Value::Null, Ok(d.clone())),
            (json!({}), Ok(d.clone())),
            (
                json!({"maxRetries": -1, "postRetryAction": "dead-letter-queue"}),
                Ok(FailurePolicy {
                    max_retries: None,
                    post_retry: PostRetryAction::DeadLetterQueue,
                }),
            ),
            (
                json!({"maxRetries": 0}),
                Ok(at_most(0, PostRetryAction::LoggedIgnore)),
            ),
            (
                json!({"maxRetries": 5, "postRetryAction": "logged-ignore"}),
                Ok(at_most(5, PostRetryAction::LoggedIgnore)),
            ),
            (
                json!({"maxRetries": 2, "postRetryAction": "dead-letter-queue"}),
                Ok(at_most(2, PostRetryAction::DeadLetterQueue)),
            ),
            (json!({"maxRetries": "5"}), Err(())),
            (json!({"maxRetries": 1.5}), Err(())),
            (
                json!({"maxRetries": 1, "postRetryAction": "retry"}),
                Err(()),
            ),
            // A script without a source or file, and a Groovy one, are refused.
            (
                json!({"maxRetries": 1, "postRetryAction": {"script": {"type": "text/javascript"}}}),
                Err(()),
            ),
            (
                json!({"maxRetries": 1, "postRetryAction": {"script": {"type": "groovy", "source": "1"}}}),
                Err(()),
            ),
            (json!(5), Err(())),
        ];
        for (doc, want) in table {
            assert_eq!(p(doc.clone()).map_err(|_| ()), want, "{doc}");
        }
        assert_eq!(FailurePolicy::parse(None, d.clone()), Ok(d.clone()));
        let scripted = p(json!({"maxRetries": 1, "postRetryAction": {"script": {
            "type": "text/javascript", "source": "logger.warn('{}', failureCause)"}}}))
        .unwrap();
        assert!(matches!(scripted.post_retry, PostRetryAction::Script(_)));
        // maxRetries 0: the first failure acts; 2: the third does.
        assert!(at_most(0, PostRetryAction::LoggedIgnore).exhausted(1));
        assert!(!at_most(2, PostRetryAction::LoggedIgnore).exhausted(2));
        assert!(at_most(2, PostRetryAction::LoggedIgnore).exhausted(3));
        assert!(!d.exhausted(u64::MAX));
    }
}
