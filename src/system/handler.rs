//! `/openidm/system` (seed 004): the same REST surface for every connector.
//!
//! * `POST system?_action=availableConnectors | createCoreConfig | createFullConfig | test |
//!   testConfig | liveSync&source=… | testConnectorServers`
//! * `POST system/<name>?_action=test | liveSync | script`
//! * `GET system/<name>/<type>?_queryId=query-all-ids | _queryFilter=…` (paging, `_fields`,
//!   `_sortKeys`), `POST …/<type>?_action=create | authenticate | liveSync | script`
//! * `GET | PUT | PATCH | DELETE system/<name>/<type>/<id>`
//!
//! System objects have no revision: `If-Match` is not checked (IDM's provisioner ignores
//! it too). The id comes from the URL only; a different `_id` in a PUT body is IDM's
//! 500 `The uid attribute is not single value attribute.` A PUT replaces the attributes it
//! names (absent ones are kept, as in seed 004's rename example); `null` clears one.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::crest::fields::{self, FieldSelector, FieldSpec};
use crate::crest::filter::{self, QueryFilter};
use crate::crest::patch::parse_and_apply;
use crate::crest::query::CountPolicy;
use crate::crest::{
    Operation, QueryKind, QueryParams, QueryResponse, Request, RequestHandler, ResourceError,
    ResourceResponse, Response,
};
use crate::events::record_and_notify;

use super::connector::{ConnectorObject, QueryOptions, NAME};
use super::convert::{self, Write};
use super::provisioner::{self, ObjectType, Property, CONNECTORS, SYSTEM_TYPE};
use super::service::{with_timeout, SystemService};
use super::System;

/// IDM's message for a body `_id` that differs from the URL's.
pub const UID_MISMATCH: &str = "The uid attribute is not single value attribute.";

pub struct SystemHandler {
    pub service: Arc<SystemService>,
}

#[async_trait::async_trait]
impl RequestHandler for SystemHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        match rest {
            [] => self.root(req).await,
            [name] => self.system_level(req, name).await,
            [name, type_name] | [name, type_name, _] => {
                let (sys, class) = self.service.object_type(name, type_name)?;
                let id = rest.get(2).map(String::as_str);
                let objects = Objects {
                    service: &self.service,
                    system: &sys,
                    class: &class,
                    resource: convert::resource_name(name, &class),
                };
                let answer = match (&req.op, id) {
                    (Operation::Action { name: action }, None) if action == "liveSync" => {
                        return Ok(Response::Json(
                            200,
                            self.service.live_sync(name, type_name).await?,
                        ))
                    }
                    _ => objects.handle(req, id).await?,
                };
                if let Some(hook) = &self.service.hook {
                    record_and_notify(
                        self.service.repo(),
                        hook.as_ref(),
                        &objects.resource,
                        req,
                        &answer,
                    )
                    .await;
                }
                Ok(answer)
            }
            _ => Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            ))),
        }
    }
}

impl SystemHandler {
    async fn root(&self, req: &Request) -> Result<Response, ResourceError> {
        let Operation::Action { name } = &req.op else {
            return Err(req.not_supported());
        };
        match name.as_str() {
            "availableConnectors" => Ok(Response::Json(
                200,
                json!({"connectorRef": CONNECTORS.iter().map(|c| json!({
                    "displayName": c.display_name,
                    "bundleVersion": c.bundle_version,
                    "systemType": SYSTEM_TYPE,
                    "bundleName": c.bundle_name,
                    "connectorName": c.connector_name,
                })).collect::<Vec<_>>()}),
            )),
            "createCoreConfig" => create_core_config(req).map(|v| Response::Json(200, v)),
            "createFullConfig" => self.create_full_config(req).await,
            "test" => {
                let systems = self.service.systems();
                let mut out = Vec::with_capacity(systems.len());
                for sys in systems.iter() {
                    out.push(status(sys, sys.config.enabled).await);
                }
                Ok(Response::Json(200, Value::Array(out)))
            }
            "testConfig" => {
                let body = req.body_object()?;
                let name = config_name(body)?;
                match super::parse_and_build(&name, &req.body, self.service.systems().trust()) {
                    Ok(sys) => Ok(Response::Json(200, status(&sys, true).await)),
                    Err(problems) => Ok(Response::Json(
                        200,
                        json!({"name": name, "ok": false, "error": problems.join("; ")}),
                    )),
                }
            }
            "liveSync" => {
                let source = req.required_param("source")?;
                let (system, type_name) = SystemService::split_source(source)?;
                Ok(Response::Json(
                    200,
                    self.service.live_sync(system, type_name).await?,
                ))
            }
            // Connectors run inside the gateway: there are no remote connector servers.
            "testConnectorServers" => Ok(Response::Json(200, json!({"openicf": []}))),
            other => Err(unknown_action(other, req)),
        }
    }

    async fn system_level(&self, req: &Request, name: &str) -> Result<Response, ResourceError> {
        let Operation::Action { name: action } = &req.op else {
            return Err(req.not_supported());
        };
        let sys = self.service.system(name)?;
        match action.as_str() {
            "test" => Ok(Response::Json(200, status(&sys, true).await)),
            "liveSync" => {
                let mut out = Vec::new();
                for class in &sys.config.object_types {
                    out.push(self.service.live_sync(name, &class.name).await?);
                }
                Ok(Response::Json(200, Value::Array(out)))
            }
            "script" => Err(no_scripts()),
            other => Err(unknown_action(other, req)),
        }
    }

    /// `createFullConfig`: the posted configuration with `objectTypes` read from the
    /// resource (the connector's schema).
    async fn create_full_config(&self, req: &Request) -> Result<Response, ResourceError> {
        let body = req.body_object()?;
        let name = config_name(body)?;
        let mut doc = req.body.clone();
        if let Some(obj) = doc.as_object_mut() {
            obj.remove("objectTypes");
        }
        let sys =
            super::parse_and_build(&name, &doc, self.service.systems().trust()).map_err(|p| {
                ResourceError::bad_request(format!("Invalid configuration: {}", p.join("; ")))
            })?;
        let schema = with_timeout(
            sys.config.timeout("SCHEMA"),
            &format!("system/{name}"),
            sys.connector.schema(),
        )
        .await?;
        let mut out = req.body.clone();
        if let Some(obj) = out.as_object_mut() {
            obj.insert("objectTypes".into(), Value::Object(schema));
        }
        Ok(Response::Json(200, out))
    }
}

/// `name` of a posted provisioner configuration.
fn config_name(body: &Map<String, Value>) -> Result<String, ResourceError> {
    match body.get("name") {
        Some(Value::String(n)) if super::valid_system_name(n) => Ok(n.clone()),
        Some(_) => Err(ResourceError::bad_request(
            "The configuration's 'name' may only hold letters, digits, '.', '_' and '-'",
        )),
        None => Err(ResourceError::bad_request(
            "The configuration needs a 'name'",
        )),
    }
}

/// `createCoreConfig`: the posted `connectorRef` with the connector's configuration
/// properties and their defaults.
fn create_core_config(req: &Request) -> Result<Value, ResourceError> {
    let body = req.body_object()?;
    let connector_name = body
        .get("connectorRef")
        .and_then(|r| r.get("connectorName"))
        .and_then(Value::as_str)
        .ok_or_else(|| ResourceError::bad_request("The body needs connectorRef.connectorName"))?;
    let kind =
        provisioner::ConnectorKind::from_connector_name(connector_name).ok_or_else(|| {
            ResourceError::bad_request(format!(
                "Connector '{connector_name}' is not available (see _action=availableConnectors)"
            ))
        })?;
    let info = kind.info();
    let mut out = req.body.clone();
    let obj = out.as_object_mut().expect("body is an object");
    obj.insert(
        "connectorRef".into(),
        json!({
            "systemType": SYSTEM_TYPE,
            "bundleName": info.bundle_name,
            "bundleVersion": info.bundle_version,
            "connectorName": info.connector_name,
            "displayName": info.display_name,
        }),
    );
    obj.entry("configurationProperties")
        .or_insert_with(|| default_properties(kind));
    obj.entry("poolConfigOption").or_insert_with(|| {
        json!({"maxObjects": 10, "maxIdle": 10, "maxWait": 150000,
               "minEvictableIdleTimeMillis": 120000, "minIdle": 1})
    });
    obj.entry("operationTimeout").or_insert_with(|| {
        json!({"CREATE": -1, "UPDATE": -1, "DELETE": -1, "TEST": -1, "SCRIPT_ON_CONNECTOR": -1,
               "SCRIPT_ON_RESOURCE": -1, "GET": -1, "RESOLVEUSERNAME": -1, "AUTHENTICATE": -1,
               "SEARCH": -1, "VALIDATE": -1, "SYNC": -1, "SCHEMA": -1})
    });
    obj.entry("resultsHandlerConfig").or_insert_with(|| {
        json!({"enableNormalizingResultsHandler": true, "enableFilteredResultsHandler": false,
               "enableCaseInsensitiveFilter": false, "enableAttributesToGetSearchResultsHandler": true})
    });
    Ok(out)
}

/// The configuration properties each connector reads, with IDM's defaults (`null` where
/// the value must be supplied).
fn default_properties(kind: provisioner::ConnectorKind) -> Value {
    match kind {
        provisioner::ConnectorKind::Ldap => json!({
            "host": null, "port": 389, "ssl": false, "startTLS": false,
            "principal": null, "credentials": null, "baseContexts": [],
            "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "accountUserNameAttributes": ["uid"], "accountSearchFilter": null,
            "groupObjectClasses": ["top", "groupOfUniqueNames"], "groupSearchFilter": null,
            "uidAttribute": "entryUUID", "passwordAttribute": "userPassword",
            "usePagedResultControl": true, "blockSize": 100
        }),
        provisioner::ConnectorKind::Csv => json!({
            "csvFile": null, "headerUid": "uid", "headerName": null, "headerPassword": null,
            "newlineString": "\n", "quoteCharacter": "\"", "fieldDelimiter": ",",
            "syncFileRetentionCount": 3
        }),
        provisioner::ConnectorKind::DatabaseTable => json!({
            "jdbcUrlTemplate": null, "host": null, "port": null, "user": null, "password": null,
            "database": null, "table": null, "keyColumn": null, "passwordColumn": null,
            "changeLogColumn": null
        }),
    }
}

/// IDM's status object of one system (`_action=test`), with `error` when it fails.
async fn status(sys: &System, check: bool) -> Value {
    let c = &sys.config;
    let mut types = vec![json!("__ALL__")];
    types.extend(c.object_types.iter().map(|t| json!(t.name)));
    let mut out = json!({
        "name": c.name,
        "enabled": c.enabled,
        "config": format!("config/{}/{}", provisioner::FACTORY, c.name),
        "connectorRef": {
            "bundleVersion": c.connector_ref.bundle_version,
            "bundleName": c.connector_ref.bundle_name,
            "connectorName": c.connector_ref.connector_name,
        },
        "displayName": c.kind.info().display_name,
        "objectTypes": types,
    });
    let result = if check {
        with_timeout(
            c.timeout("TEST"),
            &format!("system/{}", c.name),
            sys.connector.test(),
        )
        .await
    } else {
        Err(ResourceError::unavailable("The system is disabled"))
    };
    match result {
        Ok(()) => out["ok"] = json!(true),
        Err(e) => {
            out["ok"] = json!(false);
            out["error"] = json!(e.message);
        }
    }
    out
}

fn unknown_action(name: &str, req: &Request) -> ResourceError {
    ResourceError::bad_request(format!(
        "Action '{name}' is not supported on resource 'openidm/{}'",
        req.path_string()
    ))
}

fn no_scripts() -> ResourceError {
    ResourceError::not_supported(
        "The script action is not supported: this gateway runs native connectors without a script engine",
    )
}

/// The objects of one object type of one system.
struct Objects<'a> {
    service: &'a SystemService,
    system: &'a System,
    class: &'a ObjectType,
    /// `system/<name>/<type>`.
    resource: String,
}

impl Objects<'_> {
    fn name(&self) -> &str {
        &self.system.config.name
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = super::connector::ConnectorResult<T>>,
    ) -> Result<T, ResourceError> {
        self.service.call(self.system, op, &self.resource, f).await
    }

    async fn handle(&self, req: &Request, id: Option<&str>) -> Result<Response, ResourceError> {
        match (&req.op, id) {
            (Operation::Query(q), None) => self.query(req, q).await,
            (Operation::Create { new_id }, None) => {
                let body = req.body_object()?;
                let body_id = body.get("_id").and_then(Value::as_str);
                if let (Some(url), Some(b)) = (new_id.as_deref(), body_id) {
                    if url != b {
                        return Err(ResourceError::internal(UID_MISMATCH));
                    }
                }
                self.create(req, new_id.as_deref().or(body_id)).await
            }
            (Operation::Action { name }, None) => match name.as_str() {
                "create" => {
                    let body = req.body_object()?;
                    self.create(req, body.get("_id").and_then(Value::as_str))
                        .await
                }
                "authenticate" => self.authenticate(req).await,
                "script" => Err(no_scripts()),
                "patch" => Err(ResourceError::not_supported(format!(
                    "Patch by query is not supported on system objects ('openidm/{}')",
                    req.path_string()
                ))),
                other => Err(unknown_action(other, req)),
            },
            (Operation::Action { name }, Some(_)) if name == "patch" => {
                Err(ResourceError::not_supported(
                    "A POST request with a patch action is not supported on system objects; send a PATCH request",
                ))
            }
            (Operation::Action { name }, Some(_)) => Err(unknown_action(name, req)),
            (Operation::Read { .. }, Some(id)) => {
                let spec = fields::of_request(req)?;
                let obj = self.read(id, &spec).await?;
                Ok(Response::Resource(obj))
            }
            (Operation::Update { upsert, .. }, Some(id)) => {
                let body = req.body_object()?;
                if body.get("_id").and_then(Value::as_str).is_some_and(|b| b != id) {
                    return Err(ResourceError::internal(UID_MISMATCH));
                }
                self.update(req, id, body, *upsert).await
            }
            (Operation::Patch { .. }, Some(id)) => self.patch(req, id).await,
            (Operation::Delete { .. }, Some(id)) => {
                let before = self.read(id, &FieldSpec::All).await?;
                self.call("DELETE", self.system.connector.delete(self.class, id))
                    .await
                    .map_err(|e| self.object_error(e, id))?;
                Ok(Response::Resource(before))
            }
            _ => Err(req.not_supported()),
        }
    }

    /// 404s of an object operation say which object.
    fn object_error(&self, e: ResourceError, id: &str) -> ResourceError {
        if e.code == 404 {
            ResourceError::not_found(format!("Object {id} not found in {}", self.resource))
        } else {
            e
        }
    }

    /// The properties `spec` asks to be returned: the default ones, plus any readable one
    /// named explicitly.
    fn wanted(&self, spec: &FieldSpec) -> Vec<&Property> {
        let named = |p: &Property| {
            match spec {
            FieldSpec::All => false,
            FieldSpec::Fields(sel) => sel.iter().any(|s| {
                matches!(s, FieldSelector::Pointer(ptr) if ptr.tokens().first() == Some(&p.name))
            }),
        }
        };
        let defaults = match spec {
            FieldSpec::All => true,
            FieldSpec::Fields(sel) => sel.iter().any(|s| matches!(s, FieldSelector::AllDefault)),
        };
        self.class
            .properties
            .iter()
            .filter(|p| p.readable && ((defaults && p.returned_by_default) || named(p)))
            .collect()
    }

    fn render(&self, obj: &ConnectorObject, spec: &FieldSpec) -> ResourceResponse {
        let props = self.wanted(spec);
        let full = convert::from_native(obj, &props);
        let mut content = match spec {
            FieldSpec::All => full,
            spec => fields::project(
                &full,
                spec,
                &|name| self.class.property(name).is_some_and(|p| p.returned()),
                &|_| false,
            ),
        };
        // The id is the object's uid; the response carries it outside the content.
        content.remove("_id");
        ResourceResponse::new(obj.uid.clone(), None, content)
    }

    async fn read(&self, id: &str, spec: &FieldSpec) -> Result<ResourceResponse, ResourceError> {
        let attrs: Vec<String> = self
            .wanted(spec)
            .iter()
            .map(|p| p.native_name.clone())
            .collect();
        let obj = self
            .call("GET", self.system.connector.read(self.class, id, &attrs))
            .await
            .map_err(|e| self.object_error(e, id))?
            .ok_or_else(|| {
                ResourceError::not_found(format!("Object {id} not found in {}", self.resource))
            })?;
        Ok(self.render(&obj, spec))
    }

    async fn create(&self, req: &Request, uid: Option<&str>) -> Result<Response, ResourceError> {
        let body = req.body_object()?;
        let native = convert::to_native(self.name(), self.class, body, Write::Create)?;
        convert::check_required(self.name(), self.class, &native, uid.is_some())?;
        let new_uid = self
            .call(
                "CREATE",
                self.system.connector.create(self.class, uid, native),
            )
            .await?;
        let spec = fields::of_request(req)?;
        Ok(Response::Created(self.read(&new_uid, &spec).await?))
    }

    async fn update(
        &self,
        req: &Request,
        id: &str,
        body: &Map<String, Value>,
        upsert: bool,
    ) -> Result<Response, ResourceError> {
        let native = convert::to_native(self.name(), self.class, body, Write::Update)?;
        let result = self
            .call(
                "UPDATE",
                self.system.connector.update(self.class, id, native),
            )
            .await;
        let new_uid = match result {
            Ok(uid) => uid,
            Err(e) if e.code == 404 && upsert => return self.create(req, Some(id)).await,
            Err(e) => return Err(self.object_error(e, id)),
        };
        let spec = fields::of_request(req)?;
        Ok(Response::Resource(self.read(&new_uid, &spec).await?))
    }

    async fn patch(&self, req: &Request, id: &str) -> Result<Response, ResourceError> {
        let before = self.read(id, &FieldSpec::All).await?;
        let mut doc = Value::Object(before.content.clone());
        parse_and_apply(&mut doc, &req.body, false)?;
        let Value::Object(after) = doc else {
            return Err(ResourceError::bad_request(
                "The patch must leave the object a JSON object",
            ));
        };
        // What changed: new or different values, and removed properties (cleared).
        let mut changes = Map::new();
        for (k, v) in &after {
            if before.content.get(k) != Some(v) {
                changes.insert(k.clone(), v.clone());
            }
        }
        for k in before.content.keys() {
            if !after.contains_key(k) {
                changes.insert(k.clone(), Value::Null);
            }
        }
        if let Some(Value::String(new_id)) = changes.remove("_id") {
            if new_id != id {
                return Err(ResourceError::internal(UID_MISMATCH));
            }
        }
        if changes.is_empty() {
            let spec = fields::of_request(req)?;
            return Ok(Response::Resource(self.read(id, &spec).await?));
        }
        self.update(req, id, &changes, false).await
    }

    async fn authenticate(&self, req: &Request) -> Result<Response, ResourceError> {
        let body = req.body.as_object();
        let field = |name: &str| {
            body.and_then(|b| b.get(name))
                .and_then(Value::as_str)
                .or_else(|| req.param(name))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    ResourceError::bad_request(format!(
                        "The parameter '{name}' is required to authenticate"
                    ))
                })
        };
        let (username, password) = (field("username")?, field("password")?);
        let uid = self
            .call(
                "AUTHENTICATE",
                self.system
                    .connector
                    .authenticate(self.class, &username, &password),
            )
            .await
            .map_err(|e| {
                if e.code == 401 || e.code == 404 {
                    // Same answer for an unknown user and a wrong password.
                    ResourceError::unauthorized()
                } else {
                    e
                }
            })?;
        Ok(Response::Action(Some(json!({"_id": uid}))))
    }

    async fn query(&self, req: &Request, q: &QueryParams) -> Result<Response, ResourceError> {
        let (filter, spec) = match &q.kind {
            QueryKind::Filter(text) => {
                let parsed =
                    filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))?;
                (
                    convert::native_filter(self.name(), self.class, &parsed)?,
                    fields::of_request(req)?,
                )
            }
            QueryKind::Id(id) if id == "query-all-ids" => {
                // `_id` and the naming attribute, as seed 002 shows.
                let mut sel = Vec::new();
                if let Some(p) = self.class.by_native(NAME) {
                    sel.push(FieldSelector::Pointer(filter::JsonPointer(vec![p
                        .name
                        .clone()])));
                } else {
                    sel.push(FieldSelector::Pointer(filter::JsonPointer(vec![
                        "_id".into()
                    ])));
                }
                (None, FieldSpec::Fields(sel))
            }
            QueryKind::Id(id) => {
                return Err(ResourceError::bad_request(format!(
                    "The query id '{id}' is not defined for {} (only query-all-ids)",
                    self.resource
                )))
            }
            QueryKind::Expression(_) => {
                return Err(ResourceError::not_supported(format!(
                    "Native query expressions are not supported on {}; use _queryFilter",
                    self.resource
                )))
            }
        };
        if matches!(filter, Some(QueryFilter::False)) {
            return Ok(Response::Query(QueryResponse {
                policy: q.count_policy,
                total: (q.count_policy == CountPolicy::Exact).then_some(0),
                ..Default::default()
            }));
        }
        let options = QueryOptions {
            page_size: q.page_size,
            cookie: q.cookie.clone(),
            offset: q.offset,
            attributes: self
                .wanted(&spec)
                .iter()
                .map(|p| p.native_name.clone())
                .collect(),
            sort: convert::native_sort(self.name(), self.class, &q.sort_keys)?,
            count: q.count_policy == CountPolicy::Exact,
        };
        let page = self
            .call(
                "SEARCH",
                self.system
                    .connector
                    .query(self.class, filter.as_ref(), &options),
            )
            .await?;
        let results = page
            .objects
            .iter()
            .map(|o| self.render(o, &spec).to_json())
            .collect();
        Ok(Response::Query(QueryResponse {
            results,
            cookie: page.cookie,
            policy: q.count_policy,
            total: page.total.and_then(|t| u64::try_from(t).ok()),
        }))
    }
}
