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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Authenticator, Caller};

pub const POSITIVE_TTL: Duration = Duration::from_secs(300);
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

pub struct CachingAuthenticator {
    inner: Arc<dyn Authenticator>,
    salt: [u8; 32],
    accepted: Cache<[u8; 32], Arc<Caller>>,
    rejected: Cache<[u8; 32], ()>,
    permits: Arc<Semaphore>,
    generation: AtomicU64,
}

impl CachingAuthenticator {
    pub fn new(inner: Arc<dyn Authenticator>) -> Self {
        Self {
            inner,
            salt: rand::random(),
            accepted: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(POSITIVE_TTL)
                .build(),
            rejected: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            generation: AtomicU64::new(0),
        }
    }

    /// Forgets every cached verdict (after internal users changed).
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.accepted.invalidate_all();
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
}

#[async_trait::async_trait]
impl Authenticator for CachingAuthenticator {
    async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>> {
        let key = self.key(user, password);
        if let Some(caller) = self.accepted.get(&key).await {
            return Some(caller);
        }
        if self.rejected.contains_key(&key) {
            return None;
        }
        let result = self
            .accepted
            .optionally_get_with(key, async {
                let _permit = self.permits.acquire().await.ok()?;
                self.inner.authenticate(user, password).await
            })
            .await;
        if result.is_none() {
            self.rejected.insert(key, ()).await;
        }
        result
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
}
