//! What the REST handler and the scheduler share: the live systems, the stored liveSync
//! tokens, and the push of changed system objects through their mappings.
//!
//! liveSync of `system/<name>/<type>`:
//! * The token lives in the store as IDM keeps it, `synchronisation/pooledSyncStage/
//!   SYSTEM<NAME><TYPE>` with `connectorData.syncToken`.
//! * The first run only records the connector's latest token (IDM does the same: changes
//!   made before liveSync was first run are reconciliation's job).
//! * Later runs read changes after the token in batches, push each changed object through
//!   every mapping whose source is that object type and whose `enableSync` is on (the
//!   reconciliation engine's one-object path), and store the batch's token after the batch.
//! * A change whose push fails is handled by the provisioner's `syncFailureHandler`, as in
//!   IDM: without one (or with `maxRetries` missing or negative) the run stops *before* the
//!   token moves past the change, and every later run retries it (one try per run); with
//!   `maxRetries: N` the run stops the same way for the first N retries, and then the
//!   change is logged (`logged-ignore`) or stored in the dead-letter queue
//!   (`dead-letter-queue`, `synchronisation/deadLetterQueue/<provisioner>`) and the run
//!   goes on past it. The failures so far are kept with the token
//!   (`syncFailure: {uid, failures, lastError}`), so they count across runs and restarts.
//!   Pushes are idempotent, so changes before the failing one, pushed again by the next
//!   run, are harmless.
//! * Runs of one object type are serialised (a scheduled and a manual run never overlap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::crest::ResourceError;
use crate::events::{dead_letter, ChangeHook, ChangeSink, FailurePolicy, PostRetryAction};
use crate::metrics::Metrics;
use crate::repo::{Repo, WriteOptions};

use super::provisioner::ObjectType;
use super::{System, Systems};

/// Store resource of liveSync tokens (IDM's name).
pub const TOKENS: &str = "synchronisation/pooledSyncStage";
/// Changes asked of a connector per batch.
pub const SYNC_BATCH: usize = 500;

/// The live systems.
pub type SystemsSource = Arc<dyn Fn() -> Arc<Systems> + Send + Sync>;

pub struct SystemService {
    systems: SystemsSource,
    repo: Arc<dyn Repo>,
    metrics: Arc<Metrics>,
    /// Told of REST writes (implicit sync), as for managed objects.
    pub(super) hook: Option<Arc<dyn ChangeHook>>,
    sink: OnceLock<Arc<dyn ChangeSink>>,
    /// Runs `syncFailureHandler` scripts.
    engine: OnceLock<Arc<crate::script::ScriptEngine>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SystemService {
    pub fn new(systems: SystemsSource, repo: Arc<dyn Repo>, metrics: Arc<Metrics>) -> Self {
        Self {
            systems,
            repo,
            metrics,
            hook: None,
            sink: OnceLock::new(),
            engine: OnceLock::new(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `syncFailureHandler` scripts on `engine`.
    pub fn set_engine(&self, engine: Arc<crate::script::ScriptEngine>) {
        let _ = self.engine.set(engine);
    }

    pub fn with_hook(mut self, hook: Arc<dyn ChangeHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Where liveSync pushes changes (set once, after the router exists).
    pub fn set_sink(&self, sink: Arc<dyn ChangeSink>) {
        let _ = self.sink.set(sink);
    }

    /// The store (liveSync tokens, and the records of REST writes' pushes).
    pub fn repo(&self) -> &dyn Repo {
        self.repo.as_ref()
    }

    pub fn systems(&self) -> Arc<Systems> {
        (self.systems)()
    }

    /// An enabled system, or a 404 naming it.
    pub fn system(&self, name: &str) -> Result<Arc<System>, ResourceError> {
        let systems = self.systems();
        match systems.get(name) {
            Some(s) if s.config.enabled => Ok(s.clone()),
            Some(_) => Err(ResourceError::not_found(format!(
                "System '{name}' is disabled (enabled is false in provisioner.openicf-{name}.json)"
            ))),
            None => Err(ResourceError::not_found(format!(
                "System '{name}' is not configured (no conf/provisioner.openicf-{name}.json)"
            ))),
        }
    }

    /// An enabled system and one of its object types, or a 404 naming what is missing.
    pub fn object_type(
        &self,
        system: &str,
        type_name: &str,
    ) -> Result<(Arc<System>, Arc<ObjectType>), ResourceError> {
        let sys = self.system(system)?;
        let class = sys.config.object_type(type_name).cloned().ok_or_else(|| {
            ResourceError::not_found(format!(
                "Object type '{type_name}' is not defined for system '{system}'"
            ))
        })?;
        Ok((sys, class))
    }

    /// `system/ldap/account` → (`ldap`, `account`).
    pub fn split_source(source: &str) -> Result<(&str, &str), ResourceError> {
        match source.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
            ["system", name, type_name] => Ok((name, type_name)),
            _ => Err(ResourceError::bad_request(format!(
                "The source '{source}' is not a system object type (system/<name>/<type>)"
            ))),
        }
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Runs one connector operation of `sys` under its `operationTimeout`, counted and timed
    /// in `idm_gateway_connector_operation*{system, operation}`.
    pub async fn call<T>(
        &self,
        sys: &System,
        operation: &'static str,
        resource: &str,
        call: impl std::future::Future<Output = super::connector::ConnectorResult<T>>,
    ) -> Result<T, ResourceError> {
        let started = std::time::Instant::now();
        let result = with_timeout(sys.config.timeout(operation), resource, call).await;
        let name = sys.config.name.as_str();
        self.metrics
            .connector_duration
            .with_label_values(&[name, operation])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => std::borrow::Cow::Borrowed("ok"),
            Err(e) => std::borrow::Cow::Owned(e.code.to_string()),
        };
        self.metrics
            .connector_operations
            .with_label_values(&[name, operation, &outcome])
            .inc();
        result
    }

    /// Runs liveSync of one object type; answers the stored token object.
    pub async fn live_sync(&self, system: &str, type_name: &str) -> Result<Value, ResourceError> {
        let (sys, class) = self.object_type(system, type_name)?;
        let id = token_id(system, type_name);
        let lock = self.lock(&id);
        let _one_at_a_time = lock.lock().await;
        let resource = format!("system/{system}/{type_name}");
        let stored = self.repo.read(TOKENS, &id).await?;
        let token = stored
            .as_ref()
            .and_then(|s| s.content.get("connectorData"))
            .and_then(|c| c.get("syncToken"))
            .filter(|t| !t.is_null())
            .cloned();
        let mut failure = stored
            .as_ref()
            .and_then(|s| s.content.get("syncFailure"))
            .and_then(SyncFailure::of);
        let mut rev = stored.map(|s| s.rev);
        let Some(mut current) = token else {
            let latest = self
                .call(
                    &sys,
                    "SYNC",
                    &resource,
                    sys.connector.latest_sync_token(&class),
                )
                .await?;
            return self.save_token(&id, rev, latest, None).await;
        };
        let policy = FailurePolicy::parse(
            sys.config.raw.get("syncFailureHandler"),
            FailurePolicy::FOREVER,
        )
        .unwrap_or(FailurePolicy::FOREVER);
        let mut pushed = 0usize;
        let mut given_up = 0usize;
        loop {
            let batch = self
                .call(
                    &sys,
                    "SYNC",
                    &resource,
                    sys.connector.sync(&class, &current, SYNC_BATCH),
                )
                .await?;
            let n = batch.deltas.len();
            for delta in &batch.deltas {
                let (uid, operation) = match delta {
                    super::connector::SyncDelta::CreateOrUpdate(o) => {
                        (o.uid.as_str(), "CREATE_OR_UPDATE")
                    }
                    super::connector::SyncDelta::Delete(uid) => (uid.as_str(), "DELETE"),
                };
                let Err(error) = self.push(&resource, uid).await else {
                    pushed += 1;
                    continue;
                };
                let failures = match &failure {
                    Some(f) if f.uid == uid => f.failures + 1,
                    _ => 1,
                };
                if !policy.exhausted(failures) {
                    let f = SyncFailure {
                        uid: uid.to_owned(),
                        failures,
                        last_error: error.clone(),
                    };
                    tracing::error!(source = %resource, id = %uid, failures, error = %error,
                        "liveSync stopped: a change could not be pushed; the next run retries it");
                    self.save_token(&id, rev, current, Some(&f)).await?;
                    return Err(ResourceError::internal(format!(
                        "liveSync of {resource} stopped at object '{uid}' (failure {failures}): {error}; the token was not moved past it, so the next liveSync retries it"
                    )));
                }
                self.give_up(
                    &sys.config.name,
                    type_name,
                    &current,
                    uid,
                    operation,
                    failures,
                    &error,
                    &policy.post_retry,
                )
                .await?;
                failure = None;
                given_up += 1;
            }
            let answer = self.save_token(&id, rev, batch.token.clone(), None).await?;
            rev = answer
                .get("_rev")
                .and_then(Value::as_str)
                .map(str::to_owned);
            failure = None;
            current = batch.token;
            if n < SYNC_BATCH {
                tracing::info!(source = %resource, changes = pushed, given_up, "liveSync done");
                return Ok(answer);
            }
        }
    }

    /// The post-retry action of a change whose retries are used up; the run goes on.
    #[allow(clippy::too_many_arguments)]
    async fn give_up(
        &self,
        system: &str,
        type_name: &str,
        token: &Value,
        uid: &str,
        operation: &str,
        failures: u64,
        error: &str,
        action: &PostRetryAction,
    ) -> Result<(), ResourceError> {
        match action {
            PostRetryAction::Script(script) => {
                let failure = json!({
                    "token": token,
                    "systemIdentifier": system,
                    "objectType": type_name,
                    "uid": uid,
                    "failedRecord": {"uid": uid, "operation": operation},
                    "failures": failures,
                });
                let engine = self.engine.get().map(Arc::as_ref);
                PostRetryAction::run_script(script, engine, failure, error)
                    .await
                    .map_err(|e| {
                        tracing::error!(system = %system, id = %uid, error = %e,
                            "the syncFailureHandler script failed; liveSync stops before the change");
                        ResourceError::internal(format!(
                            "liveSync of system/{system}/{type_name}: the postRetryAction script failed on '{uid}'; the next liveSync retries the change"
                        ))
                    })?;
                tracing::error!(system = %system, object_type = %type_name, id = %uid,
                    failures, error = %error,
                    "liveSync gave up on a change after its retries; the postRetryAction script ran");
            }
            PostRetryAction::LoggedIgnore => {
                tracing::error!(system = %system, object_type = %type_name, id = %uid,
                    failures, error = %error,
                    "liveSync gave up on a change after its retries (logged-ignore)");
            }
            PostRetryAction::DeadLetterQueue => {
                // The change, not the object: its attributes may hold secrets.
                let record = match json!({
                    "token": token,
                    "systemIdentifier": system,
                    "objectType": type_name,
                    "uid": uid,
                    "failedRecord": {"uid": uid, "operation": operation},
                    "failureCause": error,
                    "failures": failures,
                }) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                let stored = dead_letter(self.repo.as_ref(), system, record)
                    .await
                    .map_err(|e| {
                        tracing::error!(system = %system, id = %uid, error = %e,
                            "cannot store a dead letter; liveSync stops before the change");
                        ResourceError::internal(format!(
                            "liveSync of system/{system}/{type_name} cannot store the change of '{uid}' in the dead-letter queue; the next liveSync retries it"
                        ))
                    })?;
                tracing::error!(system = %system, object_type = %type_name, id = %uid,
                    failures, error = %error, dead_letter = %stored,
                    "liveSync gave up on a change after its retries; stored in the dead-letter queue");
            }
        }
        Ok(())
    }

    async fn push(&self, resource: &str, uid: &str) -> Result<(), String> {
        match self.sink.get() {
            Some(sink) => sink.push(resource, uid).await,
            None => Ok(()),
        }
    }

    async fn save_token(
        &self,
        id: &str,
        rev: Option<String>,
        token: Value,
        failure: Option<&SyncFailure>,
    ) -> Result<Value, ResourceError> {
        let native_type = match &token {
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        let mut content = Map::new();
        content.insert(
            "connectorData".into(),
            json!({"nativeType": native_type, "syncToken": token}),
        );
        if let Some(f) = failure {
            content.insert(
                "syncFailure".into(),
                json!({"uid": f.uid, "failures": f.failures, "lastError": f.last_error}),
            );
        }
        let stored = match rev {
            Some(rev) => {
                self.repo
                    .update(TOKENS, id, Some(&rev), content, WriteOptions::default())
                    .await?
            }
            None => {
                self.repo
                    .create(TOKENS, id, content, WriteOptions::default())
                    .await?
            }
        };
        let mut out = Map::new();
        out.insert("_id".into(), json!(stored.id));
        out.insert("_rev".into(), json!(stored.rev));
        out.extend(stored.content);
        Ok(Value::Object(out))
    }
}

/// The change a liveSync run stopped at, and how often it failed.
#[derive(Debug, Clone, PartialEq)]
struct SyncFailure {
    uid: String,
    failures: u64,
    last_error: String,
}

impl SyncFailure {
    fn of(v: &Value) -> Option<SyncFailure> {
        Some(SyncFailure {
            uid: v.get("uid")?.as_str()?.to_owned(),
            failures: v.get("failures")?.as_u64()?,
            last_error: v
                .get("lastError")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// IDM's id of a liveSync token: `SYSTEM` + system name + object type, upper-cased,
/// letters and digits only (`system/ldap/account` → `SYSTEMLDAPACCOUNT`).
pub fn token_id(system: &str, type_name: &str) -> String {
    format!("system{system}{type_name}")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Runs a connector call under its `operationTimeout`.
pub async fn with_timeout<T>(
    timeout: Option<Duration>,
    resource: &str,
    call: impl std::future::Future<Output = super::connector::ConnectorResult<T>>,
) -> Result<T, ResourceError> {
    match timeout {
        None => call.await.map_err(ResourceError::from),
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(r) => r.map_err(ResourceError::from),
            Err(_) => Err(ResourceError::gateway_timeout(format!(
                "{resource}: the connector did not answer within {} ms (operationTimeout)",
                limit.as_millis()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_idm_shaped() {
        assert_eq!(token_id("ldap", "account"), "SYSTEMLDAPACCOUNT");
        assert_eq!(token_id("hr-csv", "account_2"), "SYSTEMHRCSVACCOUNT2");
        assert_eq!(
            SystemService::split_source("system/ldap/account").unwrap(),
            ("ldap", "account")
        );
        assert_eq!(
            SystemService::split_source("managed/user")
                .unwrap_err()
                .code,
            400
        );
    }
}
