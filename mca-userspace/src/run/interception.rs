//! Setting up interception for `mca run`: which addresses to redirect, and whether eBPF is
//! wanted at all.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
};

use tokio::net::TcpListener;

use super::{Error, ServiceEnv};
use crate::{
    cli::RunArgs,
    cluster::Cluster,
    intercept::{Interception, Mode, Settings},
    upstream::Source,
};

/// Sets up eBPF interception as `--intercept` asks, adding MCA's IPv6 loopback listener to
/// `listeners` when redirected IPv6 connects are to land there.
pub(super) async fn intercept(
    args: &RunArgs,
    service: &ServiceEnv,
    source: &Source,
    local: &Cluster,
    listeners: &mut Vec<TcpListener>,
) -> Result<Option<Arc<Interception>>, Error> {
    let env_mode = |why: &dyn std::fmt::Display| {
        tracing::warn!(
            "{why}; env-override mode: applications must use KUBERNETES_SERVICE_HOST={} \
             KUBERNETES_SERVICE_PORT={}",
            args.listen.ip(),
            args.listen.port()
        );
    };
    match args.intercept {
        Mode::Env => return Ok(None),
        // Outside a pod, "the pod's cgroup" would be the user's session: only intercept a
        // cgroup that was named.
        Mode::Auto if args.cgroup.is_none() && matches!(source, Source::Kubeconfig { .. }) => {
            env_mode(&"not in a pod and no --cgroup given");
            return Ok(None);
        }
        Mode::Auto | Mode::Ebpf => {}
    }
    let v6 = loopback_v6_listener(args.listen).await;
    let destinations = destinations(
        service.addr(),
        local.url(),
        &local.api_endpoints().await,
        &args.intercept_addresses,
    );
    let settings = Settings {
        cgroup: args.cgroup.clone(),
        host_cgroup_root: args.host_cgroup_root.clone(),
        destinations,
        redirect_v4: match args.listen {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(v6) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, v6.port()),
        },
        redirect_v6: match v6.as_ref().and_then(|l| l.local_addr().ok()) {
            Some(SocketAddr::V6(v6)) => Some(v6),
            _ => None,
        },
        exempt_uids: args.exempt_uids.clone(),
        log: args.ebpf_log,
    };
    match Interception::start(&settings) {
        Ok(interception) => {
            tracing::info!(
                cgroup = %interception.cgroup().display(),
                destinations = ?settings.destinations,
                "eBPF interception active: connects to these destinations are redirected to MCA"
            );
            listeners.extend(v6);
            Ok(Some(Arc::new(interception)))
        }
        Err(error) if args.intercept == Mode::Ebpf => Err(Error::Intercept(error)),
        Err(error) => {
            env_mode(&format_args!("eBPF interception unavailable ({error})"));
            Ok(None)
        }
    }
}

/// MCA's IPv6 loopback listener on the same port, when it listens on IPv4 loopback and the
/// host has IPv6; without it, redirected IPv6 connects go to the v4-mapped IPv4 listener.
pub(super) async fn loopback_v6_listener(listen: SocketAddr) -> Option<TcpListener> {
    if !listen.ip().is_loopback() || !listen.is_ipv4() {
        return None;
    }
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()));
    match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::info!(%addr, %error, "no IPv6 loopback listener");
            None
        }
    }
}

/// What to intercept, without repeats: the Service address (what in-cluster clients dial),
/// the upstream's address if it is an IP, the API server's endpoints, and extras.
pub(super) fn destinations(
    service: Option<SocketAddr>,
    upstream: &http::Uri,
    endpoints: &[SocketAddr],
    extras: &[SocketAddr],
) -> Vec<SocketAddr> {
    let upstream = host_ip(upstream).map(|ip| SocketAddr::new(ip, port(upstream)));
    let mut all: Vec<SocketAddr> = Vec::new();
    for addr in service
        .into_iter()
        .chain(upstream)
        .chain(endpoints.iter().copied())
        .chain(extras.iter().copied())
    {
        if !all.contains(&addr) {
            all.push(addr);
        }
    }
    all
}

/// Whether `url` reaches MCA's listener on `listen`: the same port on the same address, on
/// loopback when MCA listens on loopback (its IPv6 twin included) or on every address.
/// Names other than `localhost` are not resolved.
pub(super) fn is_own_listener(url: &http::Uri, listen: SocketAddr) -> bool {
    let ip = match url.host() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => Some(Ipv4Addr::LOCALHOST.into()),
        _ => host_ip(url),
    };
    let Some(ip) = ip else {
        return false;
    };
    let ours = listen.ip();
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
    port(url) == listen.port() && (ip == ours || local(ip) && local(ours))
}

/// The host of `url` if it is an IP address.
pub(super) fn host_ip(url: &http::Uri) -> Option<IpAddr> {
    url.host()?.trim_matches(['[', ']']).parse().ok()
}

/// The port of `url`, or its scheme's.
pub(super) fn port(url: &http::Uri) -> u16 {
    let default = if url.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    url.port_u16().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn destinations_cover_service_upstream_endpoints_and_extras_once() {
        let service = ServiceEnv {
            host: Some("10.96.0.1".into()),
            port: 443,
        };
        let found = destinations(
            service.addr(),
            &"https://10.96.0.1".parse().unwrap(),
            &addrs(&["172.18.0.2:6443", "10.96.0.1:443"]),
            &addrs(&["[fd00::1]:443"]),
        );
        assert_eq!(
            found,
            addrs(&["10.96.0.1:443", "172.18.0.2:6443", "[fd00::1]:443"])
        );
        // A named upstream adds nothing; an IPv6 one is understood.
        assert!(
            destinations(
                None,
                &"https://api.example.com:6443".parse().unwrap(),
                &[],
                &[]
            )
            .is_empty()
        );
        assert_eq!(
            destinations(None, &"https://[fd00::9]:6443".parse().unwrap(), &[], &[]),
            addrs(&["[fd00::9]:6443"])
        );
    }

    #[test]
    fn mca_own_listener_is_recognised_as_an_upstream() {
        let own = |url: &str, listen: &str| {
            is_own_listener(&url.parse().unwrap(), listen.parse().unwrap())
        };
        assert!(own("https://127.0.0.1:6443", "127.0.0.1:6443"));
        assert!(own(
            "https://localhost:6443/clusters/east",
            "127.0.0.1:6443"
        ));
        assert!(own("https://[::1]:6443", "127.0.0.1:6443"));
        assert!(own("https://127.0.0.1:6443", "0.0.0.0:6443"));
        assert!(own("https://10.0.0.7:443", "10.0.0.7:443"));
        assert!(own("https://10.0.0.7", "10.0.0.7:443"));
        // Another port, another address, a name: someone else.
        assert!(!own("https://127.0.0.1:7443", "127.0.0.1:6443"));
        assert!(!own("https://10.96.0.1:6443", "127.0.0.1:6443"));
        assert!(!own("https://127.0.0.1:6443", "10.0.0.7:6443"));
        assert!(!own(
            "https://kubernetes.default.svc:6443",
            "127.0.0.1:6443"
        ));
    }
}
