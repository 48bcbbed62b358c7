//! The connections to one API server, shared by every request MCA forwards there.
//!
//! An API server takes a bounded number of concurrent HTTP/2 streams per connection
//! (kube-apiserver: 100), and a watch holds its stream for as long as it runs. A pool with one
//! connection therefore stops serving anything once 100 watches are open. This pool does what
//! Go's HTTP/2 transport (and so client-go) does: a request takes a free stream on the first
//! connection that has one, and when none has, another connection is opened. HTTP/1.1
//! connections (servers without HTTP/2) carry one request at a time and are reused once a
//! response was read to its end.
//!
//! Unlike Go's default, the number of connections is bounded (`--upstream-max-connections`).
//! At the bound a request waits for a stream at most the connect timeout, then gets a `429`
//! with `Retry-After`: never an endless queue. The last connection slot is kept for short
//! requests, so watches, logs and exec sessions can never take every connection and starve
//! the GETs an application needs to make progress. Connections with nothing in flight are
//! closed after the idle timeout.
//!
//! All decisions are made under one short-held lock; nothing awaits while holding it. Waiters
//! are woken whenever a stream, connection or dial outcome changes what they could do.

use std::{
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, Response};
use tokio::{sync::Notify, time::Instant};
use tower::BoxError;

use super::{
    ConnectTimeout, UpstreamBody,
    body::Body,
    connect::{Alpn, Dialer, Protocol, Slot},
    http1, http2,
};

/// How a request uses its connection, which decides where it may go. The proxy tags each
/// request with one (a request extension); an untagged request is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestClass {
    /// Answered promptly: get, list, create, update, delete...
    #[default]
    Short,
    /// Open as long as the client wants: watch, logs, proxy (the API server's long-running
    /// requests).
    LongRunning,
    /// An HTTP/1.1 `Upgrade` (exec, attach, port-forward): a connection of its own for the
    /// whole session.
    Upgrade,
}

/// The pool's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections, counting those being opened and those carrying upgraded sessions.
    pub max_connections: usize,
    /// Opening a connection (TCP, TLS and the HTTP/2 preface) takes at most this long, and a
    /// request waits at most this long for a stream or a connection slot.
    pub connect_timeout: Duration,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// How HTTP/2 connections are checked for a peer that went silent.
    pub keep_alive: KeepAlive,
}

/// HTTP/2 keep-alive: a PING every `interval`, and a connection whose answer does not come
/// within `timeout` is closed, ending its streams (watches included) so clients start over on
/// a live connection. Without it a connection whose peer vanished without a FIN (a node gone,
/// a dead network path) swallows requests until they time out. client-go checks the same way
/// (30 s, 15 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Between PINGs.
    pub interval: Duration,
    /// For the answer.
    pub timeout: Duration,
}

impl KeepAlive {
    /// client-go's values.
    pub const CLIENT_GO: Self = Self {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(15),
    };
}

/// A request found every connection MCA may use busy, and none freed up in time.
#[derive(Debug, thiserror::Error)]
pub struct Exhausted {
    class: RequestClass,
    max_connections: usize,
    waited: Duration,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            max_connections: max,
            waited,
            ..
        } = self;
        if self.class == RequestClass::Short {
            write!(
                f,
                "all {max} connections to the API server are busy and none freed up within \
                 {waited:?} (raise --upstream-max-connections)"
            )
        } else {
            write!(
                f,
                "the {} connections to the API server that long-running requests may use are \
                 busy (one more is kept for short requests) and none freed up within {waited:?} \
                 (raise --upstream-max-connections)",
                max.saturating_sub(1)
            )
        }
    }
}

/// Opening a connection to the API server failed; every request that waited for that
/// connection gets this error.
#[derive(Debug, Clone)]
pub struct ConnectError(Arc<BoxError>);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connecting to the API server: {}", self.0)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

/// A snapshot of the pool, for the admin endpoint and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Open connections, including those being opened and upgraded sessions.
    pub connections: usize,
    /// Pooled HTTP/2 connections.
    pub http2: usize,
    /// Pooled HTTP/1.1 connections.
    pub http1: usize,
    /// Requests in flight on pooled HTTP/2 connections.
    pub streams: usize,
    /// Connections opened (or tried) since the pool was made.
    pub opened: u64,
}

/// A request is sent at most this often when connections refuse it unprocessed.
const ATTEMPTS: usize = 3;

/// The connections to one API server. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("dialer", &self.shared.dialer)
            .field("limits", &self.shared.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Shared {
    dialer: Dialer,
    limits: Limits,
    state: Mutex<State>,
    /// Signalled after every change that may let a waiting request proceed.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Pooled connections, oldest first: requests fill the oldest, so extra ones fall idle.
    connections: Vec<Connection>,
    /// Every open socket, pooled or not, and those being opened.
    sockets: usize,
    /// The pooled dial in flight while connections are (or may be) HTTP/2: a second request
    /// waits for it, since the new connection will likely have streams to spare.
    dialing: Option<u64>,
    /// Dials so far, numbering them.
    dials: u64,
    /// The last dial that failed, so requests that waited for it report its error.
    failed: Option<(u64, ConnectError)>,
    /// What the last pooled connection negotiated.
    protocol: Option<Protocol>,
    next_id: u64,
    /// Whether the idle reaper runs.
    reaping: bool,
}

struct Connection {
    id: u64,
    /// Opened into the last slot, for short requests only.
    reserved: bool,
    /// Since when nothing has been in flight.
    idle_since: Option<Instant>,
    /// Takes no new requests (GOAWAY, a failed send, or retired for a new client
    /// certificate); closes when its requests end.
    draining: bool,
    kind: Kind,
}

enum Kind {
    Http2 {
        send: SendRequest<Bytes>,
        streams: usize,
        /// Whether the server's stream limit is known; until then only the request that
        /// opened the connection uses it.
        settled: bool,
    },
    Http1 {
        /// The connection's sender while no request uses it.
        idle: Option<http1::Sender>,
    },
}

impl Connection {
    fn has_room(&self) -> bool {
        !self.draining
            && match &self.kind {
                Kind::Http2 {
                    send,
                    streams,
                    settled,
                } => *settled && *streams < send.current_max_send_streams(),
                Kind::Http1 { idle } => idle.is_some(),
            }
    }

    fn in_flight(&self) -> usize {
        match &self.kind {
            Kind::Http2 { streams, .. } => *streams,
            Kind::Http1 { idle } => usize::from(idle.is_none()),
        }
    }
}

/// What a request that needs a connection does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Use this pooled connection.
    Use(usize),
    /// Open a connection; `reserved` when it takes the slot kept for short requests.
    Dial { reserved: bool },
    /// Wait for a change; `dial` names the dial in flight that may bring a connection.
    Wait { dial: Option<u64> },
}

/// Whether a request that found no pooled connection with room may open one. The last slot
/// is kept for short requests (when there are at least two); a dial already under way for
/// connections that may be HTTP/2 (`dialing`) is waited for instead of racing it.
fn dial_or_wait(
    sockets: usize,
    max_connections: usize,
    long_running: bool,
    dialing: Option<u64>,
) -> Next {
    if let Some(dial) = dialing {
        return Next::Wait { dial: Some(dial) };
    }
    let free = max_connections.saturating_sub(sockets);
    let reserve = usize::from(max_connections > 1);
    if free == 0 || (long_running && free <= reserve) {
        return Next::Wait { dial: None };
    }
    Next::Dial {
        reserved: free <= reserve,
    }
}

impl State {
    fn next(&self, class: RequestClass, max_connections: usize) -> Next {
        if class != RequestClass::Upgrade {
            let usable = self
                .connections
                .iter()
                .position(|c| c.has_room() && !(c.reserved && class != RequestClass::Short));
            if let Some(index) = usable {
                return Next::Use(index);
            }
        }
        let dialing = self.dialing.filter(|_| self.coalesces(class));
        dial_or_wait(
            self.sockets,
            max_connections,
            class != RequestClass::Short,
            dialing,
        )
    }

    /// Whether a dial for `class` is one others should wait for: pooled, and the server may
    /// speak HTTP/2. HTTP/1.1 connections take one request each, so those dials run side by
    /// side.
    fn coalesces(&self, class: RequestClass) -> bool {
        class != RequestClass::Upgrade && self.protocol != Some(Protocol::Http1)
    }
}

/// A pooled connection taken for one request.
enum Lease {
    Stream {
        send: SendRequest<Bytes>,
        lease: StreamLease,
    },
    Connection {
        sender: http1::Sender,
        id: u64,
    },
}

/// What a request got from the pool.
enum Grant {
    Lease(Lease),
    Dial(Ticket),
}

/// A stream counted against its connection until dropped.
struct StreamLease {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.shared.update(self.id, |connection| {
            if let Kind::Http2 { streams, .. } = &mut connection.kind {
                *streams -= 1;
                if *streams == 0 {
                    connection.idle_since = Some(Instant::now());
                    // A draining connection closes with its last stream.
                    return !connection.draining;
                }
            }
            true
        });
    }
}

/// The right to open one connection: its slot in the count, and for a pooled dial its place
/// as the dial others wait for. Dropping it unused (an error, a client gone mid-dial) gives
/// both back.
struct Ticket {
    shared: Arc<Shared>,
    id: u64,
    slot: Option<Slot>,
    dial: Option<u64>,
    reserved: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(dial) = self.dial else { return };
        let mut state = self.shared.lock();
        if state.dialing == Some(dial) {
            state.dialing = None;
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take every later request down with it: the state is
        // consistent between statements.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes a connection (or removes it, for `None`), then wakes waiters.
    fn update(&self, id: u64, change: impl FnOnce(&mut Connection) -> bool) {
        let mut state = self.lock();
        let mut removed = None;
        if let Some(index) = state.connections.iter().position(|c| c.id == id)
            && !change(&mut state.connections[index])
        {
            removed = Some(state.connections.remove(index));
        }
        drop(state);
        drop(removed);
        self.changed.notify_waiters();
    }
}

impl Pool {
    /// A pool of connections made by `dialer`.
    pub fn new(dialer: Dialer, limits: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                dialer,
                limits,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }

    /// What the pool holds now.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        let mut stats = Stats {
            connections: state.sockets,
            opened: state.next_id,
            ..Stats::default()
        };
        for connection in &state.connections {
            match connection.kind {
                Kind::Http2 { streams, .. } => {
                    stats.http2 += 1;
                    stats.streams += streams;
                }
                Kind::Http1 { .. } => stats.http1 += 1,
            }
        }
        stats
    }

    /// Sends a request (absolute URI, credentials added) on a pooled connection, or on one of
    /// its own for an upgrade (see [`RequestClass`]).
    pub async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<Body>, BoxError> {
        let class = request
            .extensions()
            .get::<RequestClass>()
            .copied()
            .unwrap_or_default();
        if class == RequestClass::Upgrade {
            return self.send_upgrade(request).await;
        }
        let (parts, mut body) = request.into_parts();
        // Only a request without a body can be sent again once a server has seen it, and only
        // a safe one when the server may have processed it (its connection died meanwhile).
        let replayable = http_body::Body::is_end_stream(&body);
        let safe = replayable && is_safe(&parts.method);
        let mut attempt = 1;
        loop {
            let lease = match self.acquire(class).await? {
                Grant::Lease(lease) => lease,
                Grant::Dial(ticket) => self.open(ticket).await?,
            };
            let error: BoxError = match lease {
                Lease::Stream { send, lease } => {
                    let id = lease.id;
                    match http2::send(send, http2::head(&parts), body, lease).await {
                        Ok(response) => return Ok(response.map(Body::http2)),
                        Err(http2::SendError::NotSent(error, unsent)) => {
                            self.drain(id);
                            body = unsent;
                            error.into()
                        }
                        Err(http2::SendError::Unprocessed(error)) if replayable => {
                            if error.is_go_away() {
                                self.drain(id);
                            }
                            body = UpstreamBody::default();
                            error.into()
                        }
                        Err(http2::SendError::Failed(error)) if safe && error.is_io() => {
                            self.drain(id);
                            body = UpstreamBody::default();
                            error.into()
                        }
                        Err(
                            http2::SendError::Unprocessed(error) | http2::SendError::Failed(error),
                        ) => return Err(error.into()),
                    }
                }
                Lease::Connection { mut sender, id } => {
                    let mut request = rebuild(&parts, body);
                    http1::origin_form(&mut request);
                    match http1::send(&mut sender, request).await {
                        Ok(response) => {
                            let shared = Arc::clone(&self.shared);
                            let reusable = Box::new(move || give_back(&shared, id, sender));
                            return Ok(response.map(|body| Body::http1(body, Some(reusable))));
                        }
                        Err((error, Some(unsent))) => {
                            body = unsent.into_body();
                            error.into()
                        }
                        // A kept-alive connection the server had closed.
                        Err((error, None)) if safe && error.is_incomplete_message() => {
                            body = UpstreamBody::default();
                            error.into()
                        }
                        Err((error, None)) => return Err(error.into()),
                    }
                }
            };
            if attempt == ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(%error, attempt, "the API server did not take the request; trying another connection");
            attempt += 1;
        }
    }

    /// An upgrade gets a fresh HTTP/1.1 connection, which the session then owns.
    async fn send_upgrade(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Body>, BoxError> {
        let Grant::Dial(mut ticket) = self.acquire(RequestClass::Upgrade).await? else {
            unreachable!("upgrades never share a connection");
        };
        let slot = ticket.slot.take().expect("a fresh ticket has its slot");
        let shared = &self.shared;
        let mut sender = self
            .connect(async {
                let (socket, _) = shared.dialer.dial(Alpn::Http1, slot).await?;
                let (sender, driver) = http1::handshake(socket, true).await?;
                tokio::spawn(driver);
                Ok(sender)
            })
            .await?;
        drop(ticket);
        http1::origin_form(&mut request);
        let response = sender.send_request(request).await?;
        Ok(response.map(|body| Body::http1(body, None)))
    }

    /// Waits, at most the connect timeout, until the request can use a pooled connection or
    /// open one.
    async fn acquire(&self, class: RequestClass) -> Result<Grant, BoxError> {
        let shared = &self.shared;
        let limits = shared.limits;
        let deadline = Instant::now() + limits.connect_timeout;
        let mut waited_for = None;
        loop {
            let changed = shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            let idle = {
                let mut state = shared.lock();
                if let Some(dial) = waited_for
                    && let Some((failed, error)) = &state.failed
                    && *failed == dial
                {
                    return Err(error.clone().into());
                }
                match state.next(class, limits.max_connections) {
                    Next::Use(index) => match take(&mut state, index, shared) {
                        Ok(lease) => return Ok(Grant::Lease(lease)),
                        Err(idle) => Some(idle),
                    },
                    Next::Dial { reserved } => {
                        return Ok(Grant::Dial(self.ticket(&mut state, class, reserved)));
                    }
                    Next::Wait { dial } => {
                        changed.as_mut().enable();
                        waited_for = dial;
                        None
                    }
                }
            };
            if let Some((mut sender, id)) = idle {
                // An idle HTTP/1.1 connection may have been closed by the server meanwhile.
                match tokio::time::timeout_at(deadline, sender.ready()).await {
                    Ok(Ok(())) => return Ok(Grant::Lease(Lease::Connection { sender, id })),
                    _ => continue,
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Exhausted {
                    class,
                    max_connections: limits.max_connections,
                    waited: limits.connect_timeout,
                }
                .into());
            }
        }
    }

    fn ticket(&self, state: &mut State, class: RequestClass, reserved: bool) -> Ticket {
        state.sockets += 1;
        state.next_id += 1;
        let dial = state.coalesces(class).then(|| {
            state.dials += 1;
            state.dialing = Some(state.dials);
            state.dials
        });
        let shared = Arc::downgrade(&self.shared);
        Ticket {
            shared: Arc::clone(&self.shared),
            id: state.next_id,
            slot: Some(Slot::new(move || release_socket(&shared))),
            dial,
            reserved,
        }
    }

    /// Opens a pooled connection for the ticket's request, which gets the first stream on it.
    async fn open(&self, mut ticket: Ticket) -> Result<Lease, BoxError> {
        let shared = &self.shared;
        let slot = ticket.slot.take().expect("a fresh ticket has its slot");
        let opened = self
            .connect(async {
                let (socket, protocol) = shared.dialer.dial(Alpn::H2OrHttp1, slot).await?;
                Ok(match protocol {
                    Protocol::Http2 => {
                        let (send, driver, settled) =
                            http2::handshake(socket, shared.limits.keep_alive).await?;
                        (Opened::Http2(send, settled), driver)
                    }
                    Protocol::Http1 => {
                        let (sender, driver) = http1::handshake(socket, false).await?;
                        (Opened::Http1(sender), driver)
                    }
                })
            })
            .await;
        let (opened, driver) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                if let Some(dial) = ticket.dial {
                    shared.lock().failed = Some((dial, error.clone()));
                }
                return Err(error.into());
            }
        };

        let id = ticket.id;
        let mut settled = None;
        let (kind, lease, protocol) = match opened {
            Opened::Http2(send, settling) => {
                settled = Some(settling);
                let kind = Kind::Http2 {
                    send: send.clone(),
                    streams: 1,
                    settled: false,
                };
                let lease = StreamLease {
                    shared: Arc::clone(shared),
                    id,
                };
                (kind, Lease::Stream { send, lease }, Protocol::Http2)
            }
            Opened::Http1(sender) => {
                let kind = Kind::Http1 { idle: None };
                (kind, Lease::Connection { sender, id }, Protocol::Http1)
            }
        };
        let mut state = shared.lock();
        state.connections.push(Connection {
            id,
            reserved: ticket.reserved,
            idle_since: None,
            draining: false,
            kind,
        });
        state.protocol = Some(protocol);
        let connections = state.sockets;
        if !std::mem::replace(&mut state.reaping, true) {
            tokio::spawn(reap(Arc::downgrade(shared)));
        }
        drop(state);
        // Registered first, so a connection that fails at once is removed, not left behind.
        let weak = Arc::downgrade(shared);
        tokio::spawn(async move {
            driver.await;
            if let Some(shared) = weak.upgrade() {
                shared.update(id, |_| false);
            }
        });
        if let Some(settled) = settled {
            tokio::spawn(settle(
                Arc::downgrade(shared),
                id,
                settled,
                shared.limits.connect_timeout,
            ));
        }
        tracing::debug!(
            ?protocol,
            connections,
            "opened a connection to the API server"
        );
        // Dropping the ticket ends the dial others waited for, and wakes them.
        drop(ticket);
        Ok(lease)
    }

    /// Bounds opening a connection by the connect timeout.
    async fn connect<T>(
        &self,
        opening: impl Future<Output = Result<T, BoxError>>,
    ) -> Result<T, ConnectError> {
        let timeout = self.shared.limits.connect_timeout;
        match tokio::time::timeout(timeout, opening).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(error)) => Err(ConnectError(Arc::new(error))),
            Err(_) => Err(ConnectError(Arc::new(ConnectTimeout(timeout).into()))),
        }
    }

    /// Stops new requests from using a connection that failed or is going away.
    fn drain(&self, id: u64) {
        self.shared.update(id, |connection| {
            connection.draining = true;
            true
        });
    }

    /// Dials with `tls` from now on (a renewed client certificate) and retires the open
    /// connections, which still carry the old one: idle ones close now, busy ones take no new
    /// requests and close when their requests (watches included) end.
    pub fn renew_tls(&self, tls: rustls::ClientConfig) {
        self.shared.dialer.renew_tls(tls);
        let mut state = self.shared.lock();
        let (idle, busy): (Vec<_>, Vec<_>) = std::mem::take(&mut state.connections)
            .into_iter()
            .partition(|c| c.in_flight() == 0);
        state.connections = busy;
        for connection in &mut state.connections {
            connection.draining = true;
        }
        drop(state);
        drop(idle);
        self.shared.changed.notify_waiters();
    }
}

/// Whether a request may be sent twice even if the server processed the first (RFC 9110
/// §9.2.1), as Go's transport retries them on a connection lost mid-request.
fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// A freshly opened connection's request handle.
enum Opened {
    Http2(SendRequest<Bytes>, http2::Settled),
    Http1(http1::Sender),
}

/// Opens an HTTP/2 connection to every request once the server's stream limit is known; a
/// server that does not answer within `timeout` gets no more requests on it.
async fn settle(shared: Weak<Shared>, id: u64, settled: http2::Settled, timeout: Duration) {
    let outcome = tokio::time::timeout(timeout, settled).await;
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if !matches!(outcome, Ok(Ok(()))) {
        tracing::debug!("the API server did not answer an HTTP/2 PING; not reusing the connection");
    }
    shared.update(id, |connection| {
        if let Kind::Http2 { settled, .. } = &mut connection.kind {
            *settled = true;
            connection.draining |= !matches!(outcome, Ok(Ok(())));
        }
        true
    });
}

/// Takes the pooled connection at `index` (which has room) for one request. An HTTP/1.1
/// connection comes back as `Err` so the caller can check, without the lock, that it is still
/// usable.
fn take(
    state: &mut State,
    index: usize,
    shared: &Arc<Shared>,
) -> Result<Lease, (http1::Sender, u64)> {
    let connection = &mut state.connections[index];
    connection.idle_since = None;
    let id = connection.id;
    match &mut connection.kind {
        Kind::Http2 { send, streams, .. } => {
            *streams += 1;
            Ok(Lease::Stream {
                send: send.clone(),
                lease: StreamLease {
                    shared: Arc::clone(shared),
                    id,
                },
            })
        }
        Kind::Http1 { idle } => Err((idle.take().expect("an idle connection"), id)),
    }
}

/// Returns an HTTP/1.1 connection whose response was read to the end.
fn give_back(shared: &Shared, id: u64, sender: http1::Sender) {
    shared.update(id, move |connection| {
        connection.kind = Kind::Http1 { idle: Some(sender) };
        connection.idle_since = Some(Instant::now());
        !connection.draining
    });
}

fn release_socket(shared: &Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        shared.lock().sockets -= 1;
        shared.changed.notify_waiters();
    }
}

/// A request rebuilt from its head for another attempt.
fn rebuild(parts: &http::request::Parts, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Closes connections that had nothing in flight for the idle timeout; ends when the pool is
/// gone or empty (the next connection starts it again).
async fn reap(shared: Weak<Shared>) {
    loop {
        let idle_timeout = match shared.upgrade() {
            Some(shared) => shared.limits.idle_timeout,
            None => return,
        };
        tokio::time::sleep((idle_timeout / 4).max(Duration::from_millis(100))).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        let now = Instant::now();
        let (idle, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.connections)
            .into_iter()
            .partition(|c| {
                c.in_flight() == 0 && c.idle_since.is_some_and(|t| now - t >= idle_timeout)
            });
        state.connections = kept;
        let done = state.connections.is_empty();
        if done {
            state.reaping = false;
        }
        drop(state);
        if !idle.is_empty() {
            tracing::debug!(
                closed = idle.len(),
                "closing idle connections to the API server"
            );
        }
        // Dropping the last handle of a connection closes it.
        drop(idle);
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_until_the_bound_keeping_the_last_slot_for_short_requests() {
        // Room: anyone dials; the last slot is marked reserved.
        assert_eq!(
            dial_or_wait(0, 4, true, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(
            dial_or_wait(2, 4, false, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(
            dial_or_wait(3, 4, false, None),
            Next::Dial { reserved: true }
        );
        // Long-running requests never take the last slot.
        assert_eq!(dial_or_wait(3, 4, true, None), Next::Wait { dial: None });
        // At the bound everyone waits.
        assert_eq!(dial_or_wait(4, 4, false, None), Next::Wait { dial: None });
        assert_eq!(dial_or_wait(5, 4, false, None), Next::Wait { dial: None });
        // A bound of one has nothing to reserve.
        assert_eq!(
            dial_or_wait(0, 1, true, None),
            Next::Dial { reserved: false }
        );
        assert_eq!(dial_or_wait(1, 1, false, None), Next::Wait { dial: None });
        // A dial under way is waited for rather than raced.
        assert_eq!(
            dial_or_wait(1, 4, false, Some(7)),
            Next::Wait { dial: Some(7) }
        );
    }

    #[test]
    fn http1_dials_run_side_by_side_and_upgrades_never_wait_for_pooled_dials() {
        let mut state = State {
            sockets: 1,
            dialing: Some(1),
            ..State::default()
        };
        assert_eq!(
            state.next(RequestClass::Short, 8),
            Next::Wait { dial: Some(1) }
        );
        assert_eq!(
            state.next(RequestClass::Upgrade, 8),
            Next::Dial { reserved: false }
        );
        state.protocol = Some(Protocol::Http1);
        assert_eq!(
            state.next(RequestClass::LongRunning, 8),
            Next::Dial { reserved: false }
        );
    }

    #[test]
    fn long_running_requests_skip_reserved_and_busy_connections() {
        let state = State {
            sockets: 2,
            connections: vec![
                Connection {
                    id: 1,
                    reserved: false,
                    idle_since: None,
                    draining: false,
                    kind: Kind::Http1 { idle: None },
                },
                Connection {
                    id: 2,
                    reserved: true,
                    idle_since: None,
                    draining: false,
                    kind: Kind::Http1 { idle: None },
                },
            ],
            ..State::default()
        };
        // Both busy: dial (short) or wait (long-running, only the reserved slot is left).
        assert_eq!(
            state.next(RequestClass::Short, 3),
            Next::Dial { reserved: true }
        );
        assert_eq!(
            state.next(RequestClass::LongRunning, 3),
            Next::Wait { dial: None }
        );
    }

    #[test]
    fn exhaustion_says_what_to_raise() {
        let short = Exhausted {
            class: RequestClass::Short,
            max_connections: 4,
            waited: Duration::from_secs(10),
        };
        assert!(
            short.to_string().starts_with("all 4 connections"),
            "{short}"
        );
        assert!(short.to_string().contains("--upstream-max-connections"));
        let watch = Exhausted {
            class: RequestClass::LongRunning,
            ..short
        };
        assert!(
            watch.to_string().starts_with("the 3 connections"),
            "{watch}"
        );
    }
}
