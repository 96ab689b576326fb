//! `/openidm/feature`: IDM's feature enablement (Advanced Identity Cloud's endpoint), for
//! the features that change the managed schema: `groups` and `password/timestamps`.
//!
//! * `GET feature?_queryFilter=…` and `GET feature/<id>` — `{"_id", "installedVersion"
//!   (null when not installed), "availableVersions"}`.
//! * `POST feature/<id>?_action=validate` — `{"status": 200, "success", "message"}`: the
//!   message is `Validate complete.` followed by every reason it cannot be installed.
//! * `POST feature/<id>?_action=install` — `{"status": 200, "message": "Install complete."}`;
//!   an installed feature is a 409, one that cannot be installed a 400 with the reasons.
//!   The install is one edit of `managed.json` ([`config::edit_document`]): validated,
//!   atomic, live at once.
//!
//! A feature is installed when the managed schema has what it adds (so a hand-written
//! `managed.json` with groups shows `groups` installed). Its targets are every user type:
//! `user` (self-hosted IDM) and each `<realm>_user` (Identity Cloud's realms).

mod groups;
mod timestamps;

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::config;
use crate::crest::filter::QueryFilter;
use crate::crest::{
    filter, Operation, QueryResponse, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::repo::{Repo, RepoError, RepoQuery};
use crate::state::{Gateway, MANAGED_CONFIG};

/// The only version of each feature.
const VERSION: &str = "1";

/// One installable feature.
struct Feature {
    id: &'static str,
    /// Whether `managed.json` has what the feature adds.
    installed: fn(&Map<String, Value>) -> bool,
    /// Why it cannot be installed in `managed.json` (empty: it can).
    problems: fn(&Map<String, Value>) -> Vec<String>,
    /// The managed types whose store must be empty for the install.
    must_be_empty: fn(&Map<String, Value>) -> Vec<String>,
    /// Adds the feature to `managed.json` (which passed `problems`).
    install: fn(&mut Map<String, Value>) -> Result<(), ResourceError>,
}

const FEATURES: [Feature; 2] = [groups::FEATURE, timestamps::FEATURE];

pub struct FeatureHandler {
    pub gw: Arc<Gateway>,
    pub repo: Arc<dyn Repo>,
}

#[async_trait::async_trait]
impl RequestHandler for FeatureHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        if rest.is_empty() {
            let Operation::Query(q) = &req.op else {
                return Err(req.not_supported());
            };
            let f = filter::of_listing_query(&q.kind, "Features")?;
            let doc = self.live_doc();
            let results = FEATURES
                .iter()
                .map(|feature| describe(feature, &doc).to_json())
                .filter(|v| f.matches(v))
                .collect();
            return Ok(Response::Query(QueryResponse {
                results,
                ..Default::default()
            }));
        }
        let id = rest.join("/");
        let feature = FEATURES
            .iter()
            .find(|f| f.id == id)
            .ok_or_else(|| ResourceError::not_found(format!("Feature {id} does not exist")))?;
        match &req.op {
            Operation::Read { .. } => Ok(Response::Resource(describe(feature, &self.live_doc()))),
            Operation::Action { name } if name == "validate" => {
                let problems = self.problems(feature, &self.live_doc()).await?;
                let message = std::iter::once("Validate complete.".to_owned())
                    .chain(problems.iter().cloned())
                    .collect::<Vec<_>>()
                    .join("");
                Ok(Response::Json(
                    200,
                    json!({"status": 200, "success": problems.is_empty(), "message": message}),
                ))
            }
            Operation::Action { name } if name == "install" => self.install(feature).await,
            Operation::Action { name } => Err(ResourceError::bad_request(format!(
                "Action {name} is not supported by feature {id}: use validate or install"
            ))),
            _ => Err(req.not_supported()),
        }
    }
}

impl FeatureHandler {
    fn live_doc(&self) -> Map<String, Value> {
        match self
            .gw
            .live()
            .conf
            .files
            .get(MANAGED_CONFIG)
            .and_then(|f| f.raw.clone())
        {
            Some(Value::Object(doc)) => doc,
            _ => Map::new(),
        }
    }

    /// Every reason `feature` cannot be installed now: the schema's, then the store's.
    async fn problems(
        &self,
        feature: &Feature,
        doc: &Map<String, Value>,
    ) -> Result<Vec<String>, ResourceError> {
        let mut problems = (feature.problems)(doc);
        for type_name in (feature.must_be_empty)(doc) {
            if has_objects(self.repo.as_ref(), &format!("managed/{type_name}")).await? {
                problems.push(format!(
                    "repo: objects of managed/{type_name} must not already exist."
                ));
            }
        }
        Ok(problems)
    }

    async fn install(&self, feature: &'static Feature) -> Result<Response, ResourceError> {
        let doc = self.live_doc();
        if (feature.installed)(&doc) {
            return Err(already_installed(feature));
        }
        let problems = self.problems(feature, &doc).await?;
        if !problems.is_empty() {
            return Err(cannot_install(feature, &problems));
        }
        // Checked again on the file as it is under the write lock: a concurrent install
        // (or hand edit) between the check and the write is refused, not doubled.
        config::edit_document(&self.gw, MANAGED_CONFIG, move |doc| {
            if (feature.installed)(doc) {
                return Err(already_installed(feature));
            }
            let problems = (feature.problems)(doc);
            if !problems.is_empty() {
                return Err(cannot_install(feature, &problems));
            }
            (feature.install)(doc)
        })
        .await?;
        Ok(Response::Json(
            200,
            json!({"status": 200, "message": "Install complete."}),
        ))
    }
}

fn describe(feature: &Feature, doc: &Map<String, Value>) -> ResourceResponse {
    let installed = (feature.installed)(doc).then_some(VERSION);
    let mut content = Map::new();
    content.insert("installedVersion".into(), json!(installed));
    content.insert("availableVersions".into(), json!([VERSION]));
    ResourceResponse::new(feature.id, None, content)
}

fn already_installed(feature: &Feature) -> ResourceError {
    ResourceError::new(
        409,
        format!(
            "Feature {} is already installed (version {VERSION})",
            feature.id
        ),
    )
}

fn cannot_install(feature: &Feature, problems: &[String]) -> ResourceError {
    ResourceError::bad_request(format!(
        "Feature {} cannot be installed: {}",
        feature.id,
        problems.join(" ")
    ))
    .with_detail(json!({ "problems": problems }))
}

/// Whether the store holds any object of `resource`.
async fn has_objects(repo: &dyn Repo, resource: &str) -> Result<bool, ResourceError> {
    let query = RepoQuery {
        page_size: 1,
        ids_only: true,
        ..RepoQuery::all(&QueryFilter::True, &[])
    };
    match repo.query(resource, query).await {
        Ok(page) => Ok(!page.results.is_empty()),
        Err(RepoError::NotFound { .. }) => Ok(false),
        Err(e) => Err(ResourceError::from(e)),
    }
}

/// The user types of `managed.json`: `user` and every `<realm>_user`, with the prefix
/// (`""`, `"alpha_"`) naming their realm's other types.
fn user_types(doc: &Map<String, Value>) -> Vec<(String, String)> {
    doc.get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("name").and_then(Value::as_str))
        .filter_map(|name| {
            let prefix = name.strip_suffix("user")?;
            (prefix.is_empty() || prefix.ends_with('_'))
                .then(|| (name.to_owned(), prefix.to_owned()))
        })
        .collect()
}

/// The message when there is no user type to install on.
fn no_user_type() -> String {
    "config/managed: a managed user type (user or <realm>_user) must exist.".to_owned()
}
