//! What MCA bounds on the application side, with kube-apiserver's defaults: a client reaching
//! MCA should meet the same limits it would meet at the API server, so nothing that works
//! against the API server fails here, and nothing that would exhaust it exhausts MCA.
//!
//! - Per connection (hyper settings, [`Limits::http`]): TLS handshake time, HTTP/1 header read
//!   time, header bytes (431 beyond), HTTP/2 streams, idle time; [`connection`] closes idle
//!   connections and those cancelling requests faster than anyone legitimate does (HTTP/2
//!   rapid reset).
//! - Per listener: open connections ([`Limits::max_connections`]; for the listeners other
//!   pods reach, also per peer: [`gate`]).
//! - Per request: [`in_flight`] (429 over the API server's max-in-flight limits) and
//!   [`deadline`] (504 after `--request-timeout` or the request's shorter `?timeout=`).
//!
//! Long-running requests (watch, logs, exec, attach, port-forward, proxy) are neither counted
//! nor timed, as in the API server.

pub mod connection;
pub mod deadline;
pub mod gate;
pub mod in_flight;
pub mod memory;

use std::time::Duration;

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};

/// The bounds; `mca run` sets them with its flags (see [`crate::cli`]), kube-apiserver's
/// defaults unless told otherwise.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client that has not finished its TLS handshake after this long is disconnected.
    pub tls_handshake_timeout: Duration,

    /// An HTTP/1.1 client must send a request's headers within this long; an idle keep-alive
    /// connection waiting for its next request is closed after it too.
    pub header_read_timeout: Duration,

    /// A connection with no request open for this long is closed (HTTP/2 with a GOAWAY).
    pub idle_timeout: Duration,

    /// Largest request header block, in bytes; larger requests get 431.
    pub max_header_bytes: u32,

    /// Most client connections open at once; beyond it new connections wait in the kernel's
    /// accept queue.
    pub max_connections: u32,

    /// Most non-mutating requests in flight (long-running ones not counted); more get 429 with
    /// Retry-After. 0: no limit.
    pub max_requests_inflight: u32,

    /// Most mutating requests (every verb but get, list and watch) in flight; more get 429
    /// with Retry-After. 0: no limit.
    pub max_mutating_requests_inflight: u32,

    /// Longest a request that is not long-running may take (or its `?timeout=` if shorter);
    /// then it gets 504 and its upstream request is cancelled.
    pub request_timeout: Duration,

    /// Concurrent streams an HTTP/2 client may open on one connection.
    pub http2_max_streams_per_connection: u32,
}

/// Streams an HTTP/2 client may reset before MCA even accepted them, before the connection is
/// closed with `ENHANCE_YOUR_CALM` (h2's defence against CVE-2023-44487, made explicit).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// hyper's smallest HTTP/1 read buffer.
const MIN_BUF_SIZE: usize = 8 * 1024;

impl Limits {
    /// The HTTP server for client connections, bounded as configured.
    pub fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut http = auto::Builder::new(TokioExecutor::new());
        let header_bytes = self.max_header_bytes as usize;
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper answers 431 when a request's head does not fit its read buffer.
            .max_buf_size(header_bytes.max(MIN_BUF_SIZE));
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_streams_per_connection)
            // Over it, h2 answers 431 and refuses the stream; CONTINUATION floods beyond it
            // close the connection.
            .max_header_list_size(self.max_header_bytes)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
        http
    }
}
