//! `/openidm/system`: objects of external resources through native connectors (LDAP, CSV
//! file, database table) configured by IDM's `conf/provisioner.openicf-<name>.json`.
//!
//! * [`provisioner`]: the provisioner file format, parsed and validated.
//! * [`connector`]: the one trait every connector implements, in ICF terms.
//! * [`handler`]: the REST surface of seed 004, the same for every connector.
//! * [`ldap`], [`csv`], [`table`]: the connectors.
//!
//! The live set of systems is [`Systems`], rebuilt on reload: a file that did not change
//! keeps its connector (and its pooled connections); a rejected file keeps the last good one.
//! A change of `certs/` rebuilds the connectors that verify TLS servers with it
//! ([`Systems::with_trust`]).

pub mod connector;
pub mod convert;
pub mod csv;
pub mod handler;
pub mod ldap;
pub mod provisioner;
pub mod service;
pub mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::Trust;

pub use connector::{Connector, ConnectorError, ConnectorObject, QueryOptions, QueryPage};
pub use provisioner::{provisioner_name, ConnectorKind, ObjectType, Provisioner};

/// System and object type names: plain characters only (they end up in URLs and ids).
pub fn valid_system_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One configured system: its provisioner file and the connector built from it.
pub struct System {
    pub config: Arc<Provisioner>,
    pub connector: Arc<dyn Connector>,
}

/// Builds the connector a provisioner file names. Checks its `configurationProperties`;
/// touches no network and no file. `trust` (the `certs/` anchors, added to the platform
/// roots) verifies the servers of TLS connections (LDAP `ssl`/`startTLS`).
pub fn build_connector(
    p: &Provisioner,
    trust: &Arc<Trust>,
) -> Result<Arc<dyn Connector>, Vec<String>> {
    Ok(match p.kind {
        ConnectorKind::Ldap => Arc::new(ldap::LdapConnector::new(p, trust.clone())?),
        ConnectorKind::Csv => Arc::new(csv::CsvConnector::new(p)?),
        ConnectorKind::DatabaseTable => Arc::new(table::TableConnector::new(p)?),
    })
}

/// Parses and checks a provisioner document (the reload's validation and `testConfig`).
pub fn parse_and_build(name: &str, doc: &Value, trust: &Arc<Trust>) -> Result<System, Vec<String>> {
    let config = provisioner::parse(name, doc)?;
    let connector = build_connector(&config, trust)?;
    Ok(System {
        config: Arc::new(config),
        connector,
    })
}

/// The systems, by name.
#[derive(Default, Clone)]
pub struct Systems {
    by_name: BTreeMap<String, Arc<System>>,
    /// The trust the connectors were built with (for `testConfig` and the like).
    trust: Arc<Trust>,
}

impl Systems {
    pub fn get(&self, name: &str) -> Option<&Arc<System>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<System>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The trust (`certs/`) the connectors verify TLS servers with.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// `prev` with files applied (`Some(doc)`) or removed (`None`). A document that does
    /// not build keeps the previous system of that name.
    pub fn with_changes(
        prev: &Systems,
        changes: Vec<(String, Option<&Value>)>,
        trust: &Arc<Trust>,
    ) -> Systems {
        let mut next = prev.clone();
        next.trust = trust.clone();
        for (name, doc) in changes {
            match doc {
                None => {
                    next.by_name.remove(&name);
                }
                Some(doc) => match parse_and_build(&name, doc, trust) {
                    Ok(system) => {
                        next.by_name.insert(name, Arc::new(system));
                    }
                    Err(problems) => {
                        tracing::error!(system = %name, problems = %problems.join("; "),
                            "provisioner rejected; the last good version stays live");
                    }
                },
            }
        }
        next
    }

    /// `prev` with every connector that verifies TLS servers ([`ldap::uses_tls`]) rebuilt
    /// from its last good configuration on `trust`, so that new connections use it. The
    /// others keep their connector (and connections).
    pub fn with_trust(prev: &Systems, trust: &Arc<Trust>) -> Systems {
        let mut next = prev.clone();
        next.trust = trust.clone();
        for (name, system) in &prev.by_name {
            if !ldap::uses_tls(&system.config) {
                continue;
            }
            match build_connector(&system.config, trust) {
                Ok(connector) => {
                    next.by_name.insert(
                        name.clone(),
                        Arc::new(System {
                            config: system.config.clone(),
                            connector,
                        }),
                    );
                }
                // Cannot happen (it built before); keep the old one.
                Err(problems) => {
                    tracing::error!(system = %name, problems = %problems.join("; "),
                        "connector not rebuilt for the new trust");
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ldap(props: Value) -> Value {
        json!({
            "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
            "configurationProperties": props,
        })
    }

    #[test]
    fn a_trust_change_rebuilds_the_tls_systems_only() {
        let plain = ldap(json!({"host": "h", "baseContexts": ["dc=x"]}));
        let ldaps = ldap(json!({"host": "h", "baseContexts": ["dc=x"], "ssl": true}));
        let start = ldap(json!({"host": "h", "baseContexts": ["dc=x"], "startTLS": true}));
        let empty = Arc::new(Trust::default());
        let prev = Systems::with_changes(
            &Systems::default(),
            vec![
                ("plain".into(), Some(&plain)),
                ("ldaps".into(), Some(&ldaps)),
                ("start".into(), Some(&start)),
            ],
            &empty,
        );
        assert!(Arc::ptr_eq(prev.trust(), &empty));
        let trust = Arc::new(Trust {
            certificates: vec![vec![1, 2, 3]],
            fingerprint: 7,
            ..Default::default()
        });
        let next = Systems::with_trust(&prev, &trust);
        assert!(Arc::ptr_eq(next.trust(), &trust));
        assert_eq!(next.len(), 3);
        let same = |name: &str| {
            let (a, b) = (prev.get(name).unwrap(), next.get(name).unwrap());
            Arc::ptr_eq(a, b)
        };
        assert!(same("plain"));
        assert!(!same("ldaps"));
        assert!(!same("start"));
        assert!(Arc::ptr_eq(
            &prev.get("ldaps").unwrap().config,
            &next.get("ldaps").unwrap().config
        ));
    }
}
