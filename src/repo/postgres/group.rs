//! Group commit: single writes that arrive while others are being committed share one
//! transaction, so one WAL flush serves many writes.
//!
//! With every write its own autocommit transaction, a node's write rate is bounded by the
//! pool size divided by the commit latency (16 connections and a ~3 ms flush: ~5 000
//! writes/s, the CPU idle), whatever the load. Here a write joins a queue; up to
//! [`COMMITTERS`] tasks take what is queued (up to [`MAX_GROUP`]) and run it pipelined in
//! one transaction, in (resource, id) order so two groups always lock rows in the same order
//! and cannot deadlock each other. If any write of a group fails, the transaction is rolled
//! back and the group runs again with a savepoint per write (still one commit), so a
//! failing write fails alone and every caller gets the answer it would have had alone.
//! Nobody hears `Ok` before the commit.
//!
//! A lone write (nothing else queued) runs as before, autocommit, with no added latency;
//! groups form only under concurrency. Writes that need a transaction of their own
//! (writes with `also`, unique values checked under a lock) do not come here.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{lost_result, PgOp, PgRepo};
use crate::repo::RepoError;

/// Most writes committed by one transaction.
pub(super) const MAX_GROUP: usize = 256;
/// Groups committed at once (each holds one pooled connection; the rest serve reads).
pub(super) const COMMITTERS: usize = super::POOL_SIZE / 2;

/// A write's result: its new revision and, for a delete, the deleted body.
pub(super) type Applied = Result<(String, Option<String>), RepoError>;

struct Pending {
    resource: String,
    op: PgOp,
    reply: oneshot::Sender<Applied>,
}

#[derive(Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Committer tasks running.
    committers: usize,
}

impl GroupCommit {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decrements the committer count however its task ends (runtime shutdown included),
/// unless the task did it itself under the lock.
struct Running<'a> {
    group: &'a GroupCommit,
    counted: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.group.state().committers -= 1;
        }
    }
}

impl PgRepo {
    /// Commits `op` (a single write needing no transaction of its own), grouped with the
    /// writes queued with it.
    pub(super) async fn write_grouped(&self, resource: &str, op: PgOp) -> Applied {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.inner.group.state();
            state.queue.push_back(Pending {
                resource: resource.to_string(),
                op,
                reply,
            });
            let start = state.committers < COMMITTERS;
            if start {
                state.committers += 1;
            }
            start
        };
        if start {
            // A task of its own: a caller that stops waiting must not abandon the group.
            let repo = self.clone();
            tokio::spawn(async move { repo.commit_groups().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(RepoError::Internal(
                "the store's writer stopped before answering (the gateway is shutting down)".into(),
            ))
        })
    }

    /// Commits queued groups until the queue is empty.
    async fn commit_groups(&self) {
        let group = &self.inner.group;
        let mut running = Running {
            group,
            counted: true,
        };
        loop {
            let batch: Vec<Pending> = {
                let mut state = group.state();
                let n = state.queue.len().min(MAX_GROUP);
                state.queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            // This task is still counted here, so a write queued now is taken by the next
            // turn of this loop (or by another committer), never left behind.
            let results = self.commit_group(&batch).await;
            for (p, r) in batch.into_iter().zip(results) {
                let _ = p.reply.send(r);
            }
            let mut state = group.state();
            if state.queue.is_empty() {
                // Decided under the lock a submitter takes: it sees this task gone and
                // starts another.
                state.committers -= 1;
                running.counted = false;
                return;
            }
        }
    }

    /// One result per write of `batch`, in order.
    async fn commit_group(&self, batch: &[Pending]) -> Vec<Applied> {
        let fail_all = |e: RepoError| batch.iter().map(|_| Err(e.clone())).collect();
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return fail_all(e),
        };
        if let [one] = batch {
            return vec![self.apply(&client, &one.resource, &one.op).await];
        }
        let mut client = client;
        // Row locks in one global order: (resource, id), stable for writes of one object.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| (batch[i].resource.as_str(), op_id(&batch[i].op)));
        let ops: Vec<(&str, &PgOp)> = order
            .iter()
            .map(|&i| (batch[i].resource.as_str(), &batch[i].op))
            .collect();
        let done = match self.pipelined_ops(&mut client, &ops).await {
            Ok(Some(done)) => done.into_iter().map(Ok).collect(),
            // A write failed and nothing was committed: again, one savepoint per write
            // (still one commit), so the failing ones fail alone.
            Ok(None) => match self.savepoints(&mut client, &ops).await {
                Ok(done) => done,
                Err(e) => return fail_all(e),
            },
            Err(e) => return fail_all(e),
        };
        let mut out: Vec<Option<Applied>> = batch.iter().map(|_| None).collect();
        for (i, d) in order.into_iter().zip(done) {
            out[i] = Some(d);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(lost_result())))
            .collect()
    }
}

fn op_id(op: &PgOp) -> &str {
    match op {
        PgOp::Create { id, .. }
        | PgOp::Update { id, .. }
        | PgOp::Delete { id, .. }
        | PgOp::Put { id, .. } => id,
    }
}
