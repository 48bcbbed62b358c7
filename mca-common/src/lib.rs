//! Types and constants shared by MCA's eBPF programs and its userspace proxy.
//!
//! This crate is `#![no_std]` so that the eBPF side (built for `bpfel-unknown-none`) can use the
//! same definitions as the userspace side; anything placed here must be plain data.
#![no_std]

/// The port MCA's proxy listens on by default, and the port applications are pointed at in
/// env-override mode (`KUBERNETES_SERVICE_PORT=6443`).
pub const DEFAULT_PROXY_PORT: u16 = 6443;
