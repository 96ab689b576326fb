//! Login throttling (a gateway extra, `gateway.json` `loginThrottle`): failed logins are
//! counted per user name and per client address; past the limit within the window, new
//! attempts for that name or from that address are refused with 429 until the window has
//! passed — whether or not the user exists, so the answer tells nothing about accounts.
//! Credentials already verified and cached are not throttled: an attacker guessing a
//! user's password does not lock out that user's running sessions.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoginThrottleConfig {
    /// Failed logins of one user name allowed per window (0: no per-user limit).
    pub max_failures_per_user: u32,
    /// Failed logins from one client address allowed per window (0: no limit).
    pub max_failures_per_address: u32,
    pub window_seconds: u64,
    /// Password verifications that may wait for a CPU permit before new ones get 429.
    pub verification_queue: usize,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures_per_user: 10,
            max_failures_per_address: 50,
            window_seconds: 60,
            verification_queue: super::cache::DEFAULT_VERIFICATION_QUEUE,
        }
    }
}

impl LoginThrottleConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=86_400).contains(&self.window_seconds) {
            return Err("loginThrottle.windowSeconds must be from 1 to 86400".into());
        }
        if self.verification_queue > 100_000 {
            return Err("loginThrottle.verificationQueue must be at most 100000".into());
        }
        Ok(())
    }
}

struct Limit {
    limiter: DefaultKeyedRateLimiter<String>,
    /// Keys over the limit, until the window has passed.
    locked: moka::sync::Cache<String, ()>,
}

impl Limit {
    fn new(max: u32, window: Duration) -> Option<Self> {
        let max = NonZeroU32::new(max)?;
        let period = window / max.get();
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))?.allow_burst(max);
        Some(Self {
            limiter: RateLimiter::keyed(quota),
            locked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        })
    }

    fn failed(&self, key: String) {
        if self.limiter.check_key(&key).is_err() {
            self.locked.insert(key, ());
        }
    }

    fn is_locked(&self, key: &str) -> bool {
        self.locked.contains_key(key)
    }
}

pub struct LoginThrottle {
    per_user: Option<Limit>,
    per_address: Option<Limit>,
    window: Duration,
}

impl LoginThrottle {
    pub fn new(config: &LoginThrottleConfig) -> Self {
        let window = Duration::from_secs(config.window_seconds.max(1));
        Self {
            per_user: Limit::new(config.max_failures_per_user, window),
            per_address: Limit::new(config.max_failures_per_address, window),
            window,
        }
    }

    /// How long to wait when attempts for `user` or from `addr` are throttled now.
    pub fn throttled(&self, user: Option<&str>, addr: Option<IpAddr>) -> Option<Duration> {
        let user_locked = matches!((&self.per_user, user), (Some(l), Some(u)) if l.is_locked(u));
        let addr_locked =
            matches!((&self.per_address, addr), (Some(l), Some(a)) if l.is_locked(&a.to_string()));
        (user_locked || addr_locked).then_some(self.window)
    }

    /// Records a failed login.
    pub fn failed(&self, user: Option<&str>, addr: Option<IpAddr>) {
        if let (Some(l), Some(u)) = (&self.per_user, user) {
            l.failed(u.to_owned());
        }
        if let (Some(l), Some(a)) = (&self.per_address, addr) {
            l.failed(a.to_string());
        }
        // Keeps the limiters' state from growing without bound under a spray of names.
        for l in [&self.per_user, &self.per_address].into_iter().flatten() {
            if l.limiter.len() > 100_000 {
                l.limiter.retain_recent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_lock_the_name_and_the_address_only() {
        let t = LoginThrottle::new(&LoginThrottleConfig {
            max_failures_per_user: 3,
            max_failures_per_address: 5,
            window_seconds: 60,
            verification_queue: 1,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.throttled(Some("bob"), Some(a)).is_none());
            t.failed(Some("bob"), Some(a));
        }
        // The fourth failure is over the limit.
        t.failed(Some("bob"), Some(a));
        assert!(t.throttled(Some("bob"), Some(b)).is_some());
        assert!(t.throttled(Some("alice"), Some(b)).is_none());
        // Address: 5 allowed (4 so far); two more lock it for every name.
        t.failed(Some("x"), Some(a));
        assert!(t.throttled(Some("alice"), Some(a)).is_none());
        t.failed(Some("y"), Some(a));
        assert!(t.throttled(Some("alice"), Some(a)).is_some());
        assert!(t.throttled(Some("alice"), Some(b)).is_none());
    }

    #[test]
    fn zero_disables_a_limit() {
        let t = LoginThrottle::new(&LoginThrottleConfig {
            max_failures_per_user: 0,
            max_failures_per_address: 0,
            ..Default::default()
        });
        for _ in 0..100 {
            t.failed(Some("bob"), None);
        }
        assert!(t.throttled(Some("bob"), None).is_none());
    }
}
