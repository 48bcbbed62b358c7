//! `cargo xtask fuzz`: the cargo-fuzz targets of `mca-userspace/fuzz`, each for a bounded time,
//! starting from the seeds in `fuzz/seeds/<target>` (inputs taken from the unit tests, kept in
//! git) and the corpus each run grows in `fuzz/corpus/<target>` (local, ignored by git).
//!
//! Targets are built without a sanitizer: the parsers are safe Rust, where the failures to
//! find are panics (indexing, overflow with debug assertions, broken invariants checked by the
//! targets), and an uninstrumented build runs several times more inputs per second.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

/// One target's run.
struct Outcome {
    target: String,
    executions: Option<u64>,
    crashed: bool,
}

/// The targets parse input and load no eBPF: asking `build.rs` for its stub (`MCA_EBPF=stub`)
/// spares building the programs once more for the fuzz target directory.
const EBPF: &str = "MCA_EBPF";

/// Runs `targets` (all of them when empty) for `seconds` each, built unoptimized with `dev`;
/// fails if any crashed.
pub fn run(root: &Path, targets: &[String], seconds: u32, dev: bool) -> anyhow::Result<()> {
    let fuzz = root.join("mca-userspace/fuzz");
    if !super::on_path("cargo-fuzz") {
        super::cargo(root, &["install", "cargo-fuzz", "--locked"])?;
    }
    let targets = if targets.is_empty() {
        all_targets(&fuzz)?
    } else {
        targets.to_vec()
    };
    let profile: &[&str] = if dev { &["--dev"] } else { &[] };
    super::run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "build", "--sanitizer", "none"])
            .env(EBPF, "stub")
            .args(profile)
            .current_dir(&fuzz),
    )?;
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_one(&fuzz, target, seconds, profile)?);
    }
    println!("\nxtask fuzz: {seconds} s per target");
    println!("| target | executions | result |\n| --- | --- | --- |");
    for outcome in &outcomes {
        let executions = outcome
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let result = if outcome.crashed {
            "CRASHED (input in fuzz/artifacts)"
        } else {
            "no crash"
        };
        println!("| {} | {executions} | {result} |", outcome.target);
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// The targets, by their source files.
fn all_targets(fuzz: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

fn run_one(fuzz: &Path, target: &str, seconds: u32, profile: &[&str]) -> anyhow::Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    let seeds: PathBuf = fuzz.join("seeds").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz", "run", "--sanitizer", "none"])
        .env(EBPF, "stub")
        .args(profile)
        .arg(target)
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .current_dir(fuzz)
        .stderr(Stdio::piped());
    println!("xtask fuzz: {target} for {seconds} s");
    let output = command
        .spawn()
        .and_then(|child| child.wait_with_output())
        .with_context(|| format!("running {command:?}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    // libFuzzer's closing statistics: `stat::number_of_executed_units: N`.
    let executions = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let crashed = !output.status.success();
    if crashed {
        eprintln!("{log}");
    }
    Ok(Outcome {
        target: target.to_owned(),
        executions,
        crashed,
    })
}
