//! One namespace reconciled: read its `Cluster`s and `Route`s, the Secrets they name and the
//! inventory members its routes use ([`Inventory`]), publish the routing configuration Secret its sidecars mount ([`render`]), and say on each
//! resource whether it made it in (a `Ready` condition with the reason when not).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, ObjectMeta, Patch, PatchParams},
};
use serde_json::json;

use super::{
    crd::{CREDENTIALS_LABEL, Cluster, Condition, Route, Status},
    inventory::members::Inventory,
    render::{self, Rendered},
};

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "mca-operator";

/// What a reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Whether the configuration Secret was written (there was something to publish).
    pub published: bool,
    /// Resources whose `Ready` condition changed.
    pub statuses_written: usize,
    /// How soon a published credential of the inventory is due for a refresh.
    pub refresh: Option<std::time::Duration>,
}

/// Reconciles `namespace`, publishing its configuration as the Secret `published`, with the
/// members of `inventory` its routes use.
pub async fn namespace(
    client: &Client,
    namespace: &str,
    published: &str,
    inventory: Option<&Inventory>,
) -> Result<Summary, kube::Error> {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    let routes: Api<Route> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let cluster_list = clusters.list(&ListParams::default()).await?.items;
    let route_list = routes.list(&ListParams::default()).await?.items;
    let mut summary = Summary {
        published: false,
        statuses_written: 0,
        refresh: None,
    };
    if cluster_list.is_empty() && route_list.is_empty() {
        // Nothing to route: a namespace that never had resources gets no Secret, one whose
        // last resource went away gets an empty configuration (everything local again)
        // rather than keep routing by what was deleted.
        if secrets.get_opt(published).await?.is_some() {
            publish(
                &secrets,
                published,
                &render::render(&[], &[], &render::Members::new(), &render::Secrets::new()),
            )
            .await?;
            summary.published = true;
        }
        return Ok(summary);
    }
    let wanted: BTreeSet<&str> = cluster_list
        .iter()
        .map(|c| c.spec.credentials_secret.as_str())
        .collect();
    let mut data = render::Secrets::new();
    for name in wanted {
        if let Some(secret) = secrets.get_opt(name).await? {
            data.insert(name.to_owned(), credentials(name, secret));
        }
    }
    let resolved = match inventory {
        Some(inventory) => inventory.members(client, namespace, &route_list).await?,
        None => Default::default(),
    };
    summary.refresh = resolved.refresh;
    let rendered = render::render(&cluster_list, &route_list, &resolved.members, &data);
    publish(&secrets, published, &rendered).await?;
    summary.published = true;
    for cluster in &cluster_list {
        let verdict = &rendered.clusters[&cluster.name_any()];
        if write_status(&clusters, cluster, cluster.status.as_ref(), verdict).await? {
            summary.statuses_written += 1;
        }
    }
    for route in &route_list {
        let verdict = &rendered.routes[&route.name_any()];
        if write_status(&routes, route, route.status.as_ref(), verdict).await? {
            summary.statuses_written += 1;
        }
    }
    Ok(summary)
}

/// A credential Secret's data, if it is labelled for MCA's use ([`CREDENTIALS_LABEL`]).
fn credentials(name: &str, secret: Secret) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(CREDENTIALS_LABEL))
        .is_some_and(|value| value == "true");
    if !labelled {
        return Err(format!(
            "Secret {name} is not labelled {CREDENTIALS_LABEL}=true: only Secrets meant for \
             MCA are sent to a Cluster's server"
        ));
    }
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect())
}

/// Writes the configuration Secret.
async fn publish(
    secrets: &Api<Secret>,
    name: &str,
    rendered: &Rendered,
) -> Result<(), kube::Error> {
    let data = rendered
        .files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()));
    apply_secret(secrets, name, "Opaque", data, &[]).await
}

/// Server-side applies the Secret `name` with `data` and `annotations`, labelled as the
/// operator's: the operator owns what it writes there, and a forced apply takes it back.
pub(super) async fn apply_secret<'a>(
    secrets: &Api<Secret>,
    name: &str,
    type_: &str,
    data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    annotations: &[(String, String)],
) -> Result<(), kube::Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: (!annotations.is_empty()).then(|| annotations.iter().cloned().collect()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key.to_owned(), ByteString(value.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    let mut value = serde_json::to_value(&secret).expect("a Secret serializes");
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    secrets
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(value),
        )
        .await?;
    Ok(())
}

/// Sets `object`'s `Ready` condition from `verdict` if it says something new; whether it
/// wrote. Unchanged conditions are not written again, so the operator's own status writes
/// settle instead of feeding its watch forever.
async fn write_status<K>(
    api: &Api<K>,
    object: &K,
    current: Option<&Status>,
    verdict: &Result<(), String>,
) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (status, reason, message) = match verdict {
        Ok(()) => ("True", "Published", String::new()),
        Err(why) => ("False", "Invalid", why.clone()),
    };
    let generation = object.meta().generation;
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    if let Some(previous) = previous
        && previous.status == status
        && previous.reason == reason
        && previous.message == message
        && current.and_then(|s| s.observed_generation) == generation
    {
        return Ok(false);
    }
    let transition = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Timestamp::now().to_string(),
    };
    let condition = Condition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: transition,
        observed_generation: generation,
    };
    let patch = json!({"status": Status {
        observed_generation: generation,
        conditions: vec![condition],
    }});
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::Value;

    use super::*;
    use crate::operator::mock::{api, patched};

    const CLUSTERS: &str = "/apis/mca.io/v1alpha1/namespaces/shop/clusters";
    const ROUTES: &str = "/apis/mca.io/v1alpha1/namespaces/shop/routes";

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "mca.io/v1alpha1", "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": "1"}, "items": items})
    }

    fn objects(cluster_status: Value) -> Vec<(String, Value)> {
        let cluster = json!({
            "apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "east", "namespace": "shop", "generation": 2},
            "spec": {"server": "https://east.example:6443", "credentialsSecret": "east-creds"},
            "status": cluster_status,
        });
        let route = json!({
            "apiVersion": "mca.io/v1alpha1", "kind": "Route",
            "metadata": {"name": "to-mars", "namespace": "shop", "generation": 1},
            "spec": {"match": {"namespaces": ["shop"]}, "to": {"clusters": ["mars"]}},
        });
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "east-creds", "namespace": "shop",
                         "labels": {"mca.io/cluster-credentials": "true"}},
            // base64 of "east-token", "EAST CA" and "https://east.example:6443"
            "data": {"token": "ZWFzdC10b2tlbg==", "ca.crt": "RUFTVCBDQQ==",
                     "server": "aHR0cHM6Ly9lYXN0LmV4YW1wbGU6NjQ0Mw=="},
        });
        vec![
            (format!("{CLUSTERS}/east"), cluster.clone()),
            (format!("{ROUTES}/to-mars"), route.clone()),
            (CLUSTERS.to_owned(), list("Cluster", vec![cluster])),
            (ROUTES.to_owned(), list("Route", vec![route])),
            (
                "/api/v1/namespaces/shop/secrets/east-creds".to_owned(),
                secret,
            ),
        ]
    }

    #[tokio::test]
    async fn a_namespace_is_published_and_each_resource_says_whether_it_made_it() {
        let (client, seen) = api(objects(Value::Null));
        let summary = namespace(&client, "shop", "mca-routes", None)
            .await
            .unwrap();
        assert_eq!(
            summary,
            Summary {
                published: true,
                statuses_written: 2,
                refresh: None,
            }
        );
        let seen = seen.lock().unwrap().seen.clone();
        let writes: Vec<(&Method, &str)> = seen
            .iter()
            .filter(|(m, _, _)| *m == Method::PATCH)
            .map(|(m, uri, _)| (m, uri.split('?').next().unwrap()))
            .collect();
        assert_eq!(
            writes,
            [
                (&Method::PATCH, "/api/v1/namespaces/shop/secrets/mca-routes"),
                (
                    &Method::PATCH,
                    "/apis/mca.io/v1alpha1/namespaces/shop/clusters/east/status"
                ),
                (
                    &Method::PATCH,
                    "/apis/mca.io/v1alpha1/namespaces/shop/routes/to-mars/status"
                ),
            ]
        );
        let (_, uri, secret) = &seen.iter().find(|(m, _, _)| *m == Method::PATCH).unwrap();
        assert!(
            uri.contains("fieldManager=mca-operator") && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(secret["data"]["east.token"], "ZWFzdC10b2tlbg==");
        let config = secret["data"]["config.yaml"].as_str().unwrap();
        assert!(!config.is_empty());
        let status = |name: &str| {
            seen.iter()
                .find(|(_, uri, _)| uri.contains(&format!("/{name}/status")))
                .map(|(_, _, body)| body["status"].clone())
                .unwrap()
        };
        let east = status("east");
        assert_eq!(east["observedGeneration"], 2);
        assert_eq!(east["conditions"][0]["type"], "Ready");
        assert_eq!(east["conditions"][0]["status"], "True");
        let mars = status("to-mars");
        assert_eq!(mars["conditions"][0]["status"], "False");
        assert_eq!(mars["conditions"][0]["reason"], "Invalid");
        assert_eq!(
            mars["conditions"][0]["message"],
            "no Cluster mars in this namespace"
        );
    }

    #[tokio::test]
    async fn a_secret_not_labelled_for_mca_is_not_copied_and_its_cluster_says_why() {
        let mut objects = objects(Value::Null);
        for (path, object) in &mut objects {
            if path.ends_with("/secrets/east-creds") {
                object["metadata"]["labels"] = json!({"mca.io/cluster-credentials": "yes"});
            }
        }
        let (client, seen) = api(objects);
        namespace(&client, "shop", "mca-routes", None)
            .await
            .unwrap();
        let seen = &seen.lock().unwrap().seen;
        let body = |path: &str| patched(seen, path);
        let published = body("/secrets/mca-routes");
        assert!(
            published["data"].get("east.token").is_none(),
            "the token was not copied: {published}"
        );
        let condition = &body("/clusters/east/status")["status"]["conditions"][0];
        assert_eq!(condition["status"], "False");
        let message = condition["message"].as_str().unwrap();
        assert!(
            message.contains("east-creds is not labelled mca.io/cluster-credentials=true"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_unchanged_condition_is_not_written_again() {
        let ready = json!({"observedGeneration": 2, "conditions": [{"type": "Ready",
            "status": "True", "reason": "Published", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]});
        let (client, seen) = api(objects(ready));
        let summary = namespace(&client, "shop", "mca-routes", None)
            .await
            .unwrap();
        // The route's status is new; the cluster's is as it was.
        assert_eq!(summary.statuses_written, 1);
        let seen = &seen.lock().unwrap().seen;
        assert!(
            !seen
                .iter()
                .any(|(_, uri, _)| uri.contains("/clusters/east/status"))
        );
    }

    #[tokio::test]
    async fn a_namespace_whose_last_resource_went_away_is_published_empty() {
        let published = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "mca-routes", "namespace": "shop"},
            "data": {"config.yaml": "", "east.token": "ZWFzdC10b2tlbg=="}});
        let (client, seen) = api([
            (CLUSTERS.to_owned(), list("Cluster", vec![])),
            (ROUTES.to_owned(), list("Route", vec![])),
            (
                "/api/v1/namespaces/shop/secrets/mca-routes".to_owned(),
                published,
            ),
        ]);
        let summary = namespace(&client, "shop", "mca-routes", None)
            .await
            .unwrap();
        assert!(summary.published);
        let seen = &seen.lock().unwrap().seen;
        let (_, _, secret) = seen.iter().find(|(m, _, _)| *m == Method::PATCH).unwrap();
        // Only the (empty) configuration: the applied Secret no longer names the token, so
        // server-side apply removes it.
        let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["config.yaml"]);
        let yaml = render::render(&[], &[], &render::Members::new(), &render::Secrets::new()).files
            ["config.yaml"]
            .clone();
        let config = crate::config::Config::parse(
            &String::from_utf8(yaml).unwrap(),
            std::path::Path::new("/"),
            crate::config::Schema::Restricted,
        );
        assert!(config.is_ok(), "the empty configuration is one MCA accepts");
    }

    #[tokio::test]
    async fn a_namespace_without_resources_is_left_alone() {
        let empty = [
            (CLUSTERS.to_owned(), list("Cluster", vec![])),
            (ROUTES.to_owned(), list("Route", vec![])),
        ];
        let (client, seen) = api(empty);
        let summary = namespace(&client, "shop", "mca-routes", None)
            .await
            .unwrap();
        assert!(!summary.published);
        assert!(
            seen.lock()
                .unwrap()
                .seen
                .iter()
                .all(|(m, _, _)| *m == Method::GET)
        );
    }
}
