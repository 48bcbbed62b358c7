//! MCA in real pods on a real node (`mca_tests::node`: a kubelet with containerd and runc, a
//! scheduler and controllers, run when the node's binaries are there): the image `cargo
//! xtask image` writes, imported as `kind load image-archive` imports it; the chart installed
//! with helm as a user installs it (mode `auto`, its default); Deployments in namespaces
//! labelled for injection at each PodSecurity level, whose application lists ConfigMaps with
//! in-cluster configuration three ways: through the env override, by dialling the Service IP
//! `10.96.0.1:443` (caught only by eBPF inside the runc container), and through a `kubectl
//! proxy` that loaded the CA once; the sidecar killed under that long-lived client; and, with
//! `MCA_NODE_LONG=1` (eleven minutes), the kubelet's rotation of a 600 s token.
//!
//! One test, in steps, because a machine holds one node at a time. The node's network sends
//! nothing off the machine: the Service IP is DNATed to the API server on the node's bridge,
//! and forwarding stays off (see `../shared/k8s/README.md`).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail, ensure};
use mca_tests::{
    harness::{eventually, workspace_root},
    helm,
    node::{Node, build_image},
};
use serde_json::{Value, json};

/// The image's reference on the node (never pulled: `imagePullPolicy: Never`).
const IMAGE_REPOSITORY: &str = "registry.local/mca";
const IMAGE_TAG: &str = "node-tier";
/// The application: busybox and a static kubectl (built by `node.sh`), uid 65532.
const APP_IMAGE: &str = "registry.local/app:v1";
/// The sidecar's projected token lives this long (the API server's minimum); the kubelet
/// replaces it at 80%.
const TOKEN_SECONDS: u64 = 600;
/// A pod scheduled, its images present, MCA's startup probe passed, the app running.
const ROLLOUT: Duration = Duration::from_secs(120);

/// What the application prints, once a second: `<unix seconds> ok|fail <way> [error]` for
/// each of the three ways it reaches the API server.
const APP_SCRIPT: &str = r#"
kubectl proxy --port=8001 >/tmp/proxy.log 2>&1 &
while true; do
  now=$(date +%s)
  if kubectl get configmaps -o name >/dev/null 2>/tmp/e; then echo "$now ok env"; else echo "$now fail env $(head -c 200 /tmp/e)"; fi
  if KUBERNETES_SERVICE_HOST=10.96.0.1 KUBERNETES_SERVICE_PORT=443 kubectl get configmaps -o name >/dev/null 2>/tmp/e; then echo "$now ok service-ip"; else echo "$now fail service-ip $(head -c 200 /tmp/e)"; fi
  if wget -q -O /dev/null "http://127.0.0.1:8001/api/v1/namespaces/$NAMESPACE/configmaps" 2>/tmp/e; then echo "$now ok proxy"; else echo "$now fail proxy $(head -c 200 /tmp/e)"; fi
  sleep 1
done
"#;

/// A namespace per PodSecurity labelling: its name, its `enforce` label, and whether MCA
/// should run in eBPF mode there (the chart's `auto` above `privileged` is env mode alone).
const LEVELS: [(&str, Option<&str>, bool); 4] = [
    ("tier-unlabelled", None, true),
    ("tier-privileged", Some("privileged"), true),
    ("tier-baseline", Some("baseline"), false),
    ("tier-restricted", Some("restricted"), false),
];

#[test]
#[ignore = "needs a real node: a kubelet in K8S_BIN or ~/.cache/mca-k8s/bin (../shared/k8s/build.sh); cargo xtask test runs it when found"]
fn mca_in_real_pods_on_a_real_node() -> anyhow::Result<()> {
    let started = Instant::now();
    let node = Node::start()?;
    let step = |what: &str| {
        eprintln!(
            "node tier [{:>5.1} s] {what}",
            started.elapsed().as_secs_f64()
        )
    };
    step("node Ready");

    let archive = workspace_root().join("target/node-tier/mca-image.tar");
    std::fs::create_dir_all(archive.parent().expect("a parent"))?;
    let built = build_image(&format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}"), &archive)?;
    step(&built);
    let imported = node.import(&archive)?;
    ensure!(
        imported.contains(&format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}")),
        "{imported}"
    );
    step("image imported as kind load image-archive does");

    install_chart(&node)?;
    step("chart installed: operator and webhook Ready, the webhook's caBundle set");

    for (namespace, level, _) in LEVELS {
        node.kubectl_with_input(
            &["apply", "-f", "-"],
            app(namespace, level).to_string().as_bytes(),
        )?;
    }
    for (namespace, level, ebpf) in LEVELS {
        check_injected(&node, namespace, level, ebpf)?;
        step(&format!(
            "{namespace}: injected Deployment running, MCA in {} mode, in-cluster client through MCA",
            if ebpf { "eBPF" } else { "env" }
        ));
    }
    check_real_credentials(&node, LEVELS[0].0)?;
    step("the API server saw the pod's ServiceAccount (bound token), the app holds no real token");

    let gap = kill_sidecar(&node, LEVELS[0].0)?;
    step(&format!(
        "sidecar SIGKILLed and restarted by the kubelet: kubectl proxy (CA loaded once) failed {gap} times, then worked again"
    ));

    if std::env::var_os("MCA_NODE_LONG").is_some() {
        let (tokens, requests) = outlive_token(&node, LEVELS[0].0)?;
        step(&format!(
            "the kubelet rotated the sidecar's {TOKEN_SECONDS} s token: {requests} requests, 0 failed, {tokens} tokens seen by the API server"
        ));
    } else {
        step(&format!(
            "token rotation skipped: MCA_NODE_LONG is not set (it outlives a {TOKEN_SECONDS} s token: eleven minutes)"
        ));
    }
    Ok(())
}

/// `helm upgrade --install` of the chart as a user runs it, with the node's image.
fn install_chart(node: &Node) -> anyhow::Result<()> {
    let kubeconfig = node.kubeconfig();
    helm::helm(&[
        "upgrade",
        "--install",
        "mca",
        "mca",
        "--kubeconfig",
        kubeconfig.to_str().context("a UTF-8 path")?,
        "--namespace",
        "mca-system",
        "--create-namespace",
        "--set",
        &format!("image.repository={IMAGE_REPOSITORY}"),
        "--set",
        &format!("image.tag={IMAGE_TAG}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "webhook.replicas=1",
        "--set",
        "operator.replicas=1",
        "--set",
        &format!("tokenExpirationSeconds={TOKEN_SECONDS}"),
        "--wait",
        "--timeout",
        "180s",
    ])?;
    eventually(Duration::from_secs(60), || {
        let bundle = node.kubectl(&[
            "get",
            "mutatingwebhookconfiguration",
            "mca-injector",
            "-o",
            "jsonpath={.webhooks[*].clientConfig.caBundle}",
        ])?;
        Ok((bundle.split_whitespace().count() == 6, ()))
    })
    .context("the operator sets the caBundle of each of the six webhook entries")
}

/// A namespace labelled for injection (and `enforce: level`), a ServiceAccount that may read
/// ConfigMaps there, and a Deployment of the application running [`APP_SCRIPT`], its
/// container as `restricted` asks.
fn app(namespace: &str, level: Option<&str>) -> Value {
    let mut labels = json!({"mca.io/inject": "enabled"});
    if let Some(level) = level {
        labels["pod-security.kubernetes.io/enforce"] = json!(level);
    }
    let meta = |name: &str| json!({"name": name, "namespace": namespace});
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("app")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("read"),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("app-reads"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
         "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("app"), "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {"metadata": {"labels": {"app": "app"}}, "spec": {
                "serviceAccountName": "app",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "app", "image": APP_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", APP_SCRIPT],
                    "env": [{"name": "NAMESPACE", "value": namespace}],
                    "securityContext": {
                        "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"}},
                }],
            }},
        }},
    ]})
}

/// The Deployment's one pod, once it is Running with every container ready.
fn running_pod(node: &Node, namespace: &str) -> anyhow::Result<Value> {
    eventually(ROLLOUT, || {
        let pods = node
            .get(&["pods", "-n", namespace, "-l", "app=app"])?
            .context("a pod list")?;
        let Some(pod) = pods["items"]
            .as_array()
            .and_then(|items| items.first())
            .cloned()
        else {
            return Ok((false, Value::Null));
        };
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok((ready, pod))
    })
    .with_context(|| {
        let events = node
            .kubectl(&[
                "get",
                "events",
                "-n",
                namespace,
                "-o",
                "custom-columns=WHY:.reason,WHAT:.message",
            ])
            .unwrap_or_default();
        format!("{namespace}: no Ready pod within {ROLLOUT:?}; events:\n{events}")
    })
}

/// The application's lines since it started, as `(unix seconds, ok, way)`.
fn app_lines(node: &Node, namespace: &str) -> anyhow::Result<Vec<(u64, bool, String)>> {
    let log = node.kubectl(&["logs", "-n", namespace, "deployment/app", "-c", "app"])?;
    Ok(log
        .lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let at = words.next()?.parse().ok()?;
            let ok = words.next()? == "ok";
            Some((at, ok, words.next()?.to_owned()))
        })
        .collect())
}

/// The application's last `lines` lines, for an error message.
fn app_log_tail(node: &Node, namespace: &str, lines: usize) -> String {
    let lines = lines.to_string();
    node.kubectl(&[
        "logs",
        "-n",
        namespace,
        "deployment/app",
        "-c",
        "app",
        "--tail",
        &lines,
    ])
    .unwrap_or_default()
}

/// Waits until each way the application reaches the API server has answered `expect` (by
/// way) at least three times; returns the lines.
fn wait_for_app(
    node: &Node,
    namespace: &str,
    expect: &[(&str, bool)],
) -> anyhow::Result<Vec<(u64, bool, String)>> {
    eventually(Duration::from_secs(60), || {
        let lines = app_lines(node, namespace)?;
        let seen = expect.iter().all(|(way, ok)| {
            lines
                .iter()
                .filter(|(_, o, w)| w.split(' ').next() == Some(*way) && o == ok)
                .count()
                >= 3
        });
        Ok((seen, lines))
    })
    .with_context(|| {
        let log = app_log_tail(node, namespace, 12);
        format!("{namespace}: the application did not see {expect:?}; it printed:\n{log}")
    })
}

/// The pod was injected with MCA as a native sidecar in the mode the namespace's level
/// admits, and the application reaches the API server through it.
fn check_injected(
    node: &Node,
    namespace: &str,
    level: Option<&str>,
    ebpf: bool,
) -> anyhow::Result<()> {
    let pod = running_pod(node, namespace)?;
    let sidecar = &pod["spec"]["initContainers"][0];
    ensure!(
        sidecar["name"] == "mca",
        "{namespace}: no MCA sidecar first: {sidecar}"
    );
    ensure!(
        sidecar["restartPolicy"] == "Always",
        "{namespace}: MCA is not a native sidecar"
    );
    let capabilities = &sidecar["securityContext"]["capabilities"]["add"];
    ensure!(
        ebpf == capabilities
            .as_array()
            .is_some_and(|c| c.contains(&json!("BPF"))),
        "{namespace} (level {level:?}): MCA's capabilities are {capabilities}"
    );
    if !ebpf {
        ensure!(
            sidecar["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
            "{namespace}: the env-mode sidecar has no RuntimeDefault seccomp profile"
        );
    }
    // Where MCA runs as root its credentials are root's alone; in env mode (uid 65532) the
    // kubelet's default, which MCA can read.
    let uid = pod["metadata"]["uid"].as_str().context("a pod uid")?;
    let volumes = node.dir().join(format!("kubelet/pods/{uid}/volumes"));
    let token = volumes.join("kubernetes.io~projected/mca-real-sa/token");
    let expected = (if ebpf { "400" } else { "644" }.to_owned(), 0);
    let seen = node.mode_and_owner(&token)?;
    ensure!(
        seen == expected,
        "{namespace}: MCA's token file has mode and owner {seen:?}, not {expected:?}"
    );
    // The Service IP reaches MCA only if eBPF redirected the connect inside the container:
    // otherwise it reaches the real API server, whose certificate MCA's CA did not sign.
    wait_for_app(
        node,
        namespace,
        &[("env", true), ("proxy", true), ("service-ip", ebpf)],
    )?;
    let log = node.kubectl(&["logs", "-n", namespace, "deployment/app", "-c", "mca"])?;
    ensure!(
        log.contains("eBPF interception active") == ebpf,
        "{namespace}: MCA's log says otherwise about eBPF:\n{log}"
    );
    if ebpf {
        ensure!(
            log.contains("original_dst=10.96.0.1:443"),
            "{namespace}: no request redirected from the Service IP in MCA's access log"
        );
    }
    Ok(())
}

/// The API server authenticated the application's requests as the pod's ServiceAccount with
/// the token the kubelet bound to the pod, while the application's own token is MCA's
/// placeholder.
fn check_real_credentials(node: &Node, namespace: &str) -> anyhow::Result<()> {
    let user = format!("system:serviceaccount:{namespace}:app");
    let pod = running_pod(node, namespace)?;
    let name = pod["metadata"]["name"].as_str().context("a pod name")?;
    let seen = node.audit().into_iter().any(|event| {
        event["user"]["username"] == user.as_str()
            && event["objectRef"]["resource"] == "configmaps"
            && event["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] == name
    });
    ensure!(
        seen,
        "no audited ConfigMap list as {user} bound to pod {name}"
    );
    let token = node.kubectl(&[
        "exec",
        "-n",
        namespace,
        name,
        "-c",
        "app",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ])?;
    ensure!(
        !token.starts_with("eyJ"),
        "the application holds a JWT: {token:.20}"
    );
    Ok(())
}

/// SIGKILLs MCA in the pod (as an OOM kill would) and waits for the kubelet to restart it;
/// the application's `kubectl proxy`, which loaded the CA once, must work again. Returns how
/// many of its requests failed in between.
fn kill_sidecar(node: &Node, namespace: &str) -> anyhow::Result<usize> {
    let pod = running_pod(node, namespace)?;
    let status = sidecar_status(&pod)?;
    let id = status["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .context("a containerd container ID")?
        .to_owned();
    let restarts = status["restartCount"].as_u64().unwrap_or(0);
    let killed_at = unix_now();
    let killed = node
        .ctr()
        .args(["tasks", "kill", "--signal", "SIGKILL", &id])
        .output()?;
    ensure!(killed.status.success(), "ctr tasks kill: {killed:?}");
    eventually(Duration::from_secs(90), || {
        let pod = node
            .get(&[
                "pod",
                "-n",
                namespace,
                pod["metadata"]["name"].as_str().unwrap_or_default(),
            ])?
            .context("the pod")?;
        let status = sidecar_status(&pod)?;
        Ok((
            status["restartCount"].as_u64() > Some(restarts) && status["ready"] == true,
            (),
        ))
    })
    .context("the kubelet restarts MCA")?;
    let lines = eventually(Duration::from_secs(60), || {
        let lines = app_lines(node, namespace)?;
        let after: Vec<_> = lines
            .iter()
            .filter(|(at, _, way)| *at > killed_at && way.starts_with("proxy"))
            .collect();
        let recovered = after.len() >= 3 && after[after.len() - 3..].iter().all(|(_, ok, _)| *ok);
        Ok((recovered, lines))
    })
    .with_context(|| {
        let log = app_log_tail(node, namespace, 9);
        format!(
            "kubectl proxy did not recover after MCA's restart; the application printed:\n{log}"
        )
    })?;
    let failed = lines
        .iter()
        .filter(|(at, ok, way)| *at >= killed_at && !ok && way.starts_with("proxy"))
        .count();
    Ok(failed)
}

/// The MCA sidecar's status in `pod`.
fn sidecar_status(pod: &Value) -> anyhow::Result<&Value> {
    pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "mca")
        .context("no status for the mca container")
}

/// Keeps the application running past the expiry of the sidecar's first token: every
/// request succeeds, and the API server authenticates more than one token (the kubelet's
/// rotation, which MCA followed). Returns the tokens and the requests seen.
fn outlive_token(node: &Node, namespace: &str) -> anyhow::Result<(usize, usize)> {
    let pod = running_pod(node, namespace)?;
    let started = pod["status"]["startTime"]
        .as_str()
        .context("a start time")?
        .to_owned();
    let user = format!("system:serviceaccount:{namespace}:app");
    // The sidecar-kill step's gap is before this step: only later failures count.
    let since = unix_now();
    let deadline = Instant::now() + Duration::from_secs(TOKEN_SECONDS + 90);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(30));
        let lines = app_lines(node, namespace)?;
        let failure = lines
            .iter()
            .find(|(at, ok, way)| *at >= since && !ok && !way.starts_with("service-ip"));
        if let Some(failure) = failure {
            bail!("a request failed at {failure:?} (pod started {started})");
        }
    }
    let tokens: BTreeSet<String> = node
        .audit()
        .into_iter()
        .filter(|event| event["user"]["username"] == user.as_str())
        .filter_map(|event| {
            event["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let requests = app_lines(node, namespace)?
        .iter()
        .filter(|(at, ..)| *at >= since)
        .count();
    ensure!(
        tokens.len() >= 2,
        "one token in {TOKEN_SECONDS} s + 90 s: {tokens:?}"
    );
    Ok((tokens.len(), requests))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
