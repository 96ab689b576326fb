//! The LDAP connector against a real, throwaway OpenLDAP ([`common::slapd`]).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::slapd::{
    people_ldif, Slapd, ACCESSLOG, GROUPS, LIMITED_DN, LIMITED_PW, PEOPLE, ROOT_DN, ROOT_PW, SUFFIX,
};
use common::TestPki;
use idm_gateway::config::Trust;
use idm_gateway::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use idm_gateway::system::connector::{
    Connector, ConnectorError, ObjectClass, QueryOptions, SyncDelta, NAME, PASSWORD, UID,
};
use idm_gateway::system::{build_connector, provisioner, Provisioner};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Map, Value};

fn doc(port: u16, extra: Value) -> Value {
    let mut props = json!({
        "host": "127.0.0.1",
        "port": port,
        "principal": ROOT_DN,
        "credentials": ROOT_PW,
        "baseContexts": [SUFFIX],
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!({
        "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
        "poolConfigOption": {"maxObjects": 4},
        "configurationProperties": props,
        "objectTypes": {
            "account": {
                "nativeType": "__ACCOUNT__",
                "properties": {
                    "dn": {"type": "string", "nativeName": "__NAME__", "required": true},
                    "uid": {"type": "string"},
                    "cn": {"type": "string"},
                    "sn": {"type": "string"},
                    "mail": {"type": "string"},
                    "description": {"type": "string"},
                    "telephoneNumber": {"type": "array"},
                    "userPassword": {"type": "string", "nativeName": "__PASSWORD__",
                                     "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                                     "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}
                }
            },
            "group": {
                "nativeType": "__GROUP__",
                "properties": {
                    "dn": {"type": "string", "nativeName": "__NAME__"},
                    "cn": {"type": "string"},
                    "uniqueMember": {"type": "array"}
                }
            }
        }
    })
}

struct Fixture {
    conn: Arc<dyn Connector>,
    p: Provisioner,
}

impl Fixture {
    fn new(slapd: &Slapd) -> Self {
        Self::with(slapd.port(), json!({}))
    }

    fn with(port: u16, extra: Value) -> Self {
        let p = provisioner::parse("ldap", &doc(port, extra)).expect("provisioner parses");
        let conn = build_connector(&p, &Arc::default()).expect("connector builds");
        Fixture { conn, p }
    }

    fn account(&self) -> ObjectClass {
        (**self.p.object_type("account").unwrap()).clone()
    }

    fn group(&self) -> ObjectClass {
        (**self.p.object_type("group").unwrap()).clone()
    }
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn person(uid: &str, cn: &str) -> Map<String, Value> {
    attrs(json!({
        NAME: format!("uid={uid},{PEOPLE}"),
        "uid": uid, "cn": cn, "sn": "Smith", "mail": format!("{uid}@example.com"),
    }))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn cmp(field: &str, op: CompareOp, v: &str) -> QueryFilter {
    QueryFilter::Compare {
        field: JsonPointer::parse(field),
        op,
        value: FilterValue::String(v.into()),
    }
}

async fn query_uids(f: &Fixture, filter: &QueryFilter) -> Vec<String> {
    let page = f
        .conn
        .query(
            &f.account(),
            Some(filter),
            &QueryOptions {
                attributes: names(&["uid"]),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("query {filter:?}: {e}"));
    let mut out: Vec<String> = page
        .objects
        .iter()
        .map(|o| o.attributes["uid"][0].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn crud_and_rename() {
    let slapd = Slapd::start();
    let f = Fixture::new(&slapd);
    let acc = f.account();

    let uid = f
        .conn
        .create(&acc, None, person("jsmith", "James Smith"))
        .await
        .unwrap();
    assert_eq!(uid.len(), 36, "an entryUUID: {uid}");

    let all = names(&[NAME, "uid", "cn", "sn", "mail", "telephoneNumber"]);
    let o = f.conn.read(&acc, &uid, &all).await.unwrap().unwrap();
    assert_eq!(o.uid, uid);
    assert_eq!(o.attributes[NAME], format!("uid=jsmith,{PEOPLE}"));
    assert_eq!(o.attributes["cn"], json!(["James Smith"]));
    assert_eq!(o.attributes["mail"], json!(["jsmith@example.com"]));
    assert!(!o.attributes.contains_key("telephoneNumber"));

    // Update: replace, add a multi-valued attribute, remove one with null.
    let same = f
        .conn
        .update(
            &acc,
            &uid,
            attrs(json!({"telephoneNumber": ["+1 555", 42], "mail": null, "description": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(same, uid);
    let o = f.conn.read(&acc, &uid, &all).await.unwrap().unwrap();
    // LDAP values are a set: compare without order.
    let mut phones: Vec<&str> = o.attributes["telephoneNumber"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    phones.sort();
    assert_eq!(phones, vec!["+1 555", "42"]);
    assert!(!o.attributes.contains_key("mail"));

    // Rename (seed 004): a new __NAME__ and uid.
    let renamed = f
        .conn
        .update(
            &acc,
            &uid,
            attrs(
                json!({NAME: format!("uid=jimmysmith,{PEOPLE}"), "uid": "jimmysmith",
                         "cn": "James Smith"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(renamed, uid, "entryUUID survives a modDN");
    let o = f.conn.read(&acc, &uid, &all).await.unwrap().unwrap();
    assert_eq!(o.attributes[NAME], format!("uid=jimmysmith,{PEOPLE}"));
    assert_eq!(o.attributes["uid"], json!(["jimmysmith"]));

    // Move to another superior.
    f.conn
        .update(
            &acc,
            &uid,
            attrs(json!({NAME: format!("uid=jimmysmith,{SUFFIX}")})),
        )
        .await
        .unwrap();
    let o = f.conn.read(&acc, &uid, &all).await.unwrap().unwrap();
    assert_eq!(o.attributes[NAME], format!("uid=jimmysmith,{SUFFIX}"));

    // Duplicate create.
    f.conn
        .create(&acc, None, person("dup", "Dup"))
        .await
        .unwrap();
    let e = f
        .conn
        .create(&acc, None, person("dup", "Dup"))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");

    f.conn.delete(&acc, &uid).await.unwrap();
    assert_eq!(f.conn.read(&acc, &uid, &all).await.unwrap(), None);
    let e = f.conn.delete(&acc, &uid).await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    let e = f
        .conn
        .update(&acc, &uid, attrs(json!({"cn": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    // A uid that is not even a UUID is simply not found.
    assert_eq!(f.conn.read(&acc, "not-a-uuid", &all).await.unwrap(), None);
}

#[tokio::test]
async fn groups_are_their_own_class() {
    let slapd = Slapd::start();
    let f = Fixture::new(&slapd);
    let member = format!("uid=m,{PEOPLE}");
    f.conn
        .create(&f.account(), None, person("m", "M"))
        .await
        .unwrap();
    let gid = f
        .conn
        .create(
            &f.group(),
            None,
            attrs(json!({NAME: format!("cn=admins,{GROUPS}"), "cn": "admins",
                         "uniqueMember": [member]})),
        )
        .await
        .unwrap();
    let page = f
        .conn
        .query(
            &f.group(),
            None,
            &QueryOptions {
                attributes: names(&["cn", "uniqueMember"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1);
    assert_eq!(page.objects[0].uid, gid);
    assert_eq!(page.objects[0].attributes["uniqueMember"], json!([member]));
    // Accounts do not see the group, groups do not see the account.
    assert_eq!(f.conn.read(&f.account(), &gid, &[]).await.unwrap(), None);
    assert_eq!(query_uids(&f, &QueryFilter::True).await, vec!["m"]);
}

#[tokio::test]
async fn query_operators_and_escaping() {
    let slapd = Slapd::builder()
        .ldif(&people_ldif("p", 0..5))
        .ldif(&format!(
            "dn: uid=star,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: star\ncn: a*b(c)d\\e\nsn: S\n\n"
        ))
        .start();
    let f = Fixture::new(&slapd);
    use CompareOp::*;
    assert_eq!(query_uids(&f, &cmp("uid", Eq, "p3")).await, vec!["p3"]);
    assert_eq!(
        query_uids(&f, &cmp("uid", Sw, "p")).await,
        vec!["p0", "p1", "p2", "p3", "p4"]
    );
    assert_eq!(query_uids(&f, &cmp("mail", Co, "3@exa")).await, vec!["p3"]);
    // Ordering needs an ORDERING rule: entryCSN has one (and grows in load order).
    let csn = slapd.ldapsearch(
        &format!("uid=p2,{PEOPLE}"),
        "(objectClass=*)",
        &["entryCSN"],
    );
    let csn = csn
        .lines()
        .find_map(|l| l.strip_prefix("entryCSN: "))
        .unwrap()
        .to_owned();
    assert_eq!(
        query_uids(&f, &cmp("entryCSN", Ge, &csn)).await,
        vec!["p2", "p3", "p4", "star"]
    );
    assert_eq!(
        query_uids(&f, &cmp("entryCSN", Gt, &csn)).await,
        vec!["p3", "p4", "star"]
    );
    assert_eq!(
        query_uids(&f, &cmp("entryCSN", Le, &csn)).await,
        vec!["p0", "p1", "p2"]
    );
    assert_eq!(
        query_uids(&f, &cmp("entryCSN", Lt, &csn)).await,
        vec!["p0", "p1"]
    );
    assert_eq!(
        query_uids(&f, &QueryFilter::Present(JsonPointer::parse("mail"))).await,
        vec!["p0", "p1", "p2", "p3", "p4"]
    );
    assert_eq!(query_uids(&f, &QueryFilter::True).await.len(), 6);
    assert!(query_uids(&f, &QueryFilter::False).await.is_empty());
    assert_eq!(
        query_uids(
            &f,
            &QueryFilter::And(vec![cmp("uid", Sw, "p"), cmp("sn", Eq, "Sn2")])
        )
        .await,
        vec!["p2"]
    );
    assert_eq!(
        query_uids(
            &f,
            &QueryFilter::Or(vec![cmp("uid", Eq, "p1"), cmp("sn", Eq, "Sn2")])
        )
        .await,
        vec!["p1", "p2"]
    );
    assert_eq!(
        query_uids(
            &f,
            &QueryFilter::And(vec![
                cmp("uid", Sw, "p"),
                QueryFilter::Not(Box::new(cmp("uid", Eq, "p1")))
            ])
        )
        .await,
        vec!["p0", "p2", "p3", "p4"]
    );
    assert_eq!(
        query_uids(
            &f,
            &QueryFilter::In {
                field: JsonPointer::parse("uid"),
                values: names(&["p0", "p4", "nobody"])
            }
        )
        .await,
        vec!["p0", "p4"]
    );
    // Special characters are matched literally, not as wildcards or syntax.
    assert_eq!(
        query_uids(&f, &cmp("cn", Eq, "a*b(c)d\\e")).await,
        vec!["star"]
    );
    assert_eq!(query_uids(&f, &cmp("cn", Co, "*b(c")).await, vec!["star"]);
    assert!(query_uids(&f, &cmp("cn", Eq, "a*")).await.is_empty());
    assert!(query_uids(&f, &cmp("cn", Eq, "*")).await.is_empty());
    // By uid and by DN (a base-scope search).
    let page = f
        .conn
        .query(
            &f.account(),
            Some(&cmp("uid", Eq, "p2")),
            &QueryOptions::default(),
        )
        .await
        .unwrap();
    let uid = page.objects[0].uid.clone();
    let by_uid = f
        .conn
        .query(
            &f.account(),
            Some(&cmp(UID, Eq, &uid)),
            &QueryOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_uid.objects.len(), 1);
    assert_eq!(
        by_uid.objects[0].attributes[NAME],
        format!("uid=p2,{PEOPLE}")
    );
    assert_eq!(
        query_uids(&f, &cmp(NAME, Eq, &format!("uid=p2,{PEOPLE}"))).await,
        vec!["p2"]
    );
    assert!(query_uids(&f, &cmp(NAME, Eq, &format!("uid=zz,{PEOPLE}")))
        .await
        .is_empty());
    assert!(query_uids(&f, &cmp(NAME, Eq, "uid=p2,dc=elsewhere"))
        .await
        .is_empty());
    // A bad attribute name is the caller's error, not an injection.
    let e = f
        .conn
        .query(
            &f.account(),
            Some(&cmp("uid=*)(cn", Eq, "x")),
            &QueryOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
}

#[tokio::test]
async fn paging_across_calls_with_opaque_cookie() {
    let slapd = Slapd::builder().people("u", 250).start();
    let f = Fixture::new(&slapd);
    let mut seen = HashSet::new();
    let mut cookie = None;
    let mut pages = 0;
    loop {
        let page = f
            .conn
            .query(
                &f.account(),
                None,
                &QueryOptions {
                    page_size: 100,
                    cookie: cookie.clone(),
                    attributes: names(&["uid"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        for o in &page.objects {
            assert!(seen.insert(o.uid.clone()), "duplicate {}", o.uid);
        }
        // Interleave other traffic on the pool between pages.
        let _ = query_uids(&f, &cmp("uid", CompareOp::Eq, "u7")).await;
        match page.cookie {
            Some(c) => {
                assert_ne!(Some(&c), cookie.as_ref(), "a new cookie per page");
                assert!(!c.contains("dc="), "opaque: {c}");
                cookie = Some(c);
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);

    // A used or made-up cookie is rejected.
    let first = f
        .conn
        .query(
            &f.account(),
            None,
            &QueryOptions {
                page_size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = first.cookie.unwrap();
    let opts = |c: &str| QueryOptions {
        page_size: 100,
        cookie: Some(c.to_owned()),
        ..Default::default()
    };
    f.conn.query(&f.account(), None, &opts(&c)).await.unwrap();
    for bad in [c.as_str(), "bogus"] {
        let e = f
            .conn
            .query(&f.account(), None, &opts(bad))
            .await
            .unwrap_err();
        match e {
            ConnectorError::InvalidAttribute(m) => assert!(m.contains("cookie"), "{m}"),
            e => panic!("{e:?}"),
        }
    }

    // Offset skips entries; everything at once (page_size 0) with a count.
    let page = f
        .conn
        .query(
            &f.account(),
            None,
            &QueryOptions {
                page_size: 100,
                offset: 200,
                count: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 50);
    assert!(page.cookie.is_none());
    assert_eq!(page.total, Some(250));
    let all = f
        .conn
        .query(
            &f.account(),
            None,
            &QueryOptions {
                count: true,
                offset: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.objects.len(), 240);
    assert_eq!(all.total, Some(250));
}

#[tokio::test]
async fn server_side_sort() {
    let slapd = Slapd::builder().people("s", 12).start();
    let f = Fixture::new(&slapd);
    // uid has no ORDERING rule in OpenLDAP's schema: the server refuses to sort by it.
    let e = f
        .conn
        .query(
            &f.account(),
            None,
            &QueryOptions {
                sort: vec![("uid".into(), true)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");
    // entryCSN has one, and grows in load order (s0, s1, …).
    for (page_size, asc) in [(0, false), (5, true)] {
        let page = f
            .conn
            .query(
                &f.account(),
                None,
                &QueryOptions {
                    page_size,
                    sort: vec![("entryCSN".into(), asc)],
                    attributes: names(&["uid"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let got: Vec<&str> = page
            .objects
            .iter()
            .map(|o| o.attributes["uid"][0].as_str().unwrap())
            .collect();
        let mut want: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        if !asc {
            want.reverse();
        }
        want.truncate(if page_size == 0 { 12 } else { page_size });
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn authenticate_binds_as_the_account() {
    let slapd = Slapd::start();
    let f = Fixture::new(&slapd);
    let mut p = person("bjensen", "Barbara Jensen");
    p.insert(PASSWORD.into(), json!("Passw0rd"));
    let uid = f.conn.create(&f.account(), None, p).await.unwrap();
    assert_eq!(
        f.conn
            .authenticate(&f.account(), "bjensen", "Passw0rd")
            .await
            .unwrap(),
        uid
    );
    for (user, pw) in [
        ("bjensen", "bad-guess-1"),
        ("bjensen", ""),
        ("nobody", "Passw0rd"),
        ("*", "Passw0rd"),
    ] {
        let e = f
            .conn
            .authenticate(&f.account(), user, pw)
            .await
            .unwrap_err();
        match e {
            ConnectorError::InvalidCredential(m) => {
                assert!(!m.contains("Passw0rd") && !m.contains("bad-guess-1"), "{m}")
            }
            e => panic!("{user}/{pw}: {e:?}"),
        }
    }
    // The password is not readable through the connector.
    let o = f
        .conn
        .read(&f.account(), &uid, &names(&[PASSWORD, "userPassword"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!o.attributes.contains_key(PASSWORD));
}

#[tokio::test]
async fn live_sync_returns_each_change_once_in_order() {
    let slapd = Slapd::builder().people("old", 3).start();
    let f = Fixture::new(&slapd);
    let acc = f.account();
    let token = f.conn.latest_sync_token(&acc).await.unwrap();
    assert!(token.is_string(), "{token}");
    let batch = f.conn.sync(&acc, &token, 100).await.unwrap();
    assert!(batch.deltas.is_empty(), "{:?}", batch.deltas);

    let a = f.conn.create(&acc, None, person("a", "A")).await.unwrap();
    let b = f.conn.create(&acc, None, person("b", "B")).await.unwrap();
    f.conn
        .update(&acc, &a, attrs(json!({"description": "changed"})))
        .await
        .unwrap();
    slapd.ldapmodify(&format!(
        "dn: uid=old1,{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: outside\n"
    ));

    // Two at a time, then the rest; no duplicates, oldest change first.
    let first = f.conn.sync(&acc, &token, 2).await.unwrap();
    let uid_of = |d: &SyncDelta| match d {
        SyncDelta::CreateOrUpdate(o) => o.uid.clone(),
        SyncDelta::Delete(u) => panic!("unexpected delete {u}"),
    };
    let first_uids: Vec<String> = first.deltas.iter().map(uid_of).collect();
    assert_eq!(
        first_uids,
        vec![b.clone(), a.clone()],
        "b created, then a updated"
    );
    let rest = f.conn.sync(&acc, &first.token, 100).await.unwrap();
    assert_eq!(rest.deltas.len(), 1);
    match &rest.deltas[0] {
        SyncDelta::CreateOrUpdate(o) => {
            assert_eq!(o.attributes[NAME], format!("uid=old1,{PEOPLE}"));
            assert_eq!(o.attributes["description"], json!(["outside"]));
        }
        d => panic!("{d:?}"),
    }
    let none = f.conn.sync(&acc, &rest.token, 100).await.unwrap();
    assert!(none.deltas.is_empty());
    assert_eq!(none.token, rest.token);

    // Many changes within the same second are all seen exactly once.
    for i in 0..20 {
        f.conn
            .create(&acc, None, person(&format!("burst{i}"), "B"))
            .await
            .unwrap();
    }
    let mut token = none.token;
    let mut seen = Vec::new();
    for _ in 0..30 {
        let batch = f.conn.sync(&acc, &token, 3).await.unwrap();
        if batch.deltas.is_empty() {
            break;
        }
        seen.extend(batch.deltas.iter().map(uid_of));
        token = batch.token;
    }
    assert_eq!(seen.len(), 20);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 20);

    let e = f.conn.sync(&acc, &json!({"x": 1}), 10).await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
}

#[tokio::test]
async fn live_sync_sees_deletes_in_the_accesslog() {
    let slapd = Slapd::builder().people("d", 2).accesslog().start();
    let f = Fixture::with(slapd.port(), json!({"accessLogBase": ACCESSLOG}));
    let acc = f.account();
    let page = f
        .conn
        .query(
            &acc,
            Some(&cmp("uid", CompareOp::Eq, "d0")),
            &QueryOptions::default(),
        )
        .await
        .unwrap();
    let d0 = page.objects[0].uid.clone();
    let gid = f
        .conn
        .create(
            &f.group(),
            None,
            attrs(json!({NAME: format!("cn=g,{GROUPS}"), "cn": "g",
                         "uniqueMember": format!("uid=d1,{PEOPLE}")})),
        )
        .await
        .unwrap();
    let token = f.conn.latest_sync_token(&acc).await.unwrap();

    let n = f
        .conn
        .create(&acc, None, person("new", "New"))
        .await
        .unwrap();
    f.conn.delete(&acc, &d0).await.unwrap();
    f.conn.delete(&f.group(), &gid).await.unwrap();
    f.conn.delete(&acc, &n).await.unwrap();

    let batch = f.conn.sync(&acc, &token, 100).await.unwrap();
    // The create is gone by now (nothing to read); the deletes come in order, and the
    // group's delete is not an account's.
    assert_eq!(
        batch.deltas,
        vec![SyncDelta::Delete(d0.clone()), SyncDelta::Delete(n.clone())]
    );
    let groups = f.conn.sync(&f.group(), &token, 100).await.unwrap();
    assert_eq!(groups.deltas, vec![SyncDelta::Delete(gid)]);
    // Nothing twice.
    let again = f.conn.sync(&acc, &batch.token, 100).await.unwrap();
    assert!(again.deltas.is_empty(), "{:?}", again.deltas);
    // The latest token counts deletes too.
    let latest = f.conn.latest_sync_token(&acc).await.unwrap();
    assert!(f
        .conn
        .sync(&acc, &latest, 100)
        .await
        .unwrap()
        .deltas
        .is_empty());
}

/// A non-root principal whose searches return at most 100 entries, 250 entries in the
/// directory and 550 changes since the token (adds, modifies and logged deletes,
/// interleaved): liveSync reads them window by window, oldest first, each once.
#[tokio::test]
async fn live_sync_pages_through_a_size_limited_principal() {
    let slapd = Slapd::builder()
        .people("pre", 250)
        .size_limited(100)
        .accesslog()
        .start();
    let f = Fixture::with(
        slapd.port(),
        json!({"principal": LIMITED_DN, "credentials": LIMITED_PW,
               "uidAttribute": "uid", "accessLogBase": ACCESSLOG}),
    );
    let acc = f.account();
    // The limit is real: a whole search fails for this principal.
    let whole = f
        .conn
        .query(&acc, None, &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(whole.to_string().contains("size limit"), "{whole}");

    let token = f.conn.latest_sync_token(&acc).await.unwrap();
    let mut ldif = String::new();
    let mut expected = Vec::new();
    for k in 0..300 {
        ldif.push_str(&people_ldif("new", k..k + 1).replacen(
            "objectClass: top",
            "changetype: add\nobjectClass: top",
            1,
        ));
        expected.push(format!("change new{k}"));
        if k < 230 {
            ldif.push_str(&format!(
                "dn: uid=pre{k},{PEOPLE}\nchangetype: modify\nreplace: description\n\
                 description: changed {k}\n\n"
            ));
            expected.push(format!("change pre{k}"));
        }
        if k < 20 {
            ldif.push_str(&format!(
                "dn: uid=pre{},{PEOPLE}\nchangetype: delete\n\n",
                230 + k
            ));
            expected.push(format!("delete pre{}", 230 + k));
        }
    }
    slapd.ldapmodify(&ldif);
    assert!(expected.len() > 500);

    let mut seen = Vec::new();
    let mut token = token;
    for _ in 0..100 {
        let batch = f.conn.sync(&acc, &token, 150).await.unwrap();
        assert!(batch.deltas.len() <= 150);
        if batch.deltas.is_empty() {
            assert_eq!(batch.token, token, "no change, no new token");
            break;
        }
        for d in &batch.deltas {
            seen.push(match d {
                SyncDelta::CreateOrUpdate(o) => format!("change {}", o.uid),
                SyncDelta::Delete(uid) => format!("delete {uid}"),
            });
        }
        token = batch.token;
    }
    assert_eq!(seen, expected);
    // The token is the last change's: the latest token, and nothing is left after it.
    assert_eq!(token, f.conn.latest_sync_token(&acc).await.unwrap());
    let again = f.conn.sync(&acc, &token, 150).await.unwrap();
    assert!(again.deltas.is_empty(), "{:?}", again.deltas);
    // Without a limit per call too.
    let first = f.conn.latest_sync_token(&acc).await.unwrap();
    slapd.ldapmodify(&format!(
        "dn: uid=new0,{PEOPLE}\nchangetype: modify\nreplace: description\ndescription: x\n"
    ));
    let one = f.conn.sync(&acc, &first, 0).await.unwrap();
    assert_eq!(one.deltas.len(), 1);
}

/// The uid values of the entries matching `filter` under `base` as slapd has them (LDIF
/// `attr:: base64` decoded), with their DNs.
fn entries_in_slapd(slapd: &Slapd, base: &str, filter: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let value = |line: &str, attr: &str| -> Option<String> {
        if let Some(b) = line.strip_prefix(&format!("{attr}:: ")) {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
            return Some(String::from_utf8(bytes).unwrap());
        }
        line.strip_prefix(&format!("{attr}: ")).map(str::to_owned)
    };
    let ldif = slapd.ldapsearch(base, filter, &["uid"]);
    ldif.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let dn = e.lines().find_map(|l| value(l, "dn")).unwrap();
            let uid = e.lines().find_map(|l| value(l, "uid")).unwrap_or_default();
            (dn, uid)
        })
        .collect()
}

#[tokio::test]
async fn dns_are_escaped_and_stay_under_the_base_contexts() {
    let slapd = Slapd::start();
    let f = Fixture::with(
        slapd.port(),
        json!({"baseContexts": [PEOPLE], "uidAttribute": "uid"}),
    );
    let acc = f.account();
    let suffix = format!(",{PEOPLE}");
    // An id placed into the DN (no __NAME__) is one RDN value, whatever it holds.
    for name in [
        "a,b",
        "a+b",
        "a=b",
        "a\"b",
        "a\\b",
        " lead",
        "#hash",
        "trail ",
        "x,ou=elsewhere,dc=example,dc=com",
        "y,dc=com",
    ] {
        let uid = f
            .conn
            .create(&acc, Some(name), attrs(json!({"cn": "N", "sn": "S"})))
            .await
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
        assert_eq!(uid, name);
        let found = entries_in_slapd(
            &slapd,
            SUFFIX,
            &format!(
                "(uid={})",
                idm_gateway::system::ldap::escape_filter_value(name)
            ),
        );
        assert_eq!(found.len(), 1, "{name:?}: {found:?}");
        let (dn, value) = &found[0];
        assert_eq!(value, name);
        assert!(dn.ends_with(&suffix), "{name:?} landed at {dn}");
        assert!(!dn[..dn.len() - suffix.len()].contains(",ou="), "{dn}");
        let back = f.conn.read(&acc, name, &names(&["uid"])).await.unwrap();
        assert_eq!(back.unwrap().attributes["uid"], json!([name]));
    }

    // A DN given as __NAME__, escaped by its writer, is taken as written.
    let escaped = format!("uid=q\\,r\\+s,{PEOPLE}");
    let q = f
        .conn
        .create(
            &acc,
            None,
            attrs(json!({NAME: escaped, "uid": "q,r+s", "cn": "Q", "sn": "S"})),
        )
        .await
        .unwrap();
    assert_eq!(q, "q,r+s");

    // A DN outside the base contexts, or no DN at all, is refused and nothing is written.
    let before = entries_in_slapd(&slapd, SUFFIX, "(objectClass=*)");
    for dn in [
        "uid=x,ou=elsewhere".to_owned(),
        format!("uid=x,{GROUPS}"),
        format!("uid=x,{SUFFIX}"),
        format!("uid=x,{PEOPLE},dc=evil"),
        format!("uid=x\\,{PEOPLE}"),
        "not a dn".to_owned(),
        format!("uid=x,,{PEOPLE}"),
        format!("uid=x\\zz,{PEOPLE}"),
    ] {
        let e = f
            .conn
            .create(
                &acc,
                None,
                attrs(json!({NAME: dn, "uid": "x", "cn": "X", "sn": "S"})),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidAttribute(_)),
            "{dn}: {e:?}"
        );
        assert!(e.to_string().contains(&dn), "{e}");
        if !dn.contains("not a dn") && !dn.contains(",,") && !dn.contains("zz") {
            assert!(
                e.to_string().contains(PEOPLE),
                "names the base contexts: {e}"
            );
        }
    }
    // A rename outside the base contexts is refused; the entry stays where it was.
    let e = f
        .conn
        .update(&acc, &q, attrs(json!({NAME: format!("uid=q,{GROUPS}")})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    assert!(
        e.to_string().contains(GROUPS) && e.to_string().contains(PEOPLE),
        "{e}"
    );
    assert_eq!(entries_in_slapd(&slapd, SUFFIX, "(objectClass=*)"), before);
    // A rename within them, escaped, lands where it says.
    f.conn
        .update(
            &acc,
            &q,
            attrs(json!({NAME: format!("uid=t\\2cu,{PEOPLE}"), "uid": "t,u"})),
        )
        .await
        .unwrap();
    let found = entries_in_slapd(&slapd, SUFFIX, "(uid=t,u)");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].0.ends_with(&suffix));
}

#[tokio::test]
async fn error_mapping() {
    let mut slapd = Slapd::start();
    let f = Fixture::new(&slapd);
    let acc = f.account();
    // Missing the required sn: object class violation.
    let mut p = person("nosn", "No Sn");
    p.remove("sn");
    let e = f.conn.create(&acc, None, p).await.unwrap_err();
    match &e {
        ConnectorError::InvalidAttribute(m) => {
            assert!(m.contains("system ldap") && m.contains("uid=nosn"), "{m}")
        }
        e => panic!("{e:?}"),
    }
    // Undefined attribute type.
    let mut p = person("bad", "Bad");
    p.insert("noSuchAttr".into(), json!("x"));
    let e = f.conn.create(&acc, None, p).await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    // Parent does not exist.
    let mut p = person("orphan", "O");
    p.insert(
        NAME.into(),
        json!("uid=orphan,ou=nowhere,dc=example,dc=com"),
    );
    let e = f.conn.create(&acc, None, p).await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    // No DN.
    let e = f
        .conn
        .create(&acc, None, attrs(json!({"cn": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    // A client-chosen entryUUID is refused.
    let e = f
        .conn
        .create(&acc, Some("abc"), person("x", "X"))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");

    // Wrong admin credentials: Unavailable, and the password is never shown.
    let bad = Fixture::with(slapd.port(), json!({"credentials": "wrong-pw-71c3"}));
    for e in [
        bad.conn.read(&acc, "x", &[]).await.unwrap_err(),
        bad.conn.test().await.unwrap_err(),
    ] {
        match &e {
            ConnectorError::Unavailable(m) => {
                assert!(m.contains("cannot bind as the configured principal"), "{m}");
                assert!(!m.contains("wrong-pw-71c3") && !m.contains(ROOT_PW), "{m}");
            }
            e => panic!("{e:?}"),
        }
    }
    // A base context that does not exist fails test().
    let missing = Fixture::with(
        slapd.port(),
        json!({"baseContexts": ["ou=missing,dc=example,dc=com"]}),
    );
    let e = missing.conn.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Config(_)), "{e:?}");
    f.conn.test().await.unwrap();

    // Server down: Unavailable (also for a pooled connection that died).
    f.conn.read(&acc, "x", &[]).await.unwrap();
    slapd.kill();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for e in [
        f.conn.read(&acc, "x", &[]).await.unwrap_err(),
        f.conn.test().await.unwrap_err(),
        f.conn
            .query(&acc, None, &QueryOptions::default())
            .await
            .unwrap_err(),
    ] {
        match &e {
            ConnectorError::Unavailable(m) => {
                assert!(m.contains("system ldap"), "{m}");
                assert!(!m.contains(ROOT_PW), "{m}");
            }
            e => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn operation_timeout() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut d = doc(port, json!({}));
    d["operationTimeout"] = json!({"GET": 300, "TEST": 300});
    let p = provisioner::parse("ldap", &d).unwrap();
    let conn = build_connector(&p, &Arc::default()).unwrap();
    let acc = (**p.object_type("account").unwrap()).clone();
    let started = std::time::Instant::now();
    let e = conn.read(&acc, "x", &[]).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Timeout(_)), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let e = conn.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn schema_from_subschema() {
    let slapd = Slapd::start();
    let f = Fixture::new(&slapd);
    let s = f.conn.schema().await.unwrap();
    let account = &s["account"];
    assert_eq!(account["nativeType"], "__ACCOUNT__");
    assert_eq!(account["id"], "__ACCOUNT__");
    assert_eq!(account["$schema"], "http://json-schema.org/draft-03/schema");
    let props = &account["properties"];
    assert_eq!(
        props["dn"],
        json!({"type": "string", "nativeName": "__NAME__", "nativeType": "string", "required": true})
    );
    assert_eq!(props["cn"]["required"], true);
    assert_eq!(props["sn"]["required"], true);
    assert_eq!(props["cn"]["type"], "array");
    assert_eq!(props["mail"]["type"], "array");
    assert!(props["mail"].get("required").is_none());
    // displayName is SINGLE-VALUE in inetOrgPerson.
    assert_eq!(props["displayName"]["type"], "string");
    assert_eq!(props["userPassword"]["nativeName"], "__PASSWORD__");
    assert_eq!(props["jpegPhoto"]["nativeType"], "JAVA_TYPE_BYTE_ARRAY");
    let group = &s["group"]["properties"];
    assert_eq!(group["uniqueMember"]["required"], true);
    // The result is a valid provisioner objectTypes section.
    let mut d = doc(slapd.port(), json!({}));
    d["objectTypes"] = Value::Object(s);
    provisioner::parse("ldap", &d).expect("the schema parses as objectTypes");
}

#[tokio::test]
async fn new_touches_no_network_and_hides_the_password() {
    // Nothing listens on port 1; new() still succeeds.
    let f = Fixture::with(1, json!({"credentials": "secret-3b1e"}));
    let e = f.conn.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("secret-3b1e"));
    let problems = build_connector(
        &provisioner::parse(
            "ldap",
            &doc(
                389,
                json!({"baseContexts": null, "host": "a b", "credentials": "secret-3b1e"}),
            ),
        )
        .unwrap(),
        &Arc::default(),
    )
    .err()
    .unwrap();
    let all = problems.join("\n");
    assert!(
        all.contains("/configurationProperties/baseContexts"),
        "{all}"
    );
    assert!(all.contains("/configurationProperties/host"), "{all}");
    assert!(!all.contains("secret-3b1e"), "{all}");
}

// --- TLS (ldaps, StartTLS) ---------------------------------------------------------------

/// The trust of a gateway whose `certs/` holds these certificates.
fn trust_of(ders: &[CertificateDer<'static>]) -> Arc<Trust> {
    Arc::new(Trust {
        certificates: ders.iter().map(|d| d.to_vec()).collect(),
        ..Default::default()
    })
}

fn tls_fixture(port: u16, extra: Value, trust: &Arc<Trust>) -> Fixture {
    let p = provisioner::parse("ldap", &doc(port, extra)).expect("provisioner parses");
    let conn = build_connector(&p, trust).expect("connector builds");
    Fixture { conn, p }
}

/// A slapd serving TLS with a certificate of `pki`'s CA for `names`.
fn tls_slapd(pki: &TestPki, names: &[&str]) -> Slapd {
    let (cert, key) = pki.server_cert(names);
    Slapd::builder().people("tls", 2).tls(&cert, &key).start()
}

async fn read_works(f: &Fixture) {
    f.conn.test().await.expect("test over TLS");
    let page = f
        .conn
        .query(
            &f.account(),
            Some(&cmp("uid", CompareOp::Eq, "tls1")),
            &QueryOptions {
                attributes: names(&["uid", "cn"]),
                ..Default::default()
            },
        )
        .await
        .expect("query over TLS");
    assert_eq!(page.objects.len(), 1, "{:?}", page.objects);
    assert_eq!(page.objects[0].attributes["cn"], json!(["tls 1"]));
}

#[tokio::test]
async fn tls_ldaps_and_starttls_trust_the_ca_of_certs() {
    let pki = TestPki::new();
    let slapd = tls_slapd(&pki, &["localhost", "127.0.0.1"]);
    let trust = trust_of(&[pki.ca_der()]);

    // ldaps to an IP address (its SAN), and to a DNS name.
    read_works(&tls_fixture(
        slapd.ldaps_port(),
        json!({"ssl": true}),
        &trust,
    ))
    .await;
    read_works(&tls_fixture(
        slapd.ldaps_port(),
        json!({"ssl": true, "host": "localhost"}),
        &trust,
    ))
    .await;
    // StartTLS on the plain port.
    let f = tls_fixture(slapd.port(), json!({"startTLS": true}), &trust);
    read_works(&f).await;
    // authenticate binds on its own connection: over TLS too.
    f.conn
        .authenticate(&f.account(), "tls0", "wrong-password")
        .await
        .expect_err("no password set");
}

#[tokio::test]
async fn tls_untrusted_ca_fails_naming_tls_and_never_the_password() {
    let pki = TestPki::new();
    let slapd = tls_slapd(&pki, &["localhost", "127.0.0.1"]);
    // Only the platform roots, or an unrelated CA: neither signed slapd's certificate.
    let other = CertificateDer::from_pem_slice(pki.other_ca_pem().as_bytes()).unwrap();
    for trust in [Arc::default(), trust_of(&[other])] {
        for (port, extra) in [
            (slapd.ldaps_port(), json!({"ssl": true})),
            (slapd.port(), json!({"startTLS": true})),
        ] {
            let f = tls_fixture(port, extra.clone(), &trust);
            let e = f.conn.test().await.unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, ConnectorError::Unavailable(_)),
                "{extra}: {e:?}"
            );
            assert!(msg.contains("TLS handshake"), "{msg}");
            assert!(msg.contains("UnknownIssuer"), "{msg}");
            assert!(msg.contains("certs/"), "{msg}");
            assert!(!msg.contains(ROOT_PW), "{msg}");
            let e = f
                .conn
                .query(&f.account(), None, &QueryOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
            assert!(!e.to_string().contains(ROOT_PW), "{e}");
        }
    }
}

#[tokio::test]
async fn tls_wrong_host_name_fails() {
    let pki = TestPki::new();
    // The certificate names another host: trusted CA, wrong name.
    let slapd = tls_slapd(&pki, &["ldap.example.test"]);
    let trust = trust_of(&[pki.ca_der()]);
    for (host, port, extra) in [
        ("127.0.0.1", slapd.ldaps_port(), json!({"ssl": true})),
        ("localhost", slapd.ldaps_port(), json!({"ssl": true})),
        ("127.0.0.1", slapd.port(), json!({"startTLS": true})),
    ] {
        let mut extra = extra;
        extra["host"] = json!(host);
        let f = tls_fixture(port, extra.clone(), &trust);
        let e = f.conn.test().await.unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, ConnectorError::Unavailable(_)),
            "{extra}: {e:?}"
        );
        assert!(msg.contains("TLS handshake"), "{msg}");
        assert!(msg.contains("does not name the configured host"), "{msg}");
        assert!(!msg.contains(ROOT_PW), "{msg}");
    }
}
