//! Discovery as the API server serves it: the legacy documents (`APIVersions`, `APIGroupList`,
//! `APIGroup`, `APIResourceList`) and, when the client's `Accept` asks for it, the aggregated
//! `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`. The server has the core group's pods and
//! whatever extra groups a test declares, so several servers can differ like real clusters.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Body, bytes_response, json_response};

/// The content type of aggregated discovery.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A resource of an extra API group (discovery only: the server stores none of it).
#[derive(Debug, Clone)]
pub struct ExtraResource {
    /// Its group, e.g. `example.com`.
    pub group: String,
    /// Its version, e.g. `v1`.
    pub version: String,
    /// Its plural name, e.g. `widgets`.
    pub plural: String,
    /// Its kind, e.g. `Widget`.
    pub kind: String,
}

/// Answers a discovery path, or `None` if `segments` is not one; the aggregated format only
/// when `offer_aggregated` and the client asks for it.
pub fn serve(
    request: &Request<Incoming>,
    segments: &[&str],
    extra: &[ExtraResource],
    offer_aggregated: bool,
) -> Option<Response<Body>> {
    let aggregated = offer_aggregated
        && request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|accept| accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2;"));
    Some(match segments {
        ["api"] if aggregated => aggregated_response(request, json!([group_discovery("", core())])),
        ["api"] => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                     "serverAddress": "127.0.0.1:443"}]}),
        ),
        ["apis"] if aggregated => {
            let items: Vec<Value> = groups(extra)
                .into_iter()
                .map(|(group, resources)| group_discovery(&group, resources))
                .collect();
            aggregated_response(request, Value::from(items))
        }
        ["apis"] => {
            let groups: Vec<Value> = groups(extra)
                .into_iter()
                .map(|(group, resources)| api_group(&group, &resources))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["api", "v1"] => json_response(StatusCode::OK, &resource_list("v1", &core())),
        ["apis", group] => {
            let (name, resources) = groups(extra).into_iter().find(|(g, _)| g == group)?;
            json_response(StatusCode::OK, &api_group(&name, &resources))
        }
        ["apis", group, version] => {
            let resources: Vec<ExtraResource> = extra
                .iter()
                .filter(|r| r.group == *group && r.version == *version)
                .cloned()
                .collect();
            if resources.is_empty() {
                return None;
            }
            json_response(
                StatusCode::OK,
                &resource_list(&format!("{group}/{version}"), &resources),
            )
        }
        _ => return None,
    })
}

fn core() -> Vec<ExtraResource> {
    vec![ExtraResource {
        group: String::new(),
        version: "v1".to_owned(),
        plural: "pods".to_owned(),
        kind: "Pod".to_owned(),
    }]
}

/// The extra resources by group, in the order declared.
fn groups(extra: &[ExtraResource]) -> Vec<(String, Vec<ExtraResource>)> {
    let mut groups: Vec<(String, Vec<ExtraResource>)> = Vec::new();
    for resource in extra {
        match groups.iter_mut().find(|(g, _)| *g == resource.group) {
            Some((_, resources)) => resources.push(resource.clone()),
            None => groups.push((resource.group.clone(), vec![resource.clone()])),
        }
    }
    groups
}

fn versions(resources: &[ExtraResource]) -> Vec<String> {
    let mut versions: Vec<String> = Vec::new();
    for resource in resources {
        if !versions.contains(&resource.version) {
            versions.push(resource.version.clone());
        }
    }
    versions
}

fn api_group(group: &str, resources: &[ExtraResource]) -> Value {
    let versions: Vec<Value> = versions(resources)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
           "versions": versions, "preferredVersion": versions[0]})
}

fn verbs() -> Value {
    json!(["create", "delete", "get", "list", "watch"])
}

fn resource_list(group_version: &str, resources: &[ExtraResource]) -> Value {
    let mut listed: Vec<Value> = Vec::new();
    for resource in resources {
        listed.push(
            json!({"name": resource.plural, "singularName": resource.kind.to_lowercase(),
                           "namespaced": true, "kind": resource.kind, "verbs": verbs()}),
        );
        if resource.plural == "pods" {
            for (sub, verbs) in [
                ("log", json!(["get"])),
                ("exec", json!(["create", "get"])),
                ("attach", json!(["create", "get"])),
                ("portforward", json!(["create", "get"])),
            ] {
                listed.push(json!({"name": format!("pods/{sub}"), "singularName": "",
                                   "namespaced": true, "kind": "Pod", "verbs": verbs}));
            }
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
           "resources": listed})
}

fn group_discovery(group: &str, resources: Vec<ExtraResource>) -> Value {
    let versions: Vec<Value> = versions(&resources)
        .iter()
        .map(|version| {
            let listed: Vec<Value> = resources
                .iter()
                .filter(|r| r.version == *version)
                .map(|r| {
                    json!({"resource": r.plural, "singularResource": r.kind.to_lowercase(),
                           "scope": "Namespaced", "verbs": verbs(),
                           "responseKind": {"group": group, "version": version, "kind": r.kind}})
                })
                .collect();
            json!({"version": version, "resources": listed, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery as kube-apiserver serves it: with an `ETag` (a hash of the document)
/// and `304 Not Modified` for a request whose `If-None-Match` names it.
fn aggregated_response(request: &Request<Incoming>, items: Value) -> Response<Body> {
    use std::hash::{Hash, Hasher};
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                      "metadata": {}, "items": items})
    .to_string();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{:016X}\"", hasher.finish());
    let held = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes());
    let mut response = if held {
        bytes_response(
            StatusCode::NOT_MODIFIED,
            "application/json",
            Default::default(),
        )
    } else {
        bytes_response(StatusCode::OK, "application/json", body.into())
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    headers.insert(header::ETAG, HeaderValue::try_from(etag).expect("hex"));
    response
}
