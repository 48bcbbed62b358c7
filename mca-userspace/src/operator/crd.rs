//! The operator's resources (group `mca.io`, version `v1alpha1`, namespaced): the clusters
//! MCA sidecars in a namespace may reach and the routes between them. The operator turns a
//! namespace's `Cluster`s and `Route`s into the routing configuration its sidecars read
//! (`mca run --config`), the same file format `mca check-config` checks.
//!
//! The CRDs are generated from these types: `mca crds` prints them, and the Helm chart's
//! `crds/` holds that output (a test keeps them equal).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label a Secret must carry before a `Cluster` may use it: whoever may create a Cluster
/// but not read the namespace's Secrets must not be able to send one of them (a
/// ServiceAccount token, another application's credential) to a server of their choosing.
pub const CREDENTIALS_LABEL: &str = "mca.io/cluster-credentials";

/// A cluster the namespace's sidecars may send requests to.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mca.io",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "Status",
    shortname = "mcacluster",
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".spec.server"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// The API server's URL (`https://` only: credentials never go in clear).
    pub server: String,
    /// A Secret in the same namespace with the credentials: `token` with `ca.crt` (the API
    /// server's CA), or `tls.crt` and `tls.key` (a client certificate, `ca.crt` optional);
    /// and `server`, the URL of the one API server they are for, equal to this `server`. It
    /// must be labelled `mca.io/cluster-credentials=true`.
    pub credentials_secret: String,
    /// The name in the API server's certificate, when it is not the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Labels routes select clusters by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Share under the `weighted` strategy (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Active health checks; without them the cluster is always taken as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Active health checks (`mca run --config`'s `health`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Path probed with a GET (default `/readyz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Between probes, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// For one probe, e.g. `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Failed probes before the cluster is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_after: Option<u32>,
    /// Passed probes before it is used again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_after: Option<u32>,
}

/// A routing rule for the namespace's sidecars.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mca.io",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "Status",
    shortname = "mcaroute",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Routes are tried by priority, lowest first (ties by name); the first that matches
    /// takes the request.
    #[serde(default)]
    pub priority: i32,
    /// Which requests (every condition must hold; one left out holds for all). Ignored for
    /// the default route.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Where they go.
    pub to: Target,
    /// The route for requests no other route takes (at most one per namespace; without one,
    /// they go to the local cluster).
    #[serde(default)]
    pub default: bool,
}

/// A route's conditions (`mca run --config`'s `match`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    /// Namespaces (exact or `*` globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// `[group/]resource[/subresource]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// API verbs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// A label selector the request's objects must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// A route's clusters (`mca run --config`'s `to`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Cluster names (`local` is the cluster the pod runs in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// A label selector over the clusters' labels (a ClusterProfile's properties are its
    /// labels): the clusters it selects come after those named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<String>,
    /// single, failover, roundRobin, weighted, leastRequests or consistentHash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

/// What the operator found: a `Ready` condition saying whether the resource is in the
/// configuration the sidecars read, and why not.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A condition, as `metav1.Condition` (its own type here: k8s-openapi's has no schema
/// without a feature that would give every Kubernetes type one).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason: `Published`, `Invalid`.
    pub reason: String,
    /// What is wrong, for people.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation the condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
