//! The clusters MCA forwards to: each one's upstream client (its credentials and connection
//! pool, the only place credentials live), its health, its cached discovery and OpenAPI
//! documents and LIST copies, and the requests in flight to it.
//!
//! [`Cluster::send`] is the only way out to a cluster's API server for a request on a client's
//! behalf, the proxy's, a fan-out's or merged discovery's alike, so what it tracks cannot
//! drift between callers. It is a stack of layers, each answering what it can:
//!
//! ```text
//! send ─▶ LIST copies (resourceVersion=0 of a cached resource)
//!      ─▶ documents (discovery and OpenAPI, revalidated after their TTL)
//!      ─▶ forward: counted in flight until the answer's body is dropped; whether the
//!         cluster answered at all goes to its health
//!      ─▶ upstream (credentials, deadline, connection pool)
//! ```
//!
//! Only a cluster's own machinery (its health probes, its list reflectors) talks to the
//! upstream below the stack.

mod documents;
mod endpoints;
mod health;
pub mod lists;

use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::Duration,
};

use http::{Request, Response, StatusCode, Uri};
use tower::BoxError;

pub use self::{
    documents::{Documents, Tally},
    health::{Health, Transition},
    lists::Lists,
};
use crate::{
    config::{Config, LOCAL},
    limits::memory,
    route::{ClusterId, ClusterView},
    upstream::{self, InFlight, Limits, RequestClass, Source, Stats, Upstream, UpstreamBody},
};

/// How many times its text a parsed JSON answer takes, roughly (a `serde_json::Value` of an
/// API object: maps, strings and numbers in their own allocations), for the budget.
const PARSED: usize = 3;

/// One cluster.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    /// Everything it was built from, to tell on reload whether it changed. Holds credentials:
    /// never logged.
    fingerprint: String,
    labels: BTreeMap<String, String>,
    upstream: Upstream,
    /// `None`: not checked (MCA without a configuration file: nowhere else to go).
    health: Option<Health>,
    documents: Documents,
    lists: Lists,
    in_flight: InFlight,
}

/// How clusters are set up, beyond their configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bounds of each cluster's connection pool.
    pub limits: Limits,
    /// How long a discovery or OpenAPI document is served from memory before MCA asks the API
    /// server whether it changed; zero caches none.
    pub document_ttl: Duration,
    /// Resources each cluster keeps a watch-fed copy of, answering LISTs with
    /// `resourceVersion=0`.
    pub list_cache: Arc<[lists::Resource]>,
}

impl Cluster {
    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Its API server's URL.
    pub fn url(&self) -> &Uri {
        self.upstream.url()
    }

    /// MCA's namespace in it.
    pub fn namespace(&self) -> &str {
        self.upstream.namespace()
    }

    /// What its connection pool holds now.
    pub fn pool_stats(&self) -> Stats {
        self.upstream.stats()
    }

    /// How its cached documents were served.
    pub fn documents(&self) -> Tally {
        self.documents.tally()
    }

    /// How LISTs of its cached resources were answered.
    pub fn lists(&self) -> Vec<lists::Tally> {
        self.lists.tally()
    }

    /// Sends a request to it, answering requests for discovery and OpenAPI documents from
    /// its cache (see [`Documents`]) and LISTs at `resourceVersion=0` of cached resources
    /// from their copies (see [`Lists`]); what goes on to the API server is
    /// [forwarded](Self::forward).
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        class: RequestClass,
    ) -> Result<Response<upstream::Body>, BoxError> {
        if let Some(answer) = self.lists.answer(&request) {
            return Ok(answer);
        }
        if let Some(key) = self.documents.key(&request) {
            let fetch = |request| self.forward(request, RequestClass::Short);
            // Boxed, so the future of every other request is not as large as this one's.
            return Box::pin(self.documents.serve(key, request, fetch)).await;
        }
        self.forward(request, class).await
    }

    /// Sends a request to the API server. It counts as in flight until its answer's body is
    /// dropped (for an upgrade, until its tunnel closes); an answer, whatever its status,
    /// tells the cluster's health that it is reachable, a failure to connect that it may not
    /// be. MCA's own refusals (its deadline, its limits) are not the cluster's fault and tell
    /// it nothing.
    async fn forward(
        &self,
        request: Request<UpstreamBody>,
        class: RequestClass,
    ) -> Result<Response<upstream::Body>, BoxError> {
        let in_flight = self.in_flight.enter();
        let sent = self.upstream.send(request, class).await;
        if let Some(health) = &self.health {
            match &sent {
                Ok(_) => health.answered(),
                Err(error) if upstream::is_connect_failure(error) => {
                    let why = upstream::failure_status(error).message;
                    if let Some(transition) = health.connect_failed(&why) {
                        self.log(&transition);
                    }
                }
                Err(_) => {}
            }
        }
        sent.map(|response| response.map(|body| body.counted(in_flight)))
    }

    /// Whether routes may send to it, and if not why.
    pub fn health(&self) -> Result<(), String> {
        match self.health.as_ref().and_then(Health::problem) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Sends a read and parses its JSON answer, bounded in `limit` bytes and `timeout`. A non-2xx answer is an error with the
    /// API server's message; the content type comes with a document. The answer is held
    /// against the process's [`memory::ANSWERS`] while it is read and parsed (its text and,
    /// estimated, its parsed form); with the budget spent it is a `429`.
    pub async fn read_json(
        &self,
        request: Request<UpstreamBody>,
        limit: usize,
        timeout: Duration,
    ) -> Result<(String, serde_json::Value), (StatusCode, String)> {
        let asked = async {
            let response = self.open_read(request).await?;
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let over = |over: memory::OverBudget| (StatusCode::TOO_MANY_REQUESTS, over.to_string());
            let mut held = memory::ANSWERS.hold();
            let mut body = response.into_body();
            let mut text = bytes::BytesMut::new();
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                let frame = frame.map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if text.len() + data.len() > limit {
                    return Err((
                        StatusCode::BAD_GATEWAY,
                        format!("the answer is larger than {limit} bytes"),
                    ));
                }
                text.extend_from_slice(&data);
                held.resize(text.len()).map_err(over)?;
            }
            held.resize(text.len() * (1 + PARSED)).map_err(over)?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|error| (StatusCode::BAD_GATEWAY, format!("not JSON: {error}")))?;
            Ok((content_type, value))
        };
        tokio::time::timeout(timeout, asked)
            .await
            .unwrap_or_else(|_| {
                Err((
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {timeout:?}"),
                ))
            })
    }

    /// Sends a read and returns its successful answer, its body still to be read. A non-2xx answer is an error with the
    /// API server's message (from the first 64 KiB of its Status).
    pub async fn open_read(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<http::Response<upstream::Body>, (StatusCode, String)> {
        let response = self
            .send(request, RequestClass::Short)
            .await
            .map_err(|error| {
                let status = upstream::failure_status(&error);
                (status.code, status.message)
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = upstream::error_message(response.into_body()).await;
        Err((status, format!("answered {status}: {message}")))
    }

    fn log(&self, transition: &Transition) {
        match transition {
            Transition::Down(why) => {
                tracing::warn!(cluster = %self.name, %why, "cluster is unhealthy; its routes skip it");
            }
            Transition::Up => tracing::info!(cluster = %self.name, "cluster is healthy again"),
        }
    }
}

/// Why a cluster could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cluster {name}: {source}")]
pub struct Error {
    /// The cluster's name.
    pub name: String,
    /// What failed loading its credentials or connection settings.
    pub source: upstream::Error,
}

/// All clusters, by [`ClusterId`]; the first is [`LOCAL`].
#[derive(Debug)]
pub struct Registry {
    clusters: Vec<Arc<Cluster>>,
}

impl Registry {
    /// Loads every cluster of `config`; `local` is where [`LOCAL`]'s configuration comes from.
    /// A cluster of `previous` (the configuration being replaced) that is unchanged is kept as
    /// it is, with its connections, health and probes.
    pub async fn load(
        config: &Config,
        local: &Source,
        settings: &Settings,
        previous: Option<&Registry>,
    ) -> Result<Self, Error> {
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for spec in &config.clusters {
            let fingerprint = fingerprint(spec);
            let kept = previous.and_then(|previous| {
                previous
                    .clusters
                    .iter()
                    .find(|c| *c.name == *spec.name && c.fingerprint == fingerprint)
            });
            if let Some(kept) = kept {
                clusters.push(Arc::clone(kept));
                continue;
            }
            let source = spec.source.as_ref().unwrap_or(local);
            let upstream = Upstream::load(source, settings.limits)
                .await
                .map_err(|source| Error {
                    name: spec.name.clone(),
                    source,
                })?;
            let name: Arc<str> = spec.name.as_str().into();
            let lists = Lists::start(&name, Arc::clone(&settings.list_cache), &upstream);
            let cluster = Arc::new(Cluster {
                name,
                fingerprint,
                labels: spec.labels.clone(),
                upstream,
                health: spec.health.clone().map(Health::new),
                documents: Documents::new(settings.document_ttl),
                lists,
                in_flight: InFlight::default(),
            });
            if cluster.health.is_some() {
                tokio::spawn(probe_forever(Arc::downgrade(&cluster)));
            }
            clusters.push(cluster);
        }
        debug_assert_eq!(clusters.first().map(|c| &*c.name), Some(LOCAL));
        Ok(Self { clusters })
    }

    /// Whether this registry holds `cluster` itself (not just one of the same name): how a
    /// reload tells which clusters it carried over.
    pub fn holds(&self, cluster: &Cluster) -> bool {
        self.clusters.iter().any(|c| std::ptr::eq(&**c, cluster))
    }

    /// The cluster MCA runs in (or that `--kubeconfig` names).
    pub fn local(&self) -> &Cluster {
        &self.clusters[0]
    }

    /// A cluster by id.
    pub fn get(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id]
    }

    /// A cluster's id by name.
    pub fn find(&self, name: &str) -> Option<ClusterId> {
        self.clusters.iter().position(|c| &*c.name == name)
    }

    /// Every cluster.
    pub fn iter(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.iter().map(|c| &**c)
    }

    /// Whether any cluster takes requests.
    pub fn any_healthy(&self) -> bool {
        (0..self.clusters.len()).any(|id| self.healthy(id))
    }
}

/// What a cluster is built from: its source (credentials included, so never logged), labels
/// and health settings.
fn fingerprint(spec: &crate::config::ClusterSpec) -> String {
    let source = match &spec.source {
        None => "local".to_owned(),
        Some(Source::Inline(kubeconfig)) => {
            serde_json::to_string(kubeconfig).expect("a kubeconfig serializes")
        }
        Some(other) => format!("{other:?}"),
    };
    format!("{source}\n{:?}\n{:?}", spec.labels, spec.health)
}

impl ClusterView for Registry {
    fn healthy(&self, cluster: ClusterId) -> bool {
        self.clusters[cluster]
            .health
            .as_ref()
            .is_none_or(Health::is_healthy)
    }

    fn in_flight(&self, cluster: ClusterId) -> usize {
        self.clusters[cluster].in_flight.get()
    }
}

/// Probes a cluster until it is gone (no configuration uses it any more). The first probe
/// comes after a jittered fraction of the interval, so sidecars started together do not
/// probe together.
async fn probe_forever(cluster: Weak<Cluster>) {
    let mut delay = match cluster.upgrade().as_deref().and_then(|c| c.health.as_ref()) {
        Some(health) => health.spec().interval.mul_f64(fastrand::f64()),
        None => return,
    };
    loop {
        tokio::time::sleep(delay).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(health) = &cluster.health else {
            return;
        };
        let outcome = probe(
            &cluster.upstream,
            health.spec().path.as_str(),
            health.spec().timeout,
        )
        .await;
        if let Some(transition) = health.probed(outcome) {
            cluster.log(&transition);
        }
        delay = health.next_probe_in(fastrand::f64());
    }
}

/// One probe: `GET path` with the cluster's credentials, passed by a `200` within `timeout`.
async fn probe(upstream: &Upstream, path: &str, timeout: Duration) -> Result<(), String> {
    let request = Request::get(path)
        .body(UpstreamBody::default())
        .map_err(|error| error.to_string())?;
    let probed = async {
        let response = upstream
            .send(request, RequestClass::Short)
            .await
            .map_err(|error| upstream::failure_status(&error).message)?;
        let status = response.status();
        // Read the (tiny) body, so an HTTP/1.1 connection can be reused.
        let body = http_body_util::Limited::new(response.into_body(), 64 << 10);
        let _ = http_body_util::BodyExt::collect(body).await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{path} answered {status}"))
        }
    };
    tokio::time::timeout(timeout, probed)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}
