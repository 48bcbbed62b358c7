//! The local demo (`cargo xtask demo`): a simulated pod with MCA in front of the test API
//! server, and unmodified in-cluster clients in it, first in env-override mode, then with eBPF
//! interception. Shows what the application sends, what MCA logs, and what the API server
//! receives. Needs root (network and mount namespaces, cgroups, eBPF).

use mca_tests::harness::{Env, NAMESPACE, venv_program};

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
        "   fake ServiceAccount for the app: token={:?} namespace={:?} ca.crt=MCA's own CA",
        std::fs::read_to_string(sa.join("token"))?,
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
        "\nThe app sent \"Bearer mca-placeholder-token\"; MCA replaced it with its real \
         ServiceAccount token on every request."
    );
    drop(env);
    ebpf_mode(&kubectl)
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
