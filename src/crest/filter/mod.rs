//! `_queryFilter`: syntax tree, parser and in-memory evaluation.

mod ast;

pub use ast::{CompareOp, FilterValue, JsonPointer, QueryFilter};
