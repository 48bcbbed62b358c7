//! A real control plane for the tests that need real API semantics: etcd and kube-apiserver
//! built from source by `../shared/k8s/build.sh` and started by its `cluster.sh` on loopback.
//! Such tests are `#[ignore]`d with the reason; `cargo xtask test` runs them when [`binaries`]
//! finds a build.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::harness::{output_with_input, workspace_root};

/// A running kube-apiserver with its etcd, stopped when dropped. Dereferences to its
/// [`Admin`], so `cluster.kubectl(...)` runs kubectl as the cluster's admin.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    ports: [(&'static str, u16); 2],
    admin: Admin,
}

impl std::ops::Deref for Cluster {
    type Target = Admin;

    fn deref(&self) -> &Admin {
        &self.admin
    }
}

/// Where `build.sh`'s binaries are: `K8S_BIN`, else its default `~/.cache/mca-k8s/bin`, if
/// it holds a kube-apiserver.
pub fn binaries() -> Option<PathBuf> {
    let bin = std::env::var_os("K8S_BIN").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/mca-k8s/bin"))
    })?;
    bin.join("kube-apiserver").is_file().then_some(bin)
}

impl Cluster {
    /// Starts a cluster on free loopback ports; an error when no build is found (the tests
    /// calling this are ignored unless asked for).
    pub fn start() -> anyhow::Result<Self> {
        let Some(bin) = binaries() else {
            bail!(
                "no kube-apiserver in K8S_BIN or ~/.cache/mca-k8s/bin (build a control plane \
                 with ../shared/k8s/build.sh, see its README)"
            );
        };
        let dir = tempfile::tempdir()?;
        let cluster = Self {
            admin: Admin::new(&bin, dir.path().join("admin.kubeconfig")),
            dir,
            bin,
            ports: [
                ("K8S_PORT", free_port(1)?),
                ("K8S_ETCD_PORT", free_port(2)?),
            ],
        };
        cluster.script("start", &cluster.ports, false)?;
        Ok(cluster)
    }

    /// Kills the API server and etcd, as a crash would.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.script("stop", &[], false)
    }

    /// Starts them again on the same ports, with the same data (objects and resource
    /// versions) and certificates.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.script("start", &self.ports, true)
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports[0].1)
    }

    /// The directory with its certificates (`pki/ca.crt`, `pki/admin.token`), logs and audit
    /// log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The audit log's entries so far (one JSON object each).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_log(&self.dir.path().join("audit.log"))
    }

    fn script(&self, verb: &str, ports: &[(&str, u16)], keep_data: bool) -> anyhow::Result<()> {
        let script = cluster_script();
        let mut command = Command::new("bash");
        if keep_data {
            command.env("K8S_KEEP_DATA", "1");
        }
        let output = command
            .arg(&script)
            .arg(verb)
            .arg(self.dir.path())
            .env("K8S_BIN", &self.bin)
            .envs(ports.iter().map(|(name, port)| (name, port.to_string())))
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} {verb} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// kubectl as a cluster's admin.
pub struct Admin {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Admin {
    /// The `kubectl` in `bin`, with `kubeconfig`.
    pub fn new(bin: &Path, kubeconfig: PathBuf) -> Self {
        Self {
            kubectl: bin.join("kubectl"),
            kubeconfig,
        }
    }

    /// The admin kubeconfig (a `system:masters` token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    /// Runs kubectl as the cluster admin; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_with_input(args, b"")
    }

    /// Runs kubectl as the cluster admin with `input` on its stdin (`-f -`); returns stdout.
    pub fn kubectl_with_input(&self, args: &[&str], input: &[u8]) -> anyhow::Result<String> {
        let output = output_with_input(
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
            input,
        )?;
        if !output.status.success() {
            bail!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl get` of one object as JSON; `None` when it does not exist.
    pub fn get(&self, args: &[&str]) -> anyhow::Result<Option<serde_json::Value>> {
        let mut full = vec!["get", "--ignore-not-found", "-o", "json"];
        full.extend_from_slice(args);
        let out = self.kubectl(&full)?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&out)?))
    }

    /// A Secret's data, decoded, as the kubelet would write it into a volume.
    pub fn secret_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, Vec<u8>>>> {
        use base64::Engine as _;
        let Some(secret) = self.get(&["secret", name, "-n", namespace])? else {
            return Ok(None);
        };
        let mut files = BTreeMap::new();
        for (key, value) in secret["data"].as_object().into_iter().flatten() {
            let encoded = value.as_str().context("Secret data is base64 text")?;
            files.insert(
                key.clone(),
                base64::engine::general_purpose::STANDARD.decode(encoded)?,
            );
        }
        Ok(Some(files))
    }
}

/// An API server's audit log (one JSON object per line), as far as it is written.
pub fn audit_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// `cluster.sh`: `K8S_CLUSTER_SH`, or the one beside the workspace in `../shared/k8s/`.
fn cluster_script() -> PathBuf {
    std::env::var_os("K8S_CLUSTER_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/k8s/cluster.sh"))
}

/// A loopback port where `count` consecutive ports are free (etcd takes a port and the next).
pub fn free_port(count: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let all_free = (0..count).all(|offset| {
            first
                .checked_add(offset)
                .is_some_and(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if all_free {
            return Ok(first);
        }
    }
    bail!("no {count} consecutive free ports on loopback")
}
