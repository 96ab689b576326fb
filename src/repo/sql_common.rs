//! What the SQL backends ([`super::sqlite`], [`super::postgres`]) share: how an object is
//! prepared for storing, and, when they turn a CREST query into SQL, the parts of the
//! filter walk that do not depend on the dialect and the paging cookie's envelope (each
//! backend chooses the type of its sort keys).

use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crest::filter::{array_index, JsonPointer, QueryFilter};
use crate::repo::RepoError;

/// `content` as stored: without `_id` and `_rev`, serialized.
pub(crate) fn prepare_content(
    mut content: Map<String, Value>,
) -> Result<(Map<String, Value>, String), RepoError> {
    content.remove("_id");
    content.remove("_rev");
    let body = serde_json::to_string(&content)
        .map_err(|e| RepoError::Internal(format!("encoding an object: {e}")))?;
    Ok((content, body))
}

/// The values `content` holds at its `unique` fields (a missing or null value has none).
pub(crate) fn unique_values(
    content: &Map<String, Value>,
    unique: &[JsonPointer],
) -> Vec<(JsonPointer, Value)> {
    let object = Value::Object(content.clone());
    unique
        .iter()
        .filter_map(|field| {
            field
                .resolve(&object)
                .filter(|v| !v.is_null())
                .map(|v| (field.clone(), v.clone()))
        })
        .collect()
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The rest of a pointer below its first token when that may name a field of an array's
/// objects: no array positions, at least two tokens.
pub(crate) fn element_field(p: &JsonPointer) -> Option<JsonPointer> {
    let tokens = p.tokens();
    (tokens.len() >= 2 && tokens.iter().all(|t| array_index(t).is_none()))
        .then(|| JsonPointer(tokens[1..].to_vec()))
}

/// The field a comparison or presence test reads.
pub(crate) fn leaf_field(filter: &QueryFilter) -> Option<&JsonPointer> {
    match filter {
        QueryFilter::Present(p)
        | QueryFilter::Compare { field: p, .. }
        | QueryFilter::In { field: p, .. } => Some(p),
        _ => None,
    }
}

/// A relationship field ([`crate::repo::RELATIONSHIP_FIELD`]) taken apart: the object's
/// resource and relationship property, and which part of the edge is tested.
pub(crate) struct EdgeField<'a> {
    pub resource: &'a str,
    pub property: &'a str,
    part: &'a str,
    rest: &'a [String],
}

impl<'a> EdgeField<'a> {
    pub(crate) fn parse(ptr: &'a JsonPointer) -> Result<Self, RepoError> {
        match ptr.tokens() {
            [_, resource, property, part, rest @ ..] => Ok(EdgeField {
                resource,
                property,
                part,
                rest,
            }),
            _ => Err(RepoError::BadQuery(
                "a relationship field needs a part".into(),
            )),
        }
    }

    /// `filter` (a test of this field) as a test of the edge's own fields, on edges where
    /// the object is at the end opposite `other` (`"first"` or `"second"`).
    pub(crate) fn edge_test(
        &self,
        filter: &QueryFilter,
        other: &str,
    ) -> Result<QueryFilter, RepoError> {
        let part = self.part;
        let mapped = match part {
            "ResourceId" | "ResourceCollection" => vec![format!("{other}{part}")],
            "_id" => vec!["_id".to_string()],
            "properties" => std::iter::once("properties".to_string())
                .chain(self.rest.iter().cloned())
                .collect(),
            other => {
                return Err(RepoError::BadQuery(format!(
                    "unknown relationship field part '{other}'"
                )))
            }
        };
        let mapped = JsonPointer(mapped);
        Ok(match filter {
            QueryFilter::Present(_) => QueryFilter::Present(mapped),
            QueryFilter::Compare { op, value, .. } => QueryFilter::Compare {
                field: mapped,
                op: *op,
                value: value.clone(),
            },
            QueryFilter::In { values, .. } => QueryFilter::In {
                field: mapped,
                values: values.clone(),
            },
            _ => return Err(RepoError::BadQuery("not a field test".into())),
        })
    }
}

/// A paging cookie: the query it belongs to, and the sort keys and id of the last row
/// returned (keys of the backend's type `K`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cookie<K> {
    #[serde(rename = "q")]
    pub query: String,
    #[serde(rename = "k")]
    pub keys: Vec<K>,
    #[serde(rename = "id")]
    pub id: String,
}

/// Longest cookie accepted: sort keys are property values, which are small in practice.
const MAX_COOKIE_LEN: usize = 64 * 1024;

impl<K: Serialize + DeserializeOwned> Cookie<K> {
    pub(crate) fn encode(&self) -> Result<String, RepoError> {
        let json = serde_json::to_vec(self)
            .map_err(|e| RepoError::Internal(format!("encoding a paging cookie: {e}")))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes a cookie and checks it belongs to `query` with `n_keys` sort keys.
    pub(crate) fn decode(text: &str, query: &str, n_keys: usize) -> Result<Self, RepoError> {
        if text.len() > MAX_COOKIE_LEN {
            return Err(RepoError::BadCookie);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| RepoError::BadCookie)?;
        let cookie: Self = serde_json::from_slice(&bytes).map_err(|_| RepoError::BadCookie)?;
        if cookie.query != query || cookie.keys.len() != n_keys {
            return Err(RepoError::BadCookie);
        }
        Ok(cookie)
    }
}
