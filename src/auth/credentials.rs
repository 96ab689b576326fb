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
}
