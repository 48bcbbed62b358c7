//! The forwarding path: the [server](server) accepts client connections and hands each
//! request to the [pipeline](pipeline), which runs it through its stages (authenticate,
//! strip, admit, route, send) in one module each:
//!
//! ```text
//! accept → TLS → HTTP ─▶ target ─▶ context ─▶ authenticate + strip ─▶ admit
//!   ─▶ dispatch (route) ─▶ forward | fan-out | merged discovery | upgrade tunnel
//!   ─▶ the response streams back; the context ends the exchange (metrics, access log)
//! ```
//!
//! Errors MCA answers itself are Kubernetes `Status` objects; the API server's own error
//! responses pass through untouched.

mod access_log;
mod context;
mod counted;
mod discovery;
mod dispatch;
mod forward;
pub mod headers;
mod object;
mod pipeline;
mod server;
mod target;
mod upgrade;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio_util::task::TaskTracker;

use crate::{
    client_auth::ClientAuth,
    intercept::Interception,
    limits::{Limits, in_flight::InFlight},
    metrics::Metrics,
    reload::Live,
};

/// The body of every response MCA sends to a client.
pub type ResponseBody = UnsyncBoxBody<Bytes, tower::BoxError>;

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
}
