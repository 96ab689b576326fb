//! Which URLs of one remote instance are up: `instanceUrl` first, then the `failoverUrls`.
//!
//! * Passive health: a refused, reset or timed-out connect marks a URL down for
//!   `health.downForMs`; a connect that succeeds marks it up.
//! * Half-open: once that time is over, one request (or check) claims a trial of the URL;
//!   everyone else keeps skipping it until the trial says up or down.
//! * The circuit is open while every URL is down: [`UrlSet::pick`] answers `None` and the
//!   caller fails fast without connecting.
//! * Active checks: `GET <url>/info/ping` on `health.checkIntervalMs`, from a small runtime
//!   of its own (the registry is rebuilt outside any request).
//!
//! Reads and updates are atomics only: every request of every proxy thread asks this.
//! Nothing here knows about pingora or reqwest's callers; the proxy and the CREST client
//! report what happened through [`UrlSet::mark_up`] / [`UrlSet::mark_down`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::config::{HealthConfig, InstanceUrl};
use crate::metrics::Metrics;

use super::{Credentials, RemoteInstance};

/// One URL and when it may be tried again.
struct UrlState {
    url: InstanceUrl,
    /// `url.base_url()`: the metric label and log field (never credentials or a query).
    label: String,
    /// 0: up. Otherwise the [`now_ms`] from which one trial may claim it.
    down_until: AtomicU64,
}

/// The URLs of one instance, in the order they are tried, and their health.
pub struct UrlSet {
    instance: String,
    urls: Vec<UrlState>,
    down_for_ms: u64,
    /// Replaced by a reload: its metrics belong to its successor, its checks stop.
    retired: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Milliseconds since the first call, never 0 (0 means "up" in [`UrlState::down_until`]).
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl UrlSet {
    /// Every URL starts up.
    pub fn new<'a>(
        instance: &str,
        urls: impl Iterator<Item = &'a InstanceUrl>,
        health: &HealthConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            instance: instance.to_owned(),
            urls: urls
                .map(|url| UrlState {
                    label: url.base_url(),
                    url: url.clone(),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            down_for_ms: health.down_for.as_millis().max(1) as u64,
            retired: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub fn url(&self, i: usize) -> &InstanceUrl {
        &self.urls[i].url
    }

    pub fn label(&self, i: usize) -> &str {
        &self.urls[i].label
    }

    /// Whether URL `i` is up now (a URL whose down time is over is not, until a trial).
    pub fn is_up(&self, i: usize) -> bool {
        self.urls[i].down_until.load(Ordering::Acquire) == 0
    }

    /// The first URL to try that is not in `skip` (a bit per URL index): one that is up,
    /// or a down one whose time is over, claimed for a trial so that only this caller
    /// tries it. `None`: every URL is down (or skipped) — the circuit is open.
    pub fn pick(&self, skip: u32) -> Option<usize> {
        let now = now_ms();
        for (i, state) in self.urls.iter().enumerate() {
            if skip & bit(i) != 0 {
                continue;
            }
            let until = state.down_until.load(Ordering::Acquire);
            if until == 0 {
                return Some(i);
            }
            if now >= until
                && state
                    .down_until
                    .compare_exchange(
                        until,
                        now + self.down_for_ms,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                tracing::info!(instance = %self.instance, url = %state.label, "trying a remote URL that was down");
                return Some(i);
            }
        }
        None
    }

    /// Whether [`Self::pick`] would find a URL outside `skip` now (without claiming it).
    pub fn has_candidate(&self, skip: u32) -> bool {
        let now = now_ms();
        self.urls.iter().enumerate().any(|(i, state)| {
            let until = state.down_until.load(Ordering::Acquire);
            skip & bit(i) == 0 && (until == 0 || now >= until)
        })
    }

    /// URL `i` failed to connect (refused, reset, timed out) or failed its check.
    pub fn mark_down(&self, i: usize) {
        let until = now_ms() + self.down_for_ms;
        let was = self.urls[i].down_until.swap(until, Ordering::AcqRel);
        if was == 0 && !self.retired.load(Ordering::Acquire) {
            tracing::warn!(
                instance = %self.instance,
                url = %self.urls[i].label,
                down_for_ms = self.down_for_ms,
                "remote URL down"
            );
            self.set_gauge(i, 0);
        }
    }

    /// URL `i` accepted a connection or answered its check.
    pub fn mark_up(&self, i: usize) {
        // A load first: the common case (already up) writes nothing to a shared line.
        if self.urls[i].down_until.load(Ordering::Acquire) == 0 {
            return;
        }
        let was = self.urls[i].down_until.swap(0, Ordering::AcqRel);
        if was != 0 && !self.retired.load(Ordering::Acquire) {
            tracing::info!(instance = %self.instance, url = %self.urls[i].label, "remote URL up");
            self.set_gauge(i, 1);
        }
    }

    /// A request moves on to the next URL.
    pub fn count_failover(&self) {
        if !self.retired.load(Ordering::Acquire) {
            self.metrics
                .remote_failovers
                .with_label_values(&[&self.instance])
                .inc();
        }
    }

    /// Shows this set's state in `idm_gateway_remote_url_up`.
    pub fn publish(&self) {
        for i in 0..self.urls.len() {
            self.set_gauge(i, i64::from(self.is_up(i)));
        }
    }

    /// This set was replaced or removed: drop its gauges and stop its checks. A successor
    /// publishes its own afterwards.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        for state in &self.urls {
            let _ = self
                .metrics
                .remote_url_up
                .remove_label_values(&[&self.instance, &state.label]);
        }
    }

    fn set_gauge(&self, i: usize, value: i64) {
        self.metrics
            .remote_url_up
            .with_label_values(&[&self.instance, &self.urls[i].label])
            .set(value);
    }
}

/// The bit of URL index `i` in a `skip` set (at most [`crate::config::MAX_INSTANCE_URLS`]).
pub fn bit(i: usize) -> u32 {
    1u32.checked_shl(i as u32).unwrap_or(0)
}

/// The runtime of the active checks: the registry is rebuilt from the conf watcher's
/// thread and at start-up, where no runtime is current.
fn check_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("remote-health")
            .enable_all()
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot start the remote health checks"))
            .ok()
    })
    .as_ref()
}

/// Starts the active checks of `inst` when its `health.checkIntervalMs` asks for them.
/// They stop once the instance is retired or dropped.
pub fn spawn_checks(inst: &Arc<RemoteInstance>) {
    let Some(interval) = inst.config.health.check_interval else {
        return;
    };
    if !inst.config.enabled {
        return;
    }
    let client = match crate::tls::http_client_builder(&inst.trust)
        .connect_timeout(inst.config.connect_timeout)
        .timeout(inst.config.read_timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(instance = %inst.config.name, error = %e, "no health checks: cannot build their HTTP client");
            return;
        }
    };
    let Some(rt) = check_runtime() else {
        return;
    };
    rt.spawn(check_loop(Arc::downgrade(inst), client, interval));
}

async fn check_loop(inst: Weak<RemoteInstance>, client: reqwest::Client, interval: Duration) {
    loop {
        {
            let Some(inst) = inst.upgrade() else {
                return;
            };
            if inst.urls.retired.load(Ordering::Acquire) {
                return;
            }
            let checks = (0..inst.urls.len()).map(|i| check_one(&inst, &client, i));
            for (i, up) in futures_util::future::join_all(checks)
                .await
                .into_iter()
                .enumerate()
            {
                if up {
                    inst.urls.mark_up(i);
                } else {
                    inst.urls.mark_down(i);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// `GET <url>/info/ping` with the instance's credentials: up when the remote answers
/// anything below 500 (IDM answers 503 while it starts or stops).
async fn check_one(inst: &RemoteInstance, client: &reqwest::Client, i: usize) -> bool {
    let url = format!("{}info/ping", inst.urls.url(i).base_url());
    let authorization = match &inst.credentials {
        Credentials::Basic(value) => Some(value.clone()),
        // A token problem is the token endpoint's, not this URL's: check without one.
        Credentials::Bearer(source) => source.token().await.ok().map(|t| t.header.clone()),
    };
    let mut request = client.get(&url);
    if let Some(value) = authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    match request.send().await {
        Ok(resp) => resp.status().as_u16() < 500,
        Err(e) => {
            tracing::debug!(instance = %inst.config.name, url = %inst.urls.label(i), error = %e.without_url(), "health check failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;

    fn url(host: &str) -> InstanceUrl {
        InstanceUrl {
            tls: false,
            host: host.into(),
            port: 80,
            base_path: "/openidm/".into(),
            authority: host.into(),
        }
    }

    fn set(down_for: Duration) -> UrlSet {
        let urls = [url("a"), url("b")];
        let health = HealthConfig {
            down_for,
            check_interval: None,
        };
        UrlSet::new("x", urls.iter(), &health, Arc::new(Metrics::new()))
    }

    #[test]
    fn first_up_url_wins_and_skipped_ones_are_passed() {
        let s = set(Duration::from_secs(60));
        assert_eq!(s.pick(0), Some(0));
        assert_eq!(s.pick(bit(0)), Some(1));
        assert_eq!(s.pick(bit(0) | bit(1)), None);
        s.mark_down(0);
        assert_eq!(s.pick(0), Some(1));
        assert!(!s.is_up(0));
        s.mark_down(1);
        assert_eq!(s.pick(0), None, "every URL down: circuit open");
        assert!(!s.has_candidate(0));
        s.mark_up(1);
        assert_eq!(s.pick(0), Some(1));
    }

    #[test]
    fn a_down_url_gets_one_trial_once_its_time_is_over() {
        let s = set(Duration::from_millis(1));
        s.mark_down(0);
        s.mark_down(1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.has_candidate(0));
        // The first caller claims the trial of URL 0; the next gets URL 1's trial.
        assert_eq!(s.pick(0), Some(0));
        assert_eq!(s.pick(0), Some(1));
        s.mark_up(0);
        assert_eq!(s.pick(0), Some(0));
    }

    #[test]
    fn gauges_follow_the_state_and_go_when_retired() {
        let s = set(Duration::from_secs(60));
        s.publish();
        let gauge = |u: &str| s.metrics.remote_url_up.with_label_values(&["x", u]).get();
        assert_eq!(gauge("http://a/openidm/"), 1);
        s.mark_down(0);
        assert_eq!(gauge("http://a/openidm/"), 0);
        s.mark_up(0);
        assert_eq!(gauge("http://a/openidm/"), 1);
        s.retire();
        s.mark_down(1);
        let text = String::from_utf8(s.metrics.render()).unwrap();
        assert!(!text.contains("idm_gateway_remote_url_up{"), "{text}");
    }
}
