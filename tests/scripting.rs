//! IDM's script service on a running gateway: `/openidm/script?_action=compile|eval`,
//! `openidm.*` from a script through the router, runaway and broken scripts, script files
//! relative to the project directory and reloaded when they change.

mod common;

use std::time::Duration;

use common::fixtures::{js, shipped, user};
use common::{eventually, json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

async fn action(gw: &Gateway, name: &str, body: &Value) -> (u16, Value) {
    json_of(
        gw.post(&format!("/openidm/script?_action={name}"))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn compile_answers_true_or_the_reason_with_its_line() {
    let gw = Gateway::start().await;
    assert_eq!(
        action(&gw, "compile", &js("var a = 1; a + 1")).await,
        (200, json!(true))
    );
    let (status, body) = action(&gw, "compile", &js("var a = 1;\nvar b = (a;\n")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 400);
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("line 2"), "{msg}");
    let (status, body) = action(&gw, "compile", &json!({"type": "groovy", "source": "1"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = action(&gw, "compile", &json!({"type": "text/javascript"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = action(&gw, "nope", &js("1")).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_runs_through_the_router_and_is_for_administrators_only() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let mut ada = user(1);
    ada["userName"] = json!("ada");
    let (status, body) = action(
        &gw,
        "eval",
        &js("var u = openidm.create('managed/user', 'ada', newUser);\n\
             var again = openidm.read('managed/user/ada');\n\
             var q = openidm.query('managed/user', {_queryFilter: 'userName eq \"ada\"'}, ['userName']);\n\
             var missing = openidm.read('managed/user/nobody');\n\
             ({id: u._id, same: again.userName, hits: q.resultCount, first: q.result[0].userName, missing: missing})")
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("globals".into(), json!({"newUser": ada}));
            Value::Object(o)
        })
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "ada", "same": "ada", "hits": 1, "first": "ada", "missing": null})
    );
    // The object is really there for REST callers.
    let (status, body) = json_of(gw.get("/openidm/managed/user/ada").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");

    // Errors from the router reach the script as IDM's exceptions, with their code.
    let (status, body) = action(
        &gw,
        "eval",
        &js(
            "try { openidm.update('managed/user/nobody', null, {userName: 'x'}); 'no error' } \
             catch (e) { e.code + ' ' + (e.message.length > 0) }",
        ),
    )
    .await;
    assert_eq!((status, body), (200, json!("404 true")));

    // An error a script throws becomes the request's error.
    let (status, body) = action(&gw, "eval", &js("throw {code: 409, message: 'taken'}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");

    // Not for ordinary users.
    let (status, _) = json_of(
        gw.put("/openidm/internal/user/plain")
            .json(&json!({"password": "Passw0rd!x", "roles": ["internal/role/openidm-authorized"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 201 || status == 200, "{status}");
    let r = gw
        .as_user(
            Method::POST,
            "/openidm/script?_action=eval",
            "plain",
            "Passw0rd!x",
        )
        .json(&js("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_and_broken_scripts_fail_alone_and_the_gateway_keeps_serving() {
    // gateway.json `scripting` (gateway extra) sets the limits.
    let gw = Gateway::builder()
        .conf_file(
            "gateway",
            json!({"scripting": {"timeLimitMs": 300, "memoryLimitMb": 16}}),
        )
        .start()
        .await;
    let (status, body) = action(&gw, "eval", &js("var i = 0;\nwhile (true) { i++; }")).await;
    assert_eq!(status, 500, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("time limit of 300 ms"), "{msg}");
    // Memory: the runtime's limit stops a script that hoards.
    let (status, body) = action(
        &gw,
        "eval",
        &js("var a = []; while (true) { a.push('x'.repeat(1024) + a.length); }"),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("memory limit of 16 MiB"),
        "{body}"
    );
    let (status, body) = action(&gw, "eval", &js("\n\nnoSuchThing.x")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("line 3"),
        "{body}"
    );
    // Still answering, scripts included.
    assert_eq!(action(&gw, "eval", &js("6 * 7")).await, (200, json!(42)));
    let r = gw.get("/openidm/info/ping").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn script_files_are_relative_to_the_project_and_reload_when_they_change() {
    let gw = Gateway::start().await;
    let dir = gw.conf_dir().parent().unwrap().join("script");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("greet.js"), "'hello ' + who").unwrap();
    let call =
        json!({"type": "text/javascript", "file": "script/greet.js", "globals": {"who": "ada"}});
    assert_eq!(action(&gw, "eval", &call).await, (200, json!("hello ada")));
    assert_eq!(action(&gw, "compile", &call).await, (200, json!(true)));

    // A changed file is picked up.
    std::fs::write(dir.join("greet.js"), "'bonjour ' + who").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            action(&gw, "eval", &call).await == (200, json!("bonjour ada"))
        })
        .await
    );

    // A broken edit is reported and the last good version stays live.
    std::fs::write(dir.join("greet.js"), "'oops' + (").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        action(&gw, "eval", &call).await,
        (200, json!("bonjour ada"))
    );
    let (status, body) = action(&gw, "compile", &call).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("greet.js"),
        "{body}"
    );

    // Outside the project: refused.
    let (status, _) = action(
        &gw,
        "eval",
        &json!({"type": "text/javascript", "file": "../etc/passwd"}),
    )
    .await;
    assert_eq!(status, 400);
}
