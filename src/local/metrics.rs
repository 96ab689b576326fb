//! `GET /openidm/metrics/prometheus`: the Prometheus text format.

use std::sync::Arc;

use crate::crest::{Operation, Request, RequestHandler, ResourceError, Response};
use crate::metrics::Metrics;

pub struct MetricsHandler(pub Arc<Metrics>);

#[async_trait::async_trait]
impl RequestHandler for MetricsHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        if rest != ["prometheus"] {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        }
        if !matches!(req.op, Operation::Read { .. }) {
            return Err(req.not_supported());
        }
        Ok(Response::Raw {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: self.0.render(),
        })
    }
}
