//! CREST responses and their HTTP form: `_id`/`_rev` first, `ETag: "<rev>"`, 201 +
//! `Location` on create, 304 on a matching `If-None-Match`, 204 for an empty action result,
//! the query envelope with IDM's defaults.

use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
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

/// Results of a query, rendered, as a handler reads them.
pub type ResultStream = BoxStream<'static, Result<Value, ResourceError>>;

/// A query answer without paging, written to the client as its results are read (memory
/// does not grow with the result): the envelope of [`QueryResponse`] with no cookie, policy
/// `NONE` and no count, `resultCount` written after the last result. A failure after the
/// status was sent ends the result array and is reported in an `error` member, as CREST
/// does (`{"result":[…],"resultCount":N,"error":{…}}`).
///
/// Cloning shares the one stream, which [`QueryStream::take_body`] hands out once.
#[derive(Clone)]
pub struct QueryStream(Arc<Mutex<Option<ResultStream>>>);

impl QueryStream {
    pub fn new(results: ResultStream) -> Self {
        Self(Arc::new(Mutex::new(Some(results))))
    }

    /// The HTTP body; `None` once taken.
    pub fn take_body(&self) -> Option<StreamBody> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|results| StreamBody {
                results,
                written: 0,
                started: false,
                done: false,
            })
    }
}

impl PartialEq for QueryStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryStream")
    }
}

/// Bytes of results gathered before a chunk is handed to the socket.
const CHUNK: usize = 64 * 1024;

/// The body of a [`QueryStream`], chunk by chunk.
pub struct StreamBody {
    results: ResultStream,
    written: u64,
    started: bool,
    done: bool,
}

impl StreamBody {
    /// The next part of the body (about [`CHUNK`] bytes); `None` after the envelope's end.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        if !self.started {
            self.started = true;
            buf.extend_from_slice(b"{\"result\":[");
        }
        loop {
            match self.results.next().await {
                Some(Ok(v)) => {
                    if self.written > 0 {
                        buf.push(b',');
                    }
                    if serde_json::to_writer(&mut buf, &v).is_err() {
                        buf.extend_from_slice(b"null");
                    }
                    self.written += 1;
                    if buf.len() >= CHUNK {
                        return Some(buf);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    buf.extend_from_slice(
                        format!("],\"resultCount\":{},\"error\":", self.written).as_bytes(),
                    );
                    buf.extend_from_slice(&e.to_body());
                    buf.push(b'}');
                    return Some(buf);
                }
                None => {
                    self.done = true;
                    buf.extend_from_slice(
                        format!(
                            "],\"resultCount\":{},\"pagedResultsCookie\":null,\"totalPagedResultsPolicy\":\"NONE\",\"totalPagedResults\":-1,\"remainingPagedResults\":-1}}",
                            self.written
                        )
                        .as_bytes(),
                    );
                    return Some(buf);
                }
            }
        }
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
    /// 200 with a query answer written as it is read (HTTP requests without paging).
    Stream(QueryStream),
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
    /// A body written piecewise instead of `body` (chunked, no `Content-Length`).
    pub stream: Option<QueryStream>,
}

impl HttpResponse {
    pub fn error(e: &ResourceError) -> Self {
        Self {
            status: e.code,
            content_type: JSON_CONTENT_TYPE,
            etag: None,
            location: None,
            body: e.to_body(),
            stream: None,
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
            stream: None,
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
            Response::Stream(stream) => HttpResponse {
                status: 200,
                content_type: JSON_CONTENT_TYPE,
                etag: None,
                location: None,
                body: Vec::new(),
                stream: Some(stream),
            },
            Response::Action(Some(v)) => json(200, &v),
            Response::Action(None) => HttpResponse {
                status: 204,
                content_type: JSON_CONTENT_TYPE,
                etag: None,
                location: None,
                body: Vec::new(),
                stream: None,
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
                stream: None,
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

    async fn body_of(results: Vec<Result<Value, ResourceError>>) -> (String, usize) {
        let stream = QueryStream::new(Box::pin(futures_util::stream::iter(results)));
        let h = Response::Stream(stream.clone()).into_http(false, |_| String::new());
        assert_eq!((h.status, h.body.len()), (200, 0));
        let mut body = h.stream.unwrap().take_body().unwrap();
        assert!(stream.take_body().is_none(), "the body is handed out once");
        let (mut text, mut chunks) = (Vec::new(), 0);
        while let Some(chunk) = body.next_chunk().await {
            text.extend(chunk);
            chunks += 1;
        }
        (String::from_utf8(text).unwrap(), chunks)
    }

    #[tokio::test]
    async fn streamed_envelope_is_the_query_envelope() {
        for n in [0, 1, 3] {
            let results: Vec<Value> = (0..n).map(|i| json!({"_id": i.to_string()})).collect();
            let (text, _) = body_of(results.iter().cloned().map(Ok).collect()).await;
            let whole = QueryResponse {
                results,
                ..Default::default()
            };
            assert_eq!(text, serde_json::to_string(&whole.to_json()).unwrap());
        }
        // Large answers come in several chunks.
        let big: Vec<_> = (0..10_000)
            .map(|i| Ok(json!({"_id": i.to_string(), "pad": "x".repeat(40)})))
            .collect();
        let (text, chunks) = body_of(big).await;
        assert!(chunks > 5, "{chunks}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["resultCount"], 10_000);
    }

    #[tokio::test]
    async fn a_failure_mid_stream_ends_with_an_error_member() {
        let (text, _) = body_of(vec![
            Ok(json!({"_id": "a"})),
            Err(ResourceError::gateway_timeout("too slow")),
        ])
        .await;
        assert_eq!(
            text,
            r#"{"result":[{"_id":"a"}],"resultCount":1,"error":{"code":504,"reason":"Gateway Time-out","message":"too slow"}}"#
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
