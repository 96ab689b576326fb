//! Rate limits (`gateway.json` `rateLimit`, a gateway extra): a token bucket per
//! authenticated caller and one per remote instance (governor's GCRA: `requestsPerSecond`
//! refills, `burst` is the bucket). A request over a limit is answered 429 with
//! `Retry-After` before anything is done or forwarded.
//!
//! ```json
//! "rateLimit": {"perCaller": {"requestsPerSecond": 50, "burst": 100},
//!               "perInstance": {"requestsPerSecond": 500, "burst": 1000}}
//! ```

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// Keys kept before idle ones are dropped (a caller whose bucket is full again needs no
/// state).
const KEYS_BEFORE_CLEANUP: usize = 10_000;

/// `rateLimit` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitFile {
    pub per_caller: Option<QuotaFile>,
    pub per_instance: Option<QuotaFile>,
}

/// One quota as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaFile {
    pub requests_per_second: f64,
    /// Requests allowed at once after a quiet spell (default: one second's worth).
    pub burst: Option<u32>,
}

impl QuotaFile {
    fn quota(&self, what: &str) -> Result<Quota, String> {
        let rps = self.requests_per_second;
        if !rps.is_finite() || !(0.001..=1_000_000.0).contains(&rps) {
            return Err(format!(
                "rateLimit.{what}.requestsPerSecond must be between 0.001 and 1000000, not {rps}"
            ));
        }
        let burst = match self.burst {
            Some(b) => NonZeroU32::new(b)
                .ok_or_else(|| format!("rateLimit.{what}.burst must be at least 1"))?,
            None => NonZeroU32::new(rps.ceil() as u32).unwrap_or(NonZeroU32::MIN),
        };
        let period = Duration::from_secs_f64(1.0 / rps);
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| format!("rateLimit.{what}.requestsPerSecond is too high"))
    }
}

impl RateLimitFile {
    /// Checks the file's quotas (at load, so a bad one stops the start with the reason).
    pub fn check(&self) -> Result<(), String> {
        RateLimits::new(self).map(drop)
    }
}

/// The live limiters.
#[derive(Default)]
pub struct RateLimits {
    per_caller: Option<DefaultKeyedRateLimiter<String>>,
    per_instance: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    pub fn new(file: &RateLimitFile) -> Result<RateLimits, String> {
        let keyed = |q: &Option<QuotaFile>, what: &str| -> Result<_, String> {
            q.as_ref()
                .map(|q| q.quota(what).map(RateLimiter::keyed))
                .transpose()
        };
        Ok(RateLimits {
            per_caller: keyed(&file.per_caller, "perCaller")?,
            per_instance: keyed(&file.per_instance, "perInstance")?,
        })
    }

    /// `Err(wait)` when caller `id` is over its limit.
    pub fn caller(&self, id: &str) -> Result<(), Duration> {
        check(self.per_caller.as_ref(), id)
    }

    /// `Err(wait)` when instance `name` is over its limit.
    pub fn instance(&self, name: &str) -> Result<(), Duration> {
        check(self.per_instance.as_ref(), name)
    }
}

fn check(limiter: Option<&DefaultKeyedRateLimiter<String>>, key: &str) -> Result<(), Duration> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    if limiter.len() > KEYS_BEFORE_CLEANUP {
        limiter.retain_recent();
    }
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// `Retry-After` in whole seconds (at least 1).
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_have_their_own_buckets() {
        let limits = RateLimits::new(&RateLimitFile {
            per_caller: Some(QuotaFile {
                requests_per_second: 1.0,
                burst: Some(3),
            }),
            per_instance: None,
        })
        .unwrap();
        for _ in 0..3 {
            assert!(limits.caller("alice").is_ok());
        }
        let wait = limits.caller("alice").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after(wait), 1);
        assert!(limits.caller("bob").is_ok());
        assert!(limits.instance("dc1").is_ok(), "no instance limit");
    }

    #[test]
    fn bad_quotas_are_named() {
        for (q, needle) in [
            (
                r#"{"perCaller": {"requestsPerSecond": 0}}"#,
                "perCaller.requestsPerSecond",
            ),
            (
                r#"{"perInstance": {"requestsPerSecond": 5, "burst": 0}}"#,
                "perInstance.burst",
            ),
        ] {
            let file: RateLimitFile = serde_json::from_str(q).unwrap();
            assert!(file.check().unwrap_err().contains(needle), "{q}");
        }
        assert!(serde_json::from_str::<RateLimitFile>(r#"{"perUser": {}}"#).is_err());
    }
}
