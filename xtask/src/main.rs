//! `cargo xtask`: MCA's developer workflows.
//!
//! - `setup`: install what the build, the demo and the end-to-end tests need (Debian packages,
//!   bpf-linker and nightly's `rust-src` for the eBPF programs, a Python virtualenv with kubectl
//!   and the `kubernetes` client). Idempotent.
//! - `build-ebpf`: build the eBPF programs on their own.
//! - `demo`: set up, build, and run the local demo (no cluster needed).
//! - `test`: set up, check formatting and lints, build, and run every test.
//! - `run`: MCA in eBPF mode against a kubeconfig's cluster (or the test API server), with an
//!   application sandbox; `run --kind [--dry-run]`: MCA installed on a kind cluster (image,
//!   chart, demo) and checked.
//! - `static`: the static (musl) `mca` the image ships, checked to be static and to run.
//! - `image`: the image of `deploy/Dockerfile` as a reproducible OCI archive, without a
//!   container engine.
//! - `bench`: MCA side by side with the upstream directly, an nginx TLS proxy and `kubectl
//!   proxy` (requests, watches, exec; installs Debian's nginx and wrk), writing
//!   `target/bench/compare.{md,png}`; connect() throughput with and without the eBPF
//!   programs; MCA's memory per open watch over HTTP/2 and HTTP/1.1; the cost of a routing
//!   decision; MCA's peak memory while it merges three 64 MiB lists.
//! - `soak`: a bounded soak through MCA (watches, GETs, LISTs), sampled every second.
//! - `fuzz`: run the cargo-fuzz targets, each for a bounded time (`--all --time SECONDS`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod image;
mod kind;
mod setup;
mod test;

use self::setup::{install_bench_tools, install_helm, setup, setup_build};

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
    /// API server when there is none), with an application sandbox (root); or with `--kind`,
    /// install MCA on a kind cluster as users do and check that a demo goes through it.
    Run {
        /// Create a kind cluster, build and load the image, install the chart, deploy a demo
        /// that lists pods, and check through MCA's log and metrics that it went through MCA.
        #[arg(long)]
        kind: bool,
        /// With --kind: print every step instead of running it.
        #[arg(long, requires = "kind")]
        dry_run: bool,
        /// With --kind: the kind cluster's name.
        #[arg(long, default_value = "mca", requires = "kind")]
        cluster_name: String,
        /// Without --kind: the kubeconfig of the cluster MCA runs against (default: KUBECONFIG,
        /// ~/.kube/config, else the test API server).
        #[arg(long, conflicts_with = "kind")]
        kubeconfig: Option<PathBuf>,
        /// Without --kind: the kubeconfig context.
        #[arg(long, conflicts_with = "kind")]
        context: Option<String>,
        /// Without --kind: the command run in the sandbox (default: a shell), after `--`.
        #[arg(last = true, conflicts_with = "kind")]
        command: Vec<String>,
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
    /// Build `mca` linked statically (musl) with the eBPF programs embedded, as the image
    /// ships it; check that it is static and runs.
    Static {
        /// Optimized (the image's build); without it, the quicker unoptimized build.
        #[arg(long)]
        release: bool,
        /// Copy the binaries (`mca`, `mca-sidecar`) into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build MCA's image (the static binaries and a passwd naming the non-root user, as
    /// `deploy/Dockerfile` builds it) as an OCI archive, byte for byte reproducible, for
    /// `ctr images import`, `kind load image-archive` or `skopeo copy oci-archive:…`.
    Image {
        /// From the optimized static build (the image's); without it, the quicker
        /// unoptimized one.
        #[arg(long)]
        release: bool,
        /// The image's reference.
        #[arg(long, default_value = DEFAULT_IMAGE)]
        tag: String,
        /// Where to write the archive.
        #[arg(long, default_value = "target/mca-image.tar")]
        out: PathBuf,
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
        Task::Run {
            kind: true,
            dry_run,
            cluster_name,
            ..
        } => {
            let options = kind::Options {
                cluster: cluster_name,
                ..kind::Options::default()
            };
            // Steps run from the workspace root, where `xtask setup` puts helm.
            let steps = kind::plan(&options, "target/tools/helm");
            if dry_run {
                print!("{}", kind::describe(&steps));
                return Ok(());
            }
            install_helm(&root)?;
            kind::execute(&root, &steps, &options.cluster)
        }
        Task::Run {
            kubeconfig,
            context,
            command,
            ..
        } => {
            setup(&root)?;
            cargo(&root, &["build", "--bins"])?;
            build_ebpf(&root, "build")?;
            let mut sandbox = Command::new(root.join("target/debug/mca-run"));
            if let Some(kubeconfig) = kubeconfig {
                sandbox.arg("--kubeconfig").arg(kubeconfig);
            }
            if let Some(context) = context {
                sandbox.args(["--context", &context]);
            }
            if !command.is_empty() {
                sandbox.arg("--").args(command);
            }
            run(&mut sandbox)
        }
        Task::Bench {
            connects,
            rounds,
            watches,
            seconds,
        } => {
            setup(&root)?;
            install_bench_tools()?;
            let bench = shipped_sidecar_bench(&root)?;
            run(bench().arg("compare").arg(format!("--seconds={seconds}")))?;
            run(bench()
                .arg("connect")
                .arg(format!("--connects={connects}"))
                .arg(format!("--rounds={rounds}")))?;
            run(bench().arg("watches").arg(format!("--count={watches}")))?;
            run(bench().arg("lists"))?;
            run(bench().arg("fanout"))?;
            run(bench().arg("clusters"))?;
            run(bench().arg("route"))
        }
        Task::Test => test::run(&root),
        Task::Soak {
            time,
            watches,
            rate,
        } => {
            setup(&root)?;
            run(shipped_sidecar_bench(&root)?()
                .arg("soak")
                .arg(format!("--time={time}"))
                .arg(format!("--watches={watches}"))
                .arg(format!("--rate={rate}")))
        }
        Task::Static { release, out } => {
            let binaries = build_static(&root, release)?;
            if let Some(out) = out {
                std::fs::create_dir_all(&out)?;
                for binary in binaries {
                    let to = out.join(binary.file_name().expect("a file name"));
                    std::fs::copy(&binary, &to)
                        .with_context(|| format!("copying to {}", to.display()))?;
                }
            }
            Ok(())
        }
        Task::Image { release, tag, out } => {
            let out = root.join(out);
            build_image(&root, release, &tag, &out)
        }
        Task::Fuzz {
            targets,
            all: _,
            seconds,
            dev,
        } => fuzz::run(&root, &targets, seconds, dev),
    }
}

/// Builds what the benchmarks measure, optimized (memory and time figures of a debug build
/// mislead): `mca-bench`, and the static `mca-sidecar` the image ships, which is what pods
/// run (its allocator, its libc). Returns a maker of `mca-bench` commands running that
/// sidecar.
fn shipped_sidecar_bench(root: &Path) -> anyhow::Result<impl Fn() -> Command> {
    cargo(root, &["build", "--release", "--bins"])?;
    let sidecar = build_static(root, true)?
        .into_iter()
        .find(|binary| binary.ends_with("mca-sidecar"))
        .context("the static build has an mca-sidecar")?;
    let bench = root.join("target/release/mca-bench");
    Ok(move || {
        let mut command = Command::new(&bench);
        command.env("MCA_SIDECAR", &sidecar);
        command
    })
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

/// The static target.
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The image's programs: the CLI with the control plane, and the sidecar pods run.
const IMAGE_BINARIES: [&str; 2] = ["mca", "mca-sidecar"];

/// Builds the static [`IMAGE_BINARIES`], checks each has no ELF interpreter and prints its
/// version; returns their paths.
fn build_static(root: &Path, release: bool) -> anyhow::Result<Vec<PathBuf>> {
    let musl_tools: &[&str] = if on_path("musl-gcc") {
        &[]
    } else {
        &["musl-tools"]
    };
    setup_build(musl_tools)?;
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&targets.stdout)
        .lines()
        .any(|t| t == MUSL)
    {
        run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    let mut args = vec!["build", "--target", MUSL, "-p", "mca-userspace"];
    for binary in IMAGE_BINARIES {
        args.extend(["--bin", binary]);
    }
    if release {
        args.push("--release");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .args(&args)
        .env(format!("CC_{}", MUSL.replace('-', "_")), "musl-gcc")
        .current_dir(root))?;
    let dir = root
        .join("target")
        .join(MUSL)
        .join(if release { "release" } else { "debug" });
    let mut built = Vec::new();
    for name in IMAGE_BINARIES {
        let binary = dir.join(name);
        if has_interpreter(&std::fs::read(&binary)?)? {
            bail!("{} is dynamically linked", binary.display());
        }
        let version = Command::new(&binary).arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout);
        if !version.starts_with(&format!("{name} ")) {
            bail!("{} --version printed {version:?}", binary.display());
        }
        println!("xtask: {} is static: {}", binary.display(), version.trim());
        built.push(binary);
    }
    Ok(built)
}

/// The image's reference when none is given: the chart's default repository and tag.
const DEFAULT_IMAGE: &str = concat!("mca:", env!("CARGO_PKG_VERSION"));

/// Builds the static binaries and writes the image `reference` with them to `out`.
fn build_image(root: &Path, release: bool, reference: &str, out: &Path) -> anyhow::Result<()> {
    let built = build_static(root, release)?;
    let mut binaries = Vec::new();
    for (name, path) in IMAGE_BINARIES.iter().zip(&built) {
        let contents =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        binaries.push((*name, contents));
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let written = image::Image {
        reference,
        binaries,
        epoch: source_date_epoch(root)?,
    }
    .write(out)?;
    println!(
        "xtask: image {reference} ({}, {} MB) written to {}",
        written.digest,
        written.size / 1_000_000,
        out.display()
    );
    Ok(())
}

/// The timestamp of every file in the image: `SOURCE_DATE_EPOCH` when set, else the time of
/// the commit checked out, else the epoch (a tree outside git).
fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return epoch
            .to_str()
            .and_then(|e| e.parse().ok())
            .context("SOURCE_DATE_EPOCH is not a number of seconds");
    }
    let commit = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output();
    Ok(commit
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(0))
}

/// Whether a 64-bit little-endian ELF file names a program interpreter (`PT_INTERP`), i.e.
/// needs a dynamic loader.
fn has_interpreter(elf: &[u8]) -> anyhow::Result<bool> {
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let read = |at: usize, size: usize| -> anyhow::Result<u64> {
        let bytes = elf.get(at..at + size).context("a truncated ELF file")?;
        Ok(bytes.iter().rev().fold(0, |n, b| n << 8 | u64::from(*b)))
    };
    let (offset, size, count) = (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?);
    for header in 0..count {
        let at = usize::try_from(offset + header * size)?;
        const PT_INTERP: u64 = 3;
        if read(at, 4)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::has_interpreter;

    #[test]
    fn a_dynamic_executable_names_its_loader_and_a_static_one_does_not() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap(), "this test binary is dynamic");
        // A 64-bit ELF header with no program headers: nothing to load it with.
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x20] = 64;
        header[0x36] = 56;
        assert!(!has_interpreter(&header).unwrap());
        assert!(has_interpreter(b"#!/bin/sh").is_err());
    }
}
