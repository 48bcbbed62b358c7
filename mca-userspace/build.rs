//! Builds the eBPF programs (`mca-ebpf`, nightly, `bpfel-unknown-none`, bpf-linker) into
//! `OUT_DIR/mca`, which the binary embeds.
//!
//! Without bpf-linker (or with `MCA_EBPF=stub`) an empty object is written instead and MCA is
//! built without interception: `--intercept=auto` then falls back to env-override mode and
//! says why. `cargo xtask setup` installs bpf-linker and the nightly `rust-src`.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=MCA_EBPF");
    let stub = env::var("MCA_EBPF").is_ok_and(|v| v == "stub");
    let linker = env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()));
    if stub || !linker {
        let why = if stub {
            "MCA_EBPF=stub"
        } else {
            "bpf-linker is not installed (cargo xtask setup)"
        };
        println!("cargo:warning=building MCA without eBPF programs: {why}");
        fs::write(out_dir.join("mca"), [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../mca-ebpf");
    let root = root.to_str().expect("a UTF-8 workspace path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mca-ebpf",
            root_dir: root,
            no_default_features: false,
            features: &[],
        }],
        aya_build::Toolchain::Nightly,
    )
}
