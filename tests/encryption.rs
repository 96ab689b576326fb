//! Encrypted managed properties on a running gateway: `encryption` in managed.json stores
//! IDM's `$crypto` envelope (never the plaintext), REST callers never see it, scripts (as
//! internal callers) read and decrypt it, the keystore survives restarts, rotates, and
//! can come from the environment; a password kept encrypted syncs to LDAP in clear.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::{managed_encrypted, recon, user};
use common::slapd::{ldap_provisioner, PEOPLE, ROOT_PW};
use common::{eventually, json_of, Gateway, Slapd};
use idm_gateway::crypto::{self, Crypto};
use reqwest::Method;
use serde_json::{json, Value};

const PLAIN: &str = "Encr-7Pw!q-first";
const PLAIN2: &str = "Encr-9Zx!r-second";

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed_encrypted())
        .start()
        .await
}

/// The stored body of `managed/user/<id>`, read from the SQLite file.
fn stored(data: &Path, id: &str) -> Value {
    let c = rusqlite::Connection::open(data.join("repo.sqlite")).unwrap();
    let tbl: String = c
        .query_row(
            "SELECT tbl FROM repo_resource WHERE resource = 'managed/user'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let body: String = c
        .query_row(
            &format!("SELECT json(body) FROM \"{tbl}\" WHERE id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Whether `needle` is in any file of `dir` (the store, its WAL, the keystore).
fn anywhere_in(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

async fn eval(gw: &Gateway, source: &str, globals: Value) -> (u16, Value) {
    json_of(
        gw.post("/openidm/script?_action=eval")
            .json(&json!({"type": "text/javascript", "source": source, "globals": globals}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn put_ada(gw: &Gateway, password: Option<&str>) -> Value {
    let mut body = user(1);
    body["userName"] = json!("ada");
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let (s, v) = json_of(
        gw.put("/openidm/managed/user/ada")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    v
}

/// What REST shows never has the password or its plaintext.
fn assert_hidden(v: &Value) {
    let text = v.to_string();
    assert!(
        !text.contains("password") && !text.contains("$crypto") && !text.contains("Encr-"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_values_are_stored_as_envelopes_and_never_shown_over_rest() {
    let mut gw = gateway().await;
    assert_hidden(&put_ada(&gw, Some(PLAIN)).await);
    for path in [
        "/openidm/managed/user/ada",
        "/openidm/managed/user/ada?_fields=password",
        "/openidm/managed/user/ada?_fields=*,password",
        "/openidm/managed/user?_queryFilter=true",
        "/openidm/managed/user?_queryFilter=true&_fields=userName,password",
        "/openidm/managed/user?_queryFilter=true&_pageSize=10",
    ] {
        let (s, v) = json_of(gw.get(path).send().await.unwrap()).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(
            v.get("_id").or(v["result"][0].get("_id")),
            Some(&json!("ada")),
            "{path}: {v}"
        );
        assert_hidden(&v);
    }
    let (s, v) = json_of(
        gw.get("/openidm/managed/user?_queryFilter=password%20pr")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // The store holds the envelope, nowhere the plaintext.
    let data = gw.data_dir();
    let first = stored(&data, "ada")["password"].clone();
    assert!(crypto::is_encrypted(&first), "{first}");
    assert_eq!(first["$crypto"]["value"]["cipher"], "AES/GCM/NoPadding");
    assert_eq!(first["$crypto"]["value"]["stableId"], "openidm-sym-default");
    assert_eq!(
        first["$crypto"]["value"]["purpose"],
        "idm.password.encryption"
    );
    assert!(!anywhere_in(&data, PLAIN));
    let keystore = data.join(crypto::FILE_NAME);
    let mode = std::fs::metadata(&keystore).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let keys = Crypto::open_with(&data, None).unwrap();
    assert_eq!(keys.decrypt(&first).unwrap(), json!(PLAIN));

    // A PUT without the password keeps it; a patch replaces it, encrypted once.
    assert_hidden(&put_ada(&gw, None).await);
    assert_eq!(stored(&data, "ada")["password"], first);
    let (s, v) = json_of(
        gw.request(Method::PATCH, "/openidm/managed/user/ada")
            .json(&json!([{"operation": "replace", "field": "/password", "value": PLAIN2}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_hidden(&v);
    let second = stored(&data, "ada")["password"].clone();
    assert_ne!(second, first);
    assert_eq!(keys.decrypt(&second).unwrap(), json!(PLAIN2));

    // After a restart the same keystore decrypts, through a script (an internal caller).
    let keystore_before = std::fs::read(&keystore).unwrap();
    gw.restart().await;
    assert_eq!(std::fs::read(&keystore).unwrap(), keystore_before);
    let (s, v) = eval(
        &gw,
        "openidm.decrypt(openidm.read('managed/user/ada').password)",
        json!({}),
    )
    .await;
    assert_eq!((s, v), (200, json!(PLAIN2)));
    assert!(!anywhere_in(&data, PLAIN2));
}

#[tokio::test(flavor = "multi_thread")]
async fn scripts_read_and_decrypt_what_rest_callers_never_see() {
    let gw = gateway().await;
    put_ada(&gw, Some(PLAIN)).await;
    let (s, v) = eval(
        &gw,
        "var u = openidm.read('managed/user/ada');\n\
         var q = openidm.query('managed/user', {_queryFilter: 'userName eq \"ada\"'});\n\
         ({enc: openidm.isEncrypted(u.password), plain: openidm.decrypt(u.password),\n\
           deep: openidm.decrypt(u).password, matches: openidm.matches(pw, u.password),\n\
           wrong: openidm.matches(pw + 'x', u.password),\n\
           queried: openidm.decrypt(q.result[0].password)})",
        json!({"pw": PLAIN}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"enc": true, "plain": PLAIN, "deep": PLAIN, "matches": true, "wrong": false,
               "queried": PLAIN})
    );
    // The same object over REST, even for the administrator: no password.
    let (s, v) = json_of(
        gw.get("/openidm/managed/user/ada?_fields=*,password")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_hidden(&v);

    // A script writing back what it read stores the envelope as is (never re-encrypted).
    let before = stored(&gw.data_dir(), "ada")["password"].clone();
    let (s, v) = eval(
        &gw,
        "var u = openidm.read('managed/user/ada'); u.sn = 'Changed';\n\
         openidm.update('managed/user/ada', null, u); 'ok'",
        json!({}),
    )
    .await;
    assert_eq!((s, &v), (200, &json!("ok")), "{v}");
    let after = stored(&gw.data_dir(), "ada");
    assert_eq!(after["sn"], "Changed");
    assert_eq!(after["password"], before);

    // encrypt/hash/isHashed/matches in scripts.
    let (s, v) = eval(
        &gw,
        "var e = openidm.encrypt({k: [1, 'two']}, null, 'openidm-sym-default');\n\
         var h = openidm.hash('pw-1', null); var h5 = openidm.hash('pw-1', 'SHA-512');\n\
         ({e: openidm.isEncrypted(e), d: openidm.decrypt(e), h: openidm.isHashed(h),\n\
           he: openidm.isEncrypted(h), alg: h.$crypto.value.algorithm,\n\
           ok: openidm.matches('pw-1', h) && openidm.matches('pw-1', h5),\n\
           ko: openidm.matches('pw-2', h)})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"e": true, "d": {"k": [1, "two"]}, "h": true, "he": false, "alg": "SHA-256",
               "ok": true, "ko": false})
    );

    // A value that does not decrypt is an error for the script, not a crash.
    let (s, v) = eval(
        &gw,
        "var e = openidm.encrypt('x'); e.$crypto.value.data = 'AAAAAAAAAAAAAAAAAAAAAAAA';\n\
         try { openidm.decrypt(e); 'decrypted' } catch (err) { 'refused: ' + err.message }",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v.as_str().unwrap().contains("wrong key or altered data"),
        "{v}"
    );
    // Uncaught, it is the request's error: 400, naming neither key nor plaintext.
    let (s, v) = eval(
        &gw,
        "var e = openidm.encrypt('Encr-uncaught'); e.$crypto.value.stableId = 'gone';\n\
         openidm.decrypt(e)",
        json!({}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("'gone'"), "{v}");
    assert!(!v.to_string().contains("Encr-"), "{v}");
    let (s, v) = eval(&gw, "openidm.hash('x', 'MD5')", json!({})).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = json_of(gw.get("/openidm/managed/user/ada").send().await.unwrap()).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_and_the_environment_keystore() {
    // Rotation: name a new active alias; its key is made at the next start.
    let mut gw = gateway().await;
    put_ada(&gw, Some(PLAIN)).await;
    let data = gw.data_dir();
    let path = data.join(crypto::FILE_NAME);
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["active"] = json!("key-2027");
    std::fs::write(&path, doc.to_string()).unwrap();
    gw.restart().await;
    let mut grace = user(2);
    grace["password"] = json!(PLAIN2);
    let r = gw
        .put("/openidm/managed/user/grace")
        .json(&grace)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        stored(&data, "ada")["password"]["$crypto"]["value"]["stableId"],
        "openidm-sym-default"
    );
    assert_eq!(
        stored(&data, "grace")["password"]["$crypto"]["value"]["stableId"],
        "key-2027"
    );
    let (s, v) = eval(
        &gw,
        "[openidm.decrypt(openidm.read('managed/user/ada').password),\n\
          openidm.decrypt(openidm.read('managed/user/grace').password)]",
        json!({}),
    )
    .await;
    assert_eq!((s, v), (200, json!([PLAIN, PLAIN2])));

    // The environment's keystore: used as is, no file written.
    let env = json!({"active": "env-key", "keys": {
        "env-key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}})
    .to_string();
    let gw = Gateway::builder()
        .conf_file("managed", managed_encrypted())
        .env(crypto::ENV, &env)
        .start()
        .await;
    put_ada(&gw, Some(PLAIN)).await;
    let data = gw.data_dir();
    assert!(!data.join(crypto::FILE_NAME).exists());
    let envelope = stored(&data, "ada")["password"].clone();
    assert_eq!(envelope["$crypto"]["value"]["stableId"], "env-key");
    let keys = Crypto::open_with(&data, Some(&env)).unwrap();
    assert_eq!(keys.decrypt(&envelope).unwrap(), json!(PLAIN));
    assert!(!gw.logs().contains("MDEyMzQ1Njc4"));
}

/// Issue 12: a managed password stored encrypted reaches LDAP in clear through IDM's usual
/// `openidm.decrypt(source)` transform (sync reads as an internal caller), by implicit sync
/// and by reconciliation; the account then binds with it.
#[tokio::test(flavor = "multi_thread")]
async fn encrypted_managed_passwords_sync_to_ldap() {
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
            {"source": "sn", "target": "cn"},
            {"source": "sn", "target": "sn"},
            {"source": "password", "target": "userPassword",
             "transform": js("openidm.decrypt(source);")}
        ],
        "correlationQuery": {"_queryFilter": "uid eq \"${source.userName}\""},
        "policies": [
            {"situation": "ABSENT", "action": "CREATE"},
            {"situation": "FOUND", "action": "UPDATE"},
            {"situation": "CONFIRMED", "action": "UPDATE"}
        ]
    }]});
    let gw = Gateway::builder()
        .env("LDAP_BIND_PASSWORD", ROOT_PW)
        .conf_file("managed", managed_encrypted())
        .conf_file("provisioner.openicf-ldap", ldap_provisioner(slapd.port()))
        .conf_file("sync", mapping)
        .start()
        .await;
    let binds = |password: &'static str| {
        let gw = &gw;
        async move {
            let r = gw
                .post("/openidm/system/ldap/account?_action=authenticate")
                .json(&json!({"username": "ada", "password": password}))
                .send()
                .await
                .unwrap();
            r.status() == 200
        }
    };
    let r = gw
        .put("/openidm/managed/user/ada")
        .json(
            &json!({"userName": "ada", "givenName": "Ada", "sn": "Lovelace",
                      "mail": "ada@example.com", "password": "Sync-Pw-1!a"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Implicit sync created the account with the decrypted password.
    assert!(
        eventually(Duration::from_secs(20), || binds("Sync-Pw-1!a")).await,
        "{}",
        gw.logs()
    );
    assert!(!binds("Sync-Pw-2!b").await);
    let r = gw
        .request(reqwest::Method::PATCH, "/openidm/managed/user/ada")
        .json(&json!([{"operation": "replace", "field": "/password", "value": "Sync-Pw-2!b"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(20), || binds("Sync-Pw-2!b")).await,
        "{}",
        gw.logs()
    );
    assert!(!binds("Sync-Pw-1!a").await);
    // Reconciliation pushes the same value again.
    let run = recon(&gw, "managedUser_systemLdapAccount").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(run["situationSummary"]["CONFIRMED"], 1, "{run}");
    assert!(binds("Sync-Pw-2!b").await);
    // Neither the plaintext nor the envelope shows over REST or in the logs.
    let (_, v) = json_of(gw.get("/openidm/managed/user/ada").send().await.unwrap()).await;
    assert!(
        !v.to_string().contains("Sync-Pw") && v.get("password").is_none(),
        "{v}"
    );
    assert!(!gw.logs().contains("Sync-Pw"));
}

/// A keystore others may read, or a broken one in the environment: the gateway does not
/// start, and says why without showing a key.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_or_broken_keystore_stops_the_start() {
    let env = r#"{"active": "a", "keys": {"a": "c2hvcnQta2V5LW1hdGVyaWFs"}}"#;
    let (status, log) = Gateway::builder()
        .env(crypto::ENV, env)
        .start_expect_exit(Duration::from_secs(20))
        .await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?} {log}");
    assert!(log.contains("must be 32 bytes in base64"), "{log}");
    assert!(!log.contains("c2hvcnQta2V5"), "{log}");

    let root = tempfile::tempdir().unwrap();
    let (conf, data) = (root.path().join("conf"), root.path().join("data"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    Crypto::open_with(&data, None).unwrap();
    let keystore = data.join(crypto::FILE_NAME);
    std::fs::set_permissions(&keystore, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_idm-gateway"))
        .arg("--conf")
        .arg(&conf)
        .arg("--data")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .env_remove(crypto::ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually(Duration::from_secs(20), || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
