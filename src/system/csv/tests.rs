//! The CSV connector against files in a temporary directory.

use super::*;
use crate::crest::filter::parse as parse_filter;
use crate::system::provisioner::{self, ObjectType};

pub(super) fn provisioner_with(props: Value) -> Provisioner {
    provisioner::parse(
        "csv",
        &json!({
            "connectorRef": {
                "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"
            },
            "configurationProperties": props,
        }),
    )
    .expect("provisioner")
}

fn account() -> ObjectType {
    ObjectType::new("account", ACCOUNT, vec![])
}

const HR: &str = "uid,username,firstname,lastname,email,password\n\
    1,bjensen,Barbara,Jensen,bjensen@example.com,Passw0rd\n\
    2,scarter,Sam,Carter,scarter@example.com,\n\
    3,jdoe,John,Doe,,secret\n";

/// A connector over a fresh copy of `content` (uid column `uid`, name `username`,
/// password `password`).
fn setup(content: &str) -> (tempfile::TempDir, PathBuf, CsvConnector) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr.csv");
    fs::write(&path, content).unwrap();
    let c = CsvConnector::new(&provisioner_with(json!({
        "csvFile": path.to_str().unwrap(),
        "headerUid": "uid",
        "headerName": "username",
        "headerPassword": "password",
    })))
    .unwrap();
    (dir, path, c)
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn uids(c: &CsvConnector, filter: &str) -> Vec<String> {
    let f = parse_filter(filter).unwrap();
    let page = c
        .query(&account(), Some(&f), &QueryOptions::default())
        .await
        .unwrap();
    page.objects.into_iter().map(|o| o.uid).collect()
}

#[tokio::test]
async fn crud() {
    let (_dir, path, c) = setup(HR);
    let a = account();
    c.test().await.unwrap();
    let o = c.read(&a, "1", &[]).await.unwrap().unwrap();
    assert_eq!(o.uid, "1");
    assert_eq!(o.attributes["__NAME__"], "bjensen");
    assert_eq!(o.attributes["firstname"], "Barbara");
    assert!(!o.attributes.contains_key("password"));
    let o = c
        .read(
            &a,
            "2",
            &["email".into(), "__PASSWORD__".into(), "password".into()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.attributes, attrs(json!({"email": "scarter@example.com"})));
    assert!(c.read(&a, "9", &[]).await.unwrap().is_none());

    // Create with a given uid, with the uid column, and generated.
    let uid = c
        .create(
            &a,
            Some("4"),
            attrs(
                json!({"__NAME__": "new, \"quoted\"\nuser", "email": ["n@example.com"],
                         "__PASSWORD__": "pw", "lastname": null}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(uid, "4");
    let o = c.read(&a, "4", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["__NAME__"], "new, \"quoted\"\nuser");
    assert_eq!(o.attributes["email"], "n@example.com");
    assert!(!o.attributes.contains_key("lastname"));
    let uid = c
        .create(&a, None, attrs(json!({"uid": "5", "__NAME__": "five"})))
        .await
        .unwrap();
    assert_eq!(uid, "5");
    let uid = c
        .create(&a, None, attrs(json!({"__NAME__": "gen"})))
        .await
        .unwrap();
    assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");

    // Errors.
    let e = c
        .create(&a, Some("1"), attrs(json!({"__NAME__": "dup"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
    let e = c
        .create(&a, Some("6"), attrs(json!({"nosuch": "x"})))
        .await
        .unwrap_err();
    match e {
        ConnectorError::InvalidAttribute(m) => {
            assert!(m.contains("'nosuch'") && m.contains("hr.csv"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    let e = c
        .create(&a, Some("6"), attrs(json!({"email": ["a", "b"]})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c
        .update(&a, "9", attrs(json!({"email": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    assert!(matches!(
        c.delete(&a, "9").await.unwrap_err(),
        ConnectorError::NotFound(_)
    ));
    let group = ObjectType::new("group", "__GROUP__", vec![]);
    assert!(matches!(
        c.read(&group, "1", &[]).await.unwrap_err(),
        ConnectorError::NotSupported(_)
    ));

    // Update: only the given columns; clear with null; rename via the uid column.
    let uid = c
        .update(
            &a,
            "2",
            attrs(json!({"email": null, "firstname": "Samantha"})),
        )
        .await
        .unwrap();
    assert_eq!(uid, "2");
    let o = c.read(&a, "2", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["firstname"], "Samantha");
    assert_eq!(o.attributes["lastname"], "Carter");
    assert!(!o.attributes.contains_key("email"));
    let uid = c
        .update(&a, "2", attrs(json!({"uid": "22"})))
        .await
        .unwrap();
    assert_eq!(uid, "22");
    assert!(c.read(&a, "2", &[]).await.unwrap().is_none());
    let e = c
        .update(&a, "22", attrs(json!({"uid": "1"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");

    c.delete(&a, "22").await.unwrap();
    assert!(c.read(&a, "22", &[]).await.unwrap().is_none());

    // The file is still valid CSV with the same header, and a new connector reads it.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("uid,username,firstname,lastname,email,password\n"));
    let (_d2, _p2, c2) = setup(&text);
    let o = c2.read(&a, "4", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["__NAME__"], "new, \"quoted\"\nuser");
}

#[tokio::test]
async fn uid_is_name_when_same_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.csv");
    fs::write(&path, "uid;mail\r\n'a;b';a@x\r\n").unwrap();
    let c = CsvConnector::new(&provisioner_with(json!({
        "csvFile": path.to_str().unwrap(),
        "fieldDelimiter": ";",
        "quoteCharacter": "'",
        "newlineString": "\r\n",
    })))
    .unwrap();
    let a = account();
    let o = c.read(&a, "a;b", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["__NAME__"], "a;b");
    let uid = c
        .create(&a, None, attrs(json!({"__NAME__": "carol", "mail": "c@x"})))
        .await
        .unwrap();
    assert_eq!(uid, "carol");
    let uid = c
        .update(&a, "carol", attrs(json!({"__NAME__": "caroline"})))
        .await
        .unwrap();
    assert_eq!(uid, "caroline");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, "uid;mail\r\n'a;b';a@x\r\ncaroline;c@x\r\n");
    let e = c.authenticate(&a, "caroline", "x").await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");
}

#[tokio::test]
async fn every_filter_operator() {
    let (_dir, _path, c) = setup(
        "uid,username,firstname,lastname,email,password\n\
         1,alice,Alice,Zed,alice@x.com,\n\
         2,bob,Bob,Young,,\n\
         3,carol,Carol,Xu,carol@y.org,\n",
    );
    let cases: &[(&str, &[&str])] = &[
        ("true", &["1", "2", "3"]),
        ("false", &[]),
        ("__UID__ eq '2'", &["2"]),
        ("__NAME__ eq 'carol'", &["3"]),
        ("username eq 'bob'", &["2"]),
        ("email co '@x'", &["1"]),
        ("firstname sw 'Ca'", &["3"]),
        ("lastname gt 'Xu'", &["1", "2"]),
        ("lastname ge 'Xu'", &["1", "2", "3"]),
        ("lastname lt 'Young'", &["3"]),
        ("lastname le 'Young'", &["2", "3"]),
        ("email pr", &["1", "3"]),
        ("!(email pr)", &["2"]),
        ("password pr", &[]),
        ("username eq 'alice' or username eq 'bob'", &["1", "2"]),
        ("email pr and firstname sw 'A'", &["1"]),
        (r#"username in '["bob","carol","nobody"]'"#, &["2", "3"]),
        ("nosuch eq 'x'", &[]),
    ];
    for (filter, want) in cases {
        assert_eq!(uids(&c, filter).await, *want, "{filter}");
    }
}

#[tokio::test]
async fn paging_sorting_counting_and_cache() {
    let mut content = String::from("uid,username,n,password\n");
    for i in 0..25 {
        content.push_str(&format!("u{i:02},name{},{},\n", 24 - i, i % 3));
    }
    let (_dir, _path, c) = setup(&content);
    let a = account();
    // Pages across separate calls until the end, no duplicates, file order.
    let mut seen = Vec::new();
    let mut cookie = None;
    let mut pages = 0;
    loop {
        let page = c
            .query(
                &a,
                None,
                &QueryOptions {
                    page_size: 7,
                    cookie: cookie.clone(),
                    count: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        assert_eq!(page.total, Some(25));
        seen.extend(page.objects.into_iter().map(|o| o.uid));
        assert_eq!(page.remaining, Some(25 - seen.len() as i64));
        match page.cookie {
            Some(next) => cookie = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let want: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
    assert_eq!(seen, want);
    // Only one parse for all those pages: the file did not change.
    assert_eq!(c.parses(), 1);

    // Offset, sort descending on one column then ascending on another.
    let page = c
        .query(
            &a,
            None,
            &QueryOptions {
                page_size: 3,
                offset: 2,
                sort: vec![("n".into(), false), ("__NAME__".into(), true)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<_> = page.objects.iter().map(|o| o.uid.as_str()).collect();
    // n=2: u02 (name22), u05 (name19), u08, u11, u14, u17, u20, u23 → by name:
    // name1(u23), name10(u14), name13(u11), name16(u08), name19(u05), name22(u02), name4(u20), name7(u17)
    assert_eq!(got, vec!["u11", "u08", "u05"]);
    let e = c
        .query(
            &a,
            None,
            &QueryOptions {
                sort: vec![("password".into(), true)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c
        .query(
            &a,
            None,
            &QueryOptions {
                page_size: 2,
                cookie: Some("garbage!".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");

    // Paging with a filter and a delete between pages: no duplicates, nothing skipped.
    let f = parse_filter("n eq '1'").unwrap();
    let opts = QueryOptions {
        page_size: 3,
        ..Default::default()
    };
    let p1 = c.query(&a, Some(&f), &opts).await.unwrap();
    let first: Vec<_> = p1.objects.iter().map(|o| o.uid.clone()).collect();
    assert_eq!(first, ["u01", "u04", "u07"]);
    c.delete(&a, "u04").await.unwrap();
    let p2 = c
        .query(
            &a,
            Some(&f),
            &QueryOptions {
                cookie: p1.cookie,
                ..opts.clone()
            },
        )
        .await
        .unwrap();
    let second: Vec<_> = p2.objects.iter().map(|o| o.uid.clone()).collect();
    assert_eq!(second, ["u10", "u13", "u16"]);
}

#[tokio::test]
async fn authenticate_plain_password() {
    let (_dir, _path, c) = setup(HR);
    let a = account();
    assert_eq!(
        c.authenticate(&a, "bjensen", "Passw0rd").await.unwrap(),
        "1"
    );
    assert_eq!(c.authenticate(&a, "3", "secret").await.unwrap(), "3");
    for (user, pw) in [("bjensen", "wrong"), ("nobody", "x"), ("scarter", "")] {
        let e = c.authenticate(&a, user, pw).await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidCredential(_)),
            "{user}: {e:?}"
        );
    }
}

#[tokio::test]
async fn malformed_and_missing_files_are_errors_not_panics() {
    let (_dir, path, c) = setup("uid,username,password\n1,a,x\n2,b\n");
    let e = c.read(&account(), "1", &[]).await.unwrap_err();
    match e {
        ConnectorError::Other(m) => assert!(m.contains("hr.csv is not valid CSV"), "{m}"),
        e => panic!("{e:?}"),
    }
    fs::write(&path, "uid,username,password\n1,a,x\n1,b,y\n").unwrap();
    let e = c.test().await.unwrap_err();
    assert!(e.to_string().contains("more than one record"), "{e}");
    fs::write(&path, "id,username,password\n1,a,x\n").unwrap();
    let e = c.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Config(ref m) if m.contains("no column 'uid'")));
    fs::write(&path, b"uid,username,password\n1,\xff,x\n").unwrap();
    assert!(c.test().await.is_err());
    fs::write(&path, "").unwrap();
    assert!(c.test().await.is_err());
    fs::remove_file(&path).unwrap();
    let e = c.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn schema_from_header() {
    let (_dir, _path, c) = setup(HR);
    let s = c.schema().await.unwrap();
    let props = s["account"]["properties"].as_object().unwrap();
    assert_eq!(s["account"]["nativeType"], ACCOUNT);
    assert_eq!(props["username"]["nativeName"], NAME);
    assert_eq!(props["password"]["nativeName"], PASSWORD);
    assert_eq!(props["email"]["nativeName"], "email");
    assert!(!props.contains_key("uid"));
    // The schema is one provisioner objectTypes entry.
    let p = provisioner::parse(
        "csv",
        &json!({"connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
                "objectTypes": s}),
    )
    .unwrap();
    assert_eq!(p.object_types[0].name_property().unwrap().name, "username");
}

#[tokio::test]
async fn live_sync_create_update_delete() {
    let (dir, path, c) = setup(HR);
    let a = account();
    let t0 = c.latest_sync_token(&a).await.unwrap();
    // Unchanged: the same token, no deltas.
    assert_eq!(c.latest_sync_token(&a).await.unwrap(), t0);
    let b = c.sync(&a, &t0, 100).await.unwrap();
    assert!(b.deltas.is_empty());
    assert_eq!(b.token, t0);

    c.create(&a, Some("4"), attrs(json!({"__NAME__": "new"})))
        .await
        .unwrap();
    c.update(&a, "1", attrs(json!({"email": "b@new"})))
        .await
        .unwrap();
    c.delete(&a, "2").await.unwrap();
    // An edit by someone else, in place.
    let text = fs::read_to_string(&path).unwrap().replace("John", "Johnny");
    fs::write(&path, text).unwrap();

    let b = c.sync(&a, &t0, 100).await.unwrap();
    let mut creates: Vec<_> = b
        .deltas
        .iter()
        .filter_map(|d| match d {
            SyncDelta::CreateOrUpdate(o) => Some(o.uid.clone()),
            _ => None,
        })
        .collect();
    creates.sort();
    assert_eq!(creates, ["1", "3", "4"]);
    assert!(b.deltas.contains(&SyncDelta::Delete("2".into())));
    let updated = b
        .deltas
        .iter()
        .find_map(|d| match d {
            SyncDelta::CreateOrUpdate(o) if o.uid == "1" => Some(o.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(updated.attributes["email"], "b@new");
    assert!(!updated.attributes.contains_key("password"));
    let t1 = b.token;
    assert_ne!(t1, t0);
    assert!(c.sync(&a, &t1, 100).await.unwrap().deltas.is_empty());

    // A batch limit: the token after a partial batch leads to the rest, nothing twice.
    for i in 10..15 {
        c.create(&a, Some(&i.to_string()), Map::new())
            .await
            .unwrap();
    }
    c.delete(&a, "3").await.unwrap();
    let mut token = t1.clone();
    let mut all = Vec::new();
    for _ in 0..10 {
        let b = c.sync(&a, &token, 2).await.unwrap();
        assert!(b.deltas.len() <= 2);
        token = b.token;
        if b.deltas.is_empty() {
            break;
        }
        all.extend(b.deltas);
    }
    let names: Vec<String> = all
        .iter()
        .map(|d| match d {
            SyncDelta::CreateOrUpdate(o) => format!("+{}", o.uid),
            SyncDelta::Delete(u) => format!("-{u}"),
        })
        .collect();
    assert_eq!(names, ["+10", "+11", "+12", "+13", "+14", "-3"]);

    // Old snapshots are pruned to syncFileRetentionCount (3).
    let snaps = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("hr.csv.sync.")
        })
        .count();
    assert_eq!(snaps, 3);
    let e = c.sync(&a, &t0, 10).await.unwrap_err();
    assert!(e.to_string().contains("is gone"), "{e}");
    let e = c.sync(&a, &json!({"x": 1}), 10).await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    // A null token starts from now.
    let b = c.sync(&a, &Value::Null, 10).await.unwrap();
    assert!(b.deltas.is_empty() && b.token.is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_atomic_and_none_is_lost() {
    let (dir, path, c) = setup("uid,username,password\n");
    let c = Arc::new(c);
    // A stray temporary file from an interrupted write is never read.
    fs::write(
        dir.path().join(".hr.csv.deadbeef.tmp"),
        "uid,garbage\n\"unterminated",
    )
    .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let path = path.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(AtomicOrdering::Relaxed) {
                let bytes = fs::read(&path).unwrap();
                let mut r = csv::Reader::from_reader(bytes.as_slice());
                assert_eq!(r.headers().unwrap().len(), 3);
                for rec in r.records() {
                    assert_eq!(rec.expect("a torn file").len(), 3);
                }
                reads += 1;
            }
            reads
        })
    };
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..50 {
                let uid = format!("t{t}-{i}");
                let got = c
                    .create(&account(), Some(&uid), attrs(json!({"__NAME__": uid})))
                    .await
                    .unwrap();
                done.push(got);
                if i % 10 == 0 {
                    // Queries interleave with the writes and see whole files.
                    c.query(&account(), None, &QueryOptions::default())
                        .await
                        .unwrap();
                }
            }
            done
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    stop.store(true, AtomicOrdering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(acked.len(), 400);
    let page = c
        .query(&account(), None, &QueryOptions::default())
        .await
        .unwrap();
    let present: HashSet<_> = page.objects.into_iter().map(|o| o.uid).collect();
    for uid in &acked {
        assert!(present.contains(uid), "{uid} lost");
    }
    assert_eq!(present.len(), 400);
    // Only the stray file is left besides the CSV file: no temporary file of ours.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A fresh connector (cold cache) parses the same 400 rows.
    let (_d, _p, c2) = setup(&fs::read_to_string(&path).unwrap());
    let page = c2
        .query(
            &account(),
            None,
            &QueryOptions {
                count: true,
                page_size: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, Some(400));
}
