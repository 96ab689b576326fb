//! CSV bulk import on running gateways with the shipped `managed.json`: the template, the
//! multipart upload, the background import through the managed layer (policies apply),
//! the import records and their actions, the failures download, cancel, restart, access
//! and CREST errors. `bench_import_rows_and_peak_rss` (ignored) measures rows/s and the
//! gateway's peak RSS for 10 000 and 100 000 rows (`benches/csv_import.sh`).

mod common;

use std::time::{Duration, Instant};

use common::fixtures::shipped;
use common::{json_of, send, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

const BOUNDARY: &str = "----idmGatewayCsvImport7MA4YWxkTrZu0gW";

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed.json", shipped("managed"))
        .start()
        .await
}

/// A `multipart/form-data` body with one `upload` part per file.
fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n"
        ).as_bytes());
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload_as(req: reqwest::RequestBuilder, files: &[(&str, &[u8])]) -> (u16, Value) {
    json_of(
        req.header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(files))
        .send()
        .await
        .unwrap(),
    )
    .await
}

async fn upload(gw: &Gateway, path: &str, files: &[(&str, &[u8])]) -> (u16, Value) {
    upload_as(gw.post(path), files).await
}

/// Uploads one file to managed/user with uniqueProperty=userName; returns its import id.
async fn import(gw: &Gateway, csv: &str) -> String {
    let (s, body) = upload(
        gw,
        "/upload/csv/managed/user?uniqueProperty=userName",
        &[("users.csv", csv.as_bytes())],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let ids = body["importUUIDs"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{body}");
    ids[0].as_str().unwrap().to_owned()
}

async fn record(gw: &Gateway, id: &str) -> Value {
    let (s, body) = send(
        gw,
        Method::GET,
        &format!("/openidm/csv/metadata/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body
}

/// Waits for the import to end and returns its record.
async fn finished(gw: &Gateway, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let m = record(gw, id).await;
        if !m["end"].is_null() {
            return m;
        }
        assert!(Instant::now() < deadline, "import did not end: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn users_named(gw: &Gateway, user: &str) -> Vec<Value> {
    let filter = format!("userName eq \"{user}\"");
    let path = format!("/openidm/managed/user?_queryFilter={}", url_escape(&filter));
    let (s, body) = send(gw, Method::GET, &path, None).await;
    assert_eq!(s, 200, "{body}");
    body["result"].as_array().unwrap().clone()
}

async fn count(gw: &Gateway, filter: &str) -> u64 {
    let path = format!(
        "/openidm/managed/user?_queryFilter={}&_pageSize=1&_totalPagedResultsPolicy=EXACT",
        url_escape(filter)
    );
    let (s, body) = send(gw, Method::GET, &path, None).await;
    assert_eq!(s, 200, "{body}");
    body["totalPagedResults"].as_u64().unwrap()
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn users_csv(rows: std::ops::Range<usize>) -> String {
    let mut csv = String::from("userName,givenName,sn,mail,description\n");
    for i in rows {
        csv.push_str(&format!(
            "user{i},Given{i},Sn{i},user{i}@example.com,\"row {i}, quoted\"\n"
        ));
    }
    csv
}

async fn cleanup_list(gw: &Gateway) -> Vec<String> {
    let (s, body) = send(
        gw,
        Method::POST,
        "/openidm/csv/metadata?_action=cleanupList",
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["importUUIDs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn template_header_comes_from_the_managed_schema() {
    let gw = gateway().await;
    let (s, body) = send(
        &gw,
        Method::GET,
        "/openidm/csv/template?resourceCollection=managed/user",
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let header = r#""userName","givenName","sn","mail","description","accountStatus","telephoneNumber","postalAddress","city","postalCode","country","stateProvince""#;
    assert_eq!(body, json!({"_id": "template", "header": header}));

    // As a file to download.
    let r = gw
        .get("/openidm/csv/template?resourceCollection=managed/user&_fields=header&_mimeType=text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(r.text().await.unwrap(), format!("{header}\n"));

    for (path, code) in [
        ("/openidm/csv/template?resourceCollection=managed/nope", 404),
        (
            "/openidm/csv/template?resourceCollection=system/ldap/account",
            400,
        ),
        ("/openidm/csv/template", 400),
    ] {
        let (s, body) = send(&gw, Method::GET, path, None).await;
        assert_eq!(s, code, "{path}: {body}");
        assert_eq!(body["code"], code, "{body}");
    }
}

#[tokio::test]
async fn import_reports_failures_and_reupload_updates_instead_of_duplicating() {
    let gw = gateway().await;
    let csv = "userName,givenName,sn,mail\n\
               bjensen,Barbara,Jensen,bjensen@example.com\n\
               jdoe,John,Doe,not-an-email\n\
               scarter,Sam,Carter,scarter@example.com\n";
    let id = import(&gw, csv).await;
    let m = finished(&gw, &id, Duration::from_secs(30)).await;
    for (k, v) in [
        ("total", 3),
        ("success", 2),
        ("failure", 1),
        ("created", 2),
        ("updated", 0),
        ("unchanged", 0),
        ("tempRecords", 0),
    ] {
        assert_eq!(m[k], v, "{k}: {m}");
    }
    assert_eq!(m["header"], json!(["userName", "givenName", "sn", "mail"]));
    assert_eq!(m["filename"], "users.csv");
    assert_eq!(m["resourcePath"], "managed/user");
    assert_eq!(m["cancelled"], false);
    assert_eq!(m["purgedTempRecords"], true);
    assert_eq!(m["authId"], "openidm-admin");
    assert_eq!(users_named(&gw, "bjensen").await[0]["sn"], "Jensen");
    assert_eq!(users_named(&gw, "scarter").await.len(), 1);
    assert!(users_named(&gw, "jdoe").await.is_empty());

    // The failed row, with the policy failure as its reason.
    let r = gw
        .get(&format!("/export/csvImportFailures/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        rows.headers().unwrap().iter().collect::<Vec<_>>(),
        ["userName", "givenName", "sn", "mail", "_importError"]
    );
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(&rows[0][0], "jdoe");
    let error: Value = serde_json::from_str(&rows[0][4]).unwrap();
    assert_eq!(error["code"], 403, "{error}");
    assert_eq!(error["message"], "Policy validation failed", "{error}");
    assert!(
        error.to_string().contains("VALID_EMAIL_ADDRESS_FORMAT"),
        "{error}"
    );

    // Query the records (IDM's example filter).
    let (s, q) = send(
        &gw,
        Method::GET,
        "/openidm/csv/metadata?_queryFilter=%2FresourcePath%20eq%20%22managed%2Fuser%22",
        None,
    )
    .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["result"][0]["_id"], id.as_str());

    // Again, as two files of one upload, with jdoe fixed and scarter changed: nothing is
    // duplicated.
    let (s, up) = upload(
        &gw,
        "/upload/csv/managed/user?uniqueProperty=userName",
        &[
            ("a.csv", b"userName,givenName,sn,mail\nbjensen,Barbara,Jensen,bjensen@example.com\njdoe,John,Doe,jdoe@example.com\n"),
            ("b.csv", b"userName,givenName,sn,mail\nscarter,Samantha,Carter,scarter@example.com\n"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{up}");
    let (id2, id3) = (
        up["importUUIDs"][0].as_str().unwrap(),
        up["importUUIDs"][1].as_str().unwrap(),
    );
    let (m2, m3) = (
        finished(&gw, id2, Duration::from_secs(30)).await,
        finished(&gw, id3, Duration::from_secs(30)).await,
    );
    assert_eq!(
        (m2["filename"].as_str(), m3["filename"].as_str()),
        (Some("a.csv"), Some("b.csv"))
    );
    for (k, v2, v3) in [
        ("created", 1, 0),
        ("unchanged", 1, 0),
        ("updated", 0, 1),
        ("failure", 0, 0),
    ] {
        assert_eq!((&m2[k], &m3[k]), (&json!(v2), &json!(v3)), "{k}: {m2} {m3}");
    }
    assert_eq!(count(&gw, "true").await, 3);
    assert_eq!(
        users_named(&gw, "scarter").await[0]["givenName"],
        "Samantha"
    );
    // No failure: nothing to download.
    let r = gw
        .get(&format!("/export/csvImportFailures/{id2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Clean-up: the first import keeps error records until they are deleted.
    let list = cleanup_list(&gw).await;
    assert!(
        list.contains(&id) && !list.contains(&id2.to_owned()),
        "{list:?}"
    );
    let (s, c) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cleanup"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["purgedErrorRecords"], false, "{c}");
    assert!(cleanup_list(&gw).await.contains(&id));
    let (s, c) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cleanup&deleteErrorRecords=true"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["purgedErrorRecords"], true, "{c}");
    assert!(!cleanup_list(&gw).await.contains(&id));
    let r = gw
        .get(&format!("/export/csvImportFailures/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Delete the record: the imported data stays.
    let (s, d) = send(
        &gw,
        Method::DELETE,
        &format!("/openidm/csv/metadata/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["importDeleted"], true, "{d}");
    let (s, _) = send(
        &gw,
        Method::GET,
        &format!("/openidm/csv/metadata/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(count(&gw, "true").await, 3);
}

#[tokio::test]
async fn rows_go_through_triggers_and_relationship_columns_take_references() {
    let mut managed = shipped("managed");
    managed["objects"][0]["onCreate"] = common::fixtures::js(
        "object.description = 'created by ' + context.security.authenticationId;",
    );
    let gw = Gateway::builder()
        .conf_file("managed.json", managed)
        .start()
        .await;
    let (s, role) = send(
        &gw,
        Method::POST,
        "/openidm/managed/role?_action=create",
        Some(json!({"name": "staff"})),
    )
    .await;
    assert_eq!(s, 201, "{role}");
    let role_id = role["_id"].as_str().unwrap();
    let roles = format!("[{{\"_ref\":\"managed/role/{role_id}\"}}]").replace('"', "\"\"");
    let csv = format!(
        "userName,givenName,sn,mail,roles\n\
         bjensen,Barbara,Jensen,bjensen@example.com,\"{roles}\"\n\
         nobody,No,Body,nobody@example.com,\"[{{\"\"_ref\"\":\"\"managed/role/missing\"\"}}]\"\n"
    );
    let id = import(&gw, &csv).await;
    let m = finished(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(
        (m["created"].clone(), m["failure"].clone()),
        (json!(1), json!(1)),
        "{m}"
    );
    let user = &users_named(&gw, "bjensen").await[0];
    // The trigger ran as for a REST create, with the uploading caller.
    assert_eq!(user["description"], "created by openidm-admin", "{user}");
    // The relationship was written as edges: the role sees its member.
    let (s, members) = send(
        &gw,
        Method::GET,
        &format!("/openidm/managed/role/{role_id}/members?_queryFilter=true"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{members}");
    assert_eq!(
        members["result"][0]["_ref"],
        format!("managed/user/{}", user["_id"].as_str().unwrap()),
        "{members}"
    );
    // A reference to nothing fails that row, with the managed layer's reason.
    let text = gw
        .get(&format!("/export/csvImportFailures/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with("userName,givenName,sn,mail,roles,_importError"),
        "{text}"
    );
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let row = rows.records().next().unwrap().unwrap();
    assert_eq!(&row[0], "nobody");
    let error: Value = serde_json::from_str(&row[5]).unwrap();
    assert_eq!(error["code"], 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("'managed/role/missing', does not exist"),
        "{error}"
    );
}

/// `curl --form` sends `Expect: 100-continue` for files over 1 MB: the gateway answers 100
/// before the body is sent (curl would otherwise wait a second per upload).
#[tokio::test]
async fn expect_continue_is_answered_before_the_body() {
    let gw = gateway().await;
    let body = multipart(&[(
        "u.csv",
        b"userName,givenName,sn,mail\nx,a,b,x@example.com\n",
    )]);
    let (addr, pw) = (gw.addr, gw.admin_password().to_owned());
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /upload/csv/managed/user?uniqueProperty=userName HTTP/1.1\r\nHost: x\r\n\
             X-OpenIDM-Username: openidm-admin\r\nX-OpenIDM-Password: {pw}\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        // Nothing of the body is sent until the interim answer is in.
        let mut interim = Vec::new();
        let mut byte = [0u8; 1];
        while !interim.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte)
                .expect("no 100 Continue before the body");
            interim.push(byte[0]);
        }
        s.write_all(&body).unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        (String::from_utf8(interim).unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(answer.0.starts_with("HTTP/1.1 100"), "{answer:?}");
    assert!(answer.1.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.1.contains("importUUIDs"), "{answer:?}");
}

#[tokio::test]
async fn malformed_rows_are_reported_and_the_others_imported() {
    let gw = gateway().await;
    let csv = "userName,givenName,sn,mail\n\
               good1,A,B,good1@example.com\n\
               short,A,B\n\
               long,A,B,long@example.com,extra\n\
               \"quo\"ted,A,B,quoted@example.com\n\
               ,NoName,B,noname@example.com\n\
               good2,A,B,good2@example.com\n\
               \"open,A,B,open@example.com\n\
               lost,A,B,lost@example.com\n";
    let id = import(&gw, csv).await;
    let m = finished(&gw, &id, Duration::from_secs(30)).await;
    // The open quote runs to the end of the file: `open…lost` is one row of one field.
    assert_eq!(m["total"], 7, "{m}");
    assert_eq!(m["failure"], 4, "{m}");
    assert_eq!(m["created"], 3, "{m}");
    assert_eq!(users_named(&gw, "good2").await.len(), 1);
    // csv's lenient quoting: `"quo"ted` is `quoted`.
    assert_eq!(users_named(&gw, "quoted").await.len(), 1);
    let text = gw
        .get(&format!("/export/csvImportFailures/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in [
        "Row has 3 fields; the header has 4",
        "Row has 5 fields; the header has 4",
        "(a uniqueProperty) has no value",
        "Row has 1 fields; the header has 4",
    ] {
        assert!(text.contains(reason), "{reason}: {text}");
    }
}

#[tokio::test]
async fn cancel_stops_a_large_import_between_rows() {
    let gw = gateway().await;
    let id = import(&gw, &users_csv(0..10_000)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = record(&gw, &id).await;
        assert!(
            m["end"].is_null(),
            "ended before it could be cancelled: {m}"
        );
        if m["success"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Running: neither cleaned nor deleted.
    let (s, _) = send(
        &gw,
        Method::DELETE,
        &format!("/openidm/csv/metadata/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 409);
    let (s, body) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cancel"),
        None,
    )
    .await;
    assert_eq!((s, body), (200, json!({"status": "OK"})));
    let m = finished(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(m["cancelled"], true, "{m}");
    assert_eq!(m["total"], 10_000, "{m}");
    let created = m["created"].as_u64().unwrap();
    assert!(created > 0 && created < 10_000, "{m}");
    assert_eq!(m["failure"], 0, "{m}");
    assert_eq!(m["tempRecords"], 10_000 - created, "{m}");
    // Exactly the counted users exist, each whole.
    assert_eq!(count(&gw, "true").await, created);
    assert_eq!(
        count(&gw, "!(mail pr) or !(sn pr) or !(description pr)").await,
        0
    );
    // Cancelling again: it is not running.
    let (s, _) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cancel"),
        None,
    )
    .await;
    assert_eq!(s, 400);
    // The rows not imported are held until cleaned up.
    assert!(cleanup_list(&gw).await.contains(&id));
    let (s, c) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cleanup"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        (c["tempRecords"].clone(), c["purgedTempRecords"].clone()),
        (json!(0), json!(true))
    );
    assert!(!cleanup_list(&gw).await.contains(&id));
}

#[tokio::test]
async fn a_restart_mid_import_marks_it_interrupted() {
    let mut gw = gateway().await;
    let id = import(&gw, &users_csv(0..10_000)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while record(&gw, &id).await["success"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.restart().await; // SIGKILL, then start on the same data
    let m = record(&gw, &id).await;
    assert!(!m["end"].is_null(), "{m}");
    assert_eq!(m["interrupted"], true, "{m}");
    assert_eq!(m["cancelled"], false, "{m}");
    assert!(m["tempRecords"].as_u64().unwrap() > 0, "{m}");
    assert!(cleanup_list(&gw).await.contains(&id));
    let (s, body) = send(
        &gw,
        Method::POST,
        &format!("/openidm/csv/metadata/{id}?_action=cancel"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{body}");
}

#[tokio::test]
async fn only_administrators_import() {
    let gw = gateway().await;
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/plain",
        Some(json!({"password": "Passw0rd!x", "roles": ["internal/role/openidm-authorized"]})),
    )
    .await;
    assert!(s == 200 || s == 201, "{s}");
    let as_plain = |m: Method, p: &str| gw.as_user(m, p, "plain", "Passw0rd!x");
    let (s, body) = upload_as(
        as_plain(
            Method::POST,
            "/upload/csv/managed/user?uniqueProperty=userName",
        ),
        &[("u.csv", b"userName\nx\n")],
    )
    .await;
    assert_eq!((s, body["code"].clone()), (403, json!(403)), "{body}");
    for path in [
        "/export/csvImportFailures/x",
        "/openidm/csv/metadata?_queryFilter=true",
        "/openidm/csv/template?resourceCollection=managed/user",
    ] {
        let (s, body) = json_of(as_plain(Method::GET, path).send().await.unwrap()).await;
        assert_eq!(s, 403, "{path}: {body}");
    }
    let (s, body) = upload_as(
        gw.anon(
            Method::POST,
            "/upload/csv/managed/user?uniqueProperty=userName",
        ),
        &[("u.csv", b"userName\nx\n")],
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(count(&gw, "true").await, 0);
}

#[tokio::test]
async fn bad_uploads_are_crest_errors() {
    let gw = Gateway::builder()
        .conf_file("managed.json", shipped("managed"))
        .env("IDM_GATEWAY_MAX_UPLOAD_BYTES", "4096")
        .start()
        .await;
    let good: &[(&str, &[u8])] = &[(
        "u.csv",
        b"userName,givenName,sn,mail\nx,a,b,x@example.com\n",
    )];
    let empty: &[(&str, &[u8])] = &[("e.csv", b"")];
    let twice: &[(&str, &[u8])] = &[("d.csv", b"userName,userName\nx,y\n")];
    for (path, files, code, needle) in [
        ("/upload/csv/managed/user", good, 400, "uniqueProperty"),
        (
            "/upload/csv/managed/user?uniqueProperty=nope",
            good,
            400,
            "not a column",
        ),
        (
            "/upload/csv/managed/nope?uniqueProperty=userName",
            good,
            404,
            "not defined",
        ),
        (
            "/upload/csv/system/ldap/account?uniqueProperty=userName",
            good,
            400,
            "managed",
        ),
        (
            "/upload/csv/managed/user?uniqueProperty=userName",
            empty,
            400,
            "empty",
        ),
        (
            "/upload/csv/managed/user?uniqueProperty=userName",
            twice,
            400,
            "same property",
        ),
        (
            "/upload/csv/managed/user?uniqueProperty=userName",
            &[][..],
            400,
            "no file",
        ),
    ] {
        let (s, body) = upload(&gw, path, files).await;
        assert_eq!(s, code, "{path}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    // Dot segments (sent raw: HTTP clients normalise them).
    for path in [
        "/upload/csv/managed/%2e%2e/user",
        "/export/csvImportFailures/..%2fx",
    ] {
        let (s, body) = gw.raw_get(path);
        assert_eq!(s, 400, "{path}: {body}");
        assert!(body.contains("segment"), "{body}");
    }
    // Not multipart; not POST.
    let (s, body) = json_of(
        gw.post("/upload/csv/managed/user?uniqueProperty=userName")
            .json(&json!({"userName": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = json_of(gw.get("/upload/csv/managed/user").send().await.unwrap()).await;
    assert_eq!(s, 405);
    // Beyond the upload limit (4096 bytes here).
    let big = users_csv(0..200);
    let (s, body) = upload(
        &gw,
        "/upload/csv/managed/user?uniqueProperty=userName",
        &[("big.csv", big.as_bytes())],
    )
    .await;
    assert_eq!(s, 413, "{body}");
    // Nothing was recorded or left behind.
    let (s, q) = send(
        &gw,
        Method::GET,
        "/openidm/csv/metadata?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!((s, q["resultCount"].clone()), (200, json!(0)), "{q}");
    let spool = std::fs::read_dir(gw.data_dir().join("csv-import"))
        .unwrap()
        .count();
    assert_eq!(spool, 0);
    let (s, _) = send(&gw, Method::GET, "/openidm/csv/metadata/nope", None).await;
    assert_eq!(s, 404);
    let (s, _) = json_of(
        gw.get("/export/csvImportFailures/nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
}

/// Peak RSS (kB) of a process so far.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// `cargo test --test csv_import -- --ignored --nocapture`: rows/s and peak RSS for 10 000
/// and 100 000 rows (or the sizes in `CSV_BENCH_ROWS`, comma-separated), each on a fresh
/// gateway.
#[tokio::test]
#[ignore]
async fn bench_import_rows_and_peak_rss() {
    let sizes = std::env::var("CSV_BENCH_ROWS").unwrap_or_else(|_| "10000,100000".into());
    for rows in sizes.split(',').map(|n| n.trim().parse::<usize>().unwrap()) {
        let gw = gateway().await;
        let before = vm_hwm(gw.pid());
        let csv = users_csv(0..rows);
        let started = Instant::now();
        let id = import(&gw, &csv).await;
        let m = finished(&gw, &id, Duration::from_secs(3600)).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(m["created"], rows as u64, "{m}");
        println!(
            "csv import: {rows} rows ({} bytes) in {secs:.1} s = {:.0} rows/s; gateway VmHWM {} kB (at start {before} kB)",
            csv.len(),
            rows as f64 / secs,
            vm_hwm(gw.pid())
        );
    }
}
