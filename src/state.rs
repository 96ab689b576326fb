//! Live state shared by every request: the conf snapshot and the remote registry, swapped
//! together atomically on reload. A request takes one [`Live`] at its start and uses it to
//! the end, so a reload never shows it half a config.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::config::{self, ConfSnapshot, Dirs, ReloadOutcome};
use crate::metrics::Metrics;
use crate::remote::Registry;

pub struct Live {
    pub conf: Arc<ConfSnapshot>,
    pub registry: Arc<Registry>,
}

pub struct Gateway {
    pub dirs: Dirs,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<dyn Authenticator>,
    live: ArcSwap<Live>,
    reload_lock: Mutex<()>,
}

impl Gateway {
    /// Builds the state and performs the first load.
    pub fn new(dirs: Dirs, metrics: Arc<Metrics>, auth: Arc<dyn Authenticator>) -> Self {
        let gw = Self {
            dirs,
            metrics,
            auth,
            live: ArcSwap::from_pointee(Live {
                conf: Arc::new(ConfSnapshot::default()),
                registry: Arc::new(Registry::default()),
            }),
            reload_lock: Mutex::new(()),
        };
        gw.reload();
        gw
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Re-reads the conf and certs directories and swaps in the result if anything
    /// changed. Safe to call from any thread at any time; calls are serialised.
    pub fn reload(&self) -> Vec<(String, ReloadOutcome)> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let prev = self.live.load_full();
        let (conf, outcomes) = config::load(&self.dirs, &prev.conf);
        if outcomes.is_empty() {
            return outcomes;
        }
        let registry = Registry::build(&conf, &prev.registry, &self.metrics);
        self.live.store(Arc::new(Live {
            conf: Arc::new(conf),
            registry: Arc::new(registry),
        }));
        let live = self.live.load();
        for (id, outcome) in &outcomes {
            self.metrics
                .config_reloads
                .with_label_values(&[outcome.label()])
                .inc();
            match outcome {
                ReloadOutcome::Rejected(problems) => tracing::error!(
                    config = %id,
                    problems = %problems.join("; "),
                    "config rejected; the last good version stays live"
                ),
                other => tracing::info!(config = %id, outcome = other.label(), "config reloaded"),
            }
        }
        self.update_instance_gauges(&live);
        outcomes
    }

    fn update_instance_gauges(&self, live: &Live) {
        let enabled = live.registry.iter().filter(|i| i.config.enabled).count();
        let disabled = live.registry.len() - enabled;
        let invalid = live
            .conf
            .files
            .iter()
            .filter(|(id, f)| config::instance_name(id).is_some() && !f.is_valid())
            .count();
        let g = &self.metrics.instances;
        g.with_label_values(&["enabled"]).set(enabled as i64);
        g.with_label_values(&["disabled"]).set(disabled as i64);
        g.with_label_values(&["invalid"]).set(invalid as i64);
    }
}
