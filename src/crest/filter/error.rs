//! Why a `_queryFilter` did not parse: one sentence saying what was wrong, where (byte
//! offset into the filter text), and a hint how to write it instead. The HTTP answer is the
//! fixed CREST 400 message, with this explanation in its `detail`.

use serde_json::json;

use super::parser::{MAX_FILTER_DEPTH, MAX_FILTER_LENGTH};
use crate::crest::ResourceError;

/// A `_queryFilter` that could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}, at byte {position}. {}.", .kind.what(), .kind.hint())]
pub struct FilterError {
    kind: FilterErrorKind,
    position: usize,
}

impl FilterError {
    pub(crate) fn new(kind: FilterErrorKind, position: usize) -> Self {
        Self { kind, position }
    }

    pub fn kind(&self) -> &FilterErrorKind {
        &self.kind
    }

    /// Byte offset into the filter text where the problem was found.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// What was wrong. Strings quoted from the input are shortened to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterErrorKind {
    Empty,
    TooLong {
        length: usize,
    },
    TooDeep,
    UnterminatedString {
        quote: char,
    },
    InvalidEscape {
        escape: char,
    },
    InvalidUnicodeEscape {
        escape: String,
    },
    ExpectedCondition {
        found: String,
    },
    NestedNot,
    ExpectedOperator {
        field: String,
        found: String,
    },
    UnknownOperator {
        operator: String,
    },
    ExpectedValue {
        operator: &'static str,
        found: String,
    },
    InvalidValue {
        word: String,
    },
    NullValue,
    IntegerOutOfRange {
        word: String,
    },
    FloatOutOfRange {
        word: String,
    },
    InValueNotString {
        found: String,
    },
    InValueNotArray {
        reason: String,
    },
    UnclosedParenthesis {
        open: usize,
        found: String,
    },
    TrailingInput {
        found: String,
    },
}

const OPERATORS_HINT: &str = "Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence";
const IN_HINT: &str =
    r#"Write it as a quoted JSON array of strings, as in userName in '["a","b"]'"#;
const BALANCE_HINT: &str = "Join conditions with `and` or `or`, and check that parentheses balance";

impl FilterErrorKind {
    /// What was wrong, as the start of a sentence.
    fn what(&self) -> String {
        use FilterErrorKind::*;
        match self {
            Empty => "The filter is empty".into(),
            TooLong { length } => format!(
                "The filter is {length} bytes long, more than the {MAX_FILTER_LENGTH} allowed"
            ),
            TooDeep => format!("Parentheses and `!` nest more than {MAX_FILTER_DEPTH} levels deep"),
            UnterminatedString { quote } => {
                format!("The string opened by `{quote}` is never closed")
            }
            InvalidEscape { escape } => format!("`\\{escape}` is not a valid escape in a string"),
            InvalidUnicodeEscape { escape } => {
                format!("`{escape}` is not a valid Unicode escape")
            }
            ExpectedCondition { found } => format!("Expected a condition, found {found}"),
            NestedNot => "`!` cannot directly follow another `!`".into(),
            ExpectedOperator { field, found } => {
                format!("Expected an operator after the field `{field}`, found {found}")
            }
            UnknownOperator { operator } => format!("`{operator}` is not a supported operator"),
            ExpectedValue { operator, found } => {
                format!("Expected a value after `{operator}`, found {found}")
            }
            InvalidValue { word } => format!("`{word}` is not a valid value"),
            NullValue => "`null` is not a valid value".into(),
            IntegerOutOfRange { word } => format!("`{word}` does not fit a 64-bit integer"),
            FloatOutOfRange { word } => {
                format!("`{word}` is too large for a floating-point number")
            }
            InValueNotString { found } => {
                format!("The value of `in` must be a quoted JSON array of strings, found {found}")
            }
            InValueNotArray { reason } => {
                format!("The value of `in` is not a JSON array of strings ({reason})")
            }
            UnclosedParenthesis { open, found } => {
                format!("Expected `)` to close the `(` at byte {open}, found {found}")
            }
            TrailingInput { found } => format!("Unexpected {found} after a complete condition"),
        }
    }

    /// How to write it instead.
    fn hint(&self) -> &'static str {
        use FilterErrorKind::*;
        match self {
            Empty => "Use `true` to match every object",
            TooLong { .. } => "Split the query into several smaller ones",
            TooDeep => "Remove redundant parentheses, or join conditions at one level with `and` or `or`",
            UnterminatedString { .. } => {
                "Close it with the same quote; a quote inside a string is escaped with a backslash, as in 'it\\'s'"
            }
            InvalidEscape { .. } => {
                r#"Valid escapes are \" \' \\ \/ \b \f \n \r \t and \uXXXX; a backslash itself is written \\"#
            }
            InvalidUnicodeEscape { .. } => {
                r"Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00"
            }
            ExpectedCondition { .. } => {
                "A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`"
            }
            NestedNot => "Put the inner negation in parentheses, as in `!(!field pr)`",
            ExpectedOperator { .. } | UnknownOperator { .. } => OPERATORS_HINT,
            ExpectedValue { .. } | InvalidValue { .. } => {
                "Values are numbers, true, false, or strings in double or single quotes"
            }
            NullValue => "Use `!(field pr)` to match a missing or null field",
            IntegerOutOfRange { .. } => {
                "Write it with a decimal point to compare it as a floating-point number"
            }
            FloatOutOfRange { .. } => "Use a number of magnitude below 1.7e308",
            InValueNotString { .. } | InValueNotArray { .. } => IN_HINT,
            UnclosedParenthesis { .. } | TrailingInput { .. } => BALANCE_HINT,
        }
    }
}

/// The CREST answer to an unparsable `_queryFilter`: 400 with CREST's exact message
/// (crest-wire.md §4), and what was wrong in `detail.reason`.
pub fn to_resource_error(filter_text: &str, e: &FilterError) -> ResourceError {
    ResourceError::bad_request(format!(
        "The value '{filter_text}' for parameter '_queryFilter' could not be parsed as a valid query filter"
    ))
    .with_detail(json!({ "reason": e.to_string() }))
}
