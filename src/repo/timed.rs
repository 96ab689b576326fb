//! [`TimedRepo`]: a [`Repo`] that times every call of the store it wraps into
//! `idm_gateway_store_operation_duration_seconds{op}`.
//!
//! It only measures: every call, the defaulted ones included (a backend's own `delete_with`
//! or `batch` stays atomic), goes to the inner store unchanged, errors too. A
//! `query_stream` is timed until its stream is handed back (the first objects are ready),
//! not until it is drained, which the caller decides.

use std::sync::Arc;
use std::time::Instant;

use prometheus::HistogramVec;
use serde_json::{Map, Value};

use super::{
    ObjectStream, Repo, RepoError, RepoPage, RepoQuery, StoredObject, WriteOp, WriteOptions,
};
use crate::crest::filter::JsonPointer;

pub struct TimedRepo {
    inner: Arc<dyn Repo>,
    duration: HistogramVec,
}

impl TimedRepo {
    /// `duration` is labelled by `op` alone.
    pub fn new(inner: Arc<dyn Repo>, duration: HistogramVec) -> Self {
        Self { inner, duration }
    }

    fn observe(&self, op: &str, started: Instant) {
        self.duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait::async_trait]
impl Repo for TimedRepo {
    async fn create(
        &self,
        resource: &str,
        id: &str,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError> {
        let started = Instant::now();
        let r = self.inner.create(resource, id, content, opts).await;
        self.observe("create", started);
        r
    }

    async fn read(&self, resource: &str, id: &str) -> Result<Option<StoredObject>, RepoError> {
        let started = Instant::now();
        let r = self.inner.read(resource, id).await;
        self.observe("read", started);
        r
    }

    async fn update(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError> {
        let started = Instant::now();
        let r = self.inner.update(resource, id, rev, content, opts).await;
        self.observe("update", started);
        r
    }

    async fn delete(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
    ) -> Result<StoredObject, RepoError> {
        let started = Instant::now();
        let r = self.inner.delete(resource, id, rev).await;
        self.observe("delete", started);
        r
    }

    async fn delete_with(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        also: &[WriteOp],
    ) -> Result<StoredObject, RepoError> {
        let started = Instant::now();
        let r = self.inner.delete_with(resource, id, rev, also).await;
        self.observe("delete", started);
        r
    }

    async fn query(&self, resource: &str, query: RepoQuery<'_>) -> Result<RepoPage, RepoError> {
        let started = Instant::now();
        let r = self.inner.query(resource, query).await;
        self.observe("query", started);
        r
    }

    async fn query_stream(
        &self,
        resource: &str,
        query: RepoQuery<'_>,
    ) -> Result<ObjectStream, RepoError> {
        let started = Instant::now();
        let r = self.inner.query_stream(resource, query).await;
        self.observe("query_stream", started);
        r
    }

    async fn set_indexes(&self, resource: &str, fields: &[JsonPointer]) -> Result<(), RepoError> {
        let started = Instant::now();
        let r = self.inner.set_indexes(resource, fields).await;
        self.observe("set_indexes", started);
        r
    }

    async fn batch(&self, ops: Vec<WriteOp>) -> Vec<Result<StoredObject, RepoError>> {
        let started = Instant::now();
        let r = self.inner.batch(ops).await;
        self.observe("batch", started);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::repo::sqlite::SqliteRepo;

    fn count(metrics: &Metrics, op: &str) -> u64 {
        metrics
            .store_duration
            .with_label_values(&[op])
            .get_sample_count()
    }

    #[tokio::test]
    async fn every_call_is_timed_under_its_operation_and_answered_by_the_inner_store() {
        let metrics = Metrics::new();
        let inner: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let repo = TimedRepo::new(inner.clone(), metrics.store_duration.clone());
        let mut content = Map::new();
        content.insert("sn".into(), Value::from("Smith"));
        let created = repo
            .create("managed/user", "u1", content, Default::default())
            .await
            .unwrap();
        assert_eq!(
            inner.read("managed/user", "u1").await.unwrap(),
            Some(created)
        );
        let gone = repo.read("managed/user", "nobody").await.unwrap();
        assert_eq!(gone, None);
        let err = repo
            .delete("managed/user", "nobody", None)
            .await
            .unwrap_err();
        assert!(matches!(err, RepoError::NotFound { .. }), "{err:?}");
        assert_eq!(count(&metrics, "create"), 1);
        assert_eq!(count(&metrics, "read"), 1);
        assert_eq!(count(&metrics, "delete"), 1, "a failed call is timed too");
        assert_eq!(count(&metrics, "update"), 0);
    }
}
