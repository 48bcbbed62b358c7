//! The admin listener: health endpoints for the kubelet, off the data path.
//!
//! `/livez` answers 200 while the process serves at all. `/readyz` answers 200 only once the
//! fake ServiceAccount is written and the proxy listens (so a sidecar startup probe holds the
//! application back until MCA can serve it) and while at least one cluster is healthy, and
//! 503 again while MCA drains on shutdown; `/readyz?verbose` lists each check as the API
//! server does (`[+]cluster-east ok`, `[-]cluster-west failed: ...`).
//! `/clients` says whether client authentication is on and how many requests it refused;
//! `/interception` reports whether eBPF interception is active and its counters; `/upstream`
//! each cluster's API server, connections and the requests in flight on them, and the
//! configuration reloads applied and rejected; `/runtime` the tasks alive in MCA's runtime
//! (a leak shows there first) and its worker threads; `/metrics` every series in the Prometheus text format
//! ([`crate::metrics`]).
//!
//! The listener binds every address (the kubelet probes the pod's IP, and Prometheus scrapes
//! it), so it is reachable from other pods. To them it serves what they need, `/livez`,
//! `/readyz` (without `verbose`) and `/metrics`; the reports that name clusters, servers and
//! their problems answer only on loopback (`kubectl port-forward`, or a container of the
//! pod). Its connections are bounded ([`CONNECTIONS`], [`PER_PEER`], [`HEADER_READ`],
//! [`LIFETIME`], [`BUFFER`]) so that no peer can take the probes, and with them the
//! application's API access, down.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{
    client_auth::ClientAuth,
    cluster::Registry,
    intercept::Interception,
    limits::gate::Gate,
    metrics::{Metrics, Scrape},
    reload::Live,
    tls::ServingCert,
};

/// Whether MCA is ready to serve applications.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks MCA ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether MCA is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub struct State {
    /// Whether MCA serves.
    pub readiness: Readiness,
    /// eBPF interception, when active.
    pub interception: Option<Arc<Interception>>,
    /// The routing in force.
    pub live: Arc<Live>,
    /// Client authentication, when on.
    pub client_auth: Option<Arc<ClientAuth>>,
    /// What the request path counts.
    pub metrics: Arc<Metrics>,
    /// The serving certificate, for its expiry.
    pub serving: Arc<ServingCert>,
}

/// Connections open at once: probes and a scrape or two need a handful.
pub const CONNECTIONS: usize = 64;
/// Connections open at once from one address: the kubelet's probes, a scraper, a person.
pub const PER_PEER: usize = 8;
/// Time to send a request's head, on a new connection or between keep-alive requests.
pub const HEADER_READ: Duration = Duration::from_secs(5);
/// A connection's whole life: every answer here takes milliseconds.
pub const LIFETIME: Duration = Duration::from_secs(30);
/// The read buffer, which bounds a request's head (hyper's smallest is 8 KiB).
pub const BUFFER: usize = 16 << 10;

/// Serves the admin endpoints on `listener` forever, within the bounds above.
pub async fn serve(listener: TcpListener, state: State) {
    let gate = Gate::new(CONNECTIONS, PER_PEER);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ)
        .max_buf_size(BUFFER);
    loop {
        let (tcp, peer, slot) = gate.accept(&listener).await;
        let (state, http) = (state.clone(), http.clone());
        let local = peer.ip().to_canonical().is_loopback();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                std::future::ready(Ok::<_, Infallible>(route(&request, &state, local)))
            });
            let connection = http.serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(LIFETIME, connection).await;
            drop(slot);
        });
    }
}

/// The answer to `request` from a peer on loopback (`local`) or elsewhere.
fn route(request: &Request<Incoming>, state: &State, local: bool) -> Response<Full<Bytes>> {
    let routing = state.live.load();
    let clusters = &routing.clusters;
    let path = request.uri().path();
    let (status, body) = match (request.method(), path) {
        (&Method::GET | &Method::HEAD, _)
            if local || matches!(path, "/livez" | "/readyz" | "/metrics") =>
        {
            match path {
                "/interception" => return interception_report(state.interception.as_deref()),
                "/upstream" => return upstream_report(clusters, &state.live),
                "/clients" => return clients_report(state.client_auth.as_deref()),
                "/runtime" => return runtime_report(),
                "/metrics" => return metrics(clusters, state),
                "/livez" => (StatusCode::OK, "ok\n".to_owned()),
                "/readyz" => {
                    let verbose = local
                        && request
                            .uri()
                            .query()
                            .is_some_and(|q| crate::query::first(q, "verbose").is_some());
                    readyz(&state.readiness, clusters, verbose)
                }
                _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
            }
        }
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "not found (served on loopback only: kubectl port-forward)\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or HEAD only\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// `/metrics`: the request path's series and the state's, in the Prometheus text format.
fn metrics(clusters: &Registry, state: &State) -> Response<Full<Bytes>> {
    let scrape = Scrape {
        clusters,
        reloads: state.live.reloads(),
        interception: state.interception.as_deref(),
        client_auth_rejected: state.client_auth.as_ref().map(|auth| auth.rejected()),
        certificate_expiry: state.serving.expires(),
        tasks: alive_tasks(),
    };
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.render(&scrape))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// `/runtime`: `{"tasks": N, "workers": W}`, the tasks alive in MCA's runtime (connections,
/// requests, tunnels, probes, watches of files) and the threads serving them.
fn runtime_report() -> Response<Full<Bytes>> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    json(&serde_json::json!({ "tasks": alive_tasks(), "workers": workers }))
}

/// `/readyz`: ready when provisioned, not draining, and some cluster is healthy.
fn readyz(readiness: &Readiness, clusters: &Registry, verbose: bool) -> (StatusCode, String) {
    let serving = readiness.get();
    let mut lines = vec![if serving {
        "[+]serving ok".to_owned()
    } else {
        "[-]serving failed: not provisioned yet, or shutting down".to_owned()
    }];
    for cluster in clusters.iter() {
        lines.push(match cluster.health() {
            Ok(()) => format!("[+]cluster-{} ok", cluster.name()),
            Err(why) => format!("[-]cluster-{} failed: {why}", cluster.name()),
        });
    }
    let ready = serving && clusters.any_healthy();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verdict = if ready { "ok" } else { "not ready" };
    let body = if verbose {
        let outcome = if ready { "passed" } else { "failed" };
        format!("{}\nreadyz check {outcome}\n", lines.join("\n"))
    } else {
        format!("{verdict}\n")
    };
    (status, body)
}

/// `/interception`: whether eBPF interception is active, where, and its counters.
fn interception_report(interception: Option<&Interception>) -> Response<Full<Bytes>> {
    let report = match interception {
        Some(interception) => serde_json::json!({
            "mode": "ebpf",
            "cgroup": interception.cgroup(),
            "counters": interception.counters().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        None => serde_json::json!({"mode": "env"}),
    };
    json(&report)
}

/// `/clients`: whether applications must present MCA's token, and how many did not.
fn clients_report(client_auth: Option<&ClientAuth>) -> Response<Full<Bytes>> {
    json(&match client_auth {
        Some(auth) => serde_json::json!({"auth": "token", "rejected": auth.rejected()}),
        None => serde_json::json!({"auth": "none"}),
    })
}

/// `/upstream`: each cluster's API server and its connection pool, and the configuration
/// reloads applied and rejected.
fn upstream_report(clusters: &Registry, live: &Live) -> Response<Full<Bytes>> {
    let clusters: Vec<_> = clusters
        .iter()
        .map(|cluster| {
            serde_json::json!({
                "name": &**cluster.name(),
                "url": cluster.url().to_string(),
                "labels": cluster.labels(),
                "healthy": cluster.health().is_ok(),
                "pool": cluster.pool_stats(),
                "documents": cluster.documents(),
            })
        })
        .collect();
    let (applied, rejected) = live.reloads();
    json(&serde_json::json!({
        "clusters": clusters,
        "reloads": {"applied": applied, "rejected": rejected},
    }))
}

fn json(report: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(report.to_string())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
