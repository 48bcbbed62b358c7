//! `cargo xtask test`: what CI runs (`.ci/run`), and what a developer runs before committing.
//!
//! Lints, builds the binaries the e2e suites drive, runs every test, then the tiers that need
//! a real control plane or node when `../shared/k8s/build.sh` has left its binaries here, then
//! the static build and a short fuzz of every parser. Tests needing those binaries are
//! `#[ignore]`d with the reason, so where they are missing the totals say how many did not
//! run instead of counting them as passed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use super::{build_ebpf, build_static, cargo, fuzz, run as run_command, setup, workspace_root};

/// How long `cargo xtask test` fuzzes each target.
const FUZZ_SECONDS_IN_TESTS: u32 = 6;

/// Debian packages the real-node tier's node runs on (containerd, runc, CNI plugins, iptables)
/// and builds its application image from (a static busybox), by a file that shows each is
/// there.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/containerd", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/sbin/iptables", "iptables"),
    ("/bin/busybox", "busybox-static"),
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    setup(root)?;
    lint(root)?;
    build_otlp(root)?;
    cargo(root, &["build", "--bins"])?;
    if std::env::var_os("MCA_E2E_KUBECONFIG").is_none() {
        println!(
            "xtask: MCA_E2E_KUBECONFIG is not set, so the e2e suite runs against the test API \
             server only; the real-cluster run is skipped."
        );
    }
    let real = RealTiers::find();
    if real.node {
        install_node_packages()?;
    }
    let totals = cargo_test(root, &["test", "--workspace"], None)?;
    println!("tests: {totals}");
    match &real.bin {
        Some(bin) => {
            println!(
                "xtask: the control plane's binaries are in {}: the ignored tests run{}",
                bin.display(),
                if real.node {
                    ", the real-node tier too"
                } else {
                    ""
                }
            );
            let mut args = vec![
                "test",
                "-p",
                "mca-tests",
                "--test",
                "e2e",
                "--",
                "--ignored",
                // Each starts control planes (the node tier a whole node): one at a time
                // on two cores.
                "--test-threads=1",
            ];
            if !real.node {
                println!(
                    "xtask: no kubelet beside them or no node.sh, so the real-node tier stays \
                     ignored (../shared/k8s/build.sh builds the node's parts)"
                );
                args.extend(["--skip", "node::"]);
            }
            let real_totals = cargo_test(root, &args, Some(bin))?;
            println!("tests against real binaries: {real_totals}");
        }
        None => println!(
            "xtask: no kube-apiserver in K8S_BIN or ~/.cache/mca-k8s/bin, or no \
             ../shared/k8s/cluster.sh (K8S_CLUSTER_SH) to start it with, so the {} tests \
             that need a real control plane or node did not run (../shared/k8s/build.sh \
             builds one; they are reported as ignored above)",
            totals.ignored
        ),
    }
    // The image's binary: static, and it runs (no container engine needed).
    build_static(root, false)?;
    // Every parser of untrusted input, briefly: enough to catch a fresh panic.
    fuzz::run(root, &[], FUZZ_SECONDS_IN_TESTS, true)
}

/// Formatting, then clippy with warnings as errors over the eBPF crate, the workspace and the
/// `otlp` feature's code (compiled only with it).
fn lint(root: &Path) -> anyhow::Result<()> {
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    build_ebpf(root, "clippy")?;
    let deny = ["--", "-D", "warnings"];
    cargo(
        root,
        &[&["clippy", "--workspace", "--all-targets"][..], &deny].concat(),
    )?;
    cargo(
        root,
        &[
            &[
                "clippy",
                "-p",
                "mca-userspace",
                "--features",
                "otlp",
                "--lib",
                "--bins",
            ][..],
            &deny,
        ]
        .concat(),
    )
}

/// Builds `mca` with the `otlp` feature as `target/debug/mca-otlp`, for the test that
/// exports spans. Cargo keeps both builds of the crate, so switching back costs a link.
fn build_otlp(root: &Path) -> anyhow::Result<()> {
    cargo(
        root,
        &[
            "build",
            "-p",
            "mca-userspace",
            "--features",
            "otlp",
            "--bin",
            "mca",
        ],
    )?;
    let debug = root.join("target/debug");
    std::fs::copy(debug.join("mca"), debug.join("mca-otlp")).context("copying mca-otlp")?;
    Ok(())
}

/// Where `../shared/k8s/build.sh` left its binaries, and whether the node's parts are among
/// them (with `node.sh` to start one).
struct RealTiers {
    /// `K8S_BIN`, or the script's default `~/.cache/mca-k8s/bin`, when it holds a
    /// kube-apiserver and `cluster.sh` is found to start it with.
    bin: Option<PathBuf>,
    /// A kubelet beside it, and `node.sh` beside the workspace (or `K8S_NODE_SH`).
    node: bool,
}

impl RealTiers {
    fn find() -> Self {
        let bin = std::env::var_os("K8S_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/mca-k8s/bin"))
            })
            .filter(|bin| bin.join("kube-apiserver").is_file())
            // The tests start control planes with `cluster.sh`, beside the workspace (a clone
            // elsewhere has the binaries but not the script).
            .filter(|_| {
                std::env::var_os("K8S_CLUSTER_SH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("../shared/k8s/cluster.sh"))
                    .is_file()
            });
        let script = std::env::var_os("K8S_NODE_SH")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("../shared/k8s/node.sh"));
        let node = bin
            .as_ref()
            .is_some_and(|bin| bin.join("kubelet").is_file() && script.is_file());
        Self { bin, node }
    }
}

/// The node's Debian packages, those not yet installed.
fn install_node_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = NODE_PACKAGES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {}", missing.join(" "));
    run_command(Command::new("apt-get").arg("update"))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Test counts summed over every test binary of one `cargo test` (cargo's own last line is
/// only the last binary's, often the doc tests').
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds one `test result: ok. 5 passed; 0 failed; 1 ignored; ...` line.
    fn add(&mut self, counts: &str) {
        let count = |word: &str| -> u64 {
            counts
                .split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
        self.ignored += count(" ignored");
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Runs `cargo ARGS` (a `cargo test`), echoing its output, with `K8S_BIN` set when given;
/// returns the totals, or an error when any test failed.
fn cargo_test(root: &Path, args: &[&str], k8s_bin: Option<&Path>) -> anyhow::Result<Totals> {
    use std::io::{BufRead, BufReader};
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root).stdout(Stdio::piped());
    if let Some(bin) = k8s_bin {
        command.env("K8S_BIN", bin);
    }
    let mut child = command.spawn().context("running cargo test")?;
    let mut totals = Totals::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            totals.add(counts);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({totals}): {status}", args.join(" "));
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_sum_every_binary() {
        let mut totals = Totals::default();
        totals.add(
            "ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        totals.add(
            "FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 4 filtered out; finished in 2s",
        );
        assert_eq!(
            totals.to_string(),
            "6 passed, 3 failed, 2 ignored",
            "filtered out and measured are not counted"
        );
    }
}
