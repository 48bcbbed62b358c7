//! The `mca` command line. Every flag can also be set through its `MCA_*` environment
//! variable, which is how the sidecar is configured in a pod spec.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};

use crate::{
    client_auth::Mode as ClientAuthMode, inject::pod_security::Level, intercept::Mode,
    limits::Limits, route::pattern::NamespacePattern, telemetry::LogFormat,
};

/// Makes a domain enum a flag's value, with the name each variant is written as and its help,
/// so that the type itself knows nothing of clap.
macro_rules! flag_values {
    ($type:ident { $($variant:ident = $name:literal: $help:literal,)+ }) => {
        impl ValueEnum for $type {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($type::$variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($type::$variant => PossibleValue::new($name).help($help),)+
                })
            }
        }
    };
}

flag_values!(LogFormat {
    Text = "text": "Human-readable `key=value` lines",
    Json = "json": "One JSON object per line, for log pipelines",
});

flag_values!(Mode {
    Auto = "auto": "eBPF where it loads; otherwise env overrides, with one log line saying why",
    Ebpf = "ebpf": "eBPF or fail",
    Env = "env": "Env overrides only (`KUBERNETES_SERVICE_HOST=127.0.0.1`, `KUBERNETES_SERVICE_PORT`)",
});

flag_values!(ClientAuthMode {
    Token = "token": "Every request must carry the token MCA provides (the default)",
    None = "none": "Anyone who reaches the listener is served with the real credentials: \
                    acceptable only when nothing untrusted can reach it (see `docs/operations.md`, \
                    *Client authentication*)",
});

flag_values!(Level {
    Privileged = "privileged": "Anything goes (also a namespace without the label, as the API server's \
                                default)",
    Baseline = "baseline": "No capabilities beyond the default set, no `hostPath`",
    Restricted = "restricted": "Baseline, and non-root, no privilege escalation, capabilities \
                                dropped, a seccomp profile",
});

/// MCA: a sidecar that transparently proxies an application's Kubernetes API traffic.
#[derive(Debug, Parser)]
#[command(name = "mca", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `mca` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar proxy.
    Run(Box<RunArgs>),
    /// Check a routing configuration file offline: print each problem with its line, exit
    /// non-zero on any.
    CheckConfig {
        /// The file `mca run --config` would read.
        file: PathBuf,
        /// Check it as an injected sidecar reads it (`mca run --config-restricted`).
        #[arg(long)]
        restricted: bool,
    },
    /// Add MCA to the workloads in Kubernetes manifests (like `linkerd inject`): prints the
    /// manifests with MCA injected, and on stderr what was done to each object.
    Inject(InjectArgs),
    /// Serve the mutating admission webhook that injects MCA into pods as they are created
    /// (namespaces labelled mca.io/inject=enabled, pods annotated mca.io/inject: enabled).
    Webhook(WebhookArgs),
    /// Run the operator: publish each namespace's routing configuration from its Cluster and
    /// Route resources, and keep the webhook's certificate current (leader-elected).
    Operator(OperatorArgs),
    /// Print the CustomResourceDefinitions of the operator's resources (Cluster, Route in
    /// mca.io/v1alpha1) as YAML documents, for `kubectl apply -f -`.
    Crds,
}

/// `mca operator` options.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// The operator's namespace (its Lease, the webhook's Secrets).
    #[arg(long, env = "MCA_NAMESPACE", default_value = "mca-system")]
    pub namespace: String,

    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "mca-operator")]
    pub identity: String,

    /// The Secret each namespace's configuration is published as (what `mca inject
    /// --config-secret` mounts).
    #[arg(long, env = "MCA_CONFIG_SECRET", default_value = "mca-routes")]
    pub config_secret: String,

    /// The webhook's Service; with it the operator keeps the webhook's certificate
    /// (`<service>-tls`) and the configuration's caBundle current.
    #[arg(long, env = "MCA_WEBHOOK_SERVICE")]
    pub webhook_service: Option<String>,

    /// The MutatingWebhookConfiguration whose caBundle the operator sets.
    #[arg(long, env = "MCA_WEBHOOK_CONFIGURATION", default_value = "mca")]
    pub webhook_configuration: String,

    /// Watch the credential Secrets (the metadata of those labelled
    /// mca.io/cluster-credentials=true), so a changed credential is published at once
    /// instead of with the next resync (60 s). Needs `list` and `watch` on every Secret.
    #[arg(long, env = "MCA_WATCH_CREDENTIAL_SECRETS")]
    pub watch_credential_secrets: bool,

    /// A namespace holding SIG-Multicluster ClusterProfiles (where the cluster manager writes
    /// them: `kubectl get clusterprofiles -A`) to take clusters from; repeatable, the first
    /// holding a name wins. Needs --clusterprofile-provider-file.
    #[arg(
        long = "clusterprofile-namespace",
        env = "MCA_CLUSTERPROFILE_NAMESPACES",
        value_delimiter = ','
    )]
    pub clusterprofile_namespaces: Vec<String>,

    /// The access providers MCA may use, with their exec plugins (`{"providers": [...]}`, as
    /// cluster-inventory-api's consumers read it). The operator runs the plugins.
    #[arg(long, env = "MCA_CLUSTERPROFILE_PROVIDER_FILE")]
    pub clusterprofile_provider_file: Option<PathBuf>,

    /// The namespaces whose Routes may use ClusterProfiles (patterns with `*`; repeatable).
    /// None by default: a profile's credential is the fleet's.
    #[arg(long = "clusterprofile-consumers", env = "MCA_CLUSTERPROFILE_CONSUMERS", value_delimiter = ',', value_parser = NamespacePattern::parse)]
    pub clusterprofile_consumers: Vec<NamespacePattern>,

    /// Log format.
    #[arg(long, env = "MCA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `mca webhook` options.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// HTTPS listening address.
    #[arg(long, env = "MCA_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain served (read again when it changes).
    #[arg(
        long,
        env = "MCA_WEBHOOK_TLS_CERT",
        default_value = "/etc/mca-webhook/tls.crt"
    )]
    pub tls_cert: PathBuf,

    /// PEM private key of the certificate.
    #[arg(
        long,
        env = "MCA_WEBHOOK_TLS_KEY",
        default_value = "/etc/mca-webhook/tls.key"
    )]
    pub tls_key: PathBuf,

    /// How to inject.
    #[command(flatten)]
    pub injection: Injection,

    /// Log format.
    #[arg(long, env = "MCA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `mca inject` options.
#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// Manifest files (YAML or JSON, several documents each, `List`s too) or directories of
    /// them; `-` or nothing reads stdin.
    pub paths: Vec<PathBuf>,

    /// The PodSecurity level the manifests' namespace enforces (its
    /// pod-security.kubernetes.io/enforce label). Above `privileged`, MCA is injected in env
    /// mode (with a warning): eBPF mode needs capabilities and a hostPath that `baseline`
    /// forbids, and the API server would refuse the pods.
    #[arg(
        long,
        env = "MCA_POD_SECURITY",
        value_enum,
        default_value = "privileged"
    )]
    pub pod_security: Level,

    /// How to inject.
    #[command(flatten)]
    pub injection: Injection,
}

/// How pods get MCA (`mca inject`, `mca webhook`).
#[derive(Debug, Clone, Args)]
pub struct Injection {
    /// MCA's image.
    #[arg(long, env = "MCA_IMAGE", default_value = concat!("mca:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// How the application's traffic reaches MCA: `ebpf` (MCA gets CAP_BPF and CAP_NET_ADMIN,
    /// the application no env override), `env` (KUBERNETES_SERVICE_HOST/PORT overrides, MCA
    /// unprivileged), `auto` (both: eBPF where it loads).
    #[arg(long, env = "MCA_INJECT_MODE", value_enum, default_value = "auto")]
    pub mode: Mode,

    /// A Secret with the routing configuration (key `config.yaml`), e.g. the one the
    /// operator publishes; mounted into MCA only. The application then also gets
    /// KUBECONFIG pointing at the fake kubeconfig (a context per cluster).
    #[arg(long, env = "MCA_CONFIG_SECRET")]
    pub config_secret: Option<String>,

    /// Lifetime of MCA's projected ServiceAccount token, in seconds (the kubelet renews it
    /// at 80%).
    #[arg(
        long,
        env = "MCA_TOKEN_EXPIRATION_SECONDS",
        default_value_t = 3607,
        value_parser = clap::value_parser!(i64).range(600..)
    )]
    pub token_expiration_seconds: i64,

    /// The port of the cluster's `kubernetes` Service: the kubelet names the service-link
    /// variables after it (`KUBERNETES_PORT_443_TCP`), and env mode overrides them all. In a
    /// pod (the webhook's), the kubelet's KUBERNETES_SERVICE_PORT.
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", default_value_t = 443)]
    pub service_port: u16,
}

impl From<&Injection> for crate::inject::Settings {
    fn from(injection: &Injection) -> Self {
        Self {
            image: injection.image.clone(),
            mode: injection.mode,
            config_secret: injection.config_secret.clone(),
            token_expiration_seconds: injection.token_expiration_seconds,
            service_port: injection.service_port,
        }
    }
}

/// `mca run` options.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address the proxy listens on; applications reach it as
    /// KUBERNETES_SERVICE_HOST/PORT.
    #[arg(long, env = "MCA_LISTEN", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,

    /// Address of the admin listener serving /livez, /readyz and /metrics.
    #[arg(long, env = "MCA_ADMIN_LISTEN", default_value = "0.0.0.0:9901")]
    pub admin_listen: SocketAddr,

    /// Directory where MCA writes the fake ServiceAccount (ca.crt, token, namespace) that the
    /// application mounts at /var/run/secrets/kubernetes.io/serviceaccount.
    #[arg(
        long,
        env = "MCA_FAKE_SA_DIR",
        default_value = "/var/run/mca/serviceaccount"
    )]
    pub fake_sa_dir: PathBuf,

    /// Where MCA writes the fake kubeconfig: MCA's CA, the client token, a context `mca`
    /// (routed by the rules) and one per cluster (`kubectl --context east`). Default:
    /// `kubeconfig` beside the fake ServiceAccount directory.
    #[arg(long, env = "MCA_FAKE_KUBECONFIG")]
    pub fake_kubeconfig: Option<PathBuf>,

    /// MCA's real ServiceAccount directory, used in-cluster.
    #[arg(
        long,
        env = "MCA_SA_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub sa_dir: PathBuf,

    /// Route requests across clusters as this YAML file says (clusters, routes, default
    /// route). Without it everything goes to the local cluster.
    #[arg(long, env = "MCA_CONFIG")]
    pub config: Option<PathBuf>,

    /// A missing `--config` file is not an error: everything goes to the local cluster until
    /// it appears. For the operator's Secret, mounted `optional`: it exists only once the
    /// namespace has a Cluster or Route.
    #[arg(long, env = "MCA_CONFIG_OPTIONAL", requires = "config")]
    pub config_optional: bool,

    /// Read `--config` as written by someone trusted with a Secret, not with MCA's process:
    /// no `exec` credential plugins, no `kubeconfig` references, and file settings only as
    /// names of files beside the configuration. Injected sidecars run so; a configuration
    /// using more is refused (at start, or on reload while the previous one keeps serving).
    #[arg(long, env = "MCA_CONFIG_RESTRICTED", requires = "config")]
    pub config_restricted: bool,

    /// Use this kubeconfig for the upstream instead of the in-cluster configuration. Without
    /// it, and outside a cluster (no KUBERNETES_SERVICE_HOST), kube's default kubeconfig
    /// search applies (KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "MCA_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use; the current context by default.
    #[arg(long, env = "MCA_CONTEXT")]
    pub context: Option<String>,

    /// The cluster's DNS domain, for the kubernetes.default.svc.<domain> name in MCA's
    /// serving certificate.
    #[arg(long, env = "MCA_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// More DNS names or IP addresses for MCA's serving certificate (repeatable, or
    /// comma-separated in MCA_EXTRA_SAN).
    #[arg(long = "extra-san", env = "MCA_EXTRA_SAN", value_delimiter = ',')]
    pub extra_sans: Vec<String>,

    /// Whether applications must present the token MCA writes into the fake ServiceAccount
    /// (`token`, the default) or anyone who reaches the listener is served (`none`: only when
    /// nothing untrusted shares the pod's network namespace).
    #[arg(long, env = "MCA_CLIENT_AUTH", value_enum, default_value = "token")]
    pub client_auth: ClientAuthMode,

    /// How long a client token stays accepted after it was renewed (clients re-read the token
    /// file about once a minute).
    #[arg(
        long,
        env = "MCA_CLIENT_TOKEN_GRACE",
        default_value = "10m",
        value_parser = crate::duration::parse
    )]
    pub client_token_grace: Duration,

    /// Lifetime of the serving certificate (and of the client token, renewed with it); it is
    /// renewed after two thirds of it.
    #[arg(long, env = "MCA_CERT_VALIDITY", default_value = "24h", value_parser = crate::duration::parse)]
    pub cert_validity: Duration,

    /// Where MCA keeps what must survive its restart for the pod's life: its CAs (keys
    /// included) and the client tokens, so a restarted MCA serves applications that loaded
    /// the old ca.crt and token. Only MCA's container may mount it (injected pods: an
    /// in-memory emptyDir). Without it, a restarted MCA has a new CA and token, and running
    /// clients fail until they restart.
    #[arg(long, env = "MCA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Lifetime of MCA's CA. After two thirds of it the next CA is made and published in
    /// ca.crt beside the current one; MCA serves with it --ca-overlap later.
    #[arg(long, env = "MCA_CA_VALIDITY", default_value = "8760h", value_parser = crate::duration::parse)]
    pub ca_validity: Duration,

    /// How long the next CA is in ca.crt before MCA serves certificates it signed, so that
    /// clients reading ca.crt meanwhile trust both.
    #[arg(long, env = "MCA_CA_OVERLAP", default_value = "24h", value_parser = crate::duration::parse)]
    pub ca_overlap: Duration,

    /// On SIGTERM, how long requests in flight (watches, exec sessions) may continue.
    #[arg(long, env = "MCA_SHUTDOWN_GRACE", default_value = "25s", value_parser = crate::duration::parse)]
    pub shutdown_grace: Duration,

    /// Upper bound for connecting to the API server (TCP and TLS).
    #[arg(
        long,
        env = "MCA_UPSTREAM_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = crate::duration::parse
    )]
    pub upstream_connect_timeout: Duration,

    /// Most connections MCA holds to the API server. Each HTTP/2 connection carries as many
    /// requests as the server allows (kube-apiserver: 100), and every watch holds one for its
    /// lifetime; exec, attach and port-forward sessions each take a connection. When all are
    /// busy a request waits up to the connect timeout, then gets 429 with Retry-After. The last
    /// connection is kept for short requests, so long-running ones never starve them.
    #[arg(
        long,
        env = "MCA_UPSTREAM_MAX_CONNECTIONS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub upstream_max_connections: u32,

    /// A connection to the API server with no request in flight for this long is closed.
    #[arg(
        long,
        env = "MCA_UPSTREAM_IDLE_TIMEOUT",
        default_value = "90s",
        value_parser = crate::duration::parse
    )]
    pub upstream_idle_timeout: Duration,

    /// How long MCA answers discovery and OpenAPI requests from its copy of each cluster's
    /// documents before asking the API server (with If-None-Match) whether they changed;
    /// 0s turns the cache off.
    #[arg(
        long,
        env = "MCA_DISCOVERY_CACHE_TTL",
        default_value = "30s",
        value_parser = crate::duration::parse
    )]
    pub discovery_cache_ttl: Duration,

    /// Resources (`[group/]version/resource`, e.g. `v1/configmaps`, `apps/v1/deployments`)
    /// of which MCA keeps a watch-fed copy per cluster, answering LISTs with
    /// `resourceVersion=0` (what informers start with) from memory. None by default.
    #[arg(long = "list-cache", env = "MCA_LIST_CACHE", value_delimiter = ',')]
    pub list_cache: Vec<crate::cluster::lists::Resource>,

    /// Bounds on what clients may hold and ask of MCA.
    #[command(flatten)]
    pub limits: LimitFlags,

    /// How often MCA PINGs each HTTP/2 connection to the API server, to find connections
    /// whose peer went silent (client-go: 30s).
    #[arg(
        long,
        env = "MCA_UPSTREAM_PING_INTERVAL",
        default_value = "30s",
        value_parser = crate::duration::parse
    )]
    pub upstream_ping_interval: Duration,

    /// A connection whose PING is not answered within this long is closed: its watches end
    /// (clients watch anew) and reads caught on it are sent again on another (client-go: 15s).
    #[arg(
        long,
        env = "MCA_UPSTREAM_PING_TIMEOUT",
        default_value = "15s",
        value_parser = crate::duration::parse
    )]
    pub upstream_ping_timeout: Duration,

    /// How applications reach MCA: `ebpf` redirects their connects to the API server with
    /// cgroup hooks (needs CAP_BPF, CAP_NET_ADMIN and a cgroup v2 mount); `env` relies on
    /// KUBERNETES_SERVICE_HOST=127.0.0.1 / KUBERNETES_SERVICE_PORT in the app; `auto` tries
    /// eBPF and falls back to env.
    #[arg(long, env = "MCA_INTERCEPT", value_enum, default_value = "auto")]
    pub intercept: Mode,

    /// The cgroup whose processes are intercepted (absolute, or relative to the cgroup2
    /// mount); by default the parent of MCA's own cgroup, i.e. the pod's.
    #[arg(long, env = "MCA_CGROUP")]
    pub cgroup: Option<PathBuf>,

    /// The host's cgroup2 hierarchy mounted into MCA's container (a hostPath of
    /// /sys/fs/cgroup). In a container with a cgroup namespace of its own, MCA sees its
    /// cgroup as the root and cannot see the pod's; it finds itself here, by cgroup id, and
    /// attaches to its parent, the pod's cgroup.
    #[arg(long, env = "MCA_HOST_CGROUP_ROOT")]
    pub host_cgroup_root: Option<PathBuf>,

    /// More destinations to intercept (API server endpoint IP:port pairs, extras), besides
    /// MCA's own KUBERNETES_SERVICE_HOST:PORT and an IP upstream address.
    #[arg(
        long = "intercept-address",
        env = "MCA_INTERCEPT_ADDRESS",
        value_delimiter = ','
    )]
    pub intercept_addresses: Vec<SocketAddr>,

    /// uids whose connects are never redirected (MCA's own cgroup always is exempt).
    #[arg(long = "exempt-uid", env = "MCA_EXEMPT_UID", value_delimiter = ',')]
    pub exempt_uids: Vec<u32>,

    /// Log every redirect the eBPF programs make (aya-log events, at info level).
    #[arg(long, env = "MCA_EBPF_LOG")]
    pub ebpf_log: bool,

    /// Where to send request spans over OTLP/HTTP (protobuf), e.g. http://127.0.0.1:4318
    /// (`/v1/traces` is appended). Without it the standard OTEL_EXPORTER_OTLP_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT turns export on. Builds with the `otlp` feature only.
    #[cfg(feature = "otlp")]
    #[arg(long, env = "MCA_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format.
    #[arg(long, env = "MCA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Threads serving requests. 1 (the default) runs everything on one thread, as a sidecar
    /// given a fraction of a core should: no cross-thread wake-ups, the least memory. More
    /// spread connections over that many threads.
    #[arg(
        long,
        env = "MCA_WORKER_THREADS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub worker_threads: u16,
}

/// `mca run`'s bounds on what clients may hold and ask of MCA (see [`Limits`]).
#[derive(Debug, Clone, Args)]
pub struct LimitFlags {
    /// A client that has not finished its TLS handshake after this long is disconnected.
    #[arg(
        long,
        env = "MCA_TLS_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_parser = crate::duration::parse
    )]
    pub tls_handshake_timeout: Duration,

    /// An HTTP/1.1 client must send a request's headers within this long; an idle keep-alive
    /// connection waiting for its next request is closed after it too.
    #[arg(
        long,
        env = "MCA_HEADER_READ_TIMEOUT",
        default_value = "32s",
        value_parser = crate::duration::parse
    )]
    pub header_read_timeout: Duration,

    /// A connection with no request open for this long is closed (HTTP/2 with a GOAWAY).
    #[arg(
        long,
        env = "MCA_IDLE_TIMEOUT",
        default_value = "90s",
        value_parser = crate::duration::parse
    )]
    pub idle_timeout: Duration,

    /// Largest request header block, in bytes; larger requests get 431.
    #[arg(
        long,
        env = "MCA_MAX_HEADER_BYTES",
        default_value_t = 1 << 20,
        value_parser = clap::value_parser!(u32).range(16 * 1024..)
    )]
    pub max_header_bytes: u32,

    /// Most client connections open at once; beyond it new connections wait in the kernel's
    /// accept queue.
    #[arg(
        long,
        env = "MCA_MAX_CONNECTIONS",
        default_value_t = 16384,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,

    /// Most non-mutating requests in flight (long-running ones not counted); more get 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, env = "MCA_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub max_requests_inflight: u32,

    /// Most mutating requests (every verb but get, list and watch) in flight; more get 429
    /// with Retry-After. 0: no limit.
    #[arg(
        long,
        env = "MCA_MAX_MUTATING_REQUESTS_INFLIGHT",
        default_value_t = 200
    )]
    pub max_mutating_requests_inflight: u32,

    /// Longest a request that is not long-running may take (or its `?timeout=` if shorter);
    /// then it gets 504 and its upstream request is cancelled.
    #[arg(
        long,
        env = "MCA_REQUEST_TIMEOUT",
        default_value = "60s",
        value_parser = crate::duration::parse
    )]
    pub request_timeout: Duration,

    /// Concurrent streams an HTTP/2 client may open on one connection.
    #[arg(
        long,
        env = "MCA_HTTP2_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 250,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub http2_max_streams_per_connection: u32,
}

impl LimitFlags {
    /// The limits the flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            request_timeout: self.request_timeout,
            http2_max_streams_per_connection: self.http2_max_streams_per_connection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitFlags,
    }

    #[test]
    fn durations_are_written_as_kubernetes_writes_them() {
        let limits = Flags::parse_from(["mca", "--request-timeout", "1m30s"])
            .limits
            .limits();
        assert_eq!(limits.request_timeout, Duration::from_secs(90));
        let Err(refused) = Flags::try_parse_from(["mca", "--idle-timeout", "90"]) else {
            panic!("a duration without a unit was accepted");
        };
        assert!(refused.to_string().contains("not a duration"), "{refused}");
    }

    #[test]
    fn default_limits_are_the_api_servers() {
        let limits = Flags::parse_from(["mca"]).limits.limits();
        assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.header_read_timeout, Duration::from_secs(32));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.max_header_bytes, 1 << 20);
        assert_eq!(limits.max_requests_inflight, 400);
        assert_eq!(limits.max_mutating_requests_inflight, 200);
        assert_eq!(limits.request_timeout, Duration::from_secs(60));
        assert_eq!(limits.http2_max_streams_per_connection, 250);
        // Builds without panicking (hyper checks the buffer size and the timer).
        let _ = limits.http();
    }
}
