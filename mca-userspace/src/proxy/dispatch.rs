//! Choosing where a request goes, on the routing snapshot it started with: a
//! `/clusters/<name>/` prefix names the cluster itself; otherwise the routes decide, reading a
//! create's object first when a route matches on what is in it.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
};

use http::{Request, StatusCode};

use super::{context::Served, object};
use crate::{
    cluster::Registry,
    reload::Routing,
    reqinfo::RequestInfo,
    route::{self, ClusterId, Decision, selector::Selector},
    status::{Reason, Status},
    upstream::UpstreamBody,
};

/// The route name logged for `/clusters/<name>/` requests.
static EXPLICIT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("explicit"));

/// Routing's decision about one request.
#[derive(Debug)]
pub struct Routed {
    /// The route that took it.
    pub route: Arc<str>,
    /// Where it sends the request.
    pub to: To,
    /// Something routing could not know (why a create's object was not read).
    pub note: Option<&'static str>,
}

/// Where a route sends a request.
#[derive(Debug)]
pub enum To {
    /// To one cluster.
    One {
        cluster: ClusterId,
        /// Where a read goes if `cluster` does not answer it.
        fallback: Option<ClusterId>,
    },
    /// To every healthy cluster of a fan-out route.
    FanOut(Vec<ClusterId>),
    /// Nowhere: none of the route's clusters is available.
    Unavailable,
}

impl Routed {
    /// Where it was served, by cluster name.
    pub fn served(&self, registry: &Registry) -> Served {
        let name = |id: &ClusterId| Arc::clone(registry.get(*id).name());
        match &self.to {
            To::One { cluster, .. } => Served::One(name(cluster)),
            To::FanOut(clusters) => Served::Merged(clusters.iter().map(name).collect()),
            To::Unavailable => Served::Nowhere,
        }
    }

    /// MCA's answer when no cluster of the route is available.
    pub fn unavailable(&self) -> Status {
        Status::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::ServiceUnavailable,
            format!("no cluster of route {:?} is available", self.route),
        )
    }
}

/// The cluster a `/clusters/<name>/` prefix names; no such cluster is a `404`.
pub fn explicit(routing: &Routing, name: &str) -> Result<Routed, Status> {
    let Some(cluster) = routing.clusters.find(name) else {
        let known: Vec<&str> = routing.clusters.iter().map(|c| &**c.name()).collect();
        return Err(Status::new(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            format!(
                "MCA has no cluster named {name:?} (it has {})",
                known.join(", ")
            ),
        ));
    };
    Ok(Routed {
        route: Arc::clone(&EXPLICIT),
        to: To::One {
            cluster,
            fallback: None,
        },
        note: None,
    })
}

/// Chooses the request's cluster (or clusters) by the routes; `info` is what it does and
/// `original_destination` where the client meant to go, if eBPF redirected it. A create may
/// have its body's start read for that, and comes back with a body that replays it.
pub async fn route(
    routing: &Routing,
    mut request: Request<UpstreamBody>,
    info: &RequestInfo,
    original_destination: Option<SocketAddr>,
) -> Result<(Routed, Request<UpstreamBody>), Status> {
    let selector = list_selector(routing, info, request.uri().query());
    let mut object = None;
    loop {
        let asked = route::Request {
            info,
            selector: selector.as_ref(),
            object: match &object {
                None => route::Object::NotRead,
                Some(Ok(meta)) => route::Object::Known(meta),
                Some(Err(_)) => route::Object::Unknown,
            },
            original_destination,
        };
        let (name, target) = match routing.router.decide(&asked) {
            Decision::NeedsObject if object.is_none() => {
                let (parts, body) = request.into_parts();
                let (read, body) = object::read(body).await.map_err(|over| {
                    Status::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        Reason::TooManyRequests,
                        over.to_string(),
                    )
                    .retry_after(1)
                })?;
                request = Request::from_parts(parts, body);
                object = Some(read);
                continue;
            }
            Decision::NeedsObject => unreachable!("the object was read"),
            Decision::Route { name, target } => (name, target),
        };
        let view = &*routing.clusters;
        let to = match target.fan_out(view) {
            Some(clusters) if clusters.is_empty() => To::Unavailable,
            Some(clusters) => To::FanOut(clusters),
            None => match target.pick(&asked, view) {
                Some(cluster) => To::One {
                    cluster,
                    // Where a read goes if the chosen cluster does not answer it at all.
                    fallback: is_read(&request)
                        .then(|| target.fallback(&asked, view, cluster))
                        .flatten(),
                },
                None => To::Unavailable,
            },
        };
        let note = match &object {
            Some(Err(unknown)) => Some(unknown.describe()),
            _ => None,
        };
        let routed = Routed {
            route: Arc::clone(name),
            to,
            note,
        };
        return Ok((routed, request));
    }
}

/// The label selector of a list, watch or deletecollection, when a route could use it.
fn list_selector(routing: &Routing, info: &RequestInfo, query: Option<&str>) -> Option<Selector> {
    if !routing.router.uses_selectors()
        || !matches!(info.verb(), "list" | "watch" | "deletecollection")
    {
        return None;
    }
    let text = crate::query::first(query?, "labelSelector")?;
    // The API server rejects a selector it cannot parse; no route claims the request.
    Selector::parse(&text).ok()
}

/// A read MCA may send twice: `GET` or `HEAD` without a body.
fn is_read(request: &Request<UpstreamBody>) -> bool {
    matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && http_body::Body::is_end_stream(request.body())
}
