//! The deploy files (`deploy/`) kept honest: Prometheus loads the alert rules and config,
//! scrapes two real gateways, every metric the dashboard and the alerts name is one the
//! gateway exports, and the compose and Kubernetes files point at files that exist.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (.ci/run installs it).
//! Without them a test is skipped with a loud message, unless `CI` is set: there it fails.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use serde_yaml::Value as Yaml;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_yaml(rel: &str) -> Yaml {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut doc: Yaml = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    doc.apply_merge().unwrap_or_else(|e| panic!("{rel}: {e}"));
    doc
}

/// `name` on the PATH; `None` (after saying so loudly) when it is missing outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("`{name}` is missing in CI: .ci/run must install Debian's `prometheus` package");
        }
        eprintln!(
            "\n!!!!! SKIPPED: `{name}` is not installed (apt-get install prometheus); \
             the deploy files were NOT checked by it !!!!!\n"
        );
    }
    found
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_shipped_alert_rules_and_prometheus_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let rules = run_ok(
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(repo_path("deploy/prometheus/alerts.yml")),
    );
    assert!(rules.contains("SUCCESS"), "{rules}");
    // rule_files is relative to prometheus.yml, as in the container: it resolves as shipped.
    let config = run_ok(
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(repo_path("deploy/prometheus/prometheus.yml")),
    );
    assert!(config.contains("1 rule files found"), "{config}");
}

// ---------------------------------------------------------------------------------------
// Metric names in PromQL
// ---------------------------------------------------------------------------------------

/// PromQL words that are never metric names: aggregations, keywords, literals.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LIST_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Skips from an opening bracket at `i` past its closing one, over quoted strings.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            '"' | '\'' | '`' => i = skip_string(chars, i) - 1,
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (in `{…}` or after `by`/`on`/…), durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable ($__rate_interval) or a number/duration (0.5, 5m, 1e3).
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_WORDS.contains(&lower.as_str()) {
                if next < chars.len() && chars[next] == '(' {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if PROMQL_WORDS.contains(&lower.as_str()) {
            } else if next < chars.len() && chars[next] == '(' {
                // A function call: its arguments are read as the loop goes on.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` string anywhere in a JSON document (Grafana panel targets).
fn json_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/dashboards/idm-gateway.json"))
        .expect("dashboard");
    serde_json::from_str(&text).expect("dashboard JSON")
}

fn alert_exprs() -> Vec<String> {
    let doc = read_yaml("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// Names the expressions use that the gateway does not export (nor Prometheus: `up`).
fn unknown_metrics(exprs: &[String]) -> Vec<(String, String)> {
    let metrics = idm_gateway::metrics::Metrics::new();
    let known: HashSet<&str> = metrics
        .family_names()
        .iter()
        .map(String::as_str)
        .chain(["up"])
        .collect();
    let mut unknown = Vec::new();
    for expr in exprs {
        for name in metric_names(expr) {
            if !known.contains(name.as_str()) {
                unknown.push((name, expr.clone()));
            }
        }
    }
    unknown
}

#[test]
fn promql_metric_names_are_found_and_label_names_functions_and_variables_are_not() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{status=~"5..", x="}"}[$__rate_interval])))
           / ignoring(le) group_left(state) b_total offset 5m > bool 1e3 and on (job) up"#,
    );
    let expected: BTreeSet<String> = ["a_bucket", "b_total", "up"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let mut exprs = Vec::new();
    json_exprs(&dashboard(), &mut exprs);
    let panels = exprs.len();
    assert!(panels >= 10, "the dashboard has {panels} queries");
    exprs.extend(alert_exprs());
    let unknown = unknown_metrics(&exprs);
    assert!(
        unknown.is_empty(),
        "not exported by the gateway: {unknown:#?}"
    );
    // The panels the deployment promises are there.
    let all = exprs.join("\n");
    for name in [
        "idm_gateway_request_duration_seconds_bucket",
        "idm_gateway_upstream_errors_total",
        "idm_gateway_token_fetches_total",
        "idm_gateway_recon_objects_total",
        "idm_gateway_implicit_sync_failures_total",
        "idm_gateway_store_operation_duration_seconds_bucket",
        "idm_gateway_cluster_nodes",
        "idm_gateway_remote_url_up",
    ] {
        assert!(all.contains(name), "no panel or alert uses {name}");
    }
}

#[test]
fn a_panel_naming_a_metric_the_gateway_does_not_export_is_caught() {
    let mut doc = dashboard();
    doc["panels"][0]["targets"][0]["expr"] =
        Value::from("sum by (instance) (rate(idm_gateway_request_total[5m]))");
    let mut exprs = Vec::new();
    json_exprs(&doc, &mut exprs);
    let unknown = unknown_metrics(&exprs);
    assert_eq!(
        unknown.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["idm_gateway_request_total"]
    );
}

// ---------------------------------------------------------------------------------------
// A real Prometheus scraping two real gateways
// ---------------------------------------------------------------------------------------

/// A child process killed (and reaped) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn prometheus_scrapes_both_gateways_and_loads_the_alert_rules() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let gw1 = Gateway::start().await;
    let gw2 = Gateway::start().await;
    for gw in [&gw1, &gw2] {
        for _ in 0..3 {
            let r = gw.anon(reqwest::Method::GET, "/openidm/info/ping").send();
            assert_eq!(r.await.unwrap().status(), 200);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // The shipped scrape job, with the test's targets, credentials and a 1 s interval.
    let mut config = read_yaml("deploy/prometheus/prometheus.yml");
    config["global"]["scrape_interval"] = Yaml::from("1s");
    config["global"]["evaluation_interval"] = Yaml::from("1s");
    config["rule_files"] = serde_yaml::from_str(&format!(
        "[{:?}]",
        repo_path("deploy/prometheus/alerts.yml")
            .display()
            .to_string()
    ))
    .unwrap();
    let job = &mut config["scrape_configs"][0];
    let password_file = dir.path().join("admin_password");
    std::fs::write(&password_file, gw1.admin_password()).unwrap();
    job["basic_auth"]["password_file"] = Yaml::from(password_file.display().to_string());
    job["static_configs"][0]["targets"] =
        serde_yaml::from_str(&format!("[\"{}\", \"{}\"]", gw1.addr, gw2.addr)).unwrap();
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, serde_yaml::to_string(&config).unwrap()).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Process(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let client = http_client();
    let wanted: BTreeSet<String> = [gw1.addr.to_string(), gw2.addr.to_string()].into();
    let series_of = |body: Value| -> BTreeSet<String> {
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["metric"]["instance"].as_str().map(String::from))
            .collect()
    };
    // Prometheus starts, scrapes every second: poll its API until both targets show up.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeSet::new();
    let scraped = loop {
        let answer = client
            .get(format!("{api}/query"))
            .query(&[("query", "idm_gateway_requests_total")])
            .send()
            .await;
        if let Ok(r) = answer {
            if let Ok(body) = r.json::<Value>().await {
                seen = series_of(body);
            }
        }
        if seen == wanted {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        scraped,
        "Prometheus saw idm_gateway_requests_total from {seen:?}, wanted {wanted:?}; its log:\n{log}"
    );
    // The counts are the gateways' own: at least the three pings each got.
    let r = client
        .get(format!("{api}/query"))
        .query(&[(
            "query",
            "sum by (instance) (idm_gateway_requests_total{method=\"GET\"})",
        )])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    for series in body["data"]["result"].as_array().unwrap() {
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value >= 3.0, "{series}");
    }
    // The alert rules are loaded as shipped, every one of them.
    let r = client.get(format!("{api}/rules")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    let loaded: usize = body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(loaded, alert_exprs().len(), "{body}");
}

// ---------------------------------------------------------------------------------------
// Compose and Kubernetes files
// ---------------------------------------------------------------------------------------

/// The services built from deploy/Containerfile, with their node ids.
fn gateway_services(compose: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, svc) in compose["services"].as_mapping().expect("services") {
        if svc["build"]["dockerfile"].as_str() == Some("deploy/Containerfile") {
            let node = svc["environment"]["IDM_GATEWAY_NODE_ID"]
                .as_str()
                .unwrap_or_default();
            out.push((name.as_str().unwrap().to_string(), node.to_string()));
        }
    }
    out
}

#[test]
fn compose_mounts_exist_and_each_gateway_has_its_own_node_id() {
    let compose = read_yaml("deploy/compose.yaml");
    let base = repo_path("deploy");
    let named: HashSet<&str> = compose["volumes"]
        .as_mapping()
        .expect("volumes")
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    let mut checked = 0;
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if let Some(build) = svc.get("build") {
            let context = base.join(build["context"].as_str().expect("context"));
            assert!(context.is_dir(), "{name}: build context {context:?}");
            let file = context.join(build["dockerfile"].as_str().expect("dockerfile"));
            assert!(file.is_file(), "{name}: {file:?}");
        }
        for volume in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().expect("short volume syntax");
            let source = spec.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                let path = base.join(source);
                assert!(
                    path.exists(),
                    "{name} mounts {spec}: {path:?} does not exist"
                );
                assert!(spec.ends_with(":ro"), "{name} mounts {spec} writable");
                checked += 1;
            } else {
                assert!(
                    named.contains(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
        for secret in svc["secrets"].as_sequence().into_iter().flatten() {
            let secret = secret.as_str().unwrap();
            assert!(
                compose["secrets"][secret].is_mapping(),
                "{name}: secret {secret} not declared"
            );
        }
    }
    assert!(checked >= 6, "only {checked} bind mounts checked");
    // Secrets come from files the user makes from the shipped placeholders.
    for (name, secret) in compose["secrets"].as_mapping().unwrap() {
        let file = secret["file"].as_str().expect("file secret");
        let example = base.join(format!("{file}.example"));
        assert!(example.is_file(), "secret {name:?}: no {example:?}");
    }
    let gateways = gateway_services(&compose);
    assert_eq!(gateways.len(), 2, "{gateways:?}");
    let ids: HashSet<&str> = gateways.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 2, "node ids not distinct: {gateways:?}");
    assert!(
        !ids.contains(""),
        "a gateway without a node id: {gateways:?}"
    );
    // The shipped conf is mounted, read-only, on every gateway.
    for (name, _) in &gateways {
        let mounts: Vec<&str> = compose["services"][name.as_str()]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            mounts.contains(&"../conf:/etc/idm-gateway/conf:ro"),
            "{name}: {mounts:?}"
        );
    }
    // haproxy balances and Prometheus scrapes exactly those gateways.
    let haproxy = std::fs::read_to_string(base.join("haproxy/haproxy.cfg")).unwrap();
    let prometheus = read_yaml("deploy/prometheus/prometheus.yml");
    let targets: BTreeSet<&str> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let expected: BTreeSet<String> = gateways.iter().map(|(n, _)| format!("{n}:8080")).collect();
    assert_eq!(
        targets,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    for target in &expected {
        assert!(
            haproxy.lines().any(|l| {
                let l = l.trim();
                l.starts_with("server ") && l.contains(&format!(" {target} check"))
            }),
            "haproxy has no checked server {target}"
        );
    }
    assert!(haproxy.contains("uri /openidm/info/ping"));
}

#[tokio::test]
async fn kubernetes_files_carry_the_whole_conf_and_probe_the_anonymous_ping() {
    let kustomization = read_yaml("deploy/k8s/kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let path = repo_path("deploy/k8s").join(resource.as_str().unwrap());
        assert!(path.is_file(), "{path:?}");
    }
    let listed: BTreeSet<String> = kustomization["configMapGenerator"][0]["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| {
            let rel = f.as_str().unwrap();
            let path = repo_path("deploy/k8s").join(rel);
            assert!(
                path.is_file(),
                "configMapGenerator lists {rel}: no such file"
            );
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let shipped: BTreeSet<String> = std::fs::read_dir(repo_path("conf"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, shipped, "the ConfigMap must hold every conf/ file");

    let deployment = read_yaml("deploy/k8s/deployment.yaml");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(
        var("IDM_GATEWAY_NODE_ID")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    assert!(var("IDM_GATEWAY_STORE")["value"]
        .as_str()
        .is_some_and(|v| v.starts_with("postgres://") && !v.contains(":change")));
    for secret_var in ["IDM_GATEWAY_STORE_PASSWORD", "IDM_GATEWAY_ADMIN_PASSWORD"] {
        assert!(var(secret_var)["valueFrom"]["secretKeyRef"].is_mapping());
    }
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/path"].as_str(),
        Some("/openidm/metrics/prometheus")
    );
    let mut paths = Vec::new();
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(container[probe]["httpGet"]["httpHeaders"].is_null());
        paths.push(path.to_string());
    }
    // The probes carry no credentials: with the shipped access rules the path answers 200
    // to an anonymous caller.
    let mut gw = Gateway::builder();
    for file in ["access.json", "authentication.json"] {
        let text = std::fs::read(repo_path("conf").join(file)).unwrap();
        gw = gw.conf_raw(file, text);
    }
    let gw = gw.start().await;
    for path in paths {
        let r = gw.anon(reqwest::Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), 200, "anonymous GET {path}");
    }
    // …and the metrics path does not.
    let r = gw
        .anon(reqwest::Method::GET, "/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
