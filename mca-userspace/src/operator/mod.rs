//! `mca operator`: turns each namespace's `Cluster` and `Route` resources ([`crd`]) into the
//! routing configuration its MCA sidecars hot-reload ([`render`]).

pub mod crd;
#[cfg(test)]
mod mock;
pub mod reconcile;
pub mod render;
pub mod webhook_tls;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;

/// The CRDs, as `mca crds` prints them (YAML documents).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![crd::Cluster::crd(), crd::Route::crd()]
}

/// [`crds`] as YAML documents.
pub fn crds_yaml() -> String {
    let documents: Vec<_> = crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serializes"))
        .collect();
    serde_saphyr::to_string_multiple(&documents).expect("CRDs serialize")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_helm_charts_crds_are_the_generated_ones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/helm/mca/crds/mca.io.yaml"
        );
        let committed = std::fs::read_to_string(path).expect("the chart's CRDs");
        assert!(
            committed == super::crds_yaml(),
            "deploy/helm/mca/crds/mca.io.yaml is stale: `mca crds > deploy/helm/mca/crds/mca.io.yaml`"
        );
    }
}
