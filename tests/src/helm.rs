//! The project's Helm chart (`deploy/helm/mca`) through the `helm` that `cargo xtask setup`
//! installs in `target/tools`.

use std::process::Command;

use serde_json::Value;

use crate::harness::workspace_root;

/// Runs helm in `deploy/helm` (so the chart is `mca`); returns stdout.
pub fn helm(args: &[&str]) -> anyhow::Result<String> {
    let helm = workspace_root().join("target/tools/helm");
    anyhow::ensure!(
        helm.exists(),
        "{} is missing: `cargo xtask setup` installs it",
        helm.display()
    );
    let output = Command::new(helm)
        .args(args)
        .current_dir(workspace_root().join("deploy/helm"))
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The objects `helm template` renders for a release `mca` in `mca-system` (CRDs included)
/// with `--set` values.
pub fn render(set: &[&str]) -> anyhow::Result<Vec<Value>> {
    render_with(set, &[])
}

/// [`render`] with values also given as JSON (`--set-json`, for lists of objects).
pub fn render_with(set: &[&str], set_json: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut args = vec![
        "template",
        "mca",
        "mca",
        "--namespace",
        "mca-system",
        "--include-crds",
    ];
    for value in set {
        args.extend(["--set", value]);
    }
    for value in set_json {
        args.extend(["--set-json", value]);
    }
    let yaml = helm(&args)?;
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(&yaml)?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}
