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
//!
//! The chart as rendered applied to a real kube-apiserver (its webhook Service an `ExternalName`
//! for `localhost`, since no pod network exists); two operator replicas with the chart's arguments
//! under the chart's ServiceAccount and RBAC (a missing verb fails it); the leader issues the
//! webhook's certificate and sets both entries' `caBundle`; `mca webhook` with the chart's
//! arguments serves that certificate and the API server calls it: pods of the labelled namespace
//! are injected (the `kube-api-access` volume gone), an opted-out pod and a pod elsewhere are not,
//! an annotated one is, a server-side dry run is mutated and stored nowhere; a sidecar with the
//! injected routing arguments starts before anything is published (its optional Secret volume
//! empty, everything local); Clusters (one with a missing Secret: `Ready=False` naming it) and a
//! Route are published, the sidecar applies them from its kubelet-style volume and reaches east
//! with east's credential (east's audit log); east's credential rotated in its Secret is
//! published at once (the chart's opt-in watch of credential Secrets, not the 60 s resync) and
//! the sidecar reaches east with the new one; the leader is killed, the other replica takes over
//! (about 16 s: the 15 s Lease) and publishes a new Route the sidecar then follows; a third replica
//! waits while the leader is stopped with SIGTERM, releases the Lease and is replaced within
//! seconds (not a Lease duration); deleting every resource publishes an empty configuration and the
//! sidecar is local again.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
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

/// A Secret's files, as the kubelet writes them into a volume.
pub(super) type Files = BTreeMap<String, Vec<u8>>;

/// The rendered chart, as applied: routing on, credential Secrets watched, the webhook
/// reachable on loopback.
fn chart(webhook_port: u16) -> anyhow::Result<Vec<Value>> {
    let mut objects = helm::render(&[
        "routing.enabled=true",
        "mode=env",
        "operator.watchCredentialSecrets=true",
    ])?;
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
pub(super) fn chart_args(objects: &[Value], deployment: &str) -> Vec<String> {
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
pub(super) fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
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

pub(super) fn as_files(files: &Files) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect()
}

/// The chart installed on a real API server, its operator replicas running.
struct Installed {
    local: Cluster,
    dir: tempfile::TempDir,
    objects: Vec<Value>,
    webhook_port: u16,
    kubeconfig: PathBuf,
    operator_args: Vec<String>,
    /// Replicas by identity; a crashed or stopped one is taken out.
    operators: Vec<(String, Process)>,
}

impl Installed {
    /// The chart's objects applied as `helm install` would create them, and two operator
    /// replicas with the chart's arguments under the chart's ServiceAccount.
    fn new(local: Cluster) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let webhook_port = free_port(1)?;
        let objects = chart(webhook_port)?;
        local.kubectl(&["create", "namespace", SYSTEM])?;
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        local.kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&list)?)?;
        let kubeconfig = service_account_kubeconfig(&local, SYSTEM, "mca-operator", dir.path())?;
        let operator_args = chart_args(&objects, "mca-operator");
        let mut installed = Self {
            local,
            dir,
            objects,
            webhook_port,
            kubeconfig,
            operator_args,
            operators: Vec::new(),
        };
        for identity in ["operator-a", "operator-b"] {
            installed.start_operator(identity)?;
        }
        Ok(installed)
    }

    /// A replica as the chart runs it, named `identity` (its pod name).
    fn start_operator(&mut self, identity: &str) -> anyhow::Result<&Process> {
        let process = Process::spawn(
            identity,
            Command::new(mca_binary())
                .args(&self.operator_args)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("POD_NAME", identity)
                .env("MCA_LOG", "info"),
        )?;
        self.operators.push((identity.to_owned(), process));
        Ok(&self.operators.last().expect("just pushed").1)
    }

    /// Takes replica `identity` out (for a signal: dropping it kills it).
    fn take_operator(&mut self, identity: &str) -> Process {
        let index = self
            .operators
            .iter()
            .position(|(name, _)| name == identity)
            .unwrap_or_else(|| panic!("no replica {identity}"));
        self.operators.remove(index).1
    }

    /// The error context of a wait for the operator: what, and its replicas' logs.
    fn waited_for(&self, what: &str) -> String {
        let logs: Vec<String> = self.operators.iter().map(|(_, p)| p.output()).collect();
        format!(
            "waiting for {what}; the operators' logs:\n{}",
            logs.join("\n")
        )
    }

    /// The Lease's holder, once there is one.
    fn await_leader(
        &self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        eventually(within, || {
            let holder = leader(&self.local)?.unwrap_or_default();
            Ok((!holder.is_empty() && wanted(&holder), holder))
        })
        .with_context(|| self.waited_for("a leader"))
    }

    /// The configuration published in [`TEAM`] once `done` holds for it.
    fn await_published(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&Files) -> bool,
    ) -> anyhow::Result<Files> {
        eventually(within, || {
            let files = self
                .local
                .secret_files(TEAM, "mca-routes")?
                .unwrap_or_default();
            Ok((done(&files), files))
        })
        .with_context(|| self.waited_for(what))
    }

    /// The webhook's serving certificate once the leader issued it and set both entries'
    /// `caBundle` to its CA.
    fn await_webhook_certificate(&self) -> anyhow::Result<Files> {
        let tls = eventually(ACT, || {
            let tls = self.local.secret_files(SYSTEM, "mca-webhook-tls")?;
            Ok((tls.is_some(), tls.unwrap_or_default()))
        })
        .with_context(|| self.waited_for("the webhook's certificate Secret"))?;
        let configuration = self
            .objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .and_then(|o| o["metadata"]["name"].as_str())
            .context("the chart's webhook configuration")?;
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(&tls["ca.crt"]);
        eventually(ACT, || {
            let configuration = self
                .local
                .get(&["mutatingwebhookconfiguration", configuration])?
                .context("the chart's webhook configuration")?;
            let bundles: Vec<&str> = configuration["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["clientConfig"]["caBundle"].as_str())
                .collect();
            // Two scopes, each split three ways by PodSecurity level.
            Ok((
                bundles.len() == 6 && bundles.iter().all(|b| *b == expected),
                (),
            ))
        })
        .with_context(|| self.waited_for("the caBundle on every webhook entry"))?;
        Ok(tls)
    }

    /// `mca webhook` with the chart's arguments, serving `tls` from a kubelet-style volume
    /// and listening where the webhook entries point.
    fn start_webhook(&self, tls: &Files) -> anyhow::Result<Process> {
        let dir = self.dir.path().join("webhook-tls");
        let serving: Vec<(&str, &[u8])> = as_files(tls)
            .into_iter()
            .filter(|(k, _)| k.starts_with("tls."))
            .collect();
        Projected::create(&dir, &serving)?;
        let args: Vec<String> = chart_args(&self.objects, "mca-webhook")
            .into_iter()
            .map(|arg| {
                if arg.starts_with("--listen=") {
                    format!("--listen=127.0.0.1:{}", self.webhook_port)
                } else {
                    arg.replace("/etc/mca-webhook", dir.to_str().expect("UTF-8"))
                }
            })
            .collect();
        let webhook = Process::spawn(
            "webhook",
            Command::new(mca_binary())
                .args(&args)
                .env("MCA_LOG", "info"),
        )?;
        webhook.wait_for_line(|l| l.contains("MCA webhook is ready"), ACT)?;
        Ok(webhook)
    }

    /// The sidecar of the injected pod `spec`: the routing arguments the webhook gave it, its
    /// configuration volume empty as the kubelet mounts an optional Secret not there yet.
    fn start_sidecar(&self, spec: &Value) -> anyhow::Result<(Env, Projected)> {
        let mount = self.dir.path().join("etc-mca");
        let volume = Projected::create(&mount, &[])?;
        let routing_args: Vec<String> = spec["initContainers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .filter(|arg| arg.starts_with("--config"))
            .map(|arg| arg.replace("/etc/mca", mount.to_str().expect("UTF-8")))
            .collect();
        let pod = Pod::new_host_network()?;
        let mca = Mca::start_with_kubeconfig(
            &pod,
            &self.local.kubeconfig(),
            &routing_args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let sidecar = Env {
            mca,
            apiserver: None,
            pod,
        };
        Ok((sidecar, volume))
    }
}

/// Pods created through the API server, which calls the webhook: the labelled namespace's
/// pod is injected field by field as the chart says, the opted-out one and one elsewhere are
/// not, an annotated one is, a dry run is mutated and stored nowhere. Returns the injected
/// pod's spec.
fn check_injection(local: &Cluster, webhook: &Process) -> anyhow::Result<Value> {
    local.kubectl(&["create", "namespace", TEAM])?;
    local.kubectl(&["label", "namespace", TEAM, "mca.io/inject=enabled"])?;
    local.kubectl(&["create", "namespace", "elsewhere"])?;
    for namespace in [TEAM, "elsewhere"] {
        // No controller makes them here; the ServiceAccount admission plugin wants one.
        local.kubectl(&["create", "serviceaccount", "default", "-n", namespace])?;
    }
    let app = create_pod(local, &pod(TEAM, "app", json!({})), &[])?;
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

    let opted_out = pod(TEAM, "opted-out", json!({"mca.io/inject": "disabled"}));
    assert!(!injected(&create_pod(local, &opted_out, &[])?));
    let plain = pod("elsewhere", "plain", json!({}));
    assert!(!injected(&create_pod(local, &plain, &[])?));
    let annotated = pod(
        "elsewhere",
        "annotated",
        json!({"mca.io/inject": "enabled"}),
    );
    assert!(injected(&create_pod(local, &annotated, &[])?));
    // Server-side dry run: allowed (the webhook declares no side effects), mutated, stored
    // nowhere.
    let dry = create_pod(local, &pod(TEAM, "dry", json!({})), &["--dry-run=server"])?;
    assert!(injected(&dry));
    assert!(local.get(&["pod", "dry", "-n", TEAM])?.is_none());
    let log = webhook.output();
    assert!(
        log.lines()
            .any(|l| l.contains("injected MCA") && l.contains("\"dry_run\":true")),
        "{log}"
    );
    check_pod_security(local)?;
    Ok(spec.clone())
}

/// Namespaces enforcing PodSecurity `baseline` and `restricted`: the API server's own
/// PodSecurity admission judges the injected pod (which it used to refuse: the sidecar had
/// no seccomp profile), and the webhook was called on the path for that level.
fn check_pod_security(local: &Cluster) -> anyhow::Result<()> {
    for level in ["restricted", "baseline"] {
        let namespace = format!("psa-{level}");
        local.kubectl(&["create", "namespace", &namespace])?;
        let enforce = format!("pod-security.kubernetes.io/enforce={level}");
        local.kubectl(&[
            "label",
            "namespace",
            &namespace,
            "mca.io/inject=enabled",
            &enforce,
        ])?;
        local.kubectl(&["create", "serviceaccount", "default", "-n", &namespace])?;
        // An application that meets `restricted` itself.
        let mut app = pod(&namespace, "app", json!({}));
        app["spec"]["containers"][0]["securityContext"] = json!({
            "runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
        });
        let created = create_pod(local, &app, &[])?;
        assert!(injected(&created), "{created:#}");
        let mca = &created["spec"]["initContainers"][0];
        assert_eq!(
            mca["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let args: Vec<&str> = mca["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&"--intercept=env"), "{args:?}");
    }
    Ok(())
}

/// A Secret with east's credentials labelled for MCA and bound to east's server, a Cluster
/// `east` naming it, a Cluster naming it with another server, a Cluster whose Secret is
/// missing, one naming a Secret not labelled for MCA, and a Route sending `east-*` to east.
fn routing_resources(east: &Cluster) -> anyhow::Result<Value> {
    let token = std::fs::read_to_string(east.dir().join("pki/admin.token"))?;
    let ca = std::fs::read_to_string(east.dir().join("pki/ca.crt"))?;
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "east-credentials", "namespace": TEAM,
                      "labels": {"mca.io/cluster-credentials": "true"}},
         "stringData": {"token": token.trim(), "ca.crt": ca, "server": east.server()}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "someone-elses", "namespace": TEAM},
         "stringData": {"token": "not-for-mca"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "exfiltrate", "namespace": TEAM},
         "spec": {"server": "https://127.0.0.1:1", "credentialsSecret": "someone-elses"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "harvest", "namespace": TEAM},
         "spec": {"server": "https://127.0.0.1:1", "credentialsSecret": "east-credentials"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "east", "namespace": TEAM},
         "spec": {"server": east.server(), "credentialsSecret": "east-credentials"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "broken", "namespace": TEAM},
         "spec": {"server": "https://127.0.0.1:1", "credentialsSecret": "missing"}},
        {"apiVersion": "mca.io/v1alpha1", "kind": "Route",
         "metadata": {"name": "team-east", "namespace": TEAM},
         "spec": {"match": {"namespaces": ["east-*"]}, "to": {"clusters": ["east"]}}},
    ]}))
}

#[test]
#[ignore = "needs a real kube-apiserver: K8S_BIN or ~/.cache/mca-k8s/bin (../shared/k8s/build.sh); cargo xtask test runs it when found"]
fn the_chart_injects_pods_and_publishes_routing_a_sidecar_follows_across_a_leader_crash()
-> anyhow::Result<()> {
    use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
    let test = "the_chart_injects_pods_and_publishes_routing";
    let local = Cluster::start()?;
    let east = Cluster::start()?;
    east.kubectl(&["create", "namespace", "east-1"])?;
    east.kubectl(&["create", "configmap", "only-in-east", "-n", "east-1"])?;
    east.kubectl(&["create", "namespace", TEAM])?;
    east.kubectl(&["create", "configmap", "team-config", "-n", TEAM])?;

    // Installed: one replica leads, issues the webhook's certificate, sets the caBundle.
    let started = Instant::now();
    let mut install = Installed::new(local)?;
    let first = install.await_leader(ACT, |_| true)?;
    let tls = install.await_webhook_certificate()?;
    eprintln!(
        "{test}: {first} leads; certificate and caBundle in place {} ms after the install began",
        started.elapsed().as_millis()
    );
    let ca = install
        .local
        .secret_files(SYSTEM, "mca-webhook-tls-ca")?
        .context("the CA Secret")?;
    assert!(ca.contains_key("ca.key"));
    assert!(
        !tls.contains_key("ca.key"),
        "the webhook never sees the CA's key"
    );

    // The API server calls the webhook for new pods.
    let webhook = install.start_webhook(&tls)?;
    let spec = check_injection(&install.local, &webhook)?;

    // The injected pod's sidecar starts before anything is published: everything is local.
    let (sidecar, mut volume) = install.start_sidecar(&spec)?;
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

    // Routing resources: published, each with its Ready condition.
    let applied = Instant::now();
    let routing = routing_resources(&east)?;
    install
        .local
        .kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&routing)?)?;
    let published = install.await_published(ACT, "the published configuration", |f| {
        f.contains_key("config.yaml")
    })?;
    eprintln!(
        "{test}: configuration published {} ms after the apply",
        applied.elapsed().as_millis()
    );
    let token = routing["items"][0]["stringData"]["token"]
        .as_str()
        .expect("the token");
    let config = String::from_utf8(published["config.yaml"].clone())?;
    assert!(config.contains("east"), "{config}");
    assert!(!config.contains(token), "no credential in the YAML");
    assert_eq!(published["east.token"], token.as_bytes());
    assert!(
        !published.contains_key("exfiltrate.token"),
        "a Secret not labelled for MCA is not copied"
    );
    let condition = |kind: &str, name: &str| {
        eventually(ACT, || {
            let ready = ready(&install.local, kind, name)?;
            Ok((ready.is_some(), ready.unwrap_or_default()))
        })
        .with_context(|| install.waited_for(&format!("{name}'s Ready condition")))
    };
    assert_eq!(condition("clusters.mca.io", "east")?.0, "True");
    let (status, message) = condition("clusters.mca.io", "broken")?;
    assert_eq!(status, "False");
    assert!(message.contains("missing"), "{message}");
    let (status, message) = condition("clusters.mca.io", "exfiltrate")?;
    assert_eq!(status, "False");
    assert!(
        message.contains("not labelled mca.io/cluster-credentials=true"),
        "{message}"
    );
    let (status, message) = condition("clusters.mca.io", "harvest")?;
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("is for the server {}", east.server())),
        "{message}"
    );
    assert!(
        !published.contains_key("harvest.token"),
        "a credential goes only to the server its Secret names"
    );
    assert_eq!(condition("routes.mca.io", "team-east")?.0, "True");

    // The kubelet writes the Secret into the volume; the sidecar applies it and reaches east
    // with east's credential.
    let sidecar_log = || format!("the sidecar's log:\n{}", sidecar.mca.log());
    volume.update(&as_files(&published))?;
    let out = eventually(ACT, || Ok((true, sidecar.kubectl(&only_in_east)?)))
        .with_context(sidecar_log)?;
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

    // East's credential rotated in its Secret: the operator watches the labelled Secrets
    // (the chart's opt-in), so it is published well before the 60 s resync, and the sidecar
    // reaches east with it.
    east.kubectl(&["create", "serviceaccount", "rotated", "-n", "east-1"])?;
    // A role of its own (`view` is aggregated by the controller manager, which is not run),
    // in every namespace the sidecar reads east in after the rotation.
    east.kubectl(&[
        "create",
        "clusterrole",
        "read-configmaps",
        "--verb=get,list",
        "--resource=configmaps",
    ])?;
    east.kubectl(&[
        "create",
        "clusterrolebinding",
        "rotated-read",
        "--clusterrole=read-configmaps",
        "--serviceaccount=east-1:rotated",
    ])?;
    let rotated = east.kubectl(&["create", "token", "rotated", "-n", "east-1"])?;
    let rotated = rotated.trim();
    let patch = json!({"stringData": {"token": rotated}});
    let changed = Instant::now();
    install.local.kubectl(&[
        "patch",
        "secret",
        "east-credentials",
        "-n",
        TEAM,
        "-p",
        &patch.to_string(),
    ])?;
    let republished = install.await_published(ACT, "the rotated credential", |files| {
        files.get("east.token").map(Vec::as_slice) == Some(rotated.as_bytes())
    })?;
    eprintln!(
        "{test}: the rotated credential was published {} ms after the Secret changed",
        changed.elapsed().as_millis()
    );
    volume.update(&as_files(&republished))?;
    let rotated_user = "system:serviceaccount:east-1:rotated";
    eventually(ACT, || {
        sidecar.kubectl(&only_in_east)?;
        let audit = east.audit();
        let by_rotated = audit.iter().any(|e| {
            e["objectRef"]["name"] == "only-in-east" && e["user"]["username"] == rotated_user
        });
        Ok((by_rotated, ()))
    })
    .with_context(sidecar_log)?;

    // The leader crashes; the other replica takes over and publishes a new Route.
    let crashed = install.take_operator(&first);
    crashed.signal(SIGKILL)?;
    let crash = Instant::now();
    let route = json!({"apiVersion": "mca.io/v1alpha1", "kind": "Route",
        "metadata": {"name": "team-configmaps", "namespace": TEAM},
        "spec": {"match": {"namespaces": [TEAM], "resources": ["configmaps"]},
                 "to": {"clusters": ["east"]}}});
    install
        .local
        .kubectl_with_input(&["apply", "-f", "-"], &serde_json::to_vec(&route)?)?;
    let republished = install.await_published(TAKEOVER, "the new route", |files| {
        files
            .get("config.yaml")
            .is_some_and(|c| String::from_utf8_lossy(c).contains("team-configmaps"))
    })?;
    let second = install.await_leader(ACT, |holder| holder != first)?;
    eprintln!(
        "{test}: {second} took over and published the new route {} ms after {first} crashed",
        crash.elapsed().as_millis()
    );
    volume.update(&as_files(&republished))?;
    let out = eventually(ACT, || {
        let out = sidecar.kubectl(&team_config)?;
        Ok((out.trim() == "configmap/team-config", out))
    })
    .with_context(sidecar_log)?;
    assert_eq!(out.trim(), "configmap/team-config");

    // A rolling update: a new replica waits, the leader is stopped (SIGTERM) and releases the
    // Lease, and the new one leads within a retry or two, not a whole Lease duration.
    install
        .start_operator("operator-c")?
        .wait_for_line(|l| l.contains("waiting to lead"), ACT)?;
    let stopping = install.take_operator(&second);
    stopping.signal(SIGTERM)?;
    let stop = Instant::now();
    assert!(stopping.wait(ACT)?.success(), "{}", stopping.output());
    install.await_leader(ACT, |holder| holder == "operator-c")?;
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
    let log = stopping.output();
    assert!(
        log.contains("releasing the Lease") && !log.contains("releasing the Lease failed"),
        "{log}"
    );

    // Everything deleted: the configuration goes empty, and with it the routes.
    install.local.kubectl(&[
        "delete",
        "clusters.mca.io,routes.mca.io",
        "--all",
        "-n",
        TEAM,
    ])?;
    let emptied = install.await_published(ACT, "the emptied configuration", |files| {
        !files.contains_key("east.token")
    })?;
    assert_eq!(emptied.keys().collect::<Vec<_>>(), ["config.yaml"]);
    volume.update(&as_files(&emptied))?;
    eventually(ACT, || Ok((sidecar.kubectl(&team_config).is_err(), ())))
        .with_context(sidecar_log)?;
    Ok(())
}
