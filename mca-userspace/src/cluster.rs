//! The clusters MCA forwards to: each one's upstream client (its credentials and connection
//! pool, the only place credentials live) and the requests in flight to it.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use crate::{
    config::{Config, LOCAL},
    route::{ClusterId, ClusterView},
    upstream::{self, Limits, Source, Upstream},
};

/// One cluster.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    upstream: Upstream,
    in_flight: AtomicUsize,
}

impl Cluster {
    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its API server and MCA's credentials for it.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
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
                upstream,
                in_flight: AtomicUsize::new(0),
            });
        }
        debug_assert_eq!(clusters.first().map(|c| &*c.name), Some(LOCAL));
        Ok(Self { clusters })
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

    /// Counts a request to `id` as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>, id: ClusterId) -> InFlight {
        self.clusters[id].in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self), id)
    }
}

impl ClusterView for Registry {
    fn healthy(&self, _: ClusterId) -> bool {
        // Health checking comes with the health slice of routing; until then every cluster
        // is a candidate and failures surface as the upstream's errors.
        true
    }

    fn in_flight(&self, cluster: ClusterId) -> usize {
        self.clusters[cluster].in_flight.load(Ordering::Relaxed)
    }
}
