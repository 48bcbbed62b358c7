//! `mca run`: start-up, serving, and orderly shutdown of the sidecar.
//!
//! Start-up order matters to the pod: the upstream configuration is loaded first (a sidecar
//! without credentials should fail loudly, not serve errors), then the CA and serving
//! certificate, then the listeners, and only then the fake ServiceAccount is written and
//! readiness raised, so an application never starts against a proxy that cannot serve it.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, Readiness},
    cli::RunArgs,
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
    let listener = bind(args.listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    let readiness = Readiness::default();
    tokio::spawn(admin::serve(admin_listener, readiness.clone()));

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
    Proxy::new(upstream)
        .serve(listener, tls, shutdown, args.shutdown_grace)
        .await;
    tracing::info!("MCA stopped");
    Ok(())
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
