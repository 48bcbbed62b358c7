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

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, Response};
use tokio::{sync::Notify, time::Instant};
use tower::BoxError;

mod error;
mod lifecycle;
mod settings;
mod state;

pub use self::{
    error::{ConnectError, Exhausted},
    settings::{KeepAlive, Limits, RequestClass, Stats},
};
use self::{
    lifecycle::{give_back, reap, release_socket, settle},
    state::{Connection, Kind, Next, State},
};
use super::{
    ConnectTimeout, UpstreamBody,
    body::Body,
    connect::{Alpn, Dialer, Protocol, Slot},
    http1, http2,
};

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
            // Boxed, as `open` below: see there.
            return Box::pin(self.send_upgrade(request)).await;
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
                // Boxed: opening a connection (TCP, TLS, HTTP/2 handshake) is rare and its
                // future is 8 KB. Inline, it would make every request's future that large,
                // and that future is moved through each of the stack's layers.
                Grant::Dial(ticket) => Box::pin(self.open(ticket)).await?,
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

/// A request rebuilt from its head for another attempt.
fn rebuild(parts: &http::request::Parts, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
    request
}
