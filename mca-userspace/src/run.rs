//! `mca run`: start-up, serving, and orderly shutdown of the sidecar.
//!
//! Start-up order matters to the pod: the upstream configuration is loaded first (a sidecar
//! without credentials should fail loudly, not serve errors), then the CA and serving
//! certificate, then the listeners, and only then the fake ServiceAccount is written and
//! readiness raised, so an application never starts against a proxy that cannot serve it.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, Readiness},
    cli::RunArgs,
    client_auth::{ClientAuth, Mode as ClientAuthMode},
    cluster::{self, Cluster, Registry},
    config::{Config, Schema},
    intercept::{Interception, Mode, Settings},
    metrics::Metrics,
    proxy::Proxy,
    reload::{ConfigFile, Live, Routing},
    sa,
    state::{self, State, Store},
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

/// What MCA writes for the application instead of real credentials: the fake ServiceAccount
/// and the fake kubeconfig, both carrying MCA's CAs and the client token; and, in
/// `--state-dir`, what a restarted MCA needs to go on serving them. The state is always
/// saved before the application's files change, so a crash in between leaves nothing the
/// application holds unknown to the next run.
struct FakeCredentials {
    sa_dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    serving: Arc<ServingCert>,
    store: Option<Store>,
    listen: SocketAddr,
    namespace: String,
    client_auth: Option<Arc<ClientAuth>>,
}

impl FakeCredentials {
    fn token(&self) -> String {
        self.client_auth
            .as_ref()
            .map_or_else(|| sa::PLACEHOLDER_TOKEN.to_owned(), |auth| auth.token())
    }

    fn write_all(&self, routing: &Routing) -> Result<(), Error> {
        self.save_state()?;
        let ca = self.serving.ca_pem();
        sa::provision(&self.sa_dir, &ca, &self.token(), &self.namespace)?;
        Ok(self.write_kubeconfig(routing)?)
    }

    fn save_state(&self) -> Result<(), state::Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.save(&State {
            authorities: self.serving.save_authorities(),
            tokens: self.client_auth.as_ref().map(|auth| auth.save()),
        })
    }

    fn write_kubeconfig(&self, routing: &Routing) -> Result<(), sa::Error> {
        let names: Vec<&str> = routing.clusters.iter().map(|c| &**c.name()).collect();
        sa::write_kubeconfig(
            &self.kubeconfig,
            &self.serving.ca_pem(),
            &self.token(),
            self.listen,
            &self.namespace,
            &names,
        )
    }

    /// Renews the client token (the old one stays good for `grace`) and writes the new one.
    fn renew_token(&self, routing: &Routing, grace: std::time::Duration) {
        let Some(auth) = &self.client_auth else {
            return;
        };
        let renewed = auth
            .rotate(grace)
            .map_err(|error| error.to_string())
            .and_then(|()| {
                self.save_state().map_err(|e| e.to_string())?;
                sa::write_token(&self.sa_dir, &auth.token()).map_err(|e| e.to_string())?;
                self.write_kubeconfig(routing).map_err(|e| e.to_string())
            });
        match renewed {
            Ok(()) => tracing::info!(
                ?grace,
                "renewed the client token; the previous one is accepted for the grace period"
            ),
            Err(error) => tracing::error!(%error, "renewing the client token failed"),
        }
    }

    /// Keeps the CAs moving ([`ServingCert::maintain`]) for as long as MCA runs: a new set is
    /// saved and published in `ca.crt` (and the kubeconfig) as soon as it is made, which is
    /// `--ca-overlap` before MCA serves with it.
    async fn maintain_authorities(self: Arc<Self>, live: Arc<Live>) {
        loop {
            let now = time::OffsetDateTime::now_utc();
            let published = self
                .serving
                .maintain(now)
                .map_err(Error::from)
                .and_then(|done| {
                    if done.authorities {
                        self.write_all(&live.load())?;
                    }
                    Ok(done)
                });
            match published {
                Ok(done) if done.authorities => tracing::info!("published MCA's CAs in ca.crt"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "maintaining MCA's CAs failed; retrying"),
            }
            let wait = self
                .serving
                .next_maintenance(time::OffsetDateTime::now_utc());
            tokio::time::sleep(wait.max(std::time::Duration::from_secs(1))).await;
        }
    }
}

/// Sets up eBPF interception as `--intercept` asks, adding MCA's IPv6 loopback listener to
/// `listeners` when redirected IPv6 connects are to land there.
async fn intercept(
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

/// What to intercept, without repeats: the Service address (what in-cluster clients dial),
/// the upstream's address if it is an IP, the API server's endpoints, and extras.
fn destinations(
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
fn is_own_listener(url: &http::Uri, listen: SocketAddr) -> bool {
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
fn host_ip(url: &http::Uri) -> Option<IpAddr> {
    url.host()?.trim_matches(['[', ']']).parse().ok()
}

/// The port of `url`, or its scheme's.
fn port(url: &http::Uri) -> u16 {
    let default = if url.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    url.port_u16().unwrap_or(default)
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
