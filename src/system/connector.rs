//! The one interface every native connector (LDAP, CSV file, database table) implements,
//! in the ICF model IDM's provisioner speaks: object classes (`__ACCOUNT__`, `__GROUP__`, or
//! a native class), objects with a `__UID__` and a `__NAME__`, attributes by native name.
//!
//! The REST layer ([`super::handler`]) does everything that is the same for all connectors:
//! IDM property names ↔ native names, flags (`NOT_CREATABLE`, `NOT_UPDATEABLE`,
//! `NOT_RETURNED_BY_DEFAULT`, `NOT_READABLE`), value types, `_fields`, the query envelope.
//! A connector sees native names only, and gets filters already translated to them, so it
//! can push them down (LDAP filter, SQL `WHERE`) instead of scanning.

use serde_json::{Map, Value};

use crate::crest::filter::QueryFilter;
use crate::crest::ResourceError;

use super::provisioner::ObjectType;

/// The native name of an object's id (`_id` in IDM).
pub const UID: &str = "__UID__";
/// The native name of an object's naming attribute (an LDAP DN, the CSV name column).
pub const NAME: &str = "__NAME__";
/// The native name of an account's password (never returned).
pub const PASSWORD: &str = "__PASSWORD__";
/// The native name of the enabled flag.
pub const ENABLE: &str = "__ENABLE__";

/// One object as a connector returns it. `attributes` is keyed by native name and may hold
/// [`NAME`]; values are JSON (multi-valued attributes as arrays — the REST layer shapes
/// them to the declared type).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorObject {
    pub uid: String,
    pub attributes: Map<String, Value>,
}

/// Which object class an operation is on, with its declared schema.
pub type ObjectClass = ObjectType;

/// How to page and shape a query.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Page size; 0 = everything.
    pub page_size: usize,
    /// The cookie of the previous page, as this connector returned it.
    pub cookie: Option<String>,
    /// Objects to skip (only when there is no cookie).
    pub offset: usize,
    /// Native attributes to return besides the uid (the REST layer always asks for the
    /// declared readable ones it needs).
    pub attributes: Vec<String>,
    /// Native attribute and ascending?; a connector that cannot sort says so with
    /// [`ConnectorError::NotSupported`].
    pub sort: Vec<(String, bool)>,
    /// Count every match (`_totalPagedResultsPolicy=EXACT`).
    pub count: bool,
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    pub objects: Vec<ConnectorObject>,
    /// Set when more objects follow.
    pub cookie: Option<String>,
    /// Objects after this page, when known.
    pub remaining: Option<i64>,
    /// Every match, when asked and known.
    pub total: Option<i64>,
}

/// One change seen by [`Connector::sync`].
#[derive(Debug, Clone, PartialEq)]
pub enum SyncDelta {
    /// Created or updated: the object as it is now.
    CreateOrUpdate(ConnectorObject),
    /// Deleted: its uid.
    Delete(String),
}

/// The changes after a token, and the token to start from next time.
#[derive(Debug, Clone, Default)]
pub struct SyncBatch {
    pub deltas: Vec<SyncDelta>,
    pub token: Value,
}

/// What a connector operation can fail with. Messages name the object and the resource,
/// never a credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    /// No such object (LDAP noSuchObject, no such row).
    #[error("{0}")]
    NotFound(String),
    /// The object exists already (LDAP entryAlreadyExists, duplicate key).
    #[error("{0}")]
    AlreadyExists(String),
    /// The values break the resource's rules (LDAP constraint or schema violation).
    #[error("{0}")]
    InvalidAttribute(String),
    /// Wrong username or password in `authenticate`.
    #[error("{0}")]
    InvalidCredential(String),
    /// The resource cannot be reached (connection refused, server down).
    #[error("{0}")]
    Unavailable(String),
    /// The operation took longer than its `operationTimeout`.
    #[error("{0}")]
    Timeout(String),
    /// The connector does not do this (e.g. sort on a CSV file).
    #[error("{0}")]
    NotSupported(String),
    /// The configuration is wrong (bad filter attribute, bad base context).
    #[error("{0}")]
    Config(String),
    /// Anything else the resource answered.
    #[error("{0}")]
    Other(String),
}

impl From<ConnectorError> for ResourceError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::NotFound(m) => ResourceError::not_found(m),
            ConnectorError::AlreadyExists(m) => ResourceError::new(412, m),
            ConnectorError::InvalidAttribute(m) => ResourceError::bad_request(m),
            ConnectorError::InvalidCredential(m) => ResourceError::new(401, m),
            ConnectorError::Unavailable(m) => ResourceError::unavailable(m),
            ConnectorError::Timeout(m) => ResourceError::gateway_timeout(m),
            ConnectorError::NotSupported(m) => ResourceError::not_supported(m),
            ConnectorError::Config(m) | ConnectorError::Other(m) => ResourceError::internal(m),
        }
    }
}

pub type ConnectorResult<T> = Result<T, ConnectorError>;

/// A native connector. One instance per provisioner file; it is shared by every request
/// and must pool its own connections. Operations that the resource does not offer answer
/// [`ConnectorError::NotSupported`].
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Checks that the resource answers with this configuration (IDM's `test`).
    async fn test(&self) -> ConnectorResult<()>;

    /// The object classes the resource offers, as IDM `objectTypes` entries (for
    /// `createFullConfig`): `{"<type>": {"nativeType", "properties": {…}}}`.
    async fn schema(&self) -> ConnectorResult<Map<String, Value>>;

    /// Checks `username`/`password` against the resource; the uid of the account.
    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String>;

    /// Creates an object; `uid` is the id the client chose (PUT), if any. The new uid.
    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String>;

    /// One object with `attributes`, or `None`.
    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>>;

    /// Replaces the values of `attributes` (`null` or `[]` clears one); a changed
    /// [`NAME`] renames. The uid afterwards (the same unless the uid is the name).
    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String>;

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()>;

    /// Objects matching `filter` (native names; `None` = all), one page.
    async fn query(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage>;

    /// The token that stands for "now": a liveSync started from it sees later changes only.
    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value>;

    /// Changes after `token`, oldest first, at most `max` of them; `token` of the batch is
    /// where the next call starts.
    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch>;
}
