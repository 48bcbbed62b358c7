//! The API server's own addresses, which clients may dial instead of the `kubernetes`
//! Service: MCA intercepts those too.

use std::{net::SocketAddr, time::Duration};

use http::{Request, StatusCode};

use super::Cluster;
use crate::upstream::UpstreamBody;

/// The `kubernetes` Service's EndpointSlices in `default`.
const PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices\
                    ?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";

/// More than any real list of one Service's slices.
const LIMIT: usize = 1 << 20;

/// How long MCA waits for them before it starts without them.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// The API server's own addresses (its `kubernetes` Service's EndpointSlices), which
    /// clients may dial directly. Best effort: MCA's ServiceAccount may not be allowed to read
    /// them, and then only the Service address is intercepted.
    pub async fn api_endpoints(&self) -> Vec<SocketAddr> {
        let request = Request::get(PATH)
            .header(http::header::ACCEPT, "application/json")
            .body(UpstreamBody::default())
            .expect("a valid request");
        match self.read_json(request, LIMIT, TIMEOUT).await {
            Ok((_, list)) => addresses(&list),
            Err((StatusCode::FORBIDDEN, _)) => {
                tracing::warn!(
                    "only the kubernetes Service's address is intercepted: MCA's ServiceAccount \
                     may not list the API server's EndpointSlices (403), so a client that dials \
                     an endpoint IP directly bypasses MCA and fails to verify its certificate; \
                     to intercept those too, allow `list` on `endpointslices` (API group \
                     discovery.k8s.io) in namespace `default` to the pod's ServiceAccount, or \
                     name the addresses with --intercept-address"
                );
                Vec::new()
            }
            Err((_, error)) => {
                tracing::info!(%error, "could not list the API server's EndpointSlices");
                Vec::new()
            }
        }
    }
}

/// Every address × port of an EndpointSliceList.
fn addresses(list: &serde_json::Value) -> Vec<SocketAddr> {
    let mut addresses = Vec::new();
    for slice in list["items"].as_array().into_iter().flatten() {
        let ports: Vec<u16> = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|port| port["port"].as_u64()?.try_into().ok())
            .collect();
        let ips = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|endpoint| endpoint["addresses"].as_array().into_iter().flatten())
            .filter_map(|address| address.as_str()?.parse::<std::net::IpAddr>().ok());
        for ip in ips {
            addresses.extend(ports.iter().map(|port| SocketAddr::new(ip, *port)));
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slices_give_every_address_and_port() {
        let list = serde_json::json!({"items": [
            {"endpoints": [{"addresses": ["172.18.0.2"]}, {"addresses": ["172.18.0.3", "junk"]}],
             "ports": [{"name": "https", "port": 6443}]},
            {"endpoints": [{"addresses": ["fd00::2"]}], "ports": [{"port": 6443}, {"port": 443}]},
            {"endpoints": null}
        ]});
        let addresses: Vec<String> = addresses(&list).iter().map(ToString::to_string).collect();
        assert_eq!(
            addresses,
            [
                "172.18.0.2:6443",
                "172.18.0.3:6443",
                "[fd00::2]:6443",
                "[fd00::2]:443"
            ]
        );
    }
}
