//! Links between source and target ids, stored in the [`Repo`] under `link/<linkType>` as
//! `{"firstId", "secondId", "linkQualifier"}` with an index on each id, so lookups both ways
//! are indexed queries. A link also keeps what the last sync applied of the source's
//! assignments (`assignments`, see [`super::assignments`]; absent: nothing). The link type is the mapping's name, or the mapping named by its
//! `links`; a mapping that shares the links of its reverse mapping reads them the other way
//! round (`reversed`: its source ids are the `secondId`s).
//!
//! One link per end: a link type holds at most one link per source id and one per target
//! id (the store checks both in the write's transaction, as unique properties; the only
//! link qualifier is `default`). A link onto an already linked end fails with
//! [`RepoError::Unique`], so a correlation onto a linked target can never add a second link.
//!
//! Links are the sync module's own records: they go to the store directly, never through
//! the router (which serves the mapped resources).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::crest::filter::{JsonPointer, QueryFilter};
use crate::repo::{Repo, RepoError, RepoQuery, StoredObject, WriteOp, WriteOptions};

use super::assignments::{same_snapshot, LINK_FIELD};
use super::mapping::DEFAULT_LINK_QUALIFIER;

/// Resource prefix of the link tables.
pub const LINK_RESOURCE: &str = "link";
const FIRST: &str = "firstId";
const SECOND: &str = "secondId";
/// Links read per page by [`LinkStore::remove_duplicates`].
const DEDUPE_PAGE: usize = 10_000;

/// One link, seen from a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub id: String,
    pub source_id: String,
    pub target_id: String,
    /// The assignments the last sync applied (`Null`: none).
    pub assignments: Value,
}

/// A link to create, replacing `replaces` (a stale link of the same source).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLink {
    pub source_id: String,
    pub target_id: String,
    pub replaces: Option<Link>,
    /// The assignments applied to the target (`Null`: none).
    pub assignments: Value,
}

/// The links of one link type, oriented for one mapping.
#[derive(Clone)]
pub struct LinkStore {
    repo: Arc<dyn Repo>,
    resource: String,
    reversed: bool,
}

impl LinkStore {
    pub fn new(repo: Arc<dyn Repo>, link_type: &str, reversed: bool) -> Self {
        Self {
            repo,
            resource: format!("{LINK_RESOURCE}/{link_type}"),
            reversed,
        }
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Declares the two id indexes (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), RepoError> {
        self.repo
            .set_indexes(
                &self.resource,
                &[JsonPointer::parse(FIRST), JsonPointer::parse(SECOND)],
            )
            .await
    }

    fn source_field(&self) -> &'static str {
        if self.reversed {
            SECOND
        } else {
            FIRST
        }
    }

    fn target_field(&self) -> &'static str {
        if self.reversed {
            FIRST
        } else {
            SECOND
        }
    }

    fn to_link(&self, mut obj: StoredObject) -> Option<Link> {
        let first = obj.content.get(FIRST)?.as_str()?.to_owned();
        let second = obj.content.get(SECOND)?.as_str()?.to_owned();
        let (source_id, target_id) = if self.reversed {
            (second, first)
        } else {
            (first, second)
        };
        let assignments = obj.content.remove(LINK_FIELD).unwrap_or_default();
        Some(Link {
            id: obj.id,
            source_id,
            target_id,
            assignments,
        })
    }

    /// Links whose `field` is one of `ids`, by that id (one indexed query).
    async fn by_field(
        &self,
        field: &'static str,
        ids: &[String],
    ) -> Result<HashMap<String, Link>, RepoError> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let filter = QueryFilter::In {
            field: JsonPointer::parse(field),
            values: ids.to_vec(),
        };
        let page = self
            .repo
            .query(&self.resource, RepoQuery::all(&filter, &[]))
            .await?;
        for obj in page.results {
            if let Some(link) = self.to_link(obj) {
                let key = if field == self.source_field() {
                    link.source_id.clone()
                } else {
                    link.target_id.clone()
                };
                out.entry(key).or_insert(link);
            }
        }
        Ok(out)
    }

    /// The links of these source ids, by source id.
    pub async fn by_sources(&self, ids: &[String]) -> Result<HashMap<String, Link>, RepoError> {
        self.by_field(self.source_field(), ids).await
    }

    /// The links of these target ids, by target id.
    pub async fn by_targets(&self, ids: &[String]) -> Result<HashMap<String, Link>, RepoError> {
        self.by_field(self.target_field(), ids).await
    }

    pub async fn by_source(&self, id: &str) -> Result<Option<Link>, RepoError> {
        Ok(self.by_sources(&[id.to_owned()]).await?.remove(id))
    }

    pub async fn by_target(&self, id: &str) -> Result<Option<Link>, RepoError> {
        Ok(self.by_targets(&[id.to_owned()]).await?.remove(id))
    }

    fn content(&self, source_id: &str, target_id: &str, assignments: &Value) -> Map<String, Value> {
        let (first, second) = if self.reversed {
            (target_id, source_id)
        } else {
            (source_id, target_id)
        };
        let mut content = match json!({
            FIRST: first, SECOND: second, "linkQualifier": DEFAULT_LINK_QUALIFIER,
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if !same_snapshot(assignments, &Value::Null) {
            content.insert(LINK_FIELD.into(), assignments.clone());
        }
        content
    }

    pub async fn create(&self, source_id: &str, target_id: &str) -> Result<Link, RepoError> {
        let content = self.content(source_id, target_id, &Value::Null);
        let id = crate::repo::new_object_id();
        let unique = unique_ends();
        let opts = WriteOptions {
            unique: &unique,
            ..Default::default()
        };
        self.repo.create(&self.resource, &id, content, opts).await?;
        Ok(Link {
            id,
            source_id: source_id.to_owned(),
            target_id: target_id.to_owned(),
            assignments: Value::Null,
        })
    }

    /// Records on `link` the assignments a sync applied (no write when they are the same).
    pub async fn set_assignments(&self, link: &Link, assignments: &Value) -> Result<(), RepoError> {
        if same_snapshot(&link.assignments, assignments) {
            return Ok(());
        }
        let content = self.content(&link.source_id, &link.target_id, assignments);
        let unique = unique_ends();
        let opts = WriteOptions {
            unique: &unique,
            ..Default::default()
        };
        self.repo
            .update(&self.resource, &link.id, None, content, opts)
            .await
            .map(drop)
    }

    /// Several link changes in one [`Repo::batch`] (one commit in the embedded store): for
    /// each, the old link (if any) is deleted, then the new one created. One result per
    /// change, in order; an old link already gone is not an error.
    pub async fn apply(&self, changes: &[NewLink]) -> Vec<Result<Link, RepoError>> {
        let mut ops = Vec::with_capacity(changes.len() + 1);
        let mut ids = Vec::with_capacity(changes.len());
        for c in changes {
            if let Some(old) = &c.replaces {
                ops.push(WriteOp::Delete {
                    resource: self.resource.clone(),
                    id: old.id.clone(),
                    rev: None,
                });
            }
            let id = crate::repo::new_object_id();
            ops.push(WriteOp::Create {
                resource: self.resource.clone(),
                id: id.clone(),
                content: self.content(&c.source_id, &c.target_id, &c.assignments),
                unique: unique_ends(),
            });
            ids.push(id);
        }
        let mut results = self.repo.batch(ops).await.into_iter();
        let mut none = || Err(RepoError::Internal("a batch lost a result".into()));
        changes
            .iter()
            .zip(ids)
            .map(|(c, id)| {
                if c.replaces.is_some() {
                    match results.next().unwrap_or_else(&mut none) {
                        Ok(_) | Err(RepoError::NotFound { .. }) => {}
                        Err(e) => {
                            results.next(); // the create that belongs to it
                            return Err(e);
                        }
                    }
                }
                results.next().unwrap_or_else(&mut none)?;
                Ok(Link {
                    id,
                    source_id: c.source_id.clone(),
                    target_id: c.target_id.clone(),
                    assignments: c.assignments.clone(),
                })
            })
            .collect()
    }

    /// Removes links that break the one-link-per-end rule, left by versions that did not
    /// enforce it: for each source id and each target id the link with the smallest link
    /// id is kept, the others are deleted and returned. Only link records go; no source or
    /// target object is touched, and the next run reassesses the sources that lost a link.
    pub async fn remove_duplicates(&self) -> Result<Vec<Link>, RepoError> {
        let mut firsts = std::collections::HashSet::new();
        let mut seconds = std::collections::HashSet::new();
        let mut extra = Vec::new();
        let mut cookie: Option<String> = None;
        loop {
            let page = self
                .repo
                .query(
                    &self.resource,
                    RepoQuery {
                        filter: &QueryFilter::True,
                        sort: &[],
                        page_size: DEDUPE_PAGE,
                        cookie: cookie.as_deref(),
                        offset: 0,
                        count: Default::default(),
                        ids_only: false,
                    },
                )
                .await?;
            for obj in page.results {
                let first = obj
                    .content
                    .get(FIRST)
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let second = obj
                    .content
                    .get(SECOND)
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let (Some(first), Some(second)) = (first, second) else {
                    continue;
                };
                let new_first = !firsts.contains(&first);
                let new_second = !seconds.contains(&second);
                if new_first && new_second {
                    firsts.insert(first);
                    seconds.insert(second);
                } else if let Some(link) = self.to_link(obj) {
                    extra.push(link);
                }
            }
            match page.next_cookie {
                Some(c) => cookie = Some(c),
                None => break,
            }
        }
        for link in &extra {
            self.delete(link).await?;
        }
        Ok(extra)
    }

    /// Deletes a link; one already gone is not an error.
    pub async fn delete(&self, link: &Link) -> Result<(), RepoError> {
        match self.repo.delete(&self.resource, &link.id, None).await {
            Ok(_) | Err(RepoError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The properties no two links of a type share.
fn unique_ends() -> Vec<JsonPointer> {
    vec![JsonPointer::parse(FIRST), JsonPointer::parse(SECOND)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::sqlite::SqliteRepo;

    #[tokio::test]
    async fn lookups_both_ways_and_reversed_view() {
        let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let links = LinkStore::new(repo.clone(), "a_b", false);
        links.ensure_indexes().await.unwrap();
        let l1 = links.create("s1", "t1").await.unwrap();
        links.create("s2", "t2").await.unwrap();
        let found = links
            .by_sources(&["s1".into(), "s2".into(), "s3".into()])
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found["s1"].target_id, "t1");
        assert_eq!(
            links.by_target("t2").await.unwrap().unwrap().source_id,
            "s2"
        );

        // The reverse mapping sharing these links sees t1 as its source.
        let reverse = LinkStore::new(repo, "a_b", true);
        let back = reverse.by_source("t1").await.unwrap().unwrap();
        assert_eq!(
            (back.source_id.as_str(), back.target_id.as_str()),
            ("t1", "s1")
        );

        links.delete(&l1).await.unwrap();
        links.delete(&l1).await.unwrap();
        assert_eq!(links.by_source("s1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn batched_changes_create_and_replace() {
        let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let links = LinkStore::new(repo, "a_b", false);
        links.ensure_indexes().await.unwrap();
        let stale = links.create("s1", "gone").await.unwrap();
        let already_deleted = Link {
            id: "no-such-link".into(),
            source_id: "s3".into(),
            target_id: "t0".into(),
            assignments: Value::Null,
        };
        let new = |s: &str, t: &str, replaces: Option<Link>| NewLink {
            source_id: s.into(),
            target_id: t.into(),
            replaces,
            assignments: Value::Null,
        };
        let results = links
            .apply(&[
                new("s1", "t1", Some(stale)),
                new("s2", "t2", None),
                new("s3", "t3", Some(already_deleted)),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let found = links
            .by_sources(&["s1".into(), "s2".into(), "s3".into()])
            .await
            .unwrap();
        let targets: Vec<_> = ["s1", "s2", "s3"]
            .iter()
            .map(|s| found[*s].target_id.as_str())
            .collect();
        assert_eq!(targets, ["t1", "t2", "t3"]);
        assert_eq!(links.by_target("gone").await.unwrap(), None);
        assert!(links.apply(&[]).await.is_empty());
    }

    #[tokio::test]
    async fn one_link_per_source_and_per_target() {
        let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let links = LinkStore::new(repo.clone(), "a_b", false);
        links.ensure_indexes().await.unwrap();
        links.create("s1", "t1").await.unwrap();
        let twice_target = links.create("s2", "t1").await.unwrap_err();
        assert!(
            matches!(twice_target, RepoError::Unique { .. }),
            "{twice_target:?}"
        );
        let twice_source = links.create("s1", "t2").await.unwrap_err();
        assert!(
            matches!(twice_source, RepoError::Unique { .. }),
            "{twice_source:?}"
        );
        // In a batch, the duplicate alone fails; the reverse view shares the rule.
        let new = |s: &str, t: &str| NewLink {
            source_id: s.into(),
            target_id: t.into(),
            replaces: None,
            assignments: Value::Null,
        };
        let results = links.apply(&[new("s3", "t1"), new("s4", "t4")]).await;
        assert!(
            matches!(results[0], Err(RepoError::Unique { .. })),
            "{results:?}"
        );
        assert!(results[1].is_ok(), "{results:?}");
        let reverse = LinkStore::new(repo, "a_b", true);
        assert!(reverse.create("t4", "s9").await.is_err());
        assert_eq!(
            links.by_target("t1").await.unwrap().unwrap().source_id,
            "s1"
        );
        // Replacing a source's link frees its old target.
        let old = links.by_source("s1").await.unwrap();
        let results = links
            .apply(&[NewLink {
                replaces: old,
                ..new("s1", "t5")
            }])
            .await;
        assert!(results[0].is_ok(), "{results:?}");
        links.create("s6", "t1").await.unwrap();
    }

    #[tokio::test]
    async fn links_keep_the_applied_assignments_and_old_links_read_as_none() {
        let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let links = LinkStore::new(repo.clone(), "a_b", false);
        links.ensure_indexes().await.unwrap();
        let applied = json!([{"_id": "a1", "attributes": [{"name": "d", "value": "x"}]}]);
        let made = links
            .apply(&[NewLink {
                source_id: "s1".into(),
                target_id: "t1".into(),
                replaces: None,
                assignments: applied.clone(),
            }])
            .await;
        let link = made[0].as_ref().unwrap();
        assert_eq!(links.by_source("s1").await.unwrap().unwrap(), *link);
        // The reverse view reads the same record.
        let reverse = LinkStore::new(repo.clone(), "a_b", true);
        assert_eq!(
            reverse.by_source("t1").await.unwrap().unwrap().assignments,
            applied
        );
        // Cleared: the field goes, the ends stay unique.
        links.set_assignments(link, &json!([])).await.unwrap();
        let stored = repo
            .read(links.resource(), &link.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(stored.content),
            json!({"firstId": "s1", "secondId": "t1", "linkQualifier": "default"})
        );
        let cleared = links.by_source("s1").await.unwrap().unwrap();
        assert_eq!(cleared.assignments, Value::Null);
        links.set_assignments(&cleared, &applied).await.unwrap();
        assert_eq!(
            links.by_target("t1").await.unwrap().unwrap().assignments,
            applied
        );
        assert!(links.create("s2", "t1").await.is_err());
        // A link written before the field existed has applied nothing.
        let old = links.create("s3", "t3").await.unwrap();
        assert_eq!(old.assignments, Value::Null);
        assert_eq!(links.by_source("s3").await.unwrap().unwrap(), old);
    }

    #[tokio::test]
    async fn duplicates_left_by_older_versions_are_removed_keeping_the_first_link() {
        let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
        let links = LinkStore::new(repo.clone(), "a_b", false);
        links.ensure_indexes().await.unwrap();
        // Written without the unique rule, as older versions did.
        for (id, s, t) in [
            ("1", "s1", "t1"),
            ("2", "s2", "t1"),
            ("3", "s1", "t3"),
            ("4", "s4", "t4"),
        ] {
            repo.create(
                links.resource(),
                id,
                links.content(s, t, &Value::Null),
                Default::default(),
            )
            .await
            .unwrap();
        }
        let removed = links.remove_duplicates().await.unwrap();
        let ids: Vec<&str> = removed.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["2", "3"]);
        assert_eq!(
            links.by_target("t1").await.unwrap().unwrap().source_id,
            "s1"
        );
        assert_eq!(
            links.by_source("s4").await.unwrap().unwrap().target_id,
            "t4"
        );
        assert_eq!(links.by_source("s2").await.unwrap(), None);
        assert!(links.remove_duplicates().await.unwrap().is_empty());
    }
}
