//! `/openidm/system/ldap/…` end to end: a real gateway in front of a real OpenLDAP `slapd`.
//! Seed 004's examples (create, rename by PUT of a new DN, query-all-ids, authenticate),
//! LDAP errors as CREST errors that never show the bind password, and the sync chain
//! `system/ldap/account` → `managed/user` → `system/csv/account` by reconciliation,
//! implicit sync and liveSync.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fixtures::{recon, shipped};
use common::slapd::{ldap_provisioner, people_ldif, PEOPLE, ROOT_DN, ROOT_PW, SUFFIX};
use common::{eventually, json_of, Gateway, Slapd, TestPki};
use serde_json::{json, Value};

fn csv_provisioner(csv: &Path) -> Value {
    json!({
        "name": "csv",
        "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
        "configurationProperties": {"csvFile": csv.to_str().unwrap(), "headerUid": "uid",
                                    "headerName": "uid"},
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "uid": {"type": "string", "nativeName": "__NAME__", "required": true},
            "fullName": {"type": "string"},
            "lastName": {"type": "string"},
            "email": {"type": "string"}
        }}}
    })
}

async fn gateway(slapd: &Slapd, extra: &[(&str, Value)]) -> Gateway {
    let mut b = Gateway::builder()
        .env("LDAP_BIND_PASSWORD", ROOT_PW)
        .conf_file("managed", shipped("managed"))
        .conf_file("provisioner.openicf-ldap", ldap_provisioner(slapd.port()));
    for (name, doc) in extra {
        b = b.conf_file(name, doc.clone());
    }
    b.start().await
}

#[tokio::test]
async fn ldap_objects_over_rest_follow_seed_004() {
    let slapd = Slapd::builder().people("pre", 3).start();
    let gw = gateway(&slapd, &[]).await;

    let (s, v) = json_of(
        gw.post("/openidm/system/ldap?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");

    // Create (seed 004): the server-assigned entryUUID is the _id; absent attributes null.
    let (s, created) = json_of(
        gw.post("/openidm/system/ldap/account?_action=create")
            .json(
                &json!({"cn": "James Smith", "dn": format!("uid=jsmith,{PEOPLE}"),
                          "uid": "jsmith", "sn": "Smith", "givenName": "James",
                          "mail": "jsmith@example.com", "description": "Created by IDM REST",
                          "userPassword": "Passw0rd-js"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "entryUUID: {id}");
    assert_eq!(created["telephoneNumber"], Value::Null);
    assert_eq!(created["dn"], format!("uid=jsmith,{PEOPLE}"));
    assert!(created.get("userPassword").is_none(), "{created}");

    // Rename by PUT of a new DN: same _id, attributes not named are kept.
    let (s, v) = json_of(
        gw.put(&format!("/openidm/system/ldap/account/{id}"))
            .header("If-Match", "*")
            .json(
                &json!({"cn": "James Smith", "dn": format!("uid=jimmysmith,{PEOPLE}"),
                          "uid": "jimmysmith", "sn": "Smith", "givenName": "James",
                          "mail": "jsmith@example.com"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["_id"], id.as_str());
    assert_eq!(v["dn"], format!("uid=jimmysmith,{PEOPLE}"));
    assert_eq!(v["description"], "Created by IDM REST");
    assert!(slapd
        .ldapsearch(SUFFIX, "(uid=jimmysmith)", &["dn"])
        .contains("uid=jimmysmith"));

    // query-all-ids: _id and dn.
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account?_queryId=query-all-ids")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let all = v["result"].as_array().unwrap();
    assert_eq!(all.len(), 4, "{v}");
    assert!(
        all.iter()
            .all(|o| o.as_object().unwrap().len() == 2 && o["dn"].is_string()),
        "{v}"
    );

    // Filters are LDAP filters; paging across requests.
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account")
            .query(&[
                ("_queryFilter", "uid sw \"pre\" and !(sn eq \"Sn1\")"),
                ("_fields", "uid,sn"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut uids: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["uid"].as_str().unwrap())
        .collect();
    uids.sort();
    assert_eq!(uids, ["pre0", "pre2"]);
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account")
            .query(&[
                ("_queryFilter", "true"),
                ("_pageSize", "3"),
                ("_fields", "uid"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["resultCount"].as_u64()), (200, Some(3)), "{v}");
    let cookie = v["pagedResultsCookie"].as_str().unwrap().to_owned();
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account")
            .query(&[
                ("_queryFilter", "true"),
                ("_pageSize", "3"),
                ("_fields", "uid"),
                ("_pagedResultsCookie", cookie.as_str()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["resultCount"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(v["pagedResultsCookie"], Value::Null);

    // Authenticate (seed 004): the account's _id; a wrong password is a 401.
    let (s, v) = json_of(
        gw.post("/openidm/system/ldap/account?_action=authenticate")
            .json(&json!({"username": "jimmysmith", "password": "Passw0rd-js"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"_id": id})));
    let (s, _) = json_of(
        gw.post("/openidm/system/ldap/account?_action=authenticate")
            .json(&json!({"username": "jimmysmith", "password": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);

    // LDAP errors as CREST errors.
    for (body, code, needle) in [
        // Parent entry does not exist: noSuchObject.
        (
            json!({"dn": "uid=x1,ou=nowhere,dc=example,dc=com", "cn": "X", "sn": "X"}),
            404,
            "ou=nowhere",
        ),
        // The DN exists already: entryAlreadyExists.
        (
            json!({"dn": format!("uid=pre0,{PEOPLE}"), "cn": "X", "sn": "X", "uid": "pre0"}),
            412,
            "uid=pre0",
        ),
        // mail is an IA5 string: invalidAttributeSyntax.
        (
            json!({"dn": format!("uid=x2,{PEOPLE}"), "cn": "X", "sn": "X", "mail": "jérôme@example.com"}),
            400,
            "mail",
        ),
    ] {
        let (s, v) = json_of(
            gw.post("/openidm/system/ldap/account?_action=create")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, code, "{body}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {v}");
        assert!(!msg.contains(ROOT_PW), "{v}");
    }
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account/00000000-0000-0000-0000-000000000000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404, "{v}");

    // Delete.
    let (s, v) = json_of(
        gw.delete(&format!("/openidm/system/ldap/account/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["uid"]), (200, &json!("jimmysmith")), "{v}");
    let r = gw
        .get(&format!("/openidm/system/ldap/account/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The server goes away: 503, and the bind password shows nowhere.
    let mut slapd = slapd;
    slapd.kill();
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(!v.to_string().contains(ROOT_PW), "{v}");
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v[0]["ok"]), (200, &json!(false)), "{v}");
    assert!(!v.to_string().contains(ROOT_PW), "{v}");
    let metrics = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("idm_gateway_connector_operations_total{operation=\"SEARCH\",outcome=\"503\",system=\"ldap\"}"), "{metrics}");
    assert!(
        !gw.logs().contains(ROOT_PW),
        "the bind password is in the logs"
    );
}

#[tokio::test]
async fn core_and_full_config_are_built_from_the_connector_and_the_server_schema() {
    let slapd = Slapd::start();
    let gw = Gateway::builder().start().await;
    // createCoreConfig: the connector's properties and their defaults.
    let (s, core) = json_of(
        gw.post("/openidm/system?_action=createCoreConfig")
            .json(&json!({"name": "ldap", "connectorRef": {
                "connectorName": "org.identityconnectors.ldap.LdapConnector"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{core}");
    assert_eq!(core["connectorRef"]["systemType"], "provisioner.openicf");
    assert_eq!(core["configurationProperties"]["uidAttribute"], "entryUUID");
    assert_eq!(core["configurationProperties"]["port"], 389);
    assert!(core["operationTimeout"]["SEARCH"].is_number(), "{core}");
    // Fill in the server, then createFullConfig reads objectTypes from its schema.
    let mut config = core.clone();
    let props = config["configurationProperties"].as_object_mut().unwrap();
    props.insert("host".into(), json!("127.0.0.1"));
    props.insert("port".into(), json!(slapd.port()));
    props.insert("principal".into(), json!(ROOT_DN));
    props.insert("credentials".into(), json!(ROOT_PW));
    props.insert("baseContexts".into(), json!([SUFFIX]));
    let (s, full) = json_of(
        gw.post("/openidm/system?_action=createFullConfig")
            .json(&config)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{full}");
    let account = &full["objectTypes"]["account"];
    assert_eq!(account["nativeType"], "__ACCOUNT__", "{full}");
    assert_eq!(
        account["properties"]["dn"]["nativeName"], "__NAME__",
        "{account}"
    );
    assert_eq!(account["properties"]["sn"]["required"], true, "{account}");
    assert!(account["properties"]["mail"].is_object(), "{account}");
    assert!(full["objectTypes"]["group"].is_object(), "{full}");
    // The full config is a valid provisioner file: testConfig says ok, and saved through
    // the config endpoint it serves objects at once.
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=testConfig")
            .json(&full)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    let r = gw
        .put("/openidm/config/provisioner.openicf/ldap")
        .json(&full)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account?_queryFilter=true&_fields=dn")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn wrong_bind_credentials_fail_without_showing_them() {
    let slapd = Slapd::start();
    let gw = Gateway::builder()
        .env("LDAP_BIND_PASSWORD", "not-the-password-7731")
        .conf_file("provisioner.openicf-ldap", ldap_provisioner(slapd.port()))
        .start()
        .await;
    let (s, v) = json_of(
        gw.get("/openidm/system/ldap/account?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s == 503 || s == 500, "{s} {v}");
    assert!(v["message"].as_str().unwrap().contains("principal"), "{v}");
    assert!(!v.to_string().contains("not-the-password-7731"), "{v}");
    let (_, v) = json_of(
        gw.post("/openidm/system/ldap?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(!v.to_string().contains("not-the-password-7731"), "{v}");
    assert!(!gw.logs().contains("not-the-password-7731"));
}

fn chain_mappings() -> Value {
    json!({"mappings": [
        {
            "name": "systemLdapAccounts_managedUser",
            "source": "system/ldap/account",
            "target": "managed/user",
            "properties": [
                {"source": "uid", "target": "userName"},
                {"source": "cn", "target": "givenName"},
                {"source": "sn", "target": "sn"},
                {"source": "mail", "target": "mail"}
            ],
            "correlationQuery": {"_queryFilter": "userName eq \"${source.uid}\""},
            "policies": [
                {"situation": "ABSENT", "action": "CREATE"},
                {"situation": "FOUND", "action": "UPDATE"},
                {"situation": "CONFIRMED", "action": "UPDATE"},
                {"situation": "SOURCE_MISSING", "action": "DELETE"}
            ]
        },
        {
            "name": "managedUser_systemCsvAccount",
            "source": "managed/user",
            "target": "system/csv/account",
            "properties": [
                {"source": "userName", "target": "uid"},
                {"source": "sn", "target": "lastName"},
                {"source": "mail", "target": "email"}
            ],
            "correlationQuery": {"_queryFilter": "uid eq \"${source.userName}\""},
            "policies": [
                {"situation": "ABSENT", "action": "CREATE"},
                {"situation": "FOUND", "action": "UPDATE"},
                {"situation": "CONFIRMED", "action": "UPDATE"},
                {"situation": "SOURCE_MISSING", "action": "DELETE"}
            ]
        }
    ]})
}

async fn csv_row(gw: &Gateway, uid: &str) -> Option<Value> {
    let r = gw
        .get(&format!("/openidm/system/csv/account/{uid}"))
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    Some(r.json().await.unwrap())
}

#[tokio::test]
async fn ldap_to_managed_to_csv_by_recon_implicit_sync_and_live_sync() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("accounts.csv");
    std::fs::write(&csv, "uid,fullName,lastName,email\n").unwrap();
    let slapd = Slapd::builder().people("p", 25).start();
    let gw = gateway(
        &slapd,
        &[
            ("provisioner.openicf-csv", csv_provisioner(&csv)),
            ("sync", chain_mappings()),
        ],
    )
    .await;

    // LDAP → managed by reconciliation; managed → CSV follows by implicit sync.
    let run = recon(&gw, "systemLdapAccounts_managedUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["situationSummary"]["ABSENT"], 25, "{run}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            std::fs::read_to_string(&csv).unwrap().lines().count() == 26
        })
        .await,
        "{}\n{}",
        std::fs::read_to_string(&csv).unwrap(),
        gw.logs()
    );
    assert_eq!(csv_row(&gw, "p7").await.unwrap()["email"], "p7@example.com");
    // A reconciliation managed → CSV now finds everything in place.
    let run = recon(&gw, "managedUser_systemCsvAccount").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(run["situationSummary"]["CONFIRMED"], 25, "{run}");

    // liveSync: the first run records the token; a change made in LDAP then flows through.
    let (s, v) = json_of(
        gw.post("/openidm/system/ldap/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["_id"]), (200, &json!("SYSTEMLDAPACCOUNT")), "{v}");
    slapd.ldapmodify(&format!(
        "dn: uid=p3,{PEOPLE}\nchangetype: modify\nreplace: sn\nsn: Renamed\n"
    ));
    slapd.ldapadd(&people_ldif("late", 0..1));
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=liveSync&source=system/ldap/account")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    let (_, users) = json_of(
        gw.get("/openidm/managed/user")
            .query(&[(
                "_queryFilter",
                "userName eq \"p3\" or userName eq \"late0\"",
            )])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut got: Vec<(String, String)> = users["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userName"].as_str().unwrap().into(),
                u["sn"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("late0".into(), "Sn0".into()),
            ("p3".into(), "Renamed".into())
        ]
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            csv_row(&gw, "p3")
                .await
                .is_some_and(|r| r["lastName"] == "Renamed")
                && csv_row(&gw, "late0").await.is_some()
        })
        .await,
        "{}",
        std::fs::read_to_string(&csv).unwrap()
    );
    // A liveSync with nothing new moves nothing and answers the same token.
    let (_, again) = json_of(
        gw.post("/openidm/system/ldap/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["connectorData"], v["connectorData"], "{again}");
}

/// `ldap_provisioner` named `name` with `configurationProperties` changed by `props`.
fn ldap_provisioner_with(name: &str, port: u16, props: Value) -> Value {
    let mut doc = ldap_provisioner(port);
    doc["name"] = json!(name);
    for (k, v) in props.as_object().unwrap() {
        doc["configurationProperties"][k] = v.clone();
    }
    doc
}

#[tokio::test]
async fn ldap_over_tls_trusts_the_certs_dir_and_follows_its_changes() {
    let pki = TestPki::new();
    let (cert, key) = pki.server_cert(&["localhost", "127.0.0.1"]);
    let slapd = Slapd::builder().people("tls", 2).tls(&cert, &key).start();
    // ldaps, and StartTLS on the plain port; certs/ does not hold the CA yet.
    let gw = Gateway::builder()
        .env("LDAP_BIND_PASSWORD", ROOT_PW)
        .conf_file(
            "provisioner.openicf-ldap",
            ldap_provisioner_with("ldap", slapd.ldaps_port(), json!({"ssl": true})),
        )
        .conf_file(
            "provisioner.openicf-ldapstarttls",
            ldap_provisioner_with("ldapstarttls", slapd.port(), json!({"startTLS": true})),
        )
        .start()
        .await;
    let query = |system: &str| {
        let r = gw.get(&format!(
            "/openidm/system/{system}/account?_queryFilter=uid+eq+\"tls1\"&_fields=cn"
        ));
        async move { json_of(r.send().await.unwrap()).await }
    };
    for system in ["ldap", "ldapstarttls"] {
        let (s, v) = query(system).await;
        assert_eq!(s, 503, "{system}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains("TLS handshake"), "{system}: {v}");
        assert!(msg.contains("UnknownIssuer"), "{system}: {v}");
        assert!(!v.to_string().contains(ROOT_PW), "{v}");
        let (_, v) = json_of(
            gw.post(&format!("/openidm/system/{system}?_action=test"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains("TLS"),
            "{v}"
        );
    }

    // The CA lands in certs/: after the reload, new connections trust it.
    gw.write_cert("ldap-ca", &pki.ca_pem());
    for system in ["ldap", "ldapstarttls"] {
        let ok = eventually(Duration::from_secs(15), || async {
            let (s, v) = query(system).await;
            s == 200
                && (v["result"][0]["cn"] == json!("tls 1")
                    || v["result"][0]["cn"] == json!(["tls 1"]))
        })
        .await;
        assert!(ok, "{system}: {:?}", query(system).await);
    }
    let (_, v) = json_of(
        gw.post("/openidm/system?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(v.as_array().unwrap().iter().all(|s| s["ok"] == true), "{v}");

    // And leaves it: the systems are rebuilt, their connections with them.
    std::fs::remove_file(gw.certs_dir().join("ldap-ca.pem")).unwrap();
    for system in ["ldap", "ldapstarttls"] {
        let failed = eventually(Duration::from_secs(15), || async {
            query(system).await.0 == 503
        })
        .await;
        assert!(failed, "{system}: {:?}", query(system).await);
    }
    assert!(
        !gw.logs().contains(ROOT_PW),
        "the bind password is in the logs"
    );
}

/// A DN outside `baseContexts` (by create or by a rename's PUT) is a CREST 400 naming the DN
/// and the base contexts, and nothing is written.
#[tokio::test]
async fn dns_outside_the_base_contexts_are_refused_over_rest() {
    let slapd = Slapd::builder().people("pre", 1).start();
    let gw = gateway(&slapd, &[]).await;
    let before = slapd.ldapsearch(SUFFIX, "(objectClass=*)", &["*", "+"]);
    let outside = "uid=x,dc=elsewhere,dc=com";
    let (s, v) = json_of(
        gw.post("/openidm/system/ldap/account?_action=create")
            .json(&json!({"cn": "X", "sn": "X", "uid": "x", "dn": outside}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, &v["code"], &v["reason"]),
        (400, &json!(400), &json!("Bad Request")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(outside) && message.contains(SUFFIX),
        "{message}"
    );

    let (_, page) = json_of(
        gw.get("/openidm/system/ldap/account?_queryFilter=uid+eq+%22pre0%22")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = page["result"][0]["_id"].as_str().unwrap().to_owned();
    let injected = format!("uid=pre0,{SUFFIX},dc=evil");
    let (s, v) = json_of(
        gw.put(&format!("/openidm/system/ldap/account/{id}"))
            .header("If-Match", "*")
            .json(&json!({"cn": "pre 0", "sn": "Sn0", "uid": "pre0", "dn": injected}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&injected), "{v}");
    assert_eq!(
        slapd.ldapsearch(SUFFIX, "(objectClass=*)", &["*", "+"]),
        before
    );
}

/// managed/user → LDAP with IDM's usual JavaScript: the DN built by a transform, `cn` from
/// the whole object, a JavaScript correlation query, and an onCreate hook.
#[tokio::test]
async fn managed_to_ldap_with_a_javascript_dn_and_correlation() {
    let slapd = Slapd::builder().people("pre", 1).start();
    let js = |s: &str| json!({"type": "text/javascript", "source": s});
    let mapping = json!({"mappings": [{
        "name": "managedUser_systemLdapAccount",
        "source": "managed/user",
        "target": "system/ldap/account",
        "properties": [
            {"source": "userName", "target": "dn",
             "transform": js(&format!("'uid=' + source + ',{PEOPLE}'"))},
            {"source": "userName", "target": "uid"},
            {"target": "cn", "transform": js("source.givenName + ' ' + source.sn")},
            {"source": "sn", "target": "sn"},
            {"source": "mail", "target": "mail"}
        ],
        "correlationQuery": js("({_queryFilter: 'uid eq \"' + source.userName + '\"'})"),
        "onCreate": js("target.description = 'made by ' + mappingConfig.name;"),
        "enableSync": false
    }]});
    let gw = gateway(&slapd, &[("sync", mapping)]).await;
    for (id, user_name) in [("m0", "pre0"), ("m1", "ada"), ("m2", "grace")] {
        let r = gw
            .put(&format!("/openidm/managed/user/{id}"))
            .json(
                &json!({"userName": user_name, "givenName": "First", "sn": format!("Last{id}"),
                          "mail": format!("{user_name}@example.com")}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let run = recon(&gw, "managedUser_systemLdapAccount").await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["situationSummary"]["ABSENT"], 2, "{run}");
    // pre0 was in LDAP already: the JavaScript correlation found it.
    assert_eq!(run["situationSummary"]["FOUND"], 1, "{run}");
    let entry = slapd.ldapsearch(SUFFIX, "(uid=ada)", &["cn", "description", "mail"]);
    assert!(entry.contains(&format!("dn: uid=ada,{PEOPLE}")), "{entry}");
    assert!(entry.contains("cn: First Lastm1"), "{entry}");
    assert!(
        entry.contains("description: made by managedUser_systemLdapAccount"),
        "{entry}"
    );
    let pre = slapd.ldapsearch(SUFFIX, "(uid=pre0)", &["mail", "sn"]);
    assert!(pre.contains("sn: Lastm0"), "{pre}");
    // A second run changes nothing.
    let run = recon(&gw, "managedUser_systemLdapAccount").await;
    assert_eq!(run["situationSummary"]["CONFIRMED"], 3, "{run}");
    assert_eq!(run["progress"]["target"]["updated"], 0, "{run}");
}
