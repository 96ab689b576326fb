//! The single writer thread and its group commit.
//!
//! Callers send a [`Command`] over a channel and await a oneshot reply. The writer takes
//! everything queued (up to [`MAX_BATCH`]), runs each command inside one `BEGIN IMMEDIATE`
//! transaction, multi-statement commands in their own `SAVEPOINT` (a failing command rolls
//! back only its own changes; single-statement ones are atomic by themselves), commits
//! once, and only then replies to all of them: one fsync serves a whole batch, and no caller
//! hears `Ok` before its write is on disk. While a commit is being fsynced the next batch
//! queues up, so the batch size grows with the load without any timer.
//!
//! Being the only writer also makes conditional writes and unique checks atomic: a command
//! reads the current revision (or looks for a conflicting value) and writes in the same
//! transaction, and nothing else writes in between.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;
use tokio::sync::oneshot;

use super::schema::{self, internal};
use super::sql::{type_expr, value_expr};
use crate::crest::filter::JsonPointer;
use crate::repo::RepoError;

/// Most commands committed by one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// Resource → object table, as committed. Shared with the readers.
pub(crate) type Tables = Arc<RwLock<HashMap<String, String>>>;

/// A property that must be unique, with the value the written object has.
#[derive(Debug, Clone)]
pub(crate) struct UniqueValue {
    pub field: JsonPointer,
    pub value: Value,
}

#[derive(Debug)]
pub(crate) enum Op {
    Create {
        id: String,
        body: String,
        unique: Vec<UniqueValue>,
    },
    Update {
        id: String,
        rev: Option<String>,
        body: String,
        unique: Vec<UniqueValue>,
    },
    Delete {
        id: String,
        rev: Option<String>,
    },
    /// Create, or replace whatever the revision.
    Put {
        id: String,
        body: String,
    },
    SetIndexes {
        fields: Vec<JsonPointer>,
    },
}

/// What a write produced: the new revision (the last one for a delete) and, for a delete,
/// the deleted body as JSON text.
#[derive(Debug)]
pub(crate) struct Done {
    pub rev: String,
    pub body: Option<String>,
}

pub(crate) struct Command {
    pub resource: String,
    pub op: Op,
    /// Writes that succeed or fail with `op` (same savepoint).
    pub also: Vec<(String, Op)>,
    pub reply: oneshot::Sender<Result<Done, RepoError>>,
}

/// What callers send: one command, or several that go into the same transaction
/// (`Repo::batch`; each still in its own savepoint, with its own reply).
pub(crate) enum Message {
    One(Command),
    Many(Vec<Command>),
}

impl Message {
    fn append_to(self, batch: &mut Vec<Command>) {
        match self {
            Message::One(cmd) => batch.push(cmd),
            Message::Many(mut cmds) => batch.append(&mut cmds),
        }
    }
}

/// Runs until every sender is dropped. `next_rev` is the store's next revision
/// ([`schema::load_next_rev`]).
pub(crate) fn run(mut conn: Connection, rx: Receiver<Message>, tables: Tables, next_rev: u64) {
    let mut revs = Revisions { next: next_rev };
    let mut batch: Vec<Command> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        first.append_to(&mut batch);
        // A `Many` is never split: a batch may exceed MAX_BATCH by one message.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => msg.append_to(&mut batch),
                Err(_) => break,
            }
        }
        let results = run_batch(&mut conn, &batch, &tables, &mut revs);
        for (cmd, result) in batch.drain(..).zip(results) {
            // A caller that stopped waiting is not an error.
            let _ = cmd.reply.send(result);
        }
    }
}

/// The store-wide revision sequence: every create and update takes the next number, so a
/// revision is never issued twice, not even to an object deleted and created again (a
/// client holding the old object's `_rev` gets a mismatch, never a match by accident).
/// The next number is written in each batch's transaction, so after a crash the sequence
/// resumes above every committed revision; numbers of a batch that failed are skipped.
struct Revisions {
    next: u64,
}

impl Revisions {
    fn take(&mut self) -> String {
        let rev = self.next;
        self.next = self.next.saturating_add(1);
        rev.to_string()
    }
}

/// Runs one batch in one transaction; one result per command, in order.
fn run_batch(
    conn: &mut Connection,
    batch: &[Command],
    tables: &Tables,
    revs: &mut Revisions,
) -> Vec<Result<Done, RepoError>> {
    let first_rev = revs.next;
    let fail_all = |e: RepoError| batch.iter().map(|_| Err(e.clone())).collect();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(internal("starting a write transaction")(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut created: Vec<(String, String)> = Vec::new();
    for cmd in batch {
        let mut new_tables = Vec::new();
        if single_statement(cmd, tables) {
            // One modifying statement, after read-only checks: SQLite makes the statement
            // atomic itself, so no savepoint (and no sub-journal) is needed. A check failing
            // wrote nothing; a store failure leaves the transaction in an unknown state (it
            // may have been rolled back): fail all of it, no caller hears `Ok`.
            let result = apply(&tx, cmd, tables, &mut new_tables, revs);
            if let Err(e @ RepoError::Internal(_)) = &result {
                return fail_all(e.clone());
            }
            results.push(result);
            continue;
        }
        if let Err(e) = tx.execute_batch("SAVEPOINT w") {
            return fail_all(internal("starting a savepoint")(e));
        }
        let result = apply(&tx, cmd, tables, &mut new_tables, revs);
        let end = if result.is_ok() {
            "RELEASE w"
        } else {
            "ROLLBACK TO w; RELEASE w"
        };
        if let Err(e) = tx.execute_batch(end) {
            // The transaction's state is unknown: drop (roll back) all of it.
            return fail_all(internal("ending a savepoint")(e));
        }
        if result.is_ok() {
            created.append(&mut new_tables);
        }
        results.push(result);
    }
    if revs.next != first_rev {
        if let Err(e) = schema::store_next_rev(&tx, revs.next) {
            return fail_all(e);
        }
    }
    if let Err(e) = tx.commit() {
        return fail_all(internal("committing")(e));
    }
    if !created.is_empty() {
        let mut map = tables.write().unwrap_or_else(|p| p.into_inner());
        map.extend(created);
    }
    results
}

/// Whether `cmd` writes with a single statement: a create into an existing table, an update,
/// a delete (the table is never created for these).
fn single_statement(cmd: &Command, tables: &Tables) -> bool {
    if !cmd.also.is_empty() {
        return false;
    }
    match cmd.op {
        Op::Update { .. } | Op::Delete { .. } => true,
        Op::Create { .. } => tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&cmd.resource),
        Op::SetIndexes { .. } | Op::Put { .. } => false,
    }
}

/// The table of `resource`, created when `create` and missing.
fn table(
    tx: &Transaction<'_>,
    resource: &str,
    create: bool,
    tables: &Tables,
    created: &mut Vec<(String, String)>,
) -> Result<Option<String>, RepoError> {
    if let Some(t) = tables
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(resource)
    {
        return Ok(Some(t.clone()));
    }
    if let Some(t) = schema::find_table(tx, resource)? {
        return Ok(Some(t));
    }
    if !create {
        return Ok(None);
    }
    let t = schema::create_table(tx, resource)?;
    created.push((resource.to_string(), t.clone()));
    Ok(Some(t))
}

/// `cmd`'s op, then its other writes; the first failure is the command's.
fn apply(
    tx: &Transaction<'_>,
    cmd: &Command,
    tables: &Tables,
    created: &mut Vec<(String, String)>,
    revs: &mut Revisions,
) -> Result<Done, RepoError> {
    let done = apply_op(tx, &cmd.resource, &cmd.op, tables, created, revs)?;
    for (resource, op) in &cmd.also {
        apply_op(tx, resource, op, tables, created, revs)?;
    }
    Ok(done)
}

fn apply_op(
    tx: &Transaction<'_>,
    resource: &str,
    op: &Op,
    tables: &Tables,
    created: &mut Vec<(String, String)>,
    revs: &mut Revisions,
) -> Result<Done, RepoError> {
    let not_found = |id: &str| RepoError::NotFound {
        resource: resource.to_string(),
        id: id.to_string(),
    };
    match op {
        Op::Create { id, body, unique } => {
            let tbl = table(tx, resource, true, tables, created)?
                .ok_or_else(|| RepoError::Internal("object table missing".into()))?;
            if current_rev(tx, &tbl, id)?.is_some() {
                return Err(RepoError::AlreadyExists {
                    resource: resource.to_string(),
                    id: id.clone(),
                });
            }
            check_unique(tx, &tbl, resource, id, unique)?;
            let rev = revs.take();
            tx.prepare_cached(&format!(
                "INSERT INTO \"{tbl}\" (id, rev, body) VALUES (?1, ?2, jsonb(?3))"
            ))
            .and_then(|mut s| s.execute(rusqlite::params![id, rev, body]))
            .map_err(internal("inserting an object"))?;
            Ok(Done { rev, body: None })
        }
        Op::Update {
            id,
            rev,
            body,
            unique,
        } => {
            let tbl = table(tx, resource, false, tables, created)?.ok_or_else(|| not_found(id))?;
            let current = current_rev(tx, &tbl, id)?.ok_or_else(|| not_found(id))?;
            check_rev(resource, id, rev.as_deref(), &current)?;
            check_unique(tx, &tbl, resource, id, unique)?;
            let next = revs.take();
            tx.prepare_cached(&format!(
                "UPDATE \"{tbl}\" SET rev = ?2, body = jsonb(?3) WHERE id = ?1"
            ))
            .and_then(|mut s| s.execute(rusqlite::params![id, next, body]))
            .map_err(internal("updating an object"))?;
            Ok(Done {
                rev: next,
                body: None,
            })
        }
        Op::Delete { id, rev } => {
            let tbl = table(tx, resource, false, tables, created)?.ok_or_else(|| not_found(id))?;
            let (current, old): (String, String) = tx
                .prepare_cached(&format!(
                    "SELECT rev, json(body) FROM \"{tbl}\" WHERE id = ?1"
                ))
                .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(internal("reading an object"))?
                .ok_or_else(|| not_found(id))?;
            check_rev(resource, id, rev.as_deref(), &current)?;
            tx.prepare_cached(&format!("DELETE FROM \"{tbl}\" WHERE id = ?1"))
                .and_then(|mut s| s.execute([id]))
                .map_err(internal("deleting an object"))?;
            Ok(Done {
                rev: current,
                body: Some(old),
            })
        }
        Op::Put { id, body } => {
            let tbl = table(tx, resource, true, tables, created)?
                .ok_or_else(|| RepoError::Internal("object table missing".into()))?;
            let rev = revs.take();
            tx.prepare_cached(&format!(
                "INSERT INTO \"{tbl}\" (id, rev, body) VALUES (?1, ?2, jsonb(?3)) \
                 ON CONFLICT(id) DO UPDATE SET rev = excluded.rev, body = excluded.body"
            ))
            .and_then(|mut s| s.execute(rusqlite::params![id, rev, body]))
            .map_err(internal("writing an object"))?;
            Ok(Done { rev, body: None })
        }
        Op::SetIndexes { fields } => {
            let tbl = table(tx, resource, true, tables, created)?
                .ok_or_else(|| RepoError::Internal("object table missing".into()))?;
            schema::set_indexes(tx, &tbl, fields)?;
            Ok(Done {
                rev: String::new(),
                body: None,
            })
        }
    }
}

fn current_rev(tx: &Transaction<'_>, tbl: &str, id: &str) -> Result<Option<String>, RepoError> {
    tx.prepare_cached(&format!("SELECT rev FROM \"{tbl}\" WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(internal("reading a revision"))
}

fn check_rev(
    resource: &str,
    id: &str,
    expected: Option<&str>,
    current: &str,
) -> Result<(), RepoError> {
    match expected {
        Some(expected) if expected != current => Err(RepoError::RevisionMismatch {
            resource: resource.to_string(),
            id: id.to_string(),
            expected: expected.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Fails with [`RepoError::Unique`] when another object of the table has the same value for
/// one of the unique properties (absent and null values never conflict).
fn check_unique(
    tx: &Transaction<'_>,
    tbl: &str,
    resource: &str,
    id: &str,
    unique: &[UniqueValue],
) -> Result<(), RepoError> {
    for u in unique {
        let (param, types, rhs) = match &u.value {
            Value::Null => continue,
            Value::String(s) => (SqlValue::Text(s.clone()), "'text'", "?1"),
            Value::Number(n) => match n.as_i64() {
                Some(i) => (SqlValue::Integer(i), "'integer','real'", "?1"),
                None => (
                    SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
                    "'integer','real'",
                    "?1",
                ),
            },
            Value::Bool(b) => (
                SqlValue::Integer(i64::from(*b)),
                if *b { "'true'" } else { "'false'" },
                "?1",
            ),
            Value::Array(_) | Value::Object(_) => (
                SqlValue::Text(u.value.to_string()),
                if u.value.is_array() {
                    "'array'"
                } else {
                    "'object'"
                },
                "json(?1)",
            ),
        };
        let sql = format!(
            "SELECT 1 FROM \"{tbl}\" WHERE {v} = {rhs} AND {t} IN ({types}) AND id <> ?2 LIMIT 1",
            v = value_expr(&u.field),
            t = type_expr(&u.field),
        );
        let taken = tx
            .prepare_cached(&sql)
            .and_then(|mut s| s.exists(rusqlite::params![param, id]))
            .map_err(internal("checking a unique property"))?;
        if taken {
            return Err(RepoError::Unique {
                resource: resource.to_string(),
                property: u.field.to_string(),
            });
        }
    }
    Ok(())
}
