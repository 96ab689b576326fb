use crate::sync::hooks::Scripts;

impl Mapping {
    fn action(&self, s: Situation) -> Action {
        self.action_for(s, None, None, &Scripts::NONE).unwrap().0
    }
}
use super::*;
use serde_json::json;

fn base() -> Value {
    json!({"name": "u2o", "source": "managed/user", "target": "managed/other"})
}

fn with(extra: Value) -> Value {
    let mut doc = base();
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

fn one(doc: Value) -> Mapping {
    parse_mapping(&doc, None, "").unwrap_or_else(|p| panic!("{p:?}"))
}

fn problems(doc: Value) -> Vec<String> {
    parse_mapping(&doc, None, "").unwrap_err()
}

#[test]
fn queued_sync_is_checked_at_load() {
    let m = one(with(
        json!({"queuedSync": {"maxRetries": 2, "retryDelay": 50}}),
    ));
    assert_eq!(m.retry.failure.max_retries, Some(2));
    let p = problems(with(json!({"queuedSync": {"retryDelay": "soon"}})));
    assert!(
        p.iter().any(|m| m.contains("queuedSync: retryDelay")),
        "{p:?}"
    );
}

#[test]
fn defaults() {
    let m = one(base());
    assert_eq!(m.task_threads, 10);
    assert_eq!(m.page_size, 1000);
    assert!(
        !m.clustered,
        "clusteredSourceReconEnabled is off by default"
    );
    assert!(m.run_target_phase && m.enable_sync);
    assert!(!m.correlate_empty_target_set && !m.prefetch_links);
    assert_eq!(
        (m.source_query.as_str(), m.target_query.as_str()),
        ("true", "true")
    );
    assert_eq!(m.action(Situation::Absent), Action::Create);
    assert_eq!(m.action(Situation::Ambiguous), Action::Exception);
    assert_eq!(m.link_type(), "u2o");
}

#[test]
fn policies_override_defaults_only_where_listed() {
    let m = one(with(json!({"policies": [
        {"situation": "SOURCE_MISSING", "action": "DELETE"},
        {"situation": "UNASSIGNED", "action": "UNLINK"}]})));
    assert_eq!(m.action(Situation::SourceMissing), Action::Delete);
    assert_eq!(m.action(Situation::Unassigned), Action::Unlink);
    assert_eq!(m.action(Situation::Confirmed), Action::Update);
}

/// IDM's policy conditions: the first policy of a situation whose condition holds on
/// `{object: <source>, linkQualifier}` (or that has none) decides; else the default.
#[test]
fn policy_conditions_pick_the_first_that_holds() {
    let m = one(with(json!({"policies": [
        {"situation": "UNQUALIFIED", "action": "UNLINK",
         "condition": "/object/accountStatus eq \"inactive\""},
        {"situation": "UNQUALIFIED", "action": "IGNORE",
         "condition": {"_queryFilter": "/object/keep eq true"}},
        {"situation": "CONFIRMED", "action": "IGNORE"}]})));
    let inactive = json!({"accountStatus": "inactive", "keep": true});
    let kept = json!({"accountStatus": "x", "keep": true});
    let other = json!({"accountStatus": "x"});
    assert_eq!(
        m.action_for(
            Situation::Unqualified,
            Some(&inactive),
            None,
            &Scripts::NONE
        )
        .unwrap()
        .0,
        Action::Unlink
    );
    assert_eq!(
        m.action_for(Situation::Unqualified, Some(&kept), None, &Scripts::NONE)
            .unwrap()
            .0,
        Action::Ignore
    );
    assert_eq!(
        m.action_for(Situation::Unqualified, Some(&other), None, &Scripts::NONE)
            .unwrap()
            .0,
        Action::Delete
    );
    assert_eq!(
        m.action_for(Situation::Unqualified, None, None, &Scripts::NONE)
            .unwrap()
            .0,
        Action::Delete
    );
    assert_eq!(
        m.action_for(Situation::Confirmed, Some(&other), None, &Scripts::NONE)
            .unwrap()
            .0,
        Action::Ignore
    );

    let p = problems(with(json!({"policies": [
        {"situation": "ABSENT", "action": "IGNORE"},
        {"situation": "ABSENT", "action": "CREATE", "condition": "/object/a pr"},
        {"situation": "FOUND", "action": "LINK", "condition": "a pr"},
        {"situation": "FOUND", "action": "LINK", "condition": {"type": "text/javascript", "source": "source.a &&"}}]})));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].starts_with("policies[1]: situation ABSENT is already decided by policies[0]"));
    assert!(p[1].contains("IDM's form: /object/a pr"), "{p:?}");
    assert!(
        p[2].contains("policies[3].condition") && p[2].contains("line 1"),
        "{p:?}"
    );
}

#[test]
fn correlation_array_form_as_the_admin_ui_writes_it() {
    let m = one(with(json!({"correlationQuery": [{
        "linkQualifier": "default",
        "expressionTree": {"all": ["mail", {"any": ["userName", "sn"]}]},
        "mapping": "u2o", "type": "text/javascript", "file": "ui/correlateTreeToQueryFilter.js"}],
        "properties": [{"source": "email", "target": "mail"}, {"source": "sn", "target": "sn"}]})));
    let source = json!({"email": "a@x", "userName": "alice"});
    let mapped = m.map_properties(&source, None, &Scripts::NONE).unwrap();
    let f = m
        .correlation
        .as_ref()
        .unwrap()
        .filter_for(&source, &mapped)
        .unwrap();
    // mail is mapped (from email); userName is not mapped, so the source's; sn is mapped
    // to null, so it is left out of the `any`.
    assert_eq!(f.to_string(), r#"/mail eq "a@x" and /userName eq "alice""#);
    // A missing value in `all`: no candidate.
    let src = json!({"userName": "alice"});
    assert_eq!(
        m.correlation
            .as_ref()
            .unwrap()
            .filter_for(&src, &m.map_properties(&src, None, &Scripts::NONE).unwrap()),
        None
    );
}

#[test]
fn correlation_single_object_form() {
    let m = one(with(
        json!({"correlationQuery": {"expressionTree": {"any": ["mail", "userName"]}}}),
    ));
    let source = json!({"userName": "bob", "age": 3});
    let f = m
        .correlation
        .as_ref()
        .unwrap()
        .filter_for(&source, &Map::new())
        .unwrap();
    assert_eq!(f.to_string(), r#"/userName eq "bob""#);
    let m = one(with(
        json!({"correlationQuery": {"expressionTree": {"all": ["age"]}}}),
    ));
    assert_eq!(
        m.correlation
            .unwrap()
            .filter_for(&source, &Map::new())
            .unwrap()
            .to_string(),
        "/age eq 3"
    );
}

#[test]
fn correlation_query_filter_template_escapes_values() {
    let m = one(with(json!({"correlationQuery":
        {"_queryFilter": "mail eq \"${source.mail}\" and name/given eq \"${source.name.given}\""}})));
    let c = m.correlation.unwrap();
    let source = json!({"mail": "a\"b\\c@x", "name": {"given": "Ann"}});
    let f = c.filter_for(&source, &Map::new()).unwrap();
    assert_eq!(
        f.to_string(),
        r#"/mail eq "a\"b\\c@x" and /name/given eq "Ann""#
    );
    assert!(f.matches(&json!({"mail": "a\"b\\c@x", "name": {"given": "Ann"}})));
    assert_eq!(c.filter_for(&json!({"mail": "m"}), &Map::new()), None);
}

#[test]
fn script_forms_are_parsed_and_broken_ones_refused_with_their_line() {
    let js = |src: &str| json!({"type": "text/javascript", "source": src});
    let m = one(with(json!({
        "correlationQuery": js("({_queryFilter: 'mail eq \"' + source.mail + '\"'})"),
        "validSource": js("source.active === true"),
        "validTarget": js("true"),
        "properties": [{"source": "uid", "target": "x", "transform": js("source.toUpperCase()")},
                       {"target": "y", "condition": js("object.y != null"), "source": "y"}],
        "policies": [{"situation": "ABSENT", "action": js("'CREATE'"), "postAction": js("1")}],
        "onCreate": js("target.cn = source.uid;"),
        "onLink": js("1"),
        "result": js("1")})));
    assert!(m.scripted);
    assert!(matches!(m.correlation, Some(Correlation::Query(_))));
    assert!(m.valid_source.as_ref().is_some_and(Check::is_script));
    assert!(matches!(
        m.properties[0].transform,
        Some(Transform::Script(_))
    ));
    assert!(m.action_is_scripted(Situation::Absent));
    assert!(!m.action_is_scripted(Situation::Found));
    assert!(m.post_action(Situation::Absent, Some(0)).is_some());
    assert!(m.hooks.on_create.is_some() && m.hooks.on_link.is_some() && m.hooks.result.is_some());
    assert!(m.hooks.on_update.is_none());

    let m = one(with(json!({"correlationScript": js("[]")})));
    assert!(matches!(m.correlation, Some(Correlation::Candidates(_))));
    // A mapping with hooks only needs no preparation on the engine.
    assert!(!one(with(json!({"onCreate": js("1")}))).scripted);

    let p = problems(with(json!({
        "correlationQuery": js("var q = {;"),
        "properties": [{"target": "y", "condition": {"type": "groovy", "source": "true"}}],
        "onUpdate": js("\n\ntarget.x = ("),
        "sourceQuery": js("1")})));
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(
        p.iter()
            .any(|m| m.contains("correlationQuery") && m.contains("line 1")),
        "{p:#?}"
    );
    assert!(p.iter().any(|m| m.contains("Groovy")), "{p:#?}");
    assert!(
        p.iter()
            .any(|m| m.contains("onUpdate") && m.contains("line 3")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("'sourceQuery' cannot be a script")),
        "{p:#?}"
    );
    let p = problems(with(json!({"correlationQuery": {"_queryFilter": "true"},
        "correlationScript": js("[]")})));
    assert!(p[0].contains("exclusive"), "{p:#?}");
}

#[test]
fn a_bad_file_reports_every_problem() {
    let doc = json!({"mappings": [
        {"name": "ok", "source": "managed/user", "target": "managed/other"},
        {"name": "bad", "source": "managed/../x", "taskThreads": 0,
         "reconSourceQueryPageSize": "big", "validTarget": "mail eq",
         "policies": [{"situation": "NOPE", "action": "CREATE"},
                      {"situation": "ABSENT", "action": "MAKE"}],
         "properties": [{"source": "a"}],
         "correlationQuery": {"expressionTree": {"some": ["a"]}}},
        {"source": "managed/user", "target": "managed/other"},
        {"name": "ok", "source": "managed/user", "target": "managed/other"}]});
    let p = parse_sync(&doc).unwrap_err();
    let expect = [
        "mappings[1] ('bad'): 'source' must be a resource path",
        "mappings[1] ('bad'): 'target' is required",
        "mappings[1] ('bad'): properties[0]: 'target' is required",
        "mappings[1] ('bad'): 'correlationQuery.expressionTree': 'some' is not 'all' or 'any'",
        "mappings[1] ('bad'): 'validTarget' is not a valid _queryFilter",
        "mappings[1] ('bad'): policies[0]: unknown situation 'NOPE'",
        "mappings[1] ('bad'): policies[1]: unknown action 'MAKE'",
        "mappings[1] ('bad'): 'taskThreads' must be a whole number from 1 to 64",
        "mappings[1] ('bad'): 'reconSourceQueryPageSize' must be a whole number",
        "mappings[2]: 'name' is required",
        "mappings[3] ('ok'): the name 'ok' is used twice",
    ];
    for e in expect {
        assert!(
            p.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
}

#[test]
fn mapping_files_take_their_name_from_the_file() {
    let doc = json!({"source": "managed/user", "target": "managed/other"});
    let ms = parse_config("mapping/u2o", &doc).unwrap();
    assert_eq!(ms[0].name, "u2o");
    assert_eq!(ms[0].raw["name"], "u2o");
    let p = parse_config("mapping/u2o", &with(json!({"name": "other"}))).unwrap_err();
    assert!(p[0].contains("the file defines mapping 'u2o'"), "{p:?}");
    assert!(is_mapping_config("sync") && is_mapping_config("mapping/x"));
    assert!(!is_mapping_config("managed") && !is_mapping_config("mappings"));
    assert_eq!(parse_sync(&json!({"mappings": []})).unwrap().len(), 0);
}

#[test]
fn queries_and_qualification_filters() {
    let m = one(with(json!({
        "sourceQuery": {"_queryFilter": "accountStatus eq \"active\""},
        "targetQuery": {"_queryId": "query-all-ids"},
        "validSource": "/source/mail pr",
        "validTarget": "/target/mail pr",
        "sourceCondition": {"_queryFilter": "/source/userName sw \"a\""}})));
    assert_eq!(m.source_query, "accountStatus eq \"active\"");
    assert_eq!(m.target_query, "true");
    assert!(m
        .source_qualifies(&json!({"mail": "x", "userName": "ann"}), &Scripts::NONE)
        .unwrap());
    assert!(!m
        .source_qualifies(&json!({"mail": "x", "userName": "bob"}), &Scripts::NONE)
        .unwrap());
    assert!(!m
        .source_qualifies(&json!({"userName": "ann"}), &Scripts::NONE)
        .unwrap());
    assert!(m
        .target_qualifies(&json!({"mail": "x"}), &Scripts::NONE)
        .unwrap());
    assert!(!m
        .target_qualifies(&json!({"sn": "x"}), &Scripts::NONE)
        .unwrap());
    let p = problems(with(json!({"sourceQuery": {"_queryId": "for-userName"}})));
    assert!(p[0].contains("not supported"), "{p:?}");
}

#[test]
fn link_qualifiers_other_than_default_are_refused_not_ignored() {
    one(with(json!({"linkQualifiers": ["default"]})));
    for lq in [
        json!(["employee", "contractor"]),
        json!({"type": "text/javascript", "source": "['a']"}),
    ] {
        let p = problems(with(json!({"linkQualifiers": lq})));
        assert!(p.iter().any(|m| m.contains("linkQualifiers")), "{p:?}");
    }
}

#[test]
fn property_mapping_forms() {
    let m = one(with(json!({"properties": [
        {"source": "userName", "target": "userName"},
        {"source": "mail", "target": "contact/mail", "transform": {"type": "lowercase"}},
        {"target": "displayName", "transform": {"type": "template", "source": "${source.givenName} ${source.sn}"}},
        {"source": "status", "target": "accountStatus",
         "transform": {"type": "map", "values": {"A": "active", "I": "inactive"}, "default": "unknown"}},
        {"source": "missing", "target": "password", "default": "Passw0rd"},
        {"source": "", "target": "copy", "condition": "/object/copyMe eq true"},
        {"source": "sn", "target": "sn", "condition": "/object/sn pr"}]})));
    let src = json!({"userName": "ann", "mail": "Ann@X.org", "givenName": "Ann", "sn": "Lee",
                     "status": "Z"});
    let out = Value::Object(m.map_properties(&src, None, &Scripts::NONE).unwrap());
    assert_eq!(
        out,
        json!({"userName": "ann", "contact": {"mail": "ann@x.org"},
        "displayName": "Ann Lee", "accountStatus": "unknown", "password": "Passw0rd",
        "sn": "Lee"})
    );
    let src = json!({"copyMe": true, "status": "A"});
    let out = m.map_properties(&src, None, &Scripts::NONE).unwrap();
    assert_eq!(out["copy"], src);
    assert_eq!(out["accountStatus"], "active");
    assert_eq!(out["userName"], Value::Null);
    assert_eq!(out["displayName"], Value::Null);
    assert!(!out.contains_key("sn"));
}

/// A value placed into a DN by a template is one RFC 4514 attribute value: it can neither
/// add an RDN nor move the entry to another branch.
#[test]
fn dn_templates_escape_their_values() {
    let dn = |extra: Value| {
        let mut t = json!({"type": "template", "source": "uid=${source.userName},ou=people,dc=example,dc=com"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"properties": [{"target": "__NAME__", "transform": t.clone()},
                              {"target": "dn", "transform": t.clone()},
                              {"target": "description", "transform": t}]})
    };
    let src = json!({"userName": "x,ou=admins+cn=root"});
    let out = one(with(dn(json!({}))))
        .map_properties(&src, None, &Scripts::NONE)
        .unwrap();
    // ldap3's escaping: RFC 4514's hex pairs (`\2c` for `,`), `=` escaped too.
    let escaped = "uid=x\\2cou\\3dadmins\\2bcn\\3droot,ou=people,dc=example,dc=com";
    assert_eq!(out["__NAME__"], escaped);
    assert_eq!(out["dn"], escaped);
    assert_eq!(
        out["description"],
        "uid=x,ou=admins+cn=root,ou=people,dc=example,dc=com"
    );
    let out = one(with(dn(json!({"escape": "dn"}))))
        .map_properties(&src, None, &Scripts::NONE)
        .unwrap();
    assert_eq!(out["description"], escaped);
    let out = one(with(dn(json!({"escape": "none"}))))
        .map_properties(&src, None, &Scripts::NONE)
        .unwrap();
    assert_eq!(
        out["dn"],
        "uid=x,ou=admins+cn=root,ou=people,dc=example,dc=com"
    );
    let p = problems(with(dn(json!({"escape": "url"}))));
    assert!(p.iter().any(|m| m.contains("'escape' must be")), "{p:?}");
}

/// IDM's documented form works; the bare form, which never matched anything on IDM's
/// scope (and made every linked source UNQUALIFIED → DELETE), is refused at load.
#[test]
fn qualification_filters_use_idm_s_scope_and_bare_pointers_are_refused() {
    let m = one(with(
        json!({"sourceCondition": "/source/accountStatus eq \"active\""}),
    ));
    assert!(m
        .source_qualifies(&json!({"accountStatus": "active"}), &Scripts::NONE)
        .unwrap());
    assert!(!m
        .source_qualifies(&json!({"accountStatus": "inactive"}), &Scripts::NONE)
        .unwrap());

    let doc = json!({"mappings": [with(json!({
        "sourceCondition": "accountStatus eq \"active\"",
        "validSource": {"_queryFilter": "/source/mail pr"},
        "validTarget": "mail pr",
        "properties": [{"source": "", "target": "copy", "condition": "copyMe eq true"}]}))]});
    let p = parse_sync(&doc).unwrap_err();
    let expect = [
        "mappings[0] ('u2o'): properties[0]: 'condition': '/copyMe' cannot match anything: \
         mapping 'u2o' evaluates this filter on {\"object\": …, \"source\": …, \
         \"linkQualifier\": …}, as IDM does; write it in IDM's form: /object/copyMe eq true",
        "mappings[0] ('u2o'): 'validTarget': '/mail' cannot match anything: mapping 'u2o' \
         evaluates this filter on {\"target\": …, \"linkQualifier\": …}, as IDM does; write \
         it in IDM's form: /target/mail pr",
        "mappings[0] ('u2o'): 'sourceCondition': '/accountStatus' cannot match anything: \
         mapping 'u2o' evaluates this filter on {\"source\": …, \"linkQualifier\": …}, as \
         IDM does; write it in IDM's form: /source/accountStatus eq \"active\"",
    ];
    assert_eq!(p, expect);
    // A mapping file names its mapping in the message too.
    let p = parse_config(
        "mapping/hr",
        &json!({"source": "managed/user", "target": "managed/other", "validSource": "a pr"}),
    )
    .unwrap_err();
    assert!(
        p[0].contains("mapping 'hr'") && p[0].contains("/source/a pr"),
        "{p:?}"
    );
}

#[test]
fn empty_source_and_delete_guards() {
    let m = one(base());
    assert!(!m.allow_empty_source_set);
    assert_eq!(m.max_deletes, None);
    let m = one(with(json!({"allowEmptySourceSet": true, "maxDeletes": 0})));
    assert!(m.allow_empty_source_set);
    assert_eq!(m.max_deletes, Some(0));
    let p = problems(with(
        json!({"allowEmptySourceSet": "yes", "maxDeletes": -1}),
    ));
    assert_eq!(
        p,
        [
            "'allowEmptySourceSet' must be true or false",
            "'maxDeletes' must be a whole number (0 or more)"
        ]
    );
}

#[test]
fn processing_order_is_sync_json_then_files_by_name() {
    let m = |n: &str| parse_mapping(&with(json!({"name": n})), None, "").unwrap();
    let prev = Mappings::default();
    let ms = Mappings::with_changes(
        &prev,
        [
            ("mapping/b".to_string(), Some(vec![m("b")])),
            ("mapping/a".to_string(), Some(vec![m("a")])),
            ("sync".to_string(), Some(vec![m("z"), m("y"), m("a")])),
        ],
    );
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["z", "y", "a", "b"]);
    let ms = Mappings::with_changes(&ms, [("sync".to_string(), None)]);
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}
