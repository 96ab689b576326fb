//! `_queryFilter`: syntax tree, parser and in-memory evaluation.
//!
//! Pure functions over text and JSON: nothing here knows about HTTP or the store. The one
//! bridge outwards is [`to_resource_error`], which shapes a parse failure as a CREST 400.

mod ast;
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
