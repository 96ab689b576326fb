//! Issue 12: the two embedded JavaScript engines behind one small API, so the criterion benches
//! (`benches/engines.rs`) and the probes (`benches/probes.rs`) run the same code on both.
//!
//! Each engine offers:
//! * `compile(expr)`: the expression wrapped once as `(function(source){ return <expr>; })`,
//!   kept and called per object (the "compiled once" case);
//! * `call(&f, &source)`: serde_json source → engine value, call, result → serde_json;
//! * `eval_each(expr, &source)`: sets the global `source` and parses + runs `expr` every call.

use serde_json::{json, Value};

pub mod boa;
pub mod qjs;

/// The one-line transform of the brief (bench a).
pub const TRANSFORM: &str = "source.givenName.toUpperCase() + ' ' + source.sn";
/// A second transform used by the recon probe.
pub const TRANSFORM2: &str = "source.mail.toLowerCase()";
/// The correlation query of the brief (bench b).
pub const CORRELATION: &str = r#"({"_queryFilter": "userName eq \"" + source.userName + "\""})"#;

/// Wraps an expression as a one-argument function expression.
pub fn as_function(expr: &str) -> String {
    format!("(function(source){{ return {expr}; }})")
}

/// A 10-field IDM-like source object (`i` makes each object distinct).
pub fn source(i: u64) -> Value {
    json!({
        "_id": format!("id-{i:08}"),
        "userName": format!("user{i}"),
        "givenName": format!("given{i}"),
        "sn": format!("Surname{i}"),
        "mail": format!("User{i}@Example.COM"),
        "telephoneNumber": "+1 555 0100",
        "description": "Created by the engine bench",
        "accountStatus": "active",
        "employeeNumber": i,
        "memberOf": ["cn=staff,ou=groups,dc=example,dc=com", "cn=vpn,ou=groups,dc=example,dc=com"]
    })
}

/// Current resident set size of this process in bytes (Linux /proc).
pub fn rss_bytes() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

/// Peak resident set size of this process in bytes (Linux /proc).
pub fn peak_rss_bytes() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
