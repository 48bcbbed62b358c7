//! The programs and their maps.
// Context fields and map values are raw pointers into kernel memory: eBPF is unsafe code.
#![allow(unsafe_code)]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock_addr},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_get_socket_cookie,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::info;
use mca_common::{ClientEnd, Config, Destination, counter};

/// Allow the syscall to proceed.
const ALLOW: i32 = 1;

/// Destinations to redirect to MCA (the API server's Service and endpoint addresses).
#[map]
static INTERCEPT: HashMap<Destination, u8> = HashMap::with_max_entries(256, 0);

/// cgroup ids whose connects are never redirected (MCA's own).
#[map]
static EXEMPT_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(16, 0);

/// uids whose connects are never redirected.
#[map]
static EXEMPT_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(16, 0);

/// Redirect target and switches, at index 0.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Original destination of each redirected socket, by socket cookie.
#[map]
static ORIGINAL_BY_COOKIE: LruHashMap<u64, Destination> = LruHashMap::with_max_entries(16384, 0);

/// Original destination of each redirected connection, by its client end; MCA reads and
/// removes entries as it accepts.
#[map]
static ORIGINAL_BY_CLIENT: LruHashMap<ClientEnd, Destination> =
    LruHashMap::with_max_entries(16384, 0);

/// Per-CPU event counters, indexed by `mca_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *value += 1 };
    }
}

fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Whether the calling task must keep its real destination (MCA's own upstream sockets).
fn exempt() -> bool {
    // SAFETY: helpers without arguments, callable from cgroup sock_addr programs.
    let (cgroup, uid) = unsafe {
        (
            bpf_get_current_cgroup_id(),
            bpf_get_current_uid_gid() as u32,
        )
    };
    // SAFETY: read-only lookups.
    unsafe { EXEMPT_CGROUPS.get(cgroup).is_some() || EXEMPT_UIDS.get(uid).is_some() }
}

/// Looks `destination` up; if intercepted and the caller not exempt, records it under the
/// socket's cookie and returns the config to redirect with.
fn should_redirect(
    ctx: &SockAddrContext,
    destination: &Destination,
    exempted: u32,
) -> Option<&'static Config> {
    // SAFETY: read-only lookup.
    unsafe { INTERCEPT.get(destination) }?;
    if exempt() {
        count(exempted);
        return None;
    }
    let config = config()?;
    // SAFETY: the context is a socket address context, as the helper requires.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) };
    ORIGINAL_BY_COOKIE.insert(cookie, destination, 0).ok()?;
    Some(config)
}

/// Counts a redirect of a `family` (4 or 6) connect and, with `--ebpf-log`, reports it.
fn redirected(ctx: &SockAddrContext, config: &Config, family: u8, destination: &Destination) {
    count(if family == 4 {
        counter::REDIRECTED_V4
    } else {
        counter::REDIRECTED_V6
    });
    if config.log != 0 {
        info!(
            ctx,
            "eBPF: connect{} to port {} redirected to MCA",
            family,
            u16::from_be(destination.port as u16)
        );
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: the kernel hands a valid context; user_ip4/user_port are readable and writable
    // in connect4.
    let destination = unsafe { Destination::v4((*sa).user_ip4, (*sa).user_port) };
    if let Some(config) = should_redirect(&ctx, &destination, counter::EXEMPTED_V4) {
        // SAFETY: as above.
        unsafe {
            (*sa).user_ip4 = config.redirect_ip4;
            (*sa).user_port = config.redirect_port;
        }
        redirected(&ctx, config, 4, &destination);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: user_ip6 words and user_port are readable and writable in connect6.
    let destination = unsafe {
        Destination {
            addr: [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ],
            port: (*sa).user_port,
        }
    };
    if let Some(config) = should_redirect(&ctx, &destination, counter::EXEMPTED_V6) {
        // A v4-mapped destination goes to MCA's IPv4 listener, still v4-mapped.
        let target = if destination.is_v4() {
            [0, 0, Destination::V4_MAPPED_MARKER, config.redirect_ip4]
        } else {
            config.redirect_ip6
        };
        // SAFETY: as above.
        unsafe {
            (*sa).user_ip6[0] = target[0];
            (*sa).user_ip6[1] = target[1];
            (*sa).user_ip6[2] = target[2];
            (*sa).user_ip6[3] = target[3];
            (*sa).user_port = config.redirect_port;
        }
        redirected(&ctx, config, 6, &destination);
    }
    ALLOW
}

#[sock_ops]
pub fn established(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 0;
    }
    // SAFETY: the context is a sock_ops context, as the helper requires.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
    // SAFETY: read-only lookup; the value is copied before anything else touches the map.
    let Some(original) = (unsafe { ORIGINAL_BY_COOKIE.get(cookie) }).copied() else {
        return 0;
    };
    let client = if ctx.family() == 2 {
        ClientEnd {
            addr: [0, 0, Destination::V4_MAPPED_MARKER, ctx.local_ip4()],
            port: ctx.local_port(),
        }
    } else {
        // The verifier only allows direct, word-sized context loads: read the address word by
        // word rather than copying the array.
        let ops = ctx.ops;
        // SAFETY: local_ip6 words are readable in sock_ops programs.
        let addr = unsafe {
            [
                core::ptr::read_volatile(&(*ops).local_ip6[0]),
                core::ptr::read_volatile(&(*ops).local_ip6[1]),
                core::ptr::read_volatile(&(*ops).local_ip6[2]),
                core::ptr::read_volatile(&(*ops).local_ip6[3]),
            ]
        };
        ClientEnd {
            addr,
            port: ctx.local_port(),
        }
    };
    let _ = ORIGINAL_BY_CLIENT.insert(client, original, 0);
    0
}

/// Rewrites the peer address of a redirected socket to the one the application dialled.
fn original_peer(ctx: &SockAddrContext) -> Option<Destination> {
    // SAFETY: the context is a socket address context, as the helper requires.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) };
    // SAFETY: read-only lookup, copied out.
    unsafe { ORIGINAL_BY_COOKIE.get(cookie) }.copied()
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_peer(&ctx).filter(Destination::is_v4) {
        let sa: *mut bpf_sock_addr = ctx.sock_addr;
        // SAFETY: user_ip4/user_port are writable in getpeername4.
        unsafe {
            (*sa).user_ip4 = original.addr[3];
            (*sa).user_port = original.port;
        }
        count(counter::PEERNAME_REWRITTEN);
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_peer(&ctx) {
        let sa: *mut bpf_sock_addr = ctx.sock_addr;
        // SAFETY: user_ip6 words and user_port are writable in getpeername6.
        unsafe {
            (*sa).user_ip6[0] = original.addr[0];
            (*sa).user_ip6[1] = original.addr[1];
            (*sa).user_ip6[2] = original.addr[2];
            (*sa).user_ip6[3] = original.addr[3];
            (*sa).user_port = original.port;
        }
        count(counter::PEERNAME_REWRITTEN);
    }
    ALLOW
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
