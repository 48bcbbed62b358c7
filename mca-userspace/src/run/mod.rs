//! `mca run`: start-up, serving, and orderly shutdown of the sidecar.
//!
//! Start-up order matters to the pod: the upstream configuration is loaded first (a sidecar
//! without credentials should fail loudly, not serve errors), then the CA and serving
//! certificate, then the listeners, and only then the fake ServiceAccount is written and
//! readiness raised, so an application never starts against a proxy that cannot serve it.

mod fake;
mod interception;

use self::{
    fake::FakeCredentials,
    interception::{intercept, is_own_listener},
};

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, Readiness},
    cli::RunArgs,
    client_auth::{ClientAuth, Mode as ClientAuthMode},
    cluster::{self, Registry},
    config::{Config, Schema},
    metrics::Metrics,
    proxy::Proxy,
    reload::{ConfigFile, Live, Routing},
    sa,
    state::{self, Store},
    tls::{Authorities, CaPolicy, ServingCert, SubjectNames},
    upstream::{KeepAlive, Limits, Source},
};

/// Why `mca run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// A cluster's configuration could not be loaded.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::Error),
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
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `--state-dir` could not be used.
    #[error(transparent)]
    State(#[from] state::Error),
    /// The fake ServiceAccount could not be written.
    #[error(transparent)]
    ServiceAccount(#[from] sa::Error),
    /// No random bytes for the client token.
    #[error("generating the client token: {0}")]
    Random(rustls::Error),
    /// `--kubeconfig` names the fake kubeconfig MCA writes for applications.
    #[error(
        "{0} is the fake kubeconfig MCA writes for applications: give MCA the real API \
         server's kubeconfig with --kubeconfig"
    )]
    FakeKubeconfig(std::path::PathBuf),
    /// A cluster's server is MCA's own listener.
    #[error(
        "cluster {cluster:?} has server {url}, which is MCA's own listener ({listen}): MCA \
         would send every request to itself; give it the real API server's address"
    )]
    OwnListener {
        /// The cluster.
        cluster: String,
        /// Its server.
        url: String,
        /// MCA's `--listen`.
        listen: SocketAddr,
    },
    /// `--intercept=ebpf` and eBPF interception could not be set up.
    #[error("eBPF interception failed (--intercept=ebpf): {0}")]
    Intercept(crate::intercept::Error),
}

/// MCA's own view of the API server's Service: KUBERNETES_SERVICE_HOST/PORT, which the kubelet
/// sets in every container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEnv {
    /// The Service host (an IP, bracket-less for IPv6), if MCA runs in a pod.
    pub host: Option<String>,
    /// The Service port.
    pub port: u16,
}

impl ServiceEnv {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, Error> {
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        Ok(Self {
            host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            port: port.parse().map_err(|_| Error::ServicePort(port))?,
        })
    }

    /// The Service address, when the host is an IP.
    fn addr(&self) -> Option<SocketAddr> {
        let ip = self
            .host
            .as_deref()?
            .trim_matches(['[', ']'])
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

/// Where the upstream configuration comes from: an explicit kubeconfig or context wins; else
/// the in-cluster configuration when MCA runs in a pod; else kube's default kubeconfig.
pub fn upstream_source(args: &RunArgs, service: &ServiceEnv) -> Source {
    match &service.host {
        Some(host) if args.kubeconfig.is_none() && args.context.is_none() => Source::InCluster {
            sa_dir: args.sa_dir.clone(),
            host: host.clone(),
            port: service.port,
        },
        _ => Source::Kubeconfig {
            path: args.kubeconfig.clone(),
            context: args.context.clone(),
        },
    }
}

/// `mca run` (and `mca-sidecar`) from parsed arguments to an exit code: its runtime and
/// telemetry, the run, and one line in the configured format saying what went wrong.
pub fn main(args: RunArgs) -> std::process::ExitCode {
    let runtime = runtime(args.worker_threads).expect("starting the tokio runtime");
    #[cfg(feature = "otlp")]
    let _telemetry =
        crate::telemetry::init_with_export(args.log_format, args.otlp_endpoint.as_deref());
    #[cfg(not(feature = "otlp"))]
    let _telemetry = crate::telemetry::init_logs(args.log_format);
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("mca run failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes this process non-dumpable before it holds any credential: no core dump, and its
/// `/proc/PID` files (memory, environment, file descriptors) become root's, so another
/// process of the same user (the application in env mode, when the pod sets
/// `shareProcessNamespace` or `hostPID`) can neither read nor ptrace it. Called first by
/// every binary; a failure is reported and is no reason not to run.
pub fn forbid_dumps() {
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("mca: could not make the process non-dumpable (PR_SET_DUMPABLE): {error}");
    }
}

/// One thread runs everything (the runtime's and the caller's); more is a pool of workers.
pub fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads.into());
        builder
    };
    builder.enable_all().build()
}

/// Runs the sidecar until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    raise_open_file_limit();
    let service = ServiceEnv::from_env()?;
    let source = upstream_source(&args, &service);
    if let Some(path) = args
        .kubeconfig
        .as_ref()
        .filter(|p| sa::is_fake_kubeconfig(p))
    {
        return Err(Error::FakeKubeconfig(path.clone()));
    }
    let settings = cluster::Settings {
        limits: Limits {
            max_connections: args.upstream_max_connections as usize,
            connect_timeout: args.upstream_connect_timeout,
            idle_timeout: args.upstream_idle_timeout,
            keep_alive: KeepAlive {
                interval: args.upstream_ping_interval,
                timeout: args.upstream_ping_timeout,
            },
        },
        document_ttl: args.discovery_cache_ttl,
        list_cache: args.list_cache.clone().into(),
    };
    let schema = if args.config_restricted {
        Schema::Restricted
    } else {
        Schema::Full
    };
    let config = match &args.config {
        Some(path) if args.config_optional => Config::load_if_present(path, schema)?.unwrap_or_else(|| {
            tracing::info!(
                file = %path.display(),
                "no routing configuration yet: everything goes to the local cluster until it appears"
            );
            Config::local_only()
        }),
        Some(path) => Config::load(path, schema)?,
        None => Config::local_only(),
    };
    let clusters = Arc::new(Registry::load(&config, &source, &settings, None).await?);
    if let Some(own) = clusters
        .iter()
        .find(|c| is_own_listener(c.url(), args.listen))
    {
        return Err(Error::OwnListener {
            cluster: own.name().to_string(),
            url: own.url().to_string(),
            listen: args.listen,
        });
    }
    // The local cluster never changes while MCA runs: its address and namespace are fixed.
    let upstream = clusters.local().url().clone();
    let namespace = clusters.local().namespace().to_owned();
    let live = Live::new(Routing {
        clusters,
        router: config.router,
        merged_discovery: config.merged_discovery,
    });

    let names = SubjectNames::for_cluster(
        &args.cluster_domain,
        service.host.as_deref(),
        &args.extra_sans,
    )?;
    let (store, saved) = match &args.state_dir {
        Some(dir) => {
            let (store, saved) = Store::open(dir)?;
            (Some(store), saved)
        }
        None => (None, None),
    };
    let policy = CaPolicy {
        validity: args.ca_validity,
        overlap: args.ca_overlap,
    };
    let (saved_authorities, saved_tokens) = saved
        .map(|saved| (saved.authorities, saved.tokens))
        .unwrap_or_default();
    let authorities = if saved_authorities.is_empty() {
        Authorities::generate(policy)?
    } else {
        tracing::info!(
            state_dir = ?args.state_dir,
            "restored the CA and client token of the previous run"
        );
        Authorities::restore(&saved_authorities)?
    };
    let serving = Arc::new(ServingCert::new(
        authorities,
        policy,
        names,
        args.cert_validity,
    )?);
    let tls = TlsAcceptor::from(Arc::new(serving.server_config()));
    let client_auth = match (args.client_auth, saved_tokens) {
        (ClientAuthMode::Token, Some(saved)) => Some(Arc::new(ClientAuth::restore(&saved))),
        (ClientAuthMode::Token, None) => Some(Arc::new(ClientAuth::new().map_err(Error::Random)?)),
        (ClientAuthMode::None, _) => None,
    };

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })
    };
    let mut listeners = vec![bind(args.listen).await?];
    let admin_listener = bind(args.admin_listen).await?;
    let interception = {
        // Not kept: a reload replaces the clusters, and a removed one must be let go.
        let routing = live.load();
        let local = routing.clusters.local();
        intercept(&args, &service, &source, local, &mut listeners).await?
    };
    let readiness = Readiness::default();
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(admin::serve(
        admin_listener,
        admin::State {
            readiness: readiness.clone(),
            interception: interception.clone(),
            live: Arc::clone(&live),
            client_auth: client_auth.clone(),
            metrics: Arc::clone(&metrics),
            serving: Arc::clone(&serving),
        },
    ));

    let fake = Arc::new(FakeCredentials {
        sa_dir: args.fake_sa_dir.clone(),
        kubeconfig: args.fake_kubeconfig.clone().unwrap_or_else(|| {
            let beside = args
                .fake_sa_dir
                .parent()
                .unwrap_or(std::path::Path::new("."));
            beside.join("kubeconfig")
        }),
        serving: Arc::clone(&serving),
        store,
        listen: args.listen,
        namespace: namespace.clone(),
        client_auth: client_auth.clone(),
    });
    fake.write_all(&live.load())?;
    tokio::spawn(Arc::clone(&fake).maintain_authorities(Arc::clone(&live)));
    tokio::spawn(Arc::clone(&serving).renew_periodically({
        let (fake, live, grace) = (
            Arc::clone(&fake),
            Arc::clone(&live),
            args.client_token_grace,
        );
        move || fake.renew_token(&live.load(), grace)
    }));
    if let Some(path) = &args.config {
        let file = ConfigFile {
            path: path.clone(),
            local: source.clone(),
            settings,
            schema,
        };
        let fake = Arc::clone(&fake);
        tokio::spawn(Arc::clone(&live).watch(file, move |routing| {
            if let Err(error) = fake.write_kubeconfig(routing) {
                tracing::error!(%error, "could not rewrite the fake kubeconfig");
            }
        }));
    }
    readiness.set(true);
    tracing::info!(
        listen = %args.listen,
        admin = %args.admin_listen,
        %upstream,
        clusters = live.load().clusters.iter().count(),
        %namespace,
        fake_sa_dir = %args.fake_sa_dir.display(),
        fake_kubeconfig = %fake.kubeconfig.display(),
        client_auth = ?args.client_auth,
        "MCA is ready"
    );

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        let readiness = readiness.clone();
        async move {
            let signal = crate::signal::shutdown().await;
            tracing::info!(signal, "shutting down");
            readiness.set(false);
            shutdown.cancel();
        }
    });
    let proxy = Proxy::new(
        live,
        args.limits.limits(),
        client_auth,
        interception.clone(),
        metrics,
    );
    proxy
        .serve(listeners, tls, shutdown, args.shutdown_grace)
        .await;
    if let Some(interception) = interception {
        tracing::info!(counters = ?interception.counters(), "detaching eBPF interception");
    }
    tracing::info!("MCA stopped");
    Ok(())
}

/// Every watch an application holds over HTTP/1.1 is a socket in MCA: lift the soft limit on
/// open files to the hard one (as Go programs do at start), since the common soft default of
/// 1024 would otherwise cap an operator's watches.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_unless_a_kubeconfig_is_named() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let cli = crate::cli::Cli::parse_from([&["mca", "run"], extra].concat());
            match cli.command {
                crate::cli::Command::Run(args) => *args,
                other => panic!("parsed as {other:?}"),
            }
        };
        let pod = ServiceEnv {
            host: Some("fd00::1".into()),
            port: 443,
        };
        assert!(matches!(
            upstream_source(&parse(&[]), &pod),
            Source::InCluster { ref host, port: 443, .. } if host == "fd00::1"
        ));
        assert_eq!(pod.addr(), Some("[fd00::1]:443".parse().unwrap()));
        assert!(matches!(
            upstream_source(&parse(&["--context", "kind"]), &pod),
            Source::Kubeconfig {
                context: Some(_),
                ..
            }
        ));
        let laptop = ServiceEnv {
            host: None,
            port: 443,
        };
        assert!(matches!(
            upstream_source(&parse(&[]), &laptop),
            Source::Kubeconfig { path: None, .. }
        ));
    }
}
