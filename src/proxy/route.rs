//! Request-path classification: is it ping, a remote instance, or a local resource?
//!
//! Pure and allocation-light: it runs on every request. Paths are checked segment by
//! segment; a `.` or `..` segment, raw or percent-encoded, is refused, as is malformed
//! percent-encoding, so nothing ambiguous is ever forwarded.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /openidm/info/ping`: answered for anyone.
    Ping,
    /// `/openidm/external/idm/<instance>/<rest>`: `rest` is the raw (still encoded) path
    /// after the instance segment, without a leading `/`.
    Remote {
        instance: Cow<'a, str>,
        rest: &'a str,
    },
    /// Anything else under `/openidm`: decoded segments after `openidm`.
    Local(Vec<Cow<'a, str>>),
    /// `/upload/csv/<collection>` (bulk import, outside `/openidm` as in IDM): decoded
    /// segments after `csv`.
    Upload(Vec<Cow<'a, str>>),
    /// `/export/csvImportFailures/<importId>`: decoded segments after
    /// `csvImportFailures`.
    Export(Vec<Cow<'a, str>>),
    /// Not under `/openidm`.
    Outside,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("The request path contains a '.' or '..' segment (or an encoded '/' or '\\'), which is not allowed")]
    DotSegment,
    #[error("The request path contains malformed percent-encoding")]
    BadEncoding,
    #[error("The request path must start with '/'")]
    NotAbsolute,
}

const REMOTE_PREFIX: [&str; 3] = ["openidm", "external", "idm"];

/// Classifies a raw request path (no query string).
pub fn classify(path: &str) -> Result<Route<'_>, RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::NotAbsolute);
    }
    // Validate every segment once, remembering decoded values for routing.
    let mut decoded: Vec<Cow<'_, str>> = Vec::with_capacity(8);
    let mut offsets: Vec<usize> = Vec::with_capacity(8);
    let mut pos = 1;
    for raw in path[1..].split('/') {
        let start = pos;
        pos += raw.len() + 1;
        if raw.is_empty() {
            continue;
        }
        let seg = decode(raw)?;
        // `..;x` is `..` to servlet containers (path parameters); an encoded `/` or `\`
        // would hide a dot segment from this check.
        let bare = seg.split(';').next().unwrap_or("");
        if bare == "." || bare == ".." || seg.contains(['/', '\\']) {
            return Err(RouteError::DotSegment);
        }
        decoded.push(seg);
        offsets.push(start);
    }
    match decoded.first().map(|s| s.as_ref()) {
        Some("openidm") => {}
        Some("upload") if decoded.get(1).is_some_and(|s| s == "csv") => {
            return Ok(Route::Upload(decoded.split_off(2)));
        }
        Some("export") if decoded.get(1).is_some_and(|s| s == "csvImportFailures") => {
            return Ok(Route::Export(decoded.split_off(2)));
        }
        _ => return Ok(Route::Outside),
    }
    if decoded.len() >= 4 && decoded[..3].iter().zip(REMOTE_PREFIX).all(|(a, b)| a == b) {
        let instance_end = offsets[3] + raw_len(path, offsets[3]);
        let rest = path[instance_end..].trim_start_matches('/');
        let instance = decoded.swap_remove(3);
        return Ok(Route::Remote { instance, rest });
    }
    if decoded.len() == 3 && decoded[1] == "info" && decoded[2] == "ping" {
        return Ok(Route::Ping);
    }
    decoded.remove(0);
    Ok(Route::Local(decoded))
}

fn raw_len(path: &str, start: usize) -> usize {
    path[start..].find('/').unwrap_or(path.len() - start)
}

fn decode(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    // Reject '%' not followed by two hex digits: percent_decode would pass it through.
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(RouteError::BadEncoding);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RouteError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(instance: &str, rest: &str) -> Route<'static> {
        Route::Remote {
            instance: Cow::Owned(instance.to_owned()),
            rest: Box::leak(rest.to_owned().into_boxed_str()),
        }
    }

    #[test]
    fn remote_paths_keep_the_raw_rest() {
        assert_eq!(
            classify("/openidm/external/idm/dc1/managed/user").unwrap(),
            remote("dc1", "managed/user")
        );
        assert_eq!(
            classify("/openidm/external/idm/dc1/managed/user/a%20b/").unwrap(),
            remote("dc1", "managed/user/a%20b/")
        );
        assert_eq!(
            classify("/openidm/external/idm/dc1").unwrap(),
            remote("dc1", "")
        );
        assert_eq!(
            classify("/openidm/external/idm/dc1/").unwrap(),
            remote("dc1", "")
        );
        assert_eq!(
            classify("//openidm//external/idm/d%63-1//x").unwrap(),
            remote("dc-1", "x")
        );
    }

    #[test]
    fn dot_segments_are_refused_raw_or_encoded() {
        for p in [
            "/openidm/external/idm/dc1/../config",
            "/openidm/external/idm/dc1/./x",
            "/openidm/external/idm/dc1/%2e%2e/config",
            "/openidm/external/idm/dc1/%2E./config",
            "/openidm/external/idm/dc1/.%2e",
            "/openidm/external/idm/dc1/..;/config",
            "/openidm/external/idm/dc1/.;x/config",
            "/openidm/external/idm/dc1/a%2f..%2fconfig",
            "/openidm/external/idm/dc1/a%5C..%5Cconfig",
            "/openidm/external/idm/%2e%2e/x",
            "/openidm/../etc/passwd",
            "/..",
        ] {
            assert_eq!(classify(p), Err(RouteError::DotSegment), "{p}");
        }
        // Dots inside a segment are ordinary characters.
        assert!(matches!(
            classify("/openidm/config/external.idm/a..b"),
            Ok(Route::Local(_))
        ));
    }

    #[test]
    fn malformed_encoding_is_refused() {
        for p in [
            "/openidm/x%zz",
            "/openidm/x%2",
            "/openidm/%",
            "/openidm/%ff%fe",
        ] {
            assert_eq!(classify(p), Err(RouteError::BadEncoding), "{p}");
        }
        assert_eq!(classify("openidm"), Err(RouteError::NotAbsolute));
    }

    #[test]
    fn ping_local_and_outside() {
        assert_eq!(classify("/openidm/info/ping").unwrap(), Route::Ping);
        assert_eq!(
            classify("/openidm/config/external.idm/x").unwrap(),
            Route::Local(vec!["config".into(), "external.idm".into(), "x".into()])
        );
        assert_eq!(
            classify("/openidm/external/idm").unwrap(),
            Route::Local(vec!["external".into(), "idm".into()])
        );
        assert_eq!(classify("/").unwrap(), Route::Outside);
        assert_eq!(classify("/admin").unwrap(), Route::Outside);
    }

    #[test]
    fn bulk_import_paths() {
        assert_eq!(
            classify("/upload/csv/managed/user").unwrap(),
            Route::Upload(vec!["managed".into(), "user".into()])
        );
        assert_eq!(
            classify("/export/csvImportFailures/abc").unwrap(),
            Route::Export(vec!["abc".into()])
        );
        assert_eq!(classify("/upload/other").unwrap(), Route::Outside);
        assert_eq!(classify("/export").unwrap(), Route::Outside);
        assert_eq!(
            classify("/upload/csv/managed/%2e%2e/x"),
            Err(RouteError::DotSegment)
        );
    }
}
