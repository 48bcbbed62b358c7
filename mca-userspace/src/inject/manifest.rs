//! Manifests as `kubectl apply` takes them: YAML documents (or JSON, which is YAML), each an
//! object or a `List` of objects. Workloads get MCA in their pod template; everything else
//! passes through unchanged.
//!
//! Objects are kept as generic JSON values, so fields MCA does not touch come out as they
//! went in, and the pod template is edited in place ([`pod::inject`]).

use serde_json::Value;

use super::pod::{self, Outcome, Refusal, Settings};

/// Why a manifest could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not YAML.
    #[error("not YAML: {0}")]
    Yaml(String),
    /// A workload whose pod template is not a valid pod.
    #[error("{object}: {path} is not a valid pod spec: {reason}")]
    Invalid {
        /// `kind/name`.
        object: String,
        /// Where the pod spec is.
        path: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A workload MCA cannot be injected into safely.
    #[error("{object}: not injected: {refusal}")]
    Refused {
        /// `kind/name`.
        object: String,
        /// What makes the injection unsafe.
        refusal: Refusal,
    },
}

/// What was done to one object, for the report `mca inject` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `kind/name`.
    pub object: String,
    /// `None` for objects without a pod template.
    pub outcome: Option<Outcome>,
}

/// Where a kind keeps its pod template, as JSON pointers to the template's metadata and spec.
fn template(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Pod" => Some(("/metadata", "/spec")),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(("/spec/template/metadata", "/spec/template/spec")),
        "CronJob" => Some((
            "/spec/jobTemplate/spec/template/metadata",
            "/spec/jobTemplate/spec/template/spec",
        )),
        _ => None,
    }
}

/// Injects every workload in the YAML `text`; returns the documents and what was done.
pub fn inject_yaml(text: &str, settings: &Settings) -> Result<(String, Vec<Report>), Error> {
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| Error::Yaml(e.to_string()))?;
    let mut reports = Vec::new();
    let mut out = Vec::with_capacity(documents.len());
    for mut document in documents {
        if document.is_null() {
            continue;
        }
        inject_object(&mut document, settings, &mut reports)?;
        out.push(document);
    }
    let yaml = serde_saphyr::to_string_multiple(&out).map_err(|e| Error::Yaml(e.to_string()))?;
    Ok((yaml, reports))
}

/// Injects `object` (a `List`'s items one by one).
pub fn inject_object(
    object: &mut Value,
    settings: &Settings,
    reports: &mut Vec<Report>,
) -> Result<(), Error> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if kind == "List" || kind.ends_with("List") && object["items"].is_array() {
        for item in object["items"].as_array_mut().into_iter().flatten() {
            inject_object(item, settings, reports)?;
        }
        return Ok(());
    }
    let name = object["metadata"]["name"]
        .as_str()
        .or(object["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    let label = format!("{}/{name}", kind.to_ascii_lowercase());
    let Some((meta_at, spec_at)) = template(&kind) else {
        reports.push(Report {
            object: label,
            outcome: None,
        });
        return Ok(());
    };
    let mut meta = object.pointer(meta_at).cloned().unwrap_or(Value::Null);
    let mut spec = object.pointer(spec_at).cloned().unwrap_or(Value::Null);
    let outcome = pod::inject(&mut meta, &mut spec, settings).map_err(|refusal| match refusal {
        Refusal::Invalid { what, reason } => Error::Invalid {
            object: label.clone(),
            path: if what == "spec" { spec_at } else { meta_at },
            reason,
        },
        refusal => Error::Refused {
            object: label.clone(),
            refusal,
        },
    })?;
    if outcome == Outcome::Injected {
        set(object, meta_at, meta);
        set(object, spec_at, spec);
    }
    reports.push(Report {
        object: label,
        outcome: Some(outcome),
    });
    Ok(())
}

/// Sets the value at the JSON pointer `at`, creating objects on the way.
fn set(root: &mut Value, at: &str, value: Value) {
    let mut here = root;
    for key in at.split('/').skip(1) {
        if !here.is_object() {
            *here = Value::Object(serde_json::Map::new());
        }
        here = here
            .as_object_mut()
            .expect("an object")
            .entry(key)
            .or_insert(Value::Null);
    }
    *here = value;
}
