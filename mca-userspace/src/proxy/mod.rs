//! The forwarding path. Read top to bottom:
//!
//! accept → TLS (MCA's serving certificate, HTTP/2 or HTTP/1.1 by ALPN) → parse request info →
//! authenticate the client (MCA's own token) → strip the client's credentials → route to a
//! cluster → forward with that cluster's
//! credentials (or tunnel an upgrade) → stream the response back → one access-log line when
//! the exchange is over.
//!
//! Errors MCA answers itself are Kubernetes `Status` objects; the API server's own error
//! responses pass through untouched.

mod access_log;
mod discovery;
pub mod headers;
mod object;
mod upgrade;

use std::{
    borrow::Cow,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;

use self::access_log::{AccessLog, Counted};
use crate::{
    client_auth::ClientAuth,
    intercept::Interception,
    limits::{
        Limits,
        connection::{Active, CANCEL_BUDGET, CANCEL_WINDOW, Close, Connection},
        deadline::Deadline,
        gate,
        in_flight::InFlight,
    },
    metrics::{LongRunning, Metrics},
    reload::{Live, Routing},
    reqinfo::RequestInfo,
    route::ClusterView,
    route::{self, ClusterId, Decision, selector::Selector},
    status::{Reason, Status},
    trace_context::TraceContext,
    upstream::{RequestClass, UpstreamBody, copy_head},
};

/// The body of every response MCA sends to a client.
pub type ResponseBody = UnsyncBoxBody<Bytes, tower::BoxError>;

/// The route name logged for `/clusters/<name>/` requests.
static EXPLICIT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("explicit"));
/// The route name logged for merged discovery.
static DISCOVERY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("discovery"));

/// The proxy: the routing in force (clusters and routes, replaced whole on reload), the
/// upgraded connections still open, and the eBPF interception (if active) that knows where
/// redirected clients meant to go.
#[derive(Debug)]
pub struct Proxy {
    live: Arc<Live>,
    limits: Limits,
    in_flight: InFlight,
    /// Who may use MCA; `None` with `--client-auth=none`.
    client_auth: Option<Arc<ClientAuth>>,
    interception: Option<Arc<Interception>>,
    tunnels: TaskTracker,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A proxy routing as `live` says at each request, for clients `client_auth` admits,
    /// within `limits`, counting what it serves in `metrics`.
    pub fn new(
        live: Arc<Live>,
        limits: Limits,
        client_auth: Option<Arc<ClientAuth>>,
        interception: Option<Arc<Interception>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            live,
            in_flight: InFlight::new(
                limits.max_requests_inflight,
                limits.max_mutating_requests_inflight,
            ),
            limits,
            client_auth,
            interception,
            tunnels: TaskTracker::new(),
            metrics,
        })
    }

    /// Accepts connections on `listeners` until `shutdown` fires, then stops accepting and
    /// lets requests and tunnels in flight finish for up to `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<TcpListener>,
        tls: TlsAcceptor,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let http = self.limits.http();
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections as usize));
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
        let mut acceptors = tokio::task::JoinSet::new();
        for listener in listeners {
            acceptors.spawn(accept_loop(
                listener,
                Arc::clone(&slots),
                accepted_tx.clone(),
            ));
        }
        loop {
            let (tcp, peer, slot) = tokio::select! {
                Some(connection) = accepted.recv() => connection,
                () = shutdown.cancelled() => break,
            };
            // Look the original destination up now: the entry is keyed by this connection's
            // client end, which a later connection may reuse.
            let original = self
                .interception
                .as_ref()
                .and_then(|interception| interception.original_destination(peer));
            let client = Client {
                peer,
                original,
                shutdown: shutdown.clone(),
                _slot: slot,
            };
            connections.spawn(Arc::clone(&self).serve_connection(
                tcp,
                client,
                tls.clone(),
                http.clone(),
            ));
        }
        // Dropping the accept loops closes the listeners: new connections are refused.
        acceptors.shutdown().await;
        connections.close();
        self.tunnels.close();
        tracing::info!(
            connections = connections.len(),
            tunnels = self.tunnels.len(),
            ?grace,
            "stopped accepting; draining"
        );
        let drained = async {
            connections.wait().await;
            self.tunnels.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(?grace, "grace period over; closing what is still open");
        }
    }

    /// Serves one client connection: TLS, then HTTP until the client closes it, it idles,
    /// it cancels requests abusively, or MCA shuts down.
    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        client: Client,
        tls: TlsAcceptor,
        http: auto::Builder<TokioExecutor>,
    ) {
        let peer = client.peer;
        let handshake = tokio::time::timeout(self.limits.tls_handshake_timeout, tls.accept(tcp));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake with client failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake with client timed out");
                return;
            }
        };
        let requests = Connection::new();
        let service = {
            let (proxy, requests, original) =
                (Arc::clone(&self), Arc::clone(&requests), client.original);
            // Boxed: hyper keeps a stream's task (sized for this future) until the response
            // body is done, which for a watch is its whole life; the box is freed as soon as
            // the response headers are ready.
            hyper::service::service_fn(move |request| {
                let active = requests.request();
                Box::pin(Arc::clone(&proxy).handle(request, original, active))
            })
        };
        let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%peer, %error, "client connection ended with an error");
                    }
                    return;
                }
                close = requests.close(self.limits.idle_timeout), if !closing => match close {
                    Close::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Close::Abusive => {
                        tracing::warn!(
                            %peer,
                            budget = CANCEL_BUDGET,
                            window = ?CANCEL_WINDOW,
                            "closing a client connection that cancelled more requests than \
                             its budget allows (HTTP/2 rapid reset?)"
                        );
                        return;
                    }
                },
                () = client.shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }

    /// Serves one request; `original` is the address the client dialled if eBPF redirected it.
    /// Everything it does runs in the request's span, which ends with the exchange.
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        original: Option<SocketAddr>,
        active: Active,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str())
            .to_owned();
        // `/clusters/<name>/...` picks the cluster itself; the rest is the request.
        let (explicit, target) = match cluster_prefix(&target) {
            Some((name, rest)) => (Some(name), rest),
            None => (None, Cow::Borrowed(target.as_str())),
        };
        let info = RequestInfo::from_target(request.method().as_str(), &target);
        let (info, unreadable) = match info {
            Ok(info) => (info, None),
            // Logged under the raw path; refused below.
            Err(error) => (
                RequestInfo::parse(request.method().as_str(), &target),
                Some(error),
            ),
        };
        // MCA's hop is in the application's trace, or a new one.
        let parent = TraceContext::of(request.headers());
        let mut log = AccessLog::start(info, &request, Arc::clone(&self.metrics), parent);
        log.original_destination = original;
        log.connection = Some(active);
        let span = log.span().clone();
        let explicit = explicit.map(|name| (name, &*target));
        let response = self
            .serve_request(request, explicit, unreadable, log)
            .instrument(span)
            .await;
        Ok(response)
    }

    /// Serves a request whose log is started: authenticates the client, strips its
    /// credentials, admits, routes and forwards. `explicit` is the cluster a
    /// `/clusters/<name>/` prefix named and the target without the prefix.
    async fn serve_request(
        &self,
        mut request: Request<Incoming>,
        explicit: Option<(&str, &str)>,
        unreadable: Option<crate::reqinfo::PathError>,
        mut log: AccessLog,
    ) -> Response<ResponseBody> {
        let class = if log.info().is_long_running() {
            RequestClass::LongRunning
        } else {
            RequestClass::Short
        };
        let admitted = match &self.client_auth {
            Some(auth) => auth.check(request.headers()),
            None => Ok(()),
        };
        log.stripped = headers::strip_credentials(request.headers_mut());
        if let Err(refused) = admitted {
            let status = Status::new(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthorized,
                format!("Unauthorized: {refused}"),
            );
            return answer(status, log);
        }
        if let Some(error) = unreadable {
            let message = format!("{error}: MCA routes by the path as the API server reads it");
            return answer(
                Status::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message),
                log,
            );
        }
        log.trace().inject(request.headers_mut());
        if let Err(status) = self.admit(&mut request, &mut log) {
            return answer(status, log);
        }
        let upgrade = headers::is_upgrade(request.headers());
        if log.info().is_long_running() {
            let kind = match log.info().verb.as_str() {
                _ if upgrade => LongRunning::Tunnel,
                "watch" => LongRunning::Watch,
                _ => LongRunning::Stream,
            };
            log.open = Some(self.metrics.open(kind));
        }

        // One snapshot of the routing for the whole request, however long it runs.
        let routing = self.live.load();
        if explicit.is_none()
            && let Some(document) = routing.merged_document(&request, log.info())
        {
            return routing.discovery(request, document, log).await;
        }

        let mut request =
            request.map(|body| Counted::new(body, Arc::clone(&log.bytes_in)).boxed_unsync());
        let routed = match explicit {
            Some((name, target)) => {
                *request.uri_mut() = target.parse().expect("a part of a valid request target");
                routing.explicit(name, &mut log).map(|cluster| {
                    let routed = Routed::One {
                        cluster,
                        fallback: None,
                    };
                    (routed, request)
                })
            }
            None => routing.route(request, &mut log).await,
        };
        let (routed, request) = match routed {
            Ok(routed) => routed,
            Err(status) => return answer(status, log),
        };
        match routed {
            Routed::FanOut { route, clusters } => {
                routing.fan_out(&route, &clusters, request, log).await
            }
            Routed::One { cluster, .. } if upgrade => {
                let cluster = routing.clusters.get(cluster);
                upgrade::forward(cluster, &self.tunnels, request, log).await
            }
            Routed::One { cluster, fallback } => {
                routing
                    .forward(cluster, fallback, request, class, log)
                    .await
            }
        }
    }

    /// MCA's own limits on a request it is about to serve: nothing more from a connection that
    /// spent its cancel budget, the in-flight budgets (the slot is held by the log until the
    /// exchange is over), and the deadline, stamped on the request for the upstream client to
    /// enforce.
    fn admit(&self, request: &mut Request<Incoming>, log: &mut AccessLog) -> Result<(), Status> {
        if log
            .connection
            .as_ref()
            .is_some_and(Active::connection_closing)
        {
            return Err(Status::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::TooManyRequests,
                "this connection cancelled more requests than MCA allows and is being closed",
            ));
        }
        log.slot = self.in_flight.admit(log.info())?;
        let limit = self.limits.request_timeout;
        if let Some(deadline) = Deadline::for_request(log.info(), request.uri().query(), limit) {
            request.extensions_mut().insert(deadline);
        }
        Ok(())
    }
}

/// The routing steps of one request, on the snapshot it started with.
impl Routing {
    /// Serves a request on a fan-out route from all its healthy clusters.
    async fn fan_out(
        &self,
        route: &str,
        clusters: &[ClusterId],
        request: Request<UpstreamBody>,
        log: AccessLog,
    ) -> Response<ResponseBody> {
        let (mut head, _body) = request.into_parts();
        if let Err(status) = to_origin_form(&mut head) {
            return answer(status, log);
        }
        headers::strip_hop_by_hop(&mut head.headers, false);
        match crate::fanout::serve(&self.clusters, clusters, route, log.info(), head).await {
            Ok(response) => {
                let mut log = log;
                log.status = response.status().as_u16();
                let (parts, body) = response.into_parts();
                Response::from_parts(parts, Counted::response(body, log).boxed_unsync())
            }
            Err(status) => answer(status, log),
        }
    }

    /// Forwards an ordinary request and streams the response back. A read that got no answer
    /// at all is sent once more, to the route's fallback cluster if it has one; nothing else
    /// is ever sent twice.
    async fn forward(
        &self,
        cluster: ClusterId,
        fallback: Option<ClusterId>,
        request: Request<UpstreamBody>,
        class: RequestClass,
        mut log: AccessLog,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = request.into_parts();
        if let Err(status) = to_origin_form(&mut parts) {
            return answer(status, log);
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
        let retry = fallback.map(|fallback| (fallback, copy_head(&parts)));
        let cluster = self.clusters.get(cluster);
        let mut result = cluster.send(Request::from_parts(parts, body), class).await;
        let failure = result.as_ref().err().map(crate::upstream::failure_status);
        if let (Some(failure), Some((fallback, parts))) = (failure, retry) {
            let next = self.clusters.get(fallback);
            tracing::debug!(
                from = %cluster.name(),
                to = %next.name(),
                error = %failure.message,
                "retrying a read on the route's next cluster"
            );
            log.note("the first cluster did not answer; retried on the route's next cluster");
            log.cluster = Some(Arc::clone(next.name()));
            let request = Request::from_parts(parts, UpstreamBody::default());
            result = next.send(request, class).await;
        }
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers, false);
                log.status = parts.status.as_u16();
                Response::from_parts(parts, Counted::response(body, log).boxed_unsync())
            }
            Err(error) => answer(crate::upstream::failure_status(&error), log),
        }
    }

    /// The discovery document a request asks for, when discovery is merged.
    fn merged_document(
        &self,
        request: &Request<Incoming>,
        info: &RequestInfo,
    ) -> Option<crate::discovery::Document> {
        if !self.merged_discovery || request.method() != http::Method::GET {
            return None;
        }
        crate::discovery::Document::of(&info.path)
    }

    /// Serves merged discovery from every healthy cluster, the default route's first.
    async fn discovery(
        &self,
        request: Request<Incoming>,
        document: crate::discovery::Document,
        mut log: AccessLog,
    ) -> Response<ResponseBody> {
        let (mut head, _body) = request.into_parts();
        if let Err(status) = to_origin_form(&mut head) {
            return answer(status, log);
        }
        headers::strip_hop_by_hop(&mut head.headers, false);
        let view = &*self.clusters;
        let mut order: Vec<ClusterId> = self.router.default_target().clusters().collect();
        for id in 0..self.clusters.iter().count() {
            if !order.contains(&id) {
                order.push(id);
            }
        }
        order.retain(|&id| view.healthy(id));
        let names: Vec<&str> = order
            .iter()
            .map(|&id| &**self.clusters.get(id).name())
            .collect();
        log.route = Some(Arc::clone(&DISCOVERY));
        log.cluster = Some(names.join(",").into());
        log.merged = true;
        discovery::serve(&self.clusters, &order, &head, document, log).await
    }

    /// The cluster a `/clusters/<name>/` prefix names, recorded in the log.
    fn explicit(&self, name: &str, log: &mut AccessLog) -> Result<ClusterId, Status> {
        let Some(cluster) = self.clusters.find(name) else {
            let known: Vec<&str> = self.clusters.iter().map(|c| &**c.name()).collect();
            return Err(Status::new(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                format!(
                    "MCA has no cluster named {name:?} (it has {})",
                    known.join(", ")
                ),
            ));
        };
        log.route = Some(Arc::clone(&EXPLICIT));
        log.cluster = Some(Arc::clone(self.clusters.get(cluster).name()));
        Ok(cluster)
    }

    /// Chooses the request's cluster and records the choice in the log. A create may have
    /// its body's start read for that, and comes back with a body that replays it.
    async fn route(
        &self,
        mut request: Request<UpstreamBody>,
        log: &mut AccessLog,
    ) -> Result<(Routed, Request<UpstreamBody>), Status> {
        let selector = self.list_selector(log.info(), request.uri().query());
        let mut object = None;
        loop {
            let facts = route::Request {
                info: log.info(),
                selector: selector.as_ref(),
                object: match &object {
                    None => route::Object::NotRead,
                    Some(Ok(meta)) => route::Object::Known(meta),
                    Some(Err(_)) => route::Object::Unknown,
                },
                original_destination: log.original_destination,
            };
            let (route, picked, fallback) = match self.router.decide(&facts) {
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
                Decision::Route { name, target } => {
                    if let Some(clusters) = target.fan_out(&*self.clusters) {
                        return self.fanned_out(name, clusters, request, log);
                    }
                    let picked = target.pick(&facts, &*self.clusters);
                    // Where a read goes if the chosen cluster does not answer it at all.
                    let fallback = picked
                        .filter(|_| is_read(&request))
                        .and_then(|first| target.fallback(&facts, &*self.clusters, first));
                    (name, picked, fallback)
                }
            };
            log.route = Some(Arc::clone(route));
            if let Some(Err(unknown)) = &object {
                log.note(unknown.describe());
            }
            let Some(cluster) = picked else {
                return Err(Status::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Reason::ServiceUnavailable,
                    format!("no cluster of route {route:?} is available"),
                ));
            };
            log.cluster = Some(Arc::clone(self.clusters.get(cluster).name()));
            return Ok((Routed::One { cluster, fallback }, request));
        }
    }

    /// Records a fan-out route's clusters in the log; none healthy is a 503 naming the route.
    fn fanned_out(
        &self,
        route: &Arc<str>,
        clusters: Vec<ClusterId>,
        request: Request<UpstreamBody>,
        log: &mut AccessLog,
    ) -> Result<(Routed, Request<UpstreamBody>), Status> {
        log.route = Some(Arc::clone(route));
        if clusters.is_empty() {
            return Err(Status::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::ServiceUnavailable,
                format!("no cluster of route {route:?} is available"),
            ));
        }
        let names: Vec<&str> = clusters
            .iter()
            .map(|&id| &**self.clusters.get(id).name())
            .collect();
        log.cluster = Some(names.join(",").into());
        log.merged = true;
        let route = Arc::clone(route);
        Ok((Routed::FanOut { route, clusters }, request))
    }

    /// The label selector of a list, watch or deletecollection, when a route could use it.
    fn list_selector(&self, info: &RequestInfo, query: Option<&str>) -> Option<Selector> {
        if !self.router.uses_selectors()
            || !matches!(info.verb.as_str(), "list" | "watch" | "deletecollection")
        {
            return None;
        }
        let text = crate::query::first(query?, "labelSelector")?;
        // The API server rejects a selector it cannot parse; no route claims the request.
        Selector::parse(&text).ok()
    }
}

/// Where routing sent a request.
enum Routed {
    /// To one cluster.
    One {
        cluster: ClusterId,
        /// Where a read goes if `cluster` does not answer it.
        fallback: Option<ClusterId>,
    },
    /// To every healthy cluster of a fan-out route.
    FanOut {
        route: Arc<str>,
        clusters: Vec<ClusterId>,
    },
}

/// A read MCA may send twice: `GET` or `HEAD` without a body.
fn is_read(request: &Request<UpstreamBody>) -> bool {
    matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && http_body::Body::is_end_stream(request.body())
}

/// Splits `/clusters/<name>/rest?query` into the name and the request target `/rest?query`
/// (`/clusters/<name>` alone is the cluster's root, `/`).
fn cluster_prefix(target: &str) -> Option<(&str, Cow<'_, str>)> {
    let after = target.strip_prefix("/clusters/")?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (name, rest) = after.split_at(end);
    if name.is_empty() {
        return None;
    }
    let rest = if rest.starts_with('/') {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(format!("/{rest}"))
    };
    Some((name, rest))
}

/// Reduces the request target to path and query (the upstream adds its own scheme and
/// authority) and drops `Host`, which belongs to MCA's address, not the API server's.
fn to_origin_form(parts: &mut http::request::Parts) -> Result<(), Status> {
    if parts.method == http::Method::CONNECT {
        return Err(Status::new(
            StatusCode::BAD_REQUEST,
            Reason::BadRequest,
            "MCA is not a forward proxy: CONNECT is not supported",
        ));
    }
    let target = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = target.into();
    parts.headers.remove(http::header::HOST);
    Ok(())
}

/// MCA's own answer: a `Status` response, logged like any other.
fn answer(status: Status, mut log: AccessLog) -> Response<ResponseBody> {
    log.status = status.code.as_u16();
    log.fail(status.message.clone());
    let response: Response<Full<Bytes>> = status.into_response();
    let (parts, body) = response.into_parts();
    let body = Counted::response(body.map_err(|never| match never {}), log).boxed_unsync();
    Response::from_parts(parts, body)
}

/// A client connection's facts and the bounds it lives in.
struct Client {
    peer: SocketAddr,
    /// The address it dialled, if eBPF redirected it.
    original: Option<SocketAddr>,
    /// Fires when MCA shuts down.
    shutdown: CancellationToken,
    /// Its place among `--max-connections`.
    _slot: OwnedSemaphorePermit,
}

/// Accepts connections on `listener` while a connection slot is free, and hands them to the
/// serving loop; at the bound, new connections wait in the kernel's accept queue.
async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    accepted: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr, OwnedSemaphorePermit)>,
) {
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    "all client connections allowed are open (--max-connections); new ones wait"
                );
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                slot
            }
        };
        let (tcp, peer) = gate::accept(&listener).await;
        let _ = tcp.set_nodelay(true);
        if accepted.send((tcp, peer, slot)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_prefixes_name_a_cluster_and_leave_the_request() {
        let split = |target| cluster_prefix(target).map(|(name, rest)| (name, rest.into_owned()));
        let cases = [
            (
                "/clusters/east/api/v1/pods?watch=1",
                Some(("east", "/api/v1/pods?watch=1")),
            ),
            ("/clusters/east/", Some(("east", "/"))),
            ("/clusters/east", Some(("east", "/"))),
            (
                "/clusters/east?timeout=32s",
                Some(("east", "/?timeout=32s")),
            ),
            ("/clusters/", None),
            ("/clusters", None),
            ("/api/v1/clusters/east", None),
            ("/apis/clusters/v1", None),
        ];
        for (target, expected) in cases {
            assert_eq!(
                split(target),
                expected.map(|(name, rest)| (name, rest.to_owned())),
                "{target}"
            );
        }
    }
}
