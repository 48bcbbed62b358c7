//! SIG-Multicluster's `ClusterProfile` (KEP-4322, `multicluster.x-k8s.io`), as much of it as
//! MCA reads: where a member's API server is (`status.accessProviders[].cluster`, or the
//! deprecated `status.credentialProviders`), what it is like (`status.properties`), and
//! whether its control plane is healthy (the `ControlPlaneHealthy` condition).
//!
//! The fields are the same in `v1alpha1` and `v1alpha2`, so one type reads both. It is read
//! leniently (unknown fields ignored): the inventory is another project's API, and a field
//! added there must not make MCA drop the member.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

/// The API group.
pub const GROUP: &str = "multicluster.x-k8s.io";
/// The kind.
pub const KIND: &str = "ClusterProfile";
/// The versions MCA reads, preferred first.
pub const VERSIONS: [&str; 2] = ["v1alpha2", "v1alpha1"];
/// The condition a cluster manager sets on a member's control plane.
pub const CONTROL_PLANE_HEALTHY: &str = "ControlPlaneHealthy";
/// The extension holding the exec plugin's per-cluster configuration (client-go's
/// `ExecCredential.spec.cluster.config`).
pub const EXEC_EXTENSION: &str = "client.authentication.k8s.io/exec";
/// The extension with extra plugin arguments for this member (KEP-5339).
pub const ARGS_EXTENSION: &str = "clusterprofiles.multicluster.x-k8s.io/exec/additional-args";
/// The extension with extra plugin environment variables for this member (KEP-5339).
pub const ENV_EXTENSION: &str = "clusterprofiles.multicluster.x-k8s.io/exec/additional-envs";

/// A `ClusterProfile` of either version.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ClusterProfile {
    /// Its name and namespace.
    pub metadata: Metadata,
    /// What the cluster manager observed.
    #[serde(default)]
    pub status: Status,
}

/// The part of `metadata` MCA uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Metadata {
    /// The member's name, and the cluster's in MCA's configuration.
    #[serde(default)]
    pub name: String,
    /// The inventory's namespace.
    #[serde(default)]
    pub namespace: String,
}

/// `status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `metav1.Condition`s; MCA reads [`CONTROL_PLANE_HEALTHY`].
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Name/value pairs: `topology.kubernetes.io/region`, `clusterset.k8s.io/cluster-id`...
    #[serde(default)]
    pub properties: Vec<Property>,
    /// How to reach the member, one entry per kind of access.
    #[serde(default)]
    pub access_providers: Vec<AccessProvider>,
    /// The deprecated `v1alpha1` name of `accessProviders`; an entry of the same name there
    /// wins.
    #[serde(default)]
    pub credential_providers: Vec<AccessProvider>,
}

/// A condition (the fields MCA reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Condition {
    /// Its type.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// A CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// A property of the member.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Property {
    /// Its well-known or manager-defined name.
    #[serde(default)]
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// One way to reach the member: a provider name the consumer's provider file may know,
/// and a kubeconfig `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AccessProvider {
    /// The provider's name (`kubeconfig`, `google`, `open-cluster-management`...).
    #[serde(default)]
    pub name: String,
    /// The member's API server.
    #[serde(default)]
    pub cluster: KubeconfigCluster,
}

/// A kubeconfig `cluster` (client-go's `clientcmd/api/v1.Cluster`: kebab-case keys).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KubeconfigCluster {
    /// `https://host:port`.
    #[serde(default)]
    pub server: String,
    /// The name in the server's certificate, when not the URL's host.
    #[serde(default)]
    pub tls_server_name: String,
    /// Never honoured: MCA does not send credentials to a server it cannot verify.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// The CA bundle (base64 of PEM in JSON).
    #[serde(default)]
    pub certificate_authority_data: String,
    /// An HTTP proxy to reach the server through.
    #[serde(default)]
    pub proxy_url: String,
    /// Named extensions: the plugin's configuration and per-member arguments.
    #[serde(default)]
    pub extensions: Vec<NamedExtension>,
}

/// A kubeconfig extension.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NamedExtension {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its value, any JSON.
    #[serde(default)]
    pub extension: serde_json::Value,
}

impl ClusterProfile {
    /// `namespace/name`, for logs and messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// The access provider named `name`: from `accessProviders`, else from the deprecated
    /// `credentialProviders`.
    pub fn access_provider(&self, name: &str) -> Option<&AccessProvider> {
        let status = &self.status;
        status
            .access_providers
            .iter()
            .chain(&status.credential_providers)
            .find(|p| p.name == name)
    }

    /// The properties as labels (the first of a repeated name wins).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for property in &self.status.properties {
            labels
                .entry(property.name.clone())
                .or_insert_with(|| property.value.clone());
        }
        labels
    }

    /// Why the member must not take requests, when its manager says its control plane is
    /// unhealthy (`ControlPlaneHealthy=False`; `Unknown` or absent is not a verdict).
    pub fn reported_down(&self) -> Option<String> {
        let condition = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == CONTROL_PLANE_HEALTHY && c.status == "False")?;
        let mut why = format!(
            "ClusterProfile {} reports {CONTROL_PLANE_HEALTHY}=False",
            self.key()
        );
        for part in [&condition.reason, &condition.message] {
            if !part.is_empty() {
                why.push_str(": ");
                why.push_str(part);
            }
        }
        Some(why)
    }
}

impl KubeconfigCluster {
    /// The CA bundle, decoded.
    pub fn certificate_authority(&self) -> Result<Option<Vec<u8>>, String> {
        if self.certificate_authority_data.is_empty() {
            return Ok(None);
        }
        base64::engine::general_purpose::STANDARD
            .decode(self.certificate_authority_data.trim())
            .map(Some)
            .map_err(|error| format!("certificate-authority-data is not base64: {error}"))
    }

    /// The extension named `name`.
    pub fn extension(&self, name: &str) -> Option<&serde_json::Value> {
        self.extensions
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.extension)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile(status: serde_json::Value) -> ClusterProfile {
        serde_json::from_value(json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ClusterProfile",
            "metadata": {"name": "east", "namespace": "fleet", "labels": {"x-k8s.io/cluster-manager": "ocm"}},
            "spec": {"displayName": "East", "clusterManager": {"name": "ocm"}},
            "status": status,
        }))
        .expect("a ClusterProfile")
    }

    #[test]
    fn access_providers_win_over_the_deprecated_credential_providers() {
        let profile = profile(json!({
            "credentialProviders": [
                {"name": "token", "cluster": {"server": "https://old:6443"}},
                {"name": "legacy", "cluster": {"server": "https://legacy:6443"}},
            ],
            "accessProviders": [{"name": "token", "cluster": {"server": "https://new:6443"}}],
        }));
        assert_eq!(
            profile.access_provider("token").unwrap().cluster.server,
            "https://new:6443"
        );
        assert_eq!(
            profile.access_provider("legacy").unwrap().cluster.server,
            "https://legacy:6443",
            "the deprecated field is still read"
        );
        assert!(profile.access_provider("oidc").is_none());
    }

    #[test]
    fn properties_are_labels_and_a_false_control_plane_is_a_reason() {
        let profile = profile(json!({
            "properties": [
                {"name": "topology.kubernetes.io/region", "value": "east", "lastObservedTime": "2026-12-01T00:00:00Z"},
                {"name": "clusterset.k8s.io/cluster-id", "value": "0b5c"},
            ],
            "conditions": [{"type": "ControlPlaneHealthy", "status": "False", "reason": "Unreachable",
                            "message": "no lease renewal for 5m", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
            "version": {"kubernetes": "v1.34.2"},
            "somethingNew": {"ignored": true},
        }));
        assert_eq!(profile.labels()["topology.kubernetes.io/region"], "east");
        assert_eq!(profile.labels()["clusterset.k8s.io/cluster-id"], "0b5c");
        assert_eq!(
            profile.reported_down().as_deref(),
            Some(
                "ClusterProfile fleet/east reports ControlPlaneHealthy=False: Unreachable: no \
                 lease renewal for 5m"
            )
        );
        for status in ["True", "Unknown"] {
            let healthy = super::tests::profile(
                json!({"conditions": [{"type": "ControlPlaneHealthy", "status": status}]}),
            );
            assert_eq!(healthy.reported_down(), None, "{status}");
        }
        assert_eq!(super::tests::profile(json!({})).reported_down(), None);
    }

    #[test]
    fn the_kubeconfig_cluster_reads_as_client_go_writes_it() {
        let profile = profile(json!({"accessProviders": [{"name": "p", "cluster": {
            "server": "https://east:6443",
            "certificate-authority-data": "LS0tLS1CRUdJTi0tLS0t",
            "tls-server-name": "api.east",
            "proxy-url": "http://proxy:3128",
            "extensions": [{"name": EXEC_EXTENSION, "extension": {"audience": "east"}}],
        }}]}));
        let cluster = &profile.access_provider("p").unwrap().cluster;
        assert_eq!(
            cluster.certificate_authority().unwrap().unwrap(),
            b"-----BEGIN-----"
        );
        assert_eq!(cluster.tls_server_name, "api.east");
        assert_eq!(cluster.proxy_url, "http://proxy:3128");
        assert_eq!(
            cluster.extension(EXEC_EXTENSION),
            Some(&json!({"audience": "east"}))
        );
        let bad = KubeconfigCluster {
            certificate_authority_data: "not base64!".to_owned(),
            ..KubeconfigCluster::default()
        };
        assert!(
            bad.certificate_authority()
                .unwrap_err()
                .contains("not base64")
        );
        assert_eq!(
            KubeconfigCluster::default().certificate_authority(),
            Ok(None)
        );
    }
}
