//! MCA's end-to-end suites, one module each, linked into one test binary (the suites share
//! MCA, kube, hyper and the harness, which 21 binaries linked 21 times).
//!
//! Each module's `//!` doc says what its suite drives and checks. Most run wherever `cargo
//! xtask test` runs (root, for the pod sandbox's namespaces). Those that need a real control
//! plane or node are `#[ignore]`d with the reason, so a plain `cargo test` reports them as
//! ignored rather than passed; `cargo xtask test` runs them (`-- --ignored`) whenever the
//! binaries of `../shared/k8s/build.sh` are found (`K8S_BIN`, or its default
//! `~/.cache/mca-k8s/bin`).

mod accounting;
mod build_script;
mod caching;
mod chart;
mod client_auth;
mod clients;
mod ebpf;
mod faults;
mod inject;
mod inventory;
mod kubeconfig;
mod limits;
mod node;
mod observability;
mod operator;
mod pool;
mod proxy;
mod real_clusters;
mod recovery;
mod restart;
mod rotation;
mod routing;
mod run_sandbox;
mod soak;
mod upgrades;
mod webhook;
