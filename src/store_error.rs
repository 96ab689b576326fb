//! How a store failure is answered: the one mapping of [`RepoError`] to CREST's
//! [`ResourceError`], for every handler that reads or writes the store (managed and internal
//! objects, system tokens, sync). The store itself knows nothing of CREST.
//!
//! A store failure (`Internal`) is logged here with its detail and answered with a generic
//! 500: its text may name files, SQL or stored values, none of which a client should see.

use crate::crest::ResourceError;
use crate::repo::RepoError;

impl From<RepoError> for ResourceError {
    fn from(e: RepoError) -> Self {
        let code = match &e {
            RepoError::NotFound { .. } => 404,
            RepoError::AlreadyExists { .. } | RepoError::RevisionMismatch { .. } => 412,
            RepoError::Unique { .. } => 409,
            RepoError::BadCookie | RepoError::BadQuery(_) | RepoError::Unstorable(_) => 400,
            // The gateway did not answer in time (a 500 would say it is broken): 504, as a
            // remote instance that times out.
            RepoError::TimeLimit(_) => 504,
            RepoError::Internal(detail) => {
                tracing::error!(error = %detail, "store failure");
                return ResourceError::internal("The store failed to process the request");
            }
        };
        ResourceError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_store_error_has_its_status_and_internals_stay_inside() {
        let cases = [
            (
                RepoError::NotFound {
                    resource: "managed/user".into(),
                    id: "a".into(),
                },
                404,
            ),
            (
                RepoError::AlreadyExists {
                    resource: "managed/user".into(),
                    id: "a".into(),
                },
                412,
            ),
            (
                RepoError::RevisionMismatch {
                    resource: "managed/user".into(),
                    id: "a".into(),
                    expected: "3".into(),
                },
                412,
            ),
            (
                RepoError::Unique {
                    resource: "managed/user".into(),
                    property: "/userName".into(),
                },
                409,
            ),
            (RepoError::BadCookie, 400),
            (RepoError::BadQuery("too deep".into()), 400),
            (
                RepoError::TimeLimit(std::time::Duration::from_secs(30)),
                504,
            ),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let r = ResourceError::from(e);
            assert_eq!((r.code, r.message), (code, message));
        }
        let r = ResourceError::from(RepoError::Internal(
            "opening /data/repo.sqlite: disk I/O error".into(),
        ));
        assert_eq!(r.code, 500);
        assert!(!r.message.contains("repo.sqlite"), "{}", r.message);
    }
}
