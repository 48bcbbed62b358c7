//! Multi-cluster routing: three test API servers play three clusters, each with its own CA and
//! its own token — `local` (MCA's in-cluster configuration), `east` (a token in the config
//! file) and `west` (a token file) — and kubectl, the Python client and kube-rs in the pod
//! sandbox are routed by namespace and by label selector. Each server's request record shows
//! which cluster got which request, and with which credential.
//!
//! Multi-cluster routing with three test API servers (local, east with a token, west with a token
//! file): kubectl, the Python client and kube-rs routed by namespace and by label selector (lists
//! and creates), each server's record of requests and tokens checked; the fake kubeconfig's
//! contexts followed by all three clients; encoded paths; `mca check-config`; failover as clusters
//! go down and come back (probes, `/readyz?verbose`, a `503` naming the route), reads retried on
//! the next cluster and writes never; merged discovery (aggregated, and legacy when one cluster
//! lacks aggregated) with kubectl reaching each cluster's own resources; a fan-out route over the
//! three clusters (`kubectl get pods -A` with a `CLUSTER` column, JSON annotations, `--chunk-size`
//! pages, the Python client and kube-rs, a GET by name, a `405` for writes, a cluster down with a
//! warning) and `kubectl get pods -A -w` across a cluster stopped and restarted; a hot reload that
//! moves a route and adds a cluster while a watch stays open, then a rejected file.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use mca_tests::{
    apiserver::{ApiServer, Options},
    fleet::{EAST_TOKEN, Fleet, WEST_TOKEN, config},
    harness::{Mca, NAMESPACE, mca_binary, succeed, venv_program},
    sandbox::Pod,
};

/// The routes most tests use.
const ROUTES: &str = r#"
routes:
  - name: team-east
    match: {namespaces: ["east-*"]}
    to: {clusters: [east]}
  - name: web-pods
    match: {resources: [pods], labelSelector: "tier=web"}
    to: {clusters: [west]}
defaultRoute: {clusters: [local]}
"#;

/// How long MCA may take to notice a file.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(15);

/// The fleet with [`ROUTES`].
fn fleet() -> anyhow::Result<Fleet> {
    Fleet::start(ROUTES, "", Options::default())
}

#[test]
fn requests_go_to_the_cluster_their_route_names_with_its_credentials() -> anyhow::Result<()> {
    let fleet = fleet()?;

    // By namespace: east-* goes east, whatever the client.
    fleet.kubectl(&["get", "pods", "-n", "east-1"])?;
    assert_eq!(fleet.where_went("/namespaces/east-1/pods"), ["east"]);
    fleet.env.python(&["create", "east-2", "made-by-python"])?;
    assert_eq!(fleet.where_went("/namespaces/east-2/pods"), ["east"]);
    let out = fleet.kube_rs(&["get", "east-2", "made-by-python"])?;
    assert!(out.starts_with("made-by-python "), "{out}");
    assert_eq!(
        fleet.where_went("/namespaces/east-2/pods/made-by-python"),
        ["east"]
    );

    // Everything else goes to the default route, the local cluster.
    let out = fleet.kube_rs(&["list", NAMESPACE])?;
    assert!(out.lines().any(|l| l == "web"), "{out}");
    assert_eq!(
        fleet.where_went(&format!("/namespaces/{NAMESPACE}/pods")),
        ["local"]
    );
    // Discovery too, so kubectl works.
    assert_eq!(fleet.where_went("/api?"), ["local"]);

    // By label selector: a create is routed by its object's labels...
    let manifest = fleet.env.pod.dir().join("web-pod.json");
    std::fs::write(
        &manifest,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"frontend","labels":{"tier":"web"}},
            "spec":{"containers":[{"name":"app","image":"busybox"}]}}"#,
    )?;
    let out = fleet.kubectl(&[
        "create",
        "-n",
        NAMESPACE,
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ])?;
    assert!(out.contains("pod/frontend created"), "{out}");
    assert_eq!(
        fleet.west.state().pods.list_names(NAMESPACE),
        ["frontend"],
        "the pod was created in west"
    );
    // ... a list whose selector implies the route's goes there too; one that does not, not.
    let out = fleet.kubectl(&[
        "get", "pods", "-n", NAMESPACE, "-l", "tier=web", "-o", "name",
    ])?;
    assert_eq!(out.trim(), "pod/frontend");
    assert_eq!(fleet.where_went("labelSelector=tier%3Dweb"), ["west"]);
    fleet.kubectl(&["get", "pods", "-n", NAMESPACE, "-l", "tier in (web,db)"])?;
    assert_eq!(fleet.where_went("labelSelector=tier+in"), ["local"]);
    // A create without the label stays local.
    fleet.env.python(&["create", NAMESPACE, "plain"])?;
    assert_eq!(
        fleet.local().state().pods.list_names(NAMESPACE),
        ["plain", "web"]
    );

    // The access log names the route and the cluster of every request.
    let line = fleet.env.mca.wait_for_access(|l| {
        l["verb"] == "create" && l["namespace"] == NAMESPACE && l["cluster"] == "west"
    })?;
    assert_eq!(line["route"], "web-pods");
    let line = fleet
        .env
        .mca
        .wait_for_access(|l| l["namespace"] == "east-1")?;
    assert_eq!(
        (&line["route"], &line["cluster"]),
        (&"team-east".into(), &"east".into())
    );
    let line = fleet.env.mca.wait_for_access(|l| l["path"] == "/api")?;
    assert_eq!(
        (&line["route"], &line["cluster"]),
        (&"default".into(), &"local".into())
    );
    Ok(())
}

#[test]
fn the_fake_kubeconfig_has_a_context_per_cluster_that_clients_follow() -> anyhow::Result<()> {
    let fleet = fleet()?;
    let kubeconfig = fleet.env.pod.dir().join("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("UTF-8");
    let app = |program: &str, args: &[&str]| -> anyhow::Result<String> {
        let output = fleet
            .env
            .pod
            .app(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()?;
        succeed(output, program, args)
    };
    let kubectl = mca_tests::harness::venv_program("kubectl");
    let kubectl = kubectl.to_str().expect("UTF-8");

    // The explicit context wins over the routes: team-a would go to local.
    let out = app(
        kubectl,
        &["--context", "east", "get", "pods", "-n", NAMESPACE],
    )?;
    assert_eq!(out, "", "no pods there (kubectl says so on stderr)");
    assert_eq!(
        fleet.where_went(&format!("/namespaces/{NAMESPACE}/pods")),
        ["east"]
    );
    // kubectl's discovery went there too, under the prefix MCA removed.
    assert!(fleet.where_went("/api?").contains(&"east"));

    let python = mca_tests::harness::venv_program("python");
    let script = mca_tests::harness::client_script("python_client.py");
    let out = app(
        python.to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            "--context",
            "west",
            "create",
            "east-9",
            "by-context",
        ],
    )?;
    assert!(out.starts_with("by-context "), "{out}");
    assert_eq!(fleet.west.state().pods.list_names("east-9"), ["by-context"]);

    let out = app(
        env!("CARGO_BIN_EXE_mca-kube-client"),
        &["--context", "local", "list", "east-1"],
    )?;
    assert_eq!(out, "");
    assert_eq!(fleet.where_went("/namespaces/east-1/pods"), ["local"]);

    // The routed context follows the rules: east-1 goes east.
    let out = app(
        kubectl,
        &["--context", "mca", "get", "pods", "-n", "east-5"],
    )?;
    assert_eq!(out, "");
    assert_eq!(fleet.where_went("/namespaces/east-5/pods"), ["east"]);

    let line = fleet
        .env
        .mca
        .wait_for_access(|l| l["namespace"] == "east-9")?;
    assert_eq!(
        (&line["route"], &line["cluster"]),
        (&"explicit".into(), &"west".into())
    );
    assert_eq!(line["path"], "/api/v1/namespaces/east-9/pods");

    // An unknown cluster is a 404 Status naming the known ones.
    let output = fleet
        .env
        .pod
        .app(kubectl)
        .args(["get", "--raw", "/clusters/north/version"])
        .env("KUBECONFIG", kubeconfig)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no cluster named \"north\" (it has local, east, west)"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn check_config_lists_every_problem_with_its_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "clusters:\n  - name: east\n    server: https://10.0.0.1\n\
         routes:\n  - name: r\n    match: {labelSelector: 'tier in web'}\n    to: {clusters: [west]}\n",
    )?;
    let output = Command::new(mca_binary())
        .args(["check-config", bad.to_str().unwrap()])
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let at = |line: u32| format!("{}:{line}: ", bad.display());
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!("{}clusters[0] (east): no credentials", at(2))));
    assert!(lines[1].starts_with(&format!("{}routes[0] (r): match.labelSelector", at(5))));
    assert!(lines[2].starts_with(&format!("{}routes[0] (r): to: clusters: no cluster", at(5))));

    // Files it names are read as `mca run` would read them.
    let missing_ca = dir.path().join("missing-ca.yaml");
    std::fs::write(
        &missing_ca,
        "clusters:\n  - name: east\n    server: https://10.0.0.1\n    token: t\n\
         \x20   certificateAuthority: nowhere/ca.crt\n",
    )?;
    let output = Command::new(mca_binary())
        .args(["check-config", missing_ca.to_str().unwrap()])
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cluster east") && stderr.contains("nowhere/ca.crt"),
        "{stderr}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!("clusters: []\n{ROUTES}")
            .replace("east", "local")
            .replace("west", "local"),
    )?;
    let output = Command::new(mca_binary())
        .args(["check-config", good.to_str().unwrap()])
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("OK: 1 cluster(s) (local), 2 route(s)"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_paths_are_routed_as_the_api_server_reads_them() -> anyhow::Result<()> {
    use http::StatusCode;
    use mca_tests::client::{Https, body_json};
    let fleet = fleet()?;
    let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
    // The API server decodes %2F before reading the path: a LIST of pods in east-3, which
    // the namespace route sends east.
    let response = client.get("/api/v1/namespaces/east-3%2Fpods").await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        fleet.where_went("/api/v1/namespaces/east-3%2Fpods"),
        ["east"]
    );
    // What could be read two ways is refused.
    for path in [
        "/api/v1/namespaces/east-3/..%2F..%2Fnamespaces/team-a/pods",
        "/api/v1/namespaces/team-a//pods",
        "/api/v1/namespaces/%zz/pods",
    ] {
        let response = client.get(path).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body_json(response).await?["reason"], "BadRequest");
    }
    assert!(fleet.where_went("..").is_empty() && fleet.where_went("%zz").is_empty());
    Ok(())
}

/// `/readyz?verbose` from inside the pod.
fn readyz(fleet: &Fleet) -> anyhow::Result<(u16, String)> {
    fleet.env.admin_get("/readyz?verbose")
}

/// Waits until `/readyz?verbose` has a line starting with `line`.
pub(crate) async fn wait_for_readyz(fleet: &Fleet, line: &str) -> anyhow::Result<(u16, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, body) = readyz(fleet)?;
        if body.lines().any(|l| l.starts_with(line)) {
            return Ok((code, body));
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "/readyz?verbose never said {line:?}; last:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Serves `server` again on its address in `pod`, once the old listener is gone.
async fn resume(pod: &Pod, server: &mut ApiServer) -> anyhow::Result<()> {
    let addr = server.addr().to_string();
    for _ in 0..100 {
        if let Ok(listener) = pod.listen(&addr) {
            return server.resume(listener);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("{addr} stayed busy")
}

/// Namespaces `ha-*` fail over from east to west.
pub(crate) const HA_ROUTES: &str = "routes:\n\
    \x20 - name: ha\n\
    \x20   match: {namespaces: [\"ha-*\"]}\n\
    \x20   to: {clusters: [east, west], strategy: failover}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_gets_no_answer_is_retried_elsewhere_and_a_write_never() -> anyhow::Result<()> {
    use http::StatusCode;
    use mca_tests::client::{Https, body_json};
    // Probes too slow to notice anything during the test: only requests find east dead.
    let mut fleet = Fleet::start(
        HA_ROUTES,
        "    health: {interval: 1h}\n",
        Options::default(),
    )?;
    let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
    fleet.east.stop();

    let create = http::Request::post("/api/v1/namespaces/ha-1/pods")
        .header("authorization", client.bearer())
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(
            r#"{"metadata":{"name":"once"}}"#,
        ))?;
    let response = client.send(create).await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_json(response).await?["reason"], "ServiceUnavailable");
    assert!(
        fleet.where_went("/ha-1/").is_empty(),
        "the write went nowhere else"
    );

    let response = client.get("/api/v1/namespaces/ha-2/pods").await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fleet.where_went("/ha-2/"), ["west"]);
    let line = fleet
        .env
        .mca
        .wait_for_access(|l| l["namespace"] == "ha-2")?;
    assert_eq!(line["cluster"], "west");
    assert!(line["note"].as_str().unwrap().contains("retried"), "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_follows_cluster_health() -> anyhow::Result<()> {
    use http::StatusCode;
    use mca_tests::client::{Https, body_json};
    const FAST_HEALTH: &str =
        "    health: {interval: 200ms, timeout: 500ms, unhealthyAfter: 2, healthyAfter: 1}\n";
    let mut fleet = Fleet::start(HA_ROUTES, FAST_HEALTH, Options::default())?;
    let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
    let pods = |namespace: &str| format!("/api/v1/namespaces/{namespace}/pods");

    // Healthy: the first cluster in order.
    assert_eq!(client.get(&pods("ha-1")).await?.status(), StatusCode::OK);
    assert_eq!(fleet.where_went("/ha-1/"), ["east"]);
    assert_eq!(readyz(&fleet)?.0, 200);

    // East goes down: a read that finds it dead is answered by west at once...
    fleet.east.stop();
    assert_eq!(client.get(&pods("ha-2")).await?.status(), StatusCode::OK);
    assert_eq!(fleet.where_went("/ha-2/"), ["west"]);
    // ... and probes take east out of the route; MCA stays ready with the others.
    let (code, body) = wait_for_readyz(&fleet, "[-]cluster-east failed").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]cluster-west ok") && body.contains("readyz check passed"));
    // A write goes to west directly: never sent to a cluster known to be down.
    let create = http::Request::post(pods("ha-3"))
        .header("authorization", client.bearer())
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(
            r#"{"metadata":{"name":"made-during-outage"}}"#,
        ))?;
    assert_eq!(client.send(create).await?.status(), StatusCode::CREATED);
    assert_eq!(
        fleet.west.state().pods.list_names("ha-3"),
        ["made-during-outage"]
    );
    let line = fleet
        .env
        .mca
        .wait_for_access(|l| l["namespace"] == "ha-3")?;
    assert_eq!(
        (&line["cluster"], &line["note"]),
        (&"west".into(), &"".into())
    );

    // East comes back: probes return it to the route.
    resume(&fleet.env.pod, &mut fleet.east).await?;
    wait_for_readyz(&fleet, "[+]cluster-east ok").await?;
    assert_eq!(client.get(&pods("ha-4")).await?.status(), StatusCode::OK);
    assert_eq!(fleet.where_went("/ha-4/"), ["east"]);

    // Both down: a Status naming the route, and no credential in it.
    fleet.east.stop();
    fleet.west.stop();
    wait_for_readyz(&fleet, "[-]cluster-east failed").await?;
    wait_for_readyz(&fleet, "[-]cluster-west failed").await?;
    let response = client.get(&pods("ha-5")).await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = body_json(response).await?;
    assert_eq!(status["reason"], "ServiceUnavailable");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("route \"ha\""), "{message}");
    assert!(!message.contains(EAST_TOKEN) && !message.contains(WEST_TOKEN));
    // The local cluster still serves its routes, so MCA stays ready.
    assert_eq!(readyz(&fleet)?.0, 200);
    Ok(())
}

/// Discovery merged; widgets live on east, gadgets on west, and routes send them there.
const DISCOVERY_ROUTES: &str = "routes:\n\
    \x20 - name: widgets\n\
    \x20   match: {resources: [example.com/widgets]}\n\
    \x20   to: {clusters: [east]}\n\
    \x20 - name: gadgets\n\
    \x20   match: {resources: [tools.io/gadgets]}\n\
    \x20   to: {clusters: [west]}\n\
    discovery: merged\n";

/// kubectl sees every cluster's resources as one API server's and reaches each where it is.
fn kubectl_sees_the_merged_api(fleet: &Fleet) -> anyhow::Result<()> {
    fleet
        .east
        .add_resource("example.com", "v1", "widgets", "Widget");
    fleet
        .west
        .add_resource("tools.io", "v1", "gadgets", "Gadget");
    let out = fleet.kubectl(&["api-resources", "--no-headers", "-o", "name"])?;
    let names: Vec<&str> = out.lines().collect();
    for wanted in ["pods", "widgets.example.com", "gadgets.tools.io"] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for server in [fleet.local(), &fleet.east, &fleet.west] {
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.target.starts_with("/apis")),
            "every cluster was asked"
        );
    }
    fleet.kubectl(&["get", "widgets", "-n", NAMESPACE])?;
    assert_eq!(fleet.where_went("/widgets"), ["east"]);
    fleet.kubectl(&["get", "gadgets", "-n", NAMESPACE])?;
    assert_eq!(fleet.where_went("/gadgets"), ["west"]);
    let line = fleet.env.mca.wait_for_access(|l| l["path"] == "/apis")?;
    assert_eq!(
        (&line["route"], &line["cluster"], &line["status"]),
        (&"discovery".into(), &"local,east,west".into(), &200.into())
    );
    Ok(())
}

#[test]
fn merged_discovery_joins_every_clusters_aggregated_discovery() -> anyhow::Result<()> {
    let fleet = Fleet::start(DISCOVERY_ROUTES, "", Options::default())?;
    kubectl_sees_the_merged_api(&fleet)?;
    // Every cluster spoke aggregated discovery, so that is what kubectl got: it never had
    // to walk the groups one by one.
    assert!(fleet.where_went("/apis/example.com/v1?").is_empty());
    Ok(())
}

#[test]
fn merged_discovery_falls_back_to_the_legacy_documents_when_a_cluster_lacks_aggregated()
-> anyhow::Result<()> {
    let legacy = Options {
        legacy_discovery: true,
        ..Options::default()
    };
    let fleet = Fleet::start(DISCOVERY_ROUTES, "", legacy)?;
    kubectl_sees_the_merged_api(&fleet)?;
    // kubectl walked the groups, each merged from whichever clusters have it.
    assert!(!fleet.where_went("/apis/example.com/v1").is_empty());
    Ok(())
}

/// Pods are one view across the three clusters.
pub(crate) const FANOUT_ROUTES: &str = "routes:\n\
    \x20 - name: all-pods\n\
    \x20   match: {resources: [pods]}\n\
    \x20   to: {clusters: [local, east, west], strategy: fanOut}\n";

/// A fleet whose pods are web (local, team-a), e1 (east, team-a), e2 (east, team-b) and w1
/// (west, team-a), behind [`FANOUT_ROUTES`].
pub(crate) fn fan_out_fleet() -> anyhow::Result<Fleet> {
    let fleet = Fleet::start(FANOUT_ROUTES, "", Options::default())?;
    fleet.east.state().pods.insert(NAMESPACE, "e1");
    fleet.east.state().pods.insert("team-b", "e2");
    fleet.west.state().pods.insert(NAMESPACE, "w1");
    Ok(fleet)
}

#[test]
fn a_fan_out_route_lists_every_clusters_objects_as_one() -> anyhow::Result<()> {
    let fleet = fan_out_fleet()?;

    // kubectl's Table, across all namespaces, with the cluster of each row.
    let out = fleet.kubectl(&["get", "pods", "-A"])?;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0].last(), Some(&"CLUSTER"), "{out}");
    let mut found: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[1], r[r.len() - 1])).collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("e1", "east"),
            ("e2", "east"),
            ("w1", "west"),
            ("web", "local")
        ]
    );

    // Plain JSON: items annotated, one composite resourceVersion.
    let list: serde_json::Value =
        serde_json::from_str(&fleet.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "json"])?)?;
    let names: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"].as_str().unwrap(),
                item["metadata"]["annotations"]["mca.multicluster.dev/cluster"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("web", "local"), ("e1", "east"), ("w1", "west")]);

    // Pages walk the clusters under one continue token.
    let out = fleet.kubectl(&["get", "pods", "-A", "--chunk-size=1", "-o", "name"])?;
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(names, ["pod/e1", "pod/e2", "pod/w1", "pod/web"]);
    assert!(
        !fleet.where_went("limit=1&continue=").is_empty(),
        "the clusters' own continue tokens went back to them"
    );

    // The Python client and kube-rs see the same view.
    let out = fleet.env.python(&["list", NAMESPACE])?;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["web", "e1", "w1"]);
    let out = fleet.kube_rs(&["list", NAMESPACE])?;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["web", "e1", "w1"]);

    // One object: from the cluster that has it.
    let out = fleet.kubectl(&["get", "pod", "w1", "-n", NAMESPACE, "-o", "name"])?;
    assert_eq!(out.trim(), "pod/w1");

    // Writes have no single place to go.
    let output = fleet.env.app_output(
        venv_program("kubectl"),
        &["delete", "pod", "e1", "-n", NAMESPACE],
    )?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MethodNotAllowed") && stderr.contains("fans out"),
        "{stderr}"
    );
    assert_eq!(fleet.east.state().pods.list_names(NAMESPACE), ["e1"]);

    // A cluster that is down is left out, with a warning, and the list still succeeds.
    let mut fleet = fleet;
    fleet.west.stop();
    let output = fleet.env.app_output(
        venv_program("kubectl"),
        &["get", "pods", "-n", NAMESPACE, "-o", "name"],
    )?;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster west is missing"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merged_watch_survives_a_cluster_going_away_and_coming_back() -> anyhow::Result<()> {
    use mca_tests::harness::Process;
    let mut fleet = fan_out_fleet()?;
    let watcher = Process::spawn(
        "kubectl get -w",
        fleet
            .env
            .pod
            .app(venv_program("kubectl"))
            .args(["get", "pods", "-A", "--watch", "--output", "name"])
            .args(["--request-timeout", "0"]),
    )?;
    let seen = |name: &'static str| {
        let wanted = format!("pod/{name}");
        watcher.wait_for_line(move |l| l == wanted, std::time::Duration::from_secs(20))
    };
    for name in ["web", "e1", "e2", "w1"] {
        seen(name)?;
    }
    // kubectl watches from the list's composite version: every cluster at its own (the
    // watches start right after the list, so give them a moment to arrive).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fleet.where_went("resourceVersion=").len() < 3 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not every cluster got its own version: {:?}",
            fleet.where_went("resourceVersion=")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // An object created before a watch handler subscribed is still sent: the test server,
    // like kube-apiserver, replays the changes since the watch's resourceVersion.
    fleet.east.state().pods.insert(NAMESPACE, "e3");
    seen("e3")?;

    // East goes away; the others keep streaming.
    fleet.east.stop();
    fleet.west.state().pods.insert(NAMESPACE, "w2");
    seen("w2")?;

    // East comes back and rejoins the open watch: the client never reconnected.
    resume(&fleet.env.pod, &mut fleet.east).await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    fleet.east.state().pods.insert(NAMESPACE, "e4");
    seen("e4")?;
    assert!(!watcher.exited(), "kubectl is still watching");
    let watches = fleet
        .env
        .mca
        .access_log()
        .iter()
        .filter(|l| l["verb"] == "watch")
        .count();
    assert_eq!(watches, 0, "the client's one watch never ended");
    Ok(())
}

/// `kubectl get --raw PATH` of a watch, as the application, printing each event as a line.
fn raw_watch(fleet: &Fleet, path: &str) -> anyhow::Result<mca_tests::harness::Process> {
    mca_tests::harness::Process::spawn(
        "kubectl get --raw (watch)",
        fleet.env.pod.app(venv_program("kubectl")).args([
            "get",
            "--raw",
            path,
            "--request-timeout",
            "0",
        ]),
    )
}

/// Waits for a raw watch's event of type `kind` for the object `name`; the line.
fn wait_for_event(
    watcher: &mca_tests::harness::Process,
    kind: &str,
    name: &str,
) -> anyhow::Result<String> {
    watcher.wait_for_line(
        |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|e| e["type"] == kind && e["object"]["metadata"]["name"] == name)
        },
        std::time::Duration::from_secs(20),
    )
}

/// `kubectl get -w` (a Table watch, resumed from its list's version) through a member that
/// restarts having lost its history while something changed there: MCA lists that member
/// again and sends the difference, so the open watch shows the deletion and the creation
/// made while it was away and then what is created after, with no ERROR, and the expired
/// version is asked for once.
#[tokio::test(flavor = "multi_thread")]
async fn a_merged_watch_repairs_a_member_that_lost_its_history() -> anyhow::Result<()> {
    use mca_tests::harness::Process;
    let fleet = fan_out_fleet()?;
    let watcher = Process::spawn(
        "kubectl get -w",
        fleet
            .env
            .pod
            .app(venv_program("kubectl"))
            .args(["get", "pods", "-A", "--watch", "--output-watch-events"])
            .args(["--request-timeout", "0"]),
    )?;
    let seen = |event: &'static str, name: &'static str| {
        watcher.wait_for_line(
            move |l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&event) && words.get(2) == Some(&name)
            },
            std::time::Duration::from_secs(20),
        )
    };
    for name in ["web", "e1", "e2", "w1"] {
        seen("ADDED", name)?;
    }
    let watching = || Fleet::received(&fleet.east, EAST_TOKEN, "watch=").len();
    mca_tests::harness::eventually(std::time::Duration::from_secs(10), || {
        Ok((watching() == 1, ()))
    })?;

    fleet.east.state().pods.restart(|pods| {
        pods.remove(NAMESPACE, "e1");
        pods.insert(NAMESPACE, "e-while-away");
    });
    let deleted = seen("DELETED", "e1")?;
    assert!(deleted.ends_with("east"), "{deleted}");
    seen("ADDED", "e-while-away")?;
    fleet.east.state().pods.insert(NAMESPACE, "e-after");
    seen("ADDED", "e-after")?;

    assert!(!watcher.exited(), "kubectl is still watching");
    let output = watcher.output();
    assert!(
        !output.contains("ERROR") && !output.contains("rror"),
        "{output}"
    );
    let east = Fleet::received(&fleet.east, EAST_TOKEN, "/pods");
    let watches: Vec<&String> = east.iter().filter(|r| r.contains("watch=")).collect();
    assert_eq!(
        watches.len(),
        3,
        "the first, the expired resume, the one after the relist: {east:#?}"
    );
    assert_ne!(
        watches[1], watches[2],
        "the expired version is not asked for again"
    );
    assert_eq!(
        east.iter().filter(|r| *r == "GET /api/v1/pods").count(),
        1,
        "MCA lists the member again once (kubectl's own list is paged): {east:#?}"
    );
    Ok(())
}

/// Informers end their watches every few minutes (`timeoutSeconds`) and open the next from
/// the last version they got: a merged watch that ends so leaves what its client holds for
/// that next watch, which can then repair a member's lost history too.
#[test]
fn a_watch_that_timed_out_leaves_what_its_client_holds_for_the_next() -> anyhow::Result<()> {
    let fleet = fan_out_fleet()?;
    let first = raw_watch(&fleet, "/api/v1/pods?watch=1&timeoutSeconds=2")?;
    assert!(first.wait(std::time::Duration::from_secs(20))?.success());
    let last: serde_json::Value = serde_json::from_str(
        first
            .lines()
            .last()
            .context("events from the first watch")?,
    )?;
    let version = last["object"]["metadata"]["resourceVersion"]
        .as_str()
        .context("a composite version")?
        .to_owned();
    let next = raw_watch(
        &fleet,
        &format!("/api/v1/pods?watch=1&resourceVersion={version}"),
    )?;
    mca_tests::harness::eventually(std::time::Duration::from_secs(10), || {
        Ok((
            Fleet::received(&fleet.east, EAST_TOKEN, "resourceVersion=").len() == 1,
            (),
        ))
    })?;
    fleet.east.state().pods.restart(|pods| {
        pods.remove(NAMESPACE, "e1");
        pods.insert(NAMESPACE, "e-while-away");
    });
    for (kind, name) in [("DELETED", "e1"), ("ADDED", "e-while-away")] {
        wait_for_event(&next, kind, name)?;
    }
    assert!(!next.output().contains("ERROR"), "{}", next.output());
    Ok(())
}

/// A member's event larger than MCA reads (16 MiB) is not assembled: that member's stream
/// stops there while the others go on, and MCA's memory does not follow the event.
#[test]
fn a_members_oversized_watch_event_is_not_buffered() -> anyhow::Result<()> {
    let fleet = fan_out_fleet()?;
    let watcher = raw_watch(&fleet, "/api/v1/pods?watch=1")?;
    wait_for_event(&watcher, "ADDED", "w1")?;
    let before = fleet.env.mca.peak_resident_kib()?;
    fleet
        .east
        .state()
        .pods
        .insert_padded(NAMESPACE, "huge", 17 << 20);
    let line = fleet.env.mca.wait_for_log(
        |l| l.contains("a watch event larger than"),
        std::time::Duration::from_secs(30),
    )?;
    assert!(line.contains("\"cluster\":\"east\""), "{line}");
    fleet.west.state().pods.insert(NAMESPACE, "w-after");
    wait_for_event(&watcher, "ADDED", "w-after")?;
    let grown = (fleet.env.mca.peak_resident_kib()? - before) / 1024;
    assert!(
        !watcher.lines().iter().any(|l| l.contains("\"huge\"")),
        "the oversized event was forwarded"
    );
    assert!(grown < 48, "MCA's peak RSS grew by {grown} MiB");
    eprintln!("a 17 MiB event refused: MCA's peak RSS +{grown} MiB");
    Ok(())
}

/// A watch from a composite version MCA has no record of (here, of another list) cannot be
/// repaired when a member loses its history: it ends with exactly one `410 Expired` ERROR,
/// which tells the client to list again.
#[test]
fn a_watch_mca_cannot_repair_ends_with_one_expired_error() -> anyhow::Result<()> {
    let fleet = fan_out_fleet()?;
    let list = fleet.kubectl(&["get", "--raw", "/api/v1/pods"])?;
    let version = serde_json::from_str::<serde_json::Value>(&list)?["metadata"]["resourceVersion"]
        .as_str()
        .expect("a composite version")
        .to_owned();
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1&resourceVersion={version}");
    let watcher = raw_watch(&fleet, &path)?;
    mca_tests::harness::eventually(std::time::Duration::from_secs(10), || {
        Ok((
            Fleet::received(&fleet.east, EAST_TOKEN, "watch=").len() == 1,
            (),
        ))
    })?;
    fleet.east.state().pods.restart(|pods| {
        pods.insert(NAMESPACE, "e-while-away");
    });
    let status = watcher.wait(std::time::Duration::from_secs(20))?;
    assert!(status.success(), "{}", watcher.output());
    let errors: Vec<serde_json::Value> = watcher
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{}", watcher.output());
    assert_eq!(errors[0]["object"]["code"], 410);
    assert_eq!(errors[0]["object"]["reason"], "Expired");
    let east = Fleet::received(&fleet.east, EAST_TOKEN, "watch=");
    assert_eq!(
        east.len(),
        2,
        "the expired version is never retried: {east:#?}"
    );
    Ok(())
}

/// A member that is down when a merged watch starts costs one `Warning` header and nothing
/// else, and its objects arrive as ADDED events when it comes back; the same for a WatchList
/// (`sendInitialEvents=true`, what client-go's informers send from 1.35), whose initial events
/// end with exactly one `k8s.io/initial-events-end` bookmark without waiting for the missing
/// member, and which does not send a member's objects again when it resumes.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_down_at_the_start_costs_one_warning_and_joins_when_back() -> anyhow::Result<()> {
    for query in [
        "watch=1",
        "watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    ] {
        let watch_list = query.contains("sendInitialEvents");
        let mut fleet = fan_out_fleet()?;
        fleet.west.stop();
        let path = format!("/api/v1/pods?{query}");
        let watcher = raw_watch(&fleet, &path)?;
        let event = |kind, name| wait_for_event(&watcher, kind, name);
        for name in ["web", "e1", "e2"] {
            event("ADDED", name)?;
        }
        let ends = || {
            watcher
                .lines()
                .iter()
                .filter(|l| l.contains("k8s.io/initial-events-end"))
                .count()
        };
        if watch_list {
            mca_tests::harness::eventually(std::time::Duration::from_secs(10), || {
                Ok((ends() == 1, ()))
            })
            .map_err(|e| {
                e.context(format!(
                    "one end bookmark without west: {}",
                    watcher.output()
                ))
            })?;
        }
        resume(&fleet.env.pod, &mut fleet.west).await?;
        event("ADDED", "w1")?;
        // East's stream ends and resumes: its objects are not sent again.
        fleet.east.state().pods.restart(|_| {});
        mca_tests::harness::eventually(std::time::Duration::from_secs(10), || {
            Ok((
                Fleet::received(&fleet.east, EAST_TOKEN, "watch=").len() >= 2,
                (),
            ))
        })?;
        fleet.east.state().pods.insert(NAMESPACE, "e-after");
        event("ADDED", "e-after")?;
        let output = watcher.output();
        let added_e1 = watcher
            .lines()
            .iter()
            .filter(|l| l.contains(r#""name":"e1""#))
            .count();
        assert_eq!(added_e1, 1, "{query}: e1 sent once: {output}");
        assert_eq!(ends(), usize::from(watch_list), "{query}: {output}");
        assert!(!output.contains("ERROR"), "{query}: {output}");
        let warnings = output
            .matches("cluster west is missing from this merged view")
            .count();
        assert_eq!(warnings, 1, "{query}: one Warning: {output}");
        if watch_list {
            let east = Fleet::received(&fleet.east, EAST_TOKEN, "watch=");
            assert!(
                !east[1].contains("sendInitialEvents"),
                "a resumed member is not asked for its initial events again: {east:#?}"
            );
        }
    }
    Ok(())
}

/// A watch every member refuses (here `resourceVersionMatch` without `sendInitialEvents`,
/// which kube-apiserver answers with 422) gets that refusal at once, never a silent stream.
#[test]
fn a_watch_the_members_refuse_gets_their_error() -> anyhow::Result<()> {
    use mca_tests::harness::Process;
    let fleet = fan_out_fleet()?;
    let watcher = Process::spawn(
        "kubectl get --raw (watch)",
        fleet.env.pod.app(venv_program("kubectl")).args([
            "get",
            "--raw",
            "/api/v1/pods?watch=1&resourceVersionMatch=NotOlderThan",
        ]),
    )?;
    let status = watcher.wait(std::time::Duration::from_secs(20))?;
    let output = watcher.output();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("refused this watch")
            && output.contains("resourceVersionMatch is forbidden"),
        "{output}"
    );
    Ok(())
}

/// A merged LIST streams each cluster's items as they arrive, so a cluster whose list breaks
/// after its answer began cannot be left out any more: the response is aborted, and the
/// client sees a failed request rather than a list quietly missing some of that cluster's
/// objects.
#[test]
fn a_merged_list_whose_cluster_breaks_midway_fails_instead_of_being_partial() -> anyhow::Result<()>
{
    let fleet = Fleet::start(
        FANOUT_ROUTES,
        "",
        Options {
            truncate_lists: true,
            ..Options::default()
        },
    )?;
    fleet.west.state().pods.insert(NAMESPACE, "w1");
    fleet.west.state().pods.insert(NAMESPACE, "w2");
    let output = fleet.env.app_output(
        venv_program("kubectl"),
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        ],
    )?;
    assert!(!output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains(r#""resourceVersion":"mca."#),
        "no complete list: {stdout}"
    );
    fleet.env.mca.wait_for_log(
        |l| l.contains("a merged list failed while streaming"),
        std::time::Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn an_optional_config_published_later_is_applied_when_it_appears() -> anyhow::Result<()> {
    let (fleet, text) = Fleet::start_before_config(ROUTES)?;
    fleet
        .env
        .mca
        .wait_for_log(|l| l.contains("no routing configuration yet"), SETTLE)?;
    fleet.kubectl(&["get", "pods", "-n", "east-1"])?;
    assert_eq!(
        fleet.where_went("/east-1/"),
        ["local"],
        "local only, at first"
    );

    std::fs::write(fleet.env.pod.dir().join("mca.yaml"), text)?;
    fleet
        .env
        .mca
        .wait_for_log(|l| l.contains("configuration reloaded"), SETTLE)?;
    fleet.kubectl(&["get", "pods", "-n", "east-2"])?;
    assert_eq!(fleet.where_went("/east-2/"), ["east"]);
    Ok(())
}

#[test]
fn a_missing_config_is_an_error_without_config_optional() -> anyhow::Result<()> {
    let output = Command::new(mca_binary())
        .args([
            "run",
            "--config",
            "/nonexistent/mca.yaml",
            "--kubeconfig",
            "/dev/null",
        ])
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/mca.yaml"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_applies_without_dropping_open_watches() -> anyhow::Result<()> {
    use http::StatusCode;
    use mca_tests::client::{Https, next_chunk};
    let fleet = fleet()?;
    let path = fleet.env.pod.dir().join("mca.yaml");
    let reloads = || -> anyhow::Result<serde_json::Value> {
        let (_, body) = fleet.env.admin_get("/upstream")?;
        Ok(serde_json::from_str::<serde_json::Value>(&body)?["reloads"].clone())
    };
    let wait_for = |key: &'static str, count: u64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while reloads()?[key] != count {
            anyhow::ensure!(std::time::Instant::now() < deadline, "no {key} reload");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
    // A watch on east, open across the reload.
    let response = client.get("/api/v1/namespaces/east-1/pods?watch=1").await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = response.into_body();

    // east-* now goes west; east and west themselves are unchanged, and a cluster is added.
    let moved = ROUTES.replace("to: {clusters: [east]}", "to: {clusters: [west]}");
    let north = format!(
        "  - name: north\n    server: https://{}\n    certificateAuthority: east-ca.crt\n    token: {EAST_TOKEN}\n",
        fleet.east.addr()
    );
    let text = config(&fleet.east, &fleet.west, "", &moved).replacen(
        "routes:",
        &format!("{north}routes:"),
        1,
    );
    std::fs::write(&path, text)?;
    wait_for("applied", 1).await?;
    assert_eq!(
        client.get("/api/v1/namespaces/east-2/pods").await?.status(),
        StatusCode::OK
    );
    assert_eq!(fleet.where_went("/east-2/"), ["west"]);
    // The open watch on east still delivers.
    fleet.east.state().pods.insert("east-1", "after-reload");
    let event = next_chunk(&mut watch, std::time::Duration::from_secs(10))
        .await?
        .expect("an event");
    assert!(String::from_utf8_lossy(&event).contains("after-reload"));
    // The fake kubeconfig knows the new cluster.
    let kubeconfig = std::fs::read_to_string(fleet.env.pod.dir().join("kubeconfig"))?;
    assert!(kubeconfig.contains("/clusters/north"), "{kubeconfig}");
    let line = fleet.env.mca.wait_for_log(
        |l| l.contains("configuration reloaded"),
        std::time::Duration::from_secs(5),
    )?;
    assert!(
        line.contains("\"kept\":3"),
        "local, east and west carried over: {line}"
    );

    // A broken file is rejected with its line; the last good configuration keeps serving.
    let broken = config(
        &fleet.east,
        &fleet.west,
        "",
        &moved.replace("east-*", "East_*"),
    );
    std::fs::write(&path, broken)?;
    wait_for("rejected", 1).await?;
    let line = fleet.env.mca.wait_for_log(
        |l| l.contains("configuration rejected"),
        std::time::Duration::from_secs(5),
    )?;
    assert!(
        line.contains("line ") && line.contains("match.namespaces"),
        "{line}"
    );
    assert_eq!(
        client.get("/api/v1/namespaces/east-3/pods").await?.status(),
        StatusCode::OK
    );
    assert_eq!(fleet.where_went("/east-3/"), ["west"]);
    assert_eq!(reloads()?["applied"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_injected_sidecars_configuration_may_not_run_commands_or_name_files_elsewhere()
-> anyhow::Result<()> {
    let fleet = Fleet::start_restricted(ROUTES)?;
    // Plain names of files beside the configuration, as the operator publishes: served.
    fleet.kubectl(&["get", "pods", "-n", "east-1"])?;
    assert_eq!(fleet.where_went("/namespaces/east-1/pods"), ["east"]);
    let pod = &fleet.env.pod;
    let path = pod.dir().join("mca.yaml");
    let good = std::fs::read_to_string(&path)?;
    let ran = pod.dir().join("ran");
    let rejected = || -> anyhow::Result<u64> {
        let (_, body) = fleet.env.admin_get("/upstream")?;
        let reloads = serde_json::from_str::<serde_json::Value>(&body)?["reloads"].clone();
        Ok(reloads["rejected"].as_u64().unwrap_or_default())
    };
    let exec = good.replace(
        "    tokenFile: west-token\n",
        &format!(
            "    exec:\n      command: /bin/sh\n      args: [-c, 'touch {}']\n",
            ran.display()
        ),
    );
    let real_token = pod.dir().join("real-sa/token");
    let cases = [
        (exec.clone(), "exec: running a command"),
        (
            good.replace(
                "tokenFile: west-token",
                &format!("tokenFile: {}", real_token.display()),
            ),
            "tokenFile",
        ),
        (
            good.replace("tokenFile: west-token", "tokenFile: ../real-sa/token"),
            "tokenFile",
        ),
        (
            good.replace(
                "certificateAuthority: west-ca.crt",
                "certificateAuthority: ./x/../west-ca.crt",
            ),
            "certificateAuthority",
        ),
    ];
    for (count, (text, field)) in (1..).zip(cases) {
        std::fs::write(&path, text)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while rejected()? < count {
            anyhow::ensure!(Instant::now() < deadline, "not rejected: {field}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let line = fleet.env.mca.wait_for_log(
            |l| l.contains("configuration rejected") && l.contains(field),
            Duration::from_secs(5),
        )?;
        assert!(line.contains("--config-restricted"), "{line}");
    }
    // The last good configuration keeps serving, and nothing ran.
    fleet.kubectl(&["get", "pods", "-n", "east-2"])?;
    assert_eq!(fleet.where_went("/namespaces/east-2/pods"), ["east"]);
    assert!(!ran.exists(), "the exec plugin ran");
    // At start, the same is refused outright.
    let other = Pod::new()?;
    std::fs::write(other.dir().join("mca.yaml"), &exec)?;
    let config = other.dir().join("mca.yaml");
    let args = [
        "--config",
        config.to_str().expect("UTF-8"),
        "--config-restricted",
    ];
    let local = fleet.local();
    let started = Mca::start(&other, local.addr(), local.ca_pem(), &args);
    let error = format!(
        "{:#}",
        started.err().expect("MCA must refuse the configuration")
    );
    assert!(error.contains("exec: running a command"), "{error}");
    assert!(!ran.exists(), "the exec plugin ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_credential_kind_reaches_its_cluster() -> anyhow::Result<()> {
    use http::StatusCode;
    use mca_tests::{
        client::Https,
        harness::{Mca, REAL_TOKEN},
    };
    use std::os::unix::fs::PermissionsExt;
    // Three clusters besides local, each reached with another kind of credential.
    let pod = Pod::new()?;
    let local = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    let certs = ApiServer::start(pod.listen("127.0.0.1:0")?, "unused-cert-token", &[])?;
    let plugin = ApiServer::start(pod.listen("127.0.0.1:0")?, "exec-token-1", &[])?;
    let kc = ApiServer::start(pod.listen("127.0.0.1:0")?, "kubeconfig-token-1", &[])?;
    let dir = pod.dir();
    let (cert, key) = certs.client_certificate("mca")?;
    for (name, text) in [
        ("certs-ca.crt", certs.ca_pem()),
        ("certs-client.crt", cert.as_str()),
        ("certs-client.key", key.as_str()),
        ("plugin-ca.crt", plugin.ca_pem()),
        ("kc-ca.crt", kc.ca_pem()),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    let script = dir.join("credential-plugin");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"apiVersion\": \"client.authentication.k8s.io/v1\", \
         \"kind\": \"ExecCredential\", \"status\": {\"token\": \"'\"$MCA_TEST_TOKEN\"'\"}}'\n",
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": format!("https://{}", kc.addr()),
                                                 "certificate-authority": dir.join("kc-ca.crt")}}],
        "users": [{"name": "lab", "user": {"token": "kubeconfig-token-1"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]
    });
    std::fs::write(dir.join("lab.kubeconfig"), kubeconfig.to_string())?;
    let config = format!(
        "clusters:\n\
         \x20 - name: certs\n\
         \x20   server: https://{}\n\
         \x20   certificateAuthority: certs-ca.crt\n\
         \x20   clientCertificate: certs-client.crt\n\
         \x20   clientKey: certs-client.key\n\
         \x20 - name: plugin\n\
         \x20   server: https://{}\n\
         \x20   certificateAuthority: plugin-ca.crt\n\
         \x20   exec:\n\
         \x20     command: {}\n\
         \x20     env: [{{name: MCA_TEST_TOKEN, value: exec-token-1}}]\n\
         \x20 - name: kc\n\
         \x20   kubeconfig: {{path: lab.kubeconfig}}\n\
         routes:\n\
         \x20 - {{name: c, match: {{namespaces: [cert-x]}}, to: {{clusters: [certs]}}}}\n\
         \x20 - {{name: e, match: {{namespaces: [exec-x]}}, to: {{clusters: [plugin]}}}}\n\
         \x20 - {{name: k, match: {{namespaces: [kc-x]}}, to: {{clusters: [kc]}}}}\n",
        certs.addr(),
        plugin.addr(),
        script.display()
    );
    std::fs::write(dir.join("mca.yaml"), config)?;
    let path = dir.join("mca.yaml");
    let _mca = Mca::start(
        &pod,
        local.addr(),
        local.ca_pem(),
        &["--config", path.to_str().unwrap()],
    )?;
    let mut client = Https::connect(&pod, "kubernetes.default.svc", &[b"h2"]).await?;
    for namespace in ["cert-x", "exec-x", "kc-x"] {
        let response = client
            .get(&format!("/api/v1/namespaces/{namespace}/pods"))
            .await?;
        assert_eq!(response.status(), StatusCode::OK, "{namespace}");
    }
    // The one request each got (health probes aside).
    let only = |server: &ApiServer| {
        let mut requests = server.requests();
        requests.retain(|r| r.target != "/readyz");
        assert_eq!(requests.len(), 1, "{requests:?}");
        requests.pop().unwrap()
    };
    let seen = only(&certs);
    assert!(seen.target.contains("/cert-x/") && seen.client_user.is_some());
    assert_eq!(seen.header("authorization"), None);
    let seen = only(&plugin);
    assert!(seen.target.contains("/exec-x/"));
    assert_eq!(seen.header("authorization"), Some("Bearer exec-token-1"));
    let seen = only(&kc);
    assert!(seen.target.contains("/kc-x/"));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer kubeconfig-token-1")
    );
    assert!(local.requests().iter().all(|r| !r.target.contains("-x/")));
    // Health probes carry each cluster's credential too.
    let probes = |server: &ApiServer| {
        server
            .requests()
            .into_iter()
            .filter(|r| r.target == "/readyz")
    };
    assert!(probes(&plugin).all(|r| r.header("authorization") == Some("Bearer exec-token-1")));
    assert!(probes(&certs).all(|r| r.client_user.is_some()));
    Ok(())
}

#[test]
fn round_robin_spreads_reads_and_consistent_hash_pins_each_object() -> anyhow::Result<()> {
    const STRATEGY_ROUTES: &str = "routes:\n\
        \x20 - name: spread\n\
        \x20   match: {namespaces: [rr-1]}\n\
        \x20   to: {clusters: [east, west], strategy: roundRobin}\n\
        \x20 - name: pinned\n\
        \x20   match: {namespaces: [\"hash-*\"]}\n\
        \x20   to: {clusters: [local, east, west], strategy: consistentHash}\n";
    let fleet = Fleet::start(STRATEGY_ROUTES, "", Options::default())?;
    for _ in 0..4 {
        fleet.kube_rs(&["list", "rr-1"])?;
    }
    let count = |server: &ApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.target.contains("/rr-1/"))
            .count()
    };
    assert_eq!((count(&fleet.east), count(&fleet.west)), (2, 2));

    // Each object's create, read and delete land on one cluster, chosen by its name; the
    // objects spread over the clusters.
    let names: Vec<String> = (0..12).map(|i| format!("object-{i}")).collect();
    let mut homes = std::collections::BTreeSet::new();
    for name in &names {
        fleet.kube_rs(&["create", "hash-1", name])?;
        let out = fleet.kube_rs(&["get", "hash-1", name])?;
        assert!(out.starts_with(&format!("{name} ")), "{out}");
        fleet.kube_rs(&["delete", "hash-1", name])?;
        let home = fleet.where_went(&format!("/hash-1/pods/{name}"));
        assert_eq!(home.len(), 1, "{name} went to {home:?}");
        homes.insert(home[0]);
    }
    assert_eq!(homes.len(), 3, "12 objects over 3 clusters: {homes:?}");
    Ok(())
}
