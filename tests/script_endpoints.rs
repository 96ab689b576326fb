//! Custom endpoints (`conf/endpoint-<name>.json` → `/openidm/endpoint/<name>`) and
//! `conf/router.json` filters, on a running gateway.

mod common;

use std::time::Duration;

use common::fixtures::{js, shipped, user};
use common::{eventually, json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_answer_with_idm_s_request_binding() {
    let mut echo = js(
        "({method: request.method, resourcePath: request.resourcePath, \
                         content: request.content, parameters: request.additionalParameters, \
                         action: request.action, queryFilter: request.queryFilter, \
                         who: context.security.authenticationId})",
    );
    echo["context"] = json!("endpoint/echo/*");
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("endpoint-echo", echo)
        .conf_file(
            "endpoint-users",
            js("openidm.query('managed/user', {_queryFilter: 'true', _sortKeys: 'userName'}, ['userName']).result\n\
                .map(function (u) { return {_id: u._id, name: u.userName.toUpperCase()}; })"),
        )
        .conf_file("endpoint-deny", js("throw {code: 403, message: 'not for you', detail: {why: 'closed'}}"))
        .start()
        .await;

    let (s, v) = json_of(
        gw.get("/openidm/endpoint/echo/a/b?x=1&_fields=y")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["method"], "read");
    assert_eq!(v["resourcePath"], "a/b");
    assert_eq!(v["parameters"], json!({"x": "1"}));
    assert_eq!(v["who"], "openidm-admin");

    let (s, v) = json_of(
        gw.post("/openidm/endpoint/echo?_action=go&p=q")
            .json(&json!({"k": [1, 2]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["method"], &v["action"], &v["content"]),
        (&json!("action"), &json!("go"), &json!({"k": [1, 2]}))
    );

    let (s, v) = json_of(
        gw.get("/openidm/endpoint/echo?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A query's answer is IDM's query envelope around what the script returned.
    assert_eq!(v["result"][0]["queryFilter"], "true", "{v}");
    assert_eq!(v["resultCount"], 1, "{v}");

    for i in 0..3 {
        let r = gw
            .put(&format!("/openidm/managed/user/u{i}"))
            .json(&user(i))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let (s, v) = json_of(
        gw.get("/openidm/endpoint/users?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["USER0", "USER1", "USER2"]);

    let (s, v) = json_of(gw.get("/openidm/endpoint/deny").send().await.unwrap()).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["message"], "not for you");
    assert_eq!(v["detail"], json!({"why": "closed"}));

    // No sub-paths without `/*` in the context; unknown endpoints are 404; not for users.
    let (s, _) = json_of(gw.get("/openidm/endpoint/deny/x").send().await.unwrap()).await;
    assert_eq!(s, 404);
    let (s, _) = json_of(gw.get("/openidm/endpoint/nope").send().await.unwrap()).await;
    assert_eq!(s, 404);
    let r = gw
        .as_user(Method::GET, "/openidm/endpoint/echo", "nobody", "nothing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A broken edit is rejected and the last good version keeps serving; a good one applies.
    gw.write_conf("endpoint-users", &js("openidm.query("));
    assert!(
        gw.wait_for_log("endpoint/users", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    let (s, _) = json_of(
        gw.get("/openidm/endpoint/users?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    gw.write_conf("endpoint-users", &js("[{_id: 'x', n: 1}]"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            let v: Value = gw
                .get("/openidm/endpoint/users?_queryFilter=true")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["result"] == json!([{"_id": "x", "n": 1}])
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn router_filters_refuse_stamp_and_leave_other_requests_alone() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file(
            "router",
            json!({"filters": [
                {"pattern": "^managed/user($|/.+)", "methods": ["create", "update"],
                 "onRequest": js("if (!request.content.mail) { throw {code: 403, message: 'a mail is required'}; }\n\
                                  request.content.description = 'checked by the router';")},
                {"pattern": "^managed/user/.+", "methods": ["read"],
                 "condition": js("request.additionalParameters.hide == 'yes'"),
                 "onResponse": js("delete response.mail; response.hidden = true;")},
                {"pattern": "^managed/role($|/.+)",
                 "onFailure": js("throw {code: 418, message: 'role failed: ' + exception.message}")}
            ]}),
        )
        .start()
        .await;

    let mut no_mail = user(1);
    no_mail.as_object_mut().unwrap().remove("mail");
    let (s, v) = json_of(
        gw.put("/openidm/managed/user/u1")
            .json(&no_mail)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["message"], "a mail is required");
    let (s, _) = json_of(gw.get("/openidm/managed/user/u1").send().await.unwrap()).await;
    assert_eq!(s, 404, "nothing was written");

    let (s, v) = json_of(
        gw.put("/openidm/managed/user/u2")
            .json(&user(2))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s == 201 || s == 200, "{v}");
    assert_eq!(v["description"], "checked by the router");

    // The read filter runs only when its condition holds.
    let (_, v) = json_of(gw.get("/openidm/managed/user/u2").send().await.unwrap()).await;
    assert_eq!(v["mail"], "user2@example.com");
    assert!(v.get("hidden").is_none());
    let (_, v) = json_of(
        gw.get("/openidm/managed/user/u2?hide=yes")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(v.get("mail").is_none(), "{v}");
    assert_eq!(v["hidden"], true);

    // Other methods and paths are untouched.
    let (s, v) = json_of(
        gw.request(Method::PATCH, "/openidm/managed/user/u2")
            .json(&json!([{"operation": "replace", "field": "/sn", "value": "Patched"}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = json_of(
        gw.put("/openidm/managed/role/r1")
            .json(&json!({"name": "r1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s == 201 || s == 200, "{v}");
    assert!(v.get("description").is_none());

    // onFailure replaces the error it sees.
    let (s, v) = json_of(
        gw.get("/openidm/managed/role/missing")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 418, "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("role failed: "),
        "{v}"
    );

    // Removing router.json removes the filters.
    gw.remove_conf("router");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let v: Value = gw
                .put("/openidm/managed/user/u3")
                .json(&user(3))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["userName"] == "user3" && v.get("description").is_none()
        })
        .await
    );
}
