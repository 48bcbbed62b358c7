//! The configuration file as written: `serde` types mirroring the YAML, before any checking.
//! Every struct rejects unknown fields, so a misspelt key is an error with its line rather
//! than a setting silently ignored.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct File {
    /// Clusters besides the implicit `local`.
    #[serde(default)]
    pub clusters: Vec<Spanned<Cluster>>,
    /// Ordered routing rules; the first that matches wins.
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// Where requests no route matches go; `local` when absent.
    pub default_route: Option<Spanned<Target>>,
    /// `defaultRoute` (discovery goes where the routes send it) or `merged` (every healthy
    /// cluster's, joined).
    pub discovery: Option<Spanned<String>>,
}

/// One cluster and MCA's credentials for it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// A DNS label, unique, not `local`.
    pub name: String,
    /// `https://host:port` of the API server.
    pub server: Option<String>,
    /// A PEM file with the CA certificates to trust.
    pub certificate_authority: Option<PathBuf>,
    /// The same, inline: base64 of the PEM.
    pub certificate_authority_data: Option<String>,
    /// The name to verify the server's certificate against, when not the server's host.
    pub tls_server_name: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    /// A file holding the bearer token, re-read as it changes.
    pub token_file: Option<PathBuf>,
    /// A PEM client certificate file (with `clientKey`).
    pub client_certificate: Option<PathBuf>,
    /// The client certificate's PEM key file.
    pub client_key: Option<PathBuf>,
    /// A `client.authentication.k8s.io` credential plugin.
    pub exec: Option<Exec>,
    /// Everything from a kubeconfig instead.
    pub kubeconfig: Option<KubeconfigRef>,
    /// Labels for routing decisions and logs.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Share of requests under the `weighted` strategy.
    pub weight: Option<u32>,
    /// Active health checking.
    pub health: Option<Health>,
    /// Why the cluster is down, as whoever wrote the configuration knows it (the operator
    /// copies a fleet manager's `ControlPlaneHealthy=False` here): routes skip it whatever
    /// its probes say, until the configuration changes.
    pub unhealthy: Option<String>,
}

/// A credential plugin, as in a kubeconfig's `user.exec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exec {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// `client.authentication.k8s.io/v1` unless given.
    pub api_version: Option<String>,
}

/// One environment variable of a credential plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A kubeconfig file and, optionally, the context to use from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigRef {
    /// The kubeconfig.
    pub path: PathBuf,
    /// Its current context when absent.
    pub context: Option<String>,
}

/// Active health checks of a cluster.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Path to GET; `/readyz` by default.
    pub path: Option<String>,
    /// Between probes (`5s`).
    pub interval: Option<String>,
    /// Per probe (`2s`).
    pub timeout: Option<String>,
    /// Failed probes before the cluster is taken out (3).
    pub unhealthy_after: Option<u32>,
    /// Passed probes before it is taken back (2).
    pub healthy_after: Option<u32>,
}

/// A routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// For logs and errors.
    pub name: String,
    /// What requests it takes; every condition given must hold.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Where they go.
    pub to: Target,
}

/// The conditions of a route. An empty list means "any".
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Namespaces, exact or with `*` wildcards.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `[group/]resource[/subresource]`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Kubernetes verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// A Kubernetes label selector.
    pub label_selector: Option<String>,
    /// `ip:port` the application dialled, as the eBPF hook recorded it.
    #[serde(default)]
    pub original_destination: Vec<String>,
}

/// The clusters a route sends to, and how it chooses among them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Cluster names.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// A label selector over the clusters' labels: the clusters it selects, in the file's
    /// order, come after those named.
    pub cluster_selector: Option<String>,
    /// `single` (the default), `failover`, `roundRobin`, `weighted`, `leastRequests`,
    /// `consistentHash`, `fanOut`.
    pub strategy: Option<String>,
}
