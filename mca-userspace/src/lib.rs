//! MCA (Multi Cluster Adapter): a sidecar that transparently proxies an application's
//! Kubernetes API traffic, replacing the application's credentials with its own.
//!
//! One module per concern; the request path reads top to bottom in [`proxy`].

pub mod admin;
pub mod cli;
pub mod client_auth;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod duration;
pub mod fanout;
pub mod inject;
pub mod intercept;
pub mod limits;
pub mod metrics;
pub mod operator;
pub mod proxy;
pub mod query;
pub mod reload;
pub mod reqinfo;
pub mod route;
pub mod run;
pub mod sa;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
pub mod upstream;
pub mod watch;
pub mod webhook;
