//! MCA (Multi Cluster Adapter): a sidecar that transparently proxies an application's
//! Kubernetes API traffic, replacing the application's credentials with its own.
//!
//! One module per concern; the request path reads top to bottom in [`proxy`].

pub mod admin;
pub(crate) mod backoff;
pub mod cli;
pub mod client_auth;
pub mod cluster;
pub mod config;
pub(crate) mod discovery;
pub mod duration;
pub mod fanout;
pub mod inject;
pub mod intercept;
pub mod limits;
#[cfg(all(test, target_arch = "x86_64"))]
mod memcpy;
pub(crate) mod metrics;
pub mod operator;
pub mod proxy;
pub mod query;
pub(crate) mod reload;
pub mod reqinfo;
pub mod route;
pub mod run;
pub(crate) mod sa;
pub(crate) mod signal;
pub(crate) mod state;
pub(crate) mod status;
pub mod telemetry;
pub(crate) mod tls;
pub mod trace_context;
pub mod upstream;
pub(crate) mod watch;
pub mod webhook;
