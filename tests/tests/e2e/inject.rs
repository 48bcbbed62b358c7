//! `mca inject` as a GitOps user runs it: manifests from a file, a directory or stdin, the
//! injected manifests on stdout (ready for `kubectl apply -f -`), what was done on stderr,
//! and on a workload it cannot inject safely a non-zero exit with the reason and nothing on
//! stdout.
//!
//! `mca inject` from stdin, files and directories: reports, idempotence, refusal with nothing on
//! stdout.

use std::process::Command;

use mca_tests::harness::{mca_binary, output_with_input};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.example/web:1}]
";

const HOST_NETWORK: &str = "apiVersion: v1
kind: Pod
metadata: {name: node-tool}
spec:
  hostNetwork: true
  containers: [{name: tool, image: busybox}]
";

/// Runs `mca inject args` with `stdin`; returns (success, stdout, stderr).
fn inject(args: &[&str], stdin: &str) -> anyhow::Result<(bool, String, String)> {
    let output = output_with_input(
        Command::new(mca_binary()).arg("inject").args(args),
        stdin.as_bytes(),
    )?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[test]
fn stdin_files_and_directories_are_injected_and_reported() -> anyhow::Result<()> {
    let (ok, out, err) = inject(&["--mode", "env"], DEPLOYMENT)?;
    assert!(ok, "{err}");
    assert_eq!(err, "deployment/web injected\n");
    assert!(
        out.contains("- name: mca\n") || out.contains("name: mca\n"),
        "{out}"
    );
    assert!(out.contains("restartPolicy: Always"), "{out}");
    assert!(out.contains("automountServiceAccountToken: false"), "{out}");

    // Its own output again: nothing to do.
    let (ok, again, err) = inject(&["--mode", "env", "-"], &out)?;
    assert!(ok, "{err}");
    assert_eq!(again, out);
    assert_eq!(err, "deployment/web already injected\n");

    // A directory: its manifests in name order, other files ignored.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("b-web.yaml"), DEPLOYMENT)?;
    std::fs::write(
        dir.path().join("a-config.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}"#,
    )?;
    std::fs::write(dir.path().join("notes.txt"), "not a manifest")?;
    let (ok, out, err) = inject(&[dir.path().to_str().expect("utf-8")], "")?;
    assert!(ok, "{err}");
    assert_eq!(
        err,
        "configmap/settings skipped (no pod template)\ndeployment/web injected\n"
    );
    assert_eq!(out.matches("---\n").count(), 2, "{out}");
    Ok(())
}

#[test]
fn a_workload_that_cannot_be_injected_safely_fails_the_whole_run() -> anyhow::Result<()> {
    let both = format!("{DEPLOYMENT}---\n{HOST_NETWORK}");
    let (ok, out, err) = inject(&[], &both)?;
    assert!(!ok);
    assert_eq!(out, "", "nothing for kubectl apply to apply");
    assert!(
        err.contains("pod/node-tool: not injected: it uses the host network"),
        "{err}"
    );
    for field in ["shareProcessNamespace", "hostPID"] {
        let shared = format!(
            "kind: Deployment\napiVersion: apps/v1\nmetadata: {{name: debug}}\nspec:\n  template:\n    metadata: {{annotations: {{}}}}\n    spec:\n      {field}: true\n      containers: [{{name: app, image: busybox}}]\n"
        );
        let (ok, out, err) = inject(&[], &shared)?;
        assert!(!ok && out.is_empty(), "{field}: {out}");
        assert!(
            err.contains(&format!("it sets spec.{field}"))
                && err.contains("mca.io/allow-shared-processes"),
            "{err}"
        );
        let allowed = shared.replace(
            "annotations: {}",
            "annotations: {mca.io/allow-shared-processes: \"true\"}",
        );
        let (ok, out, err) = inject(&[], &allowed)?;
        assert!(ok, "{field}: {err}");
        assert!(out.contains("name: mca"), "{out}");
    }
    let (ok, _, err) = inject(&["/no/such/manifest.yaml"], "")?;
    assert!(!ok);
    assert!(err.contains("/no/such/manifest.yaml"), "{err}");
    let (ok, _, err) = inject(&[], "kind: [unclosed")?;
    assert!(!ok);
    assert!(err.contains("not YAML"), "{err}");
    Ok(())
}
