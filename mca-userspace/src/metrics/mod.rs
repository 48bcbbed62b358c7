//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Two kinds: what the request path counts as requests end (requests, their latency, bytes,
//! open long-running requests), kept in collectors shared with the proxy; and what MCA's state
//! says at scrape time (clusters, connection pools, eBPF counters, the serving certificate,
//! configuration reloads), read when scraped so the request path never updates them. Names
//! follow Prometheus conventions (`mca_` prefix, base units, `_total` counters) and mirror the
//! API server's own (`apiserver_request_total`, `apiserver_request_duration_seconds`), so the
//! same dashboards read both. No label ever holds a path, a name, a namespace or a credential,
//! and each has a bounded set of values ([`labels`]).

pub mod labels;
mod scrape;

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, core::Collector as _,
    proto::MetricFamily,
};

use self::labels::Resources;
pub use self::scrape::Scrape;
use crate::reqinfo::RequestInfo;

/// The API server's request-duration buckets (seconds), with two finer ones in front: MCA adds
/// microseconds, and a loopback round trip takes a millisecond or less.
const DURATION_BUCKETS: [f64; 25] = [
    0.001, 0.0025, 0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0,
    6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The label names of a request's series, in order.
const REQUEST_LABELS: [&str; 5] = ["cluster", "verb", "group", "resource", "subresource"];

/// The request path's collectors.
#[derive(Debug)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    long_running: IntGaugeVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    resources: Resources,
    /// The request series' label combinations so far (hashed: no allocation per request),
    /// up to [`labels::SERIES`].
    series: labels::Seen<u64>,
}

/// What kind of long-running request holds a connection open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongRunning {
    /// A watch.
    Watch,
    /// An upgraded connection: exec, attach, port-forward.
    Tunnel,
    /// Any other streamed response: `logs -f`, proxy.
    Stream,
}

impl LongRunning {
    fn label(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Tunnel => "tunnel",
            Self::Stream => "stream",
        }
    }
}

/// A long-running request counted as open until dropped.
#[derive(Debug)]
pub struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How one request ended, as the metrics see it.
#[derive(Debug)]
pub struct Ended<'a> {
    /// What it did.
    pub info: &'a RequestInfo,
    /// The cluster that served it; `*` for several, empty for none.
    pub cluster: &'a str,
    /// The status sent to the client; 0 if the client left before one was.
    pub code: u16,
    /// From arrival to the end of the response.
    pub elapsed: Duration,
    /// Body (or tunnel) bytes from the client.
    pub bytes_in: u64,
    /// Body (or tunnel) bytes to the client.
    pub bytes_out: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let with_code = [&REQUEST_LABELS[..], &["code"]].concat();
        Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "mca_requests_total",
                    "Requests served, by cluster, verb, group, resource, subresource and \
                     the HTTP status sent to the client (0: the client left first).",
                ),
                &with_code,
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "mca_request_duration_seconds",
                    "From a request's arrival to the end of its response; long-running \
                     requests (watch, exec, attach, port-forward, logs, proxy) are not \
                     observed.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &REQUEST_LABELS,
            )
            .expect("valid metric"),
            long_running: IntGaugeVec::new(
                Opts::new(
                    "mca_long_running_requests",
                    "Long-running requests open now: watches, tunnels (exec, attach, \
                     port-forward) and other streams (logs -f, proxy).",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            request_bytes: IntCounterVec::new(
                Opts::new(
                    "mca_request_bytes_total",
                    "Request body bytes received from clients (for tunnels, bytes from the \
                     client), by cluster.",
                ),
                &["cluster"],
            )
            .expect("valid metric"),
            response_bytes: IntCounterVec::new(
                Opts::new(
                    "mca_response_bytes_total",
                    "Response body bytes sent to clients (for tunnels, bytes to the client), \
                     by cluster.",
                ),
                &["cluster"],
            )
            .expect("valid metric"),
            resources: Resources::default(),
            series: labels::Seen::new(labels::SERIES),
        }
    }
}

impl Metrics {
    /// Counts a long-running request as open for as long as the result lives.
    pub fn open(&self, kind: LongRunning) -> Open {
        let gauge = self.long_running.with_label_values(&[kind.label()]);
        gauge.inc();
        Open(gauge)
    }

    /// Records a request that has ended.
    pub fn ended(&self, ended: &Ended<'_>) {
        let resource = self.resources.labels(ended.info);
        let mut labels = [
            ended.cluster,
            labels::verb(ended.info),
            resource.group,
            resource.resource,
            resource.subresource,
        ];
        let mut code = labels::code(ended.code);
        if !self.series.admit(labels::hash(&(&labels, &code))) {
            // Past the bound, only the cluster (bounded by the configuration) is told apart.
            labels[1..].fill(labels::OTHER);
            code = labels::OTHER.to_owned();
        }
        self.requests
            .with_label_values(&[&labels[..], &[code.as_str()]].concat())
            .inc();
        if !ended.info.is_long_running() {
            self.duration
                .with_label_values(&labels)
                .observe(ended.elapsed.as_secs_f64());
        }
        if ended.bytes_in > 0 {
            self.request_bytes
                .with_label_values(&[ended.cluster])
                .inc_by(ended.bytes_in);
        }
        if ended.bytes_out > 0 {
            self.response_bytes
                .with_label_values(&[ended.cluster])
                .inc_by(ended.bytes_out);
        }
    }

    /// Every series, the request path's and the state's, in the Prometheus text format.
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        encode(self.families().chain(scrape.families()))
    }

    /// The request path's families.
    fn families(&self) -> impl Iterator<Item = MetricFamily> {
        [
            self.requests.collect(),
            self.duration.collect(),
            self.long_running.collect(),
            self.request_bytes.collect(),
            self.response_bytes.collect(),
        ]
        .into_iter()
        .flatten()
    }
}

/// The families that have series, sorted by name, in the Prometheus text format.
fn encode(families: impl Iterator<Item = MetricFamily>) -> String {
    let mut families: Vec<_> = families
        .filter(|family| !family.get_metric().is_empty())
        .collect();
    families.sort_by(|a, b| a.name().cmp(b.name()));
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .expect("the families are well formed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended<'a>(info: &'a RequestInfo, cluster: &'a str, code: u16) -> Ended<'a> {
        Ended {
            info,
            cluster,
            code,
            elapsed: Duration::from_millis(3),
            bytes_in: 0,
            bytes_out: 120,
        }
    }

    fn series(metrics: &Metrics) -> String {
        encode(metrics.families())
    }

    #[test]
    fn requests_are_counted_and_timed_long_running_ones_only_counted() {
        let metrics = Metrics::default();
        let get = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods/p");
        let watch = RequestInfo::parse("GET", "/apis/apps/v1/deployments?watch=1");
        metrics.ended(&ended(&get, "east", 200));
        metrics.ended(&ended(&get, "east", 200));
        metrics.ended(&ended(&watch, "west", 200));
        let text = series(&metrics);
        assert!(
            text.contains(
                r#"mca_requests_total{cluster="east",code="200",group="",resource="pods",subresource="",verb="get"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"mca_requests_total{cluster="west",code="200",group="apps",resource="deployments",subresource="",verb="watch"} 1"#
        ));
        assert!(text.contains(
            r#"mca_request_duration_seconds_bucket{cluster="east",group="",resource="pods",subresource="",verb="get",le="0.005"} 2"#
        ));
        assert!(!text.contains(r#"mca_request_duration_seconds_count{cluster="west""#));
        assert!(text.contains(r#"mca_response_bytes_total{cluster="east"} 240"#));
        // No path, namespace or name in any label.
        assert!(!text.contains("namespaces") && !text.contains(r#""a""#));
    }

    #[test]
    fn series_an_application_can_multiply_are_bounded() {
        let metrics = Metrics::default();
        // A service proxy answers with whatever code the app's server picks.
        let proxy = RequestInfo::parse("GET", "/api/v1/namespaces/a/services/s/proxy/x");
        for code in 100..1000 {
            metrics.ended(&ended(&proxy, "east", code));
        }
        let text = series(&metrics);
        let counted = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert!(
            counted("mca_requests_total{") <= 70,
            "{}",
            counted("mca_requests_total{")
        );
        assert!(text.contains(r#"code="other""#));
        // Every resource × verb × code: no more than SERIES combinations.
        for resource in 0..labels::RESOURCES {
            let info = RequestInfo::parse("GET", &format!("/apis/x.io/v1/r{resource}"));
            for code in [
                200, 201, 202, 204, 400, 401, 403, 404, 409, 410, 422, 429, 500,
            ] {
                metrics.ended(&ended(&info, "east", code));
            }
        }
        let text = series(&metrics);
        let counted = text
            .lines()
            .filter(|l| l.starts_with("mca_requests_total{"))
            .count();
        assert!(counted <= labels::SERIES + 1, "{counted}");
        assert!(text.contains(
            r#"mca_requests_total{cluster="east",code="other",group="other",resource="other",subresource="other",verb="other"}"#
        ));
    }

    #[test]
    fn open_long_running_requests_are_counted_until_dropped() {
        let metrics = Metrics::default();
        let watch = metrics.open(LongRunning::Watch);
        let tunnels = [
            metrics.open(LongRunning::Tunnel),
            metrics.open(LongRunning::Tunnel),
        ];
        let text = series(&metrics);
        assert!(text.contains(r#"mca_long_running_requests{kind="watch"} 1"#));
        assert!(text.contains(r#"mca_long_running_requests{kind="tunnel"} 2"#));
        drop((watch, tunnels));
        let text = series(&metrics);
        assert!(text.contains(r#"mca_long_running_requests{kind="watch"} 0"#));
        assert!(text.contains(r#"mca_long_running_requests{kind="tunnel"} 0"#));
    }
}
