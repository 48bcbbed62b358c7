//! `mca run`: start-up, serving, and orderly shutdown of the sidecar.
//!
//! Start-up order matters to the pod: the upstream configuration is loaded first (a sidecar
//! without credentials should fail loudly, not serve errors), then the CA and serving
//! certificate, then the listeners, and only then the fake ServiceAccount is written and
//! readiness raised, so an application never starts against a proxy that cannot serve it.

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    sync::Arc,
};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, Readiness},
    cli::RunArgs,
    intercept::{Interception, Mode, Settings},
    proxy::Proxy,
    sa,
    tls::{CertAuthority, ServingCert, SubjectNames},
    upstream::{Source, Upstream},
};

/// Why `mca run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream configuration could not be loaded.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::Error),
    /// `KUBERNETES_SERVICE_PORT` is not a port.
    #[error("KUBERNETES_SERVICE_PORT={0:?} is not a port number")]
    ServicePort(String),
    /// Certificates could not be generated.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The fake ServiceAccount could not be written.
    #[error(transparent)]
    ServiceAccount(#[from] sa::Error),
    /// `--intercept=ebpf` and eBPF interception could not be set up.
    #[error("eBPF interception failed (--intercept=ebpf): {0}")]
    Intercept(crate::intercept::Error),
}

/// Where the upstream configuration comes from: an explicit kubeconfig or context wins; else
/// the in-cluster configuration when MCA runs in a pod; else kube's default kubeconfig.
pub fn upstream_source(args: &RunArgs) -> Result<Source, Error> {
    let service_host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    if args.kubeconfig.is_some() || args.context.is_some() || service_host.is_none() {
        return Ok(Source::Kubeconfig {
            path: args.kubeconfig.clone(),
            context: args.context.clone(),
        });
    }
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    Ok(Source::InCluster {
        sa_dir: args.sa_dir.clone(),
        host: service_host.unwrap_or_default(),
        port: port.parse().map_err(|_| Error::ServicePort(port))?,
    })
}

/// Runs the sidecar until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let source = upstream_source(&args)?;
    let upstream = Upstream::load(&source, args.upstream_connect_timeout).await?;

    let service_host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    let names = SubjectNames::for_cluster(
        &args.cluster_domain,
        service_host.as_deref(),
        &args.extra_sans,
    )?;
    let serving = Arc::new(ServingCert::new(
        CertAuthority::generate()?,
        names,
        args.cert_validity,
    )?);
    tokio::spawn(Arc::clone(&serving).renew_periodically());
    let tls = TlsAcceptor::from(Arc::new(serving.server_config()));

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })
    };
    let mut listeners = vec![bind(args.listen).await?];
    let admin_listener = bind(args.admin_listen).await?;
    let interception = match args.intercept {
        Mode::Env => None,
        // Outside a pod, "the pod's cgroup" would be the user's session: only intercept a
        // cgroup that was named.
        Mode::Auto if args.cgroup.is_none() && matches!(source, Source::Kubeconfig { .. }) => {
            tracing::info!(
                "not in a pod and no --cgroup given: env-override mode (applications use \
                 KUBERNETES_SERVICE_HOST={} KUBERNETES_SERVICE_PORT={})",
                args.listen.ip(),
                args.listen.port()
            );
            None
        }
        mode => {
            // Redirected IPv6 connects land on MCA's IPv6 loopback listener when it has one.
            let v6 = loopback_v6_listener(args.listen).await;
            let endpoints = upstream.api_endpoints().await;
            let settings = intercept_settings(
                &args,
                &upstream,
                &endpoints,
                v6.as_ref().and_then(|l| l.local_addr().ok()),
            );
            match (Interception::start(&settings), mode) {
                (Ok(interception), _) => {
                    tracing::info!(
                        cgroup = %interception.cgroup().display(),
                        destinations = ?settings.destinations,
                        "eBPF interception active: connects to these destinations are redirected to MCA"
                    );
                    listeners.extend(v6);
                    Some(Arc::new(interception))
                }
                (Err(error), Mode::Ebpf) => return Err(Error::Intercept(error)),
                (Err(error), _) => {
                    tracing::warn!(
                        %error,
                        "eBPF interception unavailable, falling back to env-override mode: \
                         applications must use KUBERNETES_SERVICE_HOST={} KUBERNETES_SERVICE_PORT={}",
                        args.listen.ip(),
                        args.listen.port()
                    );
                    None
                }
            }
        }
    };
    let readiness = Readiness::default();
    tokio::spawn(admin::serve(
        admin_listener,
        readiness.clone(),
        interception.clone(),
    ));

    sa::provision(&args.fake_sa_dir, serving.ca_pem(), upstream.namespace())?;
    readiness.set(true);
    tracing::info!(
        listen = %args.listen,
        admin = %args.admin_listen,
        upstream = %upstream.url(),
        namespace = upstream.namespace(),
        fake_sa_dir = %args.fake_sa_dir.display(),
        "MCA is ready"
    );

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        let readiness = readiness.clone();
        async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutting down");
            readiness.set(false);
            shutdown.cancel();
        }
    });
    Proxy::new(upstream, interception.clone())
        .serve(listeners, tls, shutdown, args.shutdown_grace)
        .await;
    if let Some(interception) = interception {
        tracing::info!(counters = ?interception.counters(), "detaching eBPF interception");
    }
    tracing::info!("MCA stopped");
    Ok(())
}

/// MCA's IPv6 loopback listener on the same port, when it listens on IPv4 loopback and the
/// host has IPv6; without it, redirected IPv6 connects go to the v4-mapped IPv4 listener.
async fn loopback_v6_listener(listen: SocketAddr) -> Option<TcpListener> {
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

/// What to intercept: MCA's own KUBERNETES_SERVICE_HOST:PORT (the Service the app would dial),
/// the upstream's address if it is an IP, the API server's endpoints, and `--intercept-address`
/// extras.
fn intercept_settings(
    args: &RunArgs,
    upstream: &Upstream,
    endpoints: &[SocketAddr],
    v6: Option<SocketAddr>,
) -> Settings {
    let service = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .and_then(|host| host.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| {
            let port = std::env::var("KUBERNETES_SERVICE_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(443);
            SocketAddr::new(ip, port)
        });
    let url = upstream.url();
    let upstream_addr = url
        .host()
        .and_then(|host| host.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| {
            let default = if url.scheme_str() == Some("http") {
                80
            } else {
                443
            };
            SocketAddr::new(ip, url.port_u16().unwrap_or(default))
        });
    let mut destinations: Vec<SocketAddr> = Vec::new();
    for addr in service
        .into_iter()
        .chain(upstream_addr)
        .chain(endpoints.iter().copied())
        .chain(args.intercept_addresses.iter().copied())
    {
        if !destinations.contains(&addr) {
            destinations.push(addr);
        }
    }
    let redirect_v4 = match args.listen {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, v6.port()),
    };
    Settings {
        cgroup: args.cgroup.clone(),
        destinations,
        redirect_v4,
        redirect_v6: match v6 {
            Some(SocketAddr::V6(v6)) => Some(v6),
            _ => None,
        },
        exempt_uids: args.exempt_uids.clone(),
        log: args.ebpf_log,
    }
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
