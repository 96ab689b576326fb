//! The engine on its own: limits, errors, isolation between invocations.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;

fn engine(time: Duration) -> Arc<ScriptEngine> {
    let config = EngineConfig {
        threads: 2,
        limits: Limits {
            time,
            memory: 32 * 1024 * 1024,
        },
    };
    ScriptEngine::start(config, std::env::temp_dir(), Box::new(|_, _| {})).expect("engine")
}

fn inline(text: &str) -> Script {
    Script::inline("test.js", text)
}

#[tokio::test]
async fn a_transform_sees_its_bindings_and_answers_json() {
    let e = engine(Duration::from_secs(5));
    let out = e
        .eval(
            &inline("source.givenName.toUpperCase() + ' ' + source.sn"),
            vars([("source", json!({"givenName": "ada", "sn": "Lovelace"}))]),
            &[],
        )
        .await
        .expect("runs");
    assert_eq!(out.value, json!("ADA Lovelace"));
    let out = e
        .eval(&inline("var r = {a: [1, 2], b: null}; r"), vec![], &[])
        .await
        .expect("runs");
    assert_eq!(out.value, json!({"a": [1, 2], "b": null}));
}

#[tokio::test]
async fn a_runaway_script_stops_with_a_timeout_naming_the_script_and_line() {
    let e = engine(Duration::from_millis(200));
    let err = e
        .eval(&inline("var x = 1;\nwhile (true) { x++; }"), vec![], &[])
        .await
        .expect_err("must stop");
    assert!(matches!(err.kind, ScriptErrorKind::Timeout(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("test.js"), "{text}");
    // The engine keeps serving after it.
    let out = e.eval(&inline("1 + 1"), vec![], &[]).await.expect("runs");
    assert_eq!(out.value, json!(2));
}

#[tokio::test]
async fn memory_hogs_fail_and_the_runtime_is_replaced() {
    let e = engine(Duration::from_secs(10));
    let err = e
        .eval(
            &inline("var a = []; for (;;) { a.push('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' + a.length); }"),
            vec![],
            &[],
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err.kind, ScriptErrorKind::Memory(_)), "{err:?}");
    let out = e
        .eval(&inline("'still here'"), vec![], &[])
        .await
        .expect("runs");
    assert_eq!(out.value, json!("still here"));
}

#[tokio::test]
async fn thrown_crest_errors_keep_their_code_and_other_errors_are_500() {
    let e = engine(Duration::from_secs(5));
    let err = e
        .eval(
            &inline("throw {code: 403, message: 'not you', detail: {why: 1}}"),
            vec![],
            &[],
        )
        .await
        .expect_err("throws");
    let re = err.to_resource_error();
    assert_eq!(re.code, 403);
    assert!(re.message.contains("not you"), "{}", re.message);
    let err = e
        .eval(&inline("\n\nundefinedFunction()"), vec![], &[])
        .await
        .expect_err("throws");
    assert_eq!(err.to_resource_error().code, 500);
    assert_eq!(err.line, Some(3), "{err:?}");
}

#[tokio::test]
async fn variables_do_not_leak_between_invocations() {
    let e = engine(Duration::from_secs(5));
    for _ in 0..4 {
        let out = e
            .eval(
                &inline("var seen = typeof leaked; leaked = 1; globalThis.other = 2; seen"),
                vec![],
                &[],
            )
            .await
            .expect("runs");
        assert_eq!(out.value, json!("undefined"));
    }
    let out = e
        .eval(&inline("typeof source"), vec![], &[])
        .await
        .expect("runs");
    assert_eq!(
        out.value,
        json!("undefined"),
        "bindings of one call are gone in the next"
    );
}

#[tokio::test]
async fn hooks_read_back_the_variables_they_changed() {
    let e = engine(Duration::from_secs(5));
    let out = e
        .eval(
            &inline("target.mail = source.uid + '@example.com'; target.n = (target.n || 0) + 1;"),
            vars([
                ("source", json!({"uid": "ada"})),
                ("target", json!({"n": 1})),
            ]),
            &["target"],
        )
        .await
        .expect("runs");
    assert_eq!(
        out.vars["target"],
        json!({"mail": "ada@example.com", "n": 2})
    );
}

#[tokio::test]
async fn globals_from_the_script_value_are_bound() {
    let e = engine(Duration::from_secs(5));
    let script = parse_script(
        &json!({"type": "text/javascript", "source": "prefix + name", "globals": {"prefix": "cn="}}),
        "g",
    )
    .expect("parses");
    let out = e
        .eval(&script, vars([("name", json!("ada"))]), &[])
        .await
        .expect("runs");
    assert_eq!(out.value, json!("cn=ada"));
}

#[tokio::test]
async fn many_concurrent_invocations_all_answer() {
    let e = engine(Duration::from_secs(5));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            e.eval(&inline("n * 2"), vars([("n", json!(i))]), &[])
                .await
                .map(|o| o.value)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("joins").expect("runs"), json!(i * 2));
    }
}

#[test]
fn syntax_errors_are_found_at_parse_time_with_a_line() {
    let err = parse_script(
        &json!({"type": "text/javascript", "source": "var a = ;\n"}),
        "bad.js",
    )
    .expect_err("refused");
    assert!(err.contains("bad.js"), "{err}");
}

#[tokio::test]
async fn require_loads_project_modules_and_the_built_in_lodash() {
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(project.path().join("script/util")).unwrap();
    std::fs::write(
        project.path().join("script/util/names.js"),
        "var count = 0;\nexports.full = function (o) { count++; return o.givenName + ' ' + o.sn; };\n\
         exports.calls = function () { return count; };\nexports.fail = function () {\n  throw new Error('boom');\n};",
    )
    .unwrap();
    std::fs::write(
        project.path().join("cycle_a.js"),
        "exports.early = 1; var b = require('cycle_b'); exports.seen = b.sawEarly;",
    )
    .unwrap();
    std::fs::write(
        project.path().join("cycle_b.js"),
        "exports.sawEarly = require('cycle_a').early;",
    )
    .unwrap();
    let config = EngineConfig {
        threads: 1,
        limits: Limits::default(),
    };
    let e = ScriptEngine::start(config, project.path().to_path_buf(), Box::new(|_, _| {}))
        .expect("engine");
    // IDM's seed: a transform using the bundled lodash.
    let out = e
        .eval(
            &inline("var _ = require('lib/lodash'); _.map(source.split(','), function (r) { return {_ref: 'internal/role/' + r}; })"),
            vars([("source", json!("a,b"))]),
            &[],
        )
        .await
        .expect("lodash");
    assert_eq!(
        out.value,
        json!([{"_ref": "internal/role/a"}, {"_ref": "internal/role/b"}])
    );
    // A project module runs once per runtime: its state persists between invocations.
    for expected in 1..=2 {
        let out = e
            .eval(
                &inline("var n = require('util/names'); [n.full(source), n.calls()]"),
                vars([("source", json!({"givenName": "Ada", "sn": "L"}))]),
                &[],
            )
            .await
            .expect("module");
        assert_eq!(out.value, json!(["Ada L", expected]));
    }
    // Cycles see partial exports, as in Node.
    let out = e
        .eval(&inline("require('cycle_a').seen"), vec![], &[])
        .await
        .expect("cycle");
    assert_eq!(out.value, json!(1));
    // A module's error names the module file and its line.
    let err = e
        .eval(&inline("require('util/names.js').fail()"), vec![], &[])
        .await
        .expect_err("throws");
    assert!(err.to_string().contains("boom"), "{err}");
    // Missing modules and paths out of the project are refused with the reason.
    for (id, why) in [
        ("nope", "no module 'nope'"),
        ("../etc/passwd", "not a module id"),
        ("/etc/passwd", "not a module id"),
    ] {
        let err = e
            .eval(&inline(&format!("require('{id}')")), vec![], &[])
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(why), "{id}: {err}");
    }
    // A changed file is a new version.
    std::fs::write(
        project.path().join("script/util/names.js"),
        "exports.full = function () { return 'v2'; };",
    )
    .unwrap();
    tokio::time::sleep(files::RECHECK + Duration::from_millis(100)).await;
    let out = e
        .eval(&inline("require('util/names').full({})"), vec![], &[])
        .await
        .expect("v2");
    assert_eq!(out.value, json!("v2"));
}
