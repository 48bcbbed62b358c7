//! MCA's eBPF programs: `cgroup/connect4` and `cgroup/connect6` hooks that redirect an
//! application's connections to the Kubernetes API server into MCA's listener.
//!
//! The programs arrive with eBPF interception; until then MCA runs in env-override mode only
//! and this crate holds no code. It is in the workspace now so the layout is final.
#![no_std]
