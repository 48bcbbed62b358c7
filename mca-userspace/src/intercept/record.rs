//! The kernel's records of addresses, as the eBPF programs keep them in their maps: IPv6 or
//! v4-mapped addresses as four network-order words, ports as the hook sees them. Original
//! destinations come back from the kernel through these, so they are read defensively: any
//! record names some address, never a panic.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use mca_common::{ClientEnd, Destination};

/// An address as the kernel stores it: four network-order words.
pub fn words(ip: &Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

fn to_ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The kernel's record of a destination (the `INTERCEPT` keys, the `ORIGINALS` values).
pub fn destination(addr: SocketAddr) -> Destination {
    Destination {
        addr: words(&to_ipv6(addr.ip())),
        port: u32::from(addr.port().to_be()),
    }
}

/// The address a kernel record of a destination names; only the low 16 bits of its port
/// word count, as in `bpf_sock_addr.user_port`.
pub fn socket_addr(destination: &Destination) -> SocketAddr {
    let mut octets = [0u8; 16];
    for (bytes, word) in octets.chunks_exact_mut(4).zip(destination.addr) {
        bytes.copy_from_slice(&word.to_ne_bytes());
    }
    let ip = Ipv6Addr::from(octets);
    let port = u16::from_be(destination.port as u16);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::from((v4, port)),
        None => SocketAddr::from((ip, port)),
    }
}

/// The sock_ops program's key for a client: v4-mapped address, host-order port.
pub fn client_end(peer: SocketAddr) -> ClientEnd {
    ClientEnd {
        addr: words(&to_ipv6(peer.ip())),
        port: u32::from(peer.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_round_trip_in_kernel_layout() {
        for addr in ["10.96.0.1:443", "[fd00::1]:6443", "127.0.0.1:6443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let destination = destination(addr);
            assert_eq!(socket_addr(&destination), addr);
        }
        // What connect4 sees for 10.96.0.1:443: user_ip4 is the address's bytes in memory
        // order, user_port the port's.
        let destination = destination("10.96.0.1:443".parse().unwrap());
        assert_eq!(
            destination,
            Destination::v4(
                u32::from_ne_bytes([10, 96, 0, 1]),
                u32::from(443u16.to_be())
            )
        );
        assert!(destination.is_v4());
    }

    #[test]
    fn client_ends_are_v4_mapped_with_host_order_ports() {
        let end = client_end("127.0.0.1:40000".parse().unwrap());
        assert_eq!(
            end.addr,
            [
                0,
                0,
                Destination::V4_MAPPED_MARKER,
                u32::from_ne_bytes([127, 0, 0, 1])
            ]
        );
        assert_eq!(end.port, 40000);
    }
}
