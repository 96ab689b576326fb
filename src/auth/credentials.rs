//! Reading caller credentials from request headers: `X-OpenIDM-Username` /
//! `X-OpenIDM-Password`, or `Authorization: Basic`.

use std::borrow::Cow;

use base64::Engine;
use http::{HeaderMap, HeaderName};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("X-OpenIDM-Username and X-OpenIDM-Password must be sent together")]
    Incomplete,
    #[error("the Authorization header is not valid Basic credentials")]
    MalformedBasic,
    #[error("credentials must be UTF-8")]
    NotUtf8,
}

/// A caller's user name and password.
pub type UserPassword<'a> = (Cow<'a, str>, Cow<'a, str>);

/// `Ok(None)` when the request carries no credentials at all. `X-OpenIDM-*` credentials are
/// borrowed from the headers (no copy per request); Basic ones are decoded.
pub fn credentials_from_headers(
    headers: &HeaderMap,
) -> Result<Option<UserPassword<'_>>, CredentialsError> {
    const USERNAME: HeaderName = HeaderName::from_static("x-openidm-username");
    const PASSWORD: HeaderName = HeaderName::from_static("x-openidm-password");
    let user = headers.get(USERNAME);
    let password = headers.get(PASSWORD);
    match (user, password) {
        (Some(u), Some(p)) => {
            let u = u.to_str().map_err(|_| CredentialsError::NotUtf8)?;
            let p = p.to_str().map_err(|_| CredentialsError::NotUtf8)?;
            return Ok(Some((Cow::Borrowed(u), Cow::Borrowed(p))));
        }
        (Some(_), None) | (None, Some(_)) => return Err(CredentialsError::Incomplete),
        (None, None) => {}
    }
    let Some(auth) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let auth = auth.as_bytes();
    if auth.len() < 6 || !auth[..6].eq_ignore_ascii_case(b"basic ") {
        // Bearer tokens are not accepted from callers yet.
        return Err(CredentialsError::MalformedBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth[6..].trim_ascii())
        .map_err(|_| CredentialsError::MalformedBasic)?;
    let mut user = String::from_utf8(decoded).map_err(|_| CredentialsError::NotUtf8)?;
    let colon = user.find(':').ok_or(CredentialsError::MalformedBasic)?;
    let password = user.split_off(colon + 1);
    user.truncate(colon);
    Ok(Some((Cow::Owned(user), Cow::Owned(password))))
}

/// `X-OpenIDM-Reauth-Password`.
pub const REAUTH_PASSWORD: HeaderName = HeaderName::from_static("x-openidm-reauth-password");

/// The re-authentication password of a request: `X-OpenIDM-Reauth-Password`, decoded when
/// it is an RFC 5987 value (`UTF-8''Passw%C2%A3rd`, as IDM's UI sends non-ASCII
/// passwords). `None` when absent, empty or not UTF-8.
pub fn reauth_password_from_headers(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(REAUTH_PASSWORD)?.to_str().ok()?;
    let value = match raw.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("UTF-8''") => {
            percent_encoding::percent_decode_str(&raw[7..])
                .decode_utf8()
                .ok()?
                .into_owned()
        }
        _ => raw.to_owned(),
    };
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn openidm_headers_and_basic_are_read() {
        assert_eq!(
            credentials_from_headers(&headers(&[
                ("x-openidm-username", "openidm-admin"),
                ("x-openidm-password", "pw:with:colons")
            ])),
            Ok(Some(("openidm-admin".into(), "pw:with:colons".into())))
        );
        // "openidm-admin:openidm-admin"
        assert_eq!(
            credentials_from_headers(&headers(&[(
                "authorization",
                "Basic b3BlbmlkbS1hZG1pbjpvcGVuaWRtLWFkbWlu"
            )])),
            Ok(Some(("openidm-admin".into(), "openidm-admin".into())))
        );
        assert_eq!(credentials_from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn malformed_credentials_are_errors() {
        assert_eq!(
            credentials_from_headers(&headers(&[("x-openidm-username", "a")])),
            Err(CredentialsError::Incomplete)
        );
        for bad in ["Basic !!!", "Bearer abc", "Basic", "Basic bm9jb2xvbg=="] {
            assert_eq!(
                credentials_from_headers(&headers(&[("authorization", bad)])),
                Err(CredentialsError::MalformedBasic),
                "{bad}"
            );
        }
    }

    #[test]
    fn reauth_passwords_are_read_and_rfc5987_decoded() {
        assert_eq!(
            reauth_password_from_headers(&headers(&[("x-openidm-reauth-password", "Passw0rd")])),
            Some("Passw0rd".into())
        );
        assert_eq!(
            reauth_password_from_headers(&headers(&[(
                "x-openidm-reauth-password",
                "UTF-8''Passw%C2%A3rd"
            )])),
            Some("Passw\u{a3}rd".into())
        );
        assert_eq!(
            reauth_password_from_headers(&headers(&[("x-openidm-reauth-password", "")])),
            None
        );
        assert_eq!(reauth_password_from_headers(&HeaderMap::new()), None);
    }
}
