//! Properties of the parser and `Display`: any well-formed tree prints to text that parses
//! back to the same tree, and no input makes the parser panic.

use proptest::prelude::*;

use super::{parse, CompareOp, FilterValue, JsonPointer, QueryFilter};

/// Pointers of tokens without whitespace, parentheses and quotes (which have no spelling in
/// a filter), including `/`, `~`, `!`, keywords and empty tokens.
fn pointer() -> impl Strategy<Value = JsonPointer> {
    let token = prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        "[^\\s()\"']{0,6}",
        Just("and".to_owned()),
        Just("pr".to_owned()),
        Just("true".to_owned()),
    ];
    prop::collection::vec(token, 0..4)
        // `[""]` prints as `/`, which `JsonPointer::parse` reads as the whole object.
        .prop_filter("not the lone empty token", |tokens| {
            tokens != &[String::new()]
        })
        .prop_map(JsonPointer)
}

fn value() -> impl Strategy<Value = FilterValue> {
    prop_oneof![
        any::<String>().prop_map(FilterValue::String),
        any::<i64>().prop_map(FilterValue::Integer),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(FilterValue::Float),
        any::<bool>().prop_map(FilterValue::Bool),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Co),
        Just(CompareOp::Sw),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

/// Trees as the parser builds them: `And`/`Or` of at least two operands, nested freely
/// (a nested same-kind group prints with parentheses and parses back as a group).
fn filter() -> impl Strategy<Value = QueryFilter> {
    let leaf = prop_oneof![
        Just(QueryFilter::True),
        Just(QueryFilter::False),
        pointer().prop_map(QueryFilter::Present),
        (pointer(), op(), value()).prop_map(|(field, op, value)| QueryFilter::Compare {
            field,
            op,
            value
        }),
        (pointer(), prop::collection::vec(any::<String>(), 0..3))
            .prop_map(|(field, values)| QueryFilter::In { field, values }),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..5).prop_map(QueryFilter::And),
            prop::collection::vec(inner.clone(), 2..5).prop_map(QueryFilter::Or),
            inner.prop_map(|f| QueryFilter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_parses_back_to_the_same_tree(tree in filter()) {
        let text = tree.to_string();
        prop_assert_eq!(parse(&text), Ok(tree), "text: {}", text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    /// Text built from the filter's own vocabulary reaches far more of the grammar than
    /// random characters; whatever parses must print back to an equal tree.
    #[test]
    fn filter_like_text_never_panics_and_round_trips(
        parts in prop::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("!"), Just(" "), Just("and"), Just("or"), Just("a"),
            Just("/b/c"), Just("pr"), Just("eq"), Just("in"), Just("gt"), Just("1"), Just("-2.5e3"),
            Just("true"), Just("'x'"), Just("\"y\\\"\""), Just("'[\"a\"]'"), Just("'"), Just("\\u"),
        ], 0..40)
    ) {
        let text = parts.concat();
        if let Ok(tree) = parse(&text) {
            let printed = tree.to_string();
            prop_assert_eq!(parse(&printed), Ok(tree), "input: {} printed: {}", text, printed);
        }
    }
}
