//! A real node for the tests that run MCA in real pods: `../shared/k8s/node.sh` starts a
//! one-node cluster from parts (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
//! and a kubelet with containerd, runc and a CNI bridge in a mount namespace of their own),
//! and MCA's image comes from `cargo xtask image`, imported the way `kind load image-archive`
//! imports it. Such tests are `#[ignore]`d with the reason; `cargo xtask test` runs them when the node's
//! binaries are there: in `K8S_BIN`, or where `build.sh` puts them by default
//! (`~/.cache/mca-k8s/bin`). One node at a time per machine (fixed ports and bridge).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use crate::{
    harness::{succeed, workspace_root},
    k8s::{Admin, audit_log},
};

/// The node's programs besides the control plane's (what `node.sh start` checks first).
const NODE_PROGRAMS: [&str; 5] = [
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "iptables",
];
/// What a Debian machine installs for them (the CNI plugins and busybox for the app image too).
pub const NODE_PACKAGES: &str =
    "containerd runc containernetworking-plugins iptables busybox-static";

/// A running node and its control plane, stopped (every process, mount, rule and bridge it
/// made undone) when dropped.
pub struct Node {
    dir: tempfile::TempDir,
    bin: PathBuf,
    admin: Admin,
}

impl std::ops::Deref for Node {
    type Target = Admin;

    fn deref(&self) -> &Admin {
        &self.admin
    }
}

/// Where the node's binaries are: the control plane's ([`crate::k8s::binaries`]), if they
/// include a kubelet.
pub fn node_binaries() -> Option<PathBuf> {
    crate::k8s::binaries().filter(|bin| bin.join("kubelet").is_file())
}

impl Node {
    /// Starts the node; an error naming what is missing when the kubelet, `node.sh` or the
    /// node's Debian packages are not there (the tests calling this are ignored unless asked
    /// for).
    pub fn start() -> anyhow::Result<Self> {
        let Some(bin) = node_binaries() else {
            bail!(
                "no kubelet in K8S_BIN or ~/.cache/mca-k8s/bin (build the node's parts with \
                 ../shared/k8s/build.sh, see its README)"
            );
        };
        if !node_script().is_file() {
            bail!(
                "the node's parts are in {} but {} is not there (K8S_NODE_SH names it)",
                bin.display(),
                node_script().display()
            );
        }
        let missing: Vec<&str> = NODE_PROGRAMS
            .into_iter()
            .filter(|program| !on_path(program))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the node's binaries are in {} but {missing:?} are not installed \
                 (apt-get install {NODE_PACKAGES}; `cargo xtask test` does)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let node = Self {
            admin: Admin::new(&bin, dir.path().join("admin.kubeconfig")),
            dir,
            bin,
        };
        node.script("start")?;
        Ok(node)
    }

    /// Imports an image archive as `kind load image-archive` does on each node: `ctr images
    /// import --all-platforms --digests` from stdin, in the node's mount namespace.
    pub fn import(&self, archive: &Path) -> anyhow::Result<String> {
        let file = std::fs::File::open(archive)
            .with_context(|| format!("opening {}", archive.display()))?;
        let mut command = self.ctr();
        command
            .args(["images", "import", "--all-platforms", "--digests"])
            .args(["--snapshotter=overlayfs", "-"])
            .stdin(file);
        let args = ["images", "import"];
        succeed(command.output()?, "ctr", &args)
    }

    /// `ctr` for the node's containerd (namespace `k8s.io`, the kubelet's), run in the node's
    /// mount namespace, where the containers' mounts are.
    pub fn ctr(&self) -> Command {
        let mut command = self.in_mounts("ctr");
        command
            .arg("-a")
            .arg(self.dir.path().join("containerd/containerd.sock"))
            .args(["-n", "k8s.io"]);
        command
    }

    /// The octal mode and owner's uid of a file as the node's mount namespace has it (where
    /// the kubelet mounts pods' volumes), following links.
    pub fn mode_and_owner(&self, path: &Path) -> anyhow::Result<(String, u32)> {
        let mut command = self.in_mounts("stat");
        command.args(["-L", "-c", "%a %u"]).arg(path);
        let out = succeed(command.output()?, "stat", &[])?;
        let (mode, uid) = out.trim().split_once(' ').context("stat's answer")?;
        Ok((mode.to_owned(), uid.parse()?))
    }

    /// `program`, run in the node's mount namespace.
    fn in_mounts(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder().unwrap_or_default().to_string())
            .args(["-m", "--", program]);
        command
    }

    /// The API server's audit log so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_log(&self.dir.path().join("main/audit.log"))
    }

    /// The directory with the node's certificates, logs and state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process holding the node's mount namespace, as `node.sh` recorded it.
    fn holder(&self) -> anyhow::Result<u32> {
        let pids = std::fs::read_to_string(self.dir.path().join("pids"))?;
        pids.lines()
            .find_map(|line| line.strip_prefix("holder ")?.trim().parse().ok())
            .context("node.sh recorded no holder process")
    }

    fn script(&self, verb: &str) -> anyhow::Result<()> {
        let script = node_script();
        let output = Command::new("bash")
            .arg(&script)
            .arg(verb)
            .arg(self.dir.path())
            .env("K8S_BIN", &self.bin)
            // Its own MCA image is not wanted: the tests import `cargo xtask image`'s.
            .env("MCA_BIN", self.dir.path().join("no-mca-binaries"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        succeed(output, &script.display().to_string(), &[verb]).map(drop)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(error) = self.script("stop") {
            eprintln!("stopping the node: {error:#}");
        }
    }
}

/// `node.sh`: `K8S_NODE_SH`, or the one beside the workspace in `../shared/k8s/`.
fn node_script() -> PathBuf {
    std::env::var_os("K8S_NODE_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/k8s/node.sh"))
}

/// Builds MCA's image with `cargo xtask image` (the unoptimized static build) as `reference`
/// into `out`; returns what xtask printed about it (reference, digest, size).
pub fn build_image(reference: &str, out: &Path) -> anyhow::Result<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["xtask", "image", "--tag", reference, "--out"])
        .arg(out)
        .current_dir(workspace_root())
        .output()
        .context("running cargo xtask image")?;
    let printed = succeed(output, "cargo", &["xtask", "image"])?;
    Ok(printed
        .lines()
        .find(|line| line.starts_with("xtask: image "))
        .unwrap_or_default()
        .to_owned())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
