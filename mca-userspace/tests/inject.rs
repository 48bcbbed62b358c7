//! Golden files for `mca inject`: every `tests/golden/inject/<case>.in.yaml` is injected with
//! the flags its first line gives (`# mca inject --mode env ...`, parsed by the real CLI)
//! and must give `<case>.out.yaml`, or for a manifest MCA refuses, the message in
//! `<case>.err`. `UPDATE_GOLDEN=1 cargo test -p mca-userspace --test inject` rewrites them
//! (review the diff). Every output is also checked to inject to itself (idempotence) and to
//! parse as its Kubernetes type with nothing left over.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{ConfigMap, Pod, Service, ServiceAccount},
    },
    serde::{Serialize, de::DeserializeOwned},
};
use mca::{
    cli::{Cli, Command},
    inject::{Settings, manifest},
};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject")
}

/// The settings the case's first line asks for.
fn settings(input: &str) -> Settings {
    let first = input.lines().next().unwrap_or_default();
    let words = first
        .strip_prefix("# ")
        .expect("a case starts with `# mca inject [flags]`");
    let cli = Cli::try_parse_from(words.split_whitespace()).expect("the case's flags parse");
    match cli.command {
        Command::Inject(args) => (&args.injection).into(),
        other => panic!("not an inject command: {other:?}"),
    }
}

/// Parses `value` as `T` and back: equal only if every field is one `T` knows.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) {
    let parsed: T = serde_json::from_value(value.clone()).expect("parses as its type");
    let back = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(&back, value, "fields its type does not know");
}

fn check_types(value: &Value) {
    match value["kind"].as_str().unwrap_or_default() {
        "List" => value["items"]
            .as_array()
            .expect("items")
            .iter()
            .for_each(check_types),
        "Pod" => typed::<Pod>(value),
        "Deployment" => typed::<Deployment>(value),
        "StatefulSet" => typed::<StatefulSet>(value),
        "DaemonSet" => typed::<DaemonSet>(value),
        "ReplicaSet" => typed::<ReplicaSet>(value),
        "Job" => typed::<Job>(value),
        "CronJob" => typed::<CronJob>(value),
        "Service" => typed::<Service>(value),
        "ConfigMap" => typed::<ConfigMap>(value),
        "ServiceAccount" => typed::<ServiceAccount>(value),
        other => panic!("no type for {other}"),
    }
}

#[test]
fn every_case_injects_as_its_golden_file_says() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 14, "cases went missing");
    for input_path in cases {
        let case = input_path.to_string_lossy().replace(".in.yaml", "");
        let input = std::fs::read_to_string(&input_path).unwrap();
        let settings = settings(&input);
        let (out_path, err_path) = (format!("{case}.out.yaml"), format!("{case}.err"));
        let (actual, expected_path, other) = match manifest::inject_yaml(&input, &settings) {
            Ok((yaml, _)) => (yaml, out_path, err_path),
            Err(error) => (format!("{error}\n"), err_path, out_path),
        };
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            let _ = std::fs::remove_file(&other);
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{expected_path} is missing (UPDATE_GOLDEN=1 writes it)"));
        assert_eq!(
            actual, expected,
            "{case}: the output differs from {expected_path}"
        );
        if expected_path.ends_with(".out.yaml") {
            let (again, reports) = manifest::inject_yaml(&actual, &settings).unwrap();
            assert_eq!(again, actual, "{case}: injecting twice differs from once");
            assert!(
                reports
                    .iter()
                    .all(|r| r.outcome != Some(mca::inject::Outcome::Injected)),
                "{case}: {reports:?}"
            );
            let documents: Vec<Value> = serde_saphyr::from_str_multiple(&actual).unwrap();
            documents.iter().for_each(check_types);
        }
    }
}
