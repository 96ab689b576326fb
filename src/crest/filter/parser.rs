//! The `_queryFilter` parser: filter text (already URL-decoded) → [`QueryFilter`].
//!
//! Grammar (CREST's `QueryFilterParser`, crest-wire.md §2b, with IDM's limited `in`):
//!
//! ```text
//! Expr           = OrExpr
//! OrExpr         = AndExpr ( 'or' AndExpr )*
//! AndExpr        = NotExpr ( 'and' NotExpr )*
//! NotExpr        = '!' PrimaryExpr | PrimaryExpr
//! PrimaryExpr    = '(' Expr ')' | ComparisonExpr | PresenceExpr | LiteralExpr
//! ComparisonExpr = Pointer OpName Value
//! PresenceExpr   = Pointer 'pr'
//! LiteralExpr    = 'true' | 'false'
//! OpName         = 'eq' | 'co' | 'sw' | 'lt' | 'le' | 'gt' | 'ge' | 'in'
//! Value          = NUMBER | BOOLEAN | '"' UTF8STRING '"' | "'" UTF8STRING "'"
//! ```
//!
//! * Keywords, operators and booleans are case-insensitive; pointers are case-sensitive JSON
//!   pointers with or without the leading `/` (`name/givenName`, `/name/givenName`).
//! * Tokens are separated by whitespace, and also end at `(`, `)` and quotes: `cn sw'babs'`,
//!   `(a eq 1)and(b pr)` and `!(a pr)` are valid. `!` starts a token of its own wherever a
//!   token starts, and may be followed by spaces; inside a word it is an ordinary character.
//! * Strings take the backslash escapes `\"`, `\'`, `\\` and JSON's `\/ \b \f \n \r \t \uXXXX`.
//! * A number without `.` or exponent is an [`FilterValue::Integer`], any other a
//!   [`FilterValue::Float`]; a bare word that is neither number nor boolean is an error.
//! * `in` takes a string holding a JSON array of strings: `userName in '["a","b"]'`.
//! * `a or b or c` becomes one `Or` of three; a parenthesised group stays a node of its own,
//!   so that `Display` can print any tree back to text that parses to the same tree.
//! * Input is bounded: [`MAX_FILTER_LENGTH`] bytes, [`MAX_FILTER_DEPTH`] levels of `(` and `!`.
//!   Recursion happens only at those two tokens, so the stack depth is bounded too.
//!
//! This module must not panic on any input; the parser is fuzzed (`fuzz/`) and property-tested.

use super::ast::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use super::error::{FilterError, FilterErrorKind};

/// Longest filter text accepted, in bytes. Far above any real query, low enough that a
/// hostile one costs little to reject.
pub const MAX_FILTER_LENGTH: usize = 16 * 1024;

/// Deepest nesting accepted, counting every `(` and `!` that encloses a condition
/// (`!(a pr)` is two levels). CREST allows 256; 64 leaves a large margin for our stack.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Longest excerpt of the input quoted back in an error message, in characters.
const EXCERPT_CHARS: usize = 40;

/// Parses `_queryFilter` text.
pub fn parse(text: &str) -> Result<QueryFilter, FilterError> {
    if text.len() > MAX_FILTER_LENGTH {
        let kind = FilterErrorKind::TooLong { length: text.len() };
        return Err(FilterError::new(kind, MAX_FILTER_LENGTH));
    }
    if text.trim().is_empty() {
        return Err(FilterError::new(FilterErrorKind::Empty, 0));
    }
    let mut parser = Parser {
        lexer: Lexer { text, pos: 0 },
        peeked: None,
    };
    let filter = parser.expr(0)?;
    let token = parser.next()?;
    match token.kind {
        TokenKind::End => Ok(filter),
        _ => Err(FilterError::new(
            FilterErrorKind::TrailingInput {
                found: token.describe(),
            },
            token.at,
        )),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind<'a> {
    LParen,
    RParen,
    Bang,
    /// A bare word: pointer, keyword, operator, number or boolean.
    Word(&'a str),
    /// A quoted string, escapes resolved.
    Str(String),
    End,
}

#[derive(Debug, Clone, PartialEq)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// Byte offset of the token's first character.
    at: usize,
}

impl Token<'_> {
    /// The token as an error message names it.
    fn describe(&self) -> String {
        match &self.kind {
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Bang => "`!`".into(),
            TokenKind::Word(w) => format!("`{}`", excerpt(w)),
            TokenKind::Str(s) => {
                let quoted = serde_json::to_string(&excerpt(s)).unwrap_or_default();
                format!("the string {quoted}")
            }
            TokenKind::End => "the end of the filter".into(),
        }
    }
}

/// `text` shortened to [`EXCERPT_CHARS`] characters, `…` marking a cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Ends a bare word (besides whitespace).
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'')
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn next_token(&mut self) -> Result<Token<'a>, FilterError> {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let at = self.pos;
        let Some(c) = trimmed.chars().next() else {
            return Ok(Token {
                kind: TokenKind::End,
                at,
            });
        };
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '!' => TokenKind::Bang,
            '"' | '\'' => {
                let (value, len) = lex_string(trimmed, at)?;
                self.pos += len;
                return Ok(Token {
                    kind: TokenKind::Str(value),
                    at,
                });
            }
            _ => {
                let len = trimmed.find(is_delimiter).unwrap_or(trimmed.len());
                self.pos += len;
                return Ok(Token {
                    kind: TokenKind::Word(&trimmed[..len]),
                    at,
                });
            }
        };
        self.pos += c.len_utf8();
        Ok(Token { kind, at })
    }
}

/// A quoted string at the start of `text` (which sits at byte `at` of the filter): its value
/// and its length in the input, quotes included.
fn lex_string(text: &str, at: usize) -> Result<(String, usize), FilterError> {
    let mut chars = text.char_indices();
    let Some((_, quote)) = chars.next() else {
        return Err(FilterError::new(
            FilterErrorKind::UnterminatedString { quote: '"' },
            at,
        ));
    };
    let unterminated = || FilterError::new(FilterErrorKind::UnterminatedString { quote }, at);
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((value, i + c.len_utf8()));
        }
        if c != '\\' {
            value.push(c);
            continue;
        }
        let escape_at = at + i;
        let (_, e) = chars.next().ok_or_else(unterminated)?;
        let resolved = match e {
            '"' | '\'' | '\\' | '/' => e,
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => lex_unicode_escape(&text[i..], &mut chars, escape_at)?,
            other => {
                let kind = FilterErrorKind::InvalidEscape { escape: other };
                return Err(FilterError::new(kind, escape_at));
            }
        };
        value.push(resolved);
    }
    Err(unterminated())
}

/// The character of a `\uXXXX` escape (or surrogate pair `\uXXXX\uXXXX`); `escaped` starts
/// at the backslash, `chars` is positioned after the `u`.
fn lex_unicode_escape(
    escaped: &str,
    chars: &mut std::str::CharIndices<'_>,
    escape_at: usize,
) -> Result<char, FilterError> {
    let invalid = |len: usize| {
        let shown: String = escaped.chars().take(len).collect();
        FilterError::new(
            FilterErrorKind::InvalidUnicodeEscape { escape: shown },
            escape_at,
        )
    };
    let hex4 = |chars: &mut std::str::CharIndices<'_>, shown: usize| -> Result<u32, _> {
        let mut code = 0;
        for n in 0..4 {
            let digit = chars
                .next()
                .and_then(|(_, c)| c.to_digit(16))
                .ok_or_else(|| invalid(shown + n + 1))?;
            code = code * 16 + digit;
        }
        Ok(code)
    };
    let high = hex4(chars, 2)?;
    let code = match high {
        0xD800..=0xDBFF => {
            // A high surrogate must be followed by `\u` and a low surrogate.
            let backslash = chars.next().map(|(_, c)| c);
            let u = chars.next().map(|(_, c)| c);
            if backslash != Some('\\') || u != Some('u') {
                return Err(invalid(6));
            }
            let low = hex4(chars, 8)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(invalid(12));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        }
        _ => high,
    };
    // Lone low surrogates are the only values left that are not characters.
    char::from_u32(code).ok_or_else(|| invalid(6))
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Result<Token<'a>, FilterError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<&Token<'a>, FilterError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    /// Whether the next token is the (case-insensitive) `keyword`; consumes it if so.
    fn eat_keyword(&mut self, keyword: &str) -> Result<bool, FilterError> {
        let found =
            matches!(self.peek()?.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(keyword));
        if found {
            self.peeked = None;
        }
        Ok(found)
    }

    /// One level deeper than `depth`, or [`FilterErrorKind::TooDeep`] at the token at `at`.
    fn deeper(depth: usize, at: usize) -> Result<usize, FilterError> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(FilterError::new(FilterErrorKind::TooDeep, at));
        }
        Ok(depth + 1)
    }

    /// `Expr = OrExpr`
    fn expr(&mut self, depth: usize) -> Result<QueryFilter, FilterError> {
        self.or_expr(depth)
    }

    /// `OrExpr = AndExpr ( 'or' AndExpr )*`
    fn or_expr(&mut self, depth: usize) -> Result<QueryFilter, FilterError> {
        let mut operands = vec![self.and_expr(depth)?];
        while self.eat_keyword("or")? {
            operands.push(self.and_expr(depth)?);
        }
        Ok(join(operands, QueryFilter::Or))
    }

    /// `AndExpr = NotExpr ( 'and' NotExpr )*`
    fn and_expr(&mut self, depth: usize) -> Result<QueryFilter, FilterError> {
        let mut operands = vec![self.not_expr(depth)?];
        while self.eat_keyword("and")? {
            operands.push(self.not_expr(depth)?);
        }
        Ok(join(operands, QueryFilter::And))
    }

    /// `NotExpr = '!' PrimaryExpr | PrimaryExpr`
    fn not_expr(&mut self, depth: usize) -> Result<QueryFilter, FilterError> {
        let token = self.peek()?;
        if token.kind != TokenKind::Bang {
            return self.primary_expr(depth);
        }
        let depth = Self::deeper(depth, token.at)?;
        self.peeked = None;
        let next = self.peek()?;
        if next.kind == TokenKind::Bang {
            return Err(FilterError::new(FilterErrorKind::NestedNot, next.at));
        }
        Ok(QueryFilter::Not(Box::new(self.primary_expr(depth)?)))
    }

    /// `PrimaryExpr = '(' Expr ')' | ComparisonExpr | PresenceExpr | LiteralExpr`
    ///
    /// `LiteralExpr = 'true' | 'false'`
    fn primary_expr(&mut self, depth: usize) -> Result<QueryFilter, FilterError> {
        let token = self.next()?;
        match token.kind {
            TokenKind::LParen => {
                let inner = self.expr(Self::deeper(depth, token.at)?)?;
                let close = self.next()?;
                if close.kind != TokenKind::RParen {
                    let kind = FilterErrorKind::UnclosedParenthesis {
                        open: token.at,
                        found: close.describe(),
                    };
                    return Err(FilterError::new(kind, close.at));
                }
                Ok(inner)
            }
            TokenKind::Word(w) if w.eq_ignore_ascii_case("true") => Ok(QueryFilter::True),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("false") => Ok(QueryFilter::False),
            TokenKind::Word(pointer) => self.comparison_expr(pointer),
            _ => Err(FilterError::new(
                FilterErrorKind::ExpectedCondition {
                    found: token.describe(),
                },
                token.at,
            )),
        }
    }

    /// `ComparisonExpr = Pointer OpName Value`, `PresenceExpr = Pointer 'pr'`
    ///
    /// `OpName = 'eq' | 'co' | 'sw' | 'lt' | 'le' | 'gt' | 'ge' | 'in'`
    fn comparison_expr(&mut self, pointer: &str) -> Result<QueryFilter, FilterError> {
        let field = JsonPointer::parse(pointer);
        let token = self.next()?;
        let TokenKind::Word(name) = token.kind else {
            let kind = FilterErrorKind::ExpectedOperator {
                field: excerpt(pointer),
                found: token.describe(),
            };
            return Err(FilterError::new(kind, token.at));
        };
        let op = match name.to_ascii_lowercase().as_str() {
            "pr" => return Ok(QueryFilter::Present(field)),
            "in" => {
                let values = self.in_value()?;
                return Ok(QueryFilter::In { field, values });
            }
            "eq" => CompareOp::Eq,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            _ => {
                let kind = FilterErrorKind::UnknownOperator {
                    operator: excerpt(name),
                };
                return Err(FilterError::new(kind, token.at));
            }
        };
        let value = self.value(op)?;
        Ok(QueryFilter::Compare { field, op, value })
    }

    /// `Value = NUMBER | BOOLEAN | '"' UTF8STRING '"' | "'" UTF8STRING "'"`
    fn value(&mut self, op: CompareOp) -> Result<FilterValue, FilterError> {
        let token = self.next()?;
        match token.kind {
            TokenKind::Str(s) => Ok(FilterValue::String(s)),
            TokenKind::Word(word) => {
                word_value(word).map_err(|kind| FilterError::new(kind, token.at))
            }
            _ => {
                let kind = FilterErrorKind::ExpectedValue {
                    operator: op.as_str(),
                    found: token.describe(),
                };
                Err(FilterError::new(kind, token.at))
            }
        }
    }

    /// The value of IDM's limited `in`: a string holding a JSON array of strings.
    fn in_value(&mut self) -> Result<Vec<String>, FilterError> {
        let token = self.next()?;
        let TokenKind::Str(text) = &token.kind else {
            let kind = FilterErrorKind::InValueNotString {
                found: token.describe(),
            };
            return Err(FilterError::new(kind, token.at));
        };
        serde_json::from_str(text).map_err(|e| {
            let kind = FilterErrorKind::InValueNotArray {
                reason: e.to_string(),
            };
            FilterError::new(kind, token.at)
        })
    }
}

/// One operand as itself, several as `make(operands)`.
fn join(mut operands: Vec<QueryFilter>, make: fn(Vec<QueryFilter>) -> QueryFilter) -> QueryFilter {
    if operands.len() == 1 {
        if let Some(only) = operands.pop() {
            return only;
        }
    }
    make(operands)
}

/// A bare-word value: boolean, integer or float.
fn word_value(word: &str) -> Result<FilterValue, FilterErrorKind> {
    if word.eq_ignore_ascii_case("true") {
        return Ok(FilterValue::Bool(true));
    }
    if word.eq_ignore_ascii_case("false") {
        return Ok(FilterValue::Bool(false));
    }
    if word.eq_ignore_ascii_case("null") {
        return Err(FilterErrorKind::NullValue);
    }
    match number_shape(word) {
        Some(NumberShape::Integer) => word.parse::<i64>().map(FilterValue::Integer).map_err(|_| {
            FilterErrorKind::IntegerOutOfRange {
                word: excerpt(word),
            }
        }),
        Some(NumberShape::Float) => match word.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(FilterValue::Float(x)),
            _ => Err(FilterErrorKind::FloatOutOfRange {
                word: excerpt(word),
            }),
        },
        None => Err(FilterErrorKind::InvalidValue {
            word: excerpt(word),
        }),
    }
}

enum NumberShape {
    Integer,
    Float,
}

/// Whether `word` is written as a number: `[+-]? digits [. digits] [(e|E) [+-]? digits]`, where
/// either side of the `.` may be empty but not both (Java's `Double.parseDouble` accepts `1.`
/// and `.5`). Checked by hand because Rust's `f64` parser also takes `inf` and `NaN`.
fn number_shape(word: &str) -> Option<NumberShape> {
    let bytes = word.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut mantissa = digits(&mut i);
    let mut float = false;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        float = true;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        float = true;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != bytes.len() {
        return None;
    }
    Some(if float {
        NumberShape::Float
    } else {
        NumberShape::Integer
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::to_resource_error;

    /// The canonical text and the tree of a good filter, or the error message of a bad one.
    fn show(text: &str) -> String {
        match parse(text) {
            Ok(filter) => format!("{filter}\n{filter:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn crest_examples() {
        insta::assert_snapshot!(show("true"), @"
        true
        True
        ");
        insta::assert_snapshot!(show("uid pr"), @r#"
        /uid pr
        Present(JsonPointer(["uid"]))
        "#);
        insta::assert_snapshot!(show("uid eq 'bjensen'"), @r#"
        /uid eq "bjensen"
        Compare { field: JsonPointer(["uid"]), op: Eq, value: String("bjensen") }
        "#);
        insta::assert_snapshot!(show("(uid co 'jensen' and cn sw 'babs')"), @r#"
        /uid co "jensen" and /cn sw "babs"
        And([Compare { field: JsonPointer(["uid"]), op: Co, value: String("jensen") }, Compare { field: JsonPointer(["cn"]), op: Sw, value: String("babs") }])
        "#);
        insta::assert_snapshot!(show("(uid co 'jensen'and cn sw'babs')"), @r#"
        /uid co "jensen" and /cn sw "babs"
        And([Compare { field: JsonPointer(["uid"]), op: Co, value: String("jensen") }, Compare { field: JsonPointer(["cn"]), op: Sw, value: String("babs") }])
        "#);
        insta::assert_snapshot!(show("!(uid co 'jensen')"), @r#"
        !/uid co "jensen"
        Not(Compare { field: JsonPointer(["uid"]), op: Co, value: String("jensen") })
        "#);
        insta::assert_snapshot!(show("uid le 'jensen'"), @r#"
        /uid le "jensen"
        Compare { field: JsonPointer(["uid"]), op: Le, value: String("jensen") }
        "#);
        insta::assert_snapshot!(show(r#"userName eq "smith""#), @r#"
        /userName eq "smith"
        Compare { field: JsonPointer(["userName"]), op: Eq, value: String("smith") }
        "#);
        insta::assert_snapshot!(show(r#"/userName eq "smith""#), @r#"
        /userName eq "smith"
        Compare { field: JsonPointer(["userName"]), op: Eq, value: String("smith") }
        "#);
        insta::assert_snapshot!(show(r"_id eq 'test\\'"), @r#"
        /_id eq "test\\"
        Compare { field: JsonPointer(["_id"]), op: Eq, value: String("test\\") }
        "#);
        insta::assert_snapshot!(show("cn sw'babs'"), @r#"
        /cn sw "babs"
        Compare { field: JsonPointer(["cn"]), op: Sw, value: String("babs") }
        "#);
    }

    #[test]
    fn keywords_are_case_insensitive_pointers_are_not() {
        insta::assert_snapshot!(show("TRUE"), @"
        true
        True
        ");
        insta::assert_snapshot!(show("False"), @"
        false
        False
        ");
        insta::assert_snapshot!(show("UserName EQ 'x' AnD Age Pr oR active eq TRUE"), @r#"
        /UserName eq "x" and /Age pr or /active eq true
        Or([And([Compare { field: JsonPointer(["UserName"]), op: Eq, value: String("x") }, Present(JsonPointer(["Age"]))]), Compare { field: JsonPointer(["active"]), op: Eq, value: Bool(true) }])
        "#);
    }

    #[test]
    fn token_boundaries() {
        insta::assert_snapshot!(show("(a eq 1)and(b pr)"), @r#"
        /a eq 1 and /b pr
        And([Compare { field: JsonPointer(["a"]), op: Eq, value: Integer(1) }, Present(JsonPointer(["b"]))])
        "#);
        insta::assert_snapshot!(show("! (a pr)"), @r#"
        !/a pr
        Not(Present(JsonPointer(["a"])))
        "#);
        insta::assert_snapshot!(show("!a pr"), @r#"
        !/a pr
        Not(Present(JsonPointer(["a"])))
        "#);
        insta::assert_snapshot!(show("a eq'x'or b eq\"y\""), @r#"
        /a eq "x" or /b eq "y"
        Or([Compare { field: JsonPointer(["a"]), op: Eq, value: String("x") }, Compare { field: JsonPointer(["b"]), op: Eq, value: String("y") }])
        "#);
        insta::assert_snapshot!(show("\t a  pr \n"), @r#"
        /a pr
        Present(JsonPointer(["a"]))
        "#);
        insta::assert_snapshot!(show("a!b pr"), @r#"
        /a!b pr
        Present(JsonPointer(["a!b"]))
        "#);
    }

    #[test]
    fn and_binds_tighter_and_chains_flatten() {
        insta::assert_snapshot!(show("a eq 1 or b eq 2 and c eq 3"), @r#"
        /a eq 1 or /b eq 2 and /c eq 3
        Or([Compare { field: JsonPointer(["a"]), op: Eq, value: Integer(1) }, And([Compare { field: JsonPointer(["b"]), op: Eq, value: Integer(2) }, Compare { field: JsonPointer(["c"]), op: Eq, value: Integer(3) }])])
        "#);
        insta::assert_snapshot!(show("a pr or b pr or c pr"), @r#"
        /a pr or /b pr or /c pr
        Or([Present(JsonPointer(["a"])), Present(JsonPointer(["b"])), Present(JsonPointer(["c"]))])
        "#);
        insta::assert_snapshot!(show("a pr and b pr and c pr"), @r#"
        /a pr and /b pr and /c pr
        And([Present(JsonPointer(["a"])), Present(JsonPointer(["b"])), Present(JsonPointer(["c"]))])
        "#);
        insta::assert_snapshot!(show("(a pr or b pr) or c pr"), @r#"
        (/a pr or /b pr) or /c pr
        Or([Or([Present(JsonPointer(["a"])), Present(JsonPointer(["b"]))]), Present(JsonPointer(["c"]))])
        "#);
        insta::assert_snapshot!(show("a pr and (b pr and c pr)"), @r#"
        /a pr and (/b pr and /c pr)
        And([Present(JsonPointer(["a"])), And([Present(JsonPointer(["b"])), Present(JsonPointer(["c"]))])])
        "#);
        insta::assert_snapshot!(show("(a pr or b pr) and !(c pr and d pr)"), @r#"
        (/a pr or /b pr) and !(/c pr and /d pr)
        And([Or([Present(JsonPointer(["a"])), Present(JsonPointer(["b"]))]), Not(And([Present(JsonPointer(["c"])), Present(JsonPointer(["d"]))]))])
        "#);
        insta::assert_snapshot!(show("((a pr))"), @r#"
        /a pr
        Present(JsonPointer(["a"]))
        "#);
    }

    #[test]
    fn pointers() {
        insta::assert_snapshot!(show("name/givenName eq 'Barbara'"), @r#"
        /name/givenName eq "Barbara"
        Compare { field: JsonPointer(["name", "givenName"]), op: Eq, value: String("Barbara") }
        "#);
        insta::assert_snapshot!(show("/name/givenName eq 'Barbara'"), @r#"
        /name/givenName eq "Barbara"
        Compare { field: JsonPointer(["name", "givenName"]), op: Eq, value: String("Barbara") }
        "#);
        insta::assert_snapshot!(show("a~1b/c~0d pr"), @r#"
        /a~1b/c~0d pr
        Present(JsonPointer(["a/b", "c~d"]))
        "#);
        insta::assert_snapshot!(show("/ pr"), @"
        / pr
        Present(JsonPointer([]))
        ");
        insta::assert_snapshot!(show("/true pr"), @r#"
        /true pr
        Present(JsonPointer(["true"]))
        "#);
        insta::assert_snapshot!(show("pr pr"), @r#"
        /pr pr
        Present(JsonPointer(["pr"]))
        "#);
    }

    #[test]
    fn values() {
        insta::assert_snapshot!(show("age ge 42"), @r#"
        /age ge 42
        Compare { field: JsonPointer(["age"]), op: Ge, value: Integer(42) }
        "#);
        insta::assert_snapshot!(show("age lt -7"), @r#"
        /age lt -7
        Compare { field: JsonPointer(["age"]), op: Lt, value: Integer(-7) }
        "#);
        insta::assert_snapshot!(show("age gt +7"), @r#"
        /age gt 7
        Compare { field: JsonPointer(["age"]), op: Gt, value: Integer(7) }
        "#);
        insta::assert_snapshot!(show("a eq -9223372036854775808"), @r#"
        /a eq -9223372036854775808
        Compare { field: JsonPointer(["a"]), op: Eq, value: Integer(-9223372036854775808) }
        "#);
        insta::assert_snapshot!(show("score lt -3.5e2"), @r#"
        /score lt -350.0
        Compare { field: JsonPointer(["score"]), op: Lt, value: Float(-350.0) }
        "#);
        insta::assert_snapshot!(show("x eq 1."), @r#"
        /x eq 1.0
        Compare { field: JsonPointer(["x"]), op: Eq, value: Float(1.0) }
        "#);
        insta::assert_snapshot!(show("x eq .5"), @r#"
        /x eq 0.5
        Compare { field: JsonPointer(["x"]), op: Eq, value: Float(0.5) }
        "#);
        insta::assert_snapshot!(show("x eq 1E3"), @r#"
        /x eq 1000.0
        Compare { field: JsonPointer(["x"]), op: Eq, value: Float(1000.0) }
        "#);
        insta::assert_snapshot!(show("x eq 1e20"), @r#"
        /x eq 1e20
        Compare { field: JsonPointer(["x"]), op: Eq, value: Float(1e20) }
        "#);
        insta::assert_snapshot!(show("active eq FALSE"), @r#"
        /active eq false
        Compare { field: JsonPointer(["active"]), op: Eq, value: Bool(false) }
        "#);
        insta::assert_snapshot!(show("a eq ''"), @r#"
        /a eq ""
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("") }
        "#);
        insta::assert_snapshot!(show("a eq 'Zoë'"), @r#"
        /a eq "Zoë"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("Zoë") }
        "#);
    }

    #[test]
    fn string_escapes() {
        insta::assert_snapshot!(show(r#"a eq "tes\"t""#), @r#"
        /a eq "tes\"t"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("tes\"t") }
        "#);
        insta::assert_snapshot!(show(r"a eq 'it\'s'"), @r#"
        /a eq "it's"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("it's") }
        "#);
        insta::assert_snapshot!(show(r#"a eq 'say "hi"'"#), @r#"
        /a eq "say \"hi\""
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("say \"hi\"") }
        "#);
        insta::assert_snapshot!(show(r#"a eq "\u00e9\n\t\/\b\f\r""#), @r#"
        /a eq "é\n\t/\b\f\r"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("é\n\t/\u{8}\u{c}\r") }
        "#);
        insta::assert_snapshot!(show(r#"a eq "\uD83D\uDE00""#), @r#"
        /a eq "😀"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("😀") }
        "#);
        insta::assert_snapshot!(show(r#"a eq "(x) and !y""#), @r#"
        /a eq "(x) and !y"
        Compare { field: JsonPointer(["a"]), op: Eq, value: String("(x) and !y") }
        "#);
    }

    #[test]
    fn in_operator() {
        insta::assert_snapshot!(show(r#"userName in '["a","b"]'"#), @r#"
        /userName in "[\"a\",\"b\"]"
        In { field: JsonPointer(["userName"]), values: ["a", "b"] }
        "#);
        insta::assert_snapshot!(show(r#"userName IN "[\"a\"]""#), @r#"
        /userName in "[\"a\"]"
        In { field: JsonPointer(["userName"]), values: ["a"] }
        "#);
        insta::assert_snapshot!(show("userName in '[]'"), @r#"
        /userName in "[]"
        In { field: JsonPointer(["userName"]), values: [] }
        "#);
        insta::assert_snapshot!(show(r#"userName in '["it\'s", "Zoë"]' or a pr"#), @r#"
        /userName in "[\"it's\",\"Zoë\"]" or /a pr
        Or([In { field: JsonPointer(["userName"]), values: ["it's", "Zoë"] }, Present(JsonPointer(["a"]))])
        "#);
    }

    #[test]
    fn errors_in_structure() {
        insta::assert_snapshot!(show(""), @"error: The filter is empty, at byte 0. Use `true` to match every object.");
        insta::assert_snapshot!(show("   "), @"error: The filter is empty, at byte 0. Use `true` to match every object.");
        insta::assert_snapshot!(show(")"), @"error: Expected a condition, found `)`, at byte 0. A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`.");
        insta::assert_snapshot!(show("a pr and"), @"error: Expected a condition, found the end of the filter, at byte 8. A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`.");
        insta::assert_snapshot!(show("a pr or or b pr"), @"error: `b` is not a supported operator, at byte 11. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence.");
        insta::assert_snapshot!(show("()"), @"error: Expected a condition, found `)`, at byte 1. A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`.");
        insta::assert_snapshot!(show("'a' eq 1"), @r#"error: Expected a condition, found the string "a", at byte 0. A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`."#);
        insta::assert_snapshot!(show("!!a pr"), @"error: `!` cannot directly follow another `!`, at byte 1. Put the inner negation in parentheses, as in `!(!field pr)`.");
        insta::assert_snapshot!(show("! ! a pr"), @"error: `!` cannot directly follow another `!`, at byte 2. Put the inner negation in parentheses, as in `!(!field pr)`.");
        insta::assert_snapshot!(show("!"), @"error: Expected a condition, found the end of the filter, at byte 1. A condition is `field op value`, `field pr`, `true`, `false`, `!condition` or `(expression)`.");
        insta::assert_snapshot!(show("(a pr"), @"error: Expected `)` to close the `(` at byte 0, found the end of the filter, at byte 5. Join conditions with `and` or `or`, and check that parentheses balance.");
        insta::assert_snapshot!(show("(a pr b pr)"), @"error: Expected `)` to close the `(` at byte 0, found `b`, at byte 6. Join conditions with `and` or `or`, and check that parentheses balance.");
        insta::assert_snapshot!(show("a pr b pr"), @"error: Unexpected `b` after a complete condition, at byte 5. Join conditions with `and` or `or`, and check that parentheses balance.");
        insta::assert_snapshot!(show("a pr)"), @"error: Unexpected `)` after a complete condition, at byte 4. Join conditions with `and` or `or`, and check that parentheses balance.");
        insta::assert_snapshot!(show("true false"), @"error: Unexpected `false` after a complete condition, at byte 5. Join conditions with `and` or `or`, and check that parentheses balance.");
        insta::assert_snapshot!(show("a eq 'x'b"), @"error: Unexpected `b` after a complete condition, at byte 8. Join conditions with `and` or `or`, and check that parentheses balance.");
    }

    #[test]
    fn errors_in_comparisons() {
        insta::assert_snapshot!(show("uid"), @"error: Expected an operator after the field `uid`, found the end of the filter, at byte 3. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence.");
        insta::assert_snapshot!(show("uid 'bjensen'"), @r#"error: Expected an operator after the field `uid`, found the string "bjensen", at byte 4. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence."#);
        insta::assert_snapshot!(show("uid (eq 1)"), @"error: Expected an operator after the field `uid`, found `(`, at byte 4. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence.");
        insta::assert_snapshot!(show("uid = 'x'"), @"error: `=` is not a supported operator, at byte 4. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence.");
        insta::assert_snapshot!(show("uid ne 'x'"), @"error: `ne` is not a supported operator, at byte 4. Operators are eq, co, sw, lt, le, gt, ge, in, and pr for presence.");
        insta::assert_snapshot!(show("uid eq"), @"error: Expected a value after `eq`, found the end of the filter, at byte 6. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("uid eq )"), @"error: Expected a value after `eq`, found `)`, at byte 7. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("uid eq bjensen"), @"error: `bjensen` is not a valid value, at byte 7. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("uid eq inf"), @"error: `inf` is not a valid value, at byte 7. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("uid eq 1e"), @"error: `1e` is not a valid value, at byte 7. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("uid eq 0x10"), @"error: `0x10` is not a valid value, at byte 7. Values are numbers, true, false, or strings in double or single quotes.");
        insta::assert_snapshot!(show("manager eq null"), @"error: `null` is not a valid value, at byte 11. Use `!(field pr)` to match a missing or null field.");
        insta::assert_snapshot!(show("a eq 9223372036854775808"), @"error: `9223372036854775808` does not fit a 64-bit integer, at byte 5. Write it with a decimal point to compare it as a floating-point number.");
        insta::assert_snapshot!(show("a eq 1e999"), @"error: `1e999` is too large for a floating-point number, at byte 5. Use a number of magnitude below 1.7e308.");
        insta::assert_snapshot!(show(&format!("{} eq 1 2", "x".repeat(100))), @"error: Unexpected `2` after a complete condition, at byte 106. Join conditions with `and` or `or`, and check that parentheses balance.");
    }

    #[test]
    fn errors_in_in() {
        insta::assert_snapshot!(show("a in"), @r#"error: The value of `in` must be a quoted JSON array of strings, found the end of the filter, at byte 4. Write it as a quoted JSON array of strings, as in userName in '["a","b"]'."#);
        insta::assert_snapshot!(show("a in 1"), @r#"error: The value of `in` must be a quoted JSON array of strings, found `1`, at byte 5. Write it as a quoted JSON array of strings, as in userName in '["a","b"]'."#);
        insta::assert_snapshot!(show("a in 'x'"), @r#"error: The value of `in` is not a JSON array of strings (expected value at line 1 column 1), at byte 5. Write it as a quoted JSON array of strings, as in userName in '["a","b"]'."#);
        insta::assert_snapshot!(show("a in '[1]'"), @r#"error: The value of `in` is not a JSON array of strings (invalid type: integer `1`, expected a string at line 1 column 2), at byte 5. Write it as a quoted JSON array of strings, as in userName in '["a","b"]'."#);
        insta::assert_snapshot!(show(r#"a in '{"a":"b"}'"#), @r#"error: The value of `in` is not a JSON array of strings (invalid type: map, expected a sequence at line 1 column 0), at byte 5. Write it as a quoted JSON array of strings, as in userName in '["a","b"]'."#);
    }

    #[test]
    fn errors_in_strings() {
        insta::assert_snapshot!(show("a eq 'abc"), @r"error: The string opened by `'` is never closed, at byte 5. Close it with the same quote; a quote inside a string is escaped with a backslash, as in 'it\'s'.");
        insta::assert_snapshot!(show(r#"a eq "abc\""#), @r#"error: The string opened by `"` is never closed, at byte 5. Close it with the same quote; a quote inside a string is escaped with a backslash, as in 'it\'s'."#);
        insta::assert_snapshot!(show(r"a eq 'abc\"), @r"error: The string opened by `'` is never closed, at byte 5. Close it with the same quote; a quote inside a string is escaped with a backslash, as in 'it\'s'.");
        insta::assert_snapshot!(show(r#"a eq "\x""#), @r#"error: `\x` is not a valid escape in a string, at byte 6. Valid escapes are \" \' \\ \/ \b \f \n \r \t and \uXXXX; a backslash itself is written \\."#);
        insta::assert_snapshot!(show(r#"a eq "\u12g4""#), @r"error: `\u12g` is not a valid Unicode escape, at byte 6. Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00.");
        insta::assert_snapshot!(show(r#"a eq "\u12""#), @r#"error: `\u12"` is not a valid Unicode escape, at byte 6. Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00."#);
        insta::assert_snapshot!(show(r#"a eq "\uD83D""#), @r"error: `\uD83D` is not a valid Unicode escape, at byte 6. Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00.");
        insta::assert_snapshot!(show(r#"a eq "\uD83D\u0041""#), @r"error: `\uD83D\u0041` is not a valid Unicode escape, at byte 6. Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00.");
        insta::assert_snapshot!(show(r#"a eq "\uDE00""#), @r"error: `\uDE00` is not a valid Unicode escape, at byte 6. Write \u and four hex digits; a character beyond U+FFFF is a surrogate pair such as \uD83D\uDE00.");
    }

    #[test]
    fn errors_at_limits() {
        let long = "x".repeat(MAX_FILTER_LENGTH + 1);
        insta::assert_snapshot!(show(&long), @"error: The filter is 16385 bytes long, more than the 16384 allowed, at byte 16384. Split the query into several smaller ones.");
        let deep = format!("{}a pr{}", "(".repeat(65), ")".repeat(65));
        insta::assert_snapshot!(show(&deep), @"error: Parentheses and `!` nest more than 64 levels deep, at byte 64. Remove redundant parentheses, or join conditions at one level with `and` or `or`.");
    }

    #[test]
    fn length_limit_boundary() {
        // `a eq '…'` exactly MAX_FILTER_LENGTH bytes long, then one byte more.
        let at_limit = format!("a eq '{}'", "x".repeat(MAX_FILTER_LENGTH - 7));
        assert_eq!(at_limit.len(), MAX_FILTER_LENGTH);
        assert!(parse(&at_limit).is_ok());
        let over = format!("a eq '{}'", "x".repeat(MAX_FILTER_LENGTH - 6));
        let e = parse(&over).unwrap_err();
        assert_eq!(
            e.kind(),
            &FilterErrorKind::TooLong {
                length: MAX_FILTER_LENGTH + 1
            }
        );
        // Multi-byte characters count in bytes.
        let wide = format!("a eq '{}'", "é".repeat(MAX_FILTER_LENGTH / 2));
        assert!(matches!(
            parse(&wide).unwrap_err().kind(),
            FilterErrorKind::TooLong { .. }
        ));
    }

    #[test]
    fn depth_limit_boundary_parentheses() {
        let nested = |n: usize| format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(
            parse(&nested(MAX_FILTER_DEPTH)),
            Ok(QueryFilter::Present(JsonPointer::parse("a")))
        );
        let e = parse(&nested(MAX_FILTER_DEPTH + 1)).unwrap_err();
        assert_eq!(e.kind(), &FilterErrorKind::TooDeep);
        assert_eq!(e.position(), MAX_FILTER_DEPTH);
    }

    #[test]
    fn depth_limit_boundary_negations() {
        // `!(` is two levels; a final `!a pr` one more.
        let nots = |pairs: usize, last_not: bool| {
            let bang = if last_not { "!" } else { "" };
            format!("{}{bang}a pr{}", "!(".repeat(pairs), ")".repeat(pairs))
        };
        let ok = parse(&nots(MAX_FILTER_DEPTH / 2, false)).unwrap();
        assert_eq!(ok.to_string().matches('!').count(), MAX_FILTER_DEPTH / 2);
        assert!(parse(&nots(MAX_FILTER_DEPTH / 2 - 1, true)).is_ok());
        let e = parse(&nots(MAX_FILTER_DEPTH / 2, true)).unwrap_err();
        assert_eq!(e.kind(), &FilterErrorKind::TooDeep);
    }

    #[test]
    fn pathological_nesting_is_rejected_without_recursion() {
        for text in [
            "(".repeat(MAX_FILTER_LENGTH),
            "!(".repeat(MAX_FILTER_LENGTH / 2),
            "!".repeat(MAX_FILTER_LENGTH),
            "(".repeat(10 * MAX_FILTER_LENGTH),
            format!("{}a pr", "! ".repeat(MAX_FILTER_LENGTH / 2 - 2)),
        ] {
            assert!(parse(&text).is_err());
        }
    }

    #[test]
    fn long_words_are_shortened_in_messages() {
        let word = "é".repeat(1000);
        let message = parse(&format!("a eq {word}")).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn resource_error_has_crest_message_and_reason() {
        let text = "uid eq bjensen";
        let e = parse(text).unwrap_err();
        let body = String::from_utf8(to_resource_error(text, &e).to_body()).unwrap();
        insta::assert_snapshot!(body, @r#"{"code":400,"reason":"Bad Request","message":"The value 'uid eq bjensen' for parameter '_queryFilter' could not be parsed as a valid query filter","detail":{"reason":"`bjensen` is not a valid value, at byte 7. Values are numbers, true, false, or strings in double or single quotes."}}"#);
    }
}
