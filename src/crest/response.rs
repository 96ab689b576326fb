//! CREST responses and their HTTP form: `_id`/`_rev` first, `ETag: "<rev>"`, 201 +
//! `Location` on create, 304 on a matching `If-None-Match`, 204 for an empty action result,
//! the query envelope with IDM's defaults.

use serde_json::{json, Map, Value};

use super::query::CountPolicy;
use super::ResourceError;

/// A resource: id, revision and the rest of its content.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceResponse {
    pub id: String,
    pub rev: Option<String>,
    /// Content without `_id`/`_rev` (any found there are ignored).
    pub content: Map<String, Value>,
}

impl ResourceResponse {
    pub fn new(id: impl Into<String>, rev: Option<String>, content: Map<String, Value>) -> Self {
        Self {
            id: id.into(),
            rev,
            content,
        }
    }

    /// The JSON form: `_id`, `_rev` (when known), then the content in its order.
    pub fn to_json(&self) -> Value {
        let mut out = Map::with_capacity(self.content.len() + 2);
        out.insert("_id".into(), json!(self.id));
        if let Some(rev) = &self.rev {
            out.insert("_rev".into(), json!(rev));
        }
        for (k, v) in &self.content {
            if k != "_id" && k != "_rev" {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }
}

/// A query result page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResponse {
    pub results: Vec<Value>,
    pub cookie: Option<String>,
    pub policy: CountPolicy,
    /// Total over all pages when counted (`EXACT`).
    pub total: Option<u64>,
}

impl QueryResponse {
    /// The envelope, keys in IDM's order, `-1` where nothing was counted.
    pub fn to_json(&self) -> Value {
        json!({
            "result": self.results,
            "resultCount": self.results.len(),
            "pagedResultsCookie": self.cookie,
            "totalPagedResultsPolicy": self.policy.as_str(),
            "totalPagedResults": self.total.map(|t| t as i64).unwrap_or(-1),
            "remainingPagedResults": -1,
        })
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// 200 with the resource (read, update, patch, delete).
    Resource(ResourceResponse),
    /// 201 with the new resource and a `Location`.
    Created(ResourceResponse),
    /// 304: the caller's `If-None-Match` equals the current revision.
    NotModified {
        rev: String,
    },
    Query(QueryResponse),
    /// 200 with the result, or 204 when there is none.
    Action(Option<Value>),
    /// Any other JSON document with a status (config list, recon runs, info).
    Json(u16, Value),
    /// A non-JSON body (Prometheus text).
    Raw {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
}

pub const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// A response ready to be written by an HTTP edge.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn error(e: &ResourceError) -> Self {
        Self {
            status: e.code,
            content_type: JSON_CONTENT_TYPE,
            etag: None,
            location: None,
            body: e.to_body(),
        }
    }
}

fn to_bytes(v: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    }
    .unwrap_or_default()
}

fn etag(rev: &Option<String>) -> Option<String> {
    rev.as_ref().map(|r| format!("\"{r}\""))
}

impl Response {
    /// The HTTP form. `location` gives the URL of a created resource from its id.
    pub fn into_http(self, pretty: bool, location: impl FnOnce(&str) -> String) -> HttpResponse {
        let json = |status: u16, v: &Value| HttpResponse {
            status,
            content_type: JSON_CONTENT_TYPE,
            etag: None,
            location: None,
            body: to_bytes(v, pretty),
        };
        match self {
            Response::Resource(r) => HttpResponse {
                etag: etag(&r.rev),
                ..json(200, &r.to_json())
            },
            Response::Created(r) => {
                let location = location(&r.id);
                HttpResponse {
                    etag: etag(&r.rev),
                    location: Some(location),
                    ..json(201, &r.to_json())
                }
            }
            Response::NotModified { rev } => HttpResponse {
                etag: Some(format!("\"{rev}\"")),
                ..json(
                    304,
                    &json!({"code": 304, "reason": "Not Modified", "message": "Not Modified"}),
                )
            },
            Response::Query(q) => json(200, &q.to_json()),
            Response::Action(Some(v)) => json(200, &v),
            Response::Action(None) => HttpResponse {
                status: 204,
                content_type: JSON_CONTENT_TYPE,
                etag: None,
                location: None,
                body: Vec::new(),
            },
            Response::Json(status, v) => json(status, &v),
            Response::Raw {
                status,
                content_type,
                body,
            } => HttpResponse {
                status,
                content_type,
                etag: None,
                location: None,
                body,
            },
        }
    }
}

/// `collection_url/<id>`, the id escaped as one path segment.
pub fn member_url(collection_url: &str, id: &str) -> String {
    format!(
        "{}/{}",
        collection_url.trim_end_matches('/'),
        percent_encoding::utf8_percent_encode(id, SEGMENT)
    )
}

/// Characters escaped in one path segment of a `Location`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_has_id_rev_first_and_etag() {
        let mut content = Map::new();
        content.insert("userName".into(), json!("psmith"));
        content.insert("_rev".into(), json!("ignored"));
        let r = ResourceResponse::new("psmith", Some("1".into()), content);
        let h = Response::Created(r)
            .into_http(false, |id| member_url("http://h/openidm/managed/user", id));
        assert_eq!(h.status, 201);
        assert_eq!(h.etag.as_deref(), Some("\"1\""));
        assert_eq!(
            h.location.as_deref(),
            Some("http://h/openidm/managed/user/psmith")
        );
        assert_eq!(
            String::from_utf8(h.body).unwrap(),
            r#"{"_id":"psmith","_rev":"1","userName":"psmith"}"#
        );
    }

    #[test]
    fn query_envelope_defaults() {
        let q = QueryResponse {
            results: vec![json!({"_id": "a"})],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&q.to_json()).unwrap(),
            r#"{"result":[{"_id":"a"}],"resultCount":1,"pagedResultsCookie":null,"totalPagedResultsPolicy":"NONE","totalPagedResults":-1,"remainingPagedResults":-1}"#
        );
    }

    #[test]
    fn empty_action_is_204() {
        assert_eq!(
            Response::Action(None)
                .into_http(false, |_| String::new())
                .status,
            204
        );
    }
}
