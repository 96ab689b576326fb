//! IDM's relationship change notification, which keeps relationship-derived virtual
//! properties ([`super::derived`]) current:
//!
//! * a relationship created, changed or deleted through property `p` of the origin object
//!   (the one in the URL) notifies the origin when `p` declares `notifySelf`, and the
//!   referenced object when `p`'s `resourceCollection` entry declares `notify`;
//! * an object notified through its property `f`, or whose property `f` changed in a
//!   write, passes the notification on to the objects referenced through the fields of
//!   `f`'s `notifyRelationships` (a role's `assignments` → its `members`);
//! * a notified object recomputes its derived properties and, when they changed, is
//!   written like any update (triggers, policies, implicit sync: a user whose
//!   `effectiveAssignments` changed is pushed to the targets).
//!
//! Gateway addition: a relationship change also refreshes the derived properties that
//! follow that relationship directly (a user's `effectiveRoles` when its `roles` change),
//! even when `managed.json` declares no notification, so the object's own value is
//! never stale after its own write.
//!
//! A wave runs inline, before the write is answered, up to [`INLINE`] recomputed objects;
//! the rest (a role with 100 000 members) continues in the background, one small write per
//! object, so other writes interleave instead of waiting for it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::conditional::{self, Conditions};
use super::derived::{Derive, Memo};
use super::store::{edges_of, Edge, End};
use super::Graph;
use crate::crest::{Caller, Operation, Request, ResourceError};
use crate::crypto::Crypto;
use crate::events::ChangeHook;
use crate::managed::objects::ObjectSet;
use crate::managed::SchemaSource;
use crate::repo::Repo;
use crate::script::ScriptEngine;

/// Objects recomputed before a write is answered; the rest of a wave runs in the
/// background.
pub const INLINE: usize = 256;

/// Something a committed write did that may notify objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A relationship created, changed or deleted through `origin`'s property.
    Edge { origin: End, other: End },
    /// Property `object.property` changed in a write of the object.
    Changed(End),
    /// The condition in `object.property` changed: its conditional grants are redone.
    Condition(End),
    /// Notify the object through `property` (the temporal constraints' sweeper).
    Notify(End),
}

impl Event {
    /// The events of edges written through object `collection`/`id`.
    pub fn edges<'e>(
        collection: &str,
        id: &str,
        edges: impl IntoIterator<Item = &'e Edge>,
    ) -> Vec<Event> {
        edges
            .into_iter()
            .map(|e| {
                let origin = e.end_of(collection, id).clone();
                let other = e.other(&origin).clone();
                Event::Edge { origin, other }
            })
            .collect()
    }
}

/// The events of one request, collected as its writes commit.
#[derive(Default)]
pub struct Events(Mutex<Vec<Event>>);

impl Events {
    pub fn extend(&self, events: impl IntoIterator<Item = Event>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What notifications need to rewrite objects as the managed handler does.
pub struct Notifier {
    pub repo: Arc<dyn Repo>,
    pub schema: SchemaSource,
    pub hook: Option<Arc<dyn ChangeHook>>,
    pub crypto: Option<Arc<Crypto>>,
    pub engine: Option<Arc<ScriptEngine>>,
    pub conditions: Arc<Conditions>,
}

impl Notifier {
    /// Carries out the notifications of `events`: inline up to [`INLINE`] recomputed
    /// objects, the rest in the background.
    pub async fn run(self: &Arc<Self>, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut wave = Wave {
            n: self.clone(),
            graph: Graph::new((self.schema)()),
            queue: events.into(),
            seen: HashSet::new(),
            refreshed: HashSet::new(),
            memo: Memo::default(),
            recomputed: 0,
        };
        if wave.step(INLINE).await {
            return;
        }
        tracing::info!(
            pending = wave.queue.len(),
            "relationship notifications continue in the background"
        );
        tokio::spawn(async move {
            wave.step(usize::MAX).await;
            tracing::info!(
                recomputed = wave.recomputed,
                "relationship notifications done"
            );
        });
    }
}

struct Wave {
    n: Arc<Notifier>,
    graph: Graph,
    queue: VecDeque<Event>,
    /// Objects notified (by reference and property) in this wave: each once.
    seen: HashSet<(String, Option<String>)>,
    /// Objects whose derived properties this wave recomputed: each once.
    refreshed: HashSet<String>,
    memo: Memo,
    recomputed: usize,
}

impl Wave {
    /// Processes events until the queue is empty (true) or `budget` objects were
    /// recomputed (false).
    async fn step(&mut self, budget: usize) -> bool {
        let mut spent = 0;
        while let Some(event) = self.queue.pop_front() {
            match self.one(event).await {
                Ok(recomputed) => spent += usize::from(recomputed),
                Err(e) => tracing::warn!(error = %e.message, "a relationship notification failed"),
            }
            if spent >= budget && !self.queue.is_empty() {
                return false;
            }
        }
        true
    }

    /// One event; true when it recomputed an object.
    async fn one(&mut self, event: Event) -> Result<bool, ResourceError> {
        match event {
            Event::Edge { origin, other } => {
                let Some(schema) = self.graph.schema_of(&origin.collection) else {
                    return Ok(false);
                };
                let Some(rel) = origin.property.as_deref().and_then(|p| schema.relation(p)) else {
                    return Ok(false);
                };
                if rel.notify_self || self.follows(&origin) {
                    self.queue.push_back(Event::Notify(origin.clone()));
                }
                if rel.collection(&other.collection).is_some_and(|c| c.notify)
                    || self.follows(&other)
                {
                    self.queue.push_back(Event::Notify(other));
                }
                Ok(false)
            }
            Event::Changed(at) => {
                self.relay(&at).await?;
                Ok(false)
            }
            Event::Condition(at) => {
                let (Some(schema), Some(field)) =
                    (self.graph.schema_of(&at.collection), at.property.as_deref())
                else {
                    return Ok(false);
                };
                let edges = conditional::for_role(
                    &self.graph,
                    self.n.repo.as_ref(),
                    &schema,
                    &at.id,
                    field,
                )
                .await?;
                self.queue
                    .extend(Event::edges(&at.collection, &at.id, &edges));
                Ok(false)
            }
            Event::Notify(at) => {
                if !self.seen.insert((at.reference(), at.property.clone())) {
                    return Ok(false);
                }
                let object = End::new(&at.collection, &at.id, None);
                let recomputed =
                    self.refreshed.insert(object.reference()) && self.refresh(&object).await?;
                self.relay(&at).await?;
                Ok(recomputed)
            }
        }
    }

    /// Whether `end`'s object has a derived property following `end`'s property first.
    fn follows(&self, end: &End) -> bool {
        let (Some(schema), Some(p)) = (self.graph.schema_of(&end.collection), &end.property) else {
            return false;
        };
        let follows = schema
            .derived()
            .any(|(_, cfg)| cfg.fields.first() == Some(p));
        follows
    }

    /// Notifies the objects referenced through `at.property`'s `notifyRelationships`.
    async fn relay(&mut self, at: &End) -> Result<(), ResourceError> {
        let (Some(schema), Some(p)) = (self.graph.schema_of(&at.collection), &at.property) else {
            return Ok(());
        };
        let Some(prop) = schema.property(p) else {
            return Ok(());
        };
        for field in &prop.notify_relationships {
            let me = End::new(&at.collection, &at.id, Some(field));
            let edges = edges_of(self.n.repo.as_ref(), &me)
                .await
                .map_err(ResourceError::from)?;
            for e in edges {
                self.queue.push_back(Event::Notify(e.other(&me).clone()));
            }
        }
        Ok(())
    }

    /// Recomputes the derived properties of `object` and writes them when they changed.
    async fn refresh(&mut self, object: &End) -> Result<bool, ResourceError> {
        let Some(schema) = self.graph.schema_of(&object.collection) else {
            return Ok(false);
        };
        if schema.derived().next().is_none() || !object.collection.starts_with("managed/") {
            return Ok(false);
        }
        let derive = Derive {
            graph: &self.graph,
            repo: self.n.repo.as_ref(),
            now: chrono::Utc::now(),
        };
        let values = derive.values(&schema, &object.id, &mut self.memo).await?;
        let set = ObjectSet {
            repo: self.n.repo.as_ref(),
            schema: &schema,
            hook: self.n.hook.as_deref(),
            crypto: self.n.crypto.as_deref(),
            engine: self.n.engine.as_deref(),
            graph: Some(&self.graph),
            conditions: None,
            priors: None,
            events: None,
        };
        let wrote = set.set_derived(&object.id, values).await?;
        self.recomputed += usize::from(wrote);
        Ok(true)
    }
}

/// The request a notification's rewrite runs under (the system, as IDM's own update).
pub(crate) fn system_update(resource: &str, id: &str) -> Request {
    let mut req = Request::new(
        Operation::Patch { rev: None },
        resource,
        Arc::new(Caller::system()),
    );
    req.path.push(id.to_owned());
    req
}

/// Whether the derived values differ from the stored ones.
pub(crate) fn differs(stored: &Map<String, Value>, values: &Map<String, Value>) -> bool {
    values.iter().any(|(k, v)| stored.get(k) != Some(v))
}
