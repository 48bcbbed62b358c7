//! The clusters MCA forwards to: each one's upstream client (its credentials and connection
//! pool, the only place credentials live), its health, and the requests in flight to it.

mod health;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, StatusCode};

pub use self::health::{Health, Transition};
use crate::{
    config::{Config, LOCAL},
    route::{ClusterId, ClusterView},
    upstream::{self, Limits, RequestClass, Source, Upstream, UpstreamBody},
};

/// One cluster.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    labels: BTreeMap<String, String>,
    upstream: Upstream,
    /// `None`: not checked (MCA without a configuration file: nowhere else to go).
    health: Option<Health>,
    in_flight: AtomicUsize,
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

    /// Its API server and MCA's credentials for it.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Whether routes may send to it, and if not why.
    pub fn health(&self) -> Result<(), String> {
        match self.health.as_ref().and_then(Health::problem) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Records the outcome of a request forwarded to it: whether it could connect.
    pub fn record(&self, outcome: Result<(), &str>) {
        let Some(health) = &self.health else {
            return;
        };
        match outcome {
            Ok(()) => health.answered(),
            Err(why) => {
                if let Some(transition) = health.connect_failed(why) {
                    self.log(&transition);
                }
            }
        }
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

/// A request counted as in flight to its cluster until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Registry>, ClusterId);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.clusters[self.1]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a cluster could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cluster {name}: {source}")]
pub struct Error {
    /// The cluster.
    pub name: String,
    /// Why.
    pub source: upstream::Error,
}

/// All clusters, by [`ClusterId`]; the first is [`LOCAL`].
#[derive(Debug)]
pub struct Registry {
    clusters: Vec<Cluster>,
}

impl Registry {
    /// Loads every cluster of `config`; `local` is where [`LOCAL`]'s configuration comes from.
    pub async fn load(config: &Config, local: &Source, limits: Limits) -> Result<Self, Error> {
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for spec in &config.clusters {
            let source = spec.source.as_ref().unwrap_or(local);
            let upstream = Upstream::load(source, limits)
                .await
                .map_err(|source| Error {
                    name: spec.name.clone(),
                    source,
                })?;
            clusters.push(Cluster {
                name: spec.name.as_str().into(),
                labels: spec.labels.clone(),
                upstream,
                health: spec.health.clone().map(Health::new),
                in_flight: AtomicUsize::new(0),
            });
        }
        debug_assert_eq!(clusters.first().map(|c| &*c.name), Some(LOCAL));
        Ok(Self { clusters })
    }

    /// Starts probing every checked cluster, each on a task that ends with the registry.
    pub fn start_probes(self: &Arc<Self>) {
        for (id, cluster) in self.clusters.iter().enumerate() {
            if cluster.health.is_some() {
                tokio::spawn(probe_forever(Arc::downgrade(self), id));
            }
        }
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
        self.clusters.iter()
    }

    /// Whether any cluster takes requests.
    pub fn any_healthy(&self) -> bool {
        (0..self.clusters.len()).any(|id| self.healthy(id))
    }

    /// Counts a request to `id` as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>, id: ClusterId) -> InFlight {
        self.clusters[id].in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self), id)
    }
}

impl ClusterView for Registry {
    fn healthy(&self, cluster: ClusterId) -> bool {
        self.clusters[cluster]
            .health
            .as_ref()
            .is_none_or(Health::is_healthy)
    }

    fn in_flight(&self, cluster: ClusterId) -> usize {
        self.clusters[cluster].in_flight.load(Ordering::Relaxed)
    }
}

/// Probes cluster `id` until the registry is gone. The first probe comes after a jittered
/// fraction of the interval, so sidecars started together do not probe together.
async fn probe_forever(registry: Weak<Registry>, id: ClusterId) {
    let mut delay = match registry.upgrade() {
        Some(registry) => match &registry.clusters[id].health {
            Some(health) => health.spec().interval.mul_f64(fastrand::f64()),
            None => return,
        },
        None => return,
    };
    loop {
        tokio::time::sleep(delay).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let cluster = &registry.clusters[id];
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
