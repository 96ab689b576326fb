//! `conf/provisioner.openicf-<name>.json` in IDM's format: which connector, its
//! `configurationProperties`, and the `objectTypes` it exposes (a JSON schema per type whose
//! properties carry `nativeName`, `nativeType` and ICF `flags`).
//!
//! Parsing is pure and reports every problem at once, each naming the property at fault.
//! `&{ENV}` references are substituted before parsing, so secrets need not sit in the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{from_env, substitute};

use super::connector::{NAME, UID};

/// Config factory of provisioner files: `provisioner.openicf/<name>`.
pub const FACTORY: &str = "provisioner.openicf";
/// `systemType` of every connector reference IDM shows.
pub const SYSTEM_TYPE: &str = "provisioner.openicf";

/// `provisioner.openicf/<name>` → `<name>`.
pub fn provisioner_name(config_id: &str) -> Option<&str> {
    config_id
        .strip_prefix(FACTORY)
        .and_then(|rest| rest.strip_prefix('/'))
}

/// The connectors this gateway implements natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    Ldap,
    Csv,
    DatabaseTable,
}

/// One entry of IDM's connector catalogue.
pub struct ConnectorInfo {
    pub kind: ConnectorKind,
    pub display_name: &'static str,
    pub bundle_name: &'static str,
    pub connector_name: &'static str,
    /// The ICF bundle version whose configuration properties this connector understands.
    pub bundle_version: &'static str,
}

pub const CONNECTORS: &[ConnectorInfo] = &[
    ConnectorInfo {
        kind: ConnectorKind::Ldap,
        display_name: "LDAP Connector",
        bundle_name: "org.forgerock.openicf.connectors.ldap-connector",
        connector_name: "org.identityconnectors.ldap.LdapConnector",
        bundle_version: "1.5.20.0",
    },
    ConnectorInfo {
        kind: ConnectorKind::Csv,
        display_name: "CSV File Connector",
        bundle_name: "org.forgerock.openicf.connectors.csvfile-connector",
        connector_name: "org.forgerock.openicf.csvfile.CSVFileConnector",
        bundle_version: "1.5.20.0",
    },
    ConnectorInfo {
        kind: ConnectorKind::DatabaseTable,
        display_name: "Database Table Connector",
        bundle_name: "org.forgerock.openicf.connectors.databasetable-connector",
        connector_name: "org.identityconnectors.databasetable.DatabaseTableConnector",
        bundle_version: "1.5.20.0",
    },
];

impl ConnectorKind {
    pub fn info(self) -> &'static ConnectorInfo {
        CONNECTORS
            .iter()
            .find(|c| c.kind == self)
            .unwrap_or(&CONNECTORS[0])
    }

    /// The connector a `connectorRef.connectorName` names.
    pub fn from_connector_name(name: &str) -> Option<Self> {
        CONNECTORS
            .iter()
            .find(|c| c.connector_name == name)
            .map(|c| c.kind)
    }
}

/// JSON type of a property, as declared (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// No `type`, or a list of types: values pass as they come.
    Any,
}

impl PropertyType {
    fn parse(v: Option<&Value>) -> Result<Self, String> {
        Ok(match v {
            None | Some(Value::Null) | Some(Value::Array(_)) => PropertyType::Any,
            Some(Value::String(s)) => match s.as_str() {
                "string" => PropertyType::String,
                "integer" => PropertyType::Integer,
                "number" => PropertyType::Number,
                "boolean" => PropertyType::Boolean,
                "array" => PropertyType::Array,
                "object" => PropertyType::Object,
                "any" | "null" => PropertyType::Any,
                other => return Err(format!("unknown type '{other}'")),
            },
            Some(_) => return Err("must be a string".into()),
        })
    }
}

/// One property of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The IDM name (the key in `properties`).
    pub name: String,
    /// The resource's name for it (`nativeName`, defaults to `name`); `__UID__`/`__NAME__`
    /// for the id and naming attribute.
    pub native_name: String,
    /// `nativeType` as written (`string`, `JAVA_TYPE_GUARDEDSTRING`, …).
    pub native_type: String,
    pub kind: PropertyType,
    /// The declared type of the items of an array.
    pub item_kind: PropertyType,
    pub required: bool,
    pub creatable: bool,
    pub updateable: bool,
    pub readable: bool,
    pub returned_by_default: bool,
}

impl Property {
    /// Read back by default: readable and not `NOT_RETURNED_BY_DEFAULT`.
    pub fn returned(&self) -> bool {
        self.readable && self.returned_by_default
    }
}

/// One entry of `objectTypes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectType {
    /// `account`, `group`, … (the key in `objectTypes`).
    pub name: String,
    /// `__ACCOUNT__`, `__GROUP__` or a native class name.
    pub native_type: String,
    /// In declaration order.
    pub properties: Vec<Property>,
    /// Property index by IDM name.
    by_name: HashMap<String, usize>,
    /// Property index by native name.
    by_native: HashMap<String, usize>,
}

impl ObjectType {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.by_name.get(name).map(|&i| &self.properties[i])
    }

    pub fn by_native(&self, native: &str) -> Option<&Property> {
        self.by_native.get(native).map(|&i| &self.properties[i])
    }

    /// The IDM property mapped to `__NAME__`, if any.
    pub fn name_property(&self) -> Option<&Property> {
        self.by_native(NAME)
    }

    /// Native names of the attributes returned by default (without `__UID__`).
    pub fn default_attributes(&self) -> Vec<String> {
        self.properties
            .iter()
            .filter(|p| p.returned() && p.native_name != UID)
            .map(|p| p.native_name.clone())
            .collect()
    }

    /// Builds a type from its parts (tests and connectors' own schemas).
    pub fn new(name: &str, native_type: &str, properties: Vec<Property>) -> Self {
        let by_name = properties
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let by_native = properties
            .iter()
            .enumerate()
            .map(|(i, p)| (p.native_name.clone(), i))
            .collect();
        Self {
            name: name.to_owned(),
            native_type: native_type.to_owned(),
            properties,
            by_name,
            by_native,
        }
    }
}

/// `connectorRef`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRef {
    pub bundle_name: String,
    pub bundle_version: String,
    pub connector_name: String,
    /// `connectorHostRef`, when set (remote connector servers are not supported).
    pub connector_host_ref: Option<String>,
}

/// `poolConfigOption`, the part a native pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_objects: usize,
    /// Connections kept idle.
    pub max_idle: usize,
    /// Longest wait for a free connection.
    pub max_wait: Duration,
    /// Idle connections older than this are closed.
    pub min_evictable_idle: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_objects: 10,
            max_idle: 10,
            max_wait: Duration::from_millis(150_000),
            min_evictable_idle: Duration::from_millis(120_000),
        }
    }
}

/// A parsed provisioner file.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pub name: String,
    pub enabled: bool,
    pub kind: ConnectorKind,
    pub connector_ref: ConnectorRef,
    /// After `&{…}` substitution. Holds secrets: never log or answer it as is.
    pub configuration: Map<String, Value>,
    /// By name, in declaration order.
    pub object_types: Vec<Arc<ObjectType>>,
    /// `operationTimeout` per ICF operation (`CREATE`, `SEARCH`, …); absent or `-1` = none.
    pub timeouts: HashMap<String, Duration>,
    pub pool: PoolConfig,
    /// The file as written (placeholders unexpanded), for config reads.
    pub raw: Value,
}

impl Provisioner {
    pub fn object_type(&self, name: &str) -> Option<&Arc<ObjectType>> {
        self.object_types.iter().find(|t| t.name == name)
    }

    /// The timeout of an ICF operation (`SEARCH`, `CREATE`, …).
    pub fn timeout(&self, operation: &str) -> Option<Duration> {
        self.timeouts.get(operation).copied()
    }

    /// A configuration property as a string.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.configuration.get(key).and_then(Value::as_str)
    }
}

/// The ICF operations `operationTimeout` may name.
const OPERATIONS: &[&str] = &[
    "CREATE",
    "UPDATE",
    "DELETE",
    "TEST",
    "SCRIPT_ON_CONNECTOR",
    "SCRIPT_ON_RESOURCE",
    "GET",
    "RESOLVEUSERNAME",
    "AUTHENTICATE",
    "SEARCH",
    "VALIDATE",
    "SYNC",
    "SCHEMA",
];

/// The ICF attribute flags IDM writes in `flags`.
const FLAGS: &[&str] = &[
    "NOT_CREATABLE",
    "NOT_UPDATEABLE",
    "NOT_READABLE",
    "NOT_RETURNED_BY_DEFAULT",
    "MULTIVALUED",
    "REQUIRED",
];

/// Parses a provisioner document after `&{…}` substitution. `name` is from the file name
/// (`provisioner.openicf-<name>.json`); a `name` in the file must agree with it.
pub fn parse(name: &str, raw: &Value) -> Result<Provisioner, Vec<String>> {
    let mut doc = raw.clone();
    let problems = substitute(&mut doc, &from_env);
    if !problems.is_empty() {
        return Err(problems);
    }
    parse_substituted(name, raw, &doc)
}

fn parse_substituted(name: &str, raw: &Value, doc: &Value) -> Result<Provisioner, Vec<String>> {
    let mut problems = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Err(vec!["the file must contain a JSON object".into()]);
    };
    if !super::valid_system_name(name) {
        problems.push(format!(
            "the system name '{name}' (from the file name) may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    match obj.get("name") {
        None => {}
        Some(Value::String(n)) if n == name => {}
        Some(Value::String(n)) => problems.push(format!(
            "/name: '{n}' differs from the name in the file name, '{name}'"
        )),
        Some(_) => problems.push("/name: must be a string".into()),
    }
    let enabled = match obj.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push("/enabled: must be true or false".into());
            true
        }
    };

    let connector_ref = parse_connector_ref(obj.get("connectorRef"), &mut problems);
    let kind = connector_ref
        .as_ref()
        .and_then(|r| ConnectorKind::from_connector_name(&r.connector_name));
    if let Some(r) = &connector_ref {
        if kind.is_none() && !r.connector_name.is_empty() {
            let known: Vec<_> = CONNECTORS.iter().map(|c| c.connector_name).collect();
            problems.push(format!(
                "/connectorRef/connectorName: '{}' is not a connector this gateway has (it has {})",
                r.connector_name,
                known.join(", ")
            ));
        }
        if let Some(host) = &r.connector_host_ref {
            problems.push(format!(
                "/connectorRef/connectorHostRef: remote connector servers ('{host}') are not supported; connectors run inside the gateway"
            ));
        }
    }

    let configuration = match obj.get("configurationProperties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            problems.push("/configurationProperties: must be an object".into());
            Map::new()
        }
    };

    let mut object_types = Vec::new();
    match obj.get("objectTypes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(types)) => {
            for (type_name, schema) in types {
                if let Some(t) = parse_object_type(type_name, schema, &mut problems) {
                    object_types.push(Arc::new(t));
                }
            }
        }
        Some(_) => problems.push("/objectTypes: must be an object".into()),
    }

    let timeouts = parse_timeouts(obj.get("operationTimeout"), &mut problems);
    let pool = parse_pool(obj.get("poolConfigOption"), &mut problems);
    if let Err(e) = crate::events::FailurePolicy::parse(
        obj.get("syncFailureHandler"),
        crate::events::FailurePolicy::FOREVER,
    ) {
        problems.push(format!("/syncFailureHandler: {e}"));
    }
    match obj.get("resultsHandlerConfig") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => problems.push("/resultsHandlerConfig: must be an object".into()),
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let (Some(connector_ref), Some(kind)) = (connector_ref, kind) else {
        return Err(vec!["/connectorRef: missing".into()]);
    };
    Ok(Provisioner {
        name: name.to_owned(),
        enabled,
        kind,
        connector_ref,
        configuration,
        object_types,
        timeouts,
        pool,
        raw: raw.clone(),
    })
}

fn parse_connector_ref(v: Option<&Value>, problems: &mut Vec<String>) -> Option<ConnectorRef> {
    let Some(v) = v else {
        problems.push("/connectorRef: missing; it names the connector (connectorName)".into());
        return None;
    };
    let Some(m) = v.as_object() else {
        problems.push("/connectorRef: must be an object".into());
        return None;
    };
    let mut field = |key: &str, required: bool| match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) if !required => String::new(),
        None | Some(Value::Null) => {
            problems.push(format!("/connectorRef/{key}: missing"));
            String::new()
        }
        Some(_) => {
            problems.push(format!("/connectorRef/{key}: must be a non-empty string"));
            String::new()
        }
    };
    let connector_name = field("connectorName", true);
    let bundle_name = field("bundleName", false);
    let bundle_version = field("bundleVersion", false);
    let host = field("connectorHostRef", false);
    Some(ConnectorRef {
        bundle_name,
        bundle_version,
        connector_name,
        connector_host_ref: (!host.is_empty()).then_some(host),
    })
}

fn parse_object_type(name: &str, schema: &Value, problems: &mut Vec<String>) -> Option<ObjectType> {
    let at = format!("/objectTypes/{name}");
    let Some(m) = schema.as_object() else {
        problems.push(format!("{at}: must be an object (a JSON schema)"));
        return None;
    };
    if name.is_empty() || !super::valid_system_name(name) {
        problems.push(format!(
            "{at}: the object type name may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    let native_type = match m.get("nativeType").or_else(|| m.get("id")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None => {
            problems.push(format!(
                "{at}/nativeType: missing (__ACCOUNT__, __GROUP__ or a native class)"
            ));
            String::new()
        }
        Some(_) => {
            problems.push(format!("{at}/nativeType: must be a non-empty string"));
            String::new()
        }
    };
    let mut properties = Vec::new();
    match m.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) => {
            for (pname, p) in props {
                if let Some(p) = parse_property(&at, pname, p, problems) {
                    properties.push(p);
                }
            }
        }
        Some(_) => problems.push(format!("{at}/properties: must be an object")),
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for p in &properties {
        if let Some(other) = seen.insert(&p.native_name, &p.name) {
            problems.push(format!(
                "{at}/properties/{}: nativeName '{}' is already used by '{other}'",
                p.name, p.native_name
            ));
        }
    }
    Some(ObjectType::new(name, &native_type, properties))
}

fn parse_property(at: &str, name: &str, p: &Value, problems: &mut Vec<String>) -> Option<Property> {
    let at = format!("{at}/properties/{name}");
    let Some(m) = p.as_object() else {
        problems.push(format!("{at}: must be an object"));
        return None;
    };
    if name.starts_with('_') {
        problems.push(format!(
            "{at}: names starting with '_' are reserved (_id is the object's __UID__)"
        ));
    }
    let kind = PropertyType::parse(m.get("type")).unwrap_or_else(|e| {
        problems.push(format!("{at}/type: {e}"));
        PropertyType::Any
    });
    let item_kind = match m.get("items") {
        Some(Value::Object(items)) => PropertyType::parse(items.get("type")).unwrap_or_else(|e| {
            problems.push(format!("{at}/items/type: {e}"));
            PropertyType::Any
        }),
        _ => PropertyType::Any,
    };
    let string = |key: &str, problems: &mut Vec<String>| match m.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            problems.push(format!("{at}/{key}: must be a non-empty string"));
            None
        }
    };
    let native_name = string("nativeName", problems).unwrap_or_else(|| name.to_owned());
    let native_type = string("nativeType", problems).unwrap_or_else(|| "string".into());
    let mut required = match m.get("required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(format!("{at}/required: must be true or false"));
            false
        }
    };
    let mut flags = Vec::new();
    match m.get("flags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for f in items {
                match f.as_str() {
                    Some(f) if FLAGS.contains(&f) => flags.push(f),
                    Some(f) => problems.push(format!(
                        "{at}/flags: unknown flag '{f}' (known: {})",
                        FLAGS.join(", ")
                    )),
                    None => problems.push(format!("{at}/flags: must hold strings")),
                }
            }
        }
        Some(_) => problems.push(format!("{at}/flags: must be an array")),
    }
    if flags.contains(&"REQUIRED") {
        required = true;
    }
    let kind = if flags.contains(&"MULTIVALUED") && kind == PropertyType::Any {
        PropertyType::Array
    } else {
        kind
    };
    Some(Property {
        name: name.to_owned(),
        native_name,
        native_type: native_type.clone(),
        kind,
        item_kind,
        required,
        creatable: !flags.contains(&"NOT_CREATABLE"),
        updateable: !flags.contains(&"NOT_UPDATEABLE"),
        readable: !flags.contains(&"NOT_READABLE")
            && native_type != "JAVA_TYPE_GUARDEDSTRING"
            && native_type != "JAVA_TYPE_GUARDEDBYTEARRAY",
        returned_by_default: !flags.contains(&"NOT_RETURNED_BY_DEFAULT"),
    })
}

fn parse_timeouts(v: Option<&Value>, problems: &mut Vec<String>) -> HashMap<String, Duration> {
    let mut out = HashMap::new();
    let Some(v) = v else {
        return out;
    };
    let Some(m) = v.as_object() else {
        if !v.is_null() {
            problems.push("/operationTimeout: must be an object".into());
        }
        return out;
    };
    for (op, ms) in m {
        if !OPERATIONS.contains(&op.as_str()) {
            problems.push(format!(
                "/operationTimeout/{op}: unknown operation (known: {})",
                OPERATIONS.join(", ")
            ));
            continue;
        }
        match ms.as_i64() {
            Some(-1) | Some(0) => {}
            Some(ms) if ms > 0 => {
                out.insert(op.clone(), Duration::from_millis(ms as u64));
            }
            _ => problems.push(format!(
                "/operationTimeout/{op}: must be milliseconds (an integer; -1 for none)"
            )),
        }
    }
    out
}

fn parse_pool(v: Option<&Value>, problems: &mut Vec<String>) -> PoolConfig {
    let mut pool = PoolConfig::default();
    let Some(Value::Object(m)) = v else {
        if v.is_some_and(|v| !v.is_null()) {
            problems.push("/poolConfigOption: must be an object".into());
        }
        return pool;
    };
    let mut number = |key: &str| match m.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                problems.push(format!(
                    "/poolConfigOption/{key}: must be a non-negative integer"
                ));
                None
            }
        },
    };
    if let Some(n) = number("maxObjects") {
        pool.max_objects = (n as usize).max(1);
    }
    if let Some(n) = number("maxIdle") {
        pool.max_idle = n as usize;
    }
    if let Some(n) = number("maxWait") {
        pool.max_wait = Duration::from_millis(n);
    }
    if let Some(n) = number("minEvictableIdleTimeMillis") {
        pool.min_evictable_idle = Duration::from_millis(n);
    }
    let _ = number("minIdle");
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn ldap_doc() -> Value {
        json!({
            "name": "ldap",
            "enabled": true,
            "connectorRef": {
                "bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                "bundleVersion": "[1.4.0.0,1.6.0.0)",
                "connectorName": "org.identityconnectors.ldap.LdapConnector"
            },
            "poolConfigOption": {"maxObjects": 4, "maxIdle": 2, "maxWait": 1000,
                                 "minEvictableIdleTimeMillis": 60000, "minIdle": 1},
            "operationTimeout": {"CREATE": -1, "SEARCH": 5000},
            "resultsHandlerConfig": {"enableNormalizingResultsHandler": true},
            "configurationProperties": {"host": "localhost", "port": 1389,
                                        "credentials": "&{LDAP_TEST_SECRET_UNSET|s3cret}"},
            "objectTypes": {
                "account": {
                    "$schema": "http://json-schema.org/draft-03/schema",
                    "id": "__ACCOUNT__",
                    "type": "object",
                    "nativeType": "__ACCOUNT__",
                    "properties": {
                        "dn": {"type": "string", "nativeName": "__NAME__", "nativeType": "string", "required": true},
                        "uid": {"type": "string", "nativeName": "uid", "nativeType": "string"},
                        "cn": {"type": "string", "nativeName": "cn", "nativeType": "string", "required": true},
                        "userPassword": {"type": "string", "nativeName": "userPassword",
                                         "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                                         "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]},
                        "ldapGroups": {"type": "array", "items": {"type": "string", "nativeType": "string"},
                                       "nativeName": "ldapGroups", "nativeType": "string"},
                        "createTimestamp": {"type": "string", "nativeName": "createTimestamp",
                                            "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]}
                    }
                }
            }
        })
    }

    #[test]
    fn parses_idm_ldap_file() {
        let p = parse("ldap", &ldap_doc()).unwrap();
        assert_eq!(p.kind, ConnectorKind::Ldap);
        assert!(p.enabled);
        assert_eq!(p.string("credentials"), Some("s3cret"));
        assert_eq!(p.pool.max_objects, 4);
        assert_eq!(p.timeout("SEARCH"), Some(Duration::from_secs(5)));
        assert_eq!(p.timeout("CREATE"), None);
        let account = p.object_type("account").unwrap();
        assert_eq!(account.native_type, "__ACCOUNT__");
        assert_eq!(account.name_property().unwrap().name, "dn");
        let pw = account.property("userPassword").unwrap();
        assert!(!pw.readable && !pw.returned());
        let ts = account.property("createTimestamp").unwrap();
        assert!(!ts.creatable && !ts.updateable && ts.returned());
        assert_eq!(
            account.property("ldapGroups").unwrap().kind,
            PropertyType::Array
        );
        assert_eq!(
            account.default_attributes(),
            vec!["__NAME__", "uid", "cn", "ldapGroups", "createTimestamp"]
        );
        // The raw document keeps the placeholder.
        assert_eq!(
            p.raw["configurationProperties"]["credentials"],
            "&{LDAP_TEST_SECRET_UNSET|s3cret}"
        );
    }

    #[test]
    fn reports_every_problem_with_its_pointer() {
        let mut doc = ldap_doc();
        doc["name"] = json!("other");
        doc["connectorRef"]["connectorName"] = json!("org.example.Nope");
        doc["operationTimeout"]["FETCH"] = json!(1);
        doc["objectTypes"]["account"]["properties"]["cn"]["flags"] = json!(["NOT_WRITABLE"]);
        doc["objectTypes"]["account"]["properties"]["uid"]["type"] = json!("text");
        doc["objectTypes"]["account"]["properties"]["mail"] = json!({"nativeName": "uid"});
        let problems = parse("ldap", &doc).unwrap_err();
        let all = problems.join("\n");
        for want in [
            "/name: 'other' differs",
            "/connectorRef/connectorName: 'org.example.Nope' is not a connector",
            "/operationTimeout/FETCH: unknown operation",
            "/objectTypes/account/properties/cn/flags: unknown flag 'NOT_WRITABLE'",
            "/objectTypes/account/properties/uid/type: unknown type 'text'",
            "/objectTypes/account/properties/mail: nativeName 'uid' is already used by 'uid'",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(problems.len(), 6, "{all}");
    }

    #[test]
    fn unresolved_secret_and_missing_ref_are_rejected() {
        let mut doc = ldap_doc();
        doc["configurationProperties"]["credentials"] = json!("&{LDAP_TEST_SECRET_UNSET}");
        let problems = parse("ldap", &doc).unwrap_err();
        assert!(
            problems[0].contains("/configurationProperties/credentials"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("LDAP_TEST_SECRET_UNSET"),
            "{problems:?}"
        );
        let problems = parse("x", &json!({"name": "x"})).unwrap_err();
        assert!(
            problems[0].starts_with("/connectorRef: missing"),
            "{problems:?}"
        );
        let mut doc = ldap_doc();
        doc["connectorRef"]["connectorHostRef"] = json!("remote");
        let problems = parse("ldap", &doc).unwrap_err();
        assert!(
            problems[0].contains("remote connector servers"),
            "{problems:?}"
        );
    }
}
