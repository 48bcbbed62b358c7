//! The binary's build is honest about its eBPF programs: `mca-userspace`'s build script, run
//! the way cargo runs it, fails without bpf-linker, naming `cargo xtask setup` and the
//! explicit `MCA_EBPF=stub`, and writes no object; with `MCA_EBPF=stub` it embeds an empty
//! one and says so. (That a normal build embeds real programs, the eBPF suite shows by
//! attaching them.)

use std::process::Command;

use mca_tests::harness::build_script;

/// Runs the compiled build script with `PATH` an empty directory (no bpf-linker, nor anything
/// else) and `OUT_DIR` a fresh one; `MCA_EBPF` as given.
fn run_build_script(
    ebpf: Option<&str>,
) -> anyhow::Result<(std::process::Output, tempfile::TempDir)> {
    let script = build_script("mca-userspace")?;
    let out_dir = tempfile::tempdir()?;
    let empty_path = tempfile::tempdir()?;
    let mut command = Command::new(&script);
    command
        .env_clear()
        .env("PATH", empty_path.path())
        .env("OUT_DIR", out_dir.path())
        .env(
            "CARGO_MANIFEST_DIR",
            mca_tests::harness::workspace_root().join("mca-userspace"),
        );
    if let Some(value) = ebpf {
        command.env("MCA_EBPF", value);
    }
    Ok((command.output()?, out_dir))
}

#[test]
fn without_bpf_linker_the_build_fails_and_says_what_to_do() -> anyhow::Result<()> {
    let (output, out_dir) = run_build_script(None)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the build script succeeded without bpf-linker: {stderr}"
    );
    for needle in ["bpf-linker", "cargo xtask setup", "MCA_EBPF=stub"] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(
        !out_dir.path().join("mca").exists(),
        "an object was written although the build failed"
    );
    // Another value than `stub` is no request for a stub.
    let (output, _) = run_build_script(Some("1"))?;
    assert!(!output.status.success(), "MCA_EBPF=1 built a stub");
    Ok(())
}

#[test]
fn a_stub_only_when_asked_for() -> anyhow::Result<()> {
    let (output, out_dir) = run_build_script(Some("stub"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("cargo:warning=") && stdout.contains("MCA_EBPF=stub"),
        "the stub build is not announced: {stdout}"
    );
    let object = std::fs::read(out_dir.path().join("mca"))?;
    assert!(object.is_empty(), "the stub is {} bytes", object.len());
    Ok(())
}
