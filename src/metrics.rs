//! One Prometheus registry and every metric the gateway exports, by name.
//!
//! Label values are bounded: instance labels are configured instance names (or `_local`
//! / `_unknown`), methods are the standard HTTP methods (or `OTHER`). Secrets never become
//! labels.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Instance label of requests answered by the gateway itself.
pub const LOCAL: &str = "_local";
/// Instance label of requests for an instance that is not configured.
pub const UNKNOWN: &str = "_unknown";

pub struct Metrics {
    registry: Registry,
    family_names: Vec<String>,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub token_fetches: IntCounterVec,
    /// Bearer tokens of callers checked (`rsFilter`), by method and outcome.
    pub token_checks: IntCounterVec,
    /// Failed logins, by reason (`credentials`, `token`, `throttled`).
    pub login_failures: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub instances: IntGaugeVec,
    pub remote_query_page: HistogramVec,
    /// Reconciliation runs by mapping and final state (`SUCCESS`, `FAILED`, `CANCELED`).
    pub recon_runs: IntCounterVec,
    /// Objects reconciled by mapping, situation and action.
    pub recon_objects: IntCounterVec,
    pub recon_duration: HistogramVec,
    /// Scheduled job fires by job and outcome (`started`, `skipped_overlap`, `failed`).
    pub scheduler_fires: IntCounterVec,
    /// Failed implicit-sync pushes (first tries and retries) by mapping.
    pub implicit_sync_failures: IntCounterVec,
    /// Connector operations by system, ICF operation (`GET`, `SEARCH`, …) and outcome
    /// (`ok` or the CREST status of the failure).
    pub connector_operations: IntCounterVec,
    pub connector_duration: HistogramVec,
    /// 1 while a URL of a remote instance is up, 0 while it is down (label `url`: the
    /// configured URL, which never holds credentials or a query).
    pub remote_url_up: IntGaugeVec,
    /// Requests that moved on to an instance's next URL after a failure.
    pub remote_failovers: IntCounterVec,
    /// Audit events not queued because a handler's queue was full, by topic.
    pub audit_dropped: IntCounterVec,
    /// Cluster nodes by state (`running`, `down`) as this node sees them; set by the cluster
    /// module.
    pub cluster_nodes: IntGaugeVec,
    /// Latency of object store calls by operation (`create`, `read`, `update`, `delete`,
    /// `query`, `query_stream`, `set_indexes`, `batch`), observed by `repo::timed`.
    pub store_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "idm_gateway_requests_total",
                "Requests by instance, method and status",
            ),
            &["instance", "method", "status"],
        )
        .expect("metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "idm_gateway_request_duration_seconds",
                "Request latency as seen by the gateway, by instance",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["instance"],
        )
        .expect("metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "idm_gateway_upstream_errors_total",
                "Failures talking to remote instances, by kind",
            ),
            &["instance", "kind"],
        )
        .expect("metric");
        let token_checks = IntCounterVec::new(
            Opts::new(
                "idm_gateway_token_checks_total",
                "Callers' bearer tokens checked (introspection or local JWT validation), by outcome",
            ),
            &["method", "outcome"],
        )
        .expect("metric");
        let login_failures = IntCounterVec::new(
            Opts::new(
                "idm_gateway_login_failures_total",
                "Requests refused for their credentials, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let token_fetches = IntCounterVec::new(
            Opts::new(
                "idm_gateway_token_fetches_total",
                "OAuth2 token requests to token endpoints, by outcome",
            ),
            &["instance", "outcome"],
        )
        .expect("metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "idm_gateway_config_reloads_total",
                "Config objects (re)loaded, by outcome",
            ),
            &["outcome"],
        )
        .expect("metric");
        let instances = IntGaugeVec::new(
            Opts::new(
                "idm_gateway_instances",
                "Configured remote instances by state",
            ),
            &["state"],
        )
        .expect("metric");
        let remote_query_page = HistogramVec::new(
            HistogramOpts::new(
                "idm_gateway_remote_query_page_seconds",
                "Latency of one query page from a remote instance (internal CREST client), by instance",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["instance"],
        )
        .expect("metric");
        // Mapping labels are configured mapping names: bounded by the conf directory.
        let recon_runs = IntCounterVec::new(
            Opts::new(
                "idm_gateway_recon_runs_total",
                "Reconciliation runs by mapping and outcome",
            ),
            &["mapping", "outcome"],
        )
        .expect("metric");
        let recon_objects = IntCounterVec::new(
            Opts::new(
                "idm_gateway_recon_objects_total",
                "Objects reconciled by mapping, situation and action",
            ),
            &["mapping", "situation", "action"],
        )
        .expect("metric");
        let recon_duration = HistogramVec::new(
            HistogramOpts::new(
                "idm_gateway_recon_duration_seconds",
                "Duration of reconciliation runs by mapping",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["mapping"],
        )
        .expect("metric");
        // Job labels are configured job names (conf files or REST-created jobs).
        let scheduler_fires = IntCounterVec::new(
            Opts::new(
                "idm_gateway_scheduler_fires_total",
                "Scheduled job fires by job and outcome",
            ),
            &["job", "outcome"],
        )
        .expect("metric");
        let implicit_sync_failures = IntCounterVec::new(
            Opts::new(
                "idm_gateway_implicit_sync_failures_total",
                "Failed implicit-sync pushes (queued for retry) by mapping",
            ),
            &["mapping"],
        )
        .expect("metric");
        let connector_operations = IntCounterVec::new(
            Opts::new(
                "idm_gateway_connector_operations_total",
                "System connector operations by system, operation and outcome",
            ),
            &["system", "operation", "outcome"],
        )
        .expect("metric");
        let connector_duration = HistogramVec::new(
            HistogramOpts::new(
                "idm_gateway_connector_operation_duration_seconds",
                "System connector operation latency by system and operation",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["system", "operation"],
        )
        .expect("metric");
        // URL labels are configured URLs: bounded by the conf directory.
        let remote_url_up = IntGaugeVec::new(
            Opts::new(
                "idm_gateway_remote_url_up",
                "Whether a URL of a remote instance is up (1) or down (0)",
            ),
            &["instance", "url"],
        )
        .expect("metric");
        let remote_failovers = IntCounterVec::new(
            Opts::new(
                "idm_gateway_remote_failovers_total",
                "Requests that moved on to the next URL of a remote instance",
            ),
            &["instance"],
        )
        .expect("metric");
        let audit_dropped = IntCounterVec::new(
            Opts::new(
                "idm_gateway_audit_dropped_total",
                "Audit events not written because a handler's queue was full, by topic",
            ),
            &["topic"],
        )
        .expect("metric");
        let cluster_nodes = IntGaugeVec::new(
            Opts::new(
                "idm_gateway_cluster_nodes",
                "Cluster nodes by state, as this node sees them",
            ),
            &["state"],
        )
        .expect("metric");
        // `op` is one of the store trait's methods: a fixed set.
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "idm_gateway_store_operation_duration_seconds",
                "Object store call latency by operation",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["op"],
        )
        .expect("metric");
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(token_fetches.clone()),
            Box::new(token_checks.clone()),
            Box::new(login_failures.clone()),
            Box::new(config_reloads.clone()),
            Box::new(instances.clone()),
            Box::new(remote_query_page.clone()),
            Box::new(recon_runs.clone()),
            Box::new(recon_objects.clone()),
            Box::new(recon_duration.clone()),
            Box::new(scheduler_fires.clone()),
            Box::new(implicit_sync_failures.clone()),
            Box::new(connector_operations.clone()),
            Box::new(connector_duration.clone()),
            Box::new(remote_url_up.clone()),
            Box::new(remote_failovers.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(cluster_nodes.clone()),
            Box::new(store_duration.clone()),
            #[cfg(target_os = "linux")]
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        let histograms = [
            &request_duration,
            &remote_query_page,
            &recon_duration,
            &connector_duration,
            &store_duration,
        ];
        let mut family_names = Vec::new();
        for c in &collectors {
            family_names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
        }
        for h in histograms {
            for d in h.desc() {
                for suffix in ["_bucket", "_sum", "_count"] {
                    family_names.push(format!("{}{suffix}", d.fq_name));
                }
            }
        }
        family_names.sort();
        family_names.dedup();
        for c in collectors {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            family_names,
            requests,
            request_duration,
            upstream_errors,
            token_fetches,
            token_checks,
            login_failures,
            config_reloads,
            instances,
            remote_query_page,
            recon_runs,
            recon_objects,
            recon_duration,
            scheduler_fires,
            implicit_sync_failures,
            connector_operations,
            connector_duration,
            remote_url_up,
            remote_failovers,
            audit_dropped,
            cluster_nodes,
            store_duration,
        }
    }

    /// Every metric name a scrape can show, sorted: each registered family's name, and for
    /// histograms its `_bucket`, `_sum` and `_count` series. Families without samples yet
    /// (a vector no label set was used on) are listed too, which a scrape does not show.
    pub fn family_names(&self) -> &[String] {
        &self.family_names
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A bounded method label.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_list_unused_families_and_histogram_series() {
        let m = Metrics::new();
        let names = m.family_names();
        for name in [
            "idm_gateway_requests_total",
            "idm_gateway_cluster_nodes",
            "idm_gateway_store_operation_duration_seconds_bucket",
            "idm_gateway_store_operation_duration_seconds_sum",
            "idm_gateway_request_duration_seconds_count",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        // Nothing was observed: a scrape shows none of the vectors, the list all of them.
        let scrape = String::from_utf8(m.render()).unwrap();
        assert!(!scrape.contains("idm_gateway_cluster_nodes"));
        assert!(!names.iter().any(|n| n == "idm_gateway_no_such_metric"));
    }

    #[test]
    fn cluster_nodes_has_a_state_label_and_is_exported_once_set() {
        let m = Metrics::new();
        m.cluster_nodes.with_label_values(&["running"]).set(2);
        m.cluster_nodes.with_label_values(&["down"]).set(1);
        let scrape = String::from_utf8(m.render()).unwrap();
        assert!(scrape.contains(
            "# HELP idm_gateway_cluster_nodes Cluster nodes by state, as this node sees them"
        ));
        assert!(scrape.contains("idm_gateway_cluster_nodes{state=\"running\"} 2"));
        assert!(scrape.contains("idm_gateway_cluster_nodes{state=\"down\"} 1"));
    }
}
