//! LDAP connector (to be written).
use super::connector::*;
use super::provisioner::Provisioner;
use crate::crest::filter::QueryFilter;
use serde_json::{Map, Value};

pub struct LdapConnector;

impl LdapConnector {
    pub fn new(_p: &Provisioner) -> Result<Self, Vec<String>> {
        Err(vec!["the LDAP connector is not built yet".into()])
    }
}

#[async_trait::async_trait]
impl Connector for LdapConnector {
    async fn test(&self) -> ConnectorResult<()> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn authenticate(&self, _: &ObjectClass, _: &str, _: &str) -> ConnectorResult<String> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn create(
        &self,
        _: &ObjectClass,
        _: Option<&str>,
        _: Map<String, Value>,
    ) -> ConnectorResult<String> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn read(
        &self,
        _: &ObjectClass,
        _: &str,
        _: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn update(
        &self,
        _: &ObjectClass,
        _: &str,
        _: Map<String, Value>,
    ) -> ConnectorResult<String> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn delete(&self, _: &ObjectClass, _: &str) -> ConnectorResult<()> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn query(
        &self,
        _: &ObjectClass,
        _: Option<&QueryFilter>,
        _: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn latest_sync_token(&self, _: &ObjectClass) -> ConnectorResult<Value> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
    async fn sync(&self, _: &ObjectClass, _: &Value, _: usize) -> ConnectorResult<SyncBatch> {
        Err(ConnectorError::NotSupported("not built yet".into()))
    }
}
