//! A watch-fed copy of chosen resources (`--list-cache`), per cluster, answering LISTs with
//! `resourceVersion=0` as the API server answers them from its watch cache.
//!
//! Controllers and informers start (and restart) with such a LIST; on a busy cluster each is
//! a large read the API server serves to every sidecar. With the resource cached, MCA keeps
//! one LIST+WATCH per cluster and answers those LISTs from memory. Requests the copy cannot
//! answer exactly ([`Query`]) go to the API server, as do all requests while the copy is
//! catching up.

mod query;
mod reflector;
mod store;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use http::{HeaderValue, Method, Request, Response, header};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use self::query::{Query, Resource};
use self::store::Store;
use crate::upstream::{Body, Upstream, UpstreamBody};

/// A cluster's cached resources.
#[derive(Debug, Default)]
pub struct Lists {
    resources: Arc<[Resource]>,
    informers: Vec<Arc<Informer>>,
    /// Ends the reflectors when the cluster goes.
    _stop: Option<DropGuard>,
}

/// One resource's copy and how requests for it were answered.
#[derive(Debug)]
struct Informer {
    resource: Resource,
    store: Store,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How one resource's LISTs were answered, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The resource, as configured.
    pub resource: String,
    /// Answered from the copy.
    pub hits: u64,
    /// Answerable, but sent to the API server because the copy was not synced.
    pub misses: u64,
    /// Objects in the copy.
    pub objects: usize,
}

impl Lists {
    /// Starts keeping `resources` of `cluster` (reached through `upstream`) current.
    pub fn start(cluster: &Arc<str>, resources: Arc<[Resource]>, upstream: &Upstream) -> Self {
        if resources.is_empty() {
            return Self::default();
        }
        let stop = CancellationToken::new();
        let informers: Vec<_> = resources
            .iter()
            .map(|resource| {
                let informer = Arc::new(Informer {
                    resource: resource.clone(),
                    store: Store::default(),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                });
                let reflect =
                    reflector::run(Arc::clone(&informer), upstream.clone(), Arc::clone(cluster));
                let stop = stop.clone();
                tokio::spawn(async move { stop.run_until_cancelled(reflect).await });
                informer
            })
            .collect();
        Self {
            resources,
            informers,
            _stop: Some(stop.drop_guard()),
        }
    }

    /// The answer to `request` from a copy, when it is a LIST one can answer.
    pub fn answer(&self, request: &Request<UpstreamBody>) -> Option<Response<Body>> {
        if self.informers.is_empty() || request.method() != Method::GET {
            return None;
        }
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .map(|accept| accept.to_str().unwrap_or("?"));
        let uri = request.uri();
        let query = Query::parse(
            &self.resources,
            uri.path(),
            uri.query().unwrap_or_default(),
            accept,
        )?;
        let informer = &self.informers[query.resource];
        let Some(list) = informer.store.render(&query) else {
            informer.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        informer.hits.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Body::buffered(list));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-mca-cache", HeaderValue::from_static("hit"));
        Some(response)
    }

    /// How each resource's LISTs were answered.
    pub fn tally(&self) -> Vec<Tally> {
        self.informers
            .iter()
            .map(|informer| Tally {
                resource: informer.resource.to_string(),
                hits: informer.hits.load(Ordering::Relaxed),
                misses: informer.misses.load(Ordering::Relaxed),
                objects: informer.store.len(),
            })
            .collect()
    }
}
