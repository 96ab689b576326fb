//! Reads and writes of the mapping's resources for the engine, through the router: single
//! writes, query pages (canceled with the run), and batched reads by id that never take a
//! partial answer for missing objects.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{object_id, Engine, Page};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter, MAX_FILTER_LENGTH};
use crate::crest::query::CountPolicy;
use crate::crest::{Capability, Operation, QueryParams, Request, ResourceError, Response};

/// Ids per batched read of a resource without `in` (`_id eq "a" or _id eq "b" …`), such as
/// a remote IDM, where the filter travels in the URL.
const READ_BATCH: usize = 100;
/// Ids per batched read of a resource with `in` (`_id in '["a","b",…]'`, which the store
/// answers from its primary key with one bound parameter): a whole default page.
const IN_BATCH: usize = 1000;
/// Longest `_id in …` filter text sent, under the parser's [`MAX_FILTER_LENGTH`]; long ids
/// (UUIDs: ~41 bytes each, escaped) make more, smaller queries.
const IN_FILTER_BYTES: usize = MAX_FILTER_LENGTH - 256;
impl Engine {
    pub(super) fn request(&self, op: Operation, resource: &str, id: Option<&str>) -> Request {
        let mut req = Request::new(op, resource, self.caller.clone());
        if let Some(id) = id {
            req.path.push(id.to_owned());
        }
        req
    }

    pub(super) async fn create_target(
        &self,
        mut body: Map<String, Value>,
    ) -> Result<String, ResourceError> {
        let new_id = match body.remove("_id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        let req = self
            .request(Operation::Create { new_id }, &self.mapping.target, None)
            .with_body(Value::Object(body));
        match self.router.handle(&req).await? {
            Response::Created(r) | Response::Resource(r) => Ok(r.id),
            Response::Json(_, v) | Response::Action(Some(v)) => object_id(&v)
                .ok_or_else(|| ResourceError::bad_gateway("the created target has no _id")),
            _ => Err(ResourceError::bad_gateway("unexpected answer to a create")),
        }
    }

    pub(super) async fn patch_target(
        &self,
        id: &str,
        ops: Vec<Value>,
    ) -> Result<(), ResourceError> {
        let req = self
            .request(
                Operation::Patch { rev: None },
                &self.mapping.target,
                Some(id),
            )
            .with_body(Value::Array(ops));
        self.router.handle(&req).await.map(|_| ())
    }

    /// Deletes one object; one already gone is not an error.
    pub(super) async fn delete_object(
        &self,
        resource: &str,
        id: &str,
    ) -> Result<(), ResourceError> {
        let req = self.request(Operation::Delete { rev: None }, resource, Some(id));
        match self.router.handle(&req).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One query page, canceled with the run.
    pub(super) async fn query_page(
        &self,
        resource: &str,
        filter: &str,
        page_size: usize,
        cookie: Option<&str>,
        count: bool,
    ) -> Result<Page, ResourceError> {
        self.query_page_fields(resource, filter, page_size, cookie, count, None)
            .await
    }

    /// [`Self::query_page`] asking only for `fields` (e.g. `_id`: the store then skips the
    /// bodies, a remote sends less).
    pub(super) async fn query_page_fields(
        &self,
        resource: &str,
        filter: &str,
        page_size: usize,
        cookie: Option<&str>,
        count: bool,
        fields: Option<&str>,
    ) -> Result<Page, ResourceError> {
        let mut q = QueryParams::filter(filter);
        q.page_size = page_size;
        q.cookie = cookie.map(str::to_owned);
        if count {
            q.count_policy = CountPolicy::Exact;
        }
        let mut req = self.request(Operation::Query(Box::new(q)), resource, None);
        if let Some(fields) = fields {
            req.fields = vec![fields.to_owned()];
        }
        let answer = tokio::select! {
            r = self.router.handle(&req) => r?,
            _ = self.run.canceled() => return Err(ResourceError::unavailable("canceled")),
        };
        match answer {
            Response::Query(q) => Ok(Page {
                results: q.results,
                cookie: q.cookie,
                total: q.total,
            }),
            Response::Json(200, v) => page_from_envelope(v).map_err(ResourceError::bad_gateway),
            _ => Err(ResourceError::bad_gateway(
                "the query answer is not a result page",
            )),
        }
    }

    /// The objects of `ids` that exist, by id, in batched queries.
    pub(super) async fn read_many(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, ResourceError> {
        self.read_many_fields(resource, ids, None).await
    }

    /// [`Self::read_many`] asking only for `fields`: one `_id in […]` query per
    /// [`IN_BATCH`] ids on a resource that supports `in`, `_id eq … or …` queries of
    /// [`READ_BATCH`] ids on one that does not (a remote IDM).
    pub(super) async fn read_many_fields(
        &self,
        resource: &str,
        ids: &[String],
        fields: Option<&str>,
    ) -> Result<HashMap<String, Value>, ResourceError> {
        let mut out = HashMap::with_capacity(ids.len());
        let with_in = self.router.supports(resource, Capability::InFilter);
        for filter in id_filters(with_in, ids) {
            let page = self
                .query_page_fields(resource, &filter, 0, None, false, fields)
                .await?;
            if page.cookie.as_deref().is_some_and(|c| !c.is_empty()) {
                // Asked without paging: a cookie says some of the objects were left out, and
                // those must not be taken for missing.
                return Err(ResourceError::bad_gateway(format!(
                    "a read of {} objects of '{resource}' by id came back with a paging cookie \
                     (a partial answer)",
                    ids.len().min(IN_BATCH)
                )));
            }
            for obj in page.results {
                if let Some(id) = object_id(&obj) {
                    out.insert(id, obj);
                }
            }
        }
        Ok(out)
    }
}

/// The filters that select `ids` by `_id`, in order, each id in exactly one: `in` filters
/// when the resource supports them (`with_in`), `or`-ed `eq` chunks otherwise.
fn id_filters(with_in: bool, ids: &[String]) -> Vec<String> {
    if with_in {
        in_filters(ids, IN_BATCH, IN_FILTER_BYTES)
    } else {
        ids.chunks(READ_BATCH).map(eq_filter).collect()
    }
}

/// `_id eq "a" or _id eq "b" …` (just `_id eq "a"` for one id).
fn eq_filter(ids: &[String]) -> String {
    let eq = |id: &String| QueryFilter::Compare {
        field: JsonPointer::parse("_id"),
        op: CompareOp::Eq,
        value: FilterValue::String(id.clone()),
    };
    match ids {
        [one] => eq(one),
        many => QueryFilter::Or(many.iter().map(eq).collect()),
    }
    .to_string()
}

/// `_id in '[…]'` filters of at most `max_ids` ids and, unless a single id is longer, at most
/// `max_len` bytes each.
fn in_filters(ids: &[String], max_ids: usize, max_len: usize) -> Vec<String> {
    let filter = |values: &[String]| {
        QueryFilter::In {
            field: JsonPointer::parse("_id"),
            values: values.to_vec(),
        }
        .to_string()
    };
    // `_id in "[]"`, then per id its JSON string, escaped again as part of the quoted
    // array, and a comma.
    let overhead = filter(&[]).len();
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = overhead;
    for (i, id) in ids.iter().enumerate() {
        let cost = escaped_len(id) + 1;
        if i > start && (i - start >= max_ids || len + cost > max_len) {
            out.push(filter(&ids[start..i]));
            start = i;
            len = overhead;
        }
        len += cost;
    }
    if start < ids.len() {
        out.push(filter(&ids[start..]));
    }
    out
}

/// Bytes `id` takes inside the quoted JSON array of an `in` filter: JSON-encoded twice.
fn escaped_len(id: &str) -> usize {
    let once = Value::String(id.to_owned()).to_string();
    Value::String(once).to_string().len() - 2
}

/// A query envelope as a page; one that carries an `error` member (a query that failed
/// part-way) is no page.
fn page_from_envelope(v: Value) -> Result<Page, String> {
    let not_a_page = || "the query answer is not a result page".to_owned();
    let Value::Object(mut m) = v else {
        return Err(not_a_page());
    };
    if let Some(error) = m.get("error").filter(|e| !e.is_null()) {
        return Err(format!(
            "the query failed part-way through the page: {error}"
        ));
    }
    let Some(Value::Array(results)) = m.remove("result") else {
        return Err(not_a_page());
    };
    let cookie = m
        .get("pagedResultsCookie")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let total = m
        .get("totalPagedResults")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 0)
        .map(|t| t as u64);
    Ok(Page {
        results,
        cookie,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::recon::same_value;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value_and_envelopes_parse() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(!same_value(&json!("1"), &json!(1)));
        assert!(same_value(&Value::Null, &Value::Null));
        let p = page_from_envelope(json!({"result": [{"_id": "a"}], "resultCount": 1,
            "pagedResultsCookie": "c", "totalPagedResults": -1}))
        .unwrap();
        assert_eq!(
            (p.results.len(), p.cookie.as_deref(), p.total),
            (1, Some("c"), None)
        );
        assert!(page_from_envelope(json!({"code": 500})).is_err());
        // CREST's mid-stream failure: the results before the error are not the page.
        let e = page_from_envelope(json!({"result": [{"_id": "a"}], "resultCount": 1,
            "error": {"code": 500, "message": "gone"}}));
        assert!(e.is_err_and(|e| e.contains("part-way")));
    }

    /// The ids of each filter, parsed back.
    fn ids_of(filter: &str) -> Vec<String> {
        match crate::crest::filter::parse(filter).unwrap() {
            QueryFilter::In { field, values } => {
                assert_eq!(field, JsonPointer::parse("_id"));
                values
            }
            other => panic!("not an in filter: {other}"),
        }
    }

    #[test]
    fn in_filters_chunk_by_count_and_length() {
        let ids: Vec<String> = (0..2500).map(|i| format!("u{i}")).collect();
        let filters = in_filters(&ids, 1000, IN_FILTER_BYTES);
        assert_eq!(filters.len(), 3);
        let back: Vec<String> = filters.iter().flat_map(|f| ids_of(f)).collect();
        assert_eq!(back, ids);
        assert_eq!(ids_of(&filters[2]).len(), 500);

        // UUID-sized ids, quotes and backslashes: chunks end at the length limit, every
        // filter parses, none is longer than allowed, and nothing is lost or repeated.
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("{i:08}-\"it's\\-0000-0000-000000000000"))
            .collect();
        let filters = in_filters(&ids, 1000, IN_FILTER_BYTES);
        assert!(filters.len() > 1, "{}", filters.len());
        assert!(filters.iter().all(|f| f.len() <= IN_FILTER_BYTES));
        assert!(filters
            .iter()
            .all(|f| f.len() > IN_FILTER_BYTES * 9 / 10 || f == filters.last().unwrap()));
        let back: Vec<String> = filters.iter().flat_map(|f| ids_of(f)).collect();
        assert_eq!(back, ids);

        // One id longer than the limit still gets its own filter; none for no ids.
        let long = vec!["a".repeat(100), "b".into()];
        assert_eq!(in_filters(&long, 10, 50).len(), 2);
        assert!(in_filters(&[], 10, 50).is_empty());
        assert_eq!(ids_of(&in_filters(&["x".into()], 10, 50)[0]), ["x"]);
    }

    #[test]
    fn resources_without_in_get_or_chunks_the_others_in() {
        let ids: Vec<String> = (0..250).map(|i| format!("u{i}")).collect();
        let local = id_filters(true, &ids);
        assert_eq!(local.len(), 1);
        assert_eq!(ids_of(&local[0]), ids);

        let remote = id_filters(false, &ids);
        assert_eq!(remote.len(), 3);
        assert_eq!(remote[2].matches(" or ").count(), 49);
        assert!(remote.iter().all(|f| !f.contains(" in ")));
        assert_eq!(id_filters(false, &ids[..1]), ["/_id eq \"u0\""]);
        let parsed = crate::crest::filter::parse(&remote[0]).unwrap();
        assert!(parsed.matches(&json!({"_id": "u99"})));
        assert!(!parsed.matches(&json!({"_id": "u100"})));
    }
}
