//! The chart's operator and webhook against a real kube-apiserver (`../shared/k8s`, run when
//! `K8S_BIN` is set), with the test standing in for the kubelet: the chart's objects applied
//! as rendered, two operator replicas run with the chart's arguments under the chart's
//! ServiceAccount and RBAC, the webhook run with the chart's arguments and the certificate
//! the operator issued, pods created through the API server and mutated by it, and an MCA
//! sidecar with the injected routing arguments, started before anything was published (its
//! optional Secret volume empty), following the configuration the operator publishes as the
//! resources change, across the leader's crash and a rolling update's handover.
//!
//! Two changes to what the chart renders, because no pod network exists here: the webhook's
//! Service becomes an `ExternalName` for `localhost` (the API server dials that name and
//! checks the certificate for the Service's name, as it would for a ClusterIP), and the
//! webhook entries' port is a free one instead of 443.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mca_tests::{
    harness::{Env, Mca, Process, eventually, mca_binary},
    helm,
    k8s::{Cluster, free_port},
    projected::Projected,
    sandbox::Pod,
};
use serde_json::{Value, json};

/// The release's namespace.
const SYSTEM: &str = "mca-system";
/// The namespace whose pods are injected and whose Clusters and Routes are published.
const TEAM: &str = "team-a";
/// How long the operator may take to act on a change (it batches changes for 200 ms).
const ACT: Duration = Duration::from_secs(20);
/// A leader that crashed is replaced once its 15 s Lease runs out (plus a 2 s retry).
const TAKEOVER: Duration = Duration::from_secs(40);

/// The rendered chart, as applied: routing on, the webhook reachable on loopback.
fn chart(webhook_port: u16) -> anyhow::Result<Vec<Value>> {
    let mut objects = helm::render(&["routing.enabled=true", "mode=env"])?;
    for object in &mut objects {
        match object["kind"].as_str() {
            Some("Service") if object["metadata"]["name"] == "mca-webhook" => {
                object["spec"] = json!({"type": "ExternalName", "externalName": "localhost",
                                        "ports": [{"name": "https", "port": webhook_port}]});
            }
            Some("MutatingWebhookConfiguration") => {
                for entry in object["webhooks"].as_array_mut().into_iter().flatten() {
                    entry["clientConfig"]["service"]["port"] = json!(webhook_port);
                }
            }
            _ => {}
        }
    }
    Ok(objects)
}

/// The arguments the chart gives `deployment`'s container.
fn chart_args(objects: &[Value], deployment: &str) -> Vec<String> {
    let object = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == deployment)
        .unwrap_or_else(|| panic!("the chart has no Deployment {deployment}"));
    object["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_owned())
        .collect()
}

/// A kubeconfig for the ServiceAccount `name` in `namespace`: a real, expiring token, so
/// the operator has exactly the permissions the chart's RBAC gives it.
fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let token = cluster.kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"])?;
    let path = dir.join(format!("{name}.kubeconfig"));
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "real", "cluster": {"server": cluster.server(),
            "certificate-authority": cluster.dir().join("pki/ca.crt")}}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "real", "user": "sa"}}],
    });
    std::fs::write(&path, serde_json::to_vec(&config)?)?;
    Ok(path)
}

/// An operator replica, as the chart runs it, named `identity` (its pod name).
fn start_operator(args: &[String], kubeconfig: &Path, identity: &str) -> anyhow::Result<Process> {
    Process::spawn(
        identity,
        Command::new(mca_binary())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("MCA_LOG", "info"),
    )
}

/// The Lease's holder.
fn leader(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    Ok(cluster
        .get(&["lease", "mca-operator", "-n", SYSTEM])?
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_owned)))
}

/// `pod` created through the API server (and so through the webhook); the stored pod.
fn create_pod(cluster: &Cluster, pod: &Value, extra: &[&str]) -> anyhow::Result<Value> {
    let mut args = vec!["create", "-f", "-", "-o", "json"];
    args.extend_from_slice(extra);
    let out = cluster.kubectl_with_input(&args, &serde_json::to_vec(pod)?)?;
    Ok(serde_json::from_str(&out)?)
}

fn pod(namespace: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                    "command": ["kubectl", "get", "pods"]}]}})
}

/// `key` of each object in the array `items`.
fn each<'a>(items: &'a Value, key: &str) -> Vec<&'a str> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item[key].as_str())
        .collect()
}

fn injected(pod: &Value) -> bool {
    each(&pod["spec"]["initContainers"], "name").contains(&"mca")
}

/// The `Ready` condition of a Cluster or Route, once it has one.
fn ready(cluster: &Cluster, kind: &str, name: &str) -> anyhow::Result<Option<(String, String)>> {
    let object = cluster.get(&[kind, name, "-n", TEAM])?;
    Ok(object.and_then(|o| {
        let conditions = o["status"]["conditions"].as_array()?.clone();
        let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
        Some((
            ready["status"].as_str()?.to_owned(),
            ready["message"].as_str().unwrap_or_default().to_owned(),
        ))
    }))
}

/// The error context of a wait for the operator: what, and its replicas' logs.
fn waited_for(what: &str, operators: &[Option<Process>]) -> String {
    let logs: Vec<String> = operators.iter().flatten().map(Process::output).collect();
    format!(
        "waiting for {what}; the operators' logs:\n{}",
        logs.join("\n")
    )
}

fn as_files(files: &BTreeMap<String, Vec<u8>>) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

#[test]
fn the_chart_injects_pods_and_publishes_routing_a_sidecar_follows_across_a_leader_crash()
-> anyhow::Result<()> {
    let test = "the_chart_injects_pods_and_publishes_routing";
    let Some(local) = Cluster::start(test)? else {
        return Ok(());
    };
    let east = Cluster::start(test)?.expect("K8S_BIN is set");
    let dir = tempfile::tempdir()?;

    // Install: the chart's objects, as `helm install` would create them.
    let webhook_port = free_port(1)?;
    let objects = chart(webhook_port)?;
    local.kubectl(&["create", "namespace", SYSTEM])?;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    local.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&list)?)?;

    // Two operator replicas with the chart's arguments and the chart's ServiceAccount.
    let kubeconfig = service_account_kubeconfig(&local, SYSTEM, "mca-operator", dir.path())?;
    let operator_args = chart_args(&objects, "mca-operator");
    let started = Instant::now();
    let mut operators = vec![
        Some(start_operator(&operator_args, &kubeconfig, "operator-a")?),
        Some(start_operator(&operator_args, &kubeconfig, "operator-b")?),
    ];

    // One leads; it issues the webhook's certificate and sets the caBundle of both entries.
    let first = eventually(ACT, || {
        let holder = leader(&local)?;
        Ok((holder.is_some(), holder.unwrap_or_default()))
    })
    .with_context(|| waited_for("a leader", &operators))?;
    let tls = eventually(ACT, || {
        let tls = local.secret_files(SYSTEM, "mca-webhook-tls")?;
        Ok((tls.is_some(), tls.unwrap_or_default()))
    })
    .with_context(|| waited_for("the webhook's certificate Secret", &operators))?;
    let ca = tls["ca.crt"].clone();
    let configuration_name = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .and_then(|o| o["metadata"]["name"].as_str())
        .context("the chart's webhook configuration")?;
    eventually(ACT, || {
        let configuration = local
            .get(&["mutatingwebhookconfiguration", configuration_name])?
            .context("the chart's webhook configuration")?;
        let bundles: Vec<&str> = configuration["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["clientConfig"]["caBundle"].as_str())
            .collect();
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(&ca);
        Ok((bundles == [expected.as_str(), expected.as_str()], ()))
    })
    .with_context(|| waited_for("the caBundle on both webhook entries", &operators))?;
    eprintln!(
        "{test}: {first} leads; certificate and caBundle in place {} ms after start",
        started.elapsed().as_millis()
    );
    let secret_ca = local
        .secret_files(SYSTEM, "mca-webhook-tls-ca")?
        .context("the CA Secret")?;
    assert!(secret_ca.contains_key("ca.key"));
    assert!(
        !tls.contains_key("ca.key"),
        "the webhook never sees the CA's key"
    );

    // The webhook, with the chart's arguments and the Secret "mounted" where they point.
    let webhook_dir = dir.path().join("webhook-tls");
    Projected::create(
        &webhook_dir,
        &as_files(&tls)
            .into_iter()
            .filter(|(k, _)| k.starts_with("tls."))
            .collect::<Vec<_>>(),
    )?;
    let webhook_args: Vec<String> = chart_args(&objects, "mca-webhook")
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{webhook_port}")
            } else {
                arg.replace("/etc/mca-webhook", webhook_dir.to_str().expect("UTF-8"))
            }
        })
        .collect();
    let webhook = Process::spawn(
        "webhook",
        Command::new(mca_binary())
            .args(&webhook_args)
            .env("MCA_LOG", "info"),
    )?;
    webhook.wait_for_line(|l| l.contains("MCA webhook is ready"), ACT)?;

    // Pods, created through the API server: it calls the webhook over TLS, trusting the
    // caBundle the operator set.
    local.kubectl(&["create", "namespace", TEAM])?;
    local.kubectl(&["label", "namespace", TEAM, "mca.io/inject=enabled"])?;
    local.kubectl(&["create", "namespace", "elsewhere"])?;
    for namespace in [TEAM, "elsewhere"] {
        // No controller makes them here; the ServiceAccount admission plugin wants one.
        local.kubectl(&["create", "serviceaccount", "default", "-n", namespace])?;
    }
    let app = create_pod(&local, &pod(TEAM, "app", json!({})), &[])?;
    assert!(injected(&app), "{app:#}");
    let spec = &app["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["initContainers"][0]["name"], "mca");
    assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
    let volumes = each(&spec["volumes"], "name");
    assert!(
        volumes.contains(&"mca-real-sa") && volumes.contains(&"mca-fake"),
        "{volumes:?}"
    );
    assert!(
        !volumes.iter().any(|v| v.starts_with("kube-api-access-")),
        "the token the ServiceAccount plugin mounted is gone: {volumes:?}"
    );
    let container = &spec["containers"][0];
    let mounts = each(&container["volumeMounts"], "mountPath");
    assert!(
        mounts.contains(&"/var/run/secrets/kubernetes.io/serviceaccount"),
        "{mounts:?}"
    );
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some(&"127.0.0.1"));
    assert!(env.contains_key("KUBECONFIG"), "routing is on: {env:?}");
    let config_volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "mca-config")
        .context("the routing configuration's volume")?;
    assert_eq!(config_volume["secret"]["secretName"], "mca-routes");
    assert_eq!(config_volume["secret"]["optional"], true);

    // The injected pod's sidecar, with the routing arguments the webhook gave it and its
    // volume as the kubelet mounts an optional Secret that does not exist yet: empty.
    let mount = dir.path().join("etc-mca");
    let mut volume = Projected::create(&mount, &[])?;
    let routing_args: Vec<String> = spec["initContainers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .filter(|arg| arg.starts_with("--config"))
        .map(|arg| arg.replace("/etc/mca", mount.to_str().expect("UTF-8")))
        .collect();
    let pod_sandbox = Pod::new_host_network()?;
    let mca = Mca::start_with_kubeconfig(
        &pod_sandbox,
        &local.kubeconfig(),
        &routing_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let sidecar = Env {
        mca,
        apiserver: None,
        pod: pod_sandbox,
    };
    let only_in_east = [
        "get",
        "configmap",
        "only-in-east",
        "-n",
        "east-1",
        "-o",
        "name",
    ];
    assert!(
        sidecar.kubectl(&only_in_east).is_err(),
        "no routing yet: east-1 is looked up locally, where it does not exist"
    );

    let opted_out = create_pod(
        &local,
        &pod(TEAM, "opted-out", json!({"mca.io/inject": "disabled"})),
        &[],
    )?;
    assert!(!injected(&opted_out));
    let plain = create_pod(&local, &pod("elsewhere", "plain", json!({})), &[])?;
    assert!(!injected(&plain));
    let annotated = create_pod(
        &local,
        &pod(
            "elsewhere",
            "annotated",
            json!({"mca.io/inject": "enabled"}),
        ),
        &[],
    )?;
    assert!(injected(&annotated));
    // Server-side dry run: allowed (the webhook declares no side effects), mutated, stored
    // nowhere.
    let dry = create_pod(&local, &pod(TEAM, "dry", json!({})), &["--dry-run=server"])?;
    assert!(injected(&dry));
    assert!(local.get(&["pod", "dry", "-n", TEAM])?.is_none());
    let log = webhook.output();
    assert!(
        log.lines()
            .any(|l| l.contains("injected MCA") && l.contains("\"dry_run\":true")),
        "{log}"
    );

    // Routing: a Cluster `east` with its credentials, a Route to it, and a broken Cluster.
    let east_token = std::fs::read_to_string(east.dir().join("pki/admin.token"))?;
    let east_ca = std::fs::read_to_string(east.dir().join("pki/ca.crt"))?;
    let routing = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "east-credentials", "namespace": TEAM},
         "stringData": {"token": east_token.trim(), "ca.crt": east_ca}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "east", "namespace": TEAM},
         "spec": {"server": east.server(), "credentialsSecret": "east-credentials"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "broken", "namespace": TEAM},
         "spec": {"server": "https://127.0.0.1:1", "credentialsSecret": "missing"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Route",
         "metadata": {"name": "team-east", "namespace": TEAM},
         "spec": {"match": {"namespaces": ["east-*"]}, "to": {"clusters": ["east"]}}},
    ]});
    east.kubectl(&["create", "namespace", "east-1"])?;
    east.kubectl(&["create", "configmap", "only-in-east", "-n", "east-1"])?;
    east.kubectl(&["create", "namespace", TEAM])?;
    east.kubectl(&["create", "configmap", "team-config", "-n", TEAM])?;
    let applied = Instant::now();
    local.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&routing)?)?;
    let published = eventually(ACT, || {
        let files = local.secret_files(TEAM, "mca-routes")?;
        Ok((files.is_some(), files.unwrap_or_default()))
    })
    .with_context(|| waited_for("the published configuration", &operators))?;
    eprintln!(
        "{test}: configuration published {} ms after the apply",
        applied.elapsed().as_millis()
    );
    let config = String::from_utf8(published["config.yaml"].clone())?;
    assert!(config.contains("east"), "{config}");
    assert!(
        !config.contains(east_token.trim()),
        "no credential in the YAML"
    );
    assert_eq!(published["east.token"], east_token.trim().as_bytes());
    let (status, _) = eventually(ACT, || {
        let ready = ready(&local, "clusters.mca.io", "east")?;
        Ok((ready.is_some(), ready.unwrap_or_default()))
    })
    .with_context(|| waited_for("Cluster east's Ready condition", &operators))?;
    assert_eq!(status, "True");
    let (status, message) = eventually(ACT, || {
        let ready = ready(&local, "clusters.mca.io", "broken")?;
        Ok((ready.is_some(), ready.unwrap_or_default()))
    })
    .with_context(|| waited_for("Cluster broken's Ready condition", &operators))?;
    assert_eq!(status, "False");
    assert!(message.contains("missing"), "{message}");
    assert_eq!(
        ready(&local, "routes.mca.io", "team-east")?
            .map(|r| r.0)
            .as_deref(),
        Some("True")
    );

    // The kubelet writes the Secret into the volume; the sidecar applies it.
    volume.update(&as_files(&published))?;
    let out = eventually(ACT, || {
        let out = sidecar.kubectl(&only_in_east)?;
        Ok((true, out))
    })
    .with_context(|| {
        format!(
            "the sidecar did not load it; its log:\n{}",
            sidecar.mca.log()
        )
    })?;
    assert_eq!(out.trim(), "configmap/only-in-east");
    let reached_east = east
        .audit()
        .iter()
        .any(|e| e["objectRef"]["name"] == "only-in-east" && e["user"]["username"] == "admin");
    assert!(reached_east, "east's audit log shows its own credential");
    let team_config = ["get", "configmap", "team-config", "-n", TEAM, "-o", "name"];
    assert!(
        sidecar.kubectl(&team_config).is_err(),
        "team-a is still local, where team-config does not exist"
    );

    // The leader crashes; the other replica takes over and publishes a new Route.
    let leader_index = usize::from(first == "operator-b");
    let crashed = operators[leader_index].take().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(crashed.pid())?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let crash = Instant::now();
    let route = json!({"apiVersion": "mca.io/v1alpha1", "kind": "Route",
        "metadata": {"name": "team-configmaps", "namespace": TEAM},
        "spec": {"match": {"namespaces": [TEAM], "resources": ["configmaps"]},
                 "to": {"clusters": ["east"]}}});
    local.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&route)?)?;
    let republished = eventually(TAKEOVER, || {
        let files = local.secret_files(TEAM, "mca-routes")?.unwrap_or_default();
        let config = String::from_utf8_lossy(&files["config.yaml"]).into_owned();
        Ok((config.contains("team-configmaps"), files))
    })
    .with_context(|| waited_for("the new leader publishing the new route", &operators))?;
    let second = leader(&local)?.context("a leader")?;
    assert_ne!(second, first, "the other replica leads");
    eprintln!(
        "{test}: {second} took over and published the new route {} ms after {first} crashed",
        crash.elapsed().as_millis()
    );

    // The kubelet updates the volume; the sidecar reloads and routes team-a's ConfigMaps.
    volume.update(&as_files(&republished))?;
    let out = eventually(ACT, || {
        let out = sidecar.kubectl(&team_config)?;
        Ok((out.trim() == "configmap/team-config", out))
    })
    .with_context(|| {
        format!(
            "the sidecar did not reload; its log:\n{}",
            sidecar.mca.log()
        )
    })?;
    assert_eq!(out.trim(), "configmap/team-config");

    // A rolling update: a new replica waits, the leader is stopped (SIGTERM) and releases the
    // Lease, and the new one leads within a retry or two, not a whole Lease duration.
    let third = start_operator(&operator_args, &kubeconfig, "operator-c")?;
    third.wait_for_line(|l| l.contains("waiting to lead"), ACT)?;
    let stopping = operators[1 - leader_index].take().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(stopping.pid())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let stop = Instant::now();
    assert!(stopping.wait(ACT)?.success(), "{}", stopping.output());
    operators.push(Some(third));
    eventually(ACT, || {
        Ok((leader(&local)?.as_deref() == Some("operator-c"), ()))
    })
    .with_context(|| waited_for("operator-c to lead", &operators))?;
    let handover = stop.elapsed();
    eprintln!(
        "{test}: {second} stopped and released the Lease; operator-c led {} ms later",
        handover.as_millis()
    );
    // An expired Lease would be taken 13–15 s after the stop (its last renewal was at most
    // one 2 s retry before).
    assert!(
        handover < mca::operator::lease::DURATION / 2,
        "released, not expired: {handover:?}"
    );
    assert!(
        stopping.output().contains("releasing the Lease")
            && !stopping.output().contains("releasing the Lease failed"),
        "{}",
        stopping.output()
    );

    // Everything deleted: the configuration goes empty, and with it the routes.
    local.kubectl(&[
        "delete",
        "clusters.mca.io,routes.mca.io",
        "--all",
        "-n",
        TEAM,
    ])?;
    let emptied = eventually(ACT, || {
        let files = local.secret_files(TEAM, "mca-routes")?.unwrap_or_default();
        Ok((!files.contains_key("east.token"), files))
    })
    .with_context(|| waited_for("the emptied configuration", &operators))?;
    assert_eq!(emptied.keys().collect::<Vec<_>>(), ["config.yaml"]);
    volume.update(&as_files(&emptied))?;
    eventually(ACT, || Ok((sidecar.kubectl(&team_config).is_err(), ()))).with_context(|| {
        format!(
            "the sidecar did not reload; its log:\n{}",
            sidecar.mca.log()
        )
    })?;
    Ok(())
}
