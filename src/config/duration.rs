//! IDM's duration values, in one place: a number of seconds, or a string such as
//! `"100 millis"` (audit `writeInterval`), `"300 seconds"` (rsFilter `cache.maxTimeout`),
//! `"10 s"`, `"2 minutes"`, `"1 day"`.

use std::time::Duration;

use serde_json::Value;

/// A duration string; a bare number is seconds. `None` when it is not one.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(n * scale).ok()
}

/// A duration value of a config file (string or number of seconds); the error names
/// `field`.
pub fn from_value(v: &Value, field: &str) -> Result<Duration, String> {
    let d = match v {
        Value::Number(n) => n.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()),
        Value::String(s) => parse(s),
        _ => None,
    };
    d.ok_or_else(|| {
        format!("{field}: must be a duration such as \"10 s\", \"500 ms\" or a number of seconds")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idm_forms() {
        assert_eq!(parse("300 seconds"), Some(Duration::from_secs(300)));
        assert_eq!(parse("5 minutes"), Some(Duration::from_secs(300)));
        assert_eq!(parse("100 millis"), Some(Duration::from_millis(100)));
        assert_eq!(parse("250 ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse("1.5 s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1 day"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse("x"), None);
        assert_eq!(parse("10 fortnights"), None);
        assert_eq!(parse("99999999999999999999999 days"), None);
        let d = |v: Value| from_value(&v, "t");
        assert_eq!(d(json!(3)).unwrap(), Duration::from_secs(3));
        assert_eq!(d(json!("500 ms")).unwrap(), Duration::from_millis(500));
        assert!(d(json!("soon"))
            .unwrap_err()
            .starts_with("t: must be a duration"));
        assert!(d(json!(-1)).is_err());
        assert!(d(json!(true)).is_err());
    }
}
