//! Query parameters shared by the HTTP edge, handlers and the store: sort keys and the
//! total-count policy.

use std::fmt;

use super::filter::JsonPointer;

/// One `_sortKeys` entry: `userName`, `+userName` (ascending) or `-userName` (descending).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortKey {
    pub field: JsonPointer,
    pub ascending: bool,
}

impl SortKey {
    /// Parses one key of a `_sortKeys` list; `None` for an empty key.
    pub fn parse(text: &str) -> Option<SortKey> {
        let text = text.trim();
        let (ascending, rest) = match text.as_bytes().first()? {
            b'+' => (true, &text[1..]),
            b'-' => (false, &text[1..]),
            _ => (true, text),
        };
        if rest.is_empty() {
            return None;
        }
        Some(SortKey {
            field: JsonPointer::parse(rest),
            ascending,
        })
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.ascending { "" } else { "-" };
        let field = self.field.to_string();
        write!(f, "{sign}{}", field.trim_start_matches('/'))
    }
}

/// `_totalPagedResultsPolicy`. IDM supports only `NONE` and `EXACT`; `ESTIMATE` is answered
/// as `EXACT` (an exact count is the best estimate) — documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountPolicy {
    #[default]
    None,
    Exact,
}

impl CountPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CountPolicy::None => "NONE",
            CountPolicy::Exact => "EXACT",
        }
    }
}
