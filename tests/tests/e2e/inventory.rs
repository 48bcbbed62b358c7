//! Clusters from SIG-Multicluster's inventory against real kube-apiservers (`../shared/k8s`,
//! run when its binaries are found): a hub holding the `ClusterProfile` CRD (`v1alpha1`
//! stored, `v1alpha2` served, as cluster-inventory-api ships it) and two members, `east` and
//! `west`. The chart's operator, under the chart's ServiceAccount and RBAC (a Role in the
//! inventory namespace only), reads the profiles (`east` written as `v1alpha2`, `west` as
//! `v1alpha1` with the deprecated `credentialProviders`), runs the provider file's exec plugin
//! (a shell script here that prints a token the test minted on the member, with a short
//! `expirationTimestamp`), and publishes the namespace's routing; a sidecar with the
//! injected routing arguments follows it from a kubelet-style volume.
//!
//! What is shown: a Route selecting the member by its region property reaches east with the
//! plugin's token (east's audit log names the ServiceAccount); the token is refreshed before
//! its declared expiry without a restart, and the sidecar then reaches east with the new
//! one; a profile whose access provider is not in the provider file is left out with the
//! reason in its Route's `Ready` and a warning event on the profile; `ControlPlaneHealthy`
//! turned False on east moves a failover route to west; when east's plugin breaks, its last
//! token is used until its declared expiry and then east is left out, with the reason on the
//! route naming it and events on the profile.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use mca_tests::{
    harness::{Env, Mca, Process, eventually, mca_binary},
    helm,
    k8s::Cluster,
    projected::Projected,
    sandbox::Pod,
};
use serde_json::{Value, json};

use super::operator::{Files, as_files, chart_args, service_account_kubeconfig};

/// The release's namespace.
const SYSTEM: &str = "mca-system";
/// The inventory's namespace.
const FLEET: &str = "fleet";
/// The consumer namespace whose Routes use the inventory.
const SHOP: &str = "shop";
/// How long the operator may take to act on a change.
const ACT: Duration = Duration::from_secs(20);
/// The lifetime the plugin declares for each token it prints: the operator refreshes at two
/// thirds of it.
const DECLARED_LIFETIME: Duration = Duration::from_secs(24);

/// The ClusterProfile CRD as cluster-inventory-api installs it, in outline: both versions,
/// `v1alpha1` stored, a status subresource (fields are not pruned here: the operator must
/// read what a real inventory writes, whatever the schema's details).
fn crd() -> Value {
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage,
               "schema": {"openAPIV3Schema": {"type": "object",
                   "x-kubernetes-preserve-unknown-fields": true}},
               "subresources": {"status": {}}})
    };
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterprofiles.multicluster.x-k8s.io"},
        "spec": {"group": "multicluster.x-k8s.io", "scope": "Namespaced",
            "names": {"kind": "ClusterProfile", "listKind": "ClusterProfileList",
                      "plural": "clusterprofiles", "singular": "clusterprofile"},
            "versions": [version("v1alpha1", true), version("v1alpha2", false)]}})
}

/// The plugin: prints the token in `$TOKENS/$CLUSTER` (the member's name comes from the
/// profile's `additional-envs` extension), declaring it expires [`DECLARED_LIFETIME`] from
/// now, and counts its runs.
fn plugin(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("token-reader");
    let script = format!(
        r#"#!/bin/sh
set -e
echo "$CLUSTER" >> "$TOKENS/runs"
token=$(cat "$TOKENS/$CLUSTER")
expires=$(date -u -d "+{} seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{{"token":"%s","expirationTimestamp":"%s"}}}}' "$token" "$expires"
"#,
        DECLARED_LIFETIME.as_secs()
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// A profile of `member` (as `version`, its access in `field`), in `region`.
fn profile(name: &str, member: &Cluster, version: &str, field: &str, provider: &str) -> Value {
    let ca = std::fs::read(member.dir().join("pki/ca.crt")).expect("the member's CA");
    json!({"apiVersion": format!("multicluster.x-k8s.io/{version}"), "kind": "ClusterProfile",
    "metadata": {"name": name, "namespace": FLEET,
                 "labels": {"x-k8s.io/cluster-manager": "test"}},
    "spec": {"displayName": name, "clusterManager": {"name": "test"}},
    "status": {
        "properties": [{"name": "topology.kubernetes.io/region", "value": name}],
        "conditions": [{"type": "ControlPlaneHealthy", "status": "True", "reason": "Probed",
                        "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
        field: [{"name": provider, "cluster": {
            "server": member.server(),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
            "extensions": [{"name": "clusterprofiles.multicluster.x-k8s.io/exec/additional-envs",
                            "extension": {"CLUSTER": name}}]}}],
    }})
}

/// Writes a profile's status (the status subresource, as a cluster manager does).
fn write_status(hub: &Cluster, profile: &Value) -> anyhow::Result<()> {
    let name = profile["metadata"]["name"].as_str().context("a name")?;
    let patch = json!({"status": profile["status"]});
    hub.kubectl(&[
        "patch",
        "clusterprofiles.multicluster.x-k8s.io",
        name,
        "-n",
        FLEET,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

/// The reasons of the events about the profile `name`.
fn events_on(hub: &Cluster, name: &str) -> anyhow::Result<Vec<String>> {
    let events = hub.kubectl(&["get", "events.events.k8s.io", "-n", FLEET, "-o", "json"])?;
    let events: Value = serde_json::from_str(&events)?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect())
}

/// A ServiceAccount on `member` allowed to read configmaps, and a token for it.
fn reader(member: &Cluster, name: &str) -> anyhow::Result<String> {
    member.kubectl(&["create", "serviceaccount", name, "-n", "default"])?;
    member.kubectl(&[
        "create",
        "clusterrolebinding",
        name,
        "--clusterrole=read-configmaps",
        &format!("--serviceaccount=default:{name}"),
    ])?;
    Ok(member
        .kubectl(&["create", "token", name, "-n", "default"])?
        .trim()
        .to_owned())
}

#[test]
#[ignore = "needs a real kube-apiserver: K8S_BIN or ~/.cache/mca-k8s/bin (../shared/k8s/build.sh); cargo xtask test runs it when found"]
fn clusters_come_from_cluster_profiles_with_credentials_from_their_plugin() -> anyhow::Result<()> {
    let test = "clusters_come_from_cluster_profiles";
    let hub = Cluster::start()?;
    let east = Cluster::start()?;
    let west = Cluster::start()?;
    for (member, only) in [(&east, "only-in-east"), (&west, "only-in-west")] {
        member.kubectl(&["create", "namespace", "east-1"])?;
        member.kubectl(&["create", "configmap", only, "-n", "east-1"])?;
        member.kubectl(&["create", "namespace", "shared"])?;
        member.kubectl(&["create", "configmap", only, "-n", "shared"])?;
        member.kubectl(&[
            "create",
            "clusterrole",
            "read-configmaps",
            "--verb=get,list",
            "--resource=configmaps",
        ])?;
    }
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens)?;
    let first = reader(&east, "reader-1")?;
    std::fs::write(tokens.join("east"), &first)?;
    std::fs::write(tokens.join("west"), reader(&west, "reader-west")?)?;
    let plugin = plugin(dir.path())?;

    // The inventory on the hub.
    hub.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&crd())?)?;
    hub.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/clusterprofiles.multicluster.x-k8s.io",
    ])?;
    hub.kubectl(&["create", "namespace", FLEET])?;
    let profiles = [
        profile("east", &east, "v1alpha2", "accessProviders", "token-reader"),
        profile(
            "west",
            &west,
            "v1alpha1",
            "credentialProviders",
            "token-reader",
        ),
        profile("north", &east, "v1alpha2", "accessProviders", "google"),
    ];
    for profile in &profiles {
        let mut created = profile.clone();
        created.as_object_mut().expect("an object").remove("status");
        hub.kubectl_with_input(&["create", "-f", "-"], &serde_json::to_vec(&created)?)?;
        write_status(&hub, profile)?;
    }

    // The chart's operator with the inventory on, its provider file as the ConfigMap holds it.
    let providers = json!([{"name": "token-reader", "execConfig": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": plugin,
        "env": [{"name": "TOKENS", "value": tokens}]},
        "profileSourcedEnvVarsPolicy": "AppendIfNotExists"}]);
    let objects = helm::render_with(
        &[
            "routing.enabled=true",
            "mode=env",
            "operator.clusterProfiles.namespaces={fleet}",
            "operator.clusterProfiles.consumers={shop}",
        ],
        &[&format!("operator.clusterProfiles.providers={providers}")],
    )?;
    hub.kubectl(&["create", "namespace", SYSTEM])?;
    hub.kubectl(&["create", "namespace", SHOP])?;
    let wanted = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "MutatingWebhookConfiguration",
    ];
    let items: Vec<&Value> = objects
        .iter()
        .filter(|o| wanted.iter().any(|k| o["kind"] == *k))
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    hub.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&list)?)?;
    let provider_file = dir.path().join("providers.json");
    let configmap = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .context("the provider file's ConfigMap")?;
    std::fs::write(
        &provider_file,
        configmap["data"]["providers.json"]
            .as_str()
            .context("providers.json")?,
    )?;
    let kubeconfig = service_account_kubeconfig(&hub, SYSTEM, "mca-operator", dir.path())?;
    let args: Vec<String> = chart_args(&objects, "mca-operator")
        .into_iter()
        .map(|arg| {
            arg.replace(
                "/etc/mca-inventory/providers.json",
                provider_file.to_str().expect("UTF-8"),
            )
        })
        .collect();
    let operator = Process::spawn(
        "operator",
        Command::new(mca_binary())
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "operator-0")
            .env("MCA_LOG", "info"),
    )?;
    let operator_log = || format!("the operator's log:\n{}", operator.output());

    // Routes: east by its region property, a failover east → west, and north.
    let routes = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "mca.io/v1alpha1", "kind": "Route",
         "metadata": {"name": "east-by-region", "namespace": SHOP},
         "spec": {"match": {"namespaces": ["east-*"]},
                  "to": {"clusterSelector": "topology.kubernetes.io/region=east"}}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Route",
         "metadata": {"name": "shared-failover", "namespace": SHOP},
         "spec": {"priority": 1, "match": {"namespaces": ["shared"]},
                  "to": {"clusters": ["east", "west"], "strategy": "failover"}}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Route",
         "metadata": {"name": "to-north", "namespace": SHOP},
         "spec": {"priority": 2, "match": {"namespaces": ["north"]}, "to": {"clusters": ["north"]}}},
    ]});
    let applied = Instant::now();
    hub.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&routes)?)?;
    let published = |what: &str, done: &dyn Fn(&Files) -> bool| {
        eventually(ACT, || {
            let files = hub.secret_files(SHOP, "mca-routes")?.unwrap_or_default();
            Ok((done(&files), files))
        })
        .with_context(|| format!("waiting for {what}; {}", operator_log()))
    };
    let files = published("east's and west's credentials", &|f| {
        f.contains_key("east.token") && f.contains_key("west.token")
    })?;
    let first_published = Instant::now();
    eprintln!(
        "{test}: published with the plugin's credentials {} ms after the Routes were applied",
        applied.elapsed().as_millis()
    );
    assert_eq!(files["east.token"], first.as_bytes());
    let config = String::from_utf8(files["config.yaml"].clone())?;
    assert!(!config.contains(&first), "no credential in the YAML");
    assert!(
        config.contains("topology.kubernetes.io/region: east"),
        "{config}"
    );
    assert!(!files.contains_key("north.token"));
    let route_ready = |name: &str| -> anyhow::Result<(String, String)> {
        eventually(ACT, || {
            let route = hub.get(&["routes.mca.io", name, "-n", SHOP])?;
            let ready = route
                .as_ref()
                .and_then(|r| r["status"]["conditions"].as_array())
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
            Ok((
                ready.is_some(),
                ready.map(|c| {
                    (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["message"].as_str().unwrap_or_default().to_owned(),
                    )
                }),
            ))
        })
        .map(|ready| ready.unwrap_or_default())
        .with_context(operator_log)
    };
    assert_eq!(route_ready("east-by-region")?.0, "True");
    assert_eq!(route_ready("shared-failover")?.0, "True");
    let (status, message) = route_ready("to-north")?;
    assert_eq!(status, "False");
    assert!(
        message.contains(
            "none of its access providers (google) is in the provider file (token-reader)"
        ),
        "{message}"
    );
    let reasons = events_on(&hub, "north")?;
    assert!(reasons.iter().any(|r| r == "NoCredential"), "{reasons:?}");

    // The sidecar, with the routing arguments the webhook injects, follows the volume.
    let mount = dir.path().join("etc-mca");
    let mut volume = Projected::create(&mount, &as_files(&files))?;
    let config_arg = format!("--config={}", mount.join("config.yaml").display());
    let pod = Pod::new_host_network()?;
    let mca = Mca::start_with_kubeconfig(
        &pod,
        &hub.kubeconfig(),
        &[&config_arg, "--config-optional", "--config-restricted"],
    )?;
    let sidecar = Env {
        mca,
        apiserver: None,
        pod,
    };
    let sidecar_log = || format!("the sidecar's log:\n{}", sidecar.mca.log());
    let get = |name: &str, namespace: &str| {
        sidecar.kubectl(&["get", "configmap", name, "-n", namespace, "-o", "name"])
    };
    let by = |member: &Cluster, user: &str| {
        member
            .audit()
            .iter()
            .any(|e| e["objectRef"]["resource"] == "configmaps" && e["user"]["username"] == user)
    };
    let out =
        eventually(ACT, || Ok((true, get("only-in-east", "east-1")?))).with_context(sidecar_log)?;
    assert_eq!(out.trim(), "configmap/only-in-east");
    assert!(by(&east, "system:serviceaccount:default:reader-1"));
    assert_eq!(
        get("only-in-east", "shared")?.trim(),
        "configmap/only-in-east",
        "failover: east first"
    );

    // A new token from the plugin: published before the first one's declared expiry, with no
    // restart of anything.
    let second = reader(&east, "reader-2")?;
    std::fs::write(tokens.join("east"), &second)?;
    let refreshed = published("the refreshed token", &|f| {
        f.get("east.token").map(Vec::as_slice) == Some(second.as_bytes())
    })?;
    let refreshed_after = first_published.elapsed();
    eprintln!(
        "{test}: the token was refreshed {} ms after it was first published (declared lifetime {} s)",
        refreshed_after.as_millis(),
        DECLARED_LIFETIME.as_secs()
    );
    assert!(
        refreshed_after < DECLARED_LIFETIME,
        "refreshed before the declared expiry: {refreshed_after:?}"
    );
    volume.update(&as_files(&refreshed))?;
    eventually(ACT, || {
        get("only-in-east", "east-1")?;
        Ok((by(&east, "system:serviceaccount:default:reader-2"), ()))
    })
    .with_context(sidecar_log)?;
    let runs = std::fs::read_to_string(tokens.join("runs"))?;
    eprintln!(
        "{test}: plugin runs so far: {}",
        runs.lines().collect::<Vec<_>>().join(",")
    );

    // East's control plane reported unhealthy: the failover route moves to west.
    let mut down = profiles[0].clone();
    down["status"]["conditions"][0]["status"] = json!("False");
    down["status"]["conditions"][0]["reason"] = json!("Unreachable");
    let reported = Instant::now();
    write_status(&hub, &down)?;
    let moved = published("east reported down", &|f| {
        f.get("config.yaml")
            .is_some_and(|c| String::from_utf8_lossy(c).contains("ControlPlaneHealthy=False"))
    })?;
    eprintln!(
        "{test}: east's ControlPlaneHealthy=False published {} ms after the status changed",
        reported.elapsed().as_millis()
    );
    volume.update(&as_files(&moved))?;
    let out = eventually(ACT, || {
        let out = get("only-in-west", "shared");
        Ok((out.is_ok(), out.unwrap_or_default()))
    })
    .with_context(sidecar_log)?;
    assert_eq!(out.trim(), "configmap/only-in-west");
    assert!(
        get("only-in-east", "shared").is_err(),
        "shared is served by west now"
    );
    assert!(by(&west, "system:serviceaccount:default:reader-west"));

    // East's plugin breaks: its last token is kept until its declared expiry, then east is
    // left out whole (no credential file, no entry), the reason on the route naming it and
    // in events on the profile.
    std::fs::remove_file(tokens.join("east"))?;
    let broken = Instant::now();
    let without_east = eventually(DECLARED_LIFETIME + ACT, || {
        let files = hub.secret_files(SHOP, "mca-routes")?.unwrap_or_default();
        Ok((!files.contains_key("east.token"), files))
    })
    .with_context(operator_log)?;
    eprintln!(
        "{test}: east left out {} ms after its plugin broke",
        broken.elapsed().as_millis()
    );
    let config = String::from_utf8(without_east["config.yaml"].clone())?;
    assert!(!config.contains(&east.server()), "{config}");
    let (status, message) = eventually(ACT, || {
        let ready = route_ready("shared-failover")?;
        Ok((ready.0 == "False", ready))
    })?;
    assert_eq!(status, "False");
    assert!(
        message.starts_with(
            "cluster east is not ready: no credential for ClusterProfile fleet/east: "
        ) && message.contains("failed"),
        "{message}"
    );
    let on_east = events_on(&hub, "east")?;
    assert!(
        on_east.iter().any(|r| r == "RefreshFailed") && on_east.iter().any(|r| r == "NoCredential"),
        "{on_east:?}"
    );

    // Nothing the plugin printed reached the operator's log.
    let log = operator.output();
    for token in [&first, &second] {
        assert!(!log.contains(token.as_str()), "a token in the log");
    }
    Ok(())
}
