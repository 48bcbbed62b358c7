//! Builds the eBPF programs (`mca-ebpf`, nightly, `bpfel-unknown-none`, bpf-linker) into
//! `OUT_DIR/mca`, which the binary embeds, by way of `target/mca-ebpf`, shared by every
//! build of this crate.
//!
//! Without bpf-linker the build fails, naming what to do: a binary that silently lacks its
//! programs would ship (the static build, the image) and fall back to env mode in every pod.
//! A build without interception is there only when asked for, with `MCA_EBPF=stub`: an empty
//! object is embedded and `--intercept=auto` falls back to env-override mode, saying why.
//! `cargo xtask setup` installs bpf-linker and the nightly `rust-src`.
//!
//! On x86-64 it also compiles `csrc/memcpy.c`, which replaces musl's memcpy and memmove in the
//! static build (the file says why) and is unit-tested on every target under its own names.

use std::{env, fs, path::PathBuf, process::ExitCode};

/// Points aya-build (which reads only `OUT_DIR`) at `dir`.
#[allow(
    unsafe_code,
    reason = "aya-build takes its output directory from the environment alone"
)]
fn build_into(dir: &std::path::Path) {
    // SAFETY: the build script is single-threaded here: nothing reads or writes the
    // environment at the same time.
    unsafe { env::set_var("OUT_DIR", dir) };
}

/// Compiles `csrc/memcpy.c`: as `memcpy` and `memmove` themselves for musl, under their `mca_`
/// names alone elsewhere.
fn build_memcpy() {
    println!("cargo:rerun-if-changed=csrc/memcpy.c");
    // Cargo always names the target; the build-script tests run it without.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    let mut build = cc::Build::new();
    build
        .file("csrc/memcpy.c")
        .opt_level(2)
        // It must not be compiled into a call to itself.
        .flag("-ffreestanding")
        .flag("-fno-builtin")
        .flag_if_supported("-fno-tree-loop-distribute-patterns");
    if env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|libc| libc == "musl") {
        build.define("MCA_REPLACE_MUSL", None);
    }
    build.compile("mca_memcpy");
}

fn main() -> anyhow::Result<ExitCode> {
    build_memcpy();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=MCA_EBPF");
    if env::var("MCA_EBPF").is_ok_and(|v| v == "stub") {
        println!("cargo:warning=building MCA without eBPF programs, as MCA_EBPF=stub asks");
        fs::write(out_dir.join("mca"), [])?;
        return Ok(ExitCode::SUCCESS);
    }
    let linker = env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()));
    if !linker {
        // Not cached by cargo (the script failed), so installing bpf-linker is enough.
        eprintln!(
            "error: bpf-linker is not on PATH, and MCA's eBPF programs need it. Install it with \
             `cargo xtask setup`, or build without interception (env mode only) with MCA_EBPF=stub."
        );
        return Ok(ExitCode::FAILURE);
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../mca-ebpf");
    let root = root.to_str().expect("a UTF-8 workspace path");
    // aya-build builds into OUT_DIR, which differs for every profile, target and feature set
    // of this crate (check, build, test, the static and fuzz builds), and so rebuilt the
    // programs and their `core` (build-std) each time, about 30 s. Built in one place for
    // all of them instead, the later builds find the programs current.
    let shared = manifest_dir.join("../target/mca-ebpf");
    fs::create_dir_all(&shared)?;
    // Builds running at once take turns: each copies the programs out of the shared place.
    let turn = fs::File::create(shared.join(".lock"))?;
    turn.lock()?;
    build_into(&shared);
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mca-ebpf",
            root_dir: root,
            no_default_features: false,
            features: &[],
        }],
        aya_build::Toolchain::Nightly,
    )?;
    fs::copy(shared.join("mca"), out_dir.join("mca"))?;
    drop(turn);
    Ok(ExitCode::SUCCESS)
}
