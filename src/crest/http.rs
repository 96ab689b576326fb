//! HTTP → CREST request mapping (crest-wire.md §4, CREST's `HttpAdapter`), as a pure
//! function of method, path, query string, headers and body. No pingora types: the edge
//! hands over `http` crate values.

use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::Value;

use super::caller::Caller;
use super::query::{CountPolicy, SortKey};
use super::request::{Operation, Params, QueryKind, QueryParams, Request};
use super::ResourceError;

/// Request parameters CREST reserves; any other `_` parameter is refused.
const RESERVED: &[&str] = &[
    "_queryId",
    "_queryExpression",
    "_queryFilter",
    "_sortKeys",
    "_pagedResultsCookie",
    "_pagedResultsOffset",
    "_pageSize",
    "_totalPagedResultsPolicy",
    "_fields",
    "_prettyPrint",
    "_action",
    "_mimeType",
    // IDM's script action on system objects (answered 501: no script engine here).
    "_scriptId",
    // IDM's preferred locale (the locale of `external/email?_action=sendTemplate`).
    "_locale",
];

/// The parts of an HTTP request the mapping needs.
pub struct HttpRequest<'a> {
    pub method: &'a Method,
    /// Decoded path segments after `openidm`.
    pub segments: Vec<String>,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Maps an HTTP request to a CREST request, with CREST's errors for misuse.
pub fn request_from_http(
    http: HttpRequest<'_>,
    caller: Arc<Caller>,
) -> Result<Request, ResourceError> {
    for h in ["if-modified-since", "if-unmodified-since"] {
        if http.headers.contains_key(h) {
            let name = if h == "if-modified-since" {
                "If-Modified-Since"
            } else {
                "If-Unmodified-Since"
            };
            return Err(ResourceError::new(
                409,
                format!("Header {name} not supported"),
            ));
        }
    }
    let resource_version = api_version(http.headers)?;
    let if_match = header_str(http.headers, "if-match")?;
    let if_none_match = header_str(http.headers, "if-none-match")?;

    let mut reserved: Vec<(String, String)> = Vec::new();
    let mut params = Params::new();
    if let Some(q) = http.query {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k.starts_with('_') {
                match RESERVED.iter().find(|r| r.eq_ignore_ascii_case(&k)) {
                    Some(canonical) => {
                        // Also visible to handlers (a patch by query reads `_queryId`).
                        params.insert(*canonical, v.as_ref());
                        reserved.push(((*canonical).to_owned(), v.into_owned()))
                    }
                    None => {
                        return Err(ResourceError::bad_request(format!(
                            "Unrecognized request parameter '{k}'"
                        )))
                    }
                }
            } else {
                params.insert(k.into_owned(), v.into_owned());
            }
        }
    }
    let single = |name: &str| single(&reserved, name);
    let pretty = single("_prettyPrint")?.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let fields: Vec<String> = reserved
        .iter()
        .filter(|(k, _)| k == "_fields")
        .map(|(_, v)| v.clone())
        .collect();

    let mut path = http.segments;
    let method = http.method;
    let op = if method == Method::GET {
        if if_match.is_some() {
            return Err(ResourceError::bad_request(
                "If-Match not supported for GET requests",
            ));
        }
        let query_kind = query_kind(&reserved)?;
        match query_kind {
            Some(kind) => Operation::Query(Box::new(query_params(kind, &reserved)?)),
            None => {
                if if_none_match.as_deref() == Some("*") {
                    return Err(ResourceError::new(
                        412,
                        "If-None-Match * not appropriate for GET requests",
                    ));
                }
                Operation::Read {
                    if_none_match: if_none_match.map(|v| strip_quotes(&v)),
                }
            }
        }
    } else if method == Method::POST {
        if if_match.is_some() || if_none_match.is_some() {
            return Err(ResourceError::bad_request(
                "If-Match and If-None-Match are not supported for POST requests",
            ));
        }
        match single("_action")? {
            Some(a) if a.eq_ignore_ascii_case("create") => Operation::Create { new_id: None },
            Some(a) if !a.is_empty() => Operation::Action { name: a.to_owned() },
            _ => {
                return Err(ResourceError::bad_request(
                    "The parameter '_action' is required for POST requests",
                ))
            }
        }
    } else if method == Method::PUT {
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => {
                return Err(ResourceError::new(
                    412,
                    "Simultaneous use of If-Match and If-None-Match not supported for PUT requests",
                ))
            }
            (None, Some(inm)) if inm == "*" => {
                let new_id = path.pop().filter(|s| !s.is_empty()).ok_or_else(|| {
                    ResourceError::bad_request("No new resource ID in HTTP PUT request")
                })?;
                Operation::Create {
                    new_id: Some(new_id),
                }
            }
            (None, Some(_)) => {
                return Err(ResourceError::bad_request(
                    "If-None-Match with a revision is not supported for PUT requests; use If-None-Match: *",
                ))
            }
            // Seed 002's table: `If-Match` (a revision or `*`) updates an existing object
            // only; only a PUT with neither header may create (upsert).
            (im, None) => Operation::Update {
                upsert: im.is_none(),
                rev: revision(im),
            },
        }
    } else if method == Method::PATCH {
        if if_none_match.is_some() {
            return Err(ResourceError::new(
                412,
                "Use of If-None-Match not supported for PATCH requests",
            ));
        }
        Operation::Patch {
            rev: revision(if_match),
        }
    } else if method == Method::DELETE {
        if if_none_match.is_some() {
            return Err(ResourceError::new(
                412,
                "Use of If-None-Match not supported for DELETE requests",
            ));
        }
        Operation::Delete {
            rev: revision(if_match),
        }
    } else {
        return Err(ResourceError::not_supported(format!(
            "Method {method} not supported"
        )));
    };

    let body = parse_body(method, http.headers, http.body)?;
    Ok(Request {
        op,
        path,
        params,
        body,
        fields,
        pretty,
        caller,
        resource_version,
        // Pretty printing needs the whole document; anything else may stream.
        streamed: !pretty,
        // Set by the edge, which knows the client's address.
        reauth: None,
    })
}

/// The single value of a reserved parameter; given twice is a 400.
fn single<'a>(
    reserved: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, ResourceError> {
    let mut values = reserved.iter().filter(|(k, _)| k == name);
    let first = values.next().map(|(_, v)| v.as_str());
    if values.next().is_some() {
        return Err(ResourceError::bad_request(format!(
            "The parameter '{name}' must not be given more than once"
        )));
    }
    Ok(first)
}

fn query_kind(reserved: &[(String, String)]) -> Result<Option<QueryKind>, ResourceError> {
    let single = |name: &str| single(reserved, name);
    let filter = single("_queryFilter")?;
    let id = single("_queryId")?;
    let expr = single("_queryExpression")?;
    let exclusive = |a: &str, b: &str| {
        Err(ResourceError::bad_request(format!(
            "The parameters {a} and {b} are mutually exclusive"
        )))
    };
    match (id, filter, expr) {
        (Some(_), Some(_), _) => exclusive("_queryId", "_queryFilter"),
        (Some(_), _, Some(_)) => exclusive("_queryId", "_queryExpression"),
        (_, Some(_), Some(_)) => exclusive("_queryFilter", "_queryExpression"),
        (Some(id), None, None) => Ok(Some(QueryKind::Id(id.to_owned()))),
        (None, Some(f), None) => Ok(Some(QueryKind::Filter(f.to_owned()))),
        (None, None, Some(e)) => Ok(Some(QueryKind::Expression(e.to_owned()))),
        (None, None, None) => Ok(None),
    }
}

fn query_params(
    kind: QueryKind,
    reserved: &[(String, String)],
) -> Result<QueryParams, ResourceError> {
    let single = |name: &str| single(reserved, name);
    let int = |name: &str| -> Result<usize, ResourceError> {
        match single(name)? {
            None | Some("") => Ok(0),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(|n| n.max(0) as usize)
                .map_err(|_| {
                    ResourceError::bad_request(format!(
                    "The value '{v}' for parameter '{name}' could not be parsed as a valid integer"
                ))
                }),
        }
    };
    let page_size = int("_pageSize")?;
    let offset = int("_pagedResultsOffset")?;
    let cookie = single("_pagedResultsCookie")?
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let count_policy = match single("_totalPagedResultsPolicy")? {
        None | Some("") => CountPolicy::None,
        Some(v) => match v.to_ascii_uppercase().as_str() {
            "NONE" => CountPolicy::None,
            // IDM has no ESTIMATE; an exact count is the best estimate there is.
            "EXACT" | "ESTIMATE" => CountPolicy::Exact,
            _ => {
                return Err(ResourceError::bad_request(format!(
                    "The value '{v}' for parameter '_totalPagedResultsPolicy' could not be parsed as a valid count policy"
                )))
            }
        },
    };
    let mut sort_keys = Vec::new();
    for (_, v) in reserved.iter().filter(|(k, _)| k == "_sortKeys") {
        for key in v.split(',') {
            match SortKey::parse(key) {
                Some(k) => sort_keys.push(k),
                None => {
                    return Err(ResourceError::bad_request(format!(
                        "The value '{v}' for parameter '_sortKeys' could not be parsed as a comma separated list of sort keys"
                    )))
                }
            }
        }
    }
    Ok(QueryParams {
        kind,
        sort_keys,
        page_size,
        cookie,
        offset,
        count_policy,
    })
}

fn parse_body(method: &Method, headers: &HeaderMap, body: &[u8]) -> Result<Value, ResourceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    if method == Method::GET {
        return Ok(Value::Null);
    }
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ResourceError::bad_request(format!(
                "The request could not be processed because it specified the content-type '{ct}' when only the content-type 'application/json' and 'multipart/form-data' are supported"
            )));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        ResourceError::bad_request(
            "The request could not be processed because the provided content is not valid JSON",
        )
        .with_detail(serde_json::json!({ "reason": e.to_string() }))
    })
}

fn header_str(headers: &HeaderMap, name: &str) -> Result<Option<String>, ResourceError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim().to_owned())).map_err(|_| {
            ResourceError::bad_request(format!("The {name} header is not valid text"))
        }),
    }
}

/// `If-Match` value → revision: quotes stripped, `*` means any.
fn revision(if_match: Option<String>) -> Option<String> {
    if_match
        .map(|v| strip_quotes(&v))
        .filter(|v| v != "*" && !v.is_empty())
}

/// An entity tag as sent in `ETag`/`If-Match` → the bare revision (quotes and `W/` removed).
pub fn strip_quotes(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

/// `Accept-API-Version: protocol=2.1,resource=1.0` → the resource version; a protocol
/// major version other than 1 or 2 is refused.
fn api_version(headers: &HeaderMap) -> Result<Option<String>, ResourceError> {
    let Some(v) = header_str(headers, "accept-api-version")? else {
        return Ok(None);
    };
    let mut resource = None;
    for part in v.split(',') {
        let Some((k, val)) = part.split_once('=') else {
            return Err(ResourceError::bad_request(format!(
                "Malformed Accept-API-Version header '{v}'"
            )));
        };
        let val = val.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "protocol" => {
                let major = val.split('.').next().unwrap_or("");
                if major != "1" && major != "2" {
                    return Err(ResourceError::bad_request(format!(
                        "Unsupported major version: {val}"
                    )));
                }
            }
            "resource" => {
                if val.split('.').any(|n| n.parse::<u32>().is_err()) {
                    return Err(ResourceError::bad_request(format!(
                        "Malformed Accept-API-Version header '{v}'"
                    )));
                }
                resource = Some(val.to_owned());
            }
            _ => {
                return Err(ResourceError::bad_request(format!(
                    "Malformed Accept-API-Version header '{v}'"
                )))
            }
        }
    }
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> Result<Request, ResourceError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        request_from_http(
            HttpRequest {
                method: &method,
                segments: super::super::request::split_path(path),
                query,
                headers: &h,
                body: body.as_bytes(),
            },
            Arc::new(Caller::system()),
        )
    }

    #[test]
    fn get_is_read_or_query() {
        let r = map(Method::GET, "managed/user/a", None, &[], "").unwrap();
        assert_eq!(
            r.op,
            Operation::Read {
                if_none_match: None
            }
        );
        let r = map(
            Method::GET,
            "managed/user",
            Some("_queryFilter=userName+eq+%22smith%22&_pageSize=2&_sortKeys=-sn,%2BgivenName&_totalPagedResultsPolicy=exact&_fields=_id,userName"),
            &[],
            "",
        )
        .unwrap();
        let Operation::Query(q) = &r.op else {
            panic!("{:?}", r.op)
        };
        assert_eq!(q.kind, QueryKind::Filter("userName eq \"smith\"".into()));
        assert_eq!(q.page_size, 2);
        assert_eq!(q.count_policy, CountPolicy::Exact);
        assert_eq!(q.sort_keys.len(), 2);
        assert!(!q.sort_keys[0].ascending && q.sort_keys[1].ascending);
        assert_eq!(r.fields, vec!["_id,userName".to_string()]);
    }

    #[test]
    fn parameter_names_are_case_insensitive_and_extra_ones_kept() {
        let r = map(
            Method::POST,
            "managed/user",
            Some("_ACTION=patch&_queryid=for-userName&UID=bjensen"),
            &[],
            "[]",
        )
        .unwrap();
        assert_eq!(
            r.op,
            Operation::Action {
                name: "patch".into()
            }
        );
        assert_eq!(r.param("uid"), Some("bjensen"));
    }

    #[test]
    fn documented_errors() {
        let cases: Vec<(Result<Request, ResourceError>, u16, &str)> = vec![
            (
                map(Method::GET, "m/u", Some("_queryId=a&_queryFilter=true"), &[], ""),
                400,
                "The parameters _queryId and _queryFilter are mutually exclusive",
            ),
            (
                map(Method::GET, "m/u/a", None, &[("if-none-match", "*")], ""),
                412,
                "If-None-Match * not appropriate for GET requests",
            ),
            (
                map(Method::PATCH, "m/u/a", None, &[("if-none-match", "\"1\"")], "[]"),
                412,
                "Use of If-None-Match not supported for PATCH requests",
            ),
            (
                map(
                    Method::PUT,
                    "m/u/a",
                    None,
                    &[("if-none-match", "*"), ("if-match", "1")],
                    "{}",
                ),
                412,
                "Simultaneous use of If-Match and If-None-Match not supported for PUT requests",
            ),
            (
                map(Method::GET, "m/u", None, &[("if-modified-since", "x")], ""),
                409,
                "Header If-Modified-Since not supported",
            ),
            (
                map(Method::HEAD, "m/u", None, &[], ""),
                501,
                "Method HEAD not supported",
            ),
            (
                map(Method::POST, "m/u", Some("_action=create"), &[("content-type", "text/plain")], "{}"),
                400,
                "The request could not be processed because it specified the content-type 'text/plain' when only the content-type 'application/json' and 'multipart/form-data' are supported",
            ),
            (
                map(Method::GET, "m/u", Some("_queryFilter=true&_totalPagedResultsPolicy=SOME"), &[], ""),
                400,
                "The value 'SOME' for parameter '_totalPagedResultsPolicy' could not be parsed as a valid count policy",
            ),
            (
                map(Method::GET, "m/u", Some("_queryFilter=true&_sortKeys=a,,b"), &[], ""),
                400,
                "The value 'a,,b' for parameter '_sortKeys' could not be parsed as a comma separated list of sort keys",
            ),
            (
                map(Method::GET, "m/u", Some("_queryFilter=true&_pageSize=ten"), &[], ""),
                400,
                "The value 'ten' for parameter '_pageSize' could not be parsed as a valid integer",
            ),
            (
                map(Method::GET, "m/u", None, &[("accept-api-version", "protocol=3.0,resource=1.0")], ""),
                400,
                "Unsupported major version: 3.0",
            ),
            (
                map(Method::GET, "m/u", Some("_bogus=1"), &[], ""),
                400,
                "Unrecognized request parameter '_bogus'",
            ),
            (
                map(Method::POST, "m/u", None, &[], "{}"),
                400,
                "The parameter '_action' is required for POST requests",
            ),
            (
                map(Method::POST, "m/u", Some("_action=create"), &[], "{nope"),
                400,
                "The request could not be processed because the provided content is not valid JSON",
            ),
        ];
        for (i, (result, code, message)) in cases.into_iter().enumerate() {
            let e = result.expect_err(&format!("case {i} should fail"));
            assert_eq!((e.code, e.message.as_str()), (code, message), "case {i}");
        }
    }

    #[test]
    fn put_variants() {
        let r = map(
            Method::PUT,
            "managed/user/psmith",
            None,
            &[("if-none-match", "*")],
            "{}",
        )
        .unwrap();
        assert_eq!(
            r.op,
            Operation::Create {
                new_id: Some("psmith".into())
            }
        );
        assert_eq!(r.path, vec!["managed", "user"]);
        let r = map(
            Method::PUT,
            "managed/user/a",
            None,
            &[("if-match", "\"3\"")],
            "{}",
        )
        .unwrap();
        assert_eq!(
            r.op,
            Operation::Update {
                rev: Some("3".into()),
                upsert: false
            }
        );
        let r = map(
            Method::PUT,
            "managed/user/a",
            None,
            &[("if-match", "*")],
            "{}",
        )
        .unwrap();
        assert_eq!(
            r.op,
            Operation::Update {
                rev: None,
                upsert: false
            }
        );
        let r = map(Method::PUT, "managed/user/a", None, &[], "{}").unwrap();
        assert_eq!(
            r.op,
            Operation::Update {
                rev: None,
                upsert: true
            }
        );
        let r = map(
            Method::DELETE,
            "managed/user/a",
            None,
            &[("if-match", "7")],
            "",
        )
        .unwrap();
        assert_eq!(
            r.op,
            Operation::Delete {
                rev: Some("7".into())
            }
        );
        let e = map(Method::PUT, "", None, &[("if-none-match", "*")], "{}").unwrap_err();
        assert_eq!(e.message, "No new resource ID in HTTP PUT request");
    }

    #[test]
    fn api_version_resource_is_kept() {
        let r = map(
            Method::GET,
            "managed/user/a",
            None,
            &[("accept-api-version", "protocol=2.1,resource=1.0")],
            "",
        )
        .unwrap();
        assert_eq!(r.resource_version.as_deref(), Some("1.0"));
    }
}
