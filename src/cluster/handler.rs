//! `/openidm/cluster`: `GET ?_queryFilter=…` (or IDM's `_queryId=query-cluster-instances`,
//! `query-all-ids`, `query-all`) and `GET cluster/<instanceId>`. Read only, as in IDM.

use std::sync::Arc;

use super::Cluster;
use crate::crest::filter::{self, QueryFilter};
use crate::crest::{
    Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError, Response,
};

pub struct ClusterHandler(pub Arc<Cluster>);

fn store_error(e: crate::repo::RepoError) -> ResourceError {
    tracing::error!(error = %e, "cannot read the cluster node states");
    ResourceError::internal("The store failed to process the request")
}

#[async_trait::async_trait]
impl RequestHandler for ClusterHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        match (rest, &req.op) {
            ([], Operation::Query(q)) => {
                let f = match &q.kind {
                    QueryKind::Id(id) if id == "query-cluster-instances" => QueryFilter::True,
                    kind => filter::of_listing_query(kind, "Cluster nodes")?,
                };
                let results = self
                    .0
                    .list()
                    .await
                    .map_err(store_error)?
                    .into_iter()
                    .filter(|n| f.matches(n))
                    .collect();
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            ([id], Operation::Read { .. }) => match self.0.get(id).await.map_err(store_error)? {
                Some(node) => Ok(Response::Json(200, node)),
                None => Err(ResourceError::not_found(format!(
                    "Cluster node '{id}' not found"
                ))),
            },
            _ => Err(req.not_supported()),
        }
    }
}
