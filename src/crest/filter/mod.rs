//! `_queryFilter`: syntax tree, parser and in-memory evaluation.
//!
//! Pure functions over text and JSON: nothing here knows about HTTP or the store. The one
//! bridge outwards is [`to_resource_error`], which shapes a parse failure as a CREST 400.

mod ast;
/// The filter of a query over an in-memory listing (config files, jobs, task scans):
/// `_queryFilter`, or `query-all-ids`/`query-all` for everything; `what` names the
/// resources in the refusal of anything else.
pub fn of_listing_query(
    kind: &crate::crest::QueryKind,
    what: &str,
) -> Result<QueryFilter, crate::crest::ResourceError> {
    use crate::crest::QueryKind;
    match kind {
        QueryKind::Filter(text) => parse(text).map_err(|e| to_resource_error(text, &e)),
        QueryKind::Id(id) if id == "query-all-ids" || id == "query-all" => Ok(QueryFilter::True),
        _ => Err(crate::crest::ResourceError::bad_request(format!(
            "{what} are queried with _queryFilter, query-all-ids or query-all"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod conformance;
mod error;
mod eval;
mod parser;
#[cfg(test)]
mod proptests;

pub use ast::{array_index, CompareOp, FilterValue, JsonPointer, QueryFilter};
pub use error::{to_resource_error, FilterError, FilterErrorKind};
pub use parser::{parse, MAX_FILTER_DEPTH, MAX_FILTER_LENGTH};
