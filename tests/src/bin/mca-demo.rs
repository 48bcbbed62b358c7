//! The local demo (`cargo xtask demo`): a simulated pod with MCA in front of the test API
//! server, and unmodified in-cluster clients in it, first in env-override mode, then routing
//! across three clusters, then with eBPF interception. Shows what the application sends, what
//! MCA logs, and what the API servers receive. Needs root (network and mount namespaces,
//! cgroups, eBPF).

use mca_tests::{
    apiserver::Options,
    fleet::Fleet,
    harness::{Env, NAMESPACE, venv_program},
};

/// The demo's routes: by namespace, by label, and one view of every cluster's pods.
const ROUTES: &str = r#"routes:
  - name: team-east              # everything in east-* namespaces lives on east
    match: {namespaces: ["east-*"]}
    to: {clusters: [east]}
  - name: web-tier               # pods labelled tier=web live on west
    match: {resources: [pods], labelSelector: "tier=web"}
    to: {clusters: [west]}
  - name: all-pods               # any other list of pods: one view of all three clusters
    match: {resources: [pods], verbs: [list, watch]}
    to: {clusters: [local, east, west], strategy: fanOut}
defaultRoute: {clusters: [local]}
"#;

fn main() -> anyhow::Result<()> {
    println!("== Starting a pod sandbox with the test API server and MCA (env-override mode)");
    let env = Env::start_test(&[])?;
    let server = env.apiserver();
    let sa = env.pod.fake_sa_dir();
    println!(
        "   API server (stands in for the real one): https://{}",
        server.addr()
    );
    println!("   MCA listens on {} in the pod", env.pod.mca_addr());
    println!(
        "   fake ServiceAccount for the app: token=<MCA's client token, {} characters> \
         namespace={:?} ca.crt=MCA's own CA",
        std::fs::read_to_string(sa.join("token"))?.len(),
        std::fs::read_to_string(sa.join("namespace"))?
    );
    println!("   app env: KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=6443\n");

    let kubectl = venv_program("kubectl");
    for args in [
        &["get", "pods"][..],
        &["exec", "web", "--", "echo", "hello from inside the pod"],
        &["logs", "web"],
    ] {
        println!("$ kubectl {}", args.join(" "));
        let output = env.app_output(&kubectl, args)?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        println!();
    }
    println!(
        "$ python -c 'kubernetes.config.load_incluster_config(); list_namespaced_pod(\"{NAMESPACE}\")'"
    );
    print!("{}", env.python(&["list", NAMESPACE])?);

    println!(
        "\n== MCA's access log (one line per request; credentials stripped by name, never logged)"
    );
    for line in env.mca.access_log() {
        println!(
            "   {:>6} {:<6} {:<30} status={} stripped={} {}B",
            line["verb"].as_str().unwrap_or(""),
            line["http"].as_str().unwrap_or(""),
            line["path"].as_str().unwrap_or(""),
            line["status"],
            line["stripped"].as_str().unwrap_or(""),
            line["bytes_out"],
        );
    }
    println!("\n== What the API server received");
    for request in server.requests() {
        println!(
            "   {:<5} {:<50} authorization: {}",
            request.method,
            request.target,
            request.header("authorization").unwrap_or("(none)")
        );
    }
    println!(
        "\nThe app sent the token of its (fake) ServiceAccount, which only MCA accepts; MCA \
         replaced it with its real ServiceAccount token on every request."
    );
    drop(env);
    multi_cluster(&kubectl)?;
    ebpf_mode(&kubectl)
}

/// One application, three clusters: routed by namespace, by label, by kubeconfig context,
/// and fanned out.
fn multi_cluster(kubectl: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "\n== Multi-cluster: three test API servers as the clusters local, east and west, \
         each with its own CA and token; MCA routes with --config:\n"
    );
    let fleet = Fleet::start(ROUTES, "", Options::default())?;
    fleet.east.state().pods.insert("east-1", "orders");
    fleet.west.state().pods.insert(NAMESPACE, "frontend");
    for line in ROUTES.lines() {
        println!("   {line}");
    }
    let kubeconfig = fleet.env.pod.dir().join("kubeconfig");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        println!("\n$ kubectl {}", args.join(" "));
        let output = fleet
            .env
            .pod
            .app(kubectl)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        Ok(())
    };
    run(&["get", "pods", "-n", "east-1"])?;
    run(&["get", "pods", "-n", NAMESPACE, "-l", "tier=web"])?;
    run(&["--context", "west", "get", "pods", "-n", NAMESPACE])?;
    run(&["get", "pods", "-A"])?;
    println!(
        "\n   (KUBECONFIG is MCA's fake kubeconfig: context `mca` follows the routes, one \
         context per cluster goes there directly)"
    );

    println!("\n== Which cluster got what, with which credential");
    for (name, server, _) in fleet.clusters() {
        for request in server.requests() {
            if request.target.contains("/pods") {
                println!(
                    "   {name:<5} {:<4} {:<55} authorization: {}",
                    request.method,
                    request.target,
                    request.header("authorization").unwrap_or("(none)")
                );
            }
        }
    }
    Ok(())
}

/// The same with eBPF interception: the app keeps its real Service address.
fn ebpf_mode(kubectl: &std::path::Path) -> anyhow::Result<()> {
    println!("\n== eBPF mode: MCA's cgroup connect hooks redirect the app's connections to MCA");
    let env = match Env::start_ebpf(&[]) {
        Ok(env) => env,
        Err(error) => {
            println!("   eBPF interception is not available here: {error:#}");
            return Ok(());
        }
    };
    println!(
        "   app env: KUBERNETES_SERVICE_HOST=10.96.0.1 KUBERNETES_SERVICE_PORT=443 (unchanged)\n"
    );
    println!("$ kubectl get pods");
    let output = env.app_output(kubectl, &["get", "pods"])?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let (_, report) = env.admin_get("/interception")?;
    println!("\n$ curl http://127.0.0.1:9901/interception   (MCA's admin listener)\n   {report}");
    if let Some(line) = env.mca.access_log().last() {
        println!(
            "\n   last access-log line: {} {} status={} original_dst={}",
            line["verb"].as_str().unwrap_or(""),
            line["path"].as_str().unwrap_or(""),
            line["status"],
            line["original_dst"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
