//! In-process latency of one indexed LDAP lookup, direct vs through the gateway, for
//! `benches/ldap.sh`: no process is spawned per query, so what is compared is the LDAP
//! round trip against the gateway's HTTP round trip (auth, CREST query, filter translation,
//! its own pooled LDAP search, JSON) on the same directory.
//!
//! ```text
//! ldap_query --ldap-url ldap://127.0.0.1:PORT --bind-dn DN --bind-pw PW \
//!            --gateway-url http://127.0.0.1:GWPORT --entries N [--n M] [--warmup W] \
//!            [--base ou=people,dc=example,dc=com] [--user openidm-admin] [--password openidm-admin]
//! ```
//!
//! M iterations, each picking a random existing `uid=user<k>` (k < N) and timing, one after
//! the other (one request in flight):
//! * **direct**: a subtree search `(uid=user<k>)` for `uid cn sn mail` on one persistent
//!   ldap3 connection bound as `--bind-dn`;
//! * **gateway**: `GET /openidm/system/ldap/account?_queryFilter=uid eq "user<k>"&_fields=uid,cn,sn,mail`
//!   with Basic credentials on one persistent (keep-alive) reqwest client.
//!
//! The two are interleaved per iteration (same k) so drift on a shared machine hits both.
//! Every answer must hold exactly one entry. Prints p50/p90/p99/mean of each and the ratio
//! gateway/direct, and one machine-readable line starting with `RESULT `.
//!
//! Two more timings per iteration break the gateway's time down (not in the ratio):
//! * **direct, connector filter**: the same search with the filter the connector sends,
//!   `(&(uid=user<k>)(objectClass=<c>)…)` for `--object-classes` (default
//!   person,organizationalPerson,inetOrgPerson: the account classes but `top`), plus
//!   `entryUUID` (its uid attribute);
//! * **gateway floor**: `GET /openidm/info/login` with the same credentials and client: the
//!   gateway's HTTP + authentication + routing, no LDAP.
//!
//! Without `--ldap-url` (e.g. under a plain `cargo bench`) it prints its usage and exits 0.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ldap3::{LdapConnAsync, Scope, SearchEntry};
use rand::Rng;

const USAGE: &str = "usage: ldap_query --ldap-url ldap://HOST:PORT --bind-dn DN --bind-pw PW \
--gateway-url http://HOST:PORT --entries N [--n M] [--warmup W] [--base DN] [--user U] [--password P] \
[--object-classes c1,c2,...]";

struct Args {
    ldap_url: String,
    bind_dn: String,
    bind_pw: String,
    gateway_url: String,
    base: String,
    user: String,
    password: String,
    object_classes: Vec<String>,
    entries: u64,
    n: usize,
    warmup: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut ldap_url = None;
    let mut bind_dn = None;
    let mut bind_pw = None;
    let mut gateway_url = None;
    let mut base = "ou=people,dc=example,dc=com".to_owned();
    let mut user = "openidm-admin".to_owned();
    let mut password = "openidm-admin".to_owned();
    let mut object_classes = "person,organizationalPerson,inetOrgPerson".to_owned();
    let mut entries = None;
    let mut n = 2000;
    let mut warmup = 50;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let count = |s: String| s.parse::<u64>().map_err(|_| format!("not a count: {s:?}"));
        match arg.as_str() {
            // Added by `cargo bench` to harness = false targets.
            "--bench" => {}
            "--ldap-url" => ldap_url = Some(value("--ldap-url")?),
            "--bind-dn" => bind_dn = Some(value("--bind-dn")?),
            "--bind-pw" => bind_pw = Some(value("--bind-pw")?),
            "--gateway-url" => gateway_url = Some(value("--gateway-url")?),
            "--base" => base = value("--base")?,
            "--user" => user = value("--user")?,
            "--password" => password = value("--password")?,
            "--object-classes" => object_classes = value("--object-classes")?,
            "--entries" => entries = Some(count(value("--entries")?)?),
            "--n" => n = count(value("--n")?)? as usize,
            "--warmup" => warmup = count(value("--warmup")?)? as usize,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let Some(ldap_url) = ldap_url else {
        return Ok(None);
    };
    let entries = entries.ok_or("--entries is required")?;
    if entries == 0 || n == 0 {
        return Err("--entries and --n must be positive".into());
    }
    Ok(Some(Args {
        ldap_url,
        bind_dn: bind_dn.ok_or("--bind-dn is required")?,
        bind_pw: bind_pw.ok_or("--bind-pw is required")?,
        gateway_url: gateway_url
            .ok_or("--gateway-url is required")?
            .trim_end_matches('/')
            .to_owned(),
        base,
        user,
        password,
        object_classes: object_classes
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        entries,
        n,
        warmup,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ldap_query: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread: the client's own scheduling should not compete with the servers for the
    // machine's cores more than one sequential client has to.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ldap_query: {e}");
            ExitCode::FAILURE
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn line(label: &str, h: &Histogram<u64>) {
    println!(
        "{label:26} p50 {:7.3} ms  p90 {:7.3} ms  p99 {:7.3} ms  mean {:7.3} ms  max {:7.3} ms  (n={})",
        ms(h.value_at_quantile(0.50) as f64),
        ms(h.value_at_quantile(0.90) as f64),
        ms(h.value_at_quantile(0.99) as f64),
        ms(h.mean()),
        ms(h.max() as f64),
        h.len()
    );
}

async fn run(a: Args) -> Result<(), String> {
    let (conn, mut ldap) = LdapConnAsync::new(&a.ldap_url)
        .await
        .map_err(|e| format!("connect {}: {e}", a.ldap_url))?;
    ldap3::drive!(conn);
    ldap.simple_bind(&a.bind_dn, &a.bind_pw)
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("bind: {e}"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let url = format!("{}/openidm/system/ldap/account", a.gateway_url);

    let classes: String = a
        .object_classes
        .iter()
        .map(|c| format!("(objectClass={c})"))
        .collect();
    let login_url = format!("{}/openidm/info/login", a.gateway_url);

    let mut direct = histogram();
    let mut gateway = histogram();
    let mut direct_conn = histogram();
    let mut floor = histogram();
    let mut rng = rand::rng();
    for i in 0..a.warmup + a.n {
        let uid = format!("user{}", rng.random_range(0..a.entries));

        let start = Instant::now();
        let entries = search(&mut ldap, &a.base, &format!("(uid={uid})"), false).await?;
        let d_direct = start.elapsed();
        check_entry(entries, &uid)?;

        let start = Instant::now();
        let resp = http
            .get(&url)
            .query(&[
                ("_queryFilter", format!("uid eq \"{uid}\"").as_str()),
                ("_fields", "uid,cn,sn,mail"),
            ])
            .basic_auth(&a.user, Some(&a.password))
            .send()
            .await
            .map_err(|e| format!("GET {uid}: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {uid}: body: {e}"))?;
        let d_gateway = start.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {uid}: {status}: not JSON: {e}"))?;
        let got = &v["result"][0]["uid"];
        if !status.is_success() || v["resultCount"] != 1 || (*got != uid && got[0] != uid) {
            return Err(format!("GET {uid}: {status}: {v}"));
        }

        let start = Instant::now();
        let filter = if classes.is_empty() {
            format!("(uid={uid})")
        } else {
            format!("(&(uid={uid}){classes})")
        };
        let entries = search(&mut ldap, &a.base, &filter, true).await?;
        let d_direct_conn = start.elapsed();
        check_entry(entries, &uid)?;

        let start = Instant::now();
        let resp = http
            .get(&login_url)
            .basic_auth(&a.user, Some(&a.password))
            .send()
            .await
            .map_err(|e| format!("GET info/login: {e}"))?;
        let status = resp.status();
        resp.bytes()
            .await
            .map_err(|e| format!("GET info/login: body: {e}"))?;
        let d_floor = start.elapsed();
        if !status.is_success() {
            return Err(format!("GET info/login: {status}"));
        }

        if i >= a.warmup {
            record(&mut direct, d_direct);
            record(&mut gateway, d_gateway);
            record(&mut direct_conn, d_direct_conn);
            record(&mut floor, d_floor);
        }
    }
    let _ = ldap.unbind().await;

    println!(
        "in-process, 1 persistent connection each, {} sequential lookups (+{} warm-up), interleaved:",
        a.n, a.warmup
    );
    line("direct", &direct);
    line("gateway", &gateway);
    println!("breakdown of the gateway's time (not in the ratio):");
    line("direct, connector filter", &direct_conn);
    line("gateway floor (info/login)", &floor);
    let ratio = |q: f64| gateway.value_at_quantile(q) as f64 / direct.value_at_quantile(q) as f64;
    let mean_ratio = gateway.mean() / direct.mean();
    println!(
        "ratio gateway/direct: p50 {:.2}x  p90 {:.2}x  p99 {:.2}x  mean {:.2}x",
        ratio(0.5),
        ratio(0.9),
        ratio(0.99),
        mean_ratio
    );
    let p = |h: &Histogram<u64>, q: f64| ms(h.value_at_quantile(q) as f64);
    println!(
        "RESULT direct_p50_ms={:.3} direct_p90_ms={:.3} direct_p99_ms={:.3} direct_mean_ms={:.3} \
         gateway_p50_ms={:.3} gateway_p90_ms={:.3} gateway_p99_ms={:.3} gateway_mean_ms={:.3} \
         ratio_p50={:.2} ratio_mean={:.2} direct_conn_p50_ms={:.3} floor_p50_ms={:.3}",
        p(&direct, 0.5),
        p(&direct, 0.9),
        p(&direct, 0.99),
        ms(direct.mean()),
        p(&gateway, 0.5),
        p(&gateway, 0.9),
        p(&gateway, 0.99),
        ms(gateway.mean()),
        ratio(0.5),
        mean_ratio,
        p(&direct_conn, 0.5),
        p(&floor, 0.5)
    );
    Ok(())
}

/// A subtree search for `uid cn sn mail` (and `entryUUID`, as the connector asks for it).
async fn search(
    ldap: &mut ldap3::Ldap,
    base: &str,
    filter: &str,
    with_uuid: bool,
) -> Result<Vec<ldap3::ResultEntry>, String> {
    let mut attrs = vec!["uid", "cn", "sn", "mail"];
    if with_uuid {
        attrs.push("entryUUID");
    }
    ldap.search(base, Scope::Subtree, filter, attrs)
        .await
        .and_then(|r| r.success())
        .map(|(entries, _)| entries)
        .map_err(|e| format!("search {filter}: {e}"))
}

/// Exactly one entry, the one of `uid`.
fn check_entry(entries: Vec<ldap3::ResultEntry>, uid: &str) -> Result<(), String> {
    if entries.len() != 1 {
        return Err(format!("(uid={uid}): {} entries", entries.len()));
    }
    let got = SearchEntry::construct(entries.into_iter().next().expect("one entry"));
    if got
        .attrs
        .get("uid")
        .and_then(|v| v.first())
        .map(String::as_str)
        != Some(uid)
    {
        return Err(format!("(uid={uid}): wrong entry {}", got.dn));
    }
    Ok(())
}
