//! Golden files for `mca inject`: every `tests/golden/inject/<case>.in.yaml` is injected with
//! the flags its first line gives (`# mca inject --mode env ...`, parsed by the real CLI)
//! and must give `<case>.out.yaml`, or for a manifest MCA refuses, the message in
//! `<case>.err`. `UPDATE_GOLDEN=1 cargo test -p mca-userspace --test inject` rewrites them
//! (review the diff). Every output is also checked to inject to itself (idempotence), to keep
//! everything of its input, and to parse as its Kubernetes type with nothing left over
//! (unless the input had fields the types do not know: those must survive). Generated pods,
//! fields of every kind in every place, must keep all of them.

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
    inject::{Outcome, Settings, lost::first_lost, manifest},
    intercept::Mode,
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
        Command::Inject(args) => {
            let asked = (&args.injection).into();
            mca::inject::pod_security::admitted(&asked, args.pod_security)
                .0
                .into_owned()
        }
        other => panic!("not an inject command: {other:?}"),
    }
}

/// Whether `value` parses as `T` and back unchanged: only if every field is one `T` knows.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> bool {
    let parsed: T = serde_json::from_value(value.clone()).expect("parses as its type");
    serde_json::to_value(&parsed).expect("serializes") == *value
}

/// Whether every field of `value` is one its Kubernetes type knows.
fn known_fields(value: &Value) -> bool {
    match value["kind"].as_str().unwrap_or_default() {
        "List" => value["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(known_fields),
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

fn documents(yaml: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(yaml).unwrap();
    documents.into_iter().filter(|d| !d.is_null()).collect()
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
            let (inputs, outputs) = (documents(&input), documents(&actual));
            for (input, output) in inputs.iter().zip(&outputs) {
                let lost = first_lost(input, output);
                assert_eq!(lost, None, "{case}: the output lost part of the input");
                if known_fields(input) {
                    assert!(
                        known_fields(output),
                        "{case}: fields its type does not know"
                    );
                }
            }
        }
    }
}

/// A small deterministic generator (xorshift), so a failing pod can be made again.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A JSON value of any kind, nested at most `depth` deep.
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.next().is_multiple_of(2)),
            2 => Value::from(self.next() % 1000),
            3 => Value::from(format!("v{}", self.next() % 100)),
            4 => Value::Array((0..self.below(3)).map(|_| self.value(depth - 1)).collect()),
            _ => Value::Object(
                (0..self.below(3))
                    .map(|i| (format!("k{i}"), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }
}

/// Maps whose values have a type of their own (strings, quantities): a field is added only
/// to objects that are structs.
const MAPS: [&str; 5] = ["labels", "annotations", "matchLabels", "limits", "requests"];

/// How many struct objects `value` holds, itself included.
fn structs(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            1 + map
                .iter()
                .filter(|(key, _)| !MAPS.contains(&key.as_str()))
                .map(|(_, v)| structs(v))
                .sum::<usize>()
        }
        Value::Array(items) => items.iter().map(structs).sum(),
        _ => 0,
    }
}

/// Adds `key: field` to the `nth` struct object of `value` (depth first, as [`structs`]
/// counts); whether it was found.
fn add_to_nth(value: &mut Value, nth: &mut usize, key: &str, field: &Value) -> bool {
    match value {
        Value::Object(map) => {
            if *nth == 0 {
                map.insert(key.to_owned(), field.clone());
                return true;
            }
            *nth -= 1;
            map.iter_mut()
                .filter(|(key, _)| !MAPS.contains(&key.as_str()))
                .any(|(_, v)| add_to_nth(v, nth, key, field))
        }
        Value::Array(items) => items.iter_mut().any(|v| add_to_nth(v, nth, key, field)),
        _ => false,
    }
}

/// Adds fields unknown to the types, of random kinds, to `count` random places of `pod`.
fn sprinkle(pod: &mut Value, random: &mut Random, count: usize) {
    for n in 0..count {
        let mut nth = random.below(structs(pod));
        let field = random.value(2);
        assert!(add_to_nth(
            pod,
            &mut nth,
            &format!("futureField{n}"),
            &field
        ));
    }
}

#[test]
fn generated_pods_keep_every_field_of_every_kind() {
    let base: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "generated", "labels": {"app": "g"}, "annotations": {"a": "b"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "i:1", "env": [{"name": "A", "value": "1"}]}],
            "containers": [
                {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                 "securityContext": {"runAsUser": 1000}},
                {"name": "side", "image": "s:1", "resources": {"limits": {"memory": "1Gi"}}}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k", "operator": "Exists"}]
        }
    });
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut pod = base.clone();
        sprinkle(&mut pod, &mut random, 1 + round % 8);
        let mode = [Mode::Env, Mode::Ebpf, Mode::Auto][round % 3];
        let settings = Settings {
            mode,
            config_secret: (round % 2 == 0).then(|| "routes".to_owned()),
            ..settings("# mca inject")
        };
        let mut reports = Vec::new();
        let mut injected = pod.clone();
        manifest::inject_object(&mut injected, &settings, &mut reports)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{pod:#}"));
        assert_eq!(reports[0].outcome, Some(Outcome::Injected), "round {round}");
        if let Some(lost) = first_lost(&pod, &injected) {
            panic!("round {round}: lost {lost} of\n{pod:#}");
        }
    }
}
