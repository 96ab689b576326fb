//! CREST, independent of HTTP servers and of the store: the request model, HTTP → request
//! mapping, the router, responses and their HTTP form, errors, query filters, query
//! parameters, PATCH and `_fields`.
//!
//! This module depends on nothing else of ours; handlers and the HTTP edge depend on it.

mod caller;
mod error;
pub mod fields;
pub mod filter;
pub mod http;
pub mod patch;
pub mod query;
mod request;
mod response;
mod router;

pub use caller::{Caller, ROLE_ADMIN, ROLE_AUTHORIZED, ROLE_REG};
pub use error::{reason_phrase, ResourceError};
pub use request::{
    join_path, split_path, Operation, Params, QueryKind, QueryParams, Reauth, Request,
};
pub use response::{
    member_url, HttpResponse, QueryResponse, QueryStream, ResourceResponse, Response, ResultStream,
    StreamBody, JSON_CONTENT_TYPE,
};
pub use router::{
    Authorize, Authorizer, Capability, Delegated, Delegation, FilterChain, Filters, RequestHandler,
    Router,
};
