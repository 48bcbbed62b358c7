//! MCA's eBPF programs, attached to the pod's cgroup:
//!
//! - `connect4` / `connect6` rewrite connects aimed at the API server (an address in
//!   `INTERCEPT`) to MCA's listener, unless the caller is exempt (MCA itself, by cgroup id or
//!   uid), and remember the original destination under the socket's cookie;
//! - `established` (sock_ops) files that destination under the connection's client end once it is
//!   established, which is all MCA can see of the connection it accepts;
//! - `getpeername4` / `getpeername6` make the application see the address it dialled.
//!
//! Every program allows the syscall (returns 1): interception never blocks a connection.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "mca-ebpf holds eBPF programs: build it for bpfel-unknown-none (cargo xtask build-ebpf)"
    );
}
