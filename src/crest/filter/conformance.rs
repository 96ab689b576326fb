//! The one filter conformance table: documents, filters and the ids each filter selects.
//! The in-memory evaluator (`eval.rs`) and the store's SQL translation
//! (`repo/sqlite/sql.rs`) both run it, so the two cannot drift apart.
//!
//! Choices where IDM's documentation is vague (its stored-object repositories, JDBC generic
//! tables and DS, are the model; CREST's in-memory visitor where they are silent):
//! * strings compare by code point, case-sensitively (IDM on PostgreSQL; MySQL's default
//!   collation and DS fold case, which a gateway in front of either cannot promise);
//! * numbers by value whatever their JSON form (`30 eq 30.0`); a number never equals a string
//!   (`age eq '30'` does not match `30`), nor a boolean;
//! * booleans order `false < true` (Java's `Boolean.compareTo`, what CREST's visitor uses);
//! * `co` and `sw` apply to strings only;
//! * a property holding an array matches a comparison when any element does;
//! * `pr`: present, not null and not an empty array (JDBC and DS store no value for an
//!   empty array, so IDM's own `pr` misses it);
//! * a missing or null property matches no comparison, so `!(x eq 1)` matches it;
//! * a numeric pointer token (`/mail/0`) is an array position where the value is an array,
//!   an object key otherwise; `01` is always a key (RFC 6901);
//! * `in` (IDM's limited form) matches a single string property equal to one of the values;
//!   an array property does not match.

use serde_json::{json, Value};

/// The documents, by id (without `_id`/`_rev`).
pub(crate) fn documents() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a",
            json!({"userName": "alice", "age": 30, "active": true, "tags": ["x", "y"],
                   "mail": ["a@x", "b@x"], "name": {"given": "Alice"},
                   "roles": [{"_refResourceId": "r1", "n": 1}, {"_refResourceId": "r2"}]}),
        ),
        (
            "b",
            json!({"userName": "Bob", "age": 25.5, "active": false, "tags": [],
                   "nums": [1, 2, 3]}),
        ),
        (
            "c",
            json!({"userName": "carol", "age": "30", "active": "true", "tags": "x",
                   "nums": [10, 2.5], "roles": [{"_refResourceId": ["r1"]}, "r2", {"n": 3}]}),
        ),
        ("d", json!({"userName": null, "age": null, "tags": null})),
        ("e", json!({})),
        (
            "f",
            json!({"userName": "ALICE", "age": 0, "flags": [true, false],
                   "obj": {"0": "zero-key", "01": "lead"}, "arr": [["n0"]]}),
        ),
        (
            "g",
            json!({"userName": ["alice", "zed"], "age": [31, 40], "mail": []}),
        ),
    ]
}

/// Filters (as a client writes them) and the ids they select, in id order.
pub(crate) const CASES: &[(&str, &[&str])] = &[
    ("true", &["a", "b", "c", "d", "e", "f", "g"]),
    ("false", &[]),
    // Strings: exact, case-sensitive, any array element.
    ("userName eq 'alice'", &["a", "g"]),
    ("userName eq 'ALICE'", &["f"]),
    ("userName co 'lic'", &["a", "g"]),
    ("userName co ''", &["a", "b", "c", "f", "g"]),
    ("userName sw 'al'", &["a", "g"]),
    ("userName gt 'b'", &["c", "g"]),
    ("userName le 'Bob'", &["b", "f"]),
    ("age lt 'z'", &["c"]),
    ("userName lt 5", &[]),
    // Numbers by value; never equal to a string.
    ("age eq 30", &["a"]),
    ("age eq 30.0", &["a"]),
    ("age eq '30'", &["c"]),
    ("age lt 30", &["b", "f"]),
    ("age ge 31", &["g"]),
    ("age gt 25", &["a", "b", "g"]),
    ("nums eq 2.5", &["c"]),
    ("nums gt 2", &["b", "c"]),
    ("age co 3", &[]),
    ("age sw 3", &[]),
    // Booleans: by value, false < true; never equal to the string "true".
    ("active eq true", &["a"]),
    ("active eq 'true'", &["c"]),
    ("active gt false", &["a"]),
    ("active lt true", &["b"]),
    ("active le true", &["a", "b"]),
    ("active ge false", &["a", "b"]),
    ("flags lt true", &["f"]),
    ("active co 't'", &["c"]),
    // Presence: not null, not an empty array.
    ("tags pr", &["a", "c"]),
    ("!(tags pr)", &["b", "d", "e", "f", "g"]),
    ("mail pr", &["a"]),
    ("userName pr", &["a", "b", "c", "f", "g"]),
    ("name/given pr", &["a"]),
    ("missing pr", &[]),
    ("/ pr", &["a", "b", "c", "d", "e", "f", "g"]),
    // Missing and null never match a comparison; their negation does.
    ("userName eq 'x'", &[]),
    ("!(userName eq 'alice')", &["b", "c", "d", "e", "f"]),
    ("!(missing eq 'x')", &["a", "b", "c", "d", "e", "f", "g"]),
    ("tags eq 'x'", &["a", "c"]),
    ("name eq 'x'", &[]),
    ("name/given eq 'Alice'", &["a"]),
    // Numeric pointer tokens: array positions in arrays, keys in objects.
    ("/mail/0 eq 'a@x'", &["a"]),
    ("/mail/1 eq 'a@x'", &[]),
    ("/mail/1 sw 'b'", &["a"]),
    ("/nums/0 lt 5", &["b"]),
    ("/obj/0 eq 'zero-key'", &["f"]),
    ("/obj/01 eq 'lead'", &["f"]),
    ("/arr/0/0 eq 'n0'", &["f"]),
    ("/mail/0 pr", &["a"]),
    ("/tags/0 pr", &["a"]),
    // in: a single string property.
    (r#"userName in '["alice","Bob"]'"#, &["a", "b"]),
    (r#"_id in '["a","e"]'"#, &["a", "e"]),
    ("userName in '[]'", &[]),
    // _id.
    ("_id eq 'c'", &["c"]),
    ("_id gt 'e'", &["f", "g"]),
    ("_id eq 1", &[]),
    ("_id pr", &["a", "b", "c", "d", "e", "f", "g"]),
    // Structure.
    ("age eq 30 and active eq true", &["a"]),
    ("age eq 30 or active eq false", &["a", "b"]),
    ("!(age eq 30 or active pr)", &["d", "e", "f", "g"]),
    // A field of a top-level array's objects: any object's (scalar) field.
    ("roles/_refResourceId eq 'r1'", &["a"]),
    ("roles/_refResourceId eq 'r2'", &["a"]),
    ("roles/n gt 1", &["c"]),
    ("roles/0/_refResourceId eq 'r1'", &["a", "c"]),
    ("roles/_refResourceId pr", &[]),
];

/// `CASES` checked with `select` (the ids a filter selects, in id order); every
/// disagreement is reported at once.
pub(crate) fn check(mut select: impl FnMut(&str) -> Vec<String>) {
    let mut failures = Vec::new();
    for (filter, want) in CASES {
        let got = select(filter);
        if got != *want {
            failures.push(format!("{filter}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
