//! Scripts in mappings, end to end on real gateways: JavaScript transforms, conditions,
//! correlation (query and script), qualification, policy action and postAction scripts,
//! the event hooks (onCreate, onUpdate, onDelete, onLink, onUnlink, result), a script that
//! throws or runs away failing its object only, deletes never happening when a script on
//! their way fails, and a script reading a remote IDM through the proxy's credentials.

mod common;

use std::time::Duration;

use common::fixtures::{
    all_of, js, managed_with_other, put_user, recon, seed_users, shipped, situations, status, user,
};
use common::{basic_instance, Gateway};
use serde_json::{json, Value};

/// managed.json with `other` (a target type) that also has `cn` and `description`.
fn managed() -> Value {
    let mut doc = managed_with_other();
    let other = doc["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["name"] == "other")
        .unwrap();
    other["schema"]["properties"]["cn"] = json!({"type": "string"});
    other["schema"]["properties"]["description"] = json!({"type": "string"});
    doc
}

fn mapping(extra: Value) -> Value {
    let mut m = json!({
        "name": "u2o",
        "source": "managed/user",
        "target": "managed/other",
        "properties": [
            {"source": "userName", "target": "userName"},
            {"source": "mail", "target": "mail"},
            {"source": "sn", "target": "sn"}
        ],
        "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""},
        "enableSync": false
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

async fn gateway(mappings: Vec<Value>) -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed())
        .conf_file("sync", json!({ "mappings": mappings }))
        .start()
        .await
}

fn sorted(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}

fn by_user<'a>(targets: &'a [Value], name: &str) -> &'a Value {
    targets
        .iter()
        .find(|t| t["userName"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {targets:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn transforms_conditions_correlation_policies_and_hooks_run_as_idm_runs_them() {
    let gw = gateway(vec![mapping(json!({
        "properties": [
            {"source": "userName", "target": "userName", "transform": js("source.toUpperCase()")},
            {"source": "mail", "target": "mail"},
            {"target": "cn", "transform": js("source.givenName + ' ' + source.sn")},
            {"source": "sn", "target": "sn", "condition": js("object.sn != 'Sn3'")}
        ],
        "correlationQuery": js("({_queryFilter: 'mail eq \"' + source.mail + '\"'})"),
        "validSource": js("source.userName != 'user4'"),
        "onCreate": js("target.description = 'created from ' + sourceId + ' as ' + situation;"),
        "onUpdate": js("if (oldTarget.sn != target.sn) { target.description = 'updated ' + oldTarget.sn + ' to ' + target.sn; }"),
        "policies": [
            {"situation": "ABSENT",
             "action": js("source.userName == 'user2' ? 'IGNORE' : 'CREATE'"),
             "postAction": js("openidm.patch('managed/user/' + sourceId, null, \
                 [{operation: 'replace', field: '/description', value: action + ' by ' + context.security.authenticationId}])")}
        ],
        "result": js("openidm.create('managed/role', 'recon-result', \
            {name: 'run ' + global.statusSummary.SUCCESS + '/' + global.statusSummary.FAILURE + ' created ' + target.created})")
    }))])
    .await;
    seed_users(&gw, 5).await;

    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "SUCCESS", "{run:#}");
    assert_eq!(status(&run), (5, 0), "{run:#}");
    assert_eq!(
        sorted(situations(&run)),
        [("ABSENT".to_owned(), 4), ("SOURCE_IGNORED".to_owned(), 1)]
    );
    let targets = all_of(&gw, "managed/other").await;
    // user2 ignored by the action script, user4 not valid.
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["USER0", "USER1", "USER3"]);
    let t0 = by_user(&targets, "USER0");
    assert_eq!(t0["cn"], "Given Sn0");
    assert_eq!(t0["description"], "created from u0 as ABSENT");
    // The condition left sn out for user3.
    assert_eq!(by_user(&targets, "USER3").get("sn"), None);
    // postAction ran for the policy's actions, as the sync caller.
    let u0: Value = gw
        .get("/openidm/managed/user/u0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        u0["description"]
            .as_str()
            .unwrap()
            .starts_with("CREATE by "),
        "{u0}"
    );
    let u2: Value = gw
        .get("/openidm/managed/user/u2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        u2["description"]
            .as_str()
            .unwrap()
            .starts_with("IGNORE by "),
        "{u2}"
    );
    // The result script saw the run's figures.
    let role: Value = gw
        .get("/openidm/managed/role/recon-result")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(role["name"], "run 5/0 created 3", "{role}");

    // An update runs onUpdate with the old and the new target.
    let mut u1 = user(1);
    u1["sn"] = json!("Changed");
    put_user(&gw, "u1", &u1).await;
    let r = gw
        .delete("/openidm/managed/role/recon-result")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let run = recon(&gw, "u2o").await;
    assert_eq!(status(&run), (5, 0), "{run:#}");
    let targets = all_of(&gw, "managed/other").await;
    let t1 = by_user(&targets, "USER1");
    assert_eq!(t1["sn"], "Changed");
    assert_eq!(t1["cn"], "Given Changed");
    assert_eq!(t1["description"], "updated Sn1 to Changed");
    // Unchanged sources are not written.
    assert_eq!(by_user(&targets, "USER0")["_rev"], t0["_rev"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_that_throws_or_runs_away_fails_its_object_and_the_others_go_on() {
    let gw = gateway(vec![mapping(json!({
        "properties": [
            {"source": "userName", "target": "userName", "transform": js(
                "if (source == 'user1') { throw {code: 400, message: 'user1 is not welcome'}; }\n\
                 if (source == 'user3') { nothing.here(); }\n\
                 if (source == 'user4') { while (true) {} }\n\
                 source")},
            {"source": "mail", "target": "mail"}
        ]
    }))])
    .await;
    seed_users(&gw, 5).await;
    let run = recon(&gw, "u2o").await;
    assert_eq!(status(&run), (2, 3), "{run:#}");
    let names: Vec<String> = all_of(&gw, "managed/other")
        .await
        .iter()
        .map(|t| t["userName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["user0", "user2"]);
    // The log names the mapping, the hook, the object and the line.
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("user1 is not welcome"))
        .unwrap_or_else(|| panic!("no failure logged:\n{logs}"));
    assert!(line.contains("u2o properties[0].transform"), "{line}");
    assert!(line.contains("u1"), "{line}");
    let line = logs
        .lines()
        .find(|l| l.contains("nothing is not defined"))
        .unwrap_or_else(|| panic!("no error logged:\n{logs}"));
    assert!(
        line.contains("u3") && line.contains("transform line 2"),
        "{line}"
    );
    let line = logs
        .lines()
        .find(|l| l.contains("time limit"))
        .unwrap_or_else(|| panic!("no timeout logged:\n{logs}"));
    assert!(line.contains("u4"), "{line}");
    // The gateway still serves, scripts included.
    let r = gw.get("/openidm/info/ping").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Five sources synced, then the sources deleted: whatever fails on the way to a delete,
/// no target is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn no_target_is_deleted_when_a_script_on_the_way_fails() {
    let cases = [
        (
            "action",
            json!({"policies": [{"situation": "SOURCE_MISSING", "action": js("throw 'no decision'")}]}),
        ),
        (
            "onDelete",
            json!({"policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
                   "onDelete": js("throw {code: 409, message: 'keep ' + target.userName}")}),
        ),
        (
            "condition",
            json!({"policies": [{"situation": "SOURCE_MISSING", "action": "DELETE",
                                 "condition": js("undefinedThing.x")}]}),
        ),
        (
            "validTarget",
            json!({"validTarget": js("target.userName.length > 0 && nothing()"),
                   "policies": [{"situation": "UNASSIGNED", "action": "DELETE"}]}),
        ),
    ];
    let mappings: Vec<Value> = cases
        .iter()
        .map(|(name, extra)| {
            let mut m = mapping(extra.clone());
            m["name"] = json!(format!("u2o_{name}"));
            m["target"] = json!("managed/other");
            m
        })
        .collect();
    for (i, (name, _)) in cases.iter().enumerate() {
        let gw = gateway(vec![mappings[i].clone()]).await;
        seed_users(&gw, 5).await;
        let mapping = format!("u2o_{name}");
        if *name == "validTarget" {
            // Targets without links (UNASSIGNED): made directly.
            for i in 0..3 {
                let r = gw
                    .put(&format!("/openidm/managed/other/o{i}"))
                    .json(&json!({"userName": format!("orphan{i}"), "mail": format!("o{i}@x")}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            // The sources are created and linked; the orphans' validTarget fails.
            let run = recon(&gw, &mapping).await;
            assert_eq!(
                all_of(&gw, "managed/other").await.len(),
                8,
                "{name}: {run:#}"
            );
            assert_eq!(status(&run), (5, 3), "{name}: {run:#}");
            continue;
        }
        let run = recon(&gw, &mapping).await;
        assert_eq!(status(&run), (5, 0), "{name}: {run:#}");
        // Keep one source so the run is not an empty source set.
        for i in 1..5 {
            let r = gw
                .delete(&format!("/openidm/managed/user/u{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let run = recon(&gw, &mapping).await;
        assert_eq!(
            all_of(&gw, "managed/other").await.len(),
            5,
            "{name}: {run:#}"
        );
        assert_eq!(run["statusSummary"]["FAILURE"], 4, "{name}: {run:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correlation_script_links_existing_targets_and_link_hooks_run() {
    let gw = gateway(vec![mapping(json!({
        "correlationQuery": null,
        "correlationScript": js(
            "var r = openidm.query('managed/other', {_queryFilter: 'userName eq \"' + source.userName + '\"'}, ['_id']);\n\
             r.result.map(function (t) { return {_id: t._id}; })"),
        "onLink": js("openidm.patch('managed/other/' + targetId, null, [{operation: 'replace', field: '/description', value: 'linked to ' + sourceId}])"),
        "onUnlink": js("openidm.patch('managed/other/' + targetId, null, [{operation: 'replace', field: '/description', value: 'unlinked'}])"),
        "policies": [{"situation": "SOURCE_MISSING", "action": "UNLINK"}]
    }))])
    .await;
    seed_users(&gw, 3).await;
    // Targets that exist already, under other ids and other mails: only the script finds them.
    for i in 0..2 {
        let r = gw
            .put(&format!("/openidm/managed/other/pre{i}"))
            .json(&json!({"userName": format!("user{i}"), "mail": "old@example.com"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let run = recon(&gw, "u2o").await;
    assert_eq!(status(&run), (3, 0), "{run:#}");
    assert_eq!(
        sorted(situations(&run)),
        [("ABSENT".to_owned(), 1), ("FOUND".to_owned(), 2)]
    );
    let targets = all_of(&gw, "managed/other").await;
    assert_eq!(targets.len(), 3, "no twins: {targets:#?}");
    let t0 = by_user(&targets, "user0");
    assert_eq!(t0["_id"], "pre0");
    assert_eq!(t0["mail"], "user0@example.com");
    assert_eq!(t0["description"], "linked to u0");

    let r = gw.delete("/openidm/managed/user/u1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run = recon(&gw, "u2o").await;
    assert_eq!(status(&run), (3, 0), "{run:#}");
    let targets = all_of(&gw, "managed/other").await;
    assert_eq!(by_user(&targets, "user1")["description"], "unlinked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_script_rejects_the_mapping_file_and_the_last_good_stays_live() {
    let gw = gateway(vec![mapping(json!({}))]).await;
    seed_users(&gw, 2).await;
    gw.write_conf(
        "sync",
        &json!({"mappings": [mapping(json!({"onCreate": js("target.x = (;")}))]}),
    );
    assert!(
        gw.wait_for_log("onCreate line 1", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    let run = recon(&gw, "u2o").await;
    assert_eq!(status(&run), (2, 0), "{run:#}");
    let (status_code, body) =
        common::json_of(gw.get("/openidm/sync/mappings/u2o").send().await.unwrap()).await;
    assert_eq!(status_code, 200, "{body}");
    assert!(
        body.get("onCreate").is_none(),
        "the last good mapping stays: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_reads_a_remote_idm_through_the_proxy_credentials() {
    let b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("b-admin")
        .start()
        .await;
    for i in 0..3 {
        let r = b
            .put(&format!("/openidm/managed/user/b{i}"))
            .json(&user(i))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let a = Gateway::builder()
        .conf_file("managed", managed())
        .conf_file(
            "external.idm-b",
            basic_instance(&b.url("/openidm/"), "openidm-admin", "b-admin"),
        )
        .conf_file(
            "sync",
            json!({"mappings": [mapping(json!({
                "source": "external/idm/b/managed/user",
                "properties": [
                    {"source": "userName", "target": "userName"},
                    {"source": "mail", "target": "mail"},
                    // A script reading the remote again, with IDM's API version header.
                    {"target": "cn", "transform": js(
                        "var me = openidm.read('external/idm/b/managed/user/' + source._id, \
                             {'Accept-API-Version': 'resource=1.0'}, ['givenName', 'sn']);\n\
                         me.givenName + ' ' + me.sn")}
                ]
            }))]}),
        )
        .start()
        .await;
    let (code, body) = common::json_of(
        a.post("/openidm/script?_action=eval")
            .json(&js("openidm.query('external/idm/b/managed/user', {_queryFilter: 'true', _sortKeys: 'userName'}, ['userName']).result.map(function (u) { return u.userName; })"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!(["user0", "user1", "user2"]));

    let run = recon(&a, "u2o").await;
    assert_eq!(status(&run), (3, 0), "{run:#}");
    let targets = all_of(&a, "managed/other").await;
    assert_eq!(by_user(&targets, "user2")["cn"], "Given Sn2");
    // The remote's password never shows in what the script saw or in the log.
    assert!(!a.logs().contains("b-admin"));
}
