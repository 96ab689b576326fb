//! The live set of remote instances, rebuilt from each conf snapshot.
//!
//! A rebuild keeps what is still valid: an instance whose credentials, token endpoint,
//! timeouts and trust did not change keeps its token cache; anything else starts fresh.
//! An instance kept as it was keeps its URLs' health and checks; a new or changed one starts
//! with every URL up (and its own checks), and the one it replaces is retired.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;

use crate::config::{ConfSnapshot, InstanceConfig, RemoteAuth, Trust};
use crate::metrics::Metrics;

use super::health::{spawn_checks, UrlSet};
use super::TokenSource;

/// How the gateway authenticates to one remote.
pub enum Credentials {
    /// The ready `Authorization: Basic …` value, marked sensitive.
    Basic(HeaderValue),
    Bearer(Arc<TokenSource>),
}

pub struct RemoteInstance {
    pub config: Arc<InstanceConfig>,
    pub credentials: Credentials,
    pub trust: Arc<Trust>,
    /// Upstream connection-pool group: differs whenever URL, timeouts or trust differ, so a
    /// pooled connection made under old settings is never reused (pingora's pool key
    /// ignores the CA).
    pub group_key: u64,
    /// `instanceUrl` and `failoverUrls` with their health, shared by the proxy, the CREST
    /// client and the active checks.
    pub urls: Arc<UrlSet>,
}

#[derive(Default)]
pub struct Registry {
    instances: HashMap<String, Arc<RemoteInstance>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&Arc<RemoteInstance>> {
        self.instances.get(name)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<RemoteInstance>> {
        self.instances.values()
    }

    /// Builds the registry for `conf`, reusing unchanged instances of `prev`.
    pub fn build(conf: &ConfSnapshot, prev: &Registry, metrics: &Arc<Metrics>) -> Registry {
        let mut instances = HashMap::with_capacity(conf.instances.len());
        for (name, config) in &conf.instances {
            let old = prev.instances.get(name);
            if let Some(old) = old {
                if *old.config == **config && Arc::ptr_eq(&old.trust, &conf.trust) {
                    instances.insert(name.clone(), old.clone());
                    continue;
                }
            }
            match build_instance(config, &conf.trust, old, metrics) {
                Ok(inst) => {
                    let inst = Arc::new(inst);
                    spawn_checks(&inst);
                    instances.insert(name.clone(), inst);
                }
                Err(e) => {
                    tracing::error!(instance = %name, error = %e, "cannot build remote instance");
                    if let Some(old) = old {
                        instances.insert(name.clone(), old.clone());
                    }
                }
            }
        }
        // Old health first, so a successor's gauges with the same labels stay.
        for (name, old) in &prev.instances {
            if !instances.get(name).is_some_and(|new| Arc::ptr_eq(new, old)) {
                old.urls.retire();
            }
        }
        for (name, new) in &instances {
            let kept = prev
                .instances
                .get(name)
                .is_some_and(|old| Arc::ptr_eq(new, old));
            if !kept && new.config.enabled {
                new.urls.publish();
            }
        }
        Registry { instances }
    }
}

fn build_instance(
    config: &Arc<InstanceConfig>,
    trust: &Arc<Trust>,
    old: Option<&Arc<RemoteInstance>>,
    metrics: &Arc<Metrics>,
) -> Result<RemoteInstance, String> {
    let credentials = match &config.auth {
        RemoteAuth::Basic {
            user_name,
            password,
        } => {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{user_name}:{}", password.expose()));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| "userName/password cannot form a header".to_string())?;
            value.set_sensitive(true);
            Credentials::Basic(value)
        }
        RemoteAuth::Bearer(bearer) => {
            // Same token endpoint, client and trust: the cached token stays valid.
            let reusable = old.and_then(|o| match (&o.config.auth, &o.credentials) {
                (RemoteAuth::Bearer(b), Credentials::Bearer(source))
                    if b == bearer
                        && Arc::ptr_eq(&o.trust, trust)
                        && o.config.connect_timeout == config.connect_timeout
                        && o.config.read_timeout == config.read_timeout =>
                {
                    Some(source.clone())
                }
                _ => None,
            });
            match reusable {
                Some(source) => Credentials::Bearer(source),
                None => {
                    let http = crate::tls::http_client_builder(trust)
                        .connect_timeout(config.connect_timeout)
                        .timeout(config.read_timeout)
                        .build()
                        .map_err(|e| format!("cannot build the token HTTP client: {e}"))?;
                    Credentials::Bearer(Arc::new(TokenSource::new(
                        &config.name,
                        bearer,
                        http,
                        metrics.clone(),
                    )))
                }
            }
        }
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.name.hash(&mut h);
    config.url.hash(&mut h);
    config.failover_urls.hash(&mut h);
    config.connect_timeout.hash(&mut h);
    config.read_timeout.hash(&mut h);
    trust.fingerprint.hash(&mut h);
    Ok(RemoteInstance {
        config: config.clone(),
        credentials,
        trust: trust.clone(),
        group_key: h.finish(),
        urls: Arc::new(UrlSet::new(
            &config.name,
            config.urls(),
            &config.health,
            metrics.clone(),
        )),
    })
}
