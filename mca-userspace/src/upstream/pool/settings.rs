//! What a pool is set up with, what a request tells it, and what it reports.

use std::time::Duration;

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
