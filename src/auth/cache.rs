//! Verified-credential cache in front of a slow [`Authenticator`].
//!
//! Keys are a salted SHA-256 of user and password (the password itself is never kept).
//! Successes are cached for [`POSITIVE_TTL`], failures for [`NEGATIVE_TTL`] so a burst of
//! wrong passwords costs one hash each, not one per request. Concurrent requests with the
//! same credentials share one verification (moka's `get_with`), and at most
//! [`MAX_CONCURRENT_VERIFICATIONS`] hashes run at once so a flood of random passwords
//! cannot take every core.
//!
//! A change of the users (password, roles) takes effect at once: the keys include a
//! generation that [`CachingAuthenticator::invalidate_all`] advances, so a verification
//! that was running when the change happened stores its verdict under the old generation,
//! where no later request looks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Authenticator, Caller};

pub const POSITIVE_TTL: Duration = Duration::from_secs(300);
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Verifications that may wait for a permit; beyond it a new credential is answered
/// "busy" at once (429) instead of queueing behind a flood.
pub const DEFAULT_VERIFICATION_QUEUE: usize = 64;

/// Why a credential was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name or password (or no such user).
    Rejected,
    /// Too many verifications are waiting: try again later.
    Busy,
}

pub struct CachingAuthenticator {
    inner: Arc<dyn Authenticator>,
    salt: [u8; 32],
    accepted: Cache<[u8; 32], Arc<Caller>>,
    rejected: Cache<[u8; 32], ()>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    generation: AtomicU64,
    /// Advanced by every per-caller change; `changed` keeps when each caller last changed,
    /// so a verification that overlapped a change does not keep its verdict.
    epoch: AtomicU64,
    changed: moka::sync::Cache<(String, String), u64>,
}

impl CachingAuthenticator {
    pub fn new(inner: Arc<dyn Authenticator>) -> Self {
        Self::with_queue(inner, DEFAULT_VERIFICATION_QUEUE)
    }

    pub fn with_queue(inner: Arc<dyn Authenticator>, queue: usize) -> Self {
        Self {
            inner,
            salt: rand::random(),
            accepted: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(POSITIVE_TTL)
                .support_invalidation_closures()
                .build(),
            rejected: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            waiting: AtomicUsize::new(0),
            queue,
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(1),
            changed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    /// Forgets every cached verdict (after internal users changed).
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.accepted.invalidate_all();
        self.rejected.invalidate_all();
    }

    /// Forgets the verdicts of one account (`component`, `id`) after it changed (password,
    /// status, roles): other callers keep their cached verdicts.
    pub fn invalidate_caller(&self, component: &str, id: &str) {
        let at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed
            .insert((component.to_owned(), id.to_owned()), at);
        let (component, id) = (component.to_owned(), id.to_owned());
        // Only fails when closures are not enabled, which they are.
        let _ = self
            .accepted
            .invalidate_entries_if(move |_, c| c.user == id && c.component == component);
        // A wrong password tried before the change may be the new one.
        self.rejected.invalidate_all();
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(self.generation.load(Ordering::SeqCst).to_le_bytes());
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// A cached verdict only: `Some(caller)` for credentials accepted recently.
    pub async fn cached(&self, user: &str, password: &str) -> Option<Arc<Caller>> {
        self.accepted.get(&self.key(user, password)).await
    }

    /// Checks credentials: the cached verdict, or a verification (shared by concurrent
    /// requests with the same credentials) when a place in the queue is free.
    pub async fn check(&self, user: &str, password: &str) -> Result<Arc<Caller>, Refusal> {
        let key = self.key(user, password);
        if let Some(caller) = self.accepted.get(&key).await {
            return Ok(caller);
        }
        if self.rejected.contains_key(&key) {
            return Err(Refusal::Rejected);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue + MAX_CONCURRENT_VERIFICATIONS
        {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Busy);
        }
        let started = self.epoch.load(Ordering::SeqCst);
        let result = self
            .accepted
            .optionally_get_with(key, async {
                let _permit = self.permits.acquire().await.ok()?;
                self.inner.authenticate(user, password).await
            })
            .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match result {
            Some(caller) => {
                // The account changed while it was being verified: answer this request
                // with what was read, but do not keep it.
                let changed = self
                    .changed
                    .get(&(caller.component.clone(), caller.user.clone()));
                if changed.is_some_and(|at| at > started) {
                    self.accepted.invalidate(&key).await;
                }
                Ok(caller)
            }
            None => {
                self.rejected.insert(key, ()).await;
                Err(Refusal::Rejected)
            }
        }
    }
}

#[async_trait::async_trait]
impl Authenticator for CachingAuthenticator {
    async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>> {
        self.check(user, password).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl Authenticator for Counting {
        async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            (user == "u" && password == "p")
                .then(|| Arc::new(Caller::new("u", "internal/user", vec![])))
        }
    }

    #[tokio::test]
    async fn verifies_once_per_credential() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let auth = CachingAuthenticator::new(inner.clone());
        for _ in 0..5 {
            assert!(auth.authenticate("u", "p").await.is_some());
            assert!(auth.authenticate("u", "wrong").await.is_none());
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        // A different password for the same user is a different entry.
        assert!(auth.authenticate("u", "p2").await.is_none());
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }

    /// Accepts "old" until the password changes; the first verification is slow.
    struct Changing {
        changed: std::sync::atomic::AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Authenticator for Changing {
        async fn authenticate(&self, _user: &str, password: &str) -> Option<Arc<Caller>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            // Reads the stored password, then takes its time hashing.
            let current = if self.changed.load(Ordering::SeqCst) {
                "new"
            } else {
                "old"
            };
            if call == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (password == current).then(|| Arc::new(Caller::new("u", "internal/user", vec![])))
        }
    }

    #[tokio::test]
    async fn a_change_during_a_verification_is_not_undone_by_its_verdict() {
        let inner = Arc::new(Changing {
            changed: Default::default(),
            calls: AtomicUsize::new(0),
        });
        let auth = Arc::new(CachingAuthenticator::new(inner.clone()));
        let racing = {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate("u", "old").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The password changes while the old one is being verified.
        inner.changed.store(true, Ordering::SeqCst);
        auth.invalidate_all();
        // The check that started before the change may answer with what it read...
        assert!(racing.await.unwrap().is_some());
        // ...but its verdict is not what the next request gets.
        assert!(auth.authenticate("u", "old").await.is_none());
        assert!(auth.authenticate("u", "new").await.is_some());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_change_of_one_account_during_its_verification_is_not_undone() {
        let inner = Arc::new(Changing {
            changed: Default::default(),
            calls: AtomicUsize::new(0),
        });
        let auth = Arc::new(CachingAuthenticator::new(inner.clone()));
        let racing = {
            let auth = auth.clone();
            tokio::spawn(async move { auth.check("u", "old").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        inner.changed.store(true, Ordering::SeqCst);
        auth.invalidate_caller("internal/user", "u");
        assert!(racing.await.unwrap().is_ok());
        assert_eq!(auth.check("u", "old").await, Err(Refusal::Rejected));
        assert!(auth.check("u", "new").await.is_ok());
    }

    #[tokio::test]
    async fn invalidating_one_account_keeps_the_others() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let auth = CachingAuthenticator::new(inner.clone());
        assert!(auth.check("u", "p").await.is_ok());
        auth.invalidate_caller("internal/user", "someone-else");
        assert!(auth.check("u", "p").await.is_ok());
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        auth.invalidate_caller("internal/user", "u");
        assert!(auth.check("u", "p").await.is_ok());
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }

    /// Never answers until released.
    struct Stuck(tokio::sync::Notify);

    #[async_trait::async_trait]
    impl Authenticator for Stuck {
        async fn authenticate(&self, _user: &str, _password: &str) -> Option<Arc<Caller>> {
            self.0.notified().await;
            None
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once_and_cached_callers_pass() {
        let inner = Arc::new(Stuck(tokio::sync::Notify::new()));
        let auth = Arc::new(CachingAuthenticator::with_queue(inner.clone(), 1));
        // 2 running + 1 waiting fill it.
        let mut held = Vec::new();
        for i in 0..3 {
            let auth = auth.clone();
            held.push(tokio::spawn(async move {
                auth.check("u", &format!("p{i}")).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(auth.check("u", "p9").await, Err(Refusal::Busy));
        inner.0.notify_waiters();
        for h in held {
            h.abort();
        }
    }
}
