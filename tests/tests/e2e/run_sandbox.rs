//! `cargo xtask run` (the `mca-run` binary): MCA in eBPF mode with an application sandbox,
//! against the test API server, and against a kubeconfig's cluster on the host network.
//!
//! `cargo xtask run`'s sandbox against the test API server and against a kubeconfig's cluster on
//! the host network.

use std::process::Command;

/// Runs mca-run and checks it tore down what it set up: the cgroup it announced is gone, so
/// MCA (which lived in it) is too.
fn mca_run(home: &std::path::Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let output = Command::new(env!("CARGO_BIN_EXE_mca-run"))
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cgroup = stdout
        .split("(cgroup ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("mca-run names the app's cgroup");
    assert!(
        !std::path::Path::new(cgroup).exists(),
        "{cgroup} left behind"
    );
    Ok(output)
}

#[test]
fn without_a_kubeconfig_the_test_api_server_plays_the_cluster() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let output = mca_run(home.path(), &["--", "kubectl", "get", "pods", "-o", "name"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("the test API server plays the cluster"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "pod/web"), "{stdout}");
    assert!(
        stdout.contains(r#""original_dst":"10.96.0.1:443""#),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn with_a_kubeconfig_the_app_is_redirected_on_the_host_network() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    // A cluster whose API address has nothing behind it: only MCA can answer the app.
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        r#"{"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1",
                                                   "insecure-skip-tls-verify": true}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}"#,
    )?;
    let output = mca_run(
        home.path(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--",
            "kubectl",
            "get",
            "pods",
        ],
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // kubectl dialled 127.0.0.1:1 and got MCA's 503 Status, not a refused connection.
    assert!(!output.status.success());
    assert!(
        stderr.contains("Error from server (ServiceUnavailable)"),
        "{stderr}"
    );
    assert!(
        stdout.contains(r#""original_dst":"127.0.0.1:1""#),
        "{stdout}"
    );
    Ok(())
}
