//! `cargo xtask` as developers call it: `run --kind --dry-run` prints the plan in the golden
//! file (`UPDATE_GOLDEN=1` rewrites it), and every command refuses a flag it does not know,
//! with its usage, before doing anything.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running xtask")
}

#[test]
fn run_kind_dry_run_prints_every_step() {
    let output = xtask(&["run", "--kind", "--dry-run"]);
    assert!(output.status.success(), "{output:?}");
    let plan = String::from_utf8(output.stdout).unwrap();
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/run-kind-dry-run.txt"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &plan).unwrap();
    }
    assert_eq!(plan, std::fs::read_to_string(golden).unwrap());
    let named = xtask(&["run", "--kind", "--dry-run", "--cluster-name", "staging"]);
    let named = String::from_utf8(named.stdout).unwrap();
    assert!(
        named.contains("kind create cluster --name staging"),
        "{named}"
    );
    assert!(named.contains("--context kind-staging"), "{named}");
}

#[test]
fn unknown_flags_are_refused_with_the_usage() {
    for args in [
        &["run", "--kind", "--dry-run", "--bogus"][..],
        &["run", "--dry-run"],
        &["run", "--kind", "--kubeconfig", "x"],
        &["test", "--bogus"],
        &["setup", "--bogus"],
        &["demo", "--bogus"],
        &["bench", "--bogus"],
        &["soak", "--bogus"],
        &["static", "--bogus"],
        &["build-ebpf", "--bogus"],
        &["fuzz", "--bogus"],
    ] {
        let output = xtask(args);
        assert_eq!(output.status.code(), Some(2), "{args:?} was accepted");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("Usage:"), "{args:?}: {stderr}");
    }
}
