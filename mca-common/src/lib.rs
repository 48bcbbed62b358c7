//! Types and constants shared by MCA's eBPF programs and its userspace proxy.
//!
//! This crate is `#![no_std]` so that the eBPF side (built for `bpfel-unknown-none`) uses the
//! same definitions as the userspace side. Everything here is plain `#[repr(C)]` data laid out
//! exactly as the maps store it; addresses and ports are kept in network byte order, as the
//! kernel hands them to `cgroup/connect*` programs, so the hot path never converts.
#![no_std]
// `aya::Pod` is an unsafe marker trait: these types are plain data with no padding holes.
#![cfg_attr(feature = "user", allow(unsafe_code))]

/// An intercepted destination: an address in the v4-mapped IPv6 form (`::ffff:a.b.c.d` for
/// IPv4) and a port, both in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// IPv6 address, or v4-mapped IPv4 address, as four network-order words.
    pub addr: [u32; 4],
    /// Port in network byte order (in the low 16 bits, as `bpf_sock_addr.user_port`).
    pub port: u32,
}

impl Destination {
    /// The third word of a v4-mapped address (`::ffff:0:0/96`): its bytes in network order,
    /// read as a native word, as the kernel stores it.
    pub const V4_MAPPED_MARKER: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

    /// An IPv4 destination; `addr` and `port` in network byte order as the kernel gives them.
    pub const fn v4(addr: u32, port: u32) -> Self {
        Self {
            addr: [0, 0, Self::V4_MAPPED_MARKER, addr],
            port,
        }
    }

    /// Whether the address is an IPv4 one (v4-mapped).
    pub const fn is_v4(&self) -> bool {
        self.addr[0] == 0 && self.addr[1] == 0 && self.addr[2] == Self::V4_MAPPED_MARKER
    }
}

/// A connection as the client side sees it, normalized to v4-mapped addresses: the key under
/// which the sock_ops program files a redirected connection's original destination, and under
/// which MCA looks it up for the connection it accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientEnd {
    /// The client's address (v4-mapped for IPv4), network byte order.
    pub addr: [u32; 4],
    /// The client's port, host byte order.
    pub port: u32,
}

/// Settings the programs read from the `CONFIG` array (index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Where IPv4 connects go: MCA's listener address, network byte order.
    pub redirect_ip4: u32,
    /// Where IPv6 connects go (`::1`, or `::ffff:127.0.0.1` when MCA has no IPv6 listener).
    pub redirect_ip6: [u32; 4],
    /// MCA's listener port, network byte order in the low 16 bits.
    pub redirect_port: u32,
    /// Non-zero to emit aya-log debug events.
    pub log: u32,
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// IPv4 connects redirected to MCA.
    pub const REDIRECTED_V4: u32 = 0;
    /// IPv6 connects (including v4-mapped) redirected to MCA.
    pub const REDIRECTED_V6: u32 = 1;
    /// IPv4 connects to an intercepted address left alone because the caller is exempt.
    pub const EXEMPTED_V4: u32 = 2;
    /// IPv6 connects to an intercepted address left alone because the caller is exempt.
    pub const EXEMPTED_V6: u32 = 3;
    /// `getpeername` results rewritten to the address the application dialled.
    pub const PEERNAME_REWRITTEN: u32 = 4;
    /// How many counters there are.
    pub const COUNT: u32 = 5;
    /// Counter names, by index, for logs and the admin endpoint.
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected_v4",
        "redirected_v6",
        "exempted_v4",
        "exempted_v6",
        "peername_rewritten",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, only `u32` fields: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::Destination {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClientEnd {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
}
