//! End-to-end test support for MCA: a test API server, the pod sandbox, and helpers to run
//! MCA and real clients the way a pod would.

pub mod apiserver;
pub mod client;
pub mod fleet;
pub mod harness;
pub mod helm;
pub mod k8s;
pub mod metrics;
pub mod node;
pub mod otlp;
pub mod projected;
pub mod rawh2;
pub mod relay;
pub mod sandbox;
pub mod soak;
