//! `mca-sidecar`: `mca run` and nothing else, the binary injected pods run. The control
//! plane (`mca webhook`, `mca operator`) and the tools (`mca inject`, `mca crds`,
//! `mca check-config`) stay in `mca`; left out here, their code is not linked in, which keeps
//! the sidecar every pod carries a third smaller, in its image pages and in memory.

use clap::Parser;

/// MCA's sidecar: transparently proxies an application's Kubernetes API traffic. The same
/// flags (and `MCA_*` variables) as `mca run`.
#[derive(Debug, Parser)]
#[command(name = "mca-sidecar", version)]
struct Sidecar {
    #[command(flatten)]
    args: mca::cli::RunArgs,
}

fn main() -> std::process::ExitCode {
    mca::run::forbid_dumps();
    mca::run::main(Sidecar::parse().args)
}

/// mimalloc rather than the C library's allocator: the image links musl statically, and with
/// musl's allocator the sidecar spent 40-42 µs of CPU per proxied GET against 31-34 with
/// mimalloc (glibc's allocator: 24-25 against 22-24), side by side in one run
/// (docs/benchmarks.md). THP is off (`no_thp`): huge pages for its arenas made an idle sidecar
/// 8 MB larger.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
