use std::os::unix::fs::PermissionsExt as _;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::operator::mock::{api, patched};

const PROFILES: &str = "/apis/multicluster.x-k8s.io/v1alpha2/namespaces/fleet/clusterprofiles";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/fleet/events";

/// A plugin that counts its runs in `runs` and gives `tok-$CLUSTER`, expiring at $EXPIRES;
/// with `fail`, one that prints a secret and fails.
fn plugin(dir: &std::path::Path, fail: bool) -> Providers {
    let path = dir.join("plugin");
    let body = if fail {
        "echo s3cret-output; echo s3cret-stderr >&2; exit 1".to_owned()
    } else {
        r#"echo run >> "$1"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok-%s","expirationTimestamp":"%s"}}' "$CLUSTER" "$EXPIRES""#
            .to_owned()
    };
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let expires = Timestamp::now()
        .checked_add(SignedDuration::from_secs(3600))
        .unwrap();
    let file = json!({"providers": [{"name": "token-reader",
        "execConfig": {"apiVersion": "client.authentication.k8s.io/v1",
            "command": path, "args": [dir.join("runs")],
            "env": [{"name": "EXPIRES", "value": expires.to_string()}]},
        "profileSourcedEnvVarsPolicy": "AppendIfNotExists"}]});
    Providers::parse(&file.to_string()).unwrap()
}

fn profile(name: &str, region: &str, healthy: &str) -> Value {
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha2", "kind": "ClusterProfile",
        "metadata": {"name": name, "namespace": "fleet", "uid": format!("uid-{name}")},
        "spec": {"displayName": name, "clusterManager": {"name": "test"}},
        "status": {
            "properties": [{"name": "topology.kubernetes.io/region", "value": region}],
            "conditions": [{"type": "ControlPlaneHealthy", "status": healthy, "reason": "Probed"}],
            "accessProviders": [{"name": "token-reader", "cluster": {
                "server": format!("https://{name}.example:6443"),
                "certificate-authority-data": "Q0E=",
                "extensions": [{"name": super::super::profile::ENV_EXTENSION,
                                "extension": {"CLUSTER": name}}]}}],
        },
    })
}

/// The discovery documents of an API server serving ClusterProfiles in both versions, and
/// `profiles` in the namespace `fleet`.
fn server(profiles: Vec<Value>) -> Vec<(String, Value)> {
    let version = |v: &str| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v});
    let resources = |v: &str| {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{v}"),
               "resources": [{"name": "clusterprofiles", "singularName": "clusterprofile",
                              "namespaced": true, "kind": KIND, "verbs": ["get", "list", "watch"]}]})
    };
    vec![
        (
            "/apis".to_owned(),
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": GROUP,
                "versions": [version("v1alpha2"), version("v1alpha1")],
                "preferredVersion": version("v1alpha1")}]}),
        ),
        (format!("/apis/{GROUP}/v1alpha2"), resources("v1alpha2")),
        (format!("/apis/{GROUP}/v1alpha1"), resources("v1alpha1")),
        (
            PROFILES.to_owned(),
            json!({"apiVersion": format!("{GROUP}/v1alpha2"), "kind": "ClusterProfileList",
                   "metadata": {"resourceVersion": "1"}, "items": profiles}),
        ),
    ]
}

fn route(to: Value) -> Route {
    serde_json::from_value(json!({"apiVersion": "mca.io/v1alpha1", "kind": "Route",
        "metadata": {"name": "r", "namespace": "shop"},
        "spec": {"match": {"namespaces": ["shop"]}, "to": to}}))
    .unwrap()
}

fn inventory(client: &Client, providers: Providers) -> Inventory {
    let options = Options {
        namespaces: vec!["fleet".to_owned()],
        consumers: vec![NamespacePattern::parse("sh*").unwrap()],
        providers,
    };
    Inventory::new(client.clone(), "operator-0", options)
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn the_profiles_a_namespaces_routes_name_become_members_with_their_plugins_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (client, state) = api(server(vec![
        profile("east", "east", "True"),
        profile("west", "west", "False"),
        profile("north", "north", "True"),
    ]));
    let inventory = inventory(&client, plugin(dir.path(), false));
    let routes = [
        route(json!({"clusters": ["east"]})),
        route(json!({"clusterSelector": "topology.kubernetes.io/region=west"})),
    ];
    let resolved = inventory.members(&client, "shop", &routes).await.unwrap();
    let names: Vec<&str> = resolved.members.keys().map(String::as_str).collect();
    assert_eq!(names, ["east", "west"], "north is not routed to");
    let east = resolved.members["east"].as_ref().unwrap();
    assert_eq!(east.server, "https://east.example:6443");
    assert_eq!(east.credential["token"], b"tok-east");
    assert_eq!(east.credential["ca.crt"], b"CA");
    assert_eq!(east.labels["topology.kubernetes.io/region"], "east");
    assert_eq!(east.unhealthy, None);
    let west = resolved.members["west"].as_ref().unwrap();
    assert_eq!(west.credential["token"], b"tok-west");
    assert!(
        west.unhealthy
            .as_deref()
            .unwrap()
            .contains("ControlPlaneHealthy=False")
    );
    // Refreshed at two thirds of the hour the credentials last.
    let refresh = resolved.refresh.unwrap();
    assert!(
        refresh > Duration::from_secs(2300) && refresh <= Duration::from_secs(2400),
        "{refresh:?}"
    );
    assert_eq!(runs(dir.path()), 2);

    // Another namespace using east shares its cached credential.
    let again = inventory
        .members(&client, "shipping", &routes[..1])
        .await
        .unwrap();
    assert_eq!(
        again.members["east"].as_ref().unwrap().credential["token"],
        b"tok-east"
    );
    assert_eq!(runs(dir.path()), 2, "no plugin ran again");

    // A profile whose access changed gets a new credential.
    {
        let mut state = state.lock().unwrap();
        let list = state.objects.get_mut(PROFILES).unwrap();
        list["items"][0]["status"]["accessProviders"][0]["cluster"]["server"] =
            json!("https://east-2.example:6443");
    }
    let moved = inventory
        .members(&client, "shop", &routes[..1])
        .await
        .unwrap();
    assert_eq!(
        moved.members["east"].as_ref().unwrap().server,
        "https://east-2.example:6443"
    );
    assert_eq!(runs(dir.path()), 3);
}

#[tokio::test]
async fn a_namespace_the_inventory_is_not_offered_to_gets_the_reason_and_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _) = api(server(vec![profile("east", "east", "True")]));
    let inventory = inventory(&client, plugin(dir.path(), false));
    let resolved = inventory
        .members(&client, "billing", &[route(json!({"clusters": ["east"]}))])
        .await
        .unwrap();
    assert_eq!(
        resolved.members["east"],
        Err(
            "ClusterProfile fleet/east is not offered to namespace billing: \
             --clusterprofile-consumers does not match it"
                .to_owned()
        )
    );
    assert_eq!(runs(dir.path()), 0);
    assert_eq!(resolved.refresh, None);
}

#[tokio::test]
async fn a_failing_plugin_leaves_the_member_out_with_an_event_that_quotes_none_of_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let (client, state) = api(server(vec![profile("east", "east", "True")]));
    let inventory = inventory(&client, plugin(dir.path(), true));
    let resolved = inventory
        .members(&client, "shop", &[route(json!({"clusters": ["east"]}))])
        .await
        .unwrap();
    let why = resolved.members["east"].clone().unwrap_err();
    assert!(
        why.starts_with("no credential for ClusterProfile fleet/east: ") && why.contains("failed"),
        "{why}"
    );
    assert!(!why.contains("s3cret"), "{why}");
    let seen = &state.lock().unwrap().seen;
    let (_, _, event) = seen
        .iter()
        .find(|(m, uri, _)| *m == Method::POST && uri.starts_with(EVENTS))
        .expect("an event on the profile");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "NoCredential");
    assert_eq!(event["regarding"]["kind"], "ClusterProfile");
    assert_eq!(event["regarding"]["name"], "east");
    assert_eq!(event["regarding"]["uid"], "uid-east");
    assert!(!event.to_string().contains("s3cret"), "{event}");
}

#[tokio::test]
async fn without_the_clusterprofile_api_there_are_no_members() {
    let (client, _) = api([(
        "/apis".to_owned(),
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let inventory = inventory(&client, plugin(dir.path(), false));
    let resolved = inventory
        .members(&client, "shop", &[route(json!({"clusters": ["east"]}))])
        .await
        .unwrap();
    assert!(resolved.members.is_empty());
}

#[test]
fn a_credential_is_refreshed_at_two_thirds_of_its_lifetime() {
    let obtained: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let at = |expires: &str| refresh_at(obtained, Some(expires.parse().unwrap()));
    assert_eq!(
        at("2026-12-03T10:15:00Z").unwrap(),
        "2026-12-03T10:10:00Z".parse::<Timestamp>().unwrap()
    );
    assert!(
        at("2026-12-03T09:59:00Z")
            .unwrap_err()
            .contains("expired already")
    );
    assert_eq!(
        refresh_at(obtained, None).unwrap(),
        "2026-12-03T10:10:00Z".parse::<Timestamp>().unwrap()
    );
}

#[tokio::test]
async fn a_consumer_namespace_is_published_with_the_member_its_route_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut objects = server(vec![profile("east", "east", "True")]);
    let list = |kind: &str, items: Vec<Value>| {
        json!({"apiVersion": "mca.io/v1alpha1", "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": "1"}, "items": items})
    };
    let route = serde_json::to_value(route(json!({"clusters": ["east"]}))).unwrap();
    objects.extend([
        (
            "/apis/mca.io/v1alpha1/namespaces/shop/clusters".to_owned(),
            list("Cluster", vec![]),
        ),
        (
            "/apis/mca.io/v1alpha1/namespaces/shop/routes".to_owned(),
            list("Route", vec![route.clone()]),
        ),
        (
            "/apis/mca.io/v1alpha1/namespaces/shop/routes/r".to_owned(),
            route,
        ),
    ]);
    let (client, state) = api(objects);
    let inventory = inventory(&client, plugin(dir.path(), false));
    let summary =
        crate::operator::reconcile::namespace(&client, "shop", "mca-routes", Some(&inventory))
            .await
            .unwrap();
    assert!(summary.published);
    assert!(summary.refresh.is_some());
    let seen = &state.lock().unwrap().seen;
    let body = |path: &str| patched(seen, path);
    let published = body("/secrets/mca-routes");
    // base64 of "tok-east"
    assert_eq!(published["data"]["east.token"], "dG9rLWVhc3Q=");
    let ready = &body("/routes/r/status")["status"]["conditions"][0];
    assert_eq!(ready["status"], "True", "{ready}");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_credential_until_it_expires_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _) = api(server(vec![]));
    let providers = plugin(dir.path(), false);
    let inventory = inventory(&client, providers.clone());
    let east: ClusterProfile = serde_json::from_value(profile("east", "east", "True")).unwrap();
    let plan = providers.plan(&east).unwrap();
    let now = Timestamp::now();
    let Obtained::Fresh(credential, refresh) = inventory.credential("fleet/east", &plan, now).await
    else {
        panic!("a credential");
    };
    let expires = credential.expires.unwrap();
    assert!(now < refresh && refresh < expires);
    // The plugin breaks; its credential is due for a refresh but has not expired.
    plugin(dir.path(), true);
    let due = after(refresh, Duration::from_secs(1));
    match inventory.credential("fleet/east", &plan, due).await {
        Obtained::Stale(kept, until, why) => {
            assert_eq!(kept, credential);
            assert_eq!(until, expires);
            assert!(why.contains("failed") && !why.contains("s3cret"), "{why}");
        }
        _ => panic!("the current credential, kept"),
    }
    let expired = after(expires, Duration::from_secs(1));
    assert!(matches!(
        inventory.credential("fleet/east", &plan, expired).await,
        Obtained::None(why) if why.contains("failed")
    ));
    // Nothing is kept once it expired: a working plugin is run again even "before" the
    // refresh time of the credential that is gone.
    plugin(dir.path(), false);
    assert!(matches!(
        inventory.credential("fleet/east", &plan, now).await,
        Obtained::Fresh(..)
    ));
    assert_eq!(runs(dir.path()), 2);
}
