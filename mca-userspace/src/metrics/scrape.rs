//! The series read from MCA's state when `/metrics` is scraped: nothing on the request path
//! updates them, so they cost nothing between scrapes.

use prometheus::{GaugeVec, IntCounterVec, Opts, core::Collector as _, proto::MetricFamily};

use crate::{cluster::Registry, intercept::Interception, route::ClusterView as _};

/// What MCA's state says, borrowed for one scrape.
#[derive(Debug)]
pub struct Scrape<'a> {
    /// The clusters in force.
    pub clusters: &'a Registry,
    /// Configuration reloads applied and rejected.
    pub reloads: (u64, u64),
    /// eBPF interception, when active.
    pub interception: Option<&'a Interception>,
    /// Requests refused for lack of MCA's client token, when client authentication is on.
    pub client_auth_rejected: Option<u64>,
    /// When the serving certificate expires, in seconds since the Unix epoch.
    pub certificate_expiry: i64,
    /// Tasks alive in MCA's runtime.
    pub tasks: usize,
}

impl Scrape<'_> {
    /// The families, one per series name.
    pub fn families(&self) -> Vec<MetricFamily> {
        let clusters = || self.clusters.iter().enumerate();
        let mut families = Vec::new();
        families.extend(gauges(
            "mca_cluster_healthy",
            "Whether routes may send to the cluster (1) or skip it (0).",
            &["cluster"],
            clusters().map(|(_, c)| (vec![&**c.name()], f64::from(c.health().is_ok()))),
        ));
        families.extend(gauges(
            "mca_cluster_requests_in_flight",
            "Requests MCA is serving from the cluster now, long-running ones included.",
            &["cluster"],
            clusters().map(|(id, c)| (vec![&**c.name()], self.clusters.in_flight(id) as f64)),
        ));
        let pools: Vec<_> = clusters()
            .map(|(_, c)| (&**c.name(), c.pool_stats()))
            .collect();
        families.extend(gauges(
            "mca_upstream_connections",
            "Connections open to the cluster's API server: pooled HTTP/2, pooled HTTP/1.1, \
             and other (being opened, or carrying an upgraded session).",
            &["cluster", "protocol"],
            pools.iter().flat_map(|(name, stats)| {
                let other = stats.connections - stats.http2 - stats.http1;
                [
                    (vec![*name, "h2"], stats.http2 as f64),
                    (vec![*name, "http1"], stats.http1 as f64),
                    (vec![*name, "other"], other as f64),
                ]
            }),
        ));
        families.extend(gauges(
            "mca_upstream_streams",
            "Requests in flight on the pooled HTTP/2 connections to the cluster.",
            &["cluster"],
            pools
                .iter()
                .map(|(name, stats)| (vec![*name], stats.streams as f64)),
        ));
        families.extend(counters(
            "mca_upstream_connections_opened_total",
            "Connections MCA opened (or tried to) to the cluster's API server.",
            &["cluster"],
            pools
                .iter()
                .map(|(name, stats)| (vec![*name], stats.opened)),
        ));
        families.extend(counters(
            "mca_cache_requests_total",
            "Requests for the cluster's discovery and OpenAPI documents: answered from MCA's \
             copy (hit), fetched (miss), or answered from the copy after the API server said \
             it is current (revalidated).",
            &["cluster", "result"],
            clusters().flat_map(|(_, c)| {
                let tally = c.documents();
                [
                    (vec![&**c.name(), "hit"], tally.hits),
                    (vec![&**c.name(), "miss"], tally.misses),
                    (vec![&**c.name(), "revalidated"], tally.revalidated),
                ]
            }),
        ));
        let lists: Vec<_> = clusters().map(|(_, c)| (&**c.name(), c.lists())).collect();
        let per_list = || {
            lists
                .iter()
                .flat_map(|(name, tallies)| tallies.iter().map(move |tally| (*name, tally)))
        };
        families.extend(counters(
            "mca_list_cache_requests_total",
            "LISTs at resourceVersion=0 of a resource MCA keeps a copy of (--list-cache): \
             answered from the copy (hit), or sent to the API server while the copy was \
             catching up (miss).",
            &["cluster", "resource", "result"],
            per_list().flat_map(|(name, tally)| {
                [
                    (vec![name, tally.resource.as_str(), "hit"], tally.hits),
                    (vec![name, tally.resource.as_str(), "miss"], tally.misses),
                ]
            }),
        ));
        families.extend(gauges(
            "mca_list_cache_objects",
            "Objects in MCA's copy of a resource (--list-cache).",
            &["cluster", "resource"],
            per_list()
                .map(|(name, tally)| (vec![name, tally.resource.as_str()], tally.objects as f64)),
        ));
        let (applied, rejected) = self.reloads;
        families.extend(counters(
            "mca_config_reloads_total",
            "Configuration file changes applied, and rejected (the previous configuration \
             stays in force).",
            &["result"],
            [(vec!["applied"], applied), (vec!["rejected"], rejected)],
        ));
        if let Some(interception) = self.interception {
            families.extend(counters(
                "mca_ebpf_events_total",
                "What the eBPF programs did to the application's sockets, from their maps.",
                &["event"],
                interception
                    .counters()
                    .into_iter()
                    .map(|(event, total)| (vec![event], total)),
            ));
        }
        if let Some(rejected) = self.client_auth_rejected {
            families.extend(counters(
                "mca_client_auth_rejected_total",
                "Requests refused because they lacked MCA's client token.",
                &[],
                [(vec![], rejected)],
            ));
        }
        families.extend(gauges(
            "mca_serving_certificate_expiry_timestamp_seconds",
            "When the serving certificate new handshakes get expires (it is renewed after \
             two thirds of its life).",
            &[],
            [(vec![], self.certificate_expiry as f64)],
        ));
        families.extend(gauges(
            "mca_runtime_tasks",
            "Tasks alive in MCA's runtime: connections, requests, tunnels, probes.",
            &[],
            [(vec![], self.tasks as f64)],
        ));
        families
    }
}

/// A gauge family holding `samples`.
fn gauges<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    samples: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
) -> Vec<MetricFamily> {
    let family = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    for (values, value) in samples {
        family.with_label_values(&values).set(value);
    }
    family.collect()
}

/// A counter family holding `samples`, totals kept elsewhere.
fn counters<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    samples: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
) -> Vec<MetricFamily> {
    let family = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    for (values, total) in samples {
        family.with_label_values(&values).inc_by(total);
    }
    family.collect()
}
