//! `cargo xtask run`: MCA in eBPF mode, and an application sandbox to try it from.
//!
//! With a kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, e.g. a kind
//! cluster's), MCA runs on the host network against that cluster, its programs attached to a
//! fresh cgroup; the application runs in that cgroup with the fake ServiceAccount mounted and
//! KUBERNETES_SERVICE_HOST/PORT set to the cluster's API address, so its connections there are
//! redirected to MCA. Without a kubeconfig, the test API server plays the cluster inside a pod
//! sandbox, at the Service address 10.96.0.1:443.
//!
//! Usage: `mca-run [--kubeconfig PATH] [--context NAME] [-- COMMAND...]` (default: a shell).

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    process::Stdio,
};

use anyhow::Context;
use mca_tests::{
    harness::{Env, Mca, venv_program},
    sandbox::Pod,
};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(at) => args.split_off(at).into_iter().skip(1).collect(),
        None => vec!["bash".into(), "-i".into()],
    };
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|at| args.get(at + 1).cloned())
    };
    let context = flag("--context");
    let kubeconfig = flag("--kubeconfig")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from(std::env::var_os("HOME")?).join(".kube/config");
            default.exists().then_some(default)
        });

    let (pod, mut mca, mut _server_env) = match kubeconfig {
        Some(kubeconfig) => {
            let server = api_server_address(&kubeconfig, context.as_deref())?;
            println!(
                "mca-run: cluster API server {server} (from {})",
                kubeconfig.display()
            );
            let name = format!("mca-run-{}", std::process::id());
            let pod = Pod::new_host_network()?.with_cgroups(&name, server)?;
            let cgroup = pod
                .cgroup()
                .expect("just made")
                .to_string_lossy()
                .into_owned();
            let mut mca_args = vec!["--intercept", "ebpf", "--cgroup", &cgroup, "--ebpf-log"];
            if let Some(context) = &context {
                mca_args.extend(["--context", context]);
            }
            let mca = Mca::start_with_kubeconfig(&pod, &kubeconfig, &mca_args)?;
            (Some(pod), Some(mca), None)
        }
        None => {
            println!(
                "mca-run: no kubeconfig; the test API server plays the cluster at 10.96.0.1:443"
            );
            (None, None, Some(Env::start_ebpf(&["--ebpf-log"])?))
        }
    };
    let (pod, mca) = match (&pod, mca.as_mut(), _server_env.as_mut()) {
        (Some(pod), Some(mca), _) => (pod, mca),
        (_, _, Some(env)) => (&env.pod, &mut env.mca),
        _ => unreachable!("one of the two setups ran"),
    };
    println!(
        "mca-run: MCA intercepts the API server for the app (cgroup {}); running {:?} as the app.\n\
         mca-run: try `kubectl get pods` (in-cluster config, no env overrides). Exit to stop MCA.",
        pod.cgroup()
            .map(|c| c.display().to_string())
            .unwrap_or_default(),
        command
    );
    // The e2e virtualenv's kubectl and Python client first on the app's PATH.
    let venv_bin = venv_program("kubectl")
        .parent()
        .expect("a bin directory")
        .to_owned();
    let path = std::env::join_paths(std::iter::once(venv_bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let status = pod
        .app(&command[0])
        .args(&command[1..])
        .env("PATH", path)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()?;
    // Stopped first, so the log is complete (MCA writes its log in batches).
    let _ = mca.terminate(std::time::Duration::from_secs(5));
    println!("\nmca-run: MCA's log:\n{}", mca.log());
    // Returning (not exiting) lets MCA, its sandbox and its cgroups be torn down.
    Ok(std::process::ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

/// The current (or named) context's API server address, resolved.
fn api_server_address(
    kubeconfig: &std::path::Path,
    context: Option<&str>,
) -> anyhow::Result<SocketAddr> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let context_name = context
        .map(str::to_owned)
        .or(config.current_context.clone())
        .context("the kubeconfig has no current context")?;
    let cluster = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("context not found")?;
    let server: http::Uri = config
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("cluster has no server")?
        .parse()?;
    let host = server
        .host()
        .context("server URL has no host")?
        .trim_matches(['[', ']']);
    let port = server.port_u16().unwrap_or(443);
    (host, port)
        .to_socket_addrs()?
        .next()
        .context("the API server address does not resolve")
}
