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
/// touches no network and no file.
pub fn build_connector(p: &Provisioner) -> Result<Arc<dyn Connector>, Vec<String>> {
    Ok(match p.kind {
        ConnectorKind::Ldap => Arc::new(ldap::LdapConnector::new(p)?),
        ConnectorKind::Csv => Arc::new(csv::CsvConnector::new(p)?),
        ConnectorKind::DatabaseTable => Arc::new(table::TableConnector::new(p)?),
    })
}

/// Parses and checks a provisioner document (the reload's validation and `testConfig`).
pub fn parse_and_build(name: &str, doc: &Value) -> Result<System, Vec<String>> {
    let config = provisioner::parse(name, doc)?;
    let connector = build_connector(&config)?;
    Ok(System {
        config: Arc::new(config),
        connector,
    })
}

/// The systems, by name.
#[derive(Default, Clone)]
pub struct Systems {
    by_name: BTreeMap<String, Arc<System>>,
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

    /// `prev` with files applied (`Some(doc)`) or removed (`None`). A document that does
    /// not build keeps the previous system of that name.
    pub fn with_changes(prev: &Systems, changes: Vec<(String, Option<&Value>)>) -> Systems {
        let mut next = prev.clone();
        for (name, doc) in changes {
            match doc {
                None => {
                    next.by_name.remove(&name);
                }
                Some(doc) => match parse_and_build(&name, doc) {
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
}
